#include "jobs/JobScheduler.hpp"

#include <certconn/sdk.hpp>

#include <boost/json.hpp>

#include <random>

namespace certconn::host {

namespace json = boost::json;
using namespace std::chrono;

namespace {

std::int64_t now_ms() { return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count(); }

std::string text(const json::object& o, const char* key) {
    const auto* v = o.if_contains(key);
    return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

}  // namespace

JobScheduler::JobScheduler(PluginRuntime& runtime, EventLog& log, JobSettings settings, const std::filesystem::path& state_dir)
    : runtime_(runtime), log_(log), settings_(settings), outbox_(state_dir / "outbox.db") {}

JobScheduler::~JobScheduler() { stop(seconds(0)); }

void JobScheduler::start() {
    claimer_ = std::thread([this] { claim_loop(); });
    for (int i = 0; i < settings_.concurrency; ++i) workers_.emplace_back([this] { worker_loop(); });
}

void JobScheduler::stop(seconds drain) {
    if (stopping_.exchange(true)) return;
    wake_.notify_all();
    if (claimer_.joinable()) claimer_.join();
    const auto deadline = steady_clock::now() + drain;
    while (in_flight_ > 0 && steady_clock::now() < deadline) std::this_thread::sleep_for(milliseconds(20));
    {
        std::lock_guard lock(mutex_);
        for (const auto& job : queue_)
            log_.emit(CC_EV_JobAbandoned, CC_LEVEL_INFO, "job " + text(job, "id") + " not started before stop; its lease returns it",
                      text(job, "id"));
        queue_.clear();
    }
    wake_.notify_all();
    for (auto& w : workers_)
        if (w.joinable()) w.join();
}

bool JobScheduler::sleep_unless_stopping(milliseconds duration) {
    std::unique_lock lock(mutex_);
    return !wake_.wait_for(lock, duration, [this] { return stopping_.load(); });
}

milliseconds JobScheduler::backoff(int attempt) const {
    thread_local std::mt19937 rng{std::random_device{}()};
    double ms = settings_.retry_initial_ms * std::pow(2.0, attempt - 1);
    ms = std::min<double>(ms, settings_.retry_max_ms);
    std::uniform_real_distribution<double> jitter(0.8, 1.2);
    return milliseconds(static_cast<std::int64_t>(ms * jitter(rng)));
}

std::vector<std::string> JobScheduler::enabled_features() const {
    std::vector<std::string> out;
    for (const auto& gen : runtime_.generations())
        if (gen->identity().kind == CC_KIND_FEATURE) out.push_back(gen->identity().name);
    return out;
}

void JobScheduler::claim_loop() {
    auto last_delivery_scan = steady_clock::now() - hours(1);
    while (!stopping_) {
        if (steady_clock::now() - last_delivery_scan > milliseconds(settings_.poll_interval_ms)) {
            deliver_due();
            last_delivery_scan = steady_clock::now();
        }
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
            // Wake as soon as a worker frees a slot (the timeout only bounds outbox scans).
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
        for (const auto& f : features) names.push_back(json::string(f));
        const std::string names_json = json::serialize(names);
        StringSink sink;
        cc_sink s = sink.sink();
        cc_error err = new_error();
        const int rc = tenant->api.tenant->claim_jobs(tenant->api.instance, names_json.c_str(),
                                                      static_cast<uint32_t>(capacity - busy),
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
                if (job.is_object()) queue_.push_back(std::move(job.as_object()));
        }
        wake_.notify_all();
    }
}

void JobScheduler::worker_loop() {
    for (;;) {
        json::object job;
        {
            std::unique_lock lock(mutex_);
            wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
            if (queue_.empty()) return;  // stopping
            job = std::move(queue_.front());
            queue_.erase(queue_.begin());
            ++in_flight_;  // with the dequeue, under the lock: busy never under-counts
        }
        try {
            run(job);
        } catch (const std::exception& e) {
            log_.emit(CC_EV_OutboxWriteFailed, CC_LEVEL_ERROR, "job " + text(job, "id") + ": " + e.what(), text(job, "id"));
        }
        {
            std::lock_guard lock(mutex_);  // under the lock: the claimer cannot miss this wake-up
            --in_flight_;
        }
        wake_.notify_all();
    }
}

void JobScheduler::run(const json::object& job) {
    const std::string id = text(job, "id");
    const std::string feature = text(job, "feature");
    if (auto stored = outbox_.find(id)) {  // finished before a crash: report, don't redo
        deliver(*stored);
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
        cc_error err = new_error();
        const cc_feature_api* api = gen->api.feature;
        const int rc = api->struct_size > offsetof(cc_feature_api, run_job_len) && api->run_job_len != nullptr
                           ? api->run_job_len(gen->api.instance, doc_json.c_str(), doc_json.size(), &s, &err)
                           : api->run_job(gen->api.instance, doc_json.c_str(), &s, &err);
        if (rc == CC_OK) {
            std::error_code ec;
            json::value parsed = json::parse(sink.data, ec);
            if (!ec && parsed.is_object()) {
                result = std::move(sink.data);
            } else {
                result = json::serialize(json::object{
                    {"status", "failed"},
                    {"error", json::object{{"code", "internal"}, {"message", "feature '" + feature + "' returned a result that is not a JSON object"}}}});
            }
            break;
        }
        if (CC_STATUS_IS_RETRYABLE(rc) && attempt < settings_.max_attempts) {
            const auto wait = backoff(attempt);
            log_.emit(CC_EV_JobRetryScheduled, CC_LEVEL_INFO,
                      "job " + id + " attempt " + std::to_string(attempt) + " failed (" + err.message + "); retrying in " +
                          std::to_string(wait.count()) + " ms",
                      id, {{"attempt", attempt}, {"code", sdk::status_name(static_cast<cc_status>(rc))}});
            if (!sleep_unless_stopping(wait)) {
                log_.emit(CC_EV_JobAbandoned, CC_LEVEL_INFO, "job " + id + " abandoned at stop while waiting to retry; its lease returns it", id);
                return;
            }
            continue;
        }
        result = json::serialize(json::object{
            {"status", "failed"},
            {"error", json::object{{"code", sdk::status_name(static_cast<cc_status>(rc))}, {"message", err.message}, {"retryable", CC_STATUS_IS_RETRYABLE(rc)}}},
            {"attempts", attempt}});
        break;
    }
    const std::string stored = outbox_.put(id, feature, result);
    log_.emit(CC_EV_JobResultStored, CC_LEVEL_DEBUG, "job " + id + " result stored", id);
    deliver({id, feature, stored, 0});
}

void JobScheduler::deliver(const OutboxEntry& entry) {
    const auto cfg = runtime_.config();
    auto tenant = cfg->tenant ? runtime_.find(CC_KIND_TENANT, cfg->tenant->plugin) : nullptr;
    cc_error err = new_error();
    int rc = CC_ERR_UNAVAILABLE;
    if (tenant) rc = tenant->api.tenant->complete_job(tenant->api.instance, entry.job_id.c_str(), entry.result.c_str(), &err);
    else set_error(&err, CC_ERR_UNAVAILABLE, "no tenant plugin is loaded");
    auto feature = runtime_.find(CC_KIND_FEATURE, entry.feature);
    const bool notify = feature && feature->api.feature->struct_size > offsetof(cc_feature_api, result_delivered) &&
                        feature->api.feature->result_delivered != nullptr;
    if (rc == CC_OK) {
        outbox_.remove(entry.job_id);
        log_.emit(CC_EV_JobResultDelivered, CC_LEVEL_DEBUG, "job " + entry.job_id + " result acknowledged by the tenant", entry.job_id);
        if (notify) feature->api.feature->result_delivered(feature->api.instance, entry.job_id.c_str(), 1, "");
        return;
    }
    const auto wait = backoff(static_cast<int>(entry.attempts) + 1);
    outbox_.defer(entry.job_id, now_ms() + wait.count(), err.message);
    log_.emit(CC_EV_JobResultDeliveryFailed, CC_LEVEL_WARNING,
              "reporting job " + entry.job_id + " failed (" + err.message + "); retrying in " + std::to_string(wait.count()) + " ms",
              entry.job_id);
    if (notify) feature->api.feature->result_delivered(feature->api.instance, entry.job_id.c_str(), 0, err.message);
}

void JobScheduler::deliver_due() {
    try {
        for (const auto& entry : outbox_.due(now_ms(), 64)) {
            if (stopping_) return;
            deliver(entry);
        }
    } catch (const std::exception& e) {
        log_.emit(CC_EV_OutboxWriteFailed, CC_LEVEL_ERROR, std::string("outbox: ") + e.what());
    }
}

}  // namespace certconn::host
