#include "JobQueue.hpp"

#include <certconn/sdk.hpp>

#include <boost/json/parse.hpp>

#include <chrono>

namespace certconn::tenant_local {

namespace json = boost::json;

namespace {

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

constexpr const char* kColumns = "id, feature, request, status, attempts, created_at, completed_at, result";

}  // namespace

json::object Job::to_json(bool with_result) const {
    json::object o{{"id", id}, {"feature", feature}, {"status", status}, {"attempts", attempts}, {"created_at", created_at}};
    if (completed_at) o["completed_at"] = *completed_at;
    if (with_result && result) o["result"] = json::parse(*result);
    return o;
}

// synchronous=NORMAL: safe against a crash of the process; see OutboxStore for power loss.
// secure_delete: a pkcs request may carry a pfx_password; the copies an UPDATE of the row leaves
// behind (status, lease, result) are zeroed instead of lingering in free space.
JobQueue::JobQueue(const std::filesystem::path& file) : db_(file, sqlite::Database::Options{false, true}) {
    db_.exec(R"(CREATE TABLE IF NOT EXISTS jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        feature TEXT NOT NULL,
        request TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'queued',
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_until_ms INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
        completed_at TEXT,
        result TEXT))");
    db_.exec("CREATE INDEX IF NOT EXISTS jobs_claimable ON jobs (feature, status, lease_until_ms)");
}

Job JobQueue::row(const sqlite::Statement& s) const {
    return {s.text(0), s.text(1), s.text(2), s.text(3), s.integer(4), s.text(5), s.optional_text(6), s.optional_text(7)};
}

Job JobQueue::submit(const std::string& feature, const std::string& request_json, const std::string& id) {
    std::lock_guard lock(mutex_);
    auto insert = db_.prepare("INSERT INTO jobs (id, feature, request) VALUES (?, ?, ?) ON CONFLICT(id) DO NOTHING");
    insert.bind_all(id, feature, request_json).run();
    auto s = db_.prepare(std::string("SELECT ") + kColumns + " FROM jobs WHERE id = ?");
    s.bind(1, id);
    s.step();
    Job job = row(s);
    if (job.feature != feature || job.request != request_json)
        throw sdk::Error(CC_ERR_CONFLICT, "job '" + id + "' already exists with a different document");
    return job;
}

std::optional<Job> JobQueue::find(const std::string& id) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(std::string("SELECT ") + kColumns + " FROM jobs WHERE id = ?");
    s.bind(1, id);
    if (!s.step()) return std::nullopt;
    return row(s);
}

std::vector<Job> JobQueue::claim(const std::vector<std::string>& features, std::uint32_t max, std::uint32_t lease_seconds) {
    std::vector<Job> out;
    if (features.empty() || max == 0) return out;
    std::lock_guard lock(mutex_);
    sqlite::Transaction tx(db_);
    const std::int64_t now = now_ms();
    std::string placeholders;
    for (std::size_t i = 0; i < features.size(); ++i)
        placeholders += i ? ",?" : "?";
    auto select = db_.prepare(std::string("SELECT ") + kColumns + " FROM jobs WHERE feature IN (" + placeholders +
                              ") AND (status = 'queued' OR (status = 'running' AND lease_until_ms < ?)) ORDER BY seq LIMIT ?");
    int i = 0;
    for (const auto& f : features)
        select.bind(++i, f);
    select.bind(i + 1, now);
    select.bind(i + 2, static_cast<std::int64_t>(max));
    while (select.step())
        out.push_back(row(select));
    auto update = db_.prepare("UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_until_ms = ? WHERE id = ?");
    for (auto& job : out) {
        update.bind_all(now + static_cast<std::int64_t>(lease_seconds) * 1000, job.id).run();
        update.reset();
        job.status = "running";
        ++job.attempts;
    }
    tx.commit();
    return out;
}

void JobQueue::renew(const std::string& id, std::int64_t claim, std::uint32_t lease_seconds) {
    std::lock_guard lock(mutex_);
    const std::int64_t now = now_ms();
    // An expired lease is not revived even if nobody claimed the job yet: from its expiry on,
    // another claim may have it, and the holder must not go on believing it owns the job.
    auto s = db_.prepare(
        "UPDATE jobs SET lease_until_ms = ? WHERE id = ? AND status = 'running' AND attempts = ? AND lease_until_ms >= ?");
    s.bind_all(now + static_cast<std::int64_t>(lease_seconds) * 1000, id, claim, now).run();
    if (db_.changes() == 1) return;
    auto row = db_.prepare("SELECT status, attempts, lease_until_ms FROM jobs WHERE id = ?");
    row.bind(1, id);
    if (!row.step()) throw sdk::Error(CC_ERR_NOT_FOUND, "no job '" + id + "'");
    const std::string status = row.text(0);
    std::string why;
    if (status != "running")
        why = "it is " + status;
    else if (row.integer(1) != claim)
        why = "it was claimed again (claim " + std::to_string(row.integer(1)) + ")";
    else
        why = "its lease expired";
    throw sdk::Error(CC_ERR_CONFLICT, "job '" + id + "' is no longer held by claim " + std::to_string(claim) + ": " + why);
}

bool JobQueue::complete(const std::string& id, const std::string& status, const std::string& result_json) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(
        "UPDATE jobs SET status = ?, result = ?, completed_at = strftime('%Y-%m-%dT%H:%M:%fZ','now') "
        "WHERE id = ? AND status IN ('queued', 'running')");
    s.bind_all(status, result_json, id).run();
    if (db_.changes() == 1) return true;
    auto exists = db_.prepare("SELECT status FROM jobs WHERE id = ?");
    exists.bind(1, id);
    if (!exists.step()) throw sdk::Error(CC_ERR_NOT_FOUND, "no job '" + id + "'");
    return false;
}

std::int64_t JobQueue::count(const std::string& status) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare("SELECT COUNT(*) FROM jobs WHERE status = ?");
    s.bind(1, status);
    s.step();
    return s.integer(0);
}

}  // namespace certconn::tenant_local
