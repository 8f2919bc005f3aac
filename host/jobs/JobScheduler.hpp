// Claims jobs from the tenant for the enabled features, runs them with bounded concurrency,
// retries transient failures with backoff, stores every result in the durable outbox and only
// then reports it to the tenant, retrying the report until it is acknowledged.
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
    void claim_loop();
    void worker_loop();
    void run(const boost::json::object& job);
    void deliver(const OutboxEntry& entry);
    void deliver_due();
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
    std::vector<boost::json::object> queue_;  // claimed, waiting for a worker
    std::thread claimer_;
    std::vector<std::thread> workers_;
};

}  // namespace certconn::host
