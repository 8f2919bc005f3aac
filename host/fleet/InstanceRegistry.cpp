#include "fleet/InstanceRegistry.hpp"

#include "fleet/HostSchema.hpp"

#include <certconn/events.h>

#include <boost/json.hpp>

#include <algorithm>
#include <cstdint>

namespace certconn::host {

namespace json = boost::json;
using namespace std::chrono;

namespace {

constexpr auto kSkewReportEvery = minutes(10);
constexpr auto kUnservedReportEvery = minutes(10);
// Plugin schemas whose leader leases status --fleet reads too (PostgreSQL; best effort).
constexpr const char* kPluginLeaseSchemas[] = {"ca_local", "scep", "tenant_local"};

std::string to_json(const std::vector<std::string>& v) {
    json::array a;
    for (const auto& s : v)
        a.push_back(json::string(s));
    return json::serialize(a);
}

std::string to_json(const std::map<std::string, std::string>& m) {
    json::object o;
    for (const auto& [k, v] : m)
        o[k] = v;
    return json::serialize(o);
}

// A column another instance wrote: bounded, and whatever is not a list of strings reads as empty.
std::vector<std::string> string_list(const std::string& text) {
    std::vector<std::string> out;
    std::error_code ec;
    const json::value v = json::parse(text.size() > 65536 ? std::string() : text, ec);
    if (ec || !v.is_array()) return out;
    for (const auto& e : v.as_array())
        if (e.is_string()) out.emplace_back(e.as_string());
    return out;
}

std::map<std::string, std::string> string_map(const std::string& text) {
    std::map<std::string, std::string> out;
    std::error_code ec;
    const json::value v = json::parse(text.size() > 65536 ? std::string() : text, ec);
    if (ec || !v.is_object()) return out;
    for (const auto& [k, e] : v.as_object())
        if (e.is_string()) out[std::string(k)] = std::string(e.as_string());
    return out;
}

json::array array_of(const std::vector<std::string>& v) {
    json::array a;
    for (const auto& s : v)
        a.push_back(json::string(s));
    return a;
}

std::int64_t int_field(const json::object& o, const char* key) {
    const auto* v = o.if_contains(key);
    if (!v) return 0;
    if (v->is_int64()) return v->as_int64();
    if (v->is_uint64()) return static_cast<std::int64_t>(std::min<std::uint64_t>(v->as_uint64(), INT64_MAX));
    if (v->is_double()) return static_cast<std::int64_t>(v->as_double());
    return 0;
}

/// Per feature: queued, running, oldest queued age, summed over the tenants that answered.
struct Queue {
    std::int64_t queued = 0, running = 0, oldest_age_seconds = 0;
};
std::map<std::string, Queue> queues_of(const json::object& queue_stats) {
    std::map<std::string, Queue> out;
    for (const auto& [tenant, stats] : queue_stats) {
        if (!stats.is_object()) continue;
        const auto* features = stats.as_object().if_contains("features");
        if (!features || !features->is_object()) continue;
        for (const auto& [name, f] : features->as_object()) {
            if (!f.is_object()) continue;
            Queue& q = out[std::string(name)];
            q.queued += int_field(f.as_object(), "queued");
            q.running += int_field(f.as_object(), "running");
            q.oldest_age_seconds = std::max(q.oldest_age_seconds, int_field(f.as_object(), "oldest_queued_age_seconds"));
        }
    }
    return out;
}

std::set<std::string> served_features(const std::vector<FleetInstance>& all) {
    std::set<std::string> out;
    for (const auto& i : all)
        if (i.state == FleetInstance::State::live) out.insert(i.features.begin(), i.features.end());
    return out;
}

/// The version most live instances run (ties: the greatest string).
std::string majority_version(const std::vector<FleetInstance>& all) {
    std::map<std::string, int> count;
    for (const auto& i : all)
        if (i.state == FleetInstance::State::live) ++count[i.version];
    std::string best;
    int n = 0;
    for (const auto& [v, c] : count)
        if (c >= n) {
            best = v;
            n = c;
        }
    return best;
}

}  // namespace

const char* fleet_state_name(FleetInstance::State s) {
    switch (s) {
        case FleetInstance::State::live: return "live";
        case FleetInstance::State::lost: return "lost";
        case FleetInstance::State::left: return "left";
    }
    return "?";
}

InstanceRegistry::InstanceRegistry(const sql::Options& options, std::string instance_id, EventLog& log, FleetSettings settings,
                                   Describe describe, QueueStats queue_stats)
    : db_(sql::Database::open(options)),
      instance_id_(std::move(instance_id)),
      log_(log),
      settings_(settings),
      describe_(std::move(describe)),
      queue_stats_(std::move(queue_stats)) {}

InstanceRegistry::~InstanceRegistry() {
    halt();
}

void InstanceRegistry::ensure_schema() {
    if (migrated_) return;
    db_.migrate(host_migrations());
    migrated_ = true;
}

void InstanceRegistry::start() {
    beat();
    std::lock_guard lock(thread_mutex_);
    if (thread_.joinable() || stop_) return;
    thread_ = std::thread([this] { loop(); });
}

void InstanceRegistry::loop() {
    std::unique_lock lock(thread_mutex_);
    for (;;) {
        if (wake_.wait_for(lock, seconds(std::max(1, settings_.heartbeat_seconds)), [&] { return stop_; })) return;
        lock.unlock();
        beat();
        lock.lock();
    }
}

void InstanceRegistry::halt() {
    {
        std::lock_guard lock(thread_mutex_);
        stop_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void InstanceRegistry::stop() {
    halt();
    std::lock_guard beat(beat_mutex_);
    if (left_) return;
    left_ = true;
    try {
        std::lock_guard lock(db_mutex_);
        ensure_schema();
        db_.prepare("UPDATE instances SET left_at = " + db_.now_sql() + ", heartbeat_at = " + db_.now_sql() +
                    " WHERE instance_id = $1")
            .bind(1, instance_id_)
            .run();
        if (watch_epoch_) sql::LeaderLease(db_, "fleet:watch", instance_id_).release();
        log_.emit(CC_EV_FleetInstanceLeft, CC_LEVEL_INFO, "instance " + instance_id_ + " left the fleet (clean stop)", {},
                  {{"instance_id", instance_id_}});
    } catch (const std::exception& e) {
        log_.emit(CC_EV_FleetInstanceLeft, CC_LEVEL_WARNING,
                  "instance " + instance_id_ + " stops, but could not record leaving the fleet (" + e.what() +
                      "); the others will report it lost",
                  {}, {{"instance_id", instance_id_}});
    }
}

bool InstanceRegistry::beat() {
    std::lock_guard beat(beat_mutex_);
    if (left_) return false;
    std::vector<FleetInstance> all;
    try {
        const SelfDescription self = describe_ ? describe_() : SelfDescription{};
        {
            std::lock_guard lock(db_mutex_);
            ensure_schema();
            const std::string now = db_.now_sql();
            // The first heartbeat of this process sets started_at; later ones keep it.
            db_.prepare(
                   "INSERT INTO instances (instance_id, host, pid, version, features, tenants, cas, key_fingerprints, "
                   "started_at, heartbeat_at, left_at, health, lost_reported) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, " +
                   now + ", " + now +
                   ", NULL, $9, 0) ON CONFLICT (instance_id) DO UPDATE SET host = excluded.host, pid = excluded.pid, "
                   "version = excluded.version, features = excluded.features, tenants = excluded.tenants, cas = "
                   "excluded.cas, key_fingerprints = excluded.key_fingerprints, heartbeat_at = excluded.heartbeat_at, "
                   "left_at = NULL, health = excluded.health, lost_reported = 0" +
                   (registered_ ? std::string() : std::string(", started_at = excluded.started_at")))
                .bind_all(instance_id_, self.host, self.pid, self.version, to_json(self.features), to_json(self.tenants),
                          to_json(self.cas), to_json(self.key_fingerprints), self.health)
                .run();
        }
        registered_ = true;
        all = instances();
    } catch (const std::exception& e) {
        last_error_ = e.what();
        if (!unavailable_) {
            unavailable_ = true;
            log_.emit(CC_EV_StoreUnavailable, CC_LEVEL_ERROR,
                      "the host store cannot be reached (" + last_error_ +
                          "): this instance's heartbeat is not recorded and the fleet may report it lost; retrying every " +
                          std::to_string(settings_.heartbeat_seconds) + " s",
                      {}, {{"instance_id", instance_id_}});
        }
        return false;
    }
    if (!ever_connected_) {
        ever_connected_ = true;
        std::string backend, where;
        {
            std::lock_guard lock(db_mutex_);
            backend = db_.shared() ? "postgresql" : "sqlite";
            where = db_.describe();
        }
        log_.emit(CC_EV_StoreConnected, CC_LEVEL_INFO, "host store: " + where, {},
                  {{"backend", backend}, {"store", where}, {"instance_id", instance_id_}});
    }
    if (unavailable_) {
        unavailable_ = false;
        log_.emit(CC_EV_StoreRecovered, CC_LEVEL_INFO, "the host store answers again (it failed with: " + last_error_ + ")", {},
                  {{"instance_id", instance_id_}});
    }
    last_error_.clear();
    watch(all);
    return true;
}

void InstanceRegistry::watch(const std::vector<FleetInstance>& all) {
    // Joined: once per instance per observer (this one included, at its own first heartbeat).
    for (const auto& i : all) {
        if (i.state != FleetInstance::State::live || seen_.count(i.instance_id)) continue;
        seen_.insert(i.instance_id);
        log_.emit(CC_EV_FleetInstanceJoined, CC_LEVEL_INFO,
                  "instance " + i.instance_id + " (" + i.host + ", pid " + std::to_string(i.pid) + ", version " + i.version +
                      ") joined the fleet" + (i.instance_id == instance_id_ ? " (this instance)" : ""),
                  {},
                  {{"instance_id", i.instance_id}, {"host", i.host}, {"version", i.version}, {"features", array_of(i.features)}});
    }
    // Version skew: every live instance should run the same version.
    std::map<std::string, json::array> versions;
    for (const auto& i : all)
        if (i.state == FleetInstance::State::live) versions[i.version].push_back(json::string(i.instance_id));
    const auto now = steady_clock::now();
    if (versions.size() > 1 && (!skew_reported_once_ || now - skew_reported_ >= kSkewReportEvery)) {
        skew_reported_once_ = true;
        skew_reported_ = now;
        std::string list;
        json::object fields;
        for (auto& [v, ids] : versions) {
            list += (list.empty() ? "" : ", ") + v + " on " + std::to_string(ids.size()) + " instance(s)";
            fields[v] = std::move(ids);
        }
        log_.emit(CC_EV_FleetVersionSkew, CC_LEVEL_WARNING,
                  "the fleet runs several versions (" + list + "): upgrade every instance to the same version", {},
                  {{"versions", std::move(fields)}});
    }

    // Reporting duties, once for the fleet: the holder of "fleet:watch".
    std::optional<std::int64_t> epoch;
    struct Lost {
        std::string id, host;
        std::int64_t age;
    };
    std::vector<Lost> lost;
    try {
        std::lock_guard lock(db_mutex_);
        sql::LeaderLease lease(db_, "fleet:watch", instance_id_);
        epoch = lease.acquire(seconds(3 * std::max(1, settings_.heartbeat_seconds)));
        if (epoch) {
            sql::Transaction tx(db_);
            if (lease.still_held(*epoch)) {
                auto s = db_.prepare(
                    "UPDATE instances SET lost_reported = 1 WHERE left_at IS NULL AND lost_reported = 0 AND "
                    "heartbeat_at < " +
                    db_.now_sql() + " - $1 RETURNING instance_id, host, " + db_.now_sql() + " - heartbeat_at");
                s.bind(1, static_cast<std::int64_t>(settings_.lost_after_seconds));
                while (s.step())
                    lost.push_back({s.text(0), s.text(1), s.integer(2)});
            }
            tx.commit();
        }
    } catch (const std::exception& e) {
        log_.emit(CC_EV_StoreUnavailable, CC_LEVEL_WARNING, std::string("fleet watch: ") + e.what());
        lost.clear();
        epoch.reset();
    }
    if (epoch && *epoch != watch_epoch_.value_or(-1))
        log_.emit(CC_EV_LeadershipAcquired, CC_LEVEL_INFO,
                  "this instance watches the fleet now (lease fleet:watch, epoch " + std::to_string(*epoch) + ")", {},
                  {{"lease", "fleet:watch"}, {"epoch", *epoch}});
    else if (!epoch && watch_epoch_)
        log_.emit(CC_EV_LeadershipLost, CC_LEVEL_INFO, "another instance watches the fleet now (lease fleet:watch)", {},
                  {{"lease", "fleet:watch"}});
    watch_epoch_ = epoch;
    for (const auto& l : lost)
        log_.emit(CC_EV_FleetInstanceLost, CC_LEVEL_ERROR,
                  "instance " + l.id + " (" + l.host + ") is lost: no heartbeat for " + std::to_string(l.age) + " s (limit " +
                      std::to_string(settings_.lost_after_seconds) + " s); its job leases return its jobs to the queue",
                  {}, {{"instance_id", l.id}, {"host", l.host}, {"heartbeat_age_seconds", l.age}});
    if (!epoch || !queue_stats_) return;

    // Queued jobs for a feature no live instance serves.
    json::object stats;
    try {
        stats = queue_stats_();
    } catch (const std::exception&) {
        return;  // a tenant plugin that throws: no report this round
    }
    const auto served = served_features(all);
    for (const auto& [feature, q] : queues_of(stats)) {
        if (q.queued == 0 || served.count(feature)) continue;
        auto& at = unserved_reported_[feature];
        if (at != steady_clock::time_point{} && now - at < kUnservedReportEvery) continue;
        at = now;
        log_.emit(CC_EV_FleetFeatureUnserved, CC_LEVEL_ERROR,
                  std::to_string(q.queued) + " job(s) for feature '" + feature + "' wait (the oldest " +
                      std::to_string(q.oldest_age_seconds) + " s) but no live instance serves it",
                  {}, {{"feature", feature}, {"queued", q.queued}, {"oldest_queued_age_seconds", q.oldest_age_seconds}});
    }
}

std::vector<FleetInstance> InstanceRegistry::instances() {
    std::lock_guard lock(db_mutex_);
    ensure_schema();
    auto s = db_.prepare("SELECT instance_id, host, pid, version, features, tenants, cas, key_fingerprints, started_at, " +
                         db_.now_sql() + " - heartbeat_at, left_at, health FROM instances ORDER BY instance_id");
    std::vector<FleetInstance> out;
    while (s.step()) {
        FleetInstance i;
        i.instance_id = s.text(0);
        i.host = s.text(1);
        i.pid = s.integer(2);
        i.version = s.text(3);
        i.features = string_list(s.text(4));
        i.tenants = string_list(s.text(5));
        i.cas = string_list(s.text(6));
        i.key_fingerprints = string_map(s.text(7));
        i.started_at = s.integer(8);
        i.heartbeat_age_seconds = std::max<std::int64_t>(0, s.integer(9));
        if (!s.is_null(10)) i.left_at = s.integer(10);
        i.health = s.text(11);
        i.state = i.left_at                                                ? FleetInstance::State::left
                  : i.heartbeat_age_seconds > settings_.lost_after_seconds ? FleetInstance::State::lost
                                                                           : FleetInstance::State::live;
        out.push_back(std::move(i));
    }
    return out;
}

json::object InstanceRegistry::status(const json::object& queue_stats, const std::map<std::string, OutboxState>& backlog) {
    json::object out{{"instance_id", instance_id_},
                     {"heartbeat_seconds", settings_.heartbeat_seconds},
                     {"lost_after_seconds", settings_.lost_after_seconds}};
    std::vector<FleetInstance> all;
    json::array leaders;
    bool shared = false;
    {
        std::lock_guard lock(db_mutex_);
        shared = db_.shared();
        out["store"] = json::object{{"backend", shared ? "postgresql" : "sqlite"}, {"describe", db_.describe()}};
    }
    try {
        all = instances();
        std::lock_guard lock(db_mutex_);
        std::vector<std::pair<std::string, std::string>> tables{{"host", "certconn_leases"}};
        if (shared)
            for (const char* schema : kPluginLeaseSchemas) {
                auto exists = db_.prepare("SELECT CASE WHEN to_regclass($1) IS NULL THEN 0 ELSE 1 END");
                exists.bind(1, std::string(schema) + ".certconn_leases");
                if (exists.step() && exists.integer(0) == 1)
                    tables.emplace_back(schema, std::string(schema) + ".certconn_leases");
            }
        for (const auto& [schema, table] : tables) {
            auto s =
                db_.prepare("SELECT name, holder, epoch, expires_at - " + db_.now_sql() + " FROM " + table + " ORDER BY name");
            while (s.step())
                leaders.push_back(json::object{{"schema", schema},
                                               {"name", s.text(0)},
                                               {"holder", s.text(1)},
                                               {"epoch", s.integer(2)},
                                               {"expires_in_seconds", s.integer(3)},
                                               {"live", s.integer(3) >= 0}});
        }
    } catch (const std::exception& e) {
        out["store"].as_object()["reachable"] = false;
        out["store"].as_object()["error"] = e.what();
    }
    if (!out["store"].as_object().contains("reachable")) out["store"].as_object()["reachable"] = true;

    json::array problems;
    std::map<std::string, const FleetInstance*> by_id;
    for (const auto& i : all)
        by_id[i.instance_id] = &i;
    const std::string majority = majority_version(all);
    json::array instances;
    for (const auto& i : all) {
        json::object fp;
        for (const auto& [k, v] : i.key_fingerprints)
            fp[k] = v;
        const bool skew = i.state == FleetInstance::State::live && i.version != majority;
        instances.push_back(json::object{{"instance_id", i.instance_id},
                                         {"this", i.instance_id == instance_id_},
                                         {"host", i.host},
                                         {"pid", i.pid},
                                         {"version", i.version},
                                         {"version_skew", skew},
                                         {"state", fleet_state_name(i.state)},
                                         {"heartbeat_age_seconds", i.heartbeat_age_seconds},
                                         {"started_at", i.started_at},
                                         {"features", array_of(i.features)},
                                         {"tenants", array_of(i.tenants)},
                                         {"cas", array_of(i.cas)},
                                         {"key_fingerprints", std::move(fp)},
                                         {"health", i.health}});
        if (skew)
            problems.push_back(json::string("instance " + i.instance_id + " runs version " + i.version + ", the fleet " +
                                            majority + ": upgrade it"));
    }
    out["instances"] = std::move(instances);
    out["majority_version"] = majority;

    // Leaders: a lease held (and live) by an instance that is lost or gone is a duty nobody does
    // until it expires.
    for (auto& l : leaders) {
        auto& o = l.as_object();
        const std::string holder(o["holder"].as_string());
        const auto it = by_id.find(holder);
        o["holder_state"] = it == by_id.end() ? "unknown" : fleet_state_name(it->second->state);
    }
    out["leaders"] = std::move(leaders);
    out["leaders_note"] =
        shared ? "leases of the host schema and of the plugin schemas ca_local, scep and tenant_local found in the store"
               : "on one machine only the host's leases are listed; plugin leases live in each plugin's own SQLite file";

    // Queues per feature, from the tenants' jobs.stats.
    json::object queues;
    const auto per_feature = queues_of(queue_stats);
    for (const auto& [feature, q] : per_feature)
        queues[feature] =
            json::object{{"queued", q.queued}, {"running", q.running}, {"oldest_queued_age_seconds", q.oldest_age_seconds}};
    out["queues"] = std::move(queues);
    out["tenant_stats"] = queue_stats;
    const auto served = served_features(all);
    json::array unserved;
    for (const auto& [feature, q] : per_feature)
        if ((q.queued > 0 || q.running > 0) && !served.count(feature)) {
            unserved.push_back(json::string(feature));
            problems.push_back(json::string("no live instance serves feature " + feature + " (" + std::to_string(q.queued) +
                                            " queued, the oldest " + std::to_string(q.oldest_age_seconds) + " s)"));
        }
    out["unserved_features"] = std::move(unserved);

    // Job leases held by instances that are not live (they return when the leases expire).
    json::array dead_leases;
    for (const auto& [tenant, stats] : queue_stats) {
        if (!stats.is_object()) continue;
        const auto* owners = stats.as_object().if_contains("leases_by_owner");
        if (!owners || !owners->is_object()) continue;
        for (const auto& [owner, n] : owners->as_object()) {
            const auto it = by_id.find(std::string(owner));
            if (it != by_id.end() && it->second->state == FleetInstance::State::live) continue;
            const std::string state = it == by_id.end() ? "unknown" : fleet_state_name(it->second->state);
            const std::int64_t count = n.is_int64() ? n.as_int64() : 0;
            dead_leases.push_back(json::object{{"tenant", tenant}, {"owner", owner}, {"state", state}, {"leases", count}});
            problems.push_back(json::string(std::to_string(count) + " job lease(s) of tenant '" + std::string(tenant) +
                                            "' held by " + state + " instance " + std::string(owner) +
                                            " (the jobs return when the leases expire)"));
        }
    }
    out["dead_leases"] = std::move(dead_leases);

    // Import-capable instances must all hold the same connector keys: any of them may take any
    // import job, whose PFX password is encrypted to one key.
    std::map<std::string, std::map<std::string, std::string>> held;  // key name -> instance -> fingerprint
    std::vector<const FleetInstance*> importers;
    for (const auto& i : all)
        if (i.state == FleetInstance::State::live &&
            std::find(i.features.begin(), i.features.end(), "import") != i.features.end()) {
            importers.push_back(&i);
            for (const auto& [name, fp] : i.key_fingerprints)
                held[name][i.instance_id] = fp;
        }
    json::array key_gaps;
    for (const auto& [name, holders] : held)
        for (const auto* i : importers) {
            const auto mine = holders.find(i->instance_id);
            if (mine == holders.end()) {
                key_gaps.push_back(json::object{{"instance_id", i->instance_id}, {"key", name}, {"problem", "missing"}});
                problems.push_back(json::string("import instance " + i->instance_id + " lacks connector key '" + name +
                                                "' that " + holders.begin()->first + " holds"));
                continue;
            }
            for (const auto& [other, fp] : holders)
                if (fp != mine->second && other < i->instance_id) {
                    key_gaps.push_back(
                        json::object{{"instance_id", i->instance_id}, {"key", name}, {"problem", "different key than " + other}});
                    problems.push_back(json::string("import instance " + i->instance_id + " holds a different connector key '" +
                                                    name + "' than " + other));
                    break;
                }
        }
    out["key_gaps"] = std::move(key_gaps);

    json::object outbox;
    std::int64_t pending = 0;
    for (const auto& [tenant, s] : backlog) {
        outbox[tenant.empty() ? std::string("(legacy)") : tenant] =
            json::object{{"pending", s.pending}, {"refused", s.refused}, {"oldest_age_seconds", s.oldest_age_seconds}};
        pending += s.pending;
        if (s.pending > 0 && s.oldest_age_seconds >= 60)
            problems.push_back(json::string("outbox of tenant '" + tenant + "': " + std::to_string(s.pending) +
                                            " entries wait, the oldest " + std::to_string(s.oldest_age_seconds) + " s"));
    }
    out["outbox"] = std::move(outbox);
    out["outbox_pending"] = pending;
    for (const auto& i : all)
        if (i.state == FleetInstance::State::lost)
            problems.push_back(json::string("instance " + i.instance_id + " (" + i.host + ") is lost: no heartbeat for " +
                                            std::to_string(i.heartbeat_age_seconds) + " s"));
    out["problems"] = std::move(problems);
    return out;
}

}  // namespace certconn::host
