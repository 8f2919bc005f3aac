#include "RevocationStore.hpp"

#include <certconn/sdk.hpp>

#include <boost/json.hpp>

#include <chrono>

namespace certconn::intune {

namespace json = boost::json;

RevocationStore::RevocationStore(const std::filesystem::path& file, Clock clock) : db_(file), clock_(std::move(clock)) {
    db_.exec(
        "CREATE TABLE IF NOT EXISTS requests ("
        " request_context TEXT PRIMARY KEY, job_id TEXT NOT NULL UNIQUE, serial TEXT NOT NULL, issuer TEXT NOT NULL,"
        " ca_configuration TEXT NOT NULL, ca TEXT NOT NULL, reason TEXT NOT NULL,"
        " state TEXT NOT NULL CHECK (state IN ('queued', 'leased', 'done')),"
        " lease_until INTEGER NOT NULL DEFAULT 0, claims INTEGER NOT NULL DEFAULT 0, result TEXT,"
        " uploaded INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL)");
    db_.exec("CREATE INDEX IF NOT EXISTS requests_state ON requests(state, uploaded, updated_at)");
    db_.exec("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)");
}

std::int64_t RevocationStore::now() const {
    if (clock_) return clock_();
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::size_t RevocationStore::add(const std::vector<RevocationRequest>& requests,
                                 const std::function<std::string(const std::string&)>& ca_for, const std::string& reason,
                                 std::vector<std::string>* added_contexts) {
    std::lock_guard lock(mutex_);
    const std::int64_t t = now();
    std::size_t added = 0;
    sqlite::Transaction tx(db_);
    for (const auto& r : requests) {
        const std::string ca = ca_for(r.ca_configuration);
        std::string state = "queued";
        std::optional<std::string> result;
        if (ca.empty()) {
            // No CA of ours serves this caConfiguration: Intune hears so (4002), no job runs.
            const std::string message = truncate_utf8("no CA configured for caConfiguration " + r.ca_configuration, 200);
            state = "done";
            result = json::serialize(json::object{{"status", "failed"},
                                                  {"error_code", 4002},
                                                  {"error", json::object{{"code", "invalid_argument"}, {"message", message}}}});
        }
        auto s = db_.prepare(
            "INSERT INTO requests (request_context, job_id, serial, issuer, ca_configuration, ca, reason, state, result,"
            " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(request_context) DO NOTHING");
        s.bind_all(r.request_context, job_id_for(r.request_context), r.serial_number, r.issuer_name, r.ca_configuration, ca,
                   reason, state);
        if (result)
            s.bind(9, *result);
        else
            s.bind_null(9);
        s.bind(10, t).bind(11, t).run();
        if (db_.changes() == 1) {
            ++added;
            if (added_contexts) added_contexts->push_back(r.request_context);
        }
    }
    tx.commit();
    return added;
}

std::vector<StoredRequest> RevocationStore::claim(std::size_t max, std::uint32_t lease_seconds) {
    std::lock_guard lock(mutex_);
    const std::int64_t t = now();
    std::vector<StoredRequest> out;
    if (max == 0) return out;
    sqlite::Transaction tx(db_);
    {
        auto s = db_.prepare(
            "SELECT job_id, request_context, serial, issuer, ca_configuration, ca, reason, claims FROM requests"
            " WHERE state = 'queued' OR (state = 'leased' AND lease_until < ?) ORDER BY created_at, rowid LIMIT ?");
        s.bind(1, t).bind(2, static_cast<std::int64_t>(max));
        while (s.step())
            out.push_back({s.text(0), s.text(1), s.text(2), s.text(3), s.text(4), s.text(5), s.text(6), s.integer(7) + 1});
    }
    for (const auto& r : out)
        db_.prepare("UPDATE requests SET state = 'leased', claims = ?, lease_until = ?, updated_at = ? WHERE job_id = ?")
            .bind_all(r.claim, t + static_cast<std::int64_t>(lease_seconds) * 1000, t, r.job_id)
            .run();
    tx.commit();
    return out;
}

void RevocationStore::renew(const std::string& job_id, std::int64_t claim, std::uint32_t lease_seconds) {
    std::lock_guard lock(mutex_);
    const std::int64_t t = now();
    db_.prepare(
           "UPDATE requests SET lease_until = ?, updated_at = ? WHERE job_id = ? AND state = 'leased' AND claims = ? AND"
           " lease_until >= ?")
        .bind_all(t + static_cast<std::int64_t>(lease_seconds) * 1000, t, job_id, claim, t)
        .run();
    if (db_.changes() == 1) return;
    auto row = db_.prepare("SELECT state, claims FROM requests WHERE job_id = ?");
    row.bind(1, job_id);
    if (!row.step()) throw sdk::Error(CC_ERR_NOT_FOUND, "no Intune revocation job '" + job_id + "'");
    const std::string state = row.text(0);
    std::string why;
    if (state == "done")
        why = "it has a result";
    else if (state == "queued")
        why = "it is queued again";
    else if (row.integer(1) != claim)
        why = "it was claimed again (claim " + std::to_string(row.integer(1)) + ")";
    else
        why = "its lease expired";
    throw sdk::Error(CC_ERR_CONFLICT, "job '" + job_id + "' is no longer held by claim " + std::to_string(claim) + ": " + why);
}

bool RevocationStore::complete(const std::string& job_id, const std::string& result_json) {
    std::lock_guard lock(mutex_);
    const std::int64_t t = now();
    db_.prepare("UPDATE requests SET state = 'done', result = ?, updated_at = ? WHERE job_id = ? AND state != 'done'")
        .bind_all(result_json, t, job_id)
        .run();
    if (db_.changes() == 1) return true;
    auto row = db_.prepare("SELECT 1 FROM requests WHERE job_id = ?");
    row.bind(1, job_id);
    if (!row.step()) throw sdk::Error(CC_ERR_NOT_FOUND, "no Intune revocation job '" + job_id + "'");
    return false;
}

bool RevocationStore::uploaded(const std::string& job_id) {
    std::lock_guard lock(mutex_);
    auto row = db_.prepare("SELECT uploaded FROM requests WHERE job_id = ?");
    row.bind(1, job_id);
    if (!row.step()) throw sdk::Error(CC_ERR_NOT_FOUND, "no Intune revocation job '" + job_id + "'");
    return row.integer(0) != 0;
}

std::vector<PendingUpload> RevocationStore::pending_uploads(std::size_t max) {
    std::lock_guard lock(mutex_);
    std::vector<PendingUpload> out;
    auto s = db_.prepare(
        "SELECT job_id, request_context, result FROM requests WHERE state = 'done' AND uploaded = 0"
        " ORDER BY updated_at, rowid LIMIT ?");
    s.bind(1, static_cast<std::int64_t>(max));
    while (s.step())
        out.push_back({s.text(0), s.text(1), s.text(2)});
    return out;
}

void RevocationStore::mark_uploaded(const std::vector<std::string>& request_contexts) {
    std::lock_guard lock(mutex_);
    const std::int64_t t = now();
    sqlite::Transaction tx(db_);
    for (const auto& rc : request_contexts)
        db_.prepare("UPDATE requests SET uploaded = 1, updated_at = ? WHERE request_context = ? AND state = 'done'")
            .bind_all(t, rc)
            .run();
    tx.commit();
}

std::int64_t RevocationStore::next_download() {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare("SELECT value FROM meta WHERE key = 'next_download'");
    return s.step() ? s.integer(0) : 0;
}

void RevocationStore::set_next_download(std::int64_t when_ms) {
    std::lock_guard lock(mutex_);
    db_.prepare("INSERT INTO meta (key, value) VALUES ('next_download', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
        .bind(1, when_ms)
        .run();
}

RevocationStore::Counts RevocationStore::counts() {
    std::lock_guard lock(mutex_);
    Counts c;
    auto s = db_.prepare("SELECT state, uploaded, COUNT(*) FROM requests GROUP BY state, uploaded");
    while (s.step()) {
        const std::string state = s.text(0);
        const std::int64_t n = s.integer(2);
        if (state == "queued")
            c.queued += n;
        else if (state == "leased")
            c.leased += n;
        else if (s.integer(1) != 0)
            c.uploaded += n;
        else
            c.done += n;
    }
    return c;
}

void RevocationStore::purge_uploaded(int days) {
    std::lock_guard lock(mutex_);
    db_.prepare("DELETE FROM requests WHERE uploaded = 1 AND updated_at < ?")
        .bind(1, now() - static_cast<std::int64_t>(days) * 86400 * 1000)
        .run();
}

}  // namespace certconn::intune
