#include "jobs/OutboxStore.hpp"

namespace certconn::host {

// WAL + synchronous=NORMAL: a commit survives the process being killed at any instruction;
// after a power loss the last commits may be gone, and those jobs simply run again (their
// re-run is idempotent: the pkcs key journal and the CA record are synchronous=FULL).
OutboxStore::OutboxStore(const std::filesystem::path& file) : db_(file, false) {
    db_.exec(R"(CREATE TABLE IF NOT EXISTS outbox (
        job_id TEXT PRIMARY KEY,
        feature TEXT NOT NULL,
        result TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        stored_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))))");
}

std::string OutboxStore::put(const std::string& job_id, const std::string& feature, const std::string& result) {
    std::lock_guard lock(mutex_);
    db_.prepare("INSERT INTO outbox (job_id, feature, result) VALUES (?, ?, ?) ON CONFLICT(job_id) DO NOTHING")
        .bind_all(job_id, feature, result)
        .run();
    auto s = db_.prepare("SELECT result FROM outbox WHERE job_id = ?");
    s.bind(1, job_id);
    s.step();
    return s.text(0);
}

std::optional<OutboxEntry> OutboxStore::find(const std::string& job_id) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare("SELECT job_id, feature, result, attempts FROM outbox WHERE job_id = ?");
    s.bind(1, job_id);
    if (!s.step()) return std::nullopt;
    return OutboxEntry{s.text(0), s.text(1), s.text(2), s.integer(3)};
}

std::vector<OutboxEntry> OutboxStore::due(std::int64_t now_ms, std::size_t limit) {
    std::lock_guard lock(mutex_);
    auto s =
        db_.prepare("SELECT job_id, feature, result, attempts FROM outbox WHERE next_attempt_ms <= ? ORDER BY stored_at LIMIT ?");
    s.bind(1, now_ms).bind(2, static_cast<std::int64_t>(limit));
    std::vector<OutboxEntry> out;
    while (s.step())
        out.push_back({s.text(0), s.text(1), s.text(2), s.integer(3)});
    return out;
}

void OutboxStore::remove(const std::string& job_id) {
    std::lock_guard lock(mutex_);
    db_.prepare("DELETE FROM outbox WHERE job_id = ?").bind(1, job_id).run();
}

void OutboxStore::defer(const std::string& job_id, std::int64_t next_attempt_ms, const std::string& error) {
    std::lock_guard lock(mutex_);
    db_.prepare("UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?, last_error = ? WHERE job_id = ?")
        .bind_all(next_attempt_ms, error, job_id)
        .run();
}

std::int64_t OutboxStore::size() {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare("SELECT COUNT(*) FROM outbox");
    s.step();
    return s.integer(0);
}

}  // namespace certconn::host
