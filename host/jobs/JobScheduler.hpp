// Claims jobs from the tenant for the enabled features, runs them with bounded concurrency,
// retries transient failures with backoff, stores every result in the durable outbox and only
// then reports it to the tenant, retrying the report until it is acknowledged.
//
// Threads: one claim thread (claim_jobs, lease renewal of running jobs), `concurrency`
// workers (run_job; they store results and wake the delivery thread) and one delivery thread,
// the only caller of complete_job and result_delivered: a result is reported by one thread,
// once at a time, and a slow tenant acknowledgement never stalls claiming or running.
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
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace certconn::host {

class JobScheduler {
public:
    JobScheduler(PluginRuntime& runtime, EventLog& log, JobSettings settings, const std::filesystem::path& state_dir);
    ~JobScheduler();

    void start();
    /// Stops claiming; waits up to `drain` for jobs in flight. Jobs still waiting to retry are
    /// abandoned: their lease returns them to the queue.
    void stop(std::chrono::seconds drain);

    std::size_t in_flight() const { return in_flight_; }
    std::int64_t outbox_size() { return outbox_.size(); }

private:
    /// A claimed job and how long its lease lasts (host clock; renewed as needed). `job` does
    /// not change after the claim; the other fields are guarded by mutex_.
    struct Claim {
        boost::json::object job;
        std::chrono::steady_clock::time_point lease_until;
        std::chrono::steady_clock::time_point renew_not_before;  // after a refused renewal
        bool lost = false;                                       // the tenant said this claim no longer holds the job
    };
    enum class Renewal { renewed, lost, unsupported };

    void claim_loop();
    void worker_loop();
    void delivery_loop();
    void run(Claim& claim);
    /// Claim thread: renews the leases of running jobs that are past half their lease.
    void renew_running();
    bool lost(const Claim& claim);
    /// Asks the tenant to extend the claim's lease to `seconds` from now.
    Renewal renew(Claim& claim, std::chrono::seconds seconds, std::string& why);
    void deliver(const OutboxEntry& entry);
    void deliver_due();
    void wake_delivery();
    std::vector<std::string> enabled_features() const;
    bool sleep_unless_stopping(std::chrono::milliseconds duration);
    std::chrono::milliseconds backoff(int attempt) const;

    PluginRuntime& runtime_;
    EventLog& log_;
    JobSettings settings_;
    OutboxStore outbox_;
    std::atomic<bool> stopping_{false};
    std::atomic<std::size_t> in_flight_{0};
    std::mutex mutex_;
    std::condition_variable wake_;
    std::vector<std::shared_ptr<Claim>> queue_;    // claimed, waiting for a worker
    std::vector<std::shared_ptr<Claim>> running_;  // being run by a worker
    std::thread claimer_;
    std::vector<std::thread> workers_;
    // Delivery: its own lock and wake-up, so waking it never contends with claiming.
    std::mutex delivery_mutex_;
    std::condition_variable delivery_wake_;
    bool delivery_pending_ = false;  // a worker stored a result since the last scan
    bool delivery_stop_ = false;
    std::chrono::steady_clock::time_point delivery_deadline_;  // at stop: last pass until then
    std::thread deliverer_;
};

}  // namespace certconn::host
