#include "plugins/PluginLoader.hpp"

#include "daemon/Accounts.hpp"
#include "plugins/ModuleStore.hpp"
#include "plugins/PluginProbe.hpp"
#include "update/Semver.hpp"

#include <certconn/errno_message.hpp>
#include <certconn/events.h>

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cctype>
#include <map>
#include <mutex>
#include <regex>

namespace certconn::host {

namespace fs = std::filesystem;

LoaderPolicy LoaderPolicy::for_service_account(const std::string& service_account) {
    LoaderPolicy p;
    p.trusted_owners = {0, geteuid()};
    if (!service_account.empty()) {
        if (const auto pw = account_named(service_account)) p.trusted_owners.insert(pw->uid);
    }
    return p;
}

std::vector<PluginIdentity> PluginScan::identities() const {
    std::vector<PluginIdentity> out;
    for (const auto& lib : libraries)
        out.push_back(lib->identity);
    return out;
}

namespace {

// "0644": the permission bits, as ls and chmod write them.
std::string octal_mode(mode_t mode) {
    std::string out(4, '0');
    for (int i = 3; i >= 0; --i, mode >>= 3)
        out[static_cast<std::size_t>(i)] = static_cast<char>('0' + (mode & 7));
    return out;
}

}  // namespace

std::string ownership_problem(const fs::path& path, const LoaderPolicy& policy) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return "cannot stat: " + sdk::errno_message(errno);
    const std::string mode = octal_mode(st.st_mode);
    if (st.st_mode & S_IWOTH) return "writable by everyone (mode " + mode + "); expected no group/other write permission";
    if (st.st_mode & S_IWGRP) return "writable by its group (mode " + mode + "); expected no group/other write permission";
    if (!policy.trusted_owners.count(st.st_uid)) {
        std::string owners;
        for (uid_t uid : policy.trusted_owners)
            owners += (owners.empty() ? "" : ", ") + std::to_string(uid);
        return "owned by uid " + std::to_string(st.st_uid) + "; expected root, the running user or the service account (uid " +
               owners + ")";
    }
    return {};
}

namespace {

std::string owner_of(uid_t uid) {
    if (const auto pw = account_of(uid)) return pw->name + " (uid " + std::to_string(uid) + ")";
    return "uid " + std::to_string(uid);
}

// Why directory `dir`, an ancestor of a plugin directory or file, is unsafe, or empty.
std::string unsafe_ancestor(const fs::path& dir, const LoaderPolicy& policy) {
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0)
        return "ancestor directory " + dir.string() + " cannot be checked: " + sdk::errno_message(errno);
    const bool world = st.st_mode & S_IWOTH, group = st.st_mode & S_IWGRP, trusted = policy.trusted_owners.count(st.st_uid) > 0;
    if (!world && !group && trusted) return {};
    // A root-owned sticky directory (/tmp): others may add entries but cannot rename or remove
    // ours, and the entry below it is checked in turn (an attacker's own entry has an untrusted
    // owner), so nothing on the path can be swapped by anyone but root.
    if (world && (st.st_mode & S_ISVTX) && st.st_uid == 0) return {};
    const std::string mode = octal_mode(st.st_mode);
    std::string why = world ? "is writable by everyone" : group ? "is writable by its group" : "has an untrusted owner";
    if (world && (st.st_mode & S_ISVTX)) why += " (sticky, but only a root-owned sticky directory is safe)";
    return "ancestor directory " + dir.string() + " (owner " + owner_of(st.st_uid) + ", mode " + mode + ") " + why +
           "; every directory above plugins must be owned by root or the service account and not group- or world-writable";
}

// The ancestors of `p` (not `p` itself), nearest first, up to and including "/".
void add_ancestors(fs::path p, std::vector<fs::path>& out) {
    if (!p.has_filename() && p.has_parent_path() && p != p.root_path()) p = p.parent_path();  // "a/b/" -> "a/b"
    for (fs::path d = p.parent_path(); !d.empty(); d = d.parent_path()) {
        if (std::find(out.begin(), out.end(), d) == out.end()) out.push_back(d);
        if (d == d.parent_path()) break;
    }
}

}  // namespace

bool valid_plugin_name(const std::string& name) {
    static const std::regex re("[a-z][a-z0-9-]{0,62}");
    return std::regex_match(name, re);
}

std::string ancestor_problem(const fs::path& path, const LoaderPolicy& policy) {
    // Both the path as given (whoever can write a directory on it can re-point a symlink on it)
    // and the path the kernel really opens, with every symlink resolved.
    std::vector<fs::path> dirs;
    std::error_code ec;
    const fs::path given = fs::absolute(path, ec).lexically_normal();
    if (ec) return "cannot make " + path.string() + " absolute: " + ec.message();
    add_ancestors(given, dirs);
    char* real = ::realpath(path.c_str(), nullptr);
    if (real == nullptr) return "cannot resolve " + path.string() + ": " + sdk::errno_message(errno);
    const fs::path resolved(real);
    std::free(real);
    add_ancestors(resolved, dirs);
    for (const auto& dir : dirs)
        if (std::string why = unsafe_ancestor(dir, policy); !why.empty()) return why;
    return {};
}

namespace {

bool valid_name(const char* s) {
    return s != nullptr && valid_plugin_name(s);
}

bool valid_date(const char* s) {
    static const std::regex re(R"(\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01]))");
    return s != nullptr && std::regex_match(s, re);
}

std::string dl_message(const std::exception& e) {
    std::string text = e.what();
    const std::string marker = "dlerror system message: ";
    if (auto at = text.find(marker); at != std::string::npos) {
        text = text.substr(at + marker.size());
        if (!text.empty() && text.back() == ')') text.pop_back();
    }
    return text;
}

// The offsetof-end of cc_plugin_info in ABI 1.0: the smallest info a 1.x plugin may return.
constexpr std::size_t kMinInfoSize = offsetof(cc_plugin_info, config_schema) + sizeof(const char*);

}  // namespace

std::shared_ptr<PluginLibrary> open_plugin(const fs::path& file, const LoaderPolicy& policy, PluginFileReport& report) {
    report = PluginFileReport{};
    report.file = file;
    const std::string label = "plugin '" + file.stem().string() + "' (" + file.string() + "): ";
    auto refuse = [&](std::uint32_t id, const std::string& why) -> std::shared_ptr<PluginLibrary> {
        report.accepted = false;
        report.event_id = id;
        report.reason = label + why;
        return nullptr;
    };

    if (std::string why = ownership_problem(file, policy); !why.empty()) return refuse(CC_EV_PluginFileUnsafe, why + "; refused");
    if (std::string why = ancestor_problem(file, policy); !why.empty()) return refuse(CC_EV_PluginFileUnsafe, why + "; refused");

    auto lib = std::make_shared<PluginLibrary>();
    lib->file = file;
    try {
        lib->library.load(file, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local);
    } catch (const std::exception& e) {
        return refuse(CC_EV_PluginLoadFailed, "cannot be loaded: " + dl_message(e));
    }
    for (const char* name : {CERTCONN_QUERY_EXPORT, CERTCONN_INIT_EXPORT}) {
        if (!lib->library.has(name))
            return refuse(CC_EV_PluginExportMissing, std::string("missing export '") + name +
                                                         "'; expected both " CERTCONN_QUERY_EXPORT " and " CERTCONN_INIT_EXPORT
                                                         " (use CERTCONN_PLUGIN from certconn/sdk.hpp)");
    }
    const auto query = lib->library.get_alias<const cc_plugin_info*()>(CERTCONN_QUERY_EXPORT);
    const cc_plugin_info* info = query();
    if (info == nullptr) return refuse(CC_EV_PluginInfoInvalid, "query export returned no plugin info");

    // The ABI version is read first: everything after it may be laid out differently.
    if (info->struct_size < offsetof(cc_plugin_info, kind))
        return refuse(CC_EV_PluginInfoInvalid, "plugin info struct_size " + std::to_string(info->struct_size) + " is too small");
    const std::string host_range = std::to_string(CERTCONN_ABI_MAJOR) + ".0-" + std::to_string(CERTCONN_ABI_MAJOR) + "." +
                                   std::to_string(CERTCONN_ABI_MINOR);
    if (info->abi_major != CERTCONN_ABI_MAJOR || info->abi_minor > CERTCONN_ABI_MINOR) {
        return refuse(CC_EV_PluginAbiMismatch, "built for SDK " + std::to_string(info->abi_major) + "." +
                                                   std::to_string(info->abi_minor) + ", this host speaks " + host_range);
    }
    if (info->struct_size < kMinInfoSize)
        return refuse(CC_EV_PluginInfoInvalid, "plugin info struct_size " + std::to_string(info->struct_size) +
                                                   " is smaller than SDK " + std::to_string(info->abi_major) + "." +
                                                   std::to_string(info->abi_minor) + " defines (" + std::to_string(kMinInfoSize) +
                                                   ")");
    if (info->kind < CC_KIND_FEATURE || info->kind > CC_KIND_TENANT)
        return refuse(CC_EV_PluginInfoInvalid,
                      "unknown kind " + std::to_string(info->kind) + "; expected 1 (feature), 2 (ca) or 3 (tenant)");
    if (!valid_name(info->name))
        return refuse(CC_EV_PluginInfoInvalid,
                      std::string("invalid name '") + (info->name ? info->name : "(null)") + "'; expected [a-z][a-z0-9-]{0,62}");
    if (info->version == nullptr || !update::is_semver(info->version))
        return refuse(CC_EV_PluginInfoInvalid, std::string("invalid version '") + (info->version ? info->version : "(null)") +
                                                   "'; expected a semantic version like 1.2.3");
    if (!valid_date(info->release_date))
        return refuse(CC_EV_PluginInfoInvalid, std::string("invalid release date '") +
                                                   (info->release_date ? info->release_date : "(null)") +
                                                   "'; expected YYYY-MM-DD");

    PluginIdentity& id = lib->identity;
    id.kind = static_cast<cc_plugin_kind>(info->kind);
    id.name = info->name;
    id.version = info->version;
    id.release_date = info->release_date;
    id.description = info->description ? info->description : "";
    id.abi_major = info->abi_major;
    id.abi_minor = info->abi_minor;
    report.identity = id;
    if (info->config_schema != nullptr) {
        try {
            id.schema = std::make_shared<const SchemaNode>(parse_schema(std::string_view(info->config_schema)));
        } catch (const std::exception& e) {
            return refuse(CC_EV_PluginInfoInvalid, std::string("invalid config_schema: ") + e.what());
        }
    }
    report.identity = id;
    lib->init = lib->library.get_alias<int(const cc_host_services*, cc_plugin_api*, cc_error*)>(CERTCONN_INIT_EXPORT);
    lib->unload_problems = unload_problems(file);
    report.unload_problems = lib->unload_problems;
    report.accepted = true;
    return lib;
}

namespace {

// What a probe child said of the bytes with a given SHA-256, for the life of the process: a
// build is identified once, not on every reload (a serving build is never probed again, so a
// probe that cannot run on a loaded machine never takes a serving plugin away).
struct IdentityCache {
    std::mutex mutex;
    std::map<std::string, ProbeResult> by_sha;
    // A file unchanged since it was staged (same device, inode, size and mtime) is not read,
    // hashed and copied again on every reload: its SHA-256 and module path are remembered.
    std::map<std::string, std::pair<std::string, fs::path>> by_file;  // stat key -> (sha256, module)
};
IdentityCache& identity_cache() {
    static IdentityCache cache;
    return cache;
}

// A file seen through the module store: staged, identified in a probe child, placed under its
// content-addressed path, but not loaded into this process (only the chosen build is, by
// load_candidate). The returned library has identity, source, file (the module) and sha256.
std::shared_ptr<PluginLibrary> identify_through_store(const fs::path& file, const LoaderPolicy& policy,
                                                      const ScanOptions& options, PluginFileReport& report) {
    report = PluginFileReport{};
    report.file = file;
    const std::string label = "plugin '" + file.stem().string() + "' (" + file.string() + "): ";
    auto refuse = [&](std::uint32_t id, const std::string& why) -> std::shared_ptr<PluginLibrary> {
        report.accepted = false;
        report.event_id = id;
        report.reason = why.rfind("plugin", 0) == 0 ? why : label + why;
        return nullptr;
    };
    if (std::string why = ownership_problem(file, policy); !why.empty()) return refuse(CC_EV_PluginFileUnsafe, why + "; refused");
    if (std::string why = ancestor_problem(file, policy); !why.empty()) return refuse(CC_EV_PluginFileUnsafe, why + "; refused");
    struct stat st {};
    const std::string stat_key = ::stat(file.c_str(), &st) != 0
                                     ? std::string()
                                     : file.string() + "|" + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" +
                                           std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
                                           std::to_string(st.st_mtim.tv_nsec);
    {
        std::lock_guard lock(identity_cache().mutex);
        auto& cache = identity_cache();
        if (auto known = cache.by_file.find(stat_key); !stat_key.empty() && known != cache.by_file.end()) {
            const auto& [sha, module] = known->second;
            auto probed = cache.by_sha.find(sha);
            std::error_code ec;
            if (probed != cache.by_sha.end() && probed->second.ok && fs::exists(module, ec) &&
                !options.failed_builds.count(sha)) {
                auto lib = std::make_shared<PluginLibrary>();
                lib->file = module;
                lib->source = file;
                lib->sha256 = sha;
                lib->identity = *probed->second.identity;
                report.identity = lib->identity;
                report.accepted = true;
                return lib;
            }
        }
    }
    try {
        const ModuleStore store(*options.module_store);
        const ModuleStore::Staged staged = store.stage(file);
        if (auto failed = options.failed_builds.find(staged.sha256); failed != options.failed_builds.end())
            return refuse(CC_EV_PluginProbeFailed, failed->second);
        ProbeResult probed;
        {
            std::lock_guard lock(identity_cache().mutex);
            if (auto it = identity_cache().by_sha.find(staged.sha256); it != identity_cache().by_sha.end()) probed = it->second;
        }
        if (!probed.ok && probed.error.empty()) {
            // The identity comes from a child that loaded the staged copy: a file whose static
            // constructors or query crash or hang never runs in this process.
            ProbeRequest probe;
            probe.file = staged.path;
            probe.service_account = options.service_account;
            probe.timeout = options.probe_timeout;
            probed = run_probe(probe);
            if (auto at = probed.error.find(staged.path.string()); at != std::string::npos)
                probed.error.replace(at, staged.path.string().size(), file.string());
            if (!probed.could_not_run) {
                std::lock_guard lock(identity_cache().mutex);
                identity_cache().by_sha[staged.sha256] = probed;
            }
        }
        if (!probed.ok) return refuse(probed.event_id, probed.error);
        auto lib = std::make_shared<PluginLibrary>();
        lib->file = store.place(staged, *probed.identity);
        if (!stat_key.empty()) {
            std::lock_guard lock(identity_cache().mutex);
            identity_cache().by_file[stat_key] = {staged.sha256, lib->file};
        }
        lib->source = file;
        lib->sha256 = staged.sha256;
        lib->identity = *probed.identity;
        report.identity = *probed.identity;
        report.accepted = true;
        return lib;
    } catch (const std::exception& e) {
        return refuse(CC_EV_PluginModuleStoreFailed, e.what());
    }
}

// Loads a store candidate chosen to serve; false (and `report` says why) when it cannot be.
bool load_candidate(std::shared_ptr<PluginLibrary>& lib, const LoaderPolicy& policy, PluginFileReport& report) {
    PluginFileReport loaded;
    auto opened = open_plugin(lib->file, policy, loaded);
    if (!opened) {
        report.accepted = false;
        report.event_id = loaded.event_id;
        report.reason = loaded.reason;
        return false;
    }
    const PluginIdentity& id = opened->identity;
    if (id.kind != lib->identity.kind || id.name != lib->identity.name || id.version != lib->identity.version) {
        report.accepted = false;
        report.event_id = CC_EV_PluginInfoInvalid;
        report.reason = "plugin '" + report.file.stem().string() + "' (" + report.file.string() +
                        "): answered a different identity in the probe than when loaded";
        return false;
    }
    opened->source = lib->source;
    opened->sha256 = lib->sha256;
    report.identity = opened->identity;
    report.unload_problems = opened->unload_problems;
    lib = std::move(opened);
    return true;
}

}  // namespace

PluginScan scan_plugins(const fs::path& directory, const LoaderPolicy& policy, const ScanOptions& options) {
    PluginScan scan;
    scan.directory = directory;
    std::error_code ec;
    std::vector<fs::path> files;
    auto list = [&](const fs::path& dir) {
        std::vector<fs::path> found;
        for (const auto& entry : fs::directory_iterator(dir, ec))
            if (entry.path().extension() == ".so") found.push_back(entry.path());
        std::sort(found.begin(), found.end());
        files.insert(files.end(), found.begin(), found.end());
    };
    if (!fs::is_directory(directory, ec)) {
        scan.directory_problem = "plugin directory " + directory.string() + " does not exist or is not a directory";
    } else if (std::string why = ownership_problem(directory, policy); !why.empty()) {
        scan.directory_problem = "plugin directory " + directory.string() + " is " + why + "; no plugin loaded from it";
    } else if (std::string why2 = ancestor_problem(directory, policy); !why2.empty()) {
        scan.directory_problem = "plugin directory " + directory.string() + " is unsafe: " + why2 + "; no plugin loaded from it";
    } else {
        list(directory);
    }
    for (const auto& extra : options.extra_dirs) {
        if (!fs::is_directory(extra, ec)) continue;
        if (std::string why = ownership_problem(extra, policy); !why.empty()) {
            PluginFileReport r;
            r.file = extra;
            r.event_id = CC_EV_PluginDirectoryUnsafe;
            r.reason = "plugin directory " + extra.string() + " is " + why + "; no plugin loaded from it";
            scan.files.push_back(std::move(r));
            continue;
        }
        list(extra);
    }

    // Every file is checked; then, per (kind, name), the candidates compete.
    std::vector<std::pair<std::size_t, std::shared_ptr<PluginLibrary>>> candidates;  // index into scan.files
    for (const auto& file : files) {
        PluginFileReport report;
        auto lib =
            options.module_store ? identify_through_store(file, policy, options, report) : open_plugin(file, policy, report);
        if (lib) candidates.emplace_back(scan.files.size(), std::move(lib));
        scan.files.push_back(std::move(report));
    }
    const VersionSelection& sel = options.selection;
    auto rank = [&](const PluginLibrary& lib) {  // 2: pinned, 1: fine, 0: marked bad
        const auto pin = sel.pins.find(lib.identity.name);
        if (pin != sel.pins.end()) return pin->second == lib.identity.version ? 2 : -1;
        return sel.bad.count(VersionSelection::key(lib.identity.name, lib.identity.version)) ? 0 : 1;
    };
    std::vector<bool> taken(candidates.size(), false);
    for (std::size_t i = 0; i < candidates.size(); ++i) {
        if (taken[i]) continue;
        const PluginIdentity id = candidates[i].second->identity;  // a copy: loading replaces the object
        std::vector<std::size_t> group;
        for (std::size_t j = i; j < candidates.size(); ++j) {
            const PluginIdentity& other = candidates[j].second->identity;
            if (!taken[j] && other.kind == id.kind && other.name == id.name) {
                group.push_back(j);
                taken[j] = true;
            }
        }
        // Best first: rank, then version; equal versions keep the order found (first wins).
        std::stable_sort(group.begin(), group.end(), [&](std::size_t a, std::size_t b) {
            const auto& la = *candidates[a].second;
            const auto& lb = *candidates[b].second;
            if (rank(la) != rank(lb)) return rank(la) > rank(lb);
            return update::compare_versions(la.identity.version, lb.identity.version) > 0;
        });
        if (rank(*candidates[group.front()].second) < 0) {  // a pin that no present file satisfies
            scan.held.emplace(id.kind, id.name);            // the serving generation (if any) stays
            for (std::size_t g : group) {
                PluginFileReport& r = scan.files[candidates[g].first];
                r.accepted = false;
                r.superseded = true;
                r.event_id = CC_EV_PluginSuperseded;
                r.reason = "plugin '" + r.file.stem().string() + "' (" + r.file.string() + "): version " +
                           candidates[g].second->identity.version + " is not the pinned version " + sel.pins.at(id.name) +
                           " ([update] pin); not loaded";
            }
            continue;
        }
        // With a module store only the chosen build is loaded here; one that fails to load
        // gives way to the next best.
        if (options.module_store) {
            while (!group.empty()) {
                auto& [index, lib] = candidates[group.front()];
                if (rank(*lib) >= 0 && load_candidate(lib, policy, scan.files[index])) break;
                group.erase(group.begin());
            }
            if (group.empty()) continue;
        }
        const auto& best = candidates[group.front()];
        scan.libraries.push_back(best.second);
        for (std::size_t k = 1; k < group.size(); ++k) {
            const auto& [index, lib] = candidates[group[k]];
            PluginFileReport& r = scan.files[index];
            r.accepted = false;
            const std::string head = "plugin '" + r.file.stem().string() + "' (" + r.file.string() + "): ";
            if (lib->identity.version == best.second->identity.version) {
                r.event_id = CC_EV_PluginDuplicate;
                r.reason = head + "a " + std::string(kind_name(id.kind)) + " plugin named '" + id.name + "' " + id.version +
                           " is already loaded from " + scan.files[best.first].file.string() + "; refused";
            } else {
                r.superseded = true;
                r.event_id = CC_EV_PluginSuperseded;
                r.reason = head + "version " + lib->identity.version + " superseded by " + best.second->identity.version + " (" +
                           scan.files[best.first].file.string() + ")" + (rank(*lib) == 0 ? "; marked bad by a rollback" : "");
            }
        }
    }
    return scan;
}

}  // namespace certconn::host
