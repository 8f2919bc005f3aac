// The running connector: wires configuration, event log, plugins and the HTTP server
// together, serves /healthz and /status, reloads on SIGHUP and drains on SIGTERM/SIGINT.
#pragma once

#include "auth/AccessPolicy.hpp"
#include "config/Config.hpp"
#include "eventlog/EventLog.hpp"
#include "fleet/FleetProbe.hpp"
#include "fleet/InstanceRegistry.hpp"
#include "http/HttpServer.hpp"
#include "jobs/JobScheduler.hpp"
#include "plugins/PluginLoader.hpp"
#include "plugins/PluginRuntime.hpp"
#include "publication/CaHealth.hpp"
#include "publication/Publication.hpp"
#include "update/UpdateManager.hpp"

#include <boost/json/object.hpp>

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <functional>
#include <mutex>
#include <map>
#include <set>
#include <vector>

namespace certconn::host {

/// A configuration file read together with the plugins it refers to; nothing initialised.
struct LoadedConfiguration {
    std::filesystem::path file;
    PluginScan scan;
    std::optional<Config> config;              // set when there is no config problem
    std::vector<ConfigProblem> problems;       // configuration problems (fatal)
    std::vector<std::string> plugin_problems;  // refused plugin files (the others still load)
};

/// `plugin_dir` overrides the directory named in the file (a reload keeps the running one).
/// `options`: how the daemon scans (daemon_scan_options); the CLI's inspections pass none.
LoadedConfiguration load_configuration(const std::filesystem::path& file,
                                       const std::optional<std::filesystem::path>& plugin_dir = std::nullopt,
                                       const ScanOptions* options = nullptr);
/// The same for a document already read (`run` reads it before switching to the service account).
LoadedConfiguration load_configuration(const ConfigDocument& document,
                                       const std::optional<std::filesystem::path>& plugin_dir = std::nullopt,
                                       const ScanOptions* options = nullptr);

/// The daemon's scan: the update manager's directory (<state_dir>/updates) beside the plugin
/// directory, the module store (<state_dir>/modules) and probe children (ModuleStore.hpp,
/// PluginProbe.hpp).
ScanOptions daemon_scan_options(const std::filesystem::path& state_dir, const std::string& service_account,
                                VersionSelection selection = {});

/// A plugin file as `certconnector plugins` and `/status` describe it.
boost::json::object describe_plugin_file(const PluginFileReport& report);

class Connector {
public:
    Connector(LoadedConfiguration loaded, bool foreground);
    ~Connector();

    /// Serves until SIGTERM/SIGINT; SIGHUP reloads. Returns the process exit code.
    int run();

    /// Re-reads the configuration file and plugin directories and applies what changed. Any
    /// thread (SIGHUP, the update manager); reloads run one at a time.
    void reload();

    /// Pins and bad versions the next scans apply (the update manager sets it).
    void set_selection_provider(std::function<VersionSelection()> provider);
    /// The last scan's report of every plugin file (loaded, superseded, refused and why).
    std::vector<PluginFileReport> scan_report() const;
    PluginRuntime& runtime() { return *runtime_; }

    boost::json::object status() const;

private:
    std::string instance_id_;  // this instance in the fleet ([update] instance_id or <state_dir>/instance-id)
    HttpResponseMessage dispatch(const HttpRequestMessage& request, const RequestOrigin& origin);
    /// 401 (anonymous or refused credentials) or 403 (authenticated, wrong scope), with event 700.
    HttpResponseMessage deny(const Principal& principal, const RequestOrigin& origin, const std::string& what,
                             const std::string& scope);
    HttpResponseMessage list_commands(const Principal& principal);
    HttpResponseMessage run_command(const HttpRequestMessage& request, const Principal& principal, const RequestOrigin& origin);
    /// The host's own admin command `ca export`.
    boost::json::object check_tenants(const boost::json::object& arguments);
    boost::json::object retry_outbox(const boost::json::object& arguments);
    boost::json::object export_ca(const boost::json::object& arguments);
    HttpResponseMessage call_plugin_route(const PluginRuntime::RouteMatch& match, const HttpRequestMessage& request,
                                          const RequestOrigin& origin, const Principal& principal);
    std::shared_ptr<const AccessPolicy> access_policy() const;
    void report_scan(const PluginScan& scan);
    /// Brings the published plugins in line with `config` and `scan`.
    /// Returns true when a new build failed its init probe (a new scan may choose another).
    bool apply_plugins(const std::shared_ptr<const Config>& config, const PluginScan& scan, const Config* previous);
    bool reload_once();
    struct QuiesceCall;
    std::shared_ptr<QuiesceCall> quiesce(const std::shared_ptr<const Generation>& generation, std::chrono::milliseconds deadline);
    void abandon(const std::shared_ptr<QuiesceCall>& call);
    void release_quiesce_calls();
    void join_quiesce_calls(std::chrono::milliseconds limit);
    void warn_unless_service_account();
    /// The update manager's view of the plugins in service, and its reload.
    std::vector<update::ServingPlugin> serving_plugins(bool with_health) const;
    std::vector<PluginFileReport> reload_for_update();
    void forget_libraries();

    std::mutex reload_mutex_;         // one reload at a time
    mutable std::mutex state_mutex_;  // guards config_, scan_ and selection_provider_ (read by /status)
    std::function<VersionSelection()> selection_provider_;
    std::set<std::string> init_probed_;                 // sha256 of module files whose init probe passed
    std::map<std::string, std::string> failed_builds_;  // sha256 -> why its init probe failed
    std::chrono::milliseconds probe_timeout_{30000};
    std::vector<std::shared_ptr<QuiesceCall>> quiesce_calls_;  // the control thread's
    std::filesystem::path config_file_;
    bool foreground_;
    std::shared_ptr<const Config> config_;
    std::shared_ptr<const AccessPolicy> access_;  // rebuilt on reload: tokens can change
    PluginScan scan_;
    std::unique_ptr<EventLog> log_;
    std::unique_ptr<PluginRuntime> runtime_;
    std::unique_ptr<HttpServer> http_;
    std::unique_ptr<OutboxStore> outbox_;  // outlives runtime_: plugins hand it notifications
    mutable std::mutex jobs_mutex_;        // jobs_ is set and reset under it (the notification sink reads it)
    std::unique_ptr<JobScheduler> jobs_;
    std::unique_ptr<InstanceRegistry> registry_;  // this instance in the fleet's registry (heartbeats)
    KeyFingerprints key_fingerprints_;
    std::unique_ptr<update::UpdateManager> update_;
    std::unique_ptr<Publication> publication_;    // /crl/, /ca/, /ocsp/ for every CA
    std::unique_ptr<CaHealthMonitor> ca_health_;  // background health probes of the CAs
    std::chrono::system_clock::time_point started_at_;
    std::atomic<bool> stopping_{false};
};

}  // namespace certconn::host
