#include "jobs/OutboxStore.hpp"

namespace certconn::host {

namespace {

constexpr const char* kColumns = "seq, tenant, kind, key, feature, operation, body, events, attempts, next_attempt_ms";

OutboxEntry read_entry(const sqlite::Statement& s) {
    OutboxEntry e;
    e.seq = s.integer(0);
    e.tenant = s.text(1);
    e.kind = s.text(2) == "notification" ? OutboxEntry::Kind::notification : OutboxEntry::Kind::result;
    e.key = s.text(3);
    e.feature = s.text(4);
    e.operation = s.text(5);
    e.body = s.text(6);
    e.events = s.text(7);
    e.attempts = s.integer(8);
    e.next_attempt_ms = s.integer(9);
    return e;
}

}  // namespace

// WAL + synchronous=NORMAL: a commit survives the process being killed at any instruction;
// after a power loss the last commits may be gone, and those jobs simply run again (their
// re-run is idempotent: the pkcs key journal and the CA record are synchronous=FULL).
OutboxStore::OutboxStore(const std::filesystem::path& file) : db_(file, false) {
    db_.exec(R"(CREATE TABLE IF NOT EXISTS deliveries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('result', 'notification')),
        key TEXT NOT NULL,
        feature TEXT NOT NULL,
        operation TEXT NOT NULL DEFAULT '',
        body TEXT NOT NULL,
        events TEXT NOT NULL DEFAULT '{}',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        refused INTEGER NOT NULL DEFAULT 0,
        stored_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
        stored_ms INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
        UNIQUE (tenant, kind, key)))");
    // The outbox of versions with one tenant held job results only: they go to the default tenant.
    auto old = db_.prepare("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'outbox'");
    old.step();
    if (old.integer(0) > 0) {
        sqlite::Transaction tx(db_);
        db_.exec(
            R"(INSERT OR IGNORE INTO deliveries (tenant, kind, key, feature, body, attempts, next_attempt_ms, last_error, stored_at)
                    SELECT '', 'result', job_id, feature, result, attempts, next_attempt_ms, last_error, stored_at
                    FROM outbox ORDER BY stored_at)");
        db_.exec("DROP TABLE outbox");
        tx.commit();
    }
}

std::string OutboxStore::put(const std::string& tenant, const std::string& job_id, const std::string& feature,
                             const std::string& result) {
    std::lock_guard lock(mutex_);
    db_.prepare(
           "INSERT INTO deliveries (tenant, kind, key, feature, body) VALUES (?, 'result', ?, ?, ?) "
           "ON CONFLICT(tenant, kind, key) DO UPDATE SET body = excluded.body, feature = excluded.feature, refused = 0, "
           "attempts = 0, next_attempt_ms = 0, last_error = NULL WHERE refused = 1")  // a refused result is replaced by a new
                                                                                      // run's
                                                                                          .bind_all(tenant, job_id, feature,
                                                                                                    result)
                                                                                          .run();
    auto s = db_.prepare("SELECT body FROM deliveries WHERE tenant = ? AND kind = 'result' AND key = ?");
    s.bind_all(tenant, job_id);
    s.step();
    return s.text(0);
}

std::optional<OutboxEntry> OutboxStore::find(const std::string& tenant, bool is_default, const std::string& job_id) {
    std::lock_guard lock(mutex_);
    // A refused result does not count: a new claim of the job runs it again and stores anew (put).
    auto s = db_.prepare(std::string("SELECT ") + kColumns +
                         " FROM deliveries WHERE (tenant = ? OR (? AND tenant = '')) AND kind = 'result' AND key = ? "
                         "AND refused = 0 ORDER BY seq LIMIT 1");
    s.bind(1, tenant).bind(2, is_default ? 1 : 0).bind(3, job_id);
    if (!s.step()) return std::nullopt;
    return read_entry(s);
}

bool OutboxStore::notify(const std::string& tenant, const std::string& key, const std::string& plugin,
                         const std::string& operation, const std::string& body, const std::string& events) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(
        "INSERT INTO deliveries (tenant, kind, key, feature, operation, body, events) "
        "VALUES (?, 'notification', ?, ?, ?, ?, ?) ON CONFLICT(tenant, kind, key) DO NOTHING RETURNING seq");
    s.bind_all(tenant, key, plugin, operation, body, events);
    const bool stored = s.step();
    while (s.step()) {
    }
    return stored;
}

std::vector<OutboxEntry> OutboxStore::pending(const std::string& tenant, bool is_default, std::size_t limit) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(std::string("SELECT ") + kColumns +
                         " FROM deliveries WHERE refused = 0 AND (tenant = ? OR (? AND tenant = '')) ORDER BY seq LIMIT ?");
    s.bind(1, tenant).bind(2, is_default ? 1 : 0).bind(3, static_cast<std::int64_t>(limit));
    std::vector<OutboxEntry> out;
    while (s.step())
        out.push_back(read_entry(s));
    return out;
}

std::int64_t OutboxStore::adopt_legacy(const std::string& tenant) {
    std::lock_guard lock(mutex_);
    db_.prepare("UPDATE OR IGNORE deliveries SET tenant = ? WHERE tenant = ''").bind(1, tenant).run();
    auto s = db_.prepare("SELECT COUNT(*) FROM deliveries WHERE tenant = ''");
    s.step();
    return s.integer(0);
}

std::int64_t OutboxStore::retry_refused(const std::string& tenant) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(
        "UPDATE deliveries SET refused = 0, next_attempt_ms = 0 WHERE refused = 1 AND (? = '' OR tenant = ?) RETURNING seq");
    s.bind(1, tenant).bind(2, tenant);
    std::int64_t n = 0;
    while (s.step())
        ++n;
    return n;
}

std::map<std::string, std::int64_t> OutboxStore::tenants_with_entries() {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare("SELECT tenant, COUNT(*) FROM deliveries GROUP BY tenant");
    std::map<std::string, std::int64_t> out;
    while (s.step())
        out[s.text(0)] = s.integer(1);
    return out;
}

void OutboxStore::remove(std::int64_t seq) {
    std::lock_guard lock(mutex_);
    db_.prepare("DELETE FROM deliveries WHERE seq = ?").bind(1, seq).run();
}

void OutboxStore::defer(std::int64_t seq, std::int64_t next_attempt_ms, const std::string& error) {
    std::lock_guard lock(mutex_);
    db_.prepare("UPDATE deliveries SET attempts = attempts + 1, next_attempt_ms = ?, last_error = ? WHERE seq = ?")
        .bind_all(next_attempt_ms, error, seq)
        .run();
}

void OutboxStore::refuse(std::int64_t seq, const std::string& error) {
    std::lock_guard lock(mutex_);
    db_.prepare("UPDATE deliveries SET attempts = attempts + 1, refused = 1, last_error = ? WHERE seq = ?")
        .bind_all(error, seq)
        .run();
}

std::int64_t OutboxStore::size() {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare("SELECT COUNT(*) FROM deliveries WHERE refused = 0");
    s.step();
    return s.integer(0);
}

OutboxState OutboxStore::state(const std::string& tenant, bool is_default, std::int64_t now_ms) {
    std::lock_guard lock(mutex_);
    OutboxState out;
    auto s = db_.prepare(
        "SELECT COALESCE(SUM(refused = 0), 0), COALESCE(SUM(refused), 0), MIN(CASE WHEN refused = 0 THEN stored_ms END) "
        "FROM deliveries WHERE tenant = ? OR (? AND tenant = '')");
    s.bind(1, tenant).bind(2, is_default ? 1 : 0);
    s.step();
    out.pending = s.integer(0);
    out.refused = s.integer(1);
    if (auto oldest = s.optional_text(2))
        out.oldest_age_seconds = std::max<std::int64_t>(0, (now_ms - std::stoll(*oldest)) / 1000);
    auto e = db_.prepare(
        "SELECT last_error FROM deliveries WHERE (tenant = ? OR (? AND tenant = '')) AND last_error IS NOT NULL ORDER BY seq "
        "DESC "
        "LIMIT 1");
    e.bind(1, tenant).bind(2, is_default ? 1 : 0);
    if (e.step()) out.last_error = e.text(0);
    return out;
}

}  // namespace certconn::host
