#include "KeyJournal.hpp"

#include <certconn/crypto.hpp>

#include <array>
#include <stdexcept>

namespace certconn::pkcs {

namespace {

// Version 1 is the table journal.db held before the store existed (idempotent on an old file).
const std::array<sql::Migration, 1> kMigrations{{
    {1,
     R"(CREATE TABLE IF NOT EXISTS journal (
        job_id TEXT PRIMARY KEY,
        key_pem TEXT NOT NULL,
        csr_pem TEXT NOT NULL,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now'))))",
     R"(CREATE TABLE IF NOT EXISTS journal (
        job_id TEXT PRIMARY KEY,
        key_pem TEXT NOT NULL,
        csr_pem TEXT NOT NULL,
        created_at TEXT NOT NULL DEFAULT (to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))))"},
}};

sql::Options sqlite_options(const std::filesystem::path& file) {
    sql::Options o;
    o.sqlite_file = file;
    return o;
}

}  // namespace

sql::Options KeyJournal::options_for(const sdk::Host& host) {
    return sql::Options::for_plugin(host, "pkcs", "journal.db");
}

KeyJournal::KeyJournal(const std::filesystem::path& file) : KeyJournal(sqlite_options(file)) {}

KeyJournal::KeyJournal(const sql::Options& options, sdk::Secret passphrase)
    : db_([&] {
          // secure_delete: a delivered job's key is overwritten in the file, not merely unlinked
          // from the b-tree (SQLite; PostgreSQL stores only encrypted keys).
          sql::Options o = options;
          o.secure_delete = true;
          o.synchronous_full = true;
          return sql::Database::open(o);
      }()),
      passphrase_(std::move(passphrase)) {
    if (db_.shared() && passphrase_.empty())
        throw std::invalid_argument("the pkcs key journal in a shared store (" + db_.describe() +
                                    ") needs a passphrase to encrypt the keys it keeps");
    if (!db_.shared()) ready();
}

KeyJournal::~KeyJournal() {
    try {
        flush();
    } catch (...) {
    }
}

sql::Database& KeyJournal::ready() {
    if (migrated_) return db_;
    db_.migrate(kMigrations);
    // Entries of jobs that never came back (cancelled at the tenant) or were resurrected.
    const std::string week_ago = db_.shared()
                                     ? "to_char(now() AT TIME ZONE 'UTC' - interval '7 days', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
                                     : "strftime('%Y-%m-%dT%H:%M:%SZ','now','-7 days')";
    if (db_.prepare("DELETE FROM journal WHERE created_at < " + week_ago).run() > 0) db_.checkpoint();
    migrated_ = true;
    return db_;
}

std::optional<JournalEntry> KeyJournal::load(const std::string& job_id) {
    auto s = ready().prepare("SELECT key_pem, csr_pem FROM journal WHERE job_id = $1");
    s.bind(1, job_id);
    if (!s.step()) return std::nullopt;
    if (!db_.shared()) return JournalEntry{sdk::Secret(s.text(0)), s.text(1)};
    const crypto::PKey key = crypto::decrypt_private_key_pem(s.text(0), passphrase_.reveal(),
                                                             "the journaled key of job " + job_id + " in " + db_.describe());
    return JournalEntry{sdk::Secret(crypto::private_key_pem(key.get())), s.text(1)};
}

std::optional<JournalEntry> KeyJournal::find(const std::string& job_id) {
    std::lock_guard lock(mutex_);
    return load(job_id);
}

JournalEntry KeyJournal::put(const std::string& job_id, const JournalEntry& entry) {
    std::lock_guard lock(mutex_);
    std::string stored_key;
    if (db_.shared()) {
        const crypto::PKey key = crypto::load_private_key(entry.key_pem.reveal());
        stored_key = crypto::encrypt_private_key_pem(key.get(), passphrase_.reveal());
    }
    const sdk::Secret plain = db_.shared() ? sdk::Secret() : entry.key_pem.clone();
    // First writer wins: two instances racing the same job (a lease that lapsed while its
    // first run was still going) both read back the one key stored.
    ready()
        .prepare("INSERT INTO journal (job_id, key_pem, csr_pem) VALUES ($1, $2, $3) ON CONFLICT (job_id) DO NOTHING")
        .bind_all(job_id, db_.shared() ? std::string_view(stored_key) : plain.reveal(), entry.csr_pem)
        .run();
    auto stored = load(job_id);
    if (!stored) throw sql::Error(sql::Error::Kind::busy, "the journal entry of job " + job_id + " vanished while being stored");
    return std::move(*stored);
}

void KeyJournal::remove(const std::string& job_id) {
    std::lock_guard lock(mutex_);
    removed_.push_back(job_id);
    if (removed_.size() >= 32) {
        try {
            flush_locked();
        } catch (const sql::Error& e) {
            if (!e.transient()) throw;  // kept: the next flush writes them
        }
    }
}

void KeyJournal::flush() {
    std::lock_guard lock(mutex_);
    flush_locked();
}

void KeyJournal::flush_locked() {
    if (removed_.empty()) return;
    auto& db = ready();
    {
        sql::Transaction tx(db);
        auto s = db.prepare("DELETE FROM journal WHERE job_id = $1");
        for (const auto& id : removed_) {
            s.bind(1, id).run();
            s.reset();
        }
        tx.commit();
    }
    removed_.clear();
    // The WAL still holds the frames that wrote the keys: fold it into the (zeroed) file and
    // truncate it. Busy means a reader is active; the next flush, or SQLite's own checkpoint,
    // gets there. (PostgreSQL: nothing to do; its keys are encrypted.)
    db.checkpoint();
}

}  // namespace certconn::pkcs
