// Claims jobs from every configured tenant for the features it feeds, runs them with bounded
// concurrency, retries transient failures with backoff, stores every result in the durable
// outbox and only then reports it to the tenant the job came from, retrying until it is
// acknowledged. The outbox also holds the notifications features hand the host
// (tenant_notify); each tenant's entries are delivered in the order stored.
//
// Threads: per tenant, one claim thread (claim_jobs, lease renewal of its running jobs) and one
// delivery thread (the only caller of that tenant's complete_job and of its notification
// calls), so a slow or dead tenant holds up only itself; `concurrency` workers shared by all
// tenants (run_job; they store results and wake the tenant's delivery thread).
// A job's lease is renewed through the tenant call "jobs.renew_lease" before a retry wait that
// would outlast it; a lease the tenant no longer grants is abandoned, never finished twice.
#pragma once

#include "config/Config.hpp"
#include "eventlog/EventLog.hpp"
#include "jobs/OutboxStore.hpp"
#include "plugins/PluginRuntime.hpp"

#include <boost/json/object.hpp>

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace certconn::host {

class JobScheduler {
public:
    JobScheduler(PluginRuntime& runtime, EventLog& log, JobSettings settings, OutboxStore& outbox);
    ~JobScheduler();

    void start();
    /// Stops claiming; waits up to `drain` for jobs in flight. Jobs still waiting to retry are
    /// abandoned: their lease returns them to the queue.
    void stop(std::chrono::seconds drain);
    /// After a reload: starts the threads of tenants that were added, stops those of tenants
    /// that are gone (their outbox entries wait for the tenant to return).
    void sync_tenants();
    /// A notification was stored for `tenant`: deliver it soon.
    void wake_delivery(const std::string& tenant);

    std::size_t in_flight() const { return in_flight_; }
    std::int64_t outbox_size() { return outbox_.size(); }
    boost::json::object outbox_state(const std::string& tenant);

private:
    /// A claimed job and how long its lease lasts (host clock; renewed as needed). `job` and
    /// `tenant` do not change after the claim; the other fields are guarded by mutex_.
    struct Claim {
        std::string tenant;
        boost::json::object job;
        std::chrono::steady_clock::time_point lease_until;
        std::chrono::steady_clock::time_point renew_not_before;  // after a refused renewal
        bool lost = false;                                       // the tenant said this claim no longer holds the job
    };
    enum class Renewal { renewed, lost, unsupported };
    enum class Delivery { delivered, deferred, refused };
    /// One tenant's threads.
    struct Lane {
        explicit Lane(std::string name) : tenant(std::move(name)) {}
        const std::string tenant;
        std::atomic<bool> stop{false};
        std::thread claimer;
        std::thread deliverer;
        std::mutex mutex;  // the fields below
        std::condition_variable wake;
        bool pending = false;  // something was stored since the deliverer last looked
        bool delivery_stop = false;
        std::chrono::steady_clock::time_point delivery_deadline;  // at stop: last pass until then
        std::chrono::steady_clock::time_point backlog_reported;
        // Claim thread only: the heartbeat ("tenant.heartbeat").
        std::chrono::steady_clock::time_point next_heartbeat;
        int heartbeat_failures = 0;
        bool heartbeat_unsupported = false;
        // Delivery thread only: the epoch of the lease "outbox:<tenant>" it holds (0: one machine).
        std::optional<std::int64_t> delivery_epoch;
        // Delivery thread only: the store failed to answer for the lease; not asked again before
        // `lead_retry_at` (backoff), and logged at most every half minute.
        int lead_failures = 0;
        std::chrono::steady_clock::time_point lead_retry_at;
        std::chrono::steady_clock::time_point lead_error_logged;
    };

    void start_lane(const std::string& tenant);
    void stop_lane(Lane& lane, std::chrono::steady_clock::time_point deadline);
    void claim_loop(Lane& lane);
    /// Claim thread: sends the tenant its heartbeat when due (events 5000-5002).
    void heartbeat(Lane& lane);
    void worker_loop();
    void delivery_loop(Lane& lane);
    void run(Claim& claim);
    /// Claim thread: renews the leases of `tenant`'s running jobs that are past half their lease.
    void renew_running(const std::string& tenant);
    bool lost(const Claim& claim);
    /// True when the tenant says another claim owns the job: asked only once the lease this
    /// instance was granted has run out (a paused instance wakes with its lease long gone).
    bool still_fenced(Claim& claim, std::string& why);
    /// A stale claim's run or result is dropped: ResultFenced (822).
    void fenced(const Claim& claim, const std::string& why);
    /// Asks the tenant to extend the claim's lease to `seconds` from now.
    Renewal renew(Claim& claim, std::chrono::seconds seconds, std::string& why);
    Delivery deliver(Lane& lane, const OutboxEntry& entry);
    void deliver_due(Lane& lane);
    /// Takes or renews this instance's right to deliver the lane's tenant (events 820/821).
    bool lead(Lane& lane);
    void report(const std::string& feature, cc_jobs_report_kind kind, const std::string& tenant,
                const std::vector<std::string>& ids, const std::vector<std::string>& documents, const std::string& message);
    std::shared_ptr<const Generation> tenant_plugin(const std::string& tenant) const;
    std::vector<std::string> features_for(const std::string& tenant) const;
    bool sleep_unless_stopping(const Lane* lane, std::chrono::milliseconds duration);
    std::chrono::milliseconds backoff(int attempt) const;

    PluginRuntime& runtime_;
    EventLog& log_;
    JobSettings settings_;
    OutboxStore& outbox_;
    std::atomic<bool> stopping_{false};
    std::atomic<std::size_t> in_flight_{0};
    std::mutex mutex_;
    std::condition_variable wake_;
    std::vector<std::shared_ptr<Claim>> queue_;    // claimed, waiting for a worker
    std::vector<std::shared_ptr<Claim>> running_;  // being run by a worker
    std::size_t reserved_ = 0;                     // slots claim threads are filling right now
    std::vector<std::thread> workers_;
    std::mutex lanes_mutex_;
    std::map<std::string, std::unique_ptr<Lane>> lanes_;
};

}  // namespace certconn::host
