// revoke: revokes certificates at the CA that issued them and reports each outcome with an
// error code the tenant understands (Intune's revocation result codes).
//
// Batches: jobs for the same CA that wait while a call to that CA is in flight go to it
// together in the next call ({"batch": [...]}), which ca-local commits in one transaction. A
// CA plugin that does not take batches answers CC_ERR_NOT_SUPPORTED and gets them one by one.
#include <certconn/job.hpp>
#include <certconn/sdk.hpp>

#include <boost/json.hpp>

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>

namespace {

namespace json = boost::json;
using certconn::sdk::Error;
using certconn::sdk::string_field;

constexpr const char* kSchema = R"json({"type":"table","keys":{
  "default_ca": {"type":"string","description":"CA used when a job names none (default \"local\")"},
  "batch_size": {"type":"integer","min":1,"max":500,"description":"most revocations sent to a CA in one call (default 100)"},
  "batch_window_ms": {"type":"integer","min":0,"max":5000,"description":"how long a batch waits to fill before it is sent (default 0: requests that arrive while a call to the CA is in flight form the next batch)"}
}})json";

/// Intune's revocation result errorCode (REFERENCE §3) for a status.
int intune_code(cc_status s) {
    switch (s) {
        case CC_ERR_INVALID_ARGUMENT: return 4002;
        case CC_ERR_NOT_FOUND: return 4004;
        case CC_ERR_CONFLICT: return 4005;
        case CC_ERR_NOT_SUPPORTED: return 4006;
        case CC_ERR_TIMEOUT: return 4100;
        case CC_ERR_UNAVAILABLE: return 4101;
        case CC_ERR_BUSY: return 4102;
        default: return 4000;  // service error
    }
}

/// What the CA said about one request: its JSON answer, or an error.
struct Outcome {
    bool ok = false;
    json::object answer;
    cc_status code = CC_ERR_INTERNAL;
    std::string message;
    std::size_t batch = 1;  // requests in the CA call that carried this one
};

/// Group commit per CA: the first request finding its CA idle is sent at once; requests that
/// arrive while a call to that CA is in flight queue up and go together in the next call. No
/// request waits for a timer (unless batch_window_ms asks for one, for CAs where every call
/// is expensive), and under load the batches grow by themselves.
class Batcher {
public:
    Batcher(certconn::sdk::Host& host, std::size_t size, std::chrono::milliseconds window)
        : host_(host), size_(size), window_(window) {}

    /// Sends `request` to CA `ca`, together with whatever other requests wait for it.
    Outcome revoke(const std::string& ca, json::object request) {
        auto item = std::make_shared<Item>();
        item->request = std::move(request);
        std::unique_lock lock(mutex_);
        Queue& queue = queues_[ca];
        queue.waiting.push_back(item);
        changed_.notify_all();
        while (!item->finished) {
            if (queue.busy) {
                changed_.wait(lock);
                continue;
            }
            queue.busy = true;  // this thread sends the next batch, which includes its own request
            if (window_.count() > 0) changed_.wait_for(lock, window_, [&] { return queue.waiting.size() >= size_; });
            Batch batch;
            const std::size_t n = std::min(size_, queue.waiting.size());
            batch.items.assign(queue.waiting.begin(), queue.waiting.begin() + static_cast<long>(n));
            queue.waiting.erase(queue.waiting.begin(), queue.waiting.begin() + static_cast<long>(n));
            lock.unlock();
            send(ca, batch);
            lock.lock();
            for (auto& i : batch.items)
                i->finished = true;
            queue.busy = false;
            changed_.notify_all();
        }
        return item->outcome;
    }

private:
    struct Item {
        json::object request;
        Outcome outcome;
        bool finished = false;
    };
    struct Batch {
        std::vector<std::shared_ptr<Item>> items;
    };
    struct Queue {
        std::vector<std::shared_ptr<Item>> waiting;
        bool busy = false;  // a call to this CA is in flight
    };

    void one(const std::string& ca, Item& item) {
        try {
            item.outcome.answer = json::parse(host_.ca_revoke(ca, json::serialize(item.request))).as_object();
            item.outcome.ok = true;
        } catch (const Error& e) {
            item.outcome.code = e.code();
            item.outcome.message = e.what();
        } catch (const std::exception& e) {
            item.outcome.code = CC_ERR_INTERNAL;
            item.outcome.message = std::string("CA '") + ca + "' answered something unreadable: " + e.what();
        }
    }

    void send(const std::string& ca, Batch& batch) {
        bool batches;
        {
            std::lock_guard lock(mutex_);
            batches = !unbatched_.contains(ca);
        }
        if (batch.items.size() == 1 || !batches) {
            for (auto& item : batch.items)
                one(ca, *item);
            return;
        }
        for (auto& item : batch.items)
            item->outcome.batch = batch.items.size();
        json::array list;
        for (const auto& item : batch.items)
            list.push_back(item->request);
        std::string answer;
        try {
            answer = host_.ca_revoke(ca, json::serialize(json::object{{"batch", std::move(list)}}));
        } catch (const Error& e) {
            if (e.code() == CC_ERR_NOT_SUPPORTED) {
                std::lock_guard lock(mutex_);
                unbatched_.insert(ca);
            } else {
                for (auto& item : batch.items)
                    item->outcome = Outcome{false, {}, e.code(), e.what(), batch.items.size()};
                return;
            }
            for (auto& item : batch.items) {
                item->outcome.batch = 1;
                one(ca, *item);
            }
            return;
        }
        try {
            const json::value parsed = json::parse(answer);
            const json::array& results = parsed.at("results").as_array();
            if (results.size() != batch.items.size()) throw std::runtime_error("wrong number of results");
            for (std::size_t i = 0; i < results.size(); ++i) {
                const json::object& r = results[i].as_object();
                Outcome& o = batch.items[i]->outcome;
                if (const auto* error = r.if_contains("error")) {
                    o.code = static_cast<cc_status>(error->at("code").as_int64());
                    o.message = std::string(error->at("message").as_string());
                } else {
                    o.ok = true;
                    o.answer = r;
                }
            }
        } catch (const std::exception& e) {
            for (auto& item : batch.items)
                item->outcome = Outcome{false,
                                        {},
                                        CC_ERR_INTERNAL,
                                        std::string("CA '") + ca + "' answered a batch unreadably: " + e.what(),
                                        batch.items.size()};
        }
    }

    certconn::sdk::Host& host_;
    const std::size_t size_;
    const std::chrono::milliseconds window_;
    std::mutex mutex_;
    std::condition_variable changed_;
    std::map<std::string, Queue> queues_;  // per CA
    std::set<std::string> unbatched_;      // CAs that said they take no batches
};

class RevokeFeature final : public certconn::sdk::FeaturePlugin {
public:
    explicit RevokeFeature(certconn::sdk::Host& host)
        : host_(host),
          batcher_(host, size(host), window(host)),
          deliveries_(host, CC_EV_RevokeUploadedRequest, CC_EV_RevokeUploadFailure, CC_EV_RevokeRequestSuccess) {
        default_ca_ = string_field(json::parse(host.config_json()).as_object(), {"default_ca"}, "local");
    }

    std::string run_job(const std::string& job_json) override {
        const json::value parsed = json::parse(job_json);
        const json::object& job = parsed.as_object();
        const std::string id = string_field(job, {"id"});
        const auto [attempt, max_attempts] = certconn::sdk::attempt_of(job);
        if (attempt == 1) host_.log(CC_EV_RevokeDownloadedRequest, CC_LEVEL_INFO, "revocation request received", id);

        std::string ca, serial, reason;
        json::object request;
        try {
            const auto* req = job.if_contains("request");
            if (!req || !req->is_object()) throw Error(CC_ERR_INVALID_ARGUMENT, "job has no request object");
            const json::object& r = req->as_object();
            // Our names first, then Intune's downloadRevocationRequests names.
            ca = string_field(r, {"ca", "caConfiguration"}, default_ca_);
            serial = string_field(r, {"serial", "serialNumber"});
            if (serial.empty())
                throw Error(CC_ERR_INVALID_ARGUMENT, "'serial' (the certificate's serial number in hex) is required");
            reason = string_field(r, {"reason"}, "unspecified");
            request = {{"serial", serial}, {"reason", reason}, {"request_id", id}};
            if (const std::string issuer = string_field(r, {"issuer", "issuerName"}); !issuer.empty()) request["issuer"] = issuer;
        } catch (const Error& e) {
            return fail(id, ca, serial, e.code(), e.what());
        }

        const Outcome outcome = batcher_.revoke(ca, std::move(request));
        if (!outcome.ok) {
            if (CC_STATUS_IS_RETRYABLE(outcome.code) && attempt < max_attempts) {
                host_.log(CC_EV_RevokeFailedAttempt, CC_LEVEL_WARNING,
                          "revocation attempt " + std::to_string(attempt) + " of " + std::to_string(max_attempts) +
                              " failed (will retry): " + outcome.message,
                          id);
                throw Error(outcome.code, outcome.message);  // the host runs the job again after a backoff
            }
            return fail(id, ca, serial, outcome.code, outcome.message);
        }
        // A CA plugin may answer with less than ca-local does: what it omits comes from the request.
        const json::object& a = outcome.answer;
        auto answered = [&](const char* key, const std::string& fallback) {
            const auto* v = a.if_contains(key);
            return v && v->is_string() ? std::string(v->as_string()) : fallback;
        };
        const bool already =
            a.contains("already_revoked") && a.at("already_revoked").is_bool() && a.at("already_revoked").as_bool();
        json::object result{{"status", "succeeded"},
                            {"ca", ca},
                            {"error_code", 0},
                            {"serial", answered("serial", serial)},
                            {"reason", answered("reason", reason)},
                            {"already_revoked", already}};
        for (const char* key : {"revoked_at", "subject", "issuer"})
            if (const auto* v = a.if_contains(key)) result[key] = *v;
        if (already)
            result["note"] = "the certificate was already revoked (" + answered("reason", "reason not given") +
                             (a.contains("revoked_at") ? ", " + answered("revoked_at", "") : std::string()) + ")";
        const std::string what = "certificate " + std::string(result["serial"].as_string()) + " revoked by CA '" + ca + "'" +
                                 (already ? " (it already was)" : "");
        host_.log(CC_EV_RevokeSuccess, CC_LEVEL_INFO, what, id,
                  json::serialize(json::object{{"ca", ca}, {"batch", outcome.batch}}));
        deliveries_.succeeded(
            id, what, json::serialize(json::object{{"serial", result["serial"]}, {"ca", ca}, {"already_revoked", already}}));
        return json::serialize(result);
    }

    void jobs_report(const JobsReport& r) override {
        static constexpr certconn::sdk::BatchEvents kBatch{CC_EV_RevokeDownloadSuccess, CC_EV_RevokeDownloadFailure,
                                                           CC_EV_RevokeUploadSuccess, "revocation requests"};
        kBatch.log(host_, r.kind, r.tenant, r.job_ids.size(), r.message);
    }

    void result_delivered(const std::string& job_id, bool delivered, const std::string& message) override {
        deliveries_.delivered(job_id, delivered, message);
    }

private:
    static std::size_t size(certconn::sdk::Host& host) {
        const auto c = json::parse(host.config_json()).as_object();
        return c.contains("batch_size") ? static_cast<std::size_t>(c.at("batch_size").as_int64()) : 100;
    }
    static std::chrono::milliseconds window(certconn::sdk::Host& host) {
        const auto c = json::parse(host.config_json()).as_object();
        return std::chrono::milliseconds(c.contains("batch_window_ms") ? c.at("batch_window_ms").as_int64() : 0);
    }

    std::string fail(const std::string& id, const std::string& ca, const std::string& serial, cc_status status,
                     const std::string& message) {
        const char* name = certconn::sdk::status_name(status);
        const int code = intune_code(status);
        host_.log(CC_EV_RevokeFailure, CC_LEVEL_ERROR, "revocation failed: " + message, id);
        host_.log(CC_EV_RevokeRequestFailure, CC_LEVEL_ERROR,
                  "revocation of " + (serial.empty() ? "?" : serial) + " failed: " + message, id,
                  json::serialize(json::object{{"code", name}, {"error_code", code}, {"ca", ca}}));
        return json::serialize(json::object{{"status", "failed"},
                                            {"ca", ca},
                                            {"serial", serial},
                                            {"error_code", code},
                                            {"error", json::object{{"code", name},
                                                                   {"message", message},
                                                                   {"error_code", code},
                                                                   {"retryable", CC_STATUS_IS_RETRYABLE(status) != 0}}}});
    }

    certconn::sdk::Host& host_;
    Batcher batcher_;
    std::string default_ca_;
    certconn::sdk::DeliveryEvents deliveries_;
};

}  // namespace

CERTCONN_PLUGIN(RevokeFeature, "revoke", "0.1.0", "2026-11-25",
                "Revokes certificates at their CA, in batches, and reports Intune result codes", kSchema)
