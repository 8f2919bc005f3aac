// tenant-local: the embedded tenant. A job queue (SQLite on one machine, PostgreSQL schema
// tenant_local for a fleet: certconn::store) fed over the host HTTP server
// (POST /tenant/v1/jobs, GET /tenant/v1/jobs/{id}) and the CLI; the protocol is specified in
// docs/tenant-protocol.md so another connector can speak it as a client.
#include "JobCommands.hpp"
#include "JobQueue.hpp"
#include "ScepLedger.hpp"

#include <certconn/crypto.hpp>
#include <certconn/sdk.hpp>
#include <certconn/time.hpp>

#include <boost/json.hpp>

#include <mutex>

namespace {

namespace json = boost::json;
using certconn::sdk::Error;
using certconn::sdk::HttpRequest;
using certconn::sdk::HttpResponse;

constexpr const char* kSchema = R"json({"type":"table","keys":{
  "scep_challenges": {"type":"table","values":{"type":"string","secret":true},
    "description":"static SCEP challenge per SCEP profile name"},
  "allow_renewal": {"type":"boolean",
    "description":"SCEP renewals (requests authorised by the device's certificate, no challenge) are allowed (default true); false vetoes every renewal"}
}})json";

HttpResponse json_response(int status, const json::value& body) {
    return {status, {{"Content-Type", "application/json"}}, json::serialize(body)};
}

HttpResponse problem(int status, const std::string& message) {
    return json_response(status, json::object{{"error", message}});
}

class LocalTenant final : public certconn::sdk::TenantPlugin {
public:
    explicit LocalTenant(certconn::sdk::Host& host)
        : host_(host),
          queue_(certconn::sql::Options::for_plugin(host, "tenant_local", "jobs.db"), instance_id(host)),
          scep_(certconn::sql::Options::for_plugin(host, "tenant_local", "scep.db"), static_challenges(host)) {
        // The host admits only callers holding the scope (the admin socket, or a configured
        // token or client certificate: docs/security.md) before these handlers run.
        host.route("POST", "/tenant/v1/jobs", "jobs:submit",
                   [this](const HttpRequest& r) { return guard(r, [&] { return submit(r); }); });
        host.route("GET", "/tenant/v1/jobs/", "jobs:read",
                   [this](const HttpRequest& r) { return guard(r, [&] { return show(r); }); });
        host.route("POST", "/tenant/v1/scep/challenges", "scep:challenge",
                   [this](const HttpRequest& r) { return guard(r, [&] { return challenge(r); }); });
        certconn::tenant_local::register_job_commands(host, queue_, scep_);
    }

    std::string claim_jobs(const std::string& features_json, uint32_t max_jobs, uint32_t lease_seconds) override {
        std::vector<std::string> features;
        const json::value parsed = json::parse(features_json);
        for (const auto& f : parsed.as_array())
            features.emplace_back(f.as_string());
        json::array out;
        for (const auto& job : queue_.claim(features, max_jobs, lease_seconds))
            out.push_back(json::object{
                {"id", job.id}, {"feature", job.feature}, {"request", json::parse(job.request)}, {"claim", job.attempts}});
        return json::serialize(out);
    }

    void complete_job(const std::string& job_id, const std::string& result_json) override {
        std::error_code ec;
        json::value result = json::parse(result_json, ec);
        if (ec || !result.is_object())
            throw Error(CC_ERR_INVALID_ARGUMENT, "result of job '" + job_id + "' is not a JSON object");
        const auto* status = result.as_object().if_contains("status");
        const std::string s = status && status->is_string() ? std::string(status->as_string()) : "";
        if (s != "succeeded" && s != "failed")
            throw Error(CC_ERR_INVALID_ARGUMENT, "result of job '" + job_id + "' has no status 'succeeded' or 'failed'");
        // The host copies the job's "claim" (the fencing token) into its result: only that claim
        // may complete the job. Without one, the first result stands.
        std::optional<std::int64_t> claim;
        if (const auto* c = result.as_object().if_contains("claim")) {
            if (!c->is_int64() || c->as_int64() < 1)
                throw Error(CC_ERR_INVALID_ARGUMENT,
                            "result of job '" + job_id + "': \"claim\" must be the claim number (1 or more)");
            claim = c->as_int64();
        }
        queue_.complete(job_id, s, result_json, claim);  // a repeated report is a no-op
    }

    std::string call(const std::string& operation, const std::string& request_json) override {
        std::error_code ec;
        json::value request = json::parse(request_json, ec);
        if (ec || !request.is_object()) throw Error(CC_ERR_INVALID_ARGUMENT, operation + ": request is not a JSON object");
        if (operation == "scep.validate") {
            const auto* renewal = request.as_object().if_contains("renewal");
            if (renewal && renewal->is_bool() && renewal->as_bool()) {
                const json::value config = json::parse(host_.config_json());
                const auto* allow = config.as_object().if_contains("allow_renewal");
                return json::serialize(
                    scep_.validate_renewal(request.as_object(), !allow || !allow->is_bool() || allow->as_bool()));
            }
            return json::serialize(scep_.validate(request.as_object()));
        }
        if (operation == "jobs.renew_lease") {  // {"id", "claim", "lease_seconds"}: docs/tenant-protocol.md
            const json::object& o = request.as_object();
            const auto* id = o.if_contains("id");
            const auto* claim = o.if_contains("claim");
            const auto* lease = o.if_contains("lease_seconds");
            if (!id || !id->is_string() || !claim || !claim->is_int64() || !lease || !lease->is_int64() ||
                lease->as_int64() < 1 || lease->as_int64() > std::int64_t{7} * 86400)
                throw Error(CC_ERR_INVALID_ARGUMENT,
                            "jobs.renew_lease needs \"id\", the \"claim\" it was handed and \"lease_seconds\" (1 .. 604800)");
            queue_.renew(std::string(id->as_string()), claim->as_int64(), static_cast<uint32_t>(lease->as_int64()));
            return json::serialize(json::object{{"id", id->as_string()}, {"lease_seconds", lease->as_int64()}});
        }
        if (operation == "jobs.stats") {  // `status --fleet`: docs/tenant-protocol.md
            if (!request.as_object().empty()) throw Error(CC_ERR_INVALID_ARGUMENT, "jobs.stats takes an empty request {}");
            return json::serialize(queue_.stats().to_json());
        }
        if (operation == "scep.notify_success" || operation == "scep.notify_failure") {
            scep_.record(operation.substr(12), request.as_object());
            return R"({"code":"Success"})";
        }
        if (operation == "tenant.heartbeat") {  // the host's heartbeat: shown by health (status)
            std::lock_guard lock(heartbeat_mutex_);
            last_heartbeat_ = certconn::sdk::utc_iso8601(std::chrono::system_clock::now(), false);
            return "{}";
        }
        if (operation == "tenant.check") {  // `certconnector tenant check`: the queue answers
            const auto queued = queue_.count("queued");
            return json::serialize(json::object{
                {"ok", true},
                {"checks",
                 json::array{json::object{{"name", "job queue"},
                                          {"ok", true},
                                          {"detail", queue_.describe() + ", " + std::to_string(queued) + " queued"}}}}});
        }
        throw Error(CC_ERR_NOT_SUPPORTED, "tenant-local has no operation '" + operation + "'");
    }

    std::string health() override {
        std::string heartbeat;
        {
            std::lock_guard lock(heartbeat_mutex_);
            heartbeat = last_heartbeat_;
        }
        bool healthy = true;
        std::string detail;
        try {
            detail = "job queue: " + std::to_string(queue_.count("queued")) + " queued, " +
                     std::to_string(queue_.count("running")) + " running";
        } catch (const Error& e) {  // the store is unreachable: say so instead of failing the probe
            healthy = false;
            detail = e.what();
        }
        return json::serialize(
            json::object{{"healthy", healthy},
                         {"detail", detail},
                         {"last_heartbeat", heartbeat.empty() ? json::value(nullptr) : json::value(heartbeat)}});
    }

private:
    static std::string instance_id(certconn::sdk::Host& host) {
        std::error_code ec;
        const json::value config = json::parse(host.store_config_json(), ec);
        if (!ec && config.is_object())
            if (const auto* id = config.as_object().if_contains("instance_id"); id && id->is_string() && !id->as_string().empty())
                return std::string(id->as_string());
        return "local";
    }

    static std::map<std::string, std::string> static_challenges(certconn::sdk::Host& host) {
        std::map<std::string, std::string> out;
        const auto config = json::parse(host.config_json()).as_object();
        if (const auto* c = config.if_contains("scep_challenges"))
            for (const auto& [profile, value] : c->as_object())
                out[std::string(profile)] = std::string(value.as_string());
        return out;
    }

    template <class Fn>
    HttpResponse guard(const HttpRequest&, Fn&& fn) {
        try {
            return fn();
        } catch (const Error& e) {
            const int status = e.code() == CC_ERR_CONFLICT           ? 409
                               : e.code() == CC_ERR_NOT_FOUND        ? 404
                               : e.code() == CC_ERR_INVALID_ARGUMENT ? 400
                               : CC_STATUS_IS_RETRYABLE(e.code())    ? 503
                                                                     : 500;
            HttpResponse response = problem(status, e.what());
            if (status == 503) response.headers.emplace_back("Retry-After", "5");
            return response;
        }
    }

    HttpResponse submit(const HttpRequest& r) {
        std::error_code ec;
        json::value doc = json::parse(r.body, ec);
        if (ec || !doc.is_object()) return problem(400, "the body must be a JSON object: {\"feature\": ..., \"request\": {...}}");
        const json::object& o = doc.get_object();
        const auto* feature = o.if_contains("feature");
        if (!feature || !feature->is_string()) return problem(400, "'feature' must name a feature, e.g. \"pkcs\"");
        const auto* request = o.if_contains("request");
        if (!request || !request->is_object()) return problem(400, "'request' must be a JSON object");
        std::string id;
        if (const auto* given = o.if_contains("id")) {
            if (!given->is_string()) return problem(400, "'id' must match [A-Za-z0-9._:-]{1,128}");
            id = given->as_string().c_str();
        } else {
            id = certconn::crypto::uuid4();
        }
        certconn::tenant_local::check_job_fields(std::string(feature->as_string()), id);
        for (const auto& [key, value] : o)
            if (key != "feature" && key != "request" && key != "id")
                return problem(400, "unknown field '" + std::string(key) + "' (expected feature, request, id)");
        bool created = false;
        const auto job = queue_.submit(std::string(feature->as_string()), json::serialize(*request), id, &created);
        return json_response(created ? 201 : 200, job.to_json(false));
    }

    HttpResponse challenge(const HttpRequest& r) {
        std::error_code ec;
        json::value doc = json::parse(r.body, ec);
        if (ec || !doc.is_object())
            return problem(
                400,
                "the body must be a JSON object: {\"profile\": ..., \"subject\": ..., \"sans\": [...], \"ttl_seconds\": ...}");
        const json::object& o = doc.get_object();
        const auto* profile = o.if_contains("profile");
        if (!profile || !profile->is_string() || profile->as_string().empty())
            return problem(400, "'profile' (the SCEP profile) is required");
        std::string subject;
        if (const auto* s = o.if_contains("subject")) {
            if (!s->is_string()) return problem(400, "'subject' must be a string");
            subject = s->as_string().c_str();
        }
        std::vector<std::string> sans;
        if (const auto* list = o.if_contains("sans")) {
            if (!list->is_array()) return problem(400, "'sans' must be an array of \"type:value\" strings");
            for (const auto& s : list->as_array()) {
                if (!s.is_string()) return problem(400, "'sans' must be an array of \"type:value\" strings");
                sans.emplace_back(s.as_string());
            }
        }
        std::int64_t ttl = 3600;
        if (const auto* t = o.if_contains("ttl_seconds")) {
            if (!t->is_int64() || t->as_int64() < 60 || t->as_int64() > std::int64_t{7} * 86400)
                return problem(400, "'ttl_seconds' must be 60 .. 604800");
            ttl = t->as_int64();
        }
        try {
            return json_response(201, scep_.create_challenge(std::string(profile->as_string()), subject, sans, ttl));
        } catch (const std::invalid_argument& e) {
            return problem(400, e.what());
        }
    }

    HttpResponse show(const HttpRequest& r) {
        const std::string id(r.path.substr(std::string_view("/tenant/v1/jobs/").size()));
        auto job = queue_.find(id);
        if (!job) return problem(404, "no job '" + id + "'");
        return json_response(200, job->to_json(true));
    }

    certconn::sdk::Host& host_;
    std::mutex heartbeat_mutex_;
    std::string last_heartbeat_;  // when the host last sent its heartbeat
    certconn::tenant_local::JobQueue queue_;
    certconn::tenant_local::ScepLedger scep_;
};

}  // namespace

CERTCONN_PLUGIN(LocalTenant, "local", "0.2.0", "2026-11-24",
                "Embedded tenant: job queue (SQLite or a shared PostgreSQL) with REST intake", kSchema)
