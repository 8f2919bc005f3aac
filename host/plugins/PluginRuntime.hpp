// Initialised plugins and everything the host does on their behalf: the host-services table
// handed to each plugin, routing of CA and tenant calls by name, HTTP routes, hot swap.
//
// A plugin version in service is a Generation: library handle + instance + the host-side
// context it was given. Callers hold a shared_ptr<const Generation> for the duration of a
// call, so publishing a newer generation never disturbs calls in flight; the old one is
// destroyed, and its library unloaded, when the last call finishes.
//
// Whoever drops the last reference (an HTTP worker, a job worker, the control thread) only
// hands the generation to the runtime's reaper thread: the plugin's destroy (and a CA's close)
// runs there, never on a request thread and never under the runtime's mutex, so a destroy that
// calls back into the host (log_event, tenant_call, ca_*) cannot deadlock a request, a reload
// or shutdown. ~PluginRuntime drains the reaper before anything else it owns goes away.
#pragma once

#include "config/Config.hpp"
#include "eventlog/EventLog.hpp"
#include "keys/KeyStore.hpp"
#include "plugins/PluginLoader.hpp"

#include <certconn/abi.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace certconn::host {

enum class CaOperation { issue, revoke, query, describe };

class PluginRuntime;

struct HttpRoute {
    std::string method;
    std::string path;   // exact, or a prefix when it ends in '/'
    std::string scope;  // what a caller must hold; "" = public
    cc_http_handler handler = nullptr;
    void* handler_ctx = nullptr;

    bool matches(std::string_view m, std::string_view p) const {
        if (m != method) return false;
        return path.back() == '/' ? p.substr(0, path.size()) == path : p == path;
    }
};

/// An administrative command a plugin registered (cc_admin_command).
struct AdminCommand {
    std::string name;  // "scep approve"
    std::string summary;
    std::string arguments_json;  // validated JSON array (abi.h)
    std::string scope;
    cc_admin_handler handler = nullptr;
    void* handler_ctx = nullptr;
};

/// The host side of one plugin instance: what `host_ctx` points to.
struct PluginContext {
    PluginRuntime* runtime = nullptr;
    PluginIdentity identity;
    std::string config_json;
    std::string state_dir;
    std::vector<HttpRoute> routes;
    std::vector<AdminCommand> commands;
    bool accepting_routes = true;  // routes and commands: only during init
    std::string route_conflict;    // why a route was refused as overlapping: init fails with it
    cc_host_services services{};
};

class GenerationReaper;

class Generation {
public:
    Generation() = default;
    Generation(const Generation&) = delete;
    Generation& operator=(const Generation&) = delete;
    ~Generation();

    const PluginIdentity& identity() const { return library->identity; }

    std::shared_ptr<PluginLibrary> library;    // declared first: unloaded after everything below
    std::shared_ptr<GenerationReaper> reaper;  // counts the generations mapping each module
    std::unique_ptr<PluginContext> context;
    cc_plugin_api api{};
    std::map<std::string, void*> ca_handles;         // CA plugins: opened [ca.<name>] sections
    std::map<std::string, std::string> ca_failures;  // CA plugins: sections that failed to open
    std::chrono::system_clock::time_point loaded_at;
    /// The configuration this generation was instantiated from; context->config_json is its
    /// section, fixed at instantiate and never changed (a reload builds a new generation).
    std::shared_ptr<const Config> config;

    /// Calls into this generation and how many of them failed (a crash-like status: internal
    /// error, unavailable, timeout, or an HTTP handler error); the update manager compares a
    /// new generation's failure rate with its predecessor's after a swap.
    mutable std::atomic<std::uint64_t> calls{0};
    mutable std::atomic<std::uint64_t> failures{0};
    /// Counts one call that returned `status` (a cc_status).
    void count_call(int status) const {
        calls.fetch_add(1, std::memory_order_relaxed);
        if (status == CC_ERR_INTERNAL || CC_STATUS_IS_RETRYABLE(status)) failures.fetch_add(1, std::memory_order_relaxed);
    }
};

/// The thread that destroys released generations (see the top of this file). Shared by the
/// runtime and every generation's deleter, so a generation released after the runtime stopped
/// its reaper is still destroyed (inline, on the releasing thread: only at process teardown).
class GenerationReaper {
public:
    GenerationReaper();
    ~GenerationReaper();
    GenerationReaper(const GenerationReaper&) = delete;
    GenerationReaper& operator=(const GenerationReaper&) = delete;

    /// Takes ownership of `generation` and destroys it on the reaper thread.
    void release(Generation* generation) noexcept;
    /// Returns once every generation released so far has been destroyed.
    void wait_idle();
    /// Live generations per module file: a file is checked for being unmapped only when the
    /// last generation built from it is gone.
    void module_acquired(const std::filesystem::path& file);
    /// True when no live generation uses `file` any more.
    bool module_released(const std::filesystem::path& file);
    /// Destroys what is queued (and whatever that releases), then joins the thread.
    void stop();

private:
    void loop();

    std::mutex mutex_;
    std::condition_variable wake_;
    std::condition_variable idle_;
    std::deque<Generation*> queue_;
    bool busy_ = false;
    bool stopping_ = false;
    bool stopped_ = false;
    std::map<std::filesystem::path, int> modules_;
    std::thread thread_;
};

class PluginRuntime {
public:
    PluginRuntime(EventLog& log, std::shared_ptr<const Config> config);
    ~PluginRuntime();

    /// Runs init (and, for CA plugins, opens the CAs configured for it). On failure returns
    /// null, logs the event and fills `error`.
    std::shared_ptr<const Generation> instantiate(const std::shared_ptr<PluginLibrary>& library, std::string& error);
    /// The same, from an explicit configuration (a reload builds generations from the
    /// configuration it is about to publish, before publishing it: see commit()).
    std::shared_ptr<const Generation> instantiate(const std::shared_ptr<PluginLibrary>& library, std::string& error,
                                                  const std::shared_ptr<const Config>& config);

    /// Makes `generation` the one serving its (kind, name); the previous one retires.
    void publish(std::shared_ptr<const Generation> generation);
    /// Stops serving (kind, name); calls in flight finish on the retired generation.
    void retire(cc_plugin_kind kind, const std::string& name);
    /// Publishes a configuration together with the generations built from it, and retires
    /// (kind, name)s, in one step under the runtime's lock: no caller sees the new
    /// configuration routed to generations built from the old one, or the reverse.
    void commit(std::shared_ptr<const Config> config, std::vector<std::shared_ptr<const Generation>> publish,
                const std::vector<std::pair<cc_plugin_kind, std::string>>& retire);
    /// Returns once every generation released so far has been destroyed (tests, shutdown).
    void wait_released();

    std::shared_ptr<const Generation> find(cc_plugin_kind kind, const std::string& name) const;
    std::vector<std::shared_ptr<const Generation>> generations() const;

    struct RouteMatch {
        std::shared_ptr<const Generation> owner;  // keeps the handler's library loaded
        const HttpRoute* route = nullptr;
    };
    /// The longest registered route matching the request, if any.
    std::optional<RouteMatch> match_route(std::string_view method, std::string_view path) const;

    struct CommandMatch {
        std::shared_ptr<const Generation> owner;  // keeps the handler's library loaded
        const AdminCommand* command = nullptr;
    };
    /// The command registered under `name`, if any.
    std::optional<CommandMatch> find_command(std::string_view name) const;
    /// Every registered command, by name.
    std::vector<CommandMatch> commands() const;
    /// Names the host's CLI owns; plugins cannot register them (or a command under them).
    static bool reserved_command(std::string_view name);

    /// Health of a generation as JSON {"healthy":bool,"detail":...}.
    std::string health(const Generation& generation) const;

    std::shared_ptr<const Config> config() const;
    void set_config(std::shared_ptr<const Config> config);
    EventLog& log() { return log_; }

    // Entry points of the host-services table (see abi.h). CaOperation::describe ignores `request`.
    int ca_call(CaOperation op, const char* ca_name, const char* request, cc_sink* out, cc_error* error);
    /// Called after every revoke that reached a CA plugin through the host (whatever its
    /// outcome), with the CA's name and when the call started: the publication cache drops what
    /// it holds of that CA. Set before plugins are instantiated; any thread calls it.
    void set_revocation_listener(std::function<void(const std::string&, std::chrono::system_clock::time_point)> listener);
    int key_decrypt(PluginContext& ctx, const std::string& key_name, const std::string& padding, std::string_view ciphertext,
                    cc_sink* out, cc_error* error);
    /// The connector keys of the current configuration.
    std::shared_ptr<KeyStore> keys();
    /// A call to tenant `tenant` (nullptr or "": the default tenant).
    int tenant_call(const char* tenant, const char* operation, const char* request, cc_sink* out, cc_error* error);
    /// A notification a plugin hands over (tenant_notify), resolved to its tenant's name.
    struct Notification {
        std::string tenant, key, plugin, operation, body, events;
    };
    /// Stores a notification durably (throws when it cannot); set before plugins are instantiated.
    using NotificationSink = std::function<void(const Notification&)>;
    void set_notification_sink(NotificationSink sink);
    /// What store_config answers (abi.h): set before plugins are instantiated.
    void set_store_config(std::string json);
    int store_config(cc_sink* out, cc_error* error);
    int tenant_notify(PluginContext& ctx, const cc_tenant_notification* notification, cc_error* error);
    int register_route(PluginContext& ctx, const char* method, const char* path, const char* scope, cc_http_handler handler,
                       void* handler_ctx, cc_error* error);
    int register_command(PluginContext& ctx, const cc_admin_command* command, cc_error* error);

    /// Paths the host serves itself (/healthz, /status, /admin/, /crl/, /ca/, /ocsp/); plugins
    /// cannot register them, nor a prefix route covering them.
    static bool reserved_path(std::string_view path);
    /// The host's own paths (/healthz, /status, /admin/) and the relying-party namespaces.
    static bool host_path(std::string_view path);
    static bool relying_party_path(std::string_view path);
    /// True when two routes' paths overlap: equal, or one is a prefix route ('/'-terminated)
    /// that the other lies in.
    static bool paths_overlap(std::string_view a, std::string_view b);

private:
    using Key = std::pair<cc_plugin_kind, std::string>;
    using Snapshot = std::vector<std::shared_ptr<const Generation>>;

    void rebuild_snapshot_locked();

    EventLog& log_;
    std::shared_ptr<GenerationReaper> reaper_ = std::make_shared<GenerationReaper>();
    mutable std::mutex mutex_;
    std::shared_ptr<const Config> config_;
    std::shared_ptr<KeyStore> keys_;
    std::map<Key, std::shared_ptr<const Generation>> published_;
    std::shared_ptr<const Snapshot> snapshot_ = std::make_shared<Snapshot>();
    std::function<void(const std::string&, std::chrono::system_clock::time_point)> revocation_listener_;
    std::string store_config_ = R"({"backend":"sqlite"})";
    NotificationSink notification_sink_;
};

/// A cc_sink appending to a string, refusing to grow past `limit` bytes.
struct StringSink {
    explicit StringSink(std::size_t limit = std::size_t{64} * 1024 * 1024) : limit(limit) {}
    std::string data;
    std::size_t limit;
    cc_sink sink();
};

}  // namespace certconn::host
