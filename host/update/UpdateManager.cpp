#include "update/UpdateManager.hpp"

#include "auth/AccessPolicy.hpp"
#include "status/SupportPolicy.hpp"
#include "update/Fetcher.hpp"
#include "update/OfflineBundle.hpp"
#include "update/RepositoryIndex.hpp"
#include "update/Semver.hpp"
#include "update/TrustRoot.hpp"
#include "update/UpdateRefused.hpp"

#include <certconn/crypto.hpp>
#include <certconn/events.h>
#include <certconn/time.hpp>

#include <boost/json/serialize.hpp>
#include <boost/json/value_from.hpp>

#include <openssl/evp.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <sstream>

namespace certconn::host::update {

namespace json = boost::json;
namespace fs = std::filesystem;
using Clock = std::chrono::system_clock;

// Journal steps, in order. Each is written (atomically, fsynced) before the work it names
// starts, except the placement, which is journaled right after the file is renamed into place
// (the rename is the commit point). CERTCONN_UPDATE_PAUSE_AT=<step> pauses right after the step
// is journaled, so tests can kill -9 there.
//   checking        a repository is being checked (no update in progress)
//   index-verified  its index verified and its sequence persisted
//   downloading     a plugin file is being fetched (nothing on disk but a temporary file)
//   downloaded      fetched, not yet verified
//   verified        size and SHA-256 match the signed index
//   placed          the file is in <state_dir>/updates (the loader will consider it from now on)
//   published       the reload returned and the new version serves
//   watching        the post-publish watch runs
//   retiring        the watch passed; the superseded file in updates/ is being removed
//   rolling-back    the new version is marked bad and its file is being removed
// At start: before "placed" the update rolls back (temporary files removed; the next check
// tries again); from "placed" to "watching" it resumes the watch if the new version serves,
// else rolls back; "retiring" and "rolling-back" are finished.

namespace {

constexpr std::uint64_t kMinWatchSample = 20;  // calls before the error rate is judged

std::string now_text() {
    return sdk::utc_iso8601(Clock::now());
}

std::string kind_text(cc_plugin_kind kind) {
    return kind_name(kind);
}

std::string key_of(const std::string& name, const std::string& version) {
    return VersionSelection::key(name, version);
}

json::object reply(int exit_code, const std::string& out, const std::string& err = {}) {
    return json::object{{"exit_code", exit_code}, {"stdout", out}, {"stderr", err}};
}

std::string arg(const json::object& args, const char* key) {
    const auto* v = args.if_contains(key);
    return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

bool flag(const json::object& args, const char* key) {
    const auto* v = args.if_contains(key);
    return v && v->is_bool() && v->as_bool();
}

int compare(const std::string& a, const std::string& b) {
    try {
        return compare_versions(a, b);
    } catch (const std::invalid_argument&) {
        return a.compare(b);  // not semantic versions: never chosen (the index refuses them), only ordered
    }
}

std::string window_text(const std::optional<std::pair<int, int>>& w) {
    if (!w) return "";
    auto hhmm = [](int m) {
        auto two = [](int n) { return std::string(n < 10 ? "0" : "") + std::to_string(n); };
        return two(m / 60) + ":" + two(m % 60);
    };
    return hhmm(w->first) + "-" + hhmm(w->second);
}

std::string fetch_failure_reason(FetchFailure f) {
    return f == FetchFailure::Oversize ? "oversize" : f == FetchFailure::Stalled ? "stalled" : "";
}

}  // namespace

/// One repository's offer for one plugin, and why it was or was not applied.
struct UpdateManager::Available {
    std::string repository;
    std::string version;  // the newest version offered (or the pinned one)
    std::string status;   // "up to date", "install", "deferred", "refused", "bad", "pinned", "none"
    std::string reason;   // human-readable
    std::string refusal;  // a refusal reason code when status is "refused"
};

struct UpdateManager::Candidate {
    UpdateRepository repository;
    std::string base_url;
    IndexEntry entry;
    std::uint64_t sequence = 0;
    ServingPlugin serving;
    bool downgrade = false;
};

UpdateManager::UpdateManager(UpdateSettings settings, fs::path state_dir, EventLog& log, UpdateHost host)
    : state_dir_(std::move(state_dir)), log_(log), host_(std::move(host)), settings_(std::move(settings)) {
    for (const fs::path& dir : {update_dir(), updates_dir(), update_dir() / "roots"}) {
        fs::create_directories(dir);
        ::chmod(dir.c_str(), 0700);
    }
    instance_id_ = settings_.instance_id;
    if (instance_id_.empty()) {
        const fs::path file = state_dir_ / "instance-id";
        std::error_code ec;
        if (fs::exists(file, ec)) {
            instance_id_ = crypto::read_file(file, "instance id");
            while (!instance_id_.empty() && (instance_id_.back() == '\n' || instance_id_.back() == '\r'))
                instance_id_.pop_back();
        }
        if (instance_id_.empty()) {
            instance_id_ = crypto::uuid4();
            crypto::write_file_atomic(file, instance_id_ + "\n");
        }
    }
    try {
        state_ = UpdateState::load(state_file());
    } catch (const std::exception& e) {
        // Kept aside, not overwritten: it holds the sequences that protect against rollback.
        const fs::path aside = state_file().string() + ".unreadable";
        std::error_code ec;
        fs::rename(state_file(), aside, ec);
        log_.emit(CC_EV_UpdateCheckFailed, CC_LEVEL_ERROR,
                  std::string("update state unreadable (") + e.what() + "); moved to " + aside.string() +
                      "; index sequences start again from the repositories' current ones");
    }
}

UpdateManager::~UpdateManager() {
    stop();
}

void UpdateManager::start() {
    {
        std::lock_guard run(run_mutex_);
        recover();
    }
    next_check_ = std::chrono::steady_clock::now();
    thread_ = std::thread([this] { loop(); });
}

void UpdateManager::stop() {
    {
        std::lock_guard lock(wake_mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void UpdateManager::configure(UpdateSettings settings) {
    if (settings.instance_id.empty()) settings.instance_id = instance_id_;
    {
        std::lock_guard lock(mutex_);
        settings_ = std::move(settings);
    }
    {
        std::lock_guard lock(wake_mutex_);
        next_check_ = std::chrono::steady_clock::now();
    }
    wake_.notify_all();
}

VersionSelection UpdateManager::selection() const {
    std::lock_guard lock(mutex_);
    return selection_of(state_, settings_.pins);
}

const std::vector<UpdateManager::CommandSpec>& UpdateManager::commands() {
    static const std::vector<CommandSpec> all = {
        {"update status", "plugin updates: serving and available versions, why not applied, repositories",
         R"j([{"name":"json","kind":"flag","help":"machine-readable output"}])j", "update:read"},
        {"update check", "check every repository now and report what is available (installs nothing)", "[]", "update:write"},
        {"update apply",
         "check and install available updates now, whatever the mode, window or rollout share (pins and bad marks still apply)",
         R"j([{"name":"bundle","kind":"string","help":"an offline bundle (.tar: index.json, its .minisig, roots, plugins/); absolute path the service can read"},
              {"name":"repository","kind":"string","help":"the configured repository whose trust root verifies the bundle (needed when several are configured)"}])j",
         "update:write"},
        {"update rollback", "mark the serving version of a plugin bad and return to the previous one",
         R"j([{"name":"name","kind":"string","positional":true,"required":true,"help":"plugin name"}])j", "update:write"},
        {"update pin", "allow only VERSION of plugin NAME (\"none\" removes the pin); [update] pin in the configuration wins",
         R"j([{"name":"name","kind":"string","positional":true,"required":true,"help":"plugin name"},
              {"name":"version","kind":"string","positional":true,"required":true,"help":"version, or none"}])j",
         "update:write"},
    };
    return all;
}

// ---- background thread ------------------------------------------------------------------

void UpdateManager::loop() {
    for (;;) {
        bool due = false;
        {
            std::unique_lock lock(wake_mutex_);
            wake_.wait_for(lock, std::chrono::seconds(1), [&] { return stopping_ || check_requested_; });
            if (stopping_) return;
            due = check_requested_ || std::chrono::steady_clock::now() >= next_check_;
            check_requested_ = false;
        }
        try {
            watch_tick();
            UpdateSettings::Mode mode;
            std::chrono::seconds interval;
            {
                std::lock_guard lock(mutex_);
                mode = settings_.mode;
                interval = settings_.check_interval;
            }
            if (due && mode != UpdateSettings::Mode::Off) {
                {
                    std::lock_guard lock(wake_mutex_);
                    next_check_ = std::chrono::steady_clock::now() + interval;
                }
                std::lock_guard run(run_mutex_);
                check_all(Trigger::Schedule, std::nullopt, {});
            }
        } catch (const std::exception& e) {
            log_.emit(CC_EV_UpdateCheckFailed, CC_LEVEL_ERROR, std::string("update manager: ") + e.what());
        }
    }
}

void UpdateManager::pause_point(const std::string& step) const {
    // getenv races only with setenv/putenv, which this program never calls.
    const char* at = std::getenv("CERTCONN_UPDATE_PAUSE_AT");  // NOLINT(concurrency-mt-unsafe): see above
    if (at == nullptr || step != at) return;
    crypto::write_file_atomic(update_dir() / ("paused-at-" + step), now_text() + "\n");
    for (;;) {
        {
            std::lock_guard lock(wake_mutex_);
            if (stopping_) return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
}

void UpdateManager::journal_step(Journal& journal, const std::string& step) {
    journal.step = step;
    journal.save(journal_file());
    pause_point(step);
}

void UpdateManager::save_state() {
    std::lock_guard lock(mutex_);
    state_.save(state_file());
}

void UpdateManager::refuse(const std::string& reason, const std::string& repository, const std::string& plugin,
                           const std::string& version, const std::string& message) {
    log_.emit(CC_EV_UpdateRefused, CC_LEVEL_ERROR, message + " (" + reason + "); the serving version is untouched", {},
              {{"reason", reason}, {"repository", repository}, {"plugin", plugin}, {"version", version}});
}

bool UpdateManager::in_window(Clock::time_point now) const {
    std::optional<std::pair<int, int>> w;
    {
        std::lock_guard lock(mutex_);
        w = settings_.maintenance_window;
    }
    if (!w) return true;
    const auto day = std::chrono::floor<std::chrono::days>(now);
    const int minute = static_cast<int>(std::chrono::duration_cast<std::chrono::minutes>(now - day).count());
    return w->first < w->second ? (minute >= w->first && minute < w->second) : (minute >= w->first || minute < w->second);
}

std::optional<ServingPlugin> UpdateManager::serving_plugin(const std::string& kind, const std::string& name,
                                                           bool with_health) const {
    for (auto& p : host_.serving(with_health))
        if (kind_text(p.kind) == kind && p.name == name) return p;
    return std::nullopt;
}

void UpdateManager::report_support(const std::vector<ServingPlugin>& serving) {
    bool changed = false;
    for (const auto& p : serving) {
        const SupportStatus s = support_status(p.release_date);
        const std::string key = kind_text(p.kind) + "/" + p.name;
        const std::string now = support_state_name(s.state);
        std::string before;
        {
            std::lock_guard lock(mutex_);
            auto it = state_.support.find(key);
            if (it != state_.support.end()) before = it->second;
            if (before == now) continue;
            state_.support[key] = now;
        }
        changed = true;
        if (before.empty() && s.state == SupportState::Supported) continue;  // first sight, nothing to say
        log_.emit(CC_EV_SupportStateChanged, s.state == SupportState::Unsupported ? CC_LEVEL_ERROR : CC_LEVEL_WARNING,
                  kind_text(p.kind) + " plugin '" + p.name + "' " + p.version + ": " + (before.empty() ? "" : before + " -> ") +
                      now + " (" + s.message + ")",
                  {}, {{"plugin", p.name}, {"version", p.version}, {"state", now}, {"previous", before}});
    }
    if (changed) save_state();
}

// ---- checking ---------------------------------------------------------------------------

bool UpdateManager::refresh_repository(const UpdateRepository& repo, const std::string& base_url, std::string& outcome) {
    UpdateSettings settings;
    RepositoryState rs;
    {
        std::lock_guard lock(mutex_);
        settings = settings_;
        rs = state_.repositories[repo.name];
    }
    rs.last_check = now_text();
    FetchOptions small{std::size_t{256} * 1024, settings.stall_timeout, settings.download_timeout, repo.ca_bundle};
    FetchOptions index_options = small;
    index_options.max_bytes = kMaxIndexSize;
    auto finish = [&](const std::string& result) {
        rs.last_result = result;
        {
            std::lock_guard lock(mutex_);
            state_.repositories[repo.name] = rs;
        }
        save_state();
        outcome = "repository " + repo.name + ": " + result;
    };
    std::string stage = "trust root";
    try {
        // 1. The trust root: the newest one trusted so far, then the rotation chain.
        const fs::path stored = update_dir() / "roots" / (repo.name + ".root.json");
        auto read_root = [](const fs::path& file) {
            std::error_code ec;
            const fs::path sig = file.string() + ".minisig";
            return std::make_pair(crypto::read_file(file, "trust root"),
                                  fs::exists(sig, ec) ? crypto::read_file(sig, "trust root signatures") : std::string());
        };
        const auto [configured_bytes, configured_sigs] = read_root(repo.root);
        TrustRoot root = load_initial_root(configured_bytes, configured_sigs);
        std::error_code ec;
        if (fs::exists(stored, ec)) {
            try {
                const auto [b, s] = read_root(stored);
                TrustRoot persisted = load_initial_root(b, s);
                if (persisted.version > root.version) root = std::move(persisted);
            } catch (const std::exception& e) {
                log_.emit(CC_EV_UpdateCheckFailed, CC_LEVEL_WARNING,
                          "repository " + repo.name + ": the stored trust root " + stored.string() + " is not usable (" +
                              e.what() + "); following the rotation chain again from the configured root",
                          {}, {{"repository", repo.name}});
            }
        }
        const std::uint64_t before = root.version;
        std::map<std::uint64_t, std::string> signatures;  // of each root fetched, to keep beside the newest
        root =
            follow_root_chain(std::move(root), [&](std::uint64_t version) -> std::optional<std::pair<std::string, std::string>> {
                const std::string url = resolve_url(base_url, std::to_string(version) + ".root.json");
                try {
                    std::string bytes = fetch(url, small);
                    std::string sigs = fetch(url + ".minisig", small);
                    signatures[version] = sigs;
                    return std::make_pair(std::move(bytes), std::move(sigs));
                } catch (const FetchError& e) {
                    if (e.failure == FetchFailure::NotFound) return std::nullopt;
                    throw;
                }
            });
        if (root.version > before) {
            // Signatures first: a crash between the two leaves a pair that does not verify, which
            // is ignored at the next check (the chain is followed again from the configured root).
            crypto::write_file_atomic(stored.string() + ".minisig", signatures[root.version]);
            crypto::write_file_atomic(stored, root.bytes);
            log_.emit(CC_EV_UpdateRootRotated, CC_LEVEL_WARNING,
                      "repository " + repo.name + ": trust root rotated from version " + std::to_string(before) + " to " +
                          std::to_string(root.version),
                      {}, {{"repository", repo.name}, {"from", before}, {"to", root.version}});
        }
        const auto now = std::chrono::floor<std::chrono::seconds>(Clock::now());
        if (root.expires <= now) {
            log_.emit(CC_EV_UpdateIndexExpired, CC_LEVEL_WARNING,
                      "repository " + repo.name + ": its trust root (version " + std::to_string(root.version) +
                          ") has expired; updates from it are frozen, the serving versions keep running",
                      {}, {{"repository", repo.name}});
            finish("frozen: trust root expired");
            return false;
        }

        // 2. The index, signed by a threshold of the root's keys.
        stage = "index";
        const std::string index_url = resolve_url(base_url, "index.json");
        const std::string bytes = fetch(index_url, index_options);
        const std::string sigs = fetch(index_url + ".minisig", small);
        RepositoryIndex index;
        try {
            index = verify_index(root, bytes, sigs, rs.sequence, now, rs.index_sha256);
        } catch (const UpdateRefused& e) {
            if (e.reason != RefusalReason::expired) throw;
            log_.emit(
                CC_EV_UpdateIndexExpired, CC_LEVEL_WARNING,
                "repository " + repo.name + ": " + e.what() + "; updates from it are frozen, the serving versions keep running",
                {}, {{"repository", repo.name}});
            finish("frozen: index expired");
            return false;
        }
        rs.sequence = index.sequence;
        rs.index_sha256 = index.sha256;
        rs.expires = sdk::utc_iso8601(index.expires);
        rs.entries.clear();
        for (const auto& entry : index.entries)
            rs.entries.push_back(entry_json(entry));
        {
            // A version marked bad stays bad until a newer index publishes it with other bytes.
            std::lock_guard lock(mutex_);
            for (auto it = state_.bad.begin(); it != state_.bad.end();) {
                bool lifted = false;
                if (it->second.repository == repo.name && index.sequence > it->second.sequence)
                    for (const auto& entry : index.entries)
                        lifted |= key_of(entry.name, entry.version) == it->first && entry.sha256 != it->second.sha256;
                it = lifted ? state_.bad.erase(it) : std::next(it);
            }
        }
        finish("ok (sequence " + std::to_string(index.sequence) + ", " + std::to_string(index.entries.size()) +
               " plugin file(s))");
        log_.emit(CC_EV_UpdateChecked, CC_LEVEL_INFO,
                  "repository " + repo.name + ": index sequence " + std::to_string(index.sequence) + " verified (" +
                      std::to_string(index.entries.size()) + " plugin file(s), expires " + rs.expires + ")",
                  {}, {{"repository", repo.name}, {"sequence", index.sequence}});
        return true;
    } catch (const UpdateRefused& e) {
        refuse(refusal_reason_name(e.reason), repo.name, "", "",
               "repository " + repo.name + ": " + stage + " refused: " + e.what());
        finish(std::string("refused: ") + refusal_reason_name(e.reason) + ": " + e.what());
    } catch (const FetchError& e) {
        if (const std::string reason = fetch_failure_reason(e.failure); !reason.empty()) {
            refuse(reason, repo.name, "", "", "repository " + repo.name + ": " + stage + ": " + e.what());
            finish("refused: " + reason + ": " + e.what());
        } else {
            log_.emit(CC_EV_UpdateCheckFailed, CC_LEVEL_WARNING,
                      "repository " + repo.name + ": " + stage + " could not be fetched: " + e.what() + "; will retry", {},
                      {{"repository", repo.name}});
            finish(std::string("failed: ") + e.what());
        }
    } catch (const std::exception& e) {
        log_.emit(CC_EV_UpdateCheckFailed, CC_LEVEL_WARNING,
                  "repository " + repo.name + ": " + stage + ": " + e.what() + "; will retry", {}, {{"repository", repo.name}});
        finish(std::string("failed: ") + e.what());
    }
    return false;
}

std::string UpdateManager::check_all(Trigger trigger, const std::optional<fs::path>& bundle_dir,
                                     const std::string& bundle_repository) {
    UpdateSettings settings;
    bool busy = false;
    {
        std::lock_guard lock(mutex_);
        settings = settings_;
        busy = watching_.has_value();
    }
    std::ostringstream out;
    const std::vector<ServingPlugin> serving = host_.serving(false);
    report_support(serving);

    // 1. Refresh each repository; only those verified now offer anything.
    std::map<std::string, std::pair<UpdateRepository, std::string>> fresh;  // name -> (settings, base URL)
    for (const auto& repo : settings.repositories) {
        if (bundle_dir && repo.name != bundle_repository) continue;
        const std::string base = bundle_dir ? "file://" + bundle_dir->string() + "/" : repo.url;
        Journal check{};
        check.repository = repo.name;
        check.started = now_text();
        if (!busy) journal_step(check, "checking");
        std::string outcome;
        const bool ok = refresh_repository(repo, base, outcome);
        out << outcome << "\n";
        if (!ok) continue;
        if (!busy) journal_step(check, "index-verified");
        fresh.emplace(repo.name, std::make_pair(repo, base));
    }
    if (!busy) Journal::clear(journal_file());

    // 2. For each serving plugin, what each repository offers and whether it may be applied.
    // Quiet: no events, nothing chosen (the report after an install).
    std::vector<Candidate> chosen;
    auto evaluate = [&](const std::vector<ServingPlugin>& serving_now, bool quiet) {
        json::array report;
        for (const auto& plugin : serving_now) {
            const std::string kind = kind_text(plugin.kind);
            const auto config_pin = settings.pins.find(plugin.name);
            std::optional<std::string> pin;
            bool pin_from_config = false;
            {
                std::lock_guard lock(mutex_);
                if (config_pin != settings.pins.end()) {
                    pin = config_pin->second;
                    pin_from_config = true;
                } else if (auto it = state_.pins.find(plugin.name); it != state_.pins.end()) {
                    pin = it->second;
                }
            }
            std::optional<Candidate> best;
            json::array offers;
            for (const auto& [repo_key, repo_and_base] : fresh) {
                const std::string& repo_name = repo_key;  // clang before 16 cannot capture a structured binding
                const UpdateRepository& repo = repo_and_base.first;
                if (!repo.trusted_for(plugin.name)) continue;
                RepositoryState rs;
                {
                    std::lock_guard lock(mutex_);
                    rs = state_.repositories[repo_name];
                }
                std::vector<IndexEntry> entries;
                for (std::size_t i = 0; i < rs.entries.size(); ++i) {
                    IndexEntry e = detail::parse_entry(rs.entries[i], "entry " + std::to_string(i));
                    if (e.kind == kind && e.name == plugin.name) entries.push_back(std::move(e));
                }
                std::sort(entries.begin(), entries.end(),
                          [](const IndexEntry& a, const IndexEntry& b) { return compare(a.version, b.version) > 0; });
                Available a{repo_name, "", "none", "offers no version of this plugin", ""};
                auto once = [&](const std::string& what) {  // a refusal or offer is reported once per index sequence
                    if (quiet) return false;
                    std::lock_guard lock(mutex_);
                    return reported_.insert(repo_name + "#" + std::to_string(rs.sequence) + "#" + plugin.name + "#" + what)
                        .second;
                };
                auto refuse_entry = [&](const IndexEntry& e, RefusalReason why, const std::string& message) {
                    a.status = "refused";
                    a.refusal = refusal_reason_name(why);
                    a.version = e.version;
                    a.reason = message;
                    if (once(e.version + "#" + a.refusal))
                        refuse(a.refusal, repo_name, plugin.name, e.version,
                               kind + " plugin '" + plugin.name + "' " + e.version + " from repository " + repo_name + ": " +
                                   message);
                };
                std::optional<IndexEntry> pick;
                bool downgrade = false;
                if (!entries.empty()) {
                    a.version = entries.front().version;
                    if (pin) {
                        auto it =
                            std::find_if(entries.begin(), entries.end(), [&](const IndexEntry& e) { return e.version == *pin; });
                        if (*pin == plugin.version) {
                            a = {repo_name, *pin, "pinned", "pinned to the serving version " + *pin, ""};
                            if (compare(entries.front().version, *pin) > 0)
                                a.reason += "; " + entries.front().version + " is available";
                        } else if (it == entries.end()) {
                            a = {repo_name, entries.front().version, "pinned",
                                 "pinned to " + *pin + ", which this repository does not offer", ""};
                        } else {
                            pick = *it;
                            downgrade = compare(it->version, plugin.version) < 0;
                        }
                    } else if (compare(entries.front().version, plugin.version) < 0) {
                        if (settings.allow_downgrade) {
                            pick = entries.front();
                            downgrade = true;
                        } else {
                            refuse_entry(entries.front(), RefusalReason::downgrade,
                                         "the newest version offered is lower than the serving " + plugin.version +
                                             " (set allow_downgrade to accept it)");
                        }
                    } else if (compare(entries.front().version, plugin.version) == 0) {
                        a = {repo_name, plugin.version, "up to date", "the serving version is the newest offered", ""};
                    } else {
                        for (const auto& e : entries) {
                            if (compare(e.version, plugin.version) <= 0) break;
                            pick = e;
                            break;
                        }
                    }
                }
                // The checks every chosen entry must pass; when the newest fails, older newer-than-serving ones are tried.
                while (pick) {
                    const IndexEntry e = *pick;
                    pick.reset();
                    std::string bad_reason;
                    {
                        std::lock_guard lock(mutex_);
                        if (auto it = state_.bad.find(key_of(e.name, e.version)); it != state_.bad.end())
                            bad_reason = it->second.reason;
                    }
                    bool ok = false;
                    if (!bad_reason.empty()) {
                        a = {repo_name, e.version, "bad", "marked bad: " + bad_reason, ""};
                    } else if (!abi_compatible(e, CERTCONN_ABI_MAJOR, CERTCONN_ABI_MINOR)) {
                        refuse_entry(e, RefusalReason::incompatible_abi,
                                     "built for SDK " + std::to_string(e.abi_major) + "." + std::to_string(e.abi_minor) +
                                         ", this host speaks " + std::to_string(CERTCONN_ABI_MAJOR) + ".0-" +
                                         std::to_string(CERTCONN_ABI_MAJOR) + "." + std::to_string(CERTCONN_ABI_MINOR));
                    } else if (!host_compatible(e, CERTCONN_VERSION)) {
                        refuse_entry(e, RefusalReason::incompatible_host,
                                     "needs certconnector " + e.min_host +
                                         " or newer, this host is " CERTCONN_VERSION
                                         " (the host is updated by the system package manager)");
                    } else if (trigger != Trigger::Apply && !pin && !rollout_includes(instance_id_, e)) {
                        a = {repo_name, e.version, "deferred",
                             "outside the rollout share (" + std::to_string(e.rollout_percent) + "% of instances)", ""};
                        if (once(e.version + "#rollout"))
                            log_.emit(
                                CC_EV_UpdateDeferred, CC_LEVEL_INFO,
                                kind + " plugin '" + plugin.name + "' " + e.version + ": " + a.reason, {},
                                {{"plugin", plugin.name}, {"version", e.version}, {"repository", repo_name}, {"why", "rollout"}});
                    } else {
                        ok = true;
                    }
                    if (ok) {
                        a = {repo_name, e.version, "install", downgrade ? "a downgrade allowed by the configuration" : "newer",
                             ""};
                        if (!best || compare(e.version, best->entry.version) > 0)
                            best = Candidate{repo, repo_and_base.second, e, rs.sequence, plugin, downgrade};
                        break;
                    }
                    if (downgrade || pin) break;
                    // Try the next newer-than-serving entry below this one.
                    for (const auto& next : entries)
                        if (compare(next.version, e.version) < 0 && compare(next.version, plugin.version) > 0) {
                            pick = next;
                            break;
                        }
                }
                offers.push_back(json::object{{"repository", a.repository},
                                              {"version", a.version},
                                              {"status", a.status},
                                              {"reason", a.reason},
                                              {"refusal", a.refusal}});
            }
            std::string decision;
            if (best) {
                const std::string what = kind + " plugin '" + plugin.name + "' " + plugin.version + " -> " + best->entry.version +
                                         " (repository " + best->repository.name + ")";
                std::string deferred;
                if (busy)
                    deferred = "another update is being watched";
                else if (trigger == Trigger::Check)
                    deferred = "`update check` only reports";
                else if (trigger == Trigger::Schedule && settings.mode == UpdateSettings::Mode::Notify)
                    deferred = "mode notify";
                else if (trigger == Trigger::Schedule && !in_window(Clock::now()))
                    deferred = "outside the maintenance window " + window_text(settings.maintenance_window) + " UTC";
                bool announce = false;
                {
                    std::lock_guard lock(mutex_);
                    announce = !quiet && reported_.insert("available#" + plugin.name + "@" + best->entry.version).second;
                }
                if (announce)
                    log_.emit(CC_EV_UpdateAvailable, CC_LEVEL_INFO, "update available: " + what, {},
                              {{"plugin", plugin.name},
                               {"version", best->entry.version},
                               {"serving", plugin.version},
                               {"repository", best->repository.name}});
                if (!deferred.empty()) {
                    decision = "deferred: " + deferred;
                    bool tell = false;
                    {
                        std::lock_guard lock(mutex_);
                        tell = !quiet &&
                               reported_.insert("deferred#" + plugin.name + "@" + best->entry.version + "#" + deferred).second;
                    }
                    if (tell && trigger == Trigger::Schedule)
                        log_.emit(CC_EV_UpdateDeferred, CC_LEVEL_INFO, "update waits: " + what + ": " + deferred, {},
                                  {{"plugin", plugin.name}, {"version", best->entry.version}, {"why", deferred}});
                } else {
                    decision = "installing";
                    if (!quiet) chosen.push_back(*best);
                }
                if (!quiet) out << what << ": " << decision << "\n";
            }
            report.push_back(json::object{{"kind", kind},
                                          {"name", plugin.name},
                                          {"serving", plugin.version},
                                          {"file", plugin.file.string()},
                                          {"support", support_state_name(support_status(plugin.release_date).state)},
                                          {"pin", pin ? json::value(*pin) : json::value(nullptr)},
                                          {"pin_source", pin ? (pin_from_config ? "configuration" : "update pin") : ""},
                                          {"available", offers},
                                          {"decision", decision}});
        }
        {
            std::lock_guard lock(mutex_);
            report_ = report;
        }
    };
    evaluate(serving, false);

    // 3. Install, one at a time (a watch starts after each; the next waits for the next check).
    if (!chosen.empty()) {
        out << install(chosen.front()) << "\n";
        {
            std::lock_guard lock(mutex_);
            busy = watching_.has_value();
        }
        evaluate(host_.serving(false), true);
    }
    return out.str();
}

// ---- installing -------------------------------------------------------------------------

std::string UpdateManager::install(const Candidate& c) {
    UpdateSettings settings;
    {
        std::lock_guard lock(mutex_);
        settings = settings_;
    }
    const IndexEntry& e = c.entry;
    const std::string what = e.kind + " plugin '" + e.name + "' " + e.version;
    Journal j;
    j.repository = c.repository.name;
    j.kind = e.kind;
    j.name = e.name;
    j.version = e.version;
    j.sha256 = e.sha256;
    j.sequence = c.sequence;
    j.previous_version = c.serving.version;
    j.previous_file = c.serving.file.string();
    j.file = (updates_dir() / (e.kind + "-" + e.name + "-" + e.version + ".so")).string();
    j.baseline_calls = c.serving.calls;
    j.baseline_failures = c.serving.failures;
    j.started = now_text();
    journal_step(j, "downloading");
    auto abandon = [&](const std::string& result) {
        Journal::clear(journal_file());
        return what + ": " + result;
    };

    std::string url;
    try {
        url = resolve_url(c.base_url, e.url);
    } catch (const std::invalid_argument& ex) {
        refuse("malformed", c.repository.name, e.name, e.version, what + ": " + ex.what());
        return abandon("refused (malformed URL)");
    }
    const std::string scheme = url_scheme(url);
    if (scheme != "https" && scheme != url_scheme(c.base_url)) {
        refuse("malformed", c.repository.name, e.name, e.version,
               what + ": its URL " + url + " is neither https:// nor in the repository itself");
        return abandon("refused (URL scheme)");
    }
    std::string bytes;
    try {
        bytes = fetch(url, FetchOptions{static_cast<std::size_t>(e.size), settings.stall_timeout, settings.download_timeout,
                                        c.repository.ca_bundle});
    } catch (const FetchError& ex) {
        if (const std::string reason = fetch_failure_reason(ex.failure); !reason.empty()) {
            refuse(reason, c.repository.name, e.name, e.version, what + ": " + ex.what());
            return abandon("refused (" + reason + ")");
        }
        log_.emit(CC_EV_UpdateCheckFailed, CC_LEVEL_WARNING, what + ": download failed: " + ex.what() + "; will retry", {},
                  {{"repository", c.repository.name}, {"plugin", e.name}});
        return abandon(std::string("download failed: ") + ex.what());
    }
    log_.emit(CC_EV_UpdateDownloaded, CC_LEVEL_INFO, what + ": downloaded " + std::to_string(bytes.size()) + " bytes from " + url,
              {}, {{"plugin", e.name}, {"version", e.version}, {"repository", c.repository.name}});
    journal_step(j, "downloaded");

    if (bytes.size() != e.size) {
        refuse(
            "tampered_size", c.repository.name, e.name, e.version,
            what + ": the file has " + std::to_string(bytes.size()) + " bytes, the signed index says " + std::to_string(e.size));
        return abandon("refused (tampered_size)");
    }
    if (const std::string digest = sha256_hex(bytes); digest != e.sha256) {
        refuse("tampered_hash", c.repository.name, e.name, e.version,
               what + ": the file's SHA-256 is " + digest + ", the signed index says " + e.sha256);
        return abandon("refused (tampered_hash)");
    }
    log_.emit(CC_EV_UpdateVerified, CC_LEVEL_INFO, what + ": size and SHA-256 match the signed index", {},
              {{"plugin", e.name}, {"version", e.version}, {"sha256", e.sha256}});
    journal_step(j, "verified");

    if (c.downgrade) {
        // The loader serves the highest version present; a downgrade holds by a pin.
        std::lock_guard lock(mutex_);
        state_.pins[e.name] = e.version;
    }
    if (c.downgrade) save_state();
    crypto::write_file_atomic(j.file, bytes, 0600);  // temporary file, fsync, rename: the commit point
    journal_step(j, "placed");

    const std::vector<PluginFileReport> reports = host_.reload_plugins();
    const auto now_serving = serving_plugin(e.kind, e.name, false);
    if (!now_serving || now_serving->version != e.version) {
        std::string why = "the loader did not choose it";
        for (const auto& r : reports)
            if (r.file == fs::path(j.file) && !r.accepted) why = r.reason;
        {
            std::lock_guard lock(mutex_);
            state_.bad[key_of(e.name, e.version)] =
                BadVersion{c.repository.name, c.sequence, e.sha256, "refused by the loader: " + why};
            if (c.downgrade) state_.pins.erase(e.name);
        }
        save_state();
        std::error_code ec;
        fs::remove(j.file, ec);
        refuse("not_loaded", c.repository.name, e.name, e.version, what + " did not load: " + why + "; marked bad");
        host_.reload_plugins();
        return abandon("refused by the loader: " + why);
    }
    journal_step(j, "published");
    log_.emit(CC_EV_UpdateInstalled, CC_LEVEL_INFO,
              what + " serves (was " + c.serving.version + "); watching it for " + std::to_string(settings.watch.count()) + " s",
              {},
              {{"plugin", e.name}, {"version", e.version}, {"previous", c.serving.version}, {"repository", c.repository.name}});
    {
        std::lock_guard lock(mutex_);
        watching_ = j;
        watch_until_ = std::chrono::steady_clock::now() + settings.watch;
    }
    journal_step(j, "watching");
    return what + ": installed (was " + c.serving.version + "), watching for " + std::to_string(settings.watch.count()) + " s";
}

void UpdateManager::watch_tick() {
    std::optional<Journal> j;
    std::chrono::steady_clock::time_point until;
    {
        std::lock_guard lock(mutex_);
        j = watching_;
        until = watch_until_;
    }
    if (!j) return;
    std::lock_guard run(run_mutex_);
    const auto p = serving_plugin(j->kind, j->name, true);
    if (!p || p->version != j->version) {
        // Someone else changed what serves (an operator's reload or pin): the watch has nothing to judge.
        std::lock_guard lock(mutex_);
        watching_.reset();
        Journal::clear(journal_file());
        return;
    }
    if (p->healthy && !*p->healthy) {
        roll_back(*j, "its health check failed after publish", false);
        return;
    }
    if (p->calls >= kMinWatchSample) {
        const double old_rate =
            j->baseline_calls ? static_cast<double>(j->baseline_failures) / static_cast<double>(j->baseline_calls) : 0.0;
        const double new_rate = static_cast<double>(p->failures) / static_cast<double>(p->calls);
        if (new_rate > std::max(2 * old_rate, old_rate + 0.01)) {
            std::ostringstream why;
            why << "its error rate " << p->failures << "/" << p->calls << " exceeds the previous version's "
                << j->baseline_failures << "/" << j->baseline_calls;
            roll_back(*j, why.str(), false);
            return;
        }
    }
    if (std::chrono::steady_clock::now() >= until) retire(*j);
}

void UpdateManager::retire(Journal j) {
    journal_step(j, "retiring");
    const fs::path previous(j.previous_file);
    if (!j.previous_file.empty() && previous.parent_path() == updates_dir() && previous != fs::path(j.file)) {
        std::error_code ec;
        fs::remove(previous, ec);
    }
    {
        std::lock_guard lock(mutex_);
        watching_.reset();
    }
    Journal::clear(journal_file());
    log_.emit(CC_EV_UpdateInstalled, CC_LEVEL_INFO,
              j.kind + " plugin '" + j.name + "' " + j.version + " passed its watch; " +
                  (j.previous_version.empty() ? std::string("nothing to retire") : "version " + j.previous_version + " retired"),
              {}, {{"plugin", j.name}, {"version", j.version}, {"previous", j.previous_version}, {"repository", j.repository}});
}

std::string UpdateManager::roll_back(const Journal& journal, const std::string& why, bool operator_asked) {
    Journal j = journal;
    {
        std::lock_guard lock(mutex_);
        state_.bad[key_of(j.name, j.version)] = BadVersion{j.repository, j.sequence, j.sha256, why};
        if (auto it = state_.pins.find(j.name); it != state_.pins.end() && it->second == j.version) state_.pins.erase(it);
    }
    save_state();
    journal_step(j, "rolling-back");
    if (!j.file.empty() && fs::path(j.file).parent_path() == updates_dir()) {
        std::error_code ec;
        fs::remove(j.file, ec);
    }
    host_.reload_plugins();
    const auto now = serving_plugin(j.kind, j.name, false);
    {
        std::lock_guard lock(mutex_);
        watching_.reset();
    }
    Journal::clear(journal_file());
    const std::string serving = now ? now->version : std::string("nothing");
    log_.emit(CC_EV_UpdateRolledBack, CC_LEVEL_ERROR,
              j.kind + " plugin '" + j.name + "' " + j.version + " rolled back" +
                  (operator_asked ? " at the operator's request" : "") + ": " + why + "; " + serving + " serves; " + j.version +
                  " is marked bad",
              {}, {{"plugin", j.name}, {"version", j.version}, {"serving", serving}, {"reason", why}});
    return j.name + " " + j.version + " rolled back; " + serving + " serves; " + j.version + " is marked bad\n";
}

// ---- recovery at start --------------------------------------------------------------------

void UpdateManager::recover() {
    // Temporary files of an interrupted placement.
    std::error_code ec;
    for (const auto& f : fs::directory_iterator(updates_dir(), ec))
        if (f.path().extension() == ".tmp") fs::remove(f.path(), ec);
    std::string problem;
    auto j = Journal::load(journal_file(), problem);
    if (!problem.empty()) {
        log_.emit(CC_EV_UpdateResumed, CC_LEVEL_WARNING, "update journal unreadable (" + problem + "); discarded");
        Journal::clear(journal_file());
        return;
    }
    if (!j) return;
    const std::string what =
        j->name.empty() ? "a check of repository " + j->repository : j->kind + " plugin '" + j->name + "' " + j->version;
    auto resumed = [&](const std::string& outcome) {
        log_.emit(CC_EV_UpdateResumed, CC_LEVEL_WARNING, "interrupted at step '" + j->step + "': " + what + ": " + outcome, {},
                  {{"step", j->step}, {"plugin", j->name}, {"version", j->version}, {"outcome", outcome}});
    };
    const std::string& step = j->step;
    if (step == "checking" || step == "index-verified") {
        Journal::clear(journal_file());
        resumed("nothing was installed; the next check starts again");
        return;
    }
    if (step == "downloading" || step == "downloaded" || step == "verified") {
        Journal::clear(journal_file());
        resumed("rolled back: the file was not placed; the next check tries again");
        return;
    }
    if (step == "placed" || step == "published" || step == "watching") {
        const auto p = serving_plugin(j->kind, j->name, false);
        if (p && p->version == j->version) {
            UpdateSettings settings;
            {
                std::lock_guard lock(mutex_);
                settings = settings_;
                watching_ = *j;
                watch_until_ = std::chrono::steady_clock::now() + settings.watch;
            }
            j->step = "watching";
            j->save(journal_file());
            resumed("resumed: " + j->version + " serves; watching it for " + std::to_string(settings.watch.count()) + " s");
            return;
        }
        resumed(roll_back(*j, "it did not serve after the restart", false));
        return;
    }
    if (step == "retiring") {
        retire(*j);
        resumed("completed: the watch had passed");
        return;
    }
    if (step == "rolling-back") {
        resumed(roll_back(*j, "a rollback was interrupted", false));
        return;
    }
    Journal::clear(journal_file());
    resumed("unknown step; discarded");
}

// ---- admin commands -----------------------------------------------------------------------

std::string UpdateManager::status_text(bool json_output) {
    UpdateSettings settings;
    UpdateState state;
    json::array report;
    std::optional<Journal> watching;
    {
        std::lock_guard lock(mutex_);
        settings = settings_;
        state = state_;
        report = report_;
        watching = watching_;
    }
    if (report.empty()) {  // no check yet in this process: what serves, nothing about offers
        for (const auto& p : host_.serving(false))
            report.push_back(json::object{{"kind", kind_text(p.kind)},
                                          {"name", p.name},
                                          {"serving", p.version},
                                          {"file", p.file.string()},
                                          {"support", support_state_name(support_status(p.release_date).state)},
                                          {"available", json::array{}},
                                          {"decision", "no check yet since the start"}});
    }
    json::array repos;
    for (const auto& r : settings.repositories) {
        const RepositoryState& rs = state.repositories[r.name];
        repos.push_back(json::object{{"name", r.name},
                                     {"url", r.url},
                                     {"plugins", json::value_from(r.plugins)},
                                     {"sequence", rs.sequence},
                                     {"expires", rs.expires},
                                     {"last_check", rs.last_check},
                                     {"last_result", rs.last_result}});
    }
    json::object bad;
    for (const auto& [key, b] : state.bad)
        bad[key] = json::object{{"reason", b.reason}, {"repository", b.repository}};
    json::object pins;
    for (const auto& [n, v] : selection_of(state, settings.pins).pins)
        pins[n] = v;
    json::object s{{"mode", update_mode_name(settings.mode)},
                   {"maintenance_window", window_text(settings.maintenance_window)},
                   {"instance_id", instance_id_},
                   {"plugins", report},
                   {"repositories", repos},
                   {"bad", bad},
                   {"pins", pins},
                   {"watching", watching ? json::value(watching->to_json()) : json::value(nullptr)}};
    if (json_output) return json::serialize(s) + "\n";

    std::ostringstream out;
    out << "update mode " << update_mode_name(settings.mode);
    if (settings.maintenance_window) out << ", maintenance window " << window_text(settings.maintenance_window) << " UTC";
    out << ", instance " << instance_id_ << "\n";
    if (watching)
        out << "watching " << watching->name << " " << watching->version << " (was " << watching->previous_version << ")\n";
    out << "plugins:\n";
    for (const auto& v : report) {
        const auto& p = v.as_object();
        out << "  " << p.at("kind").as_string().c_str() << " '" << p.at("name").as_string().c_str() << "' "
            << p.at("serving").as_string().c_str() << " (" << p.at("support").as_string().c_str() << ")";
        if (const auto* pin = p.if_contains("pin"); pin && pin->is_string()) out << ", pinned to " << pin->as_string().c_str();
        if (const auto* d = p.if_contains("decision"); d && d->is_string() && !d->as_string().empty())
            out << ": " << d->as_string().c_str();
        out << "\n";
        for (const auto& a : p.at("available").as_array()) {
            const auto& o = a.as_object();
            out << "    " << o.at("repository").as_string().c_str() << ": " << o.at("version").as_string().c_str() << " "
                << o.at("status").as_string().c_str() << " — " << o.at("reason").as_string().c_str() << "\n";
        }
    }
    out << "repositories:\n";
    for (const auto& v : repos) {
        const auto& r = v.as_object();
        out << "  " << r.at("name").as_string().c_str() << " (" << r.at("url").as_string().c_str() << "): sequence "
            << r.at("sequence").as_uint64() << ", expires " << r.at("expires").as_string().c_str() << ", last check "
            << r.at("last_check").as_string().c_str() << ": " << r.at("last_result").as_string().c_str() << "\n";
    }
    for (const auto& [key, b] : state.bad)
        out << "bad: " << key << " (" << b.reason << ")\n";
    return out.str();
}

json::object UpdateManager::command(const std::string& name, const json::object& arguments) {
    const std::string prefix = "certconnector " + name + ": ";
    try {
        if (name == "update status") return reply(0, status_text(flag(arguments, "json")));
        if (name == "update check") {
            std::lock_guard run(run_mutex_);
            return reply(0, check_all(Trigger::Check, std::nullopt, {}));
        }
        if (name == "update apply") {
            const std::string bundle = arg(arguments, "bundle");
            std::string repository = arg(arguments, "repository");
            if (bundle.empty()) {
                std::lock_guard run(run_mutex_);
                return reply(0, check_all(Trigger::Apply, std::nullopt, {}));
            }
            if (!fs::path(bundle).is_absolute())
                return reply(2, "", prefix + "--bundle needs an absolute path (the connector reads it, not the CLI)\n");
            UpdateSettings settings;
            {
                std::lock_guard lock(mutex_);
                settings = settings_;
            }
            if (repository.empty()) {
                if (settings.repositories.size() != 1)
                    return reply(2, "",
                                 prefix + "--repository NAME is needed: " + std::to_string(settings.repositories.size()) +
                                     " repositories are configured, and the bundle is verified with one's trust root\n");
                repository = settings.repositories.front().name;
            }
            if (std::none_of(settings.repositories.begin(), settings.repositories.end(),
                             [&](const UpdateRepository& r) { return r.name == repository; }))
                return reply(2, "", prefix + "no repository '" + repository + "' in [update.repositories]\n");
            std::lock_guard run(run_mutex_);
            const OfflineBundle extracted(bundle, update_dir());
            return reply(0, check_all(Trigger::Apply, extracted.directory(), repository));
        }
        if (name == "update rollback") {
            const std::string plugin = arg(arguments, "name");
            std::lock_guard run(run_mutex_);
            std::optional<Journal> watching;
            {
                std::lock_guard lock(mutex_);
                watching = watching_;
            }
            if (watching && watching->name == plugin) return reply(0, roll_back(*watching, "rolled back by the operator", true));
            std::optional<ServingPlugin> p;
            for (auto& s : host_.serving(false))
                if (s.name == plugin) p = s;
            if (!p) return reply(1, "", prefix + "no plugin '" + plugin + "' serves\n");
            Journal j;
            j.kind = kind_text(p->kind);
            j.name = p->name;
            j.version = p->version;
            j.file = p->file.string();
            {
                std::lock_guard lock(mutex_);
                if (auto it = state_.bad.find(key_of(p->name, p->version)); it != state_.bad.end())
                    j.repository = it->second.repository;
            }
            if (fs::path(j.file).parent_path() != updates_dir())
                return reply(1, "",
                             prefix + plugin + " " + p->version + " is not an update (it serves from " + j.file +
                                 "); remove or replace that file to change versions\n");
            return reply(0, roll_back(j, "rolled back by the operator", true));
        }
        if (name == "update pin") {
            const std::string plugin = arg(arguments, "name");
            const std::string version = arg(arguments, "version");
            if (version != "none" && !is_semver(version))
                return reply(2, "", prefix + "'" + version + "' is not a semantic version (e.g. 0.3.1), nor \"none\"\n");
            std::string note;
            {
                std::lock_guard lock(mutex_);
                if (version == "none")
                    state_.pins.erase(plugin);
                else
                    state_.pins[plugin] = version;
                if (auto it = settings_.pins.find(plugin); it != settings_.pins.end())
                    note = "note: [update] pin in the configuration holds " + plugin + " at " + it->second + " and wins\n";
            }
            save_state();
            std::lock_guard run(run_mutex_);
            host_.reload_plugins();  // the loader applies the pin to the files present
            {
                std::lock_guard lock(wake_mutex_);
                check_requested_ = true;  // and a check (modes auto and notify) fetches the pinned version
            }
            wake_.notify_all();
            return reply(0, version == "none" ? plugin + " is no longer pinned\n" : plugin + " pinned to " + version + "\n",
                         note);
        }
        return reply(2, "", prefix + "unknown update command\n");
    } catch (const std::exception& e) {
        return reply(1, "", prefix + e.what() + "\n");
    }
}

}  // namespace certconn::host::update
