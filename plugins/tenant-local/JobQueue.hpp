// The embedded tenant's job queue on certconn::store: a SQLite file (jobs.db) on one machine, or
// PostgreSQL schema `tenant_local` shared by a fleet of instances. Jobs enter queued, are claimed
// with a lease in database time (an unfinished claim is claimable again by any instance once its
// lease expires) and end with exactly one result. Each claim numbers the job's attempts: that
// number is the fencing token, so a result from a claim that lost the job is refused.
#pragma once

#include <certconn/sql.hpp>

#include <boost/json/object.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <span>
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
    std::optional<std::string> owner;   // the instance holding (or last holding) the claim

    boost::json::object to_json(bool with_result) const;
};

/// Queue depth per feature and live leases per instance (the `jobs.stats` call).
struct JobStats {
    struct Feature {
        std::int64_t queued = 0;   ///< claimable: queued, or running with an expired lease
        std::int64_t running = 0;  ///< running under a live lease
        std::int64_t oldest_queued_age_seconds = 0;
    };
    std::map<std::string, Feature> features;
    std::map<std::string, std::int64_t> leases_by_owner;  ///< live leases per instance id

    boost::json::object to_json() const;
};

/// The migrations of tenant-local's stores. On PostgreSQL the job queue and the SCEP ledger share
/// one schema and therefore one list; each SQLite file (jobs.db, scep.db) has its own.
std::span<const sql::Migration> migrations(sql::Backend backend, bool jobs);

class JobQueue {
public:
    /// `instance_id` is written as the owner of each claim (status --fleet shows leases by owner).
    JobQueue(const sql::Options& options, std::string instance_id);
    /// A SQLite file on this machine (tests, tools).
    explicit JobQueue(const std::filesystem::path& sqlite_file);

    /// Adds a job; with a client-chosen id an existing job of that id is returned instead
    /// (`created` tells which). CONFLICT when that id holds a different document.
    Job submit(const std::string& feature, const std::string& request_json, const std::string& id, bool* created = nullptr);
    std::optional<Job> find(const std::string& id);
    /// Claims up to `max` queued (or lease-expired) jobs of `features`, oldest first, for this
    /// instance. On PostgreSQL one UPDATE ... FOR UPDATE SKIP LOCKED: two instances never
    /// claim the same job under live leases.
    std::vector<Job> claim(const std::vector<std::string>& features, std::uint32_t max, std::uint32_t lease_seconds);
    /// Extends the lease of a job still running under claim number `claim` (its attempts
    /// count when claimed: the fencing token) to `lease_seconds` from now. Throws CONFLICT when
    /// that claim has lost the job (finished, lease expired, or claimed again since), NOT_FOUND
    /// for an unknown job.
    void renew(const std::string& id, std::int64_t claim, std::uint32_t lease_seconds);
    /// Records the result. Without `claim`: the first result stands (false when the job already
    /// had one). With `claim`: recorded only while that claim holds the job; the same claim
    /// reporting again once the job is final is accepted (false); a result from a claim
    /// that was fenced off (the job was claimed again) throws CONFLICT.
    bool complete(const std::string& id, const std::string& status, const std::string& result_json,
                  std::optional<std::int64_t> claim = std::nullopt);
    std::int64_t count(const std::string& status);
    JobStats stats();
    /// Where the queue lives, without secrets ("sqlite /var/lib/.../jobs.db").
    std::string describe();
    const std::string& instance_id() const { return instance_; }

private:
    template <class Fn>
    auto guarded(const char* what, Fn&& fn);
    void ensure_schema();  // with mutex_ held
    std::mutex mutex_;
    sql::Database db_;
    std::string instance_;
    bool migrated_ = false;
};

}  // namespace certconn::tenant_local
