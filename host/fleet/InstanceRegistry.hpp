// The instance registry: every connector of a fleet registers itself in the host store (table
// `instances`: id, host, pid, version, features, tenants, CAs, fingerprints of the connector keys
// it holds, health) and heartbeats every [store] heartbeat_seconds, in database time. Each
// heartbeat also watches the others: instances that joined (810), version skew (813, at most
// every 10 minutes), and — only on the instance holding the leader lease "fleet:watch", so the
// fleet reports each once — instances silent longer than lost_after_seconds (812) and features
// with queued jobs that no live instance serves (814). A clean stop marks the instance left
// (811). The store unreachable: 801 once, 802 when it answers again; 800 when first reached.
//
// On one machine (SQLite, <state_dir>/outbox.db) the registry holds this one instance, so
// `certconnector status --fleet` answers there too.
#pragma once

#include "eventlog/EventLog.hpp"
#include "jobs/OutboxStore.hpp"

#include <certconn/sql.hpp>

#include <boost/json/object.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace certconn::host {

/// What this instance says about itself at each heartbeat.
struct SelfDescription {
    std::string host;  // host name
    std::int64_t pid = 0;
    std::string version;
    std::vector<std::string> features;                    // feature plugins enabled and loaded
    std::vector<std::string> tenants;                     // configured tenants
    std::vector<std::string> cas;                         // CAs open here
    std::map<std::string, std::string> key_fingerprints;  // connector key name -> SHA-256 of its SubjectPublicKeyInfo
    std::string health = "ok";
};

/// An instance as the registry holds it.
struct FleetInstance {
    std::string instance_id, host, version, health;
    std::int64_t pid = 0;
    std::vector<std::string> features, tenants, cas;
    std::map<std::string, std::string> key_fingerprints;
    std::int64_t started_at = 0;             // epoch seconds (database time)
    std::int64_t heartbeat_age_seconds = 0;  // by the database's clock
    std::optional<std::int64_t> left_at;
    enum class State { live, lost, left } state = State::live;
};

const char* fleet_state_name(FleetInstance::State s);

struct FleetSettings {
    int heartbeat_seconds = 5;
    int lost_after_seconds = 30;
};

class InstanceRegistry {
public:
    using Describe = std::function<SelfDescription()>;
    /// Per tenant, its answer to "jobs.stats" ({"features": {f: {"queued","running",
    /// "oldest_queued_age_seconds"}}, "leases_by_owner": {instance: n}}) or {"error": "..."}.
    using QueueStats = std::function<boost::json::object()>;

    /// `options`: the host store (schema "host", or <state_dir>/outbox.db). Connects lazily.
    InstanceRegistry(const sql::Options& options, std::string instance_id, EventLog& log, FleetSettings settings,
                     Describe describe, QueueStats queue_stats = {});
    ~InstanceRegistry();

    /// The first heartbeat now (800 or 801), then one every heartbeat_seconds on a thread.
    void start();
    /// Stops heartbeating and marks this instance left (811). Idempotent.
    void stop();
    /// One heartbeat and watch pass; false when the store did not answer. (The thread's work;
    /// public so tests can drive it.)
    bool beat();
    /// Stops heartbeating without leaving: as if the process had been killed (tests).
    void halt();

    const std::string& instance_id() const { return instance_id_; }
    /// Every instance the registry holds, this one included. Throws sql::Error.
    std::vector<FleetInstance> instances();
    /// The fleet as `status --fleet` shows it: instances, leaders, queues, outbox backlog and
    /// the problems found. `queue_stats` as QueueStats answers; `backlog` from OutboxStore.
    boost::json::object status(const boost::json::object& queue_stats, const std::map<std::string, OutboxState>& backlog);

private:
    void loop();
    void ensure_schema();
    void watch(const std::vector<FleetInstance>& all);

    std::mutex db_mutex_;  // db_ is used by one thread at a time
    sql::Database db_;
    const std::string instance_id_;
    EventLog& log_;
    const FleetSettings settings_;
    Describe describe_;
    QueueStats queue_stats_;
    bool migrated_ = false;

    // Heartbeat state (beat() runs on one thread at a time: the loop, or a test).
    std::mutex beat_mutex_;
    bool registered_ = false;      // started_at written
    bool ever_connected_ = false;  // 800 emitted
    bool unavailable_ = false;     // 801 emitted, 802 not yet
    std::string last_error_;
    std::set<std::string> seen_;  // instances this observer reported joined
    std::chrono::steady_clock::time_point skew_reported_{};
    bool skew_reported_once_ = false;
    std::map<std::string, std::chrono::steady_clock::time_point> unserved_reported_;
    std::optional<std::int64_t> watch_epoch_;

    std::mutex thread_mutex_;
    std::condition_variable wake_;
    bool stop_ = false;
    bool left_ = false;
    std::thread thread_;
};

}  // namespace certconn::host
