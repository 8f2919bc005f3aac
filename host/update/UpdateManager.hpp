// The plugin update manager (docs/updates.md): checks the configured signed repositories,
// picks for each serving plugin the newest version it may run, and installs it through the
// loader: check -> verify index -> download -> verify file -> place in <state_dir>/updates ->
// reload (the loader probes the new version in a child process, loads it, publishes) -> watch
// (health and error rate) -> retire the superseded file, or roll back and mark the version bad.
// Every step is journaled (UpdateState.hpp) so a kill -9 anywhere resumes or rolls back at start.
//
// One background thread runs the periodic checks and the post-publish watch; the admin
// commands (`certconnector update ...`) run on the caller's thread. One mutex serialises them.
#pragma once

#include "config/Config.hpp"
#include "eventlog/EventLog.hpp"
#include "plugins/PluginLoader.hpp"
#include "plugins/VersionSelection.hpp"
#include "update/UpdateState.hpp"

#include <certconn/abi.h>

#include <boost/json/object.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace certconn::host::update {

struct IndexEntry;
struct TrustRoot;

/// A plugin generation in service, as the manager sees it.
struct ServingPlugin {
    cc_plugin_kind kind = CC_KIND_FEATURE;
    std::string name;
    std::string version;
    std::string release_date;
    std::filesystem::path file;   // the file it was loaded from (plugin_dir or <state_dir>/updates)
    std::uint64_t calls = 0;      // Generation::calls
    std::uint64_t failures = 0;   // Generation::failures
    std::optional<bool> healthy;  // PluginRuntime::health, when asked for
};

/// What the manager needs from the running connector.
struct UpdateHost {
    /// Every plugin in service (with health when `with_health`).
    std::function<std::vector<ServingPlugin>(bool with_health)> serving;
    /// Rescans the plugin directory and <state_dir>/updates and applies the result with the
    /// running configuration; returns after publish, with the scan's file reports.
    std::function<std::vector<PluginFileReport>()> reload_plugins;
};

class UpdateManager {
public:
    UpdateManager(UpdateSettings settings, std::filesystem::path state_dir, EventLog& log, UpdateHost host);
    ~UpdateManager();
    UpdateManager(const UpdateManager&) = delete;
    UpdateManager& operator=(const UpdateManager&) = delete;

    /// Finishes or rolls back an update a stop or crash interrupted (event 509), then starts
    /// the background thread.
    void start();
    void stop();

    /// New [update] settings after a reload (repositories, mode, pins ...).
    void configure(UpdateSettings settings);

    /// Pins and bad versions for the loader (Connector's selection provider).
    VersionSelection selection() const;

    /// Runs `update status|check|apply|rollback|pin` (the host's admin commands); returns the
    /// reply object {"exit_code", "stdout", "stderr"}.
    boost::json::object command(const std::string& name, const boost::json::object& arguments);

    /// The host's admin commands this manager serves: name, summary, arguments JSON.
    struct CommandSpec {
        const char* name;
        const char* summary;
        const char* arguments_json;
        const char* scope;
    };
    static const std::vector<CommandSpec>& commands();

    /// This connector's id for rollout_percent.
    const std::string& instance_id() const { return instance_id_; }

private:
    struct Available;  // one repository's offer for one plugin, and why it was (not) applied
    struct Candidate;  // an entry chosen to install
    enum class Trigger { Schedule, Check, Apply };

    void loop();
    /// One check of every repository; installs when `trigger` and the mode allow. Caller holds run_mutex_.
    std::string check_all(Trigger trigger, const std::optional<std::filesystem::path>& bundle_dir,
                          const std::string& bundle_repository);
    /// Refreshes the root chain and the index of one repository; false when it cannot be used.
    bool refresh_repository(const UpdateRepository& repo, const std::string& base_url, std::string& outcome);
    /// Installs one candidate; returns what happened (for the CLI).
    std::string install(const Candidate& candidate);
    void watch_tick();
    std::string roll_back(const Journal& journal, const std::string& why, bool operator_asked);
    void retire(Journal journal);
    void recover();
    void refuse(const std::string& reason, const std::string& repository, const std::string& plugin, const std::string& version,
                const std::string& message);
    void journal_step(Journal& journal, const std::string& step);
    void pause_point(const std::string& step) const;
    void save_state();
    void report_support(const std::vector<ServingPlugin>& serving);
    bool in_window(std::chrono::system_clock::time_point now) const;
    std::optional<ServingPlugin> serving_plugin(const std::string& kind, const std::string& name, bool with_health) const;
    std::string status_text(bool json_output);

    std::filesystem::path update_dir() const { return state_dir_ / "update"; }
    std::filesystem::path updates_dir() const { return state_dir_ / "updates"; }
    std::filesystem::path journal_file() const { return update_dir() / "journal.json"; }
    std::filesystem::path state_file() const { return update_dir() / "state.json"; }

    std::filesystem::path state_dir_;
    EventLog& log_;
    UpdateHost host_;
    std::string instance_id_;

    mutable std::mutex mutex_;  // settings_, state_, report_, watch fields (short holds)
    UpdateSettings settings_;
    UpdateState state_;
    boost::json::array report_;  // per plugin: serving, available, why not applied (last check)
    std::optional<Journal> watching_;
    std::chrono::steady_clock::time_point watch_until_{};
    std::set<std::string> reported_;  // refusals and offers already reported (no repeat per index)

    std::mutex run_mutex_;  // one check, install or rollback at a time
    std::condition_variable wake_;
    mutable std::mutex wake_mutex_;
    bool stopping_ = false;
    bool check_requested_ = false;
    std::chrono::steady_clock::time_point next_check_{};
    std::thread thread_;
};

}  // namespace certconn::host::update
