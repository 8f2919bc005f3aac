#include "jobs/JobScheduler.hpp"

#include <certconn/backoff.hpp>
#include <certconn/sdk.hpp>

#include <boost/json.hpp>

namespace certconn::host {

namespace json = boost::json;
using namespace std::chrono;

namespace {

std::int64_t now_ms() {
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

// A tenant acknowledging a result slower than this is reported (JobResultDeliverySlow).
constexpr milliseconds kDeliveryDeadline{10000};

std::string text(const json::object& o, const char* key) {
    const auto* v = o.if_contains(key);
    return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

}  // namespace

JobScheduler::JobScheduler(PluginRuntime& runtime, EventLog& log, JobSettings settings, const std::filesystem::path& state_dir)
    : runtime_(runtime), log_(log), settings_(settings), outbox_(state_dir / "outbox.db") {}

JobScheduler::~JobScheduler() {
    stop(seconds(0));
}

void JobScheduler::start() {
    deliverer_ = std::thread([this] { delivery_loop(); });
    claimer_ = std::thread([this] { claim_loop(); });
    for (int i = 0; i < settings_.concurrency; ++i)
        workers_.emplace_back([this] { worker_loop(); });
}

void JobScheduler::stop(seconds drain) {
    if (stopping_.exchange(true)) return;
    wake_.notify_all();
    if (claimer_.joinable()) claimer_.join();
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
    // The delivery thread makes a last pass over the outbox until the drain deadline; what is
    // left stays in the outbox and is reported after the next start.
    {
        std::lock_guard lock(delivery_mutex_);
        delivery_stop_ = true;
        delivery_deadline_ = deadline;
    }
    delivery_wake_.notify_all();
    if (deliverer_.joinable()) deliverer_.join();
}

bool JobScheduler::sleep_unless_stopping(milliseconds duration) {
    std::unique_lock lock(mutex_);
    return !wake_.wait_for(lock, duration, [this] { return stopping_.load(); });
}

milliseconds JobScheduler::backoff(int attempt) const {
    // Exponential from retry_initial_ms, capped at retry_max_ms, then +-20% so retries that
    // failed together do not hit the tenant or CA together again.
    const sdk::Backoff policy{milliseconds(settings_.retry_initial_ms), milliseconds(settings_.retry_max_ms), 0.2};
    return policy.delay(attempt);
}

std::vector<std::string> JobScheduler::enabled_features() const {
    std::vector<std::string> out;
    for (const auto& gen : runtime_.generations())
        if (gen->identity().kind == CC_KIND_FEATURE) out.push_back(gen->identity().name);
    return out;
}

void JobScheduler::claim_loop() {
    while (!stopping_) {
        renew_running();
        const auto cfg = runtime_.config();
        std::shared_ptr<const Generation> tenant = cfg->tenant ? runtime_.find(CC_KIND_TENANT, cfg->tenant->plugin) : nullptr;
        std::size_t queued;
        {
            std::lock_guard lock(mutex_);
            queued = queue_.size();
        }
        // Up to `concurrency` jobs are claimed ahead, so a worker that finishes never waits for
        // a claim round trip; their leases cover the wait.
        const std::size_t capacity = 2 * static_cast<std::size_t>(settings_.concurrency);
        const std::size_t busy = in_flight_ + queued;
        const auto features = enabled_features();
        if (busy >= capacity) {
            // Wake as soon as a worker frees a slot.
            std::unique_lock lock(mutex_);
            wake_.wait_for(lock, milliseconds(settings_.poll_interval_ms),
                           [&] { return stopping_ || in_flight_ + queue_.size() < capacity; });
            continue;
        }
        if (!tenant || features.empty()) {
            sleep_unless_stopping(milliseconds(settings_.poll_interval_ms));
            continue;
        }
        json::array names;
        for (const auto& f : features)
            names.push_back(json::string(f));
        const std::string names_json = json::serialize(names);
        StringSink sink;
        cc_sink s = sink.sink();
        cc_error err = sdk::detail::make_error();
        // The lease is counted from before the call: the host never believes it longer than the tenant.
        const auto lease_until = steady_clock::now() + seconds(settings_.lease_seconds);
        const int rc =
            tenant->api.tenant->claim_jobs(tenant->api.instance, names_json.c_str(), static_cast<uint32_t>(capacity - busy),
                                           static_cast<uint32_t>(settings_.lease_seconds), &s, &err);
        if (rc != CC_OK) {
            log_.emit(CC_EV_JobClaimFailed, CC_LEVEL_WARNING, std::string("claiming jobs failed: ") + err.message);
            sleep_unless_stopping(milliseconds(std::max(1000, settings_.poll_interval_ms)));
            continue;
        }
        std::error_code ec;
        json::value jobs = json::parse(sink.data, ec);
        if (ec || !jobs.is_array()) {
            log_.emit(CC_EV_JobClaimFailed, CC_LEVEL_ERROR, "the tenant plugin returned jobs that are not a JSON array");
            sleep_unless_stopping(milliseconds(std::max(1000, settings_.poll_interval_ms)));
            continue;
        }
        if (jobs.as_array().empty()) {
            sleep_unless_stopping(milliseconds(settings_.poll_interval_ms));
            continue;
        }
        {
            std::lock_guard lock(mutex_);
            for (auto& job : jobs.as_array())
                if (job.is_object())
                    queue_.push_back(std::make_shared<Claim>(Claim{std::move(job.as_object()), lease_until, {}, false}));
        }
        wake_.notify_all();
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
    const auto cfg = runtime_.config();
    auto tenant = cfg->tenant ? runtime_.find(CC_KIND_TENANT, cfg->tenant->plugin) : nullptr;
    if (!tenant) {
        why = "no tenant plugin is loaded";
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

void JobScheduler::renew_running() {
    const auto lease = seconds(settings_.lease_seconds);
    std::vector<std::shared_ptr<Claim>> due;
    {
        std::lock_guard lock(mutex_);
        const auto now = steady_clock::now();
        for (const auto& claim : running_)
            if (!claim->lost && now >= claim->renew_not_before && claim->lease_until - now < lease / 2) due.push_back(claim);
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
    if (outbox_.find(id)) {  // finished before a crash, or by an earlier claim: report, don't redo
        wake_delivery();
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
            if (!sleep_unless_stopping(wait)) {
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
    if (lost(claim)) {  // renewing during the run found another claim owns the job now
        log_.emit(CC_EV_JobLeaseLost, CC_LEVEL_WARNING,
                  "job " + id + ": finished after its lease was lost; the result is dropped", id);
        return;
    }
    outbox_.put(id, feature, result);  // durable before the tenant hears of it
    log_.emit(CC_EV_JobResultStored, CC_LEVEL_DEBUG, "job " + id + " result stored", id);
    wake_delivery();
}

void JobScheduler::wake_delivery() {
    {
        std::lock_guard lock(delivery_mutex_);
        delivery_pending_ = true;
    }
    delivery_wake_.notify_one();
}

void JobScheduler::delivery_loop() {
    for (;;) {
        {
            std::unique_lock lock(delivery_mutex_);
            // Woken by a stored result; otherwise rescans for deferred entries now and then.
            delivery_wake_.wait_for(lock, milliseconds(std::max(settings_.poll_interval_ms, 50)),
                                    [this] { return delivery_pending_ || delivery_stop_; });
            delivery_pending_ = false;
            if (delivery_stop_) break;
        }
        deliver_due();
    }
    deliver_due();  // the last pass at stop, bounded by the drain deadline
}

// Runs only on the delivery thread.
void JobScheduler::deliver(const OutboxEntry& entry) {
    const auto cfg = runtime_.config();
    auto tenant = cfg->tenant ? runtime_.find(CC_KIND_TENANT, cfg->tenant->plugin) : nullptr;
    cc_error err = sdk::detail::make_error();
    int rc = CC_ERR_UNAVAILABLE;
    const auto started = steady_clock::now();
    if (tenant)
        rc = tenant->api.tenant->complete_job(tenant->api.instance, entry.job_id.c_str(), entry.result.c_str(), &err);
    else
        sdk::detail::set_error(&err, CC_ERR_UNAVAILABLE, "no tenant plugin is loaded");
    // A call into the plugin cannot be interrupted; a slow one is reported, and the entries
    // after it wait their turn (claims and workers do not).
    const auto took = duration_cast<milliseconds>(steady_clock::now() - started);
    if (took > kDeliveryDeadline)
        log_.emit(CC_EV_JobResultDeliverySlow, CC_LEVEL_WARNING,
                  "the tenant took " + std::to_string(took.count()) + " ms to take job " + entry.job_id + "'s result (deadline " +
                      std::to_string(kDeliveryDeadline.count()) + " ms)",
                  entry.job_id, {{"ms", took.count()}});
    auto feature = runtime_.find(CC_KIND_FEATURE, entry.feature);
    const bool notify = feature && feature->api.feature->struct_size > offsetof(cc_feature_api, result_delivered) &&
                        feature->api.feature->result_delivered != nullptr;
    if (rc == CC_OK) {
        outbox_.remove(entry.job_id);
        log_.emit(CC_EV_JobResultDelivered, CC_LEVEL_DEBUG, "job " + entry.job_id + " result acknowledged by the tenant",
                  entry.job_id);
        if (notify) feature->api.feature->result_delivered(feature->api.instance, entry.job_id.c_str(), 1, "");
        return;
    }
    const auto wait = backoff(static_cast<int>(entry.attempts) + 1);
    outbox_.defer(entry.job_id, now_ms() + wait.count(), err.message);
    log_.emit(
        CC_EV_JobResultDeliveryFailed, CC_LEVEL_WARNING,
        "reporting job " + entry.job_id + " failed (" + err.message + "); retrying in " + std::to_string(wait.count()) + " ms",
        entry.job_id);
    if (notify) feature->api.feature->result_delivered(feature->api.instance, entry.job_id.c_str(), 0, err.message);
}

void JobScheduler::deliver_due() {
    try {
        for (const auto& entry : outbox_.due(now_ms(), 64)) {
            {
                std::lock_guard lock(delivery_mutex_);
                if (delivery_stop_ && steady_clock::now() >= delivery_deadline_) return;
            }
            deliver(entry);
        }
    } catch (const std::exception& e) {
        log_.emit(CC_EV_OutboxWriteFailed, CC_LEVEL_ERROR, std::string("outbox: ") + e.what());
    }
}

}  // namespace certconn::host
