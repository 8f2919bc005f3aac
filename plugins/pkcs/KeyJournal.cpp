#include "KeyJournal.hpp"

namespace certconn::pkcs {

// secure_delete: a delivered job's key is overwritten in the file, not merely unlinked from the b-tree.
KeyJournal::KeyJournal(const std::filesystem::path& file) : db_(file, sqlite::Database::Options{true, true}) {
    db_.exec(R"(CREATE TABLE IF NOT EXISTS journal (
        job_id TEXT PRIMARY KEY,
        key_pem TEXT NOT NULL,
        csr_pem TEXT NOT NULL,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now'))))");
    // Entries of jobs that never came back (cancelled at the tenant) or were resurrected.
    db_.exec("DELETE FROM journal WHERE created_at < strftime('%Y-%m-%dT%H:%M:%SZ','now','-7 days')");
    if (db_.changes() > 0) db_.checkpoint_truncate();
}

KeyJournal::~KeyJournal() {
    try {
        flush();
    } catch (...) {
    }
}

std::optional<JournalEntry> KeyJournal::find(const std::string& job_id) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare("SELECT key_pem, csr_pem FROM journal WHERE job_id = ?");
    s.bind(1, job_id);
    if (!s.step()) return std::nullopt;
    return JournalEntry{sdk::Secret(s.text(0)), s.text(1)};
}

JournalEntry KeyJournal::put(const std::string& job_id, const JournalEntry& entry) {
    std::lock_guard lock(mutex_);
    db_.prepare("INSERT INTO journal (job_id, key_pem, csr_pem) VALUES (?, ?, ?) ON CONFLICT(job_id) DO NOTHING")
        .bind_all(job_id, entry.key_pem.reveal(), entry.csr_pem)
        .run();
    auto s = db_.prepare("SELECT key_pem, csr_pem FROM journal WHERE job_id = ?");
    s.bind(1, job_id);
    s.step();
    return JournalEntry{sdk::Secret(s.text(0)), s.text(1)};
}

void KeyJournal::remove(const std::string& job_id) {
    std::lock_guard lock(mutex_);
    removed_.push_back(job_id);
    if (removed_.size() >= 32) flush_locked();
}

void KeyJournal::flush() {
    std::lock_guard lock(mutex_);
    flush_locked();
}

void KeyJournal::flush_locked() {
    if (removed_.empty()) return;
    sqlite::Transaction tx(db_);
    auto s = db_.prepare("DELETE FROM journal WHERE job_id = ?");
    for (const auto& id : removed_) {
        s.bind(1, id).run();
        s.reset();
    }
    tx.commit();
    removed_.clear();
    // The WAL still holds the frames that wrote the keys: fold it into the (zeroed) file and
    // truncate it. Busy means a reader is active; the next flush, or SQLite's own checkpoint,
    // gets there.
    db_.checkpoint_truncate();
}

}  // namespace certconn::pkcs
