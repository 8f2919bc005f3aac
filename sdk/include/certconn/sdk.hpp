// certconnector plugin SDK — header-only C++ adapter over abi.h.
//
// A plugin author derives one class from FeaturePlugin, CaPlugin or TenantPlugin, gives it a
// constructor taking `certconn::sdk::Host&`, and exports it with one macro:
//
//     class EchoFeature final : public certconn::sdk::FeaturePlugin {
//     public:
//         explicit EchoFeature(certconn::sdk::Host& host) : host_(host) {}
//         std::string run_job(const std::string& job) override { return job; }
//     private:
//         certconn::sdk::Host& host_;
//     };
//     CERTCONN_PLUGIN(EchoFeature, "echo", "1.0.0", "2026-11-24", "Echoes jobs", nullptr)
//
// Every call the host makes into the plugin goes through a noexcept thunk here that turns an
// exception into a cc_error: throw certconn::sdk::Error(CC_ERR_UNAVAILABLE, "...") to choose
// the status; any other exception becomes CC_ERR_INTERNAL with its what() text.
#pragma once

#include <certconn/abi.h>
#include <certconn/events.h>

#include <boost/dll/alias.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace certconn::sdk {

/// An error with a cc_status; thrown by plugin code and by Host calls that fail.
class Error : public std::runtime_error {
public:
    Error(cc_status code, const std::string& message) : std::runtime_error(message), code_(code) {}
    cc_status code() const noexcept { return code_; }
    bool retryable() const noexcept { return CC_STATUS_IS_RETRYABLE(code_); }

private:
    cc_status code_;
};

/// The tenant protocol's name of a status: a failed result's "error.code".
inline const char* status_name(cc_status s) noexcept {
    switch (s) {
        case CC_OK: return "ok";
        case CC_ERR_INVALID_ARGUMENT: return "invalid_argument";
        case CC_ERR_NOT_FOUND: return "not_found";
        case CC_ERR_CONFLICT: return "conflict";
        case CC_ERR_NOT_SUPPORTED: return "not_supported";
        case CC_ERR_DENIED: return "denied";
        case CC_ERR_UNAVAILABLE: return "unavailable";
        case CC_ERR_TIMEOUT: return "timeout";
        case CC_ERR_BUSY: return "busy";
        case CC_ERR_PENDING: return "pending";
        default: return "internal";
    }
}

namespace detail {

inline int append_to_string(void* ctx, const char* data, size_t len) {
    static_cast<std::string*>(ctx)->append(data, len);
    return 0;
}

inline cc_sink sink_for(std::string& out) {
    return cc_sink{&out, &append_to_string};
}

inline void write_sink(cc_sink* sink, std::string_view data) {
    if (sink == nullptr || sink->write == nullptr) return;
    if (sink->write(sink->ctx, data.data(), data.size()) != 0)
        throw Error(CC_ERR_INVALID_ARGUMENT, "output larger than the host accepts");
}

inline void set_error(cc_error* error, int code, std::string_view message) noexcept {
    if (error == nullptr || error->struct_size < sizeof(cc_error)) return;
    error->code = code;
    const size_t n = std::min(message.size(), sizeof(error->message) - 1);
    std::memcpy(error->message, message.data(), n);
    error->message[n] = '\0';
}

// Runs `fn`, converting every exception into a status and a filled cc_error.
template <class Fn>
int guarded(cc_error* error, Fn&& fn) noexcept {
    try {
        fn();
        return CC_OK;
    } catch (const Error& e) {
        set_error(error, e.code(), e.what());
        return e.code();
    } catch (const std::exception& e) {
        set_error(error, CC_ERR_INTERNAL, e.what());
        return CC_ERR_INTERNAL;
    } catch (...) {
        set_error(error, CC_ERR_INTERNAL, "unknown exception");
        return CC_ERR_INTERNAL;
    }
}

inline cc_error make_error() noexcept {
    cc_error e{};
    e.struct_size = sizeof(cc_error);
    return e;
}

inline void throw_if_failed(int status, const cc_error& error, std::string_view what) {
    if (status == CC_OK) return;
    std::string message(what);
    message += ": ";
    message += error.message[0] != '\0' ? error.message : "failed without a message";
    throw Error(static_cast<cc_status>(status), message);
}

}  // namespace detail

/// Who sent a request, as the host authenticated it (cc_request_origin).
enum class Origin {
    anonymous = CC_ORIGIN_ANONYMOUS,
    token = CC_ORIGIN_TOKEN,
    client_certificate = CC_ORIGIN_CLIENT_CERTIFICATE,
    admin_socket = CC_ORIGIN_ADMIN_SOCKET
};

/// The scope argument of Host::route for a route anyone may call (devices, CRL/OCSP clients).
inline constexpr std::string_view kPublic{};

/// One HTTP request as a route handler sees it. Views are valid during the handler call.
struct HttpRequest {
    std::string_view method;
    std::string_view path;
    std::string_view query;
    std::string_view body;
    std::vector<std::pair<std::string_view, std::string_view>> headers;
    std::string_view remote_address;
    bool local = false;  // the admin socket (kept for 1.0 plugins; prefer origin)
    Origin origin = Origin::anonymous;
    std::string_view principal;  // "token:<name>", "certificate:<name>", "uid:<n>"; empty when anonymous
    std::vector<std::string_view> scopes;

    /// Whether the caller holds `scope` (the admin socket holds every scope).
    bool has_scope(std::string_view scope) const {
        return std::any_of(scopes.begin(), scopes.end(), [&](std::string_view s) { return s == scope || s == CC_SCOPE_ALL; });
    }

    /// The first header named `name` (case-insensitive), or an empty view.
    std::string_view header(std::string_view name) const {
        for (const auto& [key, value] : headers) {
            if (key.size() == name.size() &&
                std::equal(key.begin(), key.end(), name.begin(), [](char a, char b) { return (a | 0x20) == (b | 0x20); }))
                return value;
        }
        return {};
    }
};

struct HttpResponse {
    int status = 200;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;
};

using RouteHandler = std::function<HttpResponse(const HttpRequest&)>;

/// The host's services as the plugin sees them. Thread-safe; lives as long as the plugin.
class Host {
public:
    explicit Host(const cc_host_services* services) : s_(services) {}
    Host(const Host&) = delete;
    Host& operator=(const Host&) = delete;

    /// Logs event `id` (events.h). `fields_json` is a JSON object or empty.
    void log(uint32_t id, cc_log_level level, std::string_view message, std::string_view request_id = {},
             std::string_view fields_json = {}) const noexcept {
        try {
            const std::string msg(message), req(request_id), fields(fields_json);
            s_->log_event(s_->host_ctx, id, level, req.empty() ? nullptr : req.c_str(), msg.c_str(),
                          fields.empty() ? nullptr : fields.c_str());
        } catch (...) {
            // Logging never throws into plugin code.
        }
    }

    /// This plugin's configuration section, as a JSON object.
    std::string config_json() const {
        std::string out;
        cc_sink sink = detail::sink_for(out);
        cc_error error = detail::make_error();
        detail::throw_if_failed(s_->config_json(s_->host_ctx, &sink, &error), error, "config");
        return out;
    }

    std::filesystem::path state_dir() const { return s_->state_dir(s_->host_ctx); }

    /// Where shared state lives (abi.h, store_config): a JSON object with "backend" ("sqlite" or
    /// "postgresql"), "url", "password" and "instance_id". A host older than 1.5 keeps
    /// everything in SQLite: {"backend": "sqlite"}. certconn/sql.hpp opens a store from it.
    std::string store_config_json() const {
        if (s_->struct_size <= offsetof(cc_host_services, store_config) || s_->store_config == nullptr)
            return R"({"backend":"sqlite"})";
        std::string out;
        cc_sink sink = detail::sink_for(out);
        cc_error error = detail::make_error();
        detail::throw_if_failed(s_->store_config(s_->host_ctx, &sink, &error), error, "store configuration");
        return out;
    }

    /// Issues through the configured CA `ca_name`; returns the CA's JSON answer.
    std::string ca_issue(const std::string& ca_name, const std::string& request_json) const {
        return call_out(s_->ca_issue, ca_name, request_json, "CA '" + ca_name + "' issue");
    }
    std::string ca_revoke(const std::string& ca_name, const std::string& request_json) const {
        return call_out(s_->ca_revoke, ca_name, request_json, "CA '" + ca_name + "' revoke");
    }
    /// A read-only question to CA `ca_name` (cc_ca_api.query): {"op": "certificate", "serial"}, {"op": "crl"}.
    std::string ca_query(const std::string& ca_name, const std::string& request_json) const {
        if (s_->struct_size <= offsetof(cc_host_services, ca_query) || s_->ca_query == nullptr)
            throw Error(CC_ERR_NOT_SUPPORTED, "this host cannot query CAs (it predates ca_query)");
        return call_out(s_->ca_query, ca_name, request_json, "CA '" + ca_name + "' query");
    }
    /// A call to the default tenant (abi.h, tenant_call_to).
    std::string tenant_call(const std::string& operation, const std::string& request_json) const {
        return call_out(s_->tenant_call, operation, request_json, "tenant call '" + operation + "'");
    }
    /// A call to tenant `tenant` ([tenant.<name>]; "" = the default tenant).
    std::string tenant_call(const std::string& tenant, const std::string& operation, const std::string& request_json) const {
        if (s_->struct_size <= offsetof(cc_host_services, tenant_call_to) || s_->tenant_call_to == nullptr) {
            if (!tenant.empty() && tenant != "default")
                throw Error(CC_ERR_NOT_SUPPORTED, "this host (SDK < 1.4) has one tenant; it cannot call tenant '" + tenant + "'");
            return tenant_call(operation, request_json);
        }
        std::string out;
        cc_sink sink = detail::sink_for(out);
        cc_error error = detail::make_error();
        detail::throw_if_failed(
            s_->tenant_call_to(s_->host_ctx, tenant.c_str(), operation.c_str(), request_json.c_str(), &sink, &error), error,
            "tenant " + (tenant.empty() ? std::string("(default)") : "'" + tenant + "'") + " call '" + operation + "'");
        return out;
    }

    /// A must-deliver tenant call: stored durably by the host, delivered in order with retries
    /// (abi.h, tenant_notify). Throws when it could not be stored.
    struct Notification {
        std::string tenant;  ///< "" = the default tenant
        std::string operation;
        std::string key;  ///< idempotency key, unique per tenant
        std::string request_json;
        std::string request_id;  ///< for the events
        uint32_t event_delivered = 0, event_retry = 0, event_refused = 0, event_done = 0;
        std::string done_message;
    };
    void notify_tenant(const Notification& n) const {
        if (s_->struct_size <= offsetof(cc_host_services, tenant_notify) || s_->tenant_notify == nullptr)
            throw Error(CC_ERR_NOT_SUPPORTED, "this host (SDK < 1.4) has no tenant outbox");
        const cc_tenant_notification c{sizeof(cc_tenant_notification),
                                       n.tenant.c_str(),
                                       n.operation.c_str(),
                                       n.key.c_str(),
                                       n.request_json.c_str(),
                                       n.request_id.empty() ? nullptr : n.request_id.c_str(),
                                       n.event_delivered,
                                       n.event_retry,
                                       n.event_refused,
                                       n.event_done,
                                       n.done_message.c_str()};
        cc_error error = detail::make_error();
        detail::throw_if_failed(s_->tenant_notify(s_->host_ctx, &c, &error), error, "tenant notification '" + n.operation + "'");
    }
    /// Whether notify_tenant() is available (a 1.4+ host).
    bool has_tenant_outbox() const {
        return s_->struct_size > offsetof(cc_host_services, tenant_notify) && s_->tenant_notify != nullptr;
    }

    /// RSA-OAEP decryption with connector key `key_name`; the key stays in the host.
    std::string key_decrypt(const std::string& key_name, const std::string& padding, std::string_view ciphertext) const {
        if (s_->struct_size <= offsetof(cc_host_services, key_decrypt) || s_->key_decrypt == nullptr)
            throw Error(CC_ERR_NOT_SUPPORTED, "this host has no connector keys (it predates key_decrypt)");
        std::string out;
        cc_sink sink = detail::sink_for(out);
        cc_error error = detail::make_error();
        detail::throw_if_failed(
            s_->key_decrypt(s_->host_ctx, key_name.c_str(), padding.c_str(), ciphertext.data(), ciphertext.size(), &sink, &error),
            error, "connector key '" + key_name + "'");
        return out;
    }

    /// Serves `method` on `path` (prefix when it ends in '/') to callers holding `scope`; the
    /// host refuses the others (401/403) before the handler runs. `kPublic`: anyone. Only from
    /// the constructor.
    void route(const std::string& method, const std::string& path, std::string_view scope, RouteHandler handler) {
        cc_error error = detail::make_error();
        const std::string scope_text(scope);
        if (s_->struct_size <= offsetof(cc_host_services, http_register) || s_->http_register == nullptr) {
            // A 1.0 host cannot enforce scopes: refuse rather than serve a privileged route openly.
            if (!scope_text.empty())
                throw Error(CC_ERR_NOT_SUPPORTED, "route " + method + " " + path + " needs scope '" + scope_text +
                                                      "', which this host (SDK 1.0) cannot enforce");
            routes_.push_back(std::move(handler));
            detail::throw_if_failed(
                s_->http_register_route(s_->host_ctx, method.c_str(), path.c_str(), &Host::dispatch, &routes_.back(), &error),
                error, "route " + method + " " + path);
            return;
        }
        routes_.push_back(std::move(handler));
        const cc_http_route route{sizeof(cc_http_route), method.c_str(),  path.c_str(),
                                  scope_text.c_str(),    &Host::dispatch, &routes_.back()};
        detail::throw_if_failed(s_->http_register(s_->host_ctx, &route, &error), error, "route " + method + " " + path);
    }
    /// A public route (anyone may call it): route(method, path, kPublic, handler).
    void route(const std::string& method, const std::string& path, RouteHandler handler) {
        route(method, path, kPublic, std::move(handler));
    }

    /// Turns the JSON arguments of an admin command into its reply JSON (see abi.h and
    /// certconn/admin.hpp for helpers). Runs on a host worker thread.
    using AdminHandler = std::function<std::string(std::string_view arguments_json)>;

    /// Registers administrative command `name` ("scep approve"), which callers holding `scope`
    /// may run through `certconnector NAME ...`. Only from the constructor.
    void admin_command(const std::string& name, const std::string& summary, const std::string& scope,
                       const std::string& arguments_json, AdminHandler handler) {
        if (s_->struct_size <= offsetof(cc_host_services, admin_register_command) || s_->admin_register_command == nullptr)
            throw Error(CC_ERR_NOT_SUPPORTED, "this host (SDK 1.0) has no administrative commands");
        commands_.push_back(std::move(handler));
        const cc_admin_command command{sizeof(cc_admin_command), name.c_str(),  summary.c_str(),
                                       arguments_json.c_str(),   scope.c_str(), &Host::run_command,
                                       &commands_.back()};
        cc_error error = detail::make_error();
        detail::throw_if_failed(s_->admin_register_command(s_->host_ctx, &command, &error), error,
                                "admin command '" + name + "'");
    }

private:
    using OutCall = int (*)(void*, const char*, const char*, cc_sink*, cc_error*);

    std::string call_out(OutCall fn, const std::string& target, const std::string& request, const std::string& what) const {
        std::string out;
        cc_sink sink = detail::sink_for(out);
        cc_error error = detail::make_error();
        detail::throw_if_failed(fn(s_->host_ctx, target.c_str(), request.c_str(), &sink, &error), error, what);
        return out;
    }

    static int dispatch(void* ctx, const cc_http_request* req, const cc_http_response* resp, cc_error* error) noexcept {
        return detail::guarded(error, [&] {
            HttpRequest request;
            request.method = req->method;
            request.path = req->path;
            request.query = req->query;
            request.body = std::string_view(req->body, req->body_len);
            request.remote_address = req->remote_address;
            request.local = req->struct_size > offsetof(cc_http_request, local) && req->local != 0;
            if (req->struct_size > offsetof(cc_http_request, scope_count)) {
                request.origin = static_cast<Origin>(req->origin);
                request.principal = req->principal != nullptr ? req->principal : "";
                for (size_t i = 0; i < req->scope_count; ++i)
                    request.scopes.emplace_back(req->scopes[i]);
            }
            request.headers.reserve(req->header_count);
            for (size_t i = 0; i < req->header_count; ++i)
                request.headers.emplace_back(req->headers[i].name, req->headers[i].value);
            const HttpResponse response = (*static_cast<RouteHandler*>(ctx))(request);
            resp->set_status(resp->ctx, response.status);
            for (const auto& [name, value] : response.headers)
                resp->add_header(resp->ctx, name.c_str(), value.c_str());
            cc_sink body = resp->body;
            detail::write_sink(&body, response.body);
        });
    }

    static int run_command(void* ctx, const char* arguments, size_t len, cc_sink* reply, cc_error* error) noexcept {
        return detail::guarded(
            error, [&] { detail::write_sink(reply, (*static_cast<AdminHandler*>(ctx))(std::string_view(arguments, len))); });
    }

    const cc_host_services* s_;
    std::list<RouteHandler> routes_;    // stable addresses: handler_ctx points into it
    std::list<AdminHandler> commands_;  // likewise
};

/// Base of every plugin class.
class Plugin {
public:
    virtual ~Plugin() = default;
    /// JSON object {"healthy": bool, "detail": "..."} shown by `certconnector status`.
    virtual std::string health() { return R"({"healthy":true})"; }
    /// Hot-swap hand-over (abi.h, cc_plugin_api.quiesce): a plugin with background threads or
    /// exclusive files in its state directory stops and releases them here, within `deadline`,
    /// and keeps answering calls. The default does nothing (a stateless plugin).
    virtual void quiesce(std::chrono::milliseconds /*deadline*/) {}
    /// The hand-over was abandoned: restart what quiesce stopped.
    virtual void resume() {}
};

/// The delivery events of a feature's jobs: the Admin "request fulfilled" event is written only
/// once the tenant has the result (with the "uploaded" event); a failed delivery writes the
/// "upload failed" event. Call succeeded() from run_job, delivered() from result_delivered.
class DeliveryEvents {
public:
    DeliveryEvents(Host& host, uint32_t uploaded, uint32_t upload_failed, uint32_t admin_success)
        : host_(host), uploaded_(uploaded), upload_failed_(upload_failed), admin_success_(admin_success) {}

    void succeeded(const std::string& job_id, std::string message, std::string fields_json) {
        std::lock_guard lock(mutex_);
        if (pending_.size() > 100000) pending_.clear();  // results never reported back: stay bounded
        pending_[job_id] = {std::move(message), std::move(fields_json)};
    }

    void delivered(const std::string& job_id, bool delivered, const std::string& why) {
        std::pair<std::string, std::string> success;
        {
            std::lock_guard lock(mutex_);
            if (auto it = pending_.find(job_id); it != pending_.end()) {
                success = it->second;
                if (delivered) pending_.erase(it);
            }
        }
        if (!delivered) {
            host_.log(upload_failed_, CC_LEVEL_WARNING, "uploading the result failed (will retry): " + why, job_id);
            return;
        }
        host_.log(uploaded_, CC_LEVEL_INFO, "result uploaded", job_id);
        if (!success.first.empty()) host_.log(admin_success_, CC_LEVEL_INFO, success.first, job_id, success.second);
    }

private:
    Host& host_;
    const uint32_t uploaded_, upload_failed_, admin_success_;
    std::mutex mutex_;
    std::map<std::string, std::pair<std::string, std::string>> pending_;  // job id -> (message, fields)
};

/// The batch events of a feature (cc_feature_api.jobs_report): "downloaded", "download failed"
/// and "uploaded" (e.g. 1002, 1003, 1100 for PKCS). `what` names the jobs: "PKCS requests".
struct BatchEvents {
    uint32_t downloaded, download_failed, uploaded;
    const char* what;

    /// Writes the event of a batch of `count` jobs of kind `kind` for tenant `tenant`.
    void log(Host& host, cc_jobs_report_kind kind, const std::string& tenant, std::size_t count,
             const std::string& message = {}) const {
        // Tenant names are [a-z][a-z0-9-]*: nothing to escape.
        const std::string fields = "{\"tenant\":\"" + tenant + "\",\"count\":" + std::to_string(count) + "}";
        const std::string n = std::to_string(count);
        switch (kind) {
            case CC_JOBS_DOWNLOADED:
                host.log(downloaded, CC_LEVEL_INFO, "downloaded " + n + " " + what + " from tenant '" + tenant + "'", {}, fields);
                break;
            case CC_JOBS_DOWNLOAD_FAILED:
                host.log(download_failed, CC_LEVEL_WARNING,
                         std::string("downloading ") + what + " from tenant '" + tenant + "' failed: " + message, {}, fields);
                break;
            case CC_JOBS_UPLOADED:
                host.log(uploaded, CC_LEVEL_INFO, "uploaded the results of " + n + " " + what + " to tenant '" + tenant + "'", {},
                         fields);
                break;
        }
    }
};

class FeaturePlugin : public Plugin {
public:
    /// Processes one job and returns its result JSON. Throw Error with a retryable status to
    /// have the host run the job again later.
    virtual std::string run_job(const std::string& job_json) = 0;
    /// The host delivered (or failed to deliver) the result of `job_id` to the tenant.
    virtual void result_delivered(const std::string& job_id, bool delivered, const std::string& message) {}
    /// A batch of this feature's jobs was downloaded from (or failed to download from, or was
    /// uploaded to) `report.tenant`: write the feature's batch events (abi.h, jobs_report).
    struct JobsReport {
        cc_jobs_report_kind kind;
        std::string tenant;
        std::vector<std::string> job_ids;
        std::vector<std::string> job_documents;  ///< CC_JOBS_DOWNLOADED only
        std::string message;
    };
    virtual void jobs_report(const JobsReport& report) {}
};

class CaPlugin : public Plugin {
public:
    /// One configured CA ([ca.<name>]) served by this plugin.
    class Ca {
    public:
        virtual ~Ca() = default;
        virtual std::string issue(const std::string& request_json) = 0;
        virtual std::string revoke(const std::string& request_json) = 0;
        /// {"chain_pem": "..."} and whatever else identifies this CA.
        virtual std::string describe() { throw Error(CC_ERR_NOT_SUPPORTED, "this CA cannot describe itself"); }
        /// Read-only questions (see cc_ca_api.query in abi.h: certificate, crl, and since 1.3 crl with
        /// "level", ocsp, health). The host publishes /crl/, /ca/, /ocsp/ for every CA from them.
        virtual std::string query(const std::string& request_json) {
            throw Error(CC_ERR_NOT_SUPPORTED, "this CA answers no queries");
        }
    };
    virtual std::unique_ptr<Ca> open(const std::string& ca_name, const std::string& config_json) = 0;
};

class TenantPlugin : public Plugin {
public:
    virtual std::string claim_jobs(const std::string& features_json, uint32_t max_jobs, uint32_t lease_seconds) = 0;
    virtual void complete_job(const std::string& job_id, const std::string& result_json) = 0;
    virtual std::string call(const std::string& operation, const std::string& request_json) = 0;
};

namespace detail {

template <class P>
constexpr cc_plugin_kind kind_of() {
    if constexpr (std::is_base_of_v<FeaturePlugin, P>)
        return CC_KIND_FEATURE;
    else if constexpr (std::is_base_of_v<CaPlugin, P>)
        return CC_KIND_CA;
    else {
        static_assert(std::is_base_of_v<TenantPlugin, P>, "a plugin class derives from FeaturePlugin, CaPlugin or TenantPlugin");
        return CC_KIND_TENANT;
    }
}

// What the opaque `instance` pointer holds. Host is declared first: the plugin object (which
// may hold a Host&) is destroyed before it.
template <class P>
struct Instance {
    explicit Instance(const cc_host_services* services) : host(services), plugin(host) {}
    Host host;
    P plugin;
};

template <class P>
P& plugin_of(void* instance) {
    return static_cast<Instance<P>*>(instance)->plugin;
}

template <class P>
struct Thunks {
    static void destroy(void* instance) noexcept { delete static_cast<Instance<P>*>(instance); }
    static int quiesce(void* instance, uint32_t deadline_ms, cc_error* error) noexcept {
        return guarded(error, [&] { plugin_of<P>(instance).quiesce(std::chrono::milliseconds(deadline_ms)); });
    }
    static void resume(void* instance) noexcept {
        try {
            plugin_of<P>(instance).resume();
        } catch (...) {
        }
    }

    static int health(void* instance, cc_sink* out, cc_error* error) noexcept {
        return guarded(error, [&] { write_sink(out, plugin_of<P>(instance).health()); });
    }
    static int run_job(void* instance, const char* job, cc_sink* out, cc_error* error) noexcept {
        return guarded(error, [&] { write_sink(out, plugin_of<P>(instance).run_job(job)); });
    }
    static int run_job_len(void* instance, const char* job, size_t len, cc_sink* out, cc_error* error) noexcept {
        return guarded(error, [&] { write_sink(out, plugin_of<P>(instance).run_job(std::string(job, len))); });
    }
    static int ca_open(void* instance, const char* name, const char* config, void** handle, cc_error* error) noexcept {
        return guarded(error, [&] { *handle = plugin_of<P>(instance).open(name, config).release(); });
    }
    static void ca_close(void*, void* handle) noexcept { delete static_cast<CaPlugin::Ca*>(handle); }
    static int ca_issue(void*, void* handle, const char* req, cc_sink* out, cc_error* error) noexcept {
        return guarded(error, [&] { write_sink(out, static_cast<CaPlugin::Ca*>(handle)->issue(req)); });
    }
    static int ca_revoke(void*, void* handle, const char* req, cc_sink* out, cc_error* error) noexcept {
        return guarded(error, [&] { write_sink(out, static_cast<CaPlugin::Ca*>(handle)->revoke(req)); });
    }
    static void result_delivered(void* instance, const char* job_id, int delivered, const char* message) noexcept {
        try {
            plugin_of<P>(instance).result_delivered(job_id, delivered != 0, message ? message : "");
        } catch (...) {
        }
    }
    static void jobs_report(void* instance, const cc_jobs_report* r) noexcept {
        try {
            if (r == nullptr || r->struct_size < sizeof(cc_jobs_report)) return;
            FeaturePlugin::JobsReport report{
                static_cast<cc_jobs_report_kind>(r->kind), r->tenant ? r->tenant : "", {}, {}, r->message ? r->message : ""};
            for (size_t i = 0; i < r->job_count; ++i) {
                report.job_ids.emplace_back(r->job_ids[i]);
                if (r->job_documents != nullptr) report.job_documents.emplace_back(r->job_documents[i]);
            }
            plugin_of<P>(instance).jobs_report(report);
        } catch (...) {
        }
    }
    static int ca_describe(void*, void* handle, cc_sink* out, cc_error* error) noexcept {
        return guarded(error, [&] { write_sink(out, static_cast<CaPlugin::Ca*>(handle)->describe()); });
    }
    static int ca_query(void*, void* handle, const char* req, cc_sink* out, cc_error* error) noexcept {
        return guarded(error, [&] { write_sink(out, static_cast<CaPlugin::Ca*>(handle)->query(req)); });
    }
    static int claim_jobs(void* instance, const char* features, uint32_t max_jobs, uint32_t lease, cc_sink* out,
                          cc_error* error) noexcept {
        return guarded(error, [&] { write_sink(out, plugin_of<P>(instance).claim_jobs(features, max_jobs, lease)); });
    }
    static int complete_job(void* instance, const char* job_id, const char* result, cc_error* error) noexcept {
        return guarded(error, [&] { plugin_of<P>(instance).complete_job(job_id, result); });
    }
    static int call(void* instance, const char* op, const char* req, cc_sink* out, cc_error* error) noexcept {
        return guarded(error, [&] { write_sink(out, plugin_of<P>(instance).call(op, req)); });
    }
};

template <class P>
int init(const cc_host_services* host, cc_plugin_api* api, cc_error* error) noexcept {
    if (host == nullptr || api == nullptr || api->struct_size < sizeof(cc_plugin_api)) {
        set_error(error, CC_ERR_INVALID_ARGUMENT, "host passed an incompatible cc_plugin_api");
        return CC_ERR_INVALID_ARGUMENT;
    }
    using T = Thunks<P>;
    return guarded(error, [&] {
        auto instance = std::make_unique<Instance<P>>(host);
        api->destroy = &T::destroy;
        api->health = &T::health;
        api->quiesce = &T::quiesce;
        api->resume = &T::resume;
        api->feature = nullptr;
        api->ca = nullptr;
        api->tenant = nullptr;
        // Only the table of the plugin's own kind is instantiated.
        if constexpr (kind_of<P>() == CC_KIND_FEATURE) {
            static const cc_feature_api feature{sizeof(cc_feature_api), &T::run_job, &T::result_delivered, &T::run_job_len,
                                                &T::jobs_report};
            api->feature = &feature;
        } else if constexpr (kind_of<P>() == CC_KIND_CA) {
            static const cc_ca_api ca{sizeof(cc_ca_api), &T::ca_open,     &T::ca_close, &T::ca_issue,
                                      &T::ca_revoke,     &T::ca_describe, &T::ca_query};
            api->ca = &ca;
        } else {
            static const cc_tenant_api tenant{sizeof(cc_tenant_api), &T::claim_jobs, &T::complete_job, &T::call};
            api->tenant = &tenant;
        }
        api->instance = instance.release();
    });
}

}  // namespace detail
}  // namespace certconn::sdk

/// Exports `Class` as this library's plugin. Use once, at namespace scope, in one source file.
/// SCHEMA is the JSON schema of the plugin's configuration section, or nullptr.
#define CERTCONN_PLUGIN(Class, NAME, VERSION, RELEASE_DATE, DESCRIPTION, SCHEMA)                              \
    namespace certconn_plugin_exports {                                                                       \
    const cc_plugin_info* query() noexcept {                                                                  \
        static const cc_plugin_info info = {sizeof(cc_plugin_info),                                           \
                                            CERTCONN_ABI_MAJOR,                                               \
                                            CERTCONN_ABI_MINOR,                                               \
                                            static_cast<uint32_t>(::certconn::sdk::detail::kind_of<Class>()), \
                                            NAME,                                                             \
                                            VERSION,                                                          \
                                            RELEASE_DATE,                                                     \
                                            DESCRIPTION,                                                      \
                                            SCHEMA};                                                          \
        return &info;                                                                                         \
    }                                                                                                         \
    int init(const cc_host_services* host, cc_plugin_api* api, cc_error* error) noexcept {                    \
        return ::certconn::sdk::detail::init<Class>(host, api, error);                                        \
    }                                                                                                         \
    }                                                                                                         \
    BOOST_DLL_ALIAS(certconn_plugin_exports::query, certconn_plugin_query)                                    \
    BOOST_DLL_ALIAS(certconn_plugin_exports::init, certconn_plugin_init)
