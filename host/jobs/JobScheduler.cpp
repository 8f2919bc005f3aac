#include "jobs/JobScheduler.hpp"

#include <certconn/backoff.hpp>
#include <certconn/sdk.hpp>

#include <boost/json.hpp>

#include <optional>

namespace certconn::host {

namespace json = boost::json;
using namespace std::chrono;

namespace {

// A tenant acknowledging a result slower than this is reported (JobResultDeliverySlow).
constexpr milliseconds kDeliveryDeadline{10000};

std::string text(const json::object& o, const char* key) {
    const auto* v = o.if_contains(key);
    return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

// The fencing token a result body carries ("claim"), if any.
std::optional<std::int64_t> claim_in(const std::string& body) {
    std::error_code ec;
    const json::value v = json::parse(body, ec);
    if (ec || !v.is_object()) return std::nullopt;
    const auto* c = v.as_object().if_contains("claim");
    if (c == nullptr || !c->is_int64()) return std::nullopt;
    return c->as_int64();
}

}  // namespace

JobScheduler::JobScheduler(PluginRuntime& runtime, EventLog& log, JobSettings settings, OutboxStore& outbox)
    : runtime_(runtime), log_(log), settings_(settings), outbox_(outbox) {}

JobScheduler::~JobScheduler() {
    stop(seconds(0));
}

void JobScheduler::start() {
    for (int i = 0; i < settings_.concurrency; ++i)
        workers_.emplace_back([this] { worker_loop(); });
    sync_tenants();
}

void JobScheduler::start_lane(const std::string& tenant) {
    auto lane = std::make_unique<Lane>(tenant);
    Lane& l = *lane;
    l.deliverer = std::thread([this, &l] { delivery_loop(l); });
    l.claimer = std::thread([this, &l] { claim_loop(l); });
    lanes_.emplace(tenant, std::move(lane));
}

void JobScheduler::stop_lane(Lane& lane, steady_clock::time_point deadline) {
    {
        std::lock_guard lock(mutex_);  // with the sleepers' mutex: none misses the wake-up
        lane.stop = true;
    }
    wake_.notify_all();
    if (lane.claimer.joinable()) lane.claimer.join();
    {
        std::lock_guard lock(lane.mutex);
        lane.delivery_stop = true;
        lane.delivery_deadline = deadline;
    }
    lane.wake.notify_all();
    if (lane.deliverer.joinable()) lane.deliverer.join();
    if (lane.delivery_epoch) {
        // Another instance takes this tenant's deliveries at once instead of after the lease.
        try {
            outbox_.resign(lane.tenant);
        } catch (const std::exception& e) {
            log_.emit(CC_EV_OutboxWriteFailed, CC_LEVEL_WARNING,
                      "outbox: giving up the delivery lease of tenant '" + lane.tenant + "' failed: " + e.what());
        }
        lane.delivery_epoch.reset();
    }
}

void JobScheduler::sync_tenants() {
    if (stopping_) return;
    const auto cfg = runtime_.config();
    std::vector<std::unique_ptr<Lane>> gone;
    {
        std::lock_guard lock(lanes_mutex_);
        for (auto it = lanes_.begin(); it != lanes_.end();) {
            if (cfg->tenants.count(it->first)) {
                ++it;
                continue;
            }
            gone.push_back(std::move(it->second));
            it = lanes_.erase(it);
        }
        for (const auto& [name, section] : cfg->tenants)
            if (!lanes_.count(name)) start_lane(name);
    }
    for (auto& lane : gone)                     // outside the lock: a delivery in progress may wake another lane
        stop_lane(*lane, steady_clock::now());  // its outbox entries wait for the tenant's return
}

void JobScheduler::stop(seconds drain) {
    {
        std::lock_guard lock(mutex_);
        if (stopping_.exchange(true)) return;
    }
    wake_.notify_all();
    std::map<std::string, std::unique_ptr<Lane>> lanes;
    {
        // Out of the map: a worker storing a result meanwhile finds no lane to wake, and the
        // delivery threads' last pass below reports it.
        std::lock_guard lock(lanes_mutex_);
        lanes.swap(lanes_);
    }
    for (auto& [name, lane] : lanes) {  // claimers first: nothing new is claimed while draining
        lane->stop = true;
        if (lane->claimer.joinable()) lane->claimer.join();
    }
    const auto deadline = steady_clock::now() + drain;
    while (in_flight_ > 0 && steady_clock::now() < deadline)
        std::this_thread::sleep_for(milliseconds(20));
    {
        std::lock_guard lock(mutex_);
        for (const auto& claim : queue_)
            log_.emit(CC_EV_JobAbandoned, CC_LEVEL_INFO,
                      "job " + text(claim->job, "id") + " not started before stop; its lease returns it", text(claim->job, "id"));
        queue_.clear();
    }
    wake_.notify_all();
    for (auto& w : workers_)
        if (w.joinable()) w.join();
    // Each delivery thread makes a last pass over its outbox until the drain deadline; what is
    // left stays in the outbox and is reported after the next start.
    for (auto& [name, lane] : lanes)
        stop_lane(*lane, deadline);
}

bool JobScheduler::sleep_unless_stopping(const Lane* lane, milliseconds duration) {
    std::unique_lock lock(mutex_);
    return !wake_.wait_for(lock, duration, [&] { return stopping_.load() || (lane && lane->stop.load()); });
}

milliseconds JobScheduler::backoff(int attempt) const {
    // Exponential from retry_initial_ms, capped at retry_max_ms, then +-20% so retries that
    // failed together do not hit the tenant or CA together again.
    const sdk::Backoff policy{milliseconds(settings_.retry_initial_ms), milliseconds(settings_.retry_max_ms), 0.2};
    return policy.delay(attempt);
}

std::shared_ptr<const Generation> JobScheduler::tenant_plugin(const std::string& tenant) const {
    const auto cfg = runtime_.config();
    const auto it = cfg->tenants.find(tenant);
    return it == cfg->tenants.end() ? nullptr : runtime_.find(CC_KIND_TENANT, it->second.plugin);
}

std::vector<std::string> JobScheduler::features_for(const std::string& tenant) const {
    const auto cfg = runtime_.config();
    const auto it = cfg->tenants.find(tenant);
    std::vector<std::string> out;
    if (it == cfg->tenants.end()) return out;
    for (const auto& gen : runtime_.generations())
        if (gen->identity().kind == CC_KIND_FEATURE && it->second.feeds(gen->identity().name))
            out.push_back(gen->identity().name);
    return out;
}

void JobScheduler::report(const std::string& feature, cc_jobs_report_kind kind, const std::string& tenant,
                          const std::vector<std::string>& ids, const std::vector<std::string>& documents,
                          const std::string& message) {
    auto gen = runtime_.find(CC_KIND_FEATURE, feature);
    if (!gen) return;
    const cc_feature_api* api = gen->api.feature;
    if (api->struct_size <= offsetof(cc_feature_api, jobs_report) || api->jobs_report == nullptr) return;
    std::vector<const char*> id_ptrs, doc_ptrs;
    for (const auto& id : ids)
        id_ptrs.push_back(id.c_str());
    for (const auto& d : documents)
        doc_ptrs.push_back(d.c_str());
    const cc_jobs_report r{sizeof(cc_jobs_report),
                           static_cast<uint32_t>(kind),
                           tenant.c_str(),
                           id_ptrs.data(),
                           documents.empty() ? nullptr : doc_ptrs.data(),
                           ids.size(),
                           message.c_str()};
    api->jobs_report(gen->api.instance, &r);
}

void JobScheduler::heartbeat(Lane& lane) {
    const auto cfg = runtime_.config();
    const auto section = cfg->tenants.find(lane.tenant);
    if (section == cfg->tenants.end() || section->second.heartbeat_seconds <= 0 || lane.heartbeat_unsupported) return;
    const auto now = steady_clock::now();
    if (now < lane.next_heartbeat) return;
    auto tenant = tenant_plugin(lane.tenant);
    if (!tenant) return;
    json::object beat{{"version", CERTCONN_VERSION}, {"in_flight", in_flight_.load()}};
    json::array features;
    for (const auto& f : features_for(lane.tenant))
        features.push_back(json::string(f));
    beat["features"] = std::move(features);
    json::array cas;
    for (const auto& [name, ca] : cfg->cas)
        cas.push_back(json::string(name));
    beat["cas"] = std::move(cas);
    const std::string body = json::serialize(beat);
    StringSink sink(std::size_t{64} * 1024);
    cc_sink s = sink.sink();
    cc_error err = sdk::detail::make_error();
    const int rc = tenant->api.tenant->call(tenant->api.instance, "tenant.heartbeat", body.c_str(), &s, &err);
    const json::object fields{{"tenant", lane.tenant}};
    if (rc == CC_OK) {
        lane.heartbeat_failures = 0;
        lane.next_heartbeat = now + seconds(section->second.heartbeat_seconds);
        log_.emit(CC_EV_HealthMessageUploadSuccess, CC_LEVEL_DEBUG, "heartbeat sent to tenant '" + lane.tenant + "'", {}, fields);
        return;
    }
    if (rc == CC_ERR_NOT_SUPPORTED) {  // the tenant has no heartbeat (e.g. Intune's public APIs)
        lane.heartbeat_unsupported = true;
        return;
    }
    // Retried sooner than the interval; after three failures in a row, an error (and retries go on).
    const auto wait = std::min<milliseconds>(backoff(++lane.heartbeat_failures), seconds(section->second.heartbeat_seconds));
    lane.next_heartbeat = now + wait;
    if (lane.heartbeat_failures < 3)
        log_.emit(CC_EV_HealthMessageUploadFailedAttempt, CC_LEVEL_WARNING,
                  "heartbeat to tenant '" + lane.tenant + "' failed (" + err.message + "); retrying in " +
                      std::to_string(wait.count()) + " ms",
                  {}, fields);
    else
        log_.emit(CC_EV_HealthMessageUploadFailure, CC_LEVEL_ERROR,
                  "heartbeat to tenant '" + lane.tenant + "' failed " + std::to_string(lane.heartbeat_failures) +
                      " times in a row (" + err.message + ")",
                  {}, fields);
}

void JobScheduler::claim_loop(Lane& lane) {
    int failures = 0;
    while (!stopping_ && !lane.stop) {
        renew_running(lane.tenant);
        heartbeat(lane);
        std::shared_ptr<const Generation> tenant = tenant_plugin(lane.tenant);
        const auto features = features_for(lane.tenant);
        if (!tenant || features.empty()) {
            sleep_unless_stopping(&lane, milliseconds(settings_.poll_interval_ms));
            continue;
        }
        // Up to `concurrency` jobs are claimed ahead, so a worker that finishes never waits for
        // a claim round trip; their leases cover the wait. The slots a claim may fill are
        // reserved first, so the claim threads of several tenants never claim more together.
        const std::size_t capacity = 2 * static_cast<std::size_t>(settings_.concurrency);
        std::size_t want = 0;
        {
            std::unique_lock lock(mutex_);
            const std::size_t busy = in_flight_ + queue_.size() + reserved_;
            if (busy >= capacity) {
                // Wake as soon as a worker frees a slot.
                wake_.wait_for(lock, milliseconds(settings_.poll_interval_ms),
                               [&] { return stopping_ || lane.stop || in_flight_ + queue_.size() + reserved_ < capacity; });
                continue;
            }
            want = capacity - busy;
            reserved_ += want;
        }
        // Given back with the claimed jobs queued (under the same lock), or before any wait.
        auto release = [&](bool locked) {
            if (want == 0) return;
            if (locked) {
                reserved_ -= want;
            } else {
                std::lock_guard lock(mutex_);
                reserved_ -= want;
            }
            want = 0;
            wake_.notify_all();
        };
        json::array names;
        for (const auto& f : features)
            names.push_back(json::string(f));
        const std::string names_json = json::serialize(names);
        StringSink sink;
        cc_sink s = sink.sink();
        cc_error err = sdk::detail::make_error();
        // The lease is counted from before the call: the host never believes it longer than the tenant.
        const auto lease_until = steady_clock::now() + seconds(settings_.lease_seconds);
        const int rc = tenant->api.tenant->claim_jobs(tenant->api.instance, names_json.c_str(), static_cast<uint32_t>(want),
                                                      static_cast<uint32_t>(settings_.lease_seconds), &s, &err);
        if (rc != CC_OK) release(false);
        std::error_code ec;
        json::value jobs;
        std::string failed;
        if (rc != CC_OK) {
            failed = std::string("claiming jobs from tenant '") + lane.tenant + "' failed: " + err.message;
        } else {
            jobs = json::parse(sink.data, ec);
            if (ec || !jobs.is_array()) failed = "tenant '" + lane.tenant + "' returned jobs that are not a JSON array";
        }
        if (!failed.empty()) {
            release(false);
            log_.emit(CC_EV_JobClaimFailed, rc != CC_OK ? CC_LEVEL_WARNING : CC_LEVEL_ERROR, failed, {},
                      {{"tenant", lane.tenant}});
            for (const auto& f : features)
                report(f, CC_JOBS_DOWNLOAD_FAILED, lane.tenant, {}, {}, failed);
            // A failing tenant is asked again after a growing pause (1 s doubling to 60 s).
            const sdk::Backoff pause{milliseconds(std::max(1000, settings_.poll_interval_ms)), seconds(60), 0.2};
            sleep_unless_stopping(&lane, pause.delay(++failures));
            continue;
        }
        failures = 0;
        if (jobs.as_array().empty()) {
            release(false);
            sleep_unless_stopping(&lane, milliseconds(settings_.poll_interval_ms));
            continue;
        }
        std::map<std::string, std::pair<std::vector<std::string>, std::vector<std::string>>> downloaded;  // feature -> ids, docs
        {
            std::lock_guard lock(mutex_);
            for (auto& job : jobs.as_array()) {
                if (!job.is_object()) continue;
                json::object& o = job.as_object();
                o["tenant"] = lane.tenant;  // results and renewals go back to where the job came from
                auto& batch = downloaded[text(o, "feature")];
                batch.first.push_back(text(o, "id"));
                batch.second.push_back(json::serialize(o));
                queue_.push_back(std::make_shared<Claim>(Claim{lane.tenant, std::move(o), lease_until, {}, false}));
            }
            release(true);
        }
        wake_.notify_all();
        for (const auto& [feature, batch] : downloaded)
            report(feature, CC_JOBS_DOWNLOADED, lane.tenant, batch.first, batch.second, "");
    }
}

void JobScheduler::worker_loop() {
    for (;;) {
        std::shared_ptr<Claim> claim;
        {
            std::unique_lock lock(mutex_);
            wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
            if (queue_.empty()) return;  // stopping
            claim = std::move(queue_.front());
            queue_.erase(queue_.begin());
            running_.push_back(claim);
            ++in_flight_;  // with the dequeue, under the lock: busy never under-counts
        }
        const std::string id = text(claim->job, "id");
        try {
            run(*claim);
        } catch (const std::exception& e) {
            log_.emit(CC_EV_OutboxWriteFailed, CC_LEVEL_ERROR, "job " + id + ": " + e.what(), id);
        }
        {
            std::lock_guard lock(mutex_);  // under the lock: the claimer cannot miss this wake-up
            std::erase(running_, claim);
            --in_flight_;
        }
        wake_.notify_all();
    }
}

JobScheduler::Renewal JobScheduler::renew(Claim& claim, seconds lease, std::string& why) {
    auto tenant = tenant_plugin(claim.tenant);
    if (!tenant) {
        why = "the plugin of tenant '" + claim.tenant + "' is not loaded";
        return Renewal::unsupported;
    }
    json::object request{{"id", text(claim.job, "id")}, {"lease_seconds", lease.count()}};
    if (const auto* token = claim.job.if_contains("claim")) request["claim"] = *token;  // the fencing token
    const std::string request_json = json::serialize(request);
    StringSink sink(std::size_t{64} * 1024);
    cc_sink s = sink.sink();
    cc_error err = sdk::detail::make_error();
    const auto asked = steady_clock::now();
    const int rc = tenant->api.tenant->call(tenant->api.instance, "jobs.renew_lease", request_json.c_str(), &s, &err);
    why = err.message;
    std::lock_guard lock(mutex_);
    if (rc == CC_OK) {
        claim.lease_until = std::max(claim.lease_until, asked + lease);
        return Renewal::renewed;
    }
    if (rc == CC_ERR_CONFLICT || rc == CC_ERR_NOT_FOUND) {
        claim.lost = true;
        return Renewal::lost;
    }
    if (why.empty()) why = sdk::status_name(static_cast<cc_status>(rc));
    claim.renew_not_before = steady_clock::now() + seconds(settings_.lease_seconds) / 10;  // no renewal storm
    return Renewal::unsupported;  // NOT_SUPPORTED, or the tenant could not say: keep within the lease we know
}

bool JobScheduler::lost(const Claim& claim) {
    std::lock_guard lock(mutex_);
    return claim.lost;
}

bool JobScheduler::still_fenced(Claim& claim, std::string& why) {
    {
        std::lock_guard lock(mutex_);
        if (claim.lost) {
            why = "the tenant refused this claim's lease renewal";
            return true;
        }
        if (steady_clock::now() < claim.lease_until) return false;  // within the lease we were granted
    }
    return renew(claim, seconds(settings_.lease_seconds), why) == Renewal::lost;
}

void JobScheduler::fenced(const Claim& claim, const std::string& why) {
    const std::string id = text(claim.job, "id");
    log_.emit(CC_EV_ResultFenced, CC_LEVEL_WARNING, "job " + id + ": " + why + " (tenant '" + claim.tenant + "')", id);
}

void JobScheduler::renew_running(const std::string& tenant) {
    const auto lease = seconds(settings_.lease_seconds);
    std::vector<std::shared_ptr<Claim>> due;
    {
        std::lock_guard lock(mutex_);
        const auto now = steady_clock::now();
        for (const auto& claim : running_)
            if (claim->tenant == tenant && !claim->lost && now >= claim->renew_not_before && claim->lease_until - now < lease / 2)
                due.push_back(claim);
    }
    for (const auto& claim : due) {
        std::string why;
        const std::string id = text(claim->job, "id");
        if (renew(*claim, lease, why) == Renewal::lost)
            log_.emit(CC_EV_JobLeaseLost, CC_LEVEL_WARNING,
                      "job " + id + ": the tenant no longer grants this claim's lease (" + why +
                          "); its run is abandoned when it returns, so it is not finished twice",
                      id);
    }
}

void JobScheduler::run(Claim& claim) {
    const json::object& job = claim.job;
    const std::string id = text(job, "id");
    const std::string feature = text(job, "feature");
    const json::value* claim_token = job.if_contains("claim");  // the fencing token (tenant-local's claim number)
    const std::optional<std::int64_t> token =
        claim_token && claim_token->is_int64() ? std::optional(claim_token->as_int64()) : std::nullopt;
    if (auto stored = outbox_.find(claim.tenant, runtime_.config()->default_tenant() == claim.tenant, id)) {
        // Finished before a crash, or by another claim: report, don't redo. An older claim's
        // result goes back under this claim, the one the tenant now accepts; a newer claim's
        // result means this claim is stale (this instance sat on it past its lease).
        const auto had = claim_in(stored->body);
        if (token && had && *had > *token) {
            fenced(claim, "claim " + std::to_string(*token) + " is stale: claim " + std::to_string(*had) +
                              "'s result is already stored; this run is dropped");
            return;
        }
        if (token && had != token) {
            std::error_code ec;
            json::value body = json::parse(stored->body, ec);
            if (!ec && body.is_object()) {
                body.as_object()["claim"] = *token;
                outbox_.restamp(stored->seq, json::serialize(body));
            }
        }
        wake_delivery(claim.tenant);
        return;
    }
    // A claim that waited here past its lease (this instance was paused, or busy) may belong to
    // another instance by now: ask before running it.
    std::string why_fenced;
    if (token && still_fenced(claim, why_fenced)) {
        fenced(claim, "claim " + std::to_string(*token) + " waited past its lease (" + why_fenced + "); not run");
        return;
    }
    std::string result;
    for (int attempt = 1;; ++attempt) {
        auto gen = runtime_.find(CC_KIND_FEATURE, feature);
        if (!gen) {
            log_.emit(CC_EV_JobFeatureUnavailable, CC_LEVEL_WARNING,
                      "job " + id + " is for feature '" + feature + "', which is not loaded; its lease returns it", id);
            return;
        }
        json::object doc = job;
        doc["attempt"] = attempt;
        doc["max_attempts"] = settings_.max_attempts;
        const std::string doc_json = json::serialize(doc);
        StringSink sink;
        cc_sink s = sink.sink();
        cc_error err = sdk::detail::make_error();
        const cc_feature_api* api = gen->api.feature;
        const int rc = api->struct_size > offsetof(cc_feature_api, run_job_len) && api->run_job_len != nullptr
                           ? api->run_job_len(gen->api.instance, doc_json.c_str(), doc_json.size(), &s, &err)
                           : api->run_job(gen->api.instance, doc_json.c_str(), &s, &err);
        gen->count_call(rc);
        if (rc == CC_OK) {
            std::error_code ec;
            json::value parsed = json::parse(sink.data, ec);
            if (!ec && parsed.is_object()) {
                result = std::move(sink.data);
            } else {
                result = json::serialize(json::object{
                    {"status", "failed"},
                    {"error",
                     json::object{{"code", "internal"},
                                  {"message", "feature '" + feature + "' returned a result that is not a JSON object"}}}});
            }
            break;
        }
        if (rc == CC_ERR_PENDING) {
            // Waiting for an approval can take days: no worker waits for it. The job keeps
            // its lease until it ends; then the tenant hands it out again, and that run asks
            // the CA (the same request id) whether the request was decided.
            log_.emit(CC_EV_JobPendingAtCa, CC_LEVEL_INFO,
                      "job " + id + " waits for approval at its CA (" + err.message +
                          "); asked again when its lease returns it (about " + std::to_string(settings_.lease_seconds) + " s)",
                      id, {{"attempt", attempt}});
            return;
        }
        if (CC_STATUS_IS_RETRYABLE(rc) && attempt < settings_.max_attempts) {
            if (lost(claim)) {
                log_.emit(CC_EV_JobLeaseLost, CC_LEVEL_WARNING, "job " + id + ": not retried, its lease was lost", id,
                          {{"attempt", attempt}});
                return;
            }
            const auto wait = backoff(attempt);
            // The wait and the next attempt must fit in the lease, or the tenant hands the job
            // to another claim while this one still means to finish it. Margin: a tenth of the
            // lease, at least a second, for the attempt itself and clock skew.
            const auto margin = std::max<milliseconds>(seconds(1), seconds(settings_.lease_seconds) / 10);
            const auto lease_until = [&] {
                std::lock_guard lock(mutex_);
                return claim.lease_until;
            }();
            if (steady_clock::now() + wait + margin > lease_until) {
                const auto wanted = duration_cast<seconds>(wait + margin) + seconds(settings_.lease_seconds);
                std::string why;
                const Renewal renewal = renew(claim, wanted, why);
                if (renewal == Renewal::lost) {
                    log_.emit(CC_EV_JobLeaseLost, CC_LEVEL_WARNING,
                              "job " + id + ": the tenant no longer grants this claim's lease (" + why +
                                  "); abandoned so it is not finished twice",
                              id, {{"attempt", attempt}});
                    return;
                }
                if (renewal == Renewal::unsupported) {
                    log_.emit(CC_EV_JobLeaseLost, CC_LEVEL_WARNING,
                              "job " + id + ": retrying in " + std::to_string(wait.count()) +
                                  " ms would outlast its lease, which the tenant did not renew (" + why +
                                  "); abandoned, its lease returns it",
                              id, {{"attempt", attempt}});
                    return;
                }
            }
            log_.emit(CC_EV_JobRetryScheduled, CC_LEVEL_INFO,
                      "job " + id + " attempt " + std::to_string(attempt) + " failed (" + err.message + "); retrying in " +
                          std::to_string(wait.count()) + " ms",
                      id, {{"attempt", attempt}, {"code", sdk::status_name(static_cast<cc_status>(rc))}});
            if (!sleep_unless_stopping(nullptr, wait)) {
                log_.emit(CC_EV_JobAbandoned, CC_LEVEL_INFO,
                          "job " + id + " abandoned at stop while waiting to retry; its lease returns it", id);
                return;
            }
            continue;
        }
        result = json::serialize(json::object{{"status", "failed"},
                                              {"error", json::object{{"code", sdk::status_name(static_cast<cc_status>(rc))},
                                                                     {"message", err.message},
                                                                     {"retryable", CC_STATUS_IS_RETRYABLE(rc)}}},
                                              {"attempts", attempt}});
        break;
    }
    if (token && still_fenced(claim, why_fenced)) {  // paused or slow past the lease: does the claim still hold?
        fenced(claim,
               "claim " + std::to_string(*token) + " finished after its lease (" + why_fenced + "); the result is dropped");
        return;
    }
    if (lost(claim)) {  // renewing during the run found another claim owns the job now
        log_.emit(CC_EV_JobLeaseLost, CC_LEVEL_WARNING,
                  "job " + id + ": finished after its lease was lost; the result is dropped", id);
        return;
    }
    if (claim_token) {  // the tenant completes the job only while this claim still holds it
        std::error_code ec;
        json::value body = json::parse(result, ec);
        if (!ec && body.is_object()) {
            body.as_object()["claim"] = *claim_token;
            result = json::serialize(body);
        }
    }
    // Durable before the tenant hears of it. An unrefused result of an older claim (this run
    // raced one that was paused past its lease) is kept by put(): restamp it with this claim,
    // the one the tenant now accepts.
    const std::string stored = outbox_.put(claim.tenant, id, feature, result);
    if (token && stored != result) {
        const auto had = claim_in(stored);
        if (had && *had > *token) {
            fenced(claim, "claim " + std::to_string(*token) + " finished late: claim " + std::to_string(*had) +
                              "'s result is already stored; this result is dropped");
            return;
        }
        if (had != token)
            if (auto entry = outbox_.find(claim.tenant, runtime_.config()->default_tenant() == claim.tenant, id))
                outbox_.restamp(entry->seq, result);
    }
    log_.emit(CC_EV_JobResultStored, CC_LEVEL_DEBUG, "job " + id + " result stored", id);
    wake_delivery(claim.tenant);
}

void JobScheduler::wake_delivery(const std::string& tenant) {
    std::lock_guard lanes(lanes_mutex_);
    const auto cfg = runtime_.config();
    const std::string name = tenant.empty() ? cfg->default_tenant() : tenant;
    auto it = lanes_.find(name);
    if (it == lanes_.end()) return;  // stored; delivered once the tenant has threads again
    {
        std::lock_guard lock(it->second->mutex);
        it->second->pending = true;
    }
    it->second->wake.notify_one();
}

json::object JobScheduler::outbox_state(const std::string& tenant) {
    const auto cfg = runtime_.config();
    const OutboxState s = outbox_.state(tenant, cfg->default_tenant() == tenant);
    json::object o{{"pending", s.pending}, {"refused", s.refused}, {"oldest_age_seconds", s.oldest_age_seconds}};
    if (!s.last_error.empty()) o["last_error"] = s.last_error;
    return o;
}

void JobScheduler::delivery_loop(Lane& lane) {
    for (;;) {
        {
            std::unique_lock lock(lane.mutex);
            // Woken by a stored entry; otherwise rescans for deferred entries now and then.
            lane.wake.wait_for(lock, milliseconds(std::max(settings_.poll_interval_ms, 50)),
                               [&] { return lane.pending || lane.delivery_stop; });
            lane.pending = false;
            if (lane.delivery_stop) break;
        }
        deliver_due(lane);
    }
    deliver_due(lane);  // the last pass at stop, bounded by the drain deadline
}

namespace {

// The tenant's Retry-After as the plugin put it in its message ("... (retry after N s)"): the
// last occurrence wins.
std::optional<milliseconds> retry_after(std::string_view message) {
    const std::string_view marker = "retry after ";
    const auto at = message.rfind(marker);
    if (at == std::string_view::npos) return std::nullopt;
    std::int64_t n = 0;
    std::size_t i = at + marker.size();
    const std::size_t first = i;
    while (i < message.size() && i - first < 7 && message[i] >= '0' && message[i] <= '9')
        n = n * 10 + (message[i++] - '0');
    if (i == first || message.substr(i, 2) != " s") return std::nullopt;
    return milliseconds(std::min<std::int64_t>(n, 86400) * 1000);
}

std::uint32_t event_field(const json::object& o, const char* key) {
    const auto* v = o.if_contains(key);
    return v && v->is_int64() && v->as_int64() > 0 && v->as_int64() < 100000 ? static_cast<std::uint32_t>(v->as_int64()) : 0;
}

}  // namespace

// Runs only on the lane's delivery thread.
JobScheduler::Delivery JobScheduler::deliver(Lane& lane, const OutboxEntry& entry) {
    auto tenant = tenant_plugin(lane.tenant);
    cc_error err = sdk::detail::make_error();
    int rc = CC_ERR_UNAVAILABLE;
    const bool is_result = entry.kind == OutboxEntry::Kind::result;
    const auto started = steady_clock::now();
    if (!tenant) {
        sdk::detail::set_error(&err, CC_ERR_UNAVAILABLE, "the plugin of tenant '" + lane.tenant + "' is not loaded");
    } else if (is_result) {
        rc = tenant->api.tenant->complete_job(tenant->api.instance, entry.key.c_str(), entry.body.c_str(), &err);
    } else {
        StringSink sink(std::size_t{64} * 1024);
        cc_sink s = sink.sink();
        rc = tenant->api.tenant->call(tenant->api.instance, entry.operation.c_str(), entry.body.c_str(), &s, &err);
    }
    if (tenant) tenant->count_call(rc);
    // A call into the plugin cannot be interrupted; a slow one is reported, and the entries
    // after it wait their turn (claims, workers and other tenants do not).
    const auto took = duration_cast<milliseconds>(steady_clock::now() - started);
    const std::string what =
        is_result ? "job " + entry.key + "'s result" : "notification " + entry.operation + " (" + entry.key + ")";
    if (took > kDeliveryDeadline)
        log_.emit(CC_EV_JobResultDeliverySlow, CC_LEVEL_WARNING,
                  "tenant '" + lane.tenant + "' took " + std::to_string(took.count()) + " ms to take " + what + " (deadline " +
                      std::to_string(kDeliveryDeadline.count()) + " ms)",
                  entry.key, {{"ms", took.count()}, {"tenant", lane.tenant}});

    json::object events;
    if (!is_result) {
        std::error_code ec;
        json::value parsed = json::parse(entry.events, ec);
        if (!ec && parsed.is_object()) events = std::move(parsed.as_object());
    }
    const std::string request_id = is_result ? entry.key : text(events, "request_id");
    auto feature = is_result ? runtime_.find(CC_KIND_FEATURE, entry.feature) : nullptr;
    const bool notify_feature = feature && feature->api.feature->struct_size > offsetof(cc_feature_api, result_delivered) &&
                                feature->api.feature->result_delivered != nullptr;
    const json::object fields{{"tenant", lane.tenant}, {"attempt", entry.attempts + 1}};

    if (rc == CC_OK) {
        outbox_.remove(entry.seq);
        if (is_result) {
            log_.emit(CC_EV_JobResultDelivered, CC_LEVEL_DEBUG, what + " acknowledged by tenant '" + lane.tenant + "'", entry.key,
                      fields);
            if (notify_feature) feature->api.feature->result_delivered(feature->api.instance, entry.key.c_str(), 1, "");
        } else {
            if (auto id = event_field(events, "delivered"))
                log_.emit(id, CC_LEVEL_INFO, "tenant '" + lane.tenant + "' took " + what, request_id, fields);
            if (auto id = event_field(events, "done"))
                log_.emit(id, CC_LEVEL_INFO, text(events, "done_message"), request_id, fields);
        }
        return Delivery::delivered;
    }
    // Refused for good: the tenant will never take it as it is. Kept (refused) for inspection.
    const bool final =
        rc == CC_ERR_INVALID_ARGUMENT || rc == CC_ERR_NOT_FOUND || rc == CC_ERR_CONFLICT || rc == CC_ERR_NOT_SUPPORTED;
    if (final && is_result && rc == CC_ERR_CONFLICT) {
        // Another claim owns the job now (this instance was paused or cut off past its lease):
        // the result of this run is fenced off for good; the other claim's run reports instead.
        if (!outbox_.refuse_if_unchanged(entry.seq, entry.body, err.message)) {
            // A newer claim's run restamped the entry while this delivery was in flight: send
            // that one instead of refusing it.
            outbox_.defer(entry.seq, 0, err.message);
            return Delivery::deferred;
        }
        log_.emit(CC_EV_ResultFenced, CC_LEVEL_WARNING,
                  "job " + entry.key + ": result fenced off: " + err.message + " (tenant '" + lane.tenant +
                      "'; kept in the outbox as refused, not retried)",
                  request_id, fields);
        if (notify_feature) feature->api.feature->result_delivered(feature->api.instance, entry.key.c_str(), 0, err.message);
        return Delivery::refused;
    }
    if (final) {
        outbox_.refuse(entry.seq, err.message);
        log_.emit(CC_EV_TenantOutboxDeadLetter, CC_LEVEL_ERROR,
                  "tenant '" + lane.tenant + "' refused " + what + " (" + sdk::status_name(static_cast<cc_status>(rc)) + ": " +
                      err.message + "); kept in the outbox, not retried",
                  request_id, fields);
        if (auto id = event_field(events, "refused"))
            log_.emit(id, CC_LEVEL_ERROR, "tenant '" + lane.tenant + "' refused " + what + ": " + err.message, request_id,
                      fields);
        if (notify_feature) feature->api.feature->result_delivered(feature->api.instance, entry.key.c_str(), 0, err.message);
        return Delivery::refused;
    }
    auto wait = backoff(static_cast<int>(entry.attempts) + 1);
    if (auto asked = retry_after(err.message); asked && *asked > wait) wait = *asked;
    outbox_.defer(entry.seq, wait.count(), err.message);
    const std::string msg = "delivering " + what + " to tenant '" + lane.tenant + "' failed (" + err.message + "); retrying in " +
                            std::to_string(wait.count()) + " ms";
    if (is_result) {
        log_.emit(CC_EV_JobResultDeliveryFailed, CC_LEVEL_WARNING, msg, entry.key, fields);
        if (notify_feature) feature->api.feature->result_delivered(feature->api.instance, entry.key.c_str(), 0, err.message);
    } else if (auto id = event_field(events, "retry")) {
        log_.emit(id, CC_LEVEL_WARNING, msg, request_id, fields);
    } else {
        log_.emit(CC_EV_JobResultDeliveryFailed, CC_LEVEL_WARNING, msg, request_id, fields);
    }
    return Delivery::deferred;
}

// Delivery thread: on a shared store, only the holder of "outbox:<tenant>" delivers that
// tenant's entries (whoever stored them). Renewed on every pass; ttl about three passes.
bool JobScheduler::lead(Lane& lane) {
    const auto pass = milliseconds(std::max(settings_.poll_interval_ms, 50));
    const auto ttl = std::max<seconds>(seconds(3), duration_cast<seconds>(pass * 3) + seconds(1));
    const auto now = steady_clock::now();
    if (lane.lead_failures > 0 && now < lane.lead_retry_at) return false;  // the store was away: back off
    std::optional<std::int64_t> epoch;
    try {
        epoch = outbox_.lead(lane.tenant, ttl);
        lane.lead_failures = 0;
    } catch (const std::exception& e) {
        epoch.reset();
        const sdk::Backoff backoff{milliseconds(250), seconds(10), 0.2};
        lane.lead_retry_at = now + backoff.delay(++lane.lead_failures);
        if (lane.lead_failures == 1 || now - lane.lead_error_logged >= seconds(30)) {
            lane.lead_error_logged = now;
            log_.emit(CC_EV_OutboxWriteFailed, CC_LEVEL_WARNING,
                      "outbox: cannot take the delivery lease of tenant '" + lane.tenant + "' (try " +
                          std::to_string(lane.lead_failures) + "): " + e.what(),
                      {}, {{"tenant", lane.tenant}});
        }
    }
    const json::object fields{{"tenant", lane.tenant}, {"lease", "outbox:" + lane.tenant}};
    if (epoch && *epoch != 0 && epoch != lane.delivery_epoch)
        log_.emit(CC_EV_LeadershipAcquired, CC_LEVEL_INFO,
                  "this instance delivers tenant '" + lane.tenant + "''s outbox now (lease outbox:" + lane.tenant + ", epoch " +
                      std::to_string(*epoch) + ")",
                  {}, fields);
    else if (!epoch && lane.delivery_epoch && *lane.delivery_epoch != 0)
        log_.emit(CC_EV_LeadershipLost, CC_LEVEL_WARNING,
                  "this instance no longer delivers tenant '" + lane.tenant + "''s outbox (lease outbox:" + lane.tenant +
                      " taken by another instance or not renewed)",
                  {}, fields);
    lane.delivery_epoch = epoch;
    return epoch.has_value();
}

void JobScheduler::deliver_due(Lane& lane) {
    std::map<std::string, std::vector<std::string>> uploaded;  // feature -> job ids delivered in this pass
    try {
        const auto cfg = runtime_.config();
        const bool is_default = cfg->default_tenant() == lane.tenant;
        if (!lead(lane)) return;
        const auto entries = outbox_.pending(lane.tenant, is_default, 64);
        bool first = true;
        for (const auto& entry : entries) {
            {
                std::lock_guard lock(lane.mutex);
                if (lane.delivery_stop && steady_clock::now() >= lane.delivery_deadline) break;
            }
            // In order: an entry waiting for its retry holds back the entries stored after it.
            if (!entry.due) break;
            // A slow tenant may have outlasted the lease: renewed before each further entry.
            if (!first && !lead(lane)) break;
            first = false;
            const Delivery d = deliver(lane, entry);
            if (d == Delivery::delivered && entry.kind == OutboxEntry::Kind::result) uploaded[entry.feature].push_back(entry.key);
            if (d == Delivery::deferred) break;
        }
        if (!entries.empty()) {
            const OutboxState s = outbox_.state(lane.tenant, is_default);
            if (s.pending > 0 && s.oldest_age_seconds >= 60 && steady_clock::now() - lane.backlog_reported > minutes(5)) {
                lane.backlog_reported = steady_clock::now();
                log_.emit(CC_EV_TenantOutboxBacklog, CC_LEVEL_WARNING,
                          "tenant '" + lane.tenant + "': " + std::to_string(s.pending) +
                              " entries wait in the outbox, the oldest " + std::to_string(s.oldest_age_seconds) + " s (" +
                              s.last_error + ")",
                          {}, {{"tenant", lane.tenant}, {"pending", s.pending}, {"oldest_age_seconds", s.oldest_age_seconds}});
            }
        }
    } catch (const std::exception& e) {
        log_.emit(CC_EV_OutboxWriteFailed, CC_LEVEL_ERROR, std::string("outbox: ") + e.what());
    }
    for (const auto& [feature, ids] : uploaded)
        report(feature, CC_JOBS_UPLOADED, lane.tenant, ids, {}, "");
}

}  // namespace certconn::host
