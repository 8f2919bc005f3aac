#include "JobQueue.hpp"

#include <certconn/sdk.hpp>

#include <boost/json/parse.hpp>

#include <algorithm>
#include <utility>

namespace certconn::tenant_local {

namespace json = boost::json;

namespace {

// SQLite: jobs.db as it has existed since 0.1 (version 1 is exactly the CREATE TABLE IF NOT
// EXISTS the queue always ran, so an old file takes it as a no-op), then the owner column.
const sql::Migration kJobsSqlite[] = {
    {1, R"(CREATE TABLE IF NOT EXISTS jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        feature TEXT NOT NULL,
        request TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'queued',
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_until_ms INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
        completed_at TEXT,
        result TEXT);
     CREATE INDEX IF NOT EXISTS jobs_claimable ON jobs (feature, status, lease_until_ms))"},
    {2, "ALTER TABLE jobs ADD COLUMN owner TEXT"},
};

// SQLite: scep.db; version 2 moves "who used a one-time challenge" into a table of its own
// whose primary key makes consuming a challenge one INSERT ... ON CONFLICT DO NOTHING.
const sql::Migration kScepSqlite[] = {
    {1, R"(CREATE TABLE IF NOT EXISTS scep_notifications (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        transaction_id TEXT NOT NULL,
        body TEXT NOT NULL,
        received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')));
     CREATE TABLE IF NOT EXISTS scep_challenges (
        hash TEXT PRIMARY KEY,
        profile TEXT NOT NULL,
        subject TEXT,
        sans TEXT,
        expires_at_ms INTEGER NOT NULL,
        used_by_transaction TEXT))"},
    {2, R"(CREATE TABLE scep_challenge_uses (
        hash TEXT PRIMARY KEY,
        transaction_id TEXT NOT NULL,
        used_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')));
     INSERT OR IGNORE INTO scep_challenge_uses (hash, transaction_id)
        SELECT hash, used_by_transaction FROM scep_challenges WHERE used_by_transaction IS NOT NULL)"},
};

#define CC_PG_NOW_TEXT "to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

// PostgreSQL: schema tenant_local holds both stores, with the same tables and columns.
const sql::Migration kPostgresql[] = {
    {1, R"(CREATE TABLE jobs (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        feature TEXT NOT NULL,
        request TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'queued',
        attempts BIGINT NOT NULL DEFAULT 0,
        lease_until_ms BIGINT NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL DEFAULT )" CC_PG_NOW_TEXT R"(,
        completed_at TEXT,
        result TEXT);
     CREATE INDEX jobs_claimable ON jobs (feature, status, lease_until_ms);
     CREATE TABLE scep_notifications (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        kind TEXT NOT NULL,
        transaction_id TEXT NOT NULL,
        body TEXT NOT NULL,
        received_at TEXT NOT NULL DEFAULT )" CC_PG_NOW_TEXT R"();
     CREATE TABLE scep_challenges (
        hash TEXT PRIMARY KEY,
        profile TEXT NOT NULL,
        subject TEXT,
        sans TEXT,
        expires_at_ms BIGINT NOT NULL,
        used_by_transaction TEXT))"},
    {2, R"(ALTER TABLE jobs ADD COLUMN owner TEXT;
     CREATE TABLE scep_challenge_uses (
        hash TEXT PRIMARY KEY,
        transaction_id TEXT NOT NULL,
        used_at TEXT NOT NULL DEFAULT )" CC_PG_NOW_TEXT R"())"},
};

constexpr const char* kColumns = "id, feature, request, status, attempts, created_at, completed_at, result, owner";

Job row(const sql::Statement& s, int first = 0) {
    return {s.text(first),
            s.text(first + 1),
            s.text(first + 2),
            s.text(first + 3),
            s.integer(first + 4),
            s.text(first + 5),
            s.optional_text(first + 6),
            s.optional_text(first + 7),
            s.optional_text(first + 8)};
}

std::string completed_now(const sql::Database& db) {
    return db.shared() ? CC_PG_NOW_TEXT : "strftime('%Y-%m-%dT%H:%M:%fZ','now')";
}

std::string instance_of(const sql::Options& options, std::string given) {
    if (!given.empty()) return given;
    return options.url.empty() ? "local" : "unknown";
}

}  // namespace

std::span<const sql::Migration> migrations(sql::Backend backend, bool jobs) {
    if (backend == sql::Backend::postgresql) return kPostgresql;
    if (jobs) return kJobsSqlite;
    return kScepSqlite;
}

json::object Job::to_json(bool with_result) const {
    json::object o{{"id", id}, {"feature", feature}, {"status", status}, {"attempts", attempts}, {"created_at", created_at}};
    if (completed_at) o["completed_at"] = *completed_at;
    if (with_result && result) o["result"] = json::parse(*result);
    return o;
}

json::object JobStats::to_json() const {
    json::object f;
    for (const auto& [name, s] : features)
        f[name] = json::object{
            {"queued", s.queued}, {"running", s.running}, {"oldest_queued_age_seconds", s.oldest_queued_age_seconds}};
    json::object owners;
    for (const auto& [owner, n] : leases_by_owner)
        owners[owner] = n;
    return {{"features", std::move(f)}, {"leases_by_owner", std::move(owners)}};
}

JobQueue::JobQueue(const sql::Options& options, std::string instance_id)
    : db_(sql::Database::open(options)), instance_(instance_of(options, std::move(instance_id))) {
    // secure_delete: a pkcs request may carry a pfx_password; the copies an UPDATE of the row
    // leaves behind (status, lease, result) are zeroed instead of lingering in free space.
    if (!db_.shared()) db_.exec("PRAGMA secure_delete=ON");
    std::lock_guard lock(mutex_);
    try {
        ensure_schema();
    } catch (const sql::Error& e) {
        // A newer schema is final; an unreachable server is not: the first call tries again.
        if (!e.transient()) throw sdk::Error(CC_ERR_INTERNAL, "job queue (" + db_.describe() + "): " + e.what());
    }
}

namespace {
sql::Options sqlite_options(const std::filesystem::path& file) {
    sql::Options o;
    o.sqlite_file = file;
    o.synchronous_full = false;  // safe against a crash of the process; the outbox covers power loss
    return o;
}
}  // namespace

JobQueue::JobQueue(const std::filesystem::path& sqlite_file) : JobQueue(sqlite_options(sqlite_file), "local") {}

void JobQueue::ensure_schema() {
    if (migrated_) return;
    db_.migrate(migrations(db_.backend(), true));
    migrated_ = true;
}

// Every public call: the store's errors become the plugin's. A transient one (server down,
// connection lost, serialization failure) is UNAVAILABLE, which the host retries.
template <class Fn>
auto JobQueue::guarded(const char* what, Fn&& fn) {
    std::lock_guard lock(mutex_);
    try {
        ensure_schema();
        return fn();
    } catch (const sql::Error& e) {
        const std::string message = std::string("job queue ") + what + " (" + db_.describe() + "): " + e.what();
        if (e.transient()) throw sdk::Error(CC_ERR_UNAVAILABLE, message + "; try again later");
        if (e.constraint()) throw sdk::Error(CC_ERR_CONFLICT, message);
        throw sdk::Error(CC_ERR_INTERNAL, message);
    }
}

Job JobQueue::submit(const std::string& feature, const std::string& request_json, const std::string& id, bool* created) {
    return guarded("submit", [&] {
        auto insert =
            db_.prepare("INSERT INTO jobs (id, feature, request) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING RETURNING seq");
        insert.bind_all(id, feature, request_json);
        const bool inserted = insert.step();
        insert.reset();
        if (created) *created = inserted;
        auto s = db_.prepare(std::string("SELECT ") + kColumns + " FROM jobs WHERE id = $1");
        s.bind(1, id);
        if (!s.step()) throw sdk::Error(CC_ERR_INTERNAL, "job '" + id + "' was neither inserted nor found");
        Job job = row(s);
        if (job.feature != feature || job.request != request_json)
            throw sdk::Error(CC_ERR_CONFLICT, "job '" + id + "' already exists with a different document");
        return job;
    });
}

std::optional<Job> JobQueue::find(const std::string& id) {
    return guarded("read", [&]() -> std::optional<Job> {
        auto s = db_.prepare(std::string("SELECT ") + kColumns + " FROM jobs WHERE id = $1");
        s.bind(1, id);
        if (!s.step()) return std::nullopt;
        return row(s);
    });
}

std::vector<Job> JobQueue::claim(const std::vector<std::string>& features, std::uint32_t max, std::uint32_t lease_seconds) {
    if (features.empty() || max == 0) return {};
    return guarded("claim", [&] {
        // One statement on both backends. PostgreSQL: the inner SELECT locks the rows it picks and
        // skips rows another instance's claim has locked, so concurrent claims never pick the
        // same job; a row changed by a claim that committed meanwhile is re-checked and dropped.
        // SQLite: a single writer at a time. The lease ends in database time.
        const std::string now = db_.now_ms_sql();
        std::string in;
        for (std::size_t i = 0; i < features.size(); ++i)
            in += (i ? ", $" : "$") + std::to_string(i + 4);
        const std::string claimable = "(status = 'queued' OR (status = 'running' AND lease_until_ms < " + now + "))";
        auto s = db_.prepare("UPDATE jobs SET status = 'running', attempts = attempts + 1, owner = $1, lease_until_ms = " + now +
                             " + $2 WHERE seq IN (SELECT seq FROM jobs WHERE feature IN (" + in + ") AND " + claimable +
                             " ORDER BY seq LIMIT $3" + (db_.shared() ? " FOR UPDATE SKIP LOCKED" : "") + ") AND " + claimable +
                             " RETURNING seq, " + kColumns);
        s.bind(1, instance_).bind(2, static_cast<std::int64_t>(lease_seconds) * 1000).bind(3, static_cast<std::int64_t>(max));
        int i = 3;
        for (const auto& f : features)
            s.bind(++i, f);
        std::vector<std::pair<std::int64_t, Job>> rows;
        while (s.step())
            rows.emplace_back(s.integer(0), row(s, 1));
        std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
        std::vector<Job> out;
        out.reserve(rows.size());
        for (auto& r : rows)
            out.push_back(std::move(r.second));
        return out;
    });
}

void JobQueue::renew(const std::string& id, std::int64_t claim, std::uint32_t lease_seconds) {
    guarded("lease renewal", [&] {
        const std::string now = db_.now_ms_sql();
        // An expired lease is not revived even if nobody claimed the job yet: from its expiry on,
        // another claim may have it, and the holder must not go on believing it owns the job.
        auto s = db_.prepare("UPDATE jobs SET lease_until_ms = " + now +
                             " + $1 WHERE id = $2 AND status = 'running' AND attempts = $3 AND lease_until_ms >= " + now);
        s.bind_all(static_cast<std::int64_t>(lease_seconds) * 1000, id, claim);
        s.run();
        if (db_.changes() == 1) return;
        auto row = db_.prepare("SELECT status, attempts FROM jobs WHERE id = $1");
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
    });
}

bool JobQueue::complete(const std::string& id, const std::string& status, const std::string& result_json,
                        std::optional<std::int64_t> claim) {
    return guarded("completion", [&] {
        const std::string done = completed_now(db_);
        if (!claim) {
            auto s = db_.prepare("UPDATE jobs SET status = $1, result = $2, completed_at = " + done +
                                 " WHERE id = $3 AND status IN ('queued', 'running')");
            s.bind_all(status, result_json, id).run();
            if (db_.changes() == 1) return true;
            auto exists = db_.prepare("SELECT status FROM jobs WHERE id = $1");
            exists.bind(1, id);
            if (!exists.step()) throw sdk::Error(CC_ERR_NOT_FOUND, "no job '" + id + "'");
            return false;
        }
        // Fenced: only the claim that still holds the job completes it (its lease may have run
        // out, but while nobody claimed the job again the result is still the only one).
        auto s = db_.prepare("UPDATE jobs SET status = $1, result = $2, completed_at = " + done +
                             " WHERE id = $3 AND attempts = $4 AND status = 'running'");
        s.bind_all(status, result_json, id, *claim).run();
        if (db_.changes() == 1) return true;
        auto now = db_.prepare("SELECT status, attempts FROM jobs WHERE id = $1");
        now.bind(1, id);
        if (!now.step()) throw sdk::Error(CC_ERR_NOT_FOUND, "no job '" + id + "'");
        const std::string current = now.text(0);
        const std::int64_t attempts = now.integer(1);
        // The same claim reporting again (a re-delivery whose first acknowledgement was lost).
        if (attempts == *claim && (current == "succeeded" || current == "failed")) return false;
        throw sdk::Error(CC_ERR_CONFLICT, "job " + id + ": claim " + std::to_string(*claim) +
                                              " was fenced off (the job was claimed again as claim " + std::to_string(attempts) +
                                              ")");
    });
}

std::int64_t JobQueue::count(const std::string& status) {
    return guarded("count", [&] {
        auto s = db_.prepare("SELECT COUNT(*) FROM jobs WHERE status = $1");
        s.bind(1, status);
        s.step();
        return s.integer(0);
    });
}

JobStats JobQueue::stats() {
    return guarded("statistics", [&] {
        JobStats out;
        const std::string now = db_.now_ms_sql();
        // Age from created_at (UTC, ISO 8601 with milliseconds), in database time.
        const std::string created_ms = db_.shared()
                                           ? "CAST(FLOOR(EXTRACT(EPOCH FROM CAST(created_at AS TIMESTAMPTZ)) * 1000) AS BIGINT)"
                                           : "CAST((julianday(created_at) - 2440587.5) * 86400000 AS INTEGER)";
        const std::string live = "(status = 'running' AND lease_until_ms >= " + now + ")";
        auto s = db_.prepare(
            "SELECT feature, CAST(SUM(CASE WHEN " + live + " THEN 0 ELSE 1 END) AS BIGINT), CAST(SUM(CASE WHEN " + live +
            " THEN 1 ELSE 0 END) AS BIGINT), COALESCE(MAX(CASE WHEN " + live + " THEN NULL ELSE (" + now + " - " + created_ms +
            ") / 1000 END), 0) FROM jobs WHERE status IN ('queued', 'running') GROUP BY feature ORDER BY feature");
        while (s.step())
            out.features[s.text(0)] = {s.integer(1), s.integer(2), std::max<std::int64_t>(0, s.integer(3))};
        auto o = db_.prepare("SELECT COALESCE(owner, ''), COUNT(*) FROM jobs WHERE " + live + " GROUP BY owner ORDER BY 1");
        while (o.step())
            out.leases_by_owner[o.text(0)] = o.integer(1);
        return out;
    });
}

std::string JobQueue::describe() {
    std::lock_guard lock(mutex_);
    return db_.describe();
}

}  // namespace certconn::tenant_local
