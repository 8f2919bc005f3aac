#include "plugins/PluginLoader.hpp"

#include "daemon/Accounts.hpp"
#include "plugins/ModuleStore.hpp"
#include "plugins/PluginProbe.hpp"

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
    static const std::regex re("[a-z][a-z0-9-]{0,62}");
    return s != nullptr && std::regex_match(s, re);
}

bool valid_semver(const char* s) {
    static const std::regex re(R"((0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?)");
    return s != nullptr && std::regex_match(s, re);
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
    if (!valid_semver(info->version))
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

int compare_versions(std::string_view a, std::string_view b) {
    auto strip = [](std::string_view v) { return v.substr(0, v.find('+')); };
    a = strip(a);
    b = strip(b);
    auto split = [](std::string_view v, char sep) {
        std::vector<std::string_view> parts;
        for (std::size_t start = 0;;) {
            const auto at = v.find(sep, start);
            parts.push_back(v.substr(start, at == std::string_view::npos ? std::string_view::npos : at - start));
            if (at == std::string_view::npos) return parts;
            start = at + 1;
        }
    };
    auto numeric = [](std::string_view s) { return !s.empty() && s.find_first_not_of("0123456789") == std::string_view::npos; };
    // Numeric identifiers compare as numbers (without leading zeros, longer is larger).
    auto compare_ids = [&](std::string_view x, std::string_view y) {
        const bool nx = numeric(x), ny = numeric(y);
        if (nx && ny) return x.size() != y.size() ? (x.size() < y.size() ? -1 : 1) : x.compare(y) < 0 ? -1 : x == y ? 0 : 1;
        if (nx != ny) return nx ? -1 : 1;  // numeric identifiers have lower precedence
        return x.compare(y) < 0 ? -1 : x == y ? 0 : 1;
    };
    const auto dash_a = a.find('-'), dash_b = b.find('-');
    const auto core_a = split(a.substr(0, dash_a), '.'), core_b = split(b.substr(0, dash_b), '.');
    for (std::size_t i = 0; i < std::min(core_a.size(), core_b.size()); ++i)
        if (int c = compare_ids(core_a[i], core_b[i]); c != 0) return c;
    if (core_a.size() != core_b.size()) return core_a.size() < core_b.size() ? -1 : 1;
    const bool pre_a = dash_a != std::string_view::npos, pre_b = dash_b != std::string_view::npos;
    if (!pre_a || !pre_b) return pre_a == pre_b ? 0 : pre_a ? -1 : 1;  // a pre-release precedes its release
    const auto ids_a = split(a.substr(dash_a + 1), '.'), ids_b = split(b.substr(dash_b + 1), '.');
    for (std::size_t i = 0; i < std::min(ids_a.size(), ids_b.size()); ++i)
        if (int c = compare_ids(ids_a[i], ids_b[i]); c != 0) return c;
    return ids_a.size() == ids_b.size() ? 0 : ids_a.size() < ids_b.size() ? -1 : 1;
}

namespace {

// Checks and loads one file the daemon's way: copied into the module store, identified in a
// probe child process, then loaded from the store's copy. Refusals fill `report`.
std::shared_ptr<PluginLibrary> open_through_store(const fs::path& file, const LoaderPolicy& policy, const ScanOptions& options,
                                                  PluginFileReport& report) {
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
    try {
        const ModuleStore store(*options.module_store);
        const ModuleStore::Staged staged = store.stage(file);
        // The identity comes from a child that loaded the staged copy: a file whose static
        // constructors or query crash or hang never runs in this process.
        ProbeRequest probe;
        probe.executable = options.probe_executable;
        probe.file = staged.path;
        probe.service_account = options.service_account;
        probe.timeout = options.probe_timeout;
        ProbeResult probed = run_probe(probe);
        if (!probed.ok) {
            std::string why = probed.error;
            if (auto at = why.find(staged.path.string()); at != std::string::npos)
                why.replace(at, staged.path.string().size(), file.string());
            return refuse(probed.event_id, why);
        }
        const fs::path module = store.place(staged, *probed.identity);
        auto lib = open_plugin(module, policy, report);
        report.file = file;
        if (!lib) return refuse(report.event_id, report.reason);
        const PluginIdentity& id = lib->identity;
        if (id.kind != probed.identity->kind || id.name != probed.identity->name || id.version != probed.identity->version)
            return refuse(CC_EV_PluginInfoInvalid, "answered a different identity in the probe than when loaded");
        lib->source = file;
        lib->sha256 = staged.sha256;
        return lib;
    } catch (const std::exception& e) {
        return refuse(CC_EV_PluginModuleStoreFailed, e.what());
    }
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
        auto lib = options.module_store ? open_through_store(file, policy, options, report) : open_plugin(file, policy, report);
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
        const PluginIdentity& id = candidates[i].second->identity;
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
            return compare_versions(la.identity.version, lb.identity.version) > 0;
        });
        const auto& best = candidates[group.front()];
        if (rank(*best.second) < 0) {  // a pin that no present file satisfies: nothing serves
            for (std::size_t g : group) {
                PluginFileReport& r = scan.files[candidates[g].first];
                r.accepted = false;
                r.event_id = CC_EV_PluginSuperseded;
                r.reason = "plugin '" + r.file.stem().string() + "' (" + r.file.string() + "): version " +
                           candidates[g].second->identity.version + " is not the pinned version " + sel.pins.at(id.name) +
                           " ([update] pin); not loaded";
            }
            continue;
        }
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
