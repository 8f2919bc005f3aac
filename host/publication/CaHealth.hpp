// Each configured CA's health, from a real probe ({"op":"health"}, abi.h 1.3) run in the
// background every [host] ca_health_interval_seconds and at start: `status` reads the last
// answer and never probes on the request path. A CA whose probe fails is degraded (event 122
// on each change, degraded and healthy again).
#pragma once

#include "eventlog/EventLog.hpp"

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace certconn::host {

class PluginRuntime;

class CaHealthMonitor {
public:
    struct Result {
        bool probe = true;     // false: the CA's plugin has no health op ("open, no health probe")
        bool healthy = false;  // the probe's answer (or false when the call failed)
        std::string detail;
        std::chrono::system_clock::time_point checked_at;
    };

    CaHealthMonitor(PluginRuntime& runtime, EventLog& log, std::chrono::seconds interval);
    ~CaHealthMonitor();
    CaHealthMonitor(const CaHealthMonitor&) = delete;
    CaHealthMonitor& operator=(const CaHealthMonitor&) = delete;

    /// Starts the background thread; its first round runs at once.
    void start();
    /// Stops and joins the thread (a probe in progress finishes first).
    void stop();
    /// Runs a round soon (after a reload: new or changed CAs).
    void wake();
    /// Runs one round on the calling thread (tests; the thread uses it too).
    void probe_all();
    /// The last answer for `ca`, if it was probed.
    std::optional<Result> result(const std::string& ca) const;

private:
    void loop(const std::stop_token& stop);

    PluginRuntime& runtime_;
    EventLog& log_;
    std::chrono::seconds interval_;
    mutable std::mutex mutex_;
    std::condition_variable_any wake_cv_;
    bool woken_ = false;
    std::map<std::string, Result> results_;
    std::mutex round_mutex_;  // one round at a time
    std::jthread thread_;
};

}  // namespace certconn::host
