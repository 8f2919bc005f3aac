#include "jobs/OutboxStore.hpp"

#include "fleet/HostSchema.hpp"

namespace certconn::host {

namespace {

std::string columns(const sql::Database& db) {
    return "seq, tenant, kind, key, feature, operation, body, events, attempts, next_attempt_ms, CASE WHEN next_attempt_ms <= " +
           db.now_ms_sql() + " THEN 1 ELSE 0 END";
}

OutboxEntry read_entry(const sql::Statement& s) {
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
    e.due = s.integer(10) != 0;
    return e;
}

sql::Options sqlite_file(const std::filesystem::path& file) {
    sql::Options o;
    o.sqlite_file = file;
    o.synchronous_full = false;
    return o;
}

std::string lease_name(const std::string& tenant) {
    return "outbox:" + tenant;
}

}  // namespace

// SQLite: WAL + synchronous=NORMAL: a commit survives the process being killed at any
// instruction; after a power loss the last commits may be gone, and those jobs simply run again
// (their re-run is idempotent: the pkcs key journal and the CA record are synchronous=FULL).
OutboxStore::OutboxStore(const sql::Options& options, std::string instance_id)
    : db_([&] {
          sql::Options o = options;
          if (o.url.empty()) o.synchronous_full = false;
          return open_host_store(o);
      }()),
      instance_id_(std::move(instance_id)) {}

OutboxStore::OutboxStore(const std::filesystem::path& file) : OutboxStore(sqlite_file(file), "local") {}

bool OutboxStore::shared() {
    std::lock_guard lock(mutex_);
    return db_.shared();
}

std::string OutboxStore::describe() {
    std::lock_guard lock(mutex_);
    return db_.describe();
}

std::optional<std::int64_t> OutboxStore::lead(const std::string& tenant, std::chrono::seconds ttl) {
    std::lock_guard lock(mutex_);
    if (!db_.shared()) return 0;
    return sql::LeaderLease(db_, lease_name(tenant), instance_id_).acquire(ttl);
}

void OutboxStore::resign(const std::string& tenant) {
    std::lock_guard lock(mutex_);
    if (db_.shared()) sql::LeaderLease(db_, lease_name(tenant), instance_id_).release();
}

std::optional<sql::LeaderLease::Holder> OutboxStore::leader(const std::string& tenant) {
    std::lock_guard lock(mutex_);
    if (!db_.shared()) return std::nullopt;
    return sql::LeaderLease(db_, lease_name(tenant), instance_id_).current();
}

std::string OutboxStore::put(const std::string& tenant, const std::string& job_id, const std::string& feature,
                             const std::string& result) {
    std::lock_guard lock(mutex_);
    // A refused result is replaced by a new run's.
    db_.prepare("INSERT INTO deliveries (tenant, kind, key, feature, body, stored_ms) VALUES ($1, 'result', $2, $3, $4, " +
                db_.now_ms_sql() +
                ") ON CONFLICT (tenant, kind, key) DO UPDATE SET body = excluded.body, feature = excluded.feature, refused = 0, "
                "attempts = 0, next_attempt_ms = 0, last_error = NULL WHERE deliveries.refused = 1")
        .bind_all(tenant, job_id, feature, result)
        .run();
    auto s = db_.prepare("SELECT body FROM deliveries WHERE tenant = $1 AND kind = 'result' AND key = $2");
    s.bind_all(tenant, job_id);
    s.step();
    return s.text(0);
}

std::optional<OutboxEntry> OutboxStore::find(const std::string& tenant, bool is_default, const std::string& job_id) {
    std::lock_guard lock(mutex_);
    // A refused result does not count: a new claim of the job runs it again and stores anew (put).
    auto s = db_.prepare("SELECT " + columns(db_) +
                         " FROM deliveries WHERE (tenant = $1 OR ($2 = 1 AND tenant = '')) AND kind = 'result' AND key = $3 "
                         "AND refused = 0 ORDER BY seq LIMIT 1");
    s.bind(1, tenant).bind(2, is_default ? 1 : 0).bind(3, job_id);
    if (!s.step()) return std::nullopt;
    return read_entry(s);
}

bool OutboxStore::notify(const std::string& tenant, const std::string& key, const std::string& plugin,
                         const std::string& operation, const std::string& body, const std::string& events) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(
        "INSERT INTO deliveries (tenant, kind, key, feature, operation, body, events, stored_ms) "
        "VALUES ($1, 'notification', $2, $3, $4, $5, $6, " +
        db_.now_ms_sql() + ") ON CONFLICT (tenant, kind, key) DO NOTHING RETURNING seq");
    s.bind_all(tenant, key, plugin, operation, body, events);
    const bool stored = s.step();
    while (s.step()) {
    }
    return stored;
}

std::vector<OutboxEntry> OutboxStore::pending(const std::string& tenant, bool is_default, std::size_t limit) {
    std::lock_guard lock(mutex_);
    auto s =
        db_.prepare("SELECT " + columns(db_) +
                    " FROM deliveries WHERE refused = 0 AND (tenant = $1 OR ($2 = 1 AND tenant = '')) ORDER BY seq LIMIT $3");
    s.bind(1, tenant).bind(2, is_default ? 1 : 0).bind(3, static_cast<std::int64_t>(limit));
    std::vector<OutboxEntry> out;
    while (s.step())
        out.push_back(read_entry(s));
    return out;
}

std::int64_t OutboxStore::adopt_legacy(const std::string& tenant) {
    std::lock_guard lock(mutex_);
    // A legacy row whose key the tenant already has stays behind (counted below).
    db_.prepare(
           "UPDATE deliveries SET tenant = $1 WHERE tenant = '' AND NOT EXISTS (SELECT 1 FROM deliveries d "
           "WHERE d.tenant = $1 AND d.kind = deliveries.kind AND d.key = deliveries.key)")
        .bind(1, tenant)
        .run();
    auto s = db_.prepare("SELECT COUNT(*) FROM deliveries WHERE tenant = ''");
    s.step();
    return s.integer(0);
}

std::int64_t OutboxStore::retry_refused(const std::string& tenant) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(
        "UPDATE deliveries SET refused = 0, next_attempt_ms = 0 WHERE refused = 1 AND ($1 = '' OR tenant = $1) RETURNING seq");
    s.bind(1, tenant);
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
    db_.prepare("DELETE FROM deliveries WHERE seq = $1").bind(1, seq).run();
}

void OutboxStore::restamp(std::int64_t seq, const std::string& body) {
    std::lock_guard lock(mutex_);
    db_.prepare("UPDATE deliveries SET body = $1 WHERE seq = $2 AND refused = 0").bind_all(body, seq).run();
}

void OutboxStore::defer(std::int64_t seq, std::int64_t wait_ms, const std::string& error) {
    std::lock_guard lock(mutex_);
    db_.prepare("UPDATE deliveries SET attempts = attempts + 1, next_attempt_ms = " + db_.now_ms_sql() +
                " + $1, last_error = $2 WHERE seq = $3")
        .bind_all(wait_ms, error, seq)
        .run();
}

void OutboxStore::refuse(std::int64_t seq, const std::string& error) {
    std::lock_guard lock(mutex_);
    db_.prepare("UPDATE deliveries SET attempts = attempts + 1, refused = 1, last_error = $1 WHERE seq = $2")
        .bind_all(error, seq)
        .run();
}

bool OutboxStore::refuse_if_unchanged(std::int64_t seq, const std::string& body, const std::string& error) {
    std::lock_guard lock(mutex_);
    return db_.prepare("UPDATE deliveries SET attempts = attempts + 1, refused = 1, last_error = $1 WHERE seq = $2 AND body = $3")
               .bind_all(error, seq, body)
               .run() == 1;
}

std::int64_t OutboxStore::size() {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare("SELECT COUNT(*) FROM deliveries WHERE refused = 0");
    s.step();
    return s.integer(0);
}

OutboxState OutboxStore::state(const std::string& tenant, bool is_default) {
    std::lock_guard lock(mutex_);
    OutboxState out;
    auto s = db_.prepare(
        "SELECT COALESCE(SUM(CASE WHEN refused = 0 THEN 1 ELSE 0 END), 0), COALESCE(SUM(refused), 0), " + db_.now_ms_sql() +
        " - MIN(CASE WHEN refused = 0 THEN stored_ms END) FROM deliveries WHERE tenant = $1 OR ($2 = 1 AND tenant = '')");
    s.bind(1, tenant).bind(2, is_default ? 1 : 0);
    s.step();
    out.pending = s.integer(0);
    out.refused = s.integer(1);
    if (!s.is_null(2)) out.oldest_age_seconds = std::max<std::int64_t>(0, s.integer(2) / 1000);
    auto e = db_.prepare(
        "SELECT last_error FROM deliveries WHERE (tenant = $1 OR ($2 = 1 AND tenant = '')) AND last_error IS NOT NULL "
        "ORDER BY seq DESC LIMIT 1");
    e.bind(1, tenant).bind(2, is_default ? 1 : 0);
    if (e.step()) out.last_error = e.text(0);
    return out;
}

std::map<std::string, OutboxState> OutboxStore::backlog() {
    std::lock_guard lock(mutex_);
    std::map<std::string, OutboxState> out;
    auto s = db_.prepare("SELECT tenant, COALESCE(SUM(CASE WHEN refused = 0 THEN 1 ELSE 0 END), 0), COALESCE(SUM(refused), 0), " +
                         db_.now_ms_sql() + " - MIN(CASE WHEN refused = 0 THEN stored_ms END) FROM deliveries GROUP BY tenant");
    while (s.step()) {
        OutboxState& o = out[s.text(0)];
        o.pending = s.integer(1);
        o.refused = s.integer(2);
        if (!s.is_null(3)) o.oldest_age_seconds = std::max<std::int64_t>(0, s.integer(3) / 1000);
    }
    return out;
}

}  // namespace certconn::host
