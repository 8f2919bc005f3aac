// Finds plugin files, checks that they are safe to load and built for this host, and reads
// their identity through the side-effect-free query export. Nothing here runs plugin init.
#pragma once

#include "plugins/PluginIdentity.hpp"
#include "plugins/VersionSelection.hpp"

#include <boost/dll/shared_library.hpp>

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace certconn::host {

/// Owners a plugin file and its directory may have: root, the running user, and the
/// configured service account.
struct LoaderPolicy {
    std::set<uid_t> trusted_owners;
    static LoaderPolicy for_service_account(const std::string& service_account);
};

/// A checked, loaded plugin library whose init has not run yet.
struct PluginLibrary {
    boost::dll::shared_library library;
    std::filesystem::path file;    // what is mapped: the module store's copy when there is a store
    std::filesystem::path source;  // the file found in a plugin directory
    std::string sha256;            // of the bytes (with a module store)
    PluginIdentity identity;
    cc_plugin_init_fn init = nullptr;
    std::vector<std::string> unload_problems;  // why dlclose cannot unmap it (ModuleStore.hpp)
};

/// Why one file was accepted or refused.
struct PluginFileReport {
    std::filesystem::path file;
    bool accepted = false;
    bool superseded = false;                 // passed every check, but another version of the plugin serves
    std::vector<std::string> unload_problems;  // why dlclose cannot unmap it (ModuleStore.hpp)
    std::uint32_t event_id = 0;              // the refusal's event (events.h), 0 when accepted
    std::string reason;                      // full message naming file, found and expected
    std::optional<PluginIdentity> identity;  // when the query export could be read
};

struct PluginScan {
    std::filesystem::path directory;
    std::optional<std::string> directory_problem;           // nothing was loaded when set
    std::vector<PluginFileReport> files;                    // every *.so, by directory then name
    std::vector<std::shared_ptr<PluginLibrary>> libraries;  // the chosen ones: one per (kind, name)

    std::vector<PluginIdentity> identities() const;
};

/// How the daemon scans (the CLI's inspections use the defaults: files read in place).
struct ScanOptions {
    /// Scanned after the plugin directory, the same way: the update manager's downloads
    /// (<state_dir>/updates). A missing extra directory is no problem.
    std::vector<std::filesystem::path> extra_dirs;
    VersionSelection selection;
    /// <state_dir>/modules: each file is first identified in a probe child process
    /// (PluginProbe.hpp) through its copy in the store, and the copy is what gets loaded.
    std::optional<std::filesystem::path> module_store;
    std::filesystem::path probe_executable;  // the certconnector binary (with module_store)
    std::string service_account;
    std::chrono::milliseconds probe_timeout{30000};
};

/// Checks and loads one file. On refusal returns null and fills `report`.
std::shared_ptr<PluginLibrary> open_plugin(const std::filesystem::path& file, const LoaderPolicy& policy,
                                           PluginFileReport& report);

/// Scans `directory` (and options.extra_dirs) for *.so files. Of several files of one
/// (kind, name) the highest version that passes every check serves (options.selection: a
/// pinned version only, a version marked bad only when nothing else is left); the others are
/// reported superseded. Two files with the same version: the first found serves, the second is
/// refused as a duplicate.
PluginScan scan_plugins(const std::filesystem::path& directory, const LoaderPolicy& policy, const ScanOptions& options = {});

/// Semantic-version precedence (semver.org §11): <0, 0 or >0. Build metadata is ignored.
int compare_versions(std::string_view a, std::string_view b);

/// Why `path` (a plugin file or directory) is unsafe to load code from, or empty when safe.
std::string ownership_problem(const std::filesystem::path& path, const LoaderPolicy& policy);

/// Why a directory above `path` makes it unsafe to load code from, or empty when none does.
/// Every ancestor of `path` as given and of its realpath(), up to "/", must be owned by a
/// trusted owner (LoaderPolicy) and writable by neither group nor others: a sticky
/// world-writable directory such as /tmp is refused too. The message names the directory, its
/// owner and its mode.
std::string ancestor_problem(const std::filesystem::path& path, const LoaderPolicy& policy);

}  // namespace certconn::host
