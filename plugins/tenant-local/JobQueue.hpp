// The embedded tenant's job queue (SQLite, WAL): jobs enter queued, are claimed with a lease
// (an unfinished claim returns to the queue when its lease expires) and end with exactly one
// result — the first one reported.
#pragma once

#include <certconn/sqlite.hpp>

#include <boost/json/object.hpp>

#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace certconn::tenant_local {

struct Job {
    std::string id;
    std::string feature;
    std::string request;  // JSON object
    std::string status;   // queued | running | succeeded | failed
    std::int64_t attempts = 0;
    std::string created_at;
    std::optional<std::string> completed_at;
    std::optional<std::string> result;  // JSON object

    boost::json::object to_json(bool with_result) const;
};

class JobQueue {
public:
    explicit JobQueue(const std::filesystem::path& file);

    /// Adds a job; with a client-chosen id an existing job of that id is returned instead.
    Job submit(const std::string& feature, const std::string& request_json, const std::string& id);
    std::optional<Job> find(const std::string& id);
    /// Claims up to `max` queued (or lease-expired) jobs of `features`, oldest first.
    std::vector<Job> claim(const std::vector<std::string>& features, std::uint32_t max, std::uint32_t lease_seconds);
    /// Extends the lease of a job still running under claim number `claim` (its attempts
    /// count when claimed: the fencing token) to `lease_seconds` from now. Throws CONFLICT when
    /// that claim has lost the job (finished, lease expired, or claimed again since), NOT_FOUND
    /// for an unknown job.
    void renew(const std::string& id, std::int64_t claim, std::uint32_t lease_seconds);
    /// Records the result; false when the job already has one (the first result stands).
    bool complete(const std::string& id, const std::string& status, const std::string& result_json);
    std::int64_t count(const std::string& status);

private:
    Job row(const sqlite::Statement& s) const;
    std::mutex mutex_;
    sqlite::Database db_;
};

}  // namespace certconn::tenant_local
