// Finds plugin files, checks that they are safe to load and built for this host, and reads
// their identity through the side-effect-free query export. Nothing here runs plugin init.
#pragma once

#include "plugins/PluginIdentity.hpp"

#include <boost/dll/shared_library.hpp>

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <string>
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
    std::filesystem::path file;
    PluginIdentity identity;
    cc_plugin_init_fn init = nullptr;
};

/// Why one file was accepted or refused.
struct PluginFileReport {
    std::filesystem::path file;
    bool accepted = false;
    std::uint32_t event_id = 0;              // the refusal's event (events.h), 0 when accepted
    std::string reason;                      // full message naming file, found and expected
    std::optional<PluginIdentity> identity;  // when the query export could be read
};

struct PluginScan {
    std::filesystem::path directory;
    std::optional<std::string> directory_problem;           // nothing was loaded when set
    std::vector<PluginFileReport> files;                    // every *.so, sorted by name
    std::vector<std::shared_ptr<PluginLibrary>> libraries;  // the accepted ones

    std::vector<PluginIdentity> identities() const;
};

/// Checks and loads one file. On refusal returns null and fills `report`.
std::shared_ptr<PluginLibrary> open_plugin(const std::filesystem::path& file, const LoaderPolicy& policy,
                                           PluginFileReport& report);

/// Scans `directory` for *.so files; refuses duplicates of (kind, name) after the first.
PluginScan scan_plugins(const std::filesystem::path& directory, const LoaderPolicy& policy);

/// Why `path` (a plugin file or directory) is unsafe to load code from, or empty when safe.
std::string ownership_problem(const std::filesystem::path& path, const LoaderPolicy& policy);

/// Why a directory above `path` makes it unsafe to load code from, or empty when none does.
/// Every ancestor of `path` as given and of its realpath(), up to "/", must be owned by a
/// trusted owner (LoaderPolicy) and writable by neither group nor others: a sticky
/// world-writable directory such as /tmp is refused too. The message names the directory, its
/// owner and its mode.
std::string ancestor_problem(const std::filesystem::path& path, const LoaderPolicy& policy);

}  // namespace certconn::host
