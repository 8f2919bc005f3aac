#include "daemon/Connector.hpp"

#include "daemon/Accounts.hpp"
#include "plugins/ModuleStore.hpp"
#include "plugins/PluginProbe.hpp"
#include "status/SupportPolicy.hpp"

#include <certconn/crypto.hpp>
#include <certconn/errno_message.hpp>
#include <certconn/time.hpp>
#include <certconn/sdk.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/url/parse.hpp>

#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <iostream>
#include <thread>

namespace certconn::host {

namespace json = boost::json;
namespace fs = std::filesystem;

LoadedConfiguration load_configuration(const fs::path& file, const std::optional<fs::path>& plugin_dir,
                                       const ScanOptions* options) {
    std::vector<ConfigProblem> problems;
    auto doc = parse_config_file(file, problems);
    if (!doc) {
        LoadedConfiguration out;
        out.file = file;
        out.problems = std::move(problems);
        return out;
    }
    return load_configuration(*doc, plugin_dir, options);
}

LoadedConfiguration load_configuration(const ConfigDocument& document, const std::optional<fs::path>& plugin_dir,
                                       const ScanOptions* options) {
    LoadedConfiguration out;
    out.file = document.file;
    const ConfigDocument* doc = &document;
    out.scan = scan_plugins(plugin_dir.value_or(doc->plugin_dir()), LoaderPolicy::for_service_account(doc->service_account()),
                            options ? *options : ScanOptions{});
    if (out.scan.directory_problem) out.plugin_problems.push_back(*out.scan.directory_problem);
    for (const auto& f : out.scan.files)
        if (!f.accepted && !f.superseded) out.plugin_problems.push_back(f.reason);
    out.config = validate_config(*doc, out.scan.identities(), out.problems);
    return out;
}

ScanOptions daemon_scan_options(const fs::path& state, const std::string& service_account, VersionSelection selection) {
    ScanOptions o;
    o.extra_dirs = {state / "updates"};
    o.selection = std::move(selection);
    o.module_store = state / "modules";
    o.service_account = service_account;
    return o;
}

json::object describe_plugin_file(const PluginFileReport& report) {
    json::object o{{"file", report.file.string()},
                   {"status", report.accepted     ? "loadable"
                              : report.superseded ? "superseded"
                                                  : "refused"}};
    if (report.identity) {
        const PluginIdentity& id = *report.identity;
        const SupportStatus support = support_status(id.release_date);
        o["kind"] = kind_name(id.kind);
        o["name"] = id.name;
        o["version"] = id.version;
        o["sdk"] = std::to_string(id.abi_major) + "." + std::to_string(id.abi_minor);
        o["release_date"] = id.release_date;
        o["description"] = id.description;
        o["support"] = json::object{{"state", support_state_name(support.state)}, {"message", support.message}};
    }
    if (!report.unload_problems.empty()) {
        json::array problems;
        for (const auto& p : report.unload_problems)
            problems.emplace_back(p);
        o["cannot_unload"] = std::move(problems);
    }
    if (!report.accepted) {
        o["reason"] = report.reason;
        o["event_id"] = report.event_id;
    }
    return o;
}

namespace {

std::string section_fingerprint(const Config& c, const PluginIdentity& id) {
    json::object o;
    if (id.kind == CC_KIND_FEATURE) {
        auto it = c.feature_sections.find(id.name);
        if (it != c.feature_sections.end()) o["section"] = it->second;
        o["enabled"] = c.feature_enabled(id.name);
    } else if (id.kind == CC_KIND_TENANT) {
        if (const auto* t = c.tenant_of_plugin(id.name)) o[t->first] = t->second.settings;
    } else {
        for (const auto& [name, section] : c.cas)
            if (section.plugin == id.name) o[name] = section.settings;
    }
    o["state_dir"] = c.host.state_dir.string();
    return json::serialize(o);
}

bool wanted(const Config& c, const PluginIdentity& id) {
    switch (id.kind) {
        case CC_KIND_FEATURE: return c.feature_enabled(id.name);
        case CC_KIND_TENANT: return c.tenant_of_plugin(id.name) != nullptr;
        case CC_KIND_CA:
            for (const auto& [name, section] : c.cas)
                if (section.plugin == id.name) return true;
            return false;
    }
    return false;
}

// --- cc_http_response implemented over a Beast response --------------------------------
struct ResponseBuilder {
    int status = 200;
    std::vector<std::pair<std::string, std::string>> headers;
    StringSink body{std::size_t{64} * 1024 * 1024};
};

}  // namespace

Connector::Connector(LoadedConfiguration loaded, bool foreground)
    : config_file_(loaded.file), foreground_(foreground), scan_(std::move(loaded.scan)) {
    config_ = std::make_shared<const Config>(std::move(*loaded.config));
    access_ = std::make_shared<const AccessPolicy>(config_->auth, config_->host.service_account);
}

std::shared_ptr<const AccessPolicy> Connector::access_policy() const {
    std::lock_guard lock(state_mutex_);
    return access_;
}

Connector::~Connector() {
    std::unique_ptr<JobScheduler> jobs;
    {
        std::lock_guard lock(jobs_mutex_);  // out under the lock, stopped outside it: a plugin's
        jobs = std::move(jobs_);            // notification during the stop takes the lock too
    }
    jobs.reset();
    registry_.reset();
    http_.reset();
    ca_health_.reset();
    runtime_.reset();
    outbox_.reset();
    publication_.reset();
    if (log_) log_->flush();
}

void Connector::report_scan(const PluginScan& scan) {
    if (scan.directory_problem)
        log_->emit(CC_EV_PluginDirectoryUnsafe, CC_LEVEL_ERROR, *scan.directory_problem, {},
                   {{"directory", scan.directory.string()}});
    for (const auto& f : scan.files)
        if (!f.accepted)
            log_->emit(f.event_id, f.superseded ? CC_LEVEL_INFO : CC_LEVEL_ERROR, f.reason, {}, {{"file", f.file.string()}});
    for (const auto& lib : scan.libraries) {
        if (lib->unload_problems.empty()) continue;
        std::string why;
        for (const auto& p : lib->unload_problems)
            why += (why.empty() ? "" : "; ") + p;
        log_->emit(CC_EV_PluginCannotUnload, CC_LEVEL_WARNING,
                   std::string(kind_name(lib->identity.kind)) + " plugin '" + lib->identity.name + "' " + lib->identity.version +
                       " (" + lib->source.string() + ") cannot be unloaded after a swap: " + why,
                   {}, {{"file", lib->source.string()}, {"plugin", lib->identity.name}});
    }
}

void Connector::set_selection_provider(std::function<VersionSelection()> provider) {
    std::lock_guard lock(state_mutex_);
    selection_provider_ = std::move(provider);
}

std::vector<PluginFileReport> Connector::scan_report() const {
    std::lock_guard lock(state_mutex_);
    return scan_.files;
}

namespace {

// A probe child's init specification: the sections the plugin's generation would get.
std::string init_spec(const Config& c, const PluginIdentity& id) {
    json::object spec{{"kind", kind_name(id.kind)}, {"name", id.name}};
    if (id.kind == CC_KIND_FEATURE) {
        auto it = c.feature_sections.find(id.name);
        spec["section"] = it != c.feature_sections.end() ? it->second : json::object{};
    } else if (const auto* t = id.kind == CC_KIND_TENANT ? c.tenant_of_plugin(id.name) : nullptr) {
        spec["section"] = t->second.settings;
    } else if (id.kind == CC_KIND_CA) {
        json::object cas;
        for (const auto& [name, section] : c.cas)
            if (section.plugin == id.name) cas[name] = section.settings;
        spec["cas"] = std::move(cas);
    }
    return json::serialize(spec);
}

// This instance's id in the fleet (and to update repositories): configured, else a random one
// kept in <state_dir>/instance-id across restarts.
std::string resolve_instance_id(const std::string& configured, const fs::path& state_dir) {
    if (!configured.empty()) return configured;
    const fs::path file = state_dir / "instance-id";
    std::string id;
    std::error_code ec;
    if (fs::exists(file, ec)) {
        id = crypto::read_file(file, "instance id");
        while (!id.empty() && (id.back() == '\n' || id.back() == '\r'))
            id.pop_back();
    }
    if (id.empty()) {
        id = crypto::uuid4();
        crypto::write_file_atomic(file, id + "\n");
    }
    return id;
}

// What store_config answers plugins (abi.h): the password, read once from its file, stays in
// memory only and never appears in an event.
std::string store_config_json(const Config& c, const std::string& instance_id) {
    json::object o{{"backend", c.store.shared() ? "postgresql" : "sqlite"}, {"instance_id", instance_id}};
    if (c.store.shared()) {
        o["url"] = c.store.url;
        if (!c.store.password_file.empty()) {
            std::string password = crypto::read_file(c.store.password_file, "store password file");
            while (!password.empty() && (password.back() == '\n' || password.back() == '\r'))
                password.pop_back();
            o["password"] = password;
        }
    }
    return json::serialize(o);
}

std::string describe_version(const PluginIdentity& id) {
    return std::string(kind_name(id.kind)) + " plugin '" + id.name + "' " + id.version;
}

}  // namespace

// One call of a generation's quiesce (abi.h), on a thread of its own so a plugin that overruns
// its deadline cannot stall the reload. When the hand-over is abandoned (the next init failed)
// before quiesce returned, resume runs on that thread right after it: quiesce and resume of
// one instance never overlap. The thread keeps the generation (and its library) alive.
struct Connector::QuiesceCall {
    std::shared_ptr<const Generation> generation;
    std::mutex mutex;
    std::condition_variable done_cv;
    bool done = false;
    bool resume_when_done = false;
    bool release_when_done = false;  // the reload is over: let the generation go once quiesce returns
    std::string error;
    std::thread thread;
};

std::shared_ptr<Connector::QuiesceCall> Connector::quiesce(const std::shared_ptr<const Generation>& gen,
                                                           std::chrono::milliseconds deadline) {
    if (gen->api.struct_size <= offsetof(cc_plugin_api, quiesce) || gen->api.quiesce == nullptr) return nullptr;
    auto call = std::make_shared<QuiesceCall>();
    call->generation = gen;
    call->thread = std::thread([call, deadline] {
        const auto& g = *call->generation;
        cc_error err = sdk::detail::make_error();
        const int rc = g.api.quiesce(g.api.instance, static_cast<uint32_t>(deadline.count()), &err);
        std::unique_lock lock(call->mutex);
        if (rc != CC_OK) call->error = err.message[0] ? err.message : "failed without a message";
        call->done = true;
        if (call->resume_when_done && g.api.struct_size > offsetof(cc_plugin_api, resume) && g.api.resume) {
            lock.unlock();
            g.api.resume(g.api.instance);
            lock.lock();
        }
        std::shared_ptr<const Generation> last;  // released outside the lock (it may be the last reference)
        if (call->release_when_done) last = std::move(call->generation);
        call->done_cv.notify_all();
        lock.unlock();
    });
    quiesce_calls_.push_back(call);
    const json::object fields{{"plugin", gen->identity().name}, {"version", gen->identity().version}};
    std::unique_lock lock(call->mutex);
    if (!call->done_cv.wait_for(lock, deadline, [&] { return call->done; })) {
        log_->emit(CC_EV_PluginQuiesceFailed, CC_LEVEL_ERROR,
                   describe_version(gen->identity()) + ": quiesce did not return within " + std::to_string(deadline.count()) +
                       " ms; the next generation starts anyway",
                   {}, fields);
    } else if (!call->error.empty()) {
        log_->emit(CC_EV_PluginQuiesceFailed, CC_LEVEL_ERROR,
                   describe_version(gen->identity()) + ": quiesce failed: " + call->error, {}, fields);
    }
    return call;
}

void Connector::release_quiesce_calls() {
    // A finished call is joined and forgotten (with the generation it held); one still running
    // lets its generation go itself when quiesce returns.
    std::erase_if(quiesce_calls_, [](const std::shared_ptr<QuiesceCall>& c) {
        std::unique_lock lock(c->mutex);
        if (!c->done) {
            c->release_when_done = true;
            return false;
        }
        lock.unlock();
        c->thread.join();
        return true;
    });
}

void Connector::abandon(const std::shared_ptr<QuiesceCall>& call) {
    if (!call) return;
    const auto& g = *call->generation;
    std::unique_lock lock(call->mutex);
    if (!call->done) {
        call->resume_when_done = true;  // the quiesce thread resumes once quiesce returns
        return;
    }
    lock.unlock();
    if (g.api.struct_size > offsetof(cc_plugin_api, resume) && g.api.resume) g.api.resume(g.api.instance);
}

void Connector::join_quiesce_calls(std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    for (auto& call : quiesce_calls_) {
        std::unique_lock lock(call->mutex);
        if (!call->done_cv.wait_until(lock, deadline, [&] { return call->done; })) {
            // A plugin stuck in quiesce holds its library; unwinding the runtime under it is
            // not safe. The requests are drained and the log is flushed: leave now.
            log_->emit(
                CC_EV_PluginQuiesceFailed, CC_LEVEL_ERROR,
                describe_version(call->generation->identity()) + ": quiesce still running at stop; exiting without unloading");
            log_->flush();
            std::_Exit(1);
        }
        lock.unlock();
        call->thread.join();
    }
    quiesce_calls_.clear();  // after every thread is joined
}

// Order of a (re)load, chosen so no plugin ever sees the new configuration through an old
// generation, nor a new generation routed by the old configuration:
//  1. every changed plugin is instantiated from the new configuration (passed explicitly; the
//     runtime's published configuration is still the old one, and the old generations keep
//     serving with it). A different build replacing a serving one, and every file the update
//     manager placed, is first probed in a child process (init, health: PluginProbe.hpp).
//     Before the new generation's init, the serving one quiesces (abi.h): it stops its
//     background work and releases its state directory, and keeps answering calls;
//  2. the new configuration, the new generations and the retirements are published together
//     by PluginRuntime::commit, under the runtime's lock: CA and tenant routing read the
//     configuration and the generations under that same lock;
//  3. the replaced generations finish the calls they have in flight with the configuration
//     they were built from (their config_json and CA sections never change after init), and
//     are destroyed on the runtime's reaper thread when the last call lets go; then their
//     library is unmapped (checked: PluginStillMapped).
// A plugin whose probe or init fails is left out of step 2: its previous generation keeps
// serving (resumed, if it had quiesced).
bool Connector::apply_plugins(const std::shared_ptr<const Config>& config_ptr, const PluginScan& scan, const Config* previous) {
    const Config& config = *config_ptr;
    const fs::path updates = config.host.state_dir / "updates";
    bool probe_failed = false;

    // 1. What changes, and the init probe of each new build, before anything is quiesced.
    struct Change {
        std::shared_ptr<PluginLibrary> lib;
        std::shared_ptr<const Generation> current;
        bool new_build = false;
    };
    std::vector<Change> changes;
    std::vector<std::pair<cc_plugin_kind, std::string>> retired;
    for (const auto& lib : scan.libraries) {
        const PluginIdentity& id = lib->identity;
        const auto current = runtime_->find(id.kind, id.name);
        if (!wanted(config, id)) {
            if (current) retired.emplace_back(id.kind, id.name);
            if (id.kind == CC_KIND_FEATURE && (current || !previous))
                log_->emit(CC_EV_PluginDisabled, CC_LEVEL_INFO,
                           "feature plugin '" + id.name + "' is present but disabled in [features]", {}, {{"plugin", id.name}});
            continue;
        }
        const bool new_build = !current || current->library->file != lib->file;
        const bool changed = new_build || current->identity().version != id.version || !previous ||
                             section_fingerprint(config, id) != section_fingerprint(*previous, id);
        if (!changed) continue;
        std::error_code ec;
        const bool from_updates = !lib->source.empty() && fs::equivalent(lib->source.parent_path(), updates, ec);
        if (!lib->sha256.empty() && ((current && new_build) || from_updates) && !init_probed_.count(lib->sha256)) {
            ProbeRequest probe;
            probe.file = lib->file;
            probe.service_account = config.host.service_account;
            probe.init = true;
            probe.init_spec_json = init_spec(config, id);
            probe.scratch_dir = config.host.state_dir / "probe" / (std::string(kind_name(id.kind)) + "-" + id.name);
            probe.timeout = probe_timeout_;
            ProbeResult result = run_probe(probe);
            if (!result.ok) {
                if (auto at = result.error.find(lib->file.string()); at != std::string::npos)
                    result.error.replace(at, lib->file.string().size(), lib->source.string());
                log_->emit(CC_EV_PluginProbeFailed, CC_LEVEL_ERROR,
                           describe_version(id) + " not loaded: " + result.error +
                               (current ? "; " + current->identity().version + " keeps serving" : ""),
                           {}, {{"plugin", id.name}, {"version", id.version}, {"file", lib->source.string()}});
                if (!result.could_not_run) {
                    failed_builds_[lib->sha256] = result.error;
                    probe_failed = true;  // the next best version may serve: the caller scans again
                }
                continue;
            }
            init_probed_.insert(lib->sha256);
        }
        changes.push_back({lib, current, new_build});
    }

    // 2. Hand-over and init, one plugin at a time.
    std::vector<std::shared_ptr<const Generation>> fresh;
    std::vector<std::shared_ptr<const Generation>> replaced;
    for (const auto& change : changes) {
        const PluginIdentity& id = change.lib->identity;
        const auto handover = change.current ? quiesce(change.current, config.host.drain_timeout) : nullptr;
        std::string error;
        auto gen = runtime_->instantiate(change.lib, error, config_ptr);
        if (!gen) {  // the event is written; the previous generation (if any) keeps serving
            abandon(handover);
            continue;
        }
        fresh.push_back(gen);
        if (change.current && change.new_build) replaced.push_back(change.current);
        const SupportStatus support = support_status(id.release_date);
        if (support.state == SupportState::Outdated)
            log_->emit(CC_EV_PluginSupportWarning, CC_LEVEL_WARNING,
                       std::string(kind_name(id.kind)) + " plugin '" + id.name + "' " + id.version + ": " + support.message);
        else if (support.state == SupportState::Unsupported)
            log_->emit(CC_EV_PluginUnsupported, CC_LEVEL_ERROR,
                       std::string(kind_name(id.kind)) + " plugin '" + id.name + "' " + id.version + ": " + support.message);
    }
    // Plugins whose file disappeared from the directory stop serving (unless a pin holds them).
    for (const auto& gen : runtime_->generations()) {
        const std::pair<cc_plugin_kind, std::string> key{gen->identity().kind, gen->identity().name};
        bool present = scan.held.count(key) > 0;
        for (const auto& lib : scan.libraries)
            present |= lib->identity.kind == key.first && lib->identity.name == key.second;
        if (!present) retired.push_back(key);
    }
    // A retired generation drains without background work, so a later generation of the same
    // plugin never runs beside its threads.
    for (const auto& key : retired)
        if (auto gen = runtime_->find(key.first, key.second)) quiesce(gen, config.host.drain_timeout);
    runtime_->commit(config_ptr, fresh, retired);
    release_quiesce_calls();
    for (const auto& old : replaced) {
        const auto now = runtime_->find(old->identity().kind, old->identity().name);
        if (!now) continue;
        log_->emit(CC_EV_PluginSwapped, CC_LEVEL_INFO,
                   describe_version(now->identity()) + " serves (from " + now->library->source.string() + "); " +
                       old->identity().version + " drains its calls in flight and unloads",
                   {},
                   {{"plugin", now->identity().name},
                    {"version", now->identity().version},
                    {"previous", old->identity().version},
                    {"module", now->library->file.string()}});
    }
    return probe_failed;
}

void Connector::warn_unless_service_account() {
    const std::string& account = config_->host.service_account;
    if (account.empty()) return;
    const auto pw = account_named(account);
    if (!pw || pw->uid != geteuid()) {
        const auto me = account_of(geteuid());
        log_->emit(
            CC_EV_ServiceAccountMismatch, CC_LEVEL_WARNING,
            "running as '" + (me ? me->name : std::string("?")) + "', not as the configured service account '" + account + "'");
    }
    // Root never gets here with a service account: `run` became that account (become_service_account,
    // daemon/Privileges.cpp) before any plugin was scanned.
}

int Connector::run() {
    // The configuration the service started with: reload() replaces config_, but [host] settings
    // (listen, directories, limits, drain timeout) stay the started ones until a restart.
    const std::shared_ptr<const Config> started_with = config_;
    const Config& cfg = *started_with;
    std::error_code ec;
    fs::create_directories(cfg.host.state_dir, ec);
    if (ec) {
        std::cerr << "cannot create state_dir " << cfg.host.state_dir << ": " << ec.message() << "\n";
        return 1;
    }
    ::chmod(cfg.host.state_dir.c_str(), 0700);
    fs::create_directories(cfg.host.log_dir, ec);
    if (ec) {
        std::cerr << "cannot create log_dir " << cfg.host.log_dir << ": " << ec.message() << "\n";
        return 1;
    }
    ::chmod(cfg.host.log_dir.c_str(), 0750);

    // Signals are taken by sigwait() below; block them before any thread starts.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    if (::signal(SIGPIPE, SIG_IGN) == SIG_ERR) throw std::runtime_error("cannot ignore SIGPIPE: " + sdk::errno_message(errno));

    log_ = std::make_unique<EventLog>(EventLogOptions{cfg.host.log_dir, cfg.log.max_file_mb * 1024 * 1024, cfg.log.archives,
                                                      cfg.log.admin_debug, cfg.log.operational_debug, foreground_});
    log_->emit(CC_EV_ConfigurationLoaded, CC_LEVEL_INFO, "configuration " + config_file_.string(), {},
               {{"configuration", cfg.effective}});
    started_at_ = std::chrono::system_clock::now();
    runtime_ = std::make_unique<PluginRuntime>(*log_, config_);
    sql::Options host_store;
    try {
        instance_id_ = resolve_instance_id(cfg.update.instance_id, cfg.host.state_dir);
        const std::string store_config = store_config_json(cfg, instance_id_);
        runtime_->set_store_config(store_config);
        // The host's own store: schema "host" of a shared [store], else <state_dir>/outbox.db.
        host_store = sql::Options::from_store_config(store_config, cfg.host.state_dir, "host", "outbox.db");
    } catch (const std::exception& e) {
        log_->emit(CC_EV_StoreUnavailable, CC_LEVEL_ERROR, std::string("[store]: ") + e.what());
        return 1;
    }
    // In a fleet a revocation through another instance does not reach this instance's cache,
    // and a client behind a load balancer must never see an older CRL after a newer one: no host
    // cache; the CA plugin answers from the shared store (ca-local compares CRL numbers there).
    const auto publication_cache = cfg.store.shared() ? std::chrono::seconds(0) : cfg.host.publication_cache;
    publication_ = std::make_unique<Publication>(*runtime_, *log_, publication_cache);
    runtime_->set_revocation_listener(
        [publication = publication_.get()](const std::string& ca, std::chrono::system_clock::time_point started) {
            publication->revoked(ca, started);
        });
    ca_health_ = std::make_unique<CaHealthMonitor>(*runtime_, *log_, cfg.host.ca_health_interval);
    // Before plugins start: a feature may hand over notifications from its init.
    // A shared store may come up after the connector (a fleet booted together, a database
    // fail-over): wait for it with backoff until it answers or a stop signal arrives.
    for (auto wait = std::chrono::seconds(1); !outbox_;) {
        try {
            outbox_ = std::make_unique<OutboxStore>(host_store, instance_id_);
            if (wait > std::chrono::seconds(1)) log_->emit(CC_EV_StoreRecovered, CC_LEVEL_INFO, "the store answers; starting");
        } catch (const sql::Error& e) {
            if (e.kind() == sql::Error::Kind::schema) {
                log_->emit(CC_EV_StoreSchemaTooNew, CC_LEVEL_ERROR, std::string("cannot open the outbox: ") + e.what());
                return 1;
            }
            if (e.kind() != sql::Error::Kind::connection && e.kind() != sql::Error::Kind::outcome_unknown &&
                e.kind() != sql::Error::Kind::busy) {
                log_->emit(CC_EV_OutboxWriteFailed, CC_LEVEL_ERROR, std::string("cannot open the outbox: ") + e.what());
                return 1;
            }
            log_->emit(CC_EV_StoreUnavailable, CC_LEVEL_ERROR,
                       std::string("cannot open the outbox: ") + e.what() +
                           "; the connector starts once the store answers (next try in " + std::to_string(wait.count()) + " s)");
            const timespec pause{static_cast<time_t>(wait.count()), 0};
            const int sig = sigtimedwait(&signals, nullptr, &pause);
            if (sig == SIGTERM || sig == SIGINT) {
                log_->emit(CC_EV_ServiceStopping, CC_LEVEL_INFO, "stopped while waiting for the store");
                return 1;
            }
            wait = std::min(wait * 2, std::chrono::seconds(30));
        } catch (const std::exception& e) {
            log_->emit(CC_EV_OutboxWriteFailed, CC_LEVEL_ERROR, std::string("cannot open the outbox: ") + e.what());
            return 1;
        }
    }
    try {
        // Results stored before several tenants existed belong to the default tenant (the old [tenant]).
        if (const std::string d = cfg.default_tenant(); !d.empty()) outbox_->adopt_legacy(d);
        for (const auto& [tenant, count] : outbox_->tenants_with_entries())
            if (!cfg.tenants.count(tenant))
                log_->emit(CC_EV_TenantOutboxBacklog, CC_LEVEL_WARNING,
                           std::to_string(count) + " outbox entries belong to tenant '" +
                               (tenant.empty() ? std::string("(the old single tenant)") : tenant) +
                               "', which is not configured: they wait until it is (a renamed tenant keeps its old name here)",
                           {}, {{"tenant", tenant}, {"pending", count}});
    } catch (const std::exception& e) {
        log_->emit(CC_EV_OutboxWriteFailed, CC_LEVEL_ERROR, std::string("outbox: ") + e.what());
    }
    runtime_->set_notification_sink([this](const PluginRuntime::Notification& n) {
        if (outbox_->notify(n.tenant, n.key, n.plugin, n.operation, n.body, n.events)) {
            std::lock_guard lock(jobs_mutex_);
            if (jobs_) jobs_->wake_delivery(n.tenant);
        }
    });

    const HttpLimits limits{cfg.host.max_header_bytes, cfg.host.max_body_bytes,  cfg.host.read_timeout,
                            cfg.host.drain_timeout,    cfg.host.max_connections, cfg.host.max_queued_requests};
    http_ = std::make_unique<HttpServer>(
        limits, cfg.host.io_threads, cfg.host.workers,
        [this](const HttpRequestMessage& r, const RequestOrigin& o) { return dispatch(r, o); }, *log_);
    try {
        http_->listen_tcp(cfg.host.listen, cfg.host.tls);
        http_->listen_unix(cfg.host.admin_socket());
        warn_unless_service_account();
    } catch (const std::exception& e) {
        log_->emit(CC_EV_HttpServerError, CC_LEVEL_ERROR, e.what());
        return 1;
    }
    {
        std::lock_guard reloading(reload_mutex_);  // the update manager may reload from its thread
        probe_timeout_ = cfg.update.probe_timeout;
        report_scan(scan_);
        apply_plugins(started_with, scan_, nullptr);
        std::lock_guard lock(state_mutex_);
        forget_libraries();
    }
    {
        std::lock_guard lock(jobs_mutex_);
        jobs_ = std::make_unique<JobScheduler>(*runtime_, *log_, cfg.jobs, *outbox_);
    }
    // Before the admin socket serves: its `update` commands reach update_. Its start finishes
    // (or rolls back) an update a stop or crash interrupted.
    try {
        UpdateSettings update_settings = cfg.update;
        update_settings.instance_id = instance_id_;
        update_ = std::make_unique<update::UpdateManager>(
            update_settings, cfg.host.state_dir, *log_,
            update::UpdateHost{[this](bool with_health) { return serving_plugins(with_health); },
                               [this] { return reload_for_update(); }});
        update::UpdateManager* manager = update_.get();
        set_selection_provider([manager] { return manager->selection(); });
        update_->start();
    } catch (const std::exception& e) {
        log_->emit(CC_EV_UpdateCheckFailed, CC_LEVEL_ERROR, std::string("update manager not started: ") + e.what());
        set_selection_provider(nullptr);
        update_.reset();
    }
    // This instance in the fleet's registry: created before the admin socket serves (status reads it), started below (events
    // 800-814).
    registry_ = std::make_unique<InstanceRegistry>(
        host_store, instance_id_, *log_, FleetSettings{cfg.store.heartbeat_seconds, cfg.store.lost_after_seconds},
        [this] {
            std::shared_ptr<const Config> c;
            {
                std::lock_guard lock(state_mutex_);
                c = config_;
            }
            SelfDescription d = describe_self(*runtime_, *c, key_fingerprints_);
            if (stopping_) d.health = "stopping";
            return d;
        },
        [this] {
            std::shared_ptr<const Config> c;
            {
                std::lock_guard lock(state_mutex_);
                c = config_;
            }
            return collect_queue_stats(*runtime_, *c);
        });
    http_->start();
    jobs_->start();
    ca_health_->start();  // its first round probes every CA now
    registry_->start();

    const SupportStatus support = support_status(CERTCONN_RELEASE_DATE);
    log_->emit(CC_EV_ServiceStarted, support.state == SupportState::Supported ? CC_LEVEL_INFO : CC_LEVEL_WARNING,
               "certconnector " CERTCONN_VERSION " started (pid " + std::to_string(getpid()) + "; " + support.message + ")", {},
               {{"version", CERTCONN_VERSION},
                {"listen", cfg.host.listen},
                {"port", http_->tcp_port()},
                {"admin_socket", cfg.host.admin_socket().string()}});

    for (;;) {
        int sig = 0;
        if (sigwait(&signals, &sig) != 0) continue;
        if (sig == SIGHUP) {
            reload();
            continue;
        }
        log_->emit(CC_EV_ServiceStopping, CC_LEVEL_INFO,
                   std::string("received ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") + "; draining requests in flight");
        break;
    }
    stopping_ = true;
    if (update_) update_->stop();              // no update starts while draining (it may be reloading: before the lock)
    std::lock_guard reloading(reload_mutex_);  // no reload from another thread from here on
    jobs_->stop(cfg.host.drain_timeout);
    registry_->stop();  // left the fleet (811): the others do not report it lost
    {
        std::unique_ptr<JobScheduler> stopped;
        {
            std::lock_guard lock(jobs_mutex_);
            stopped = std::move(jobs_);
        }
    }
    http_->stop();
    http_.reset();
    set_selection_provider(nullptr);
    update_.reset();  // after the admin socket: a command may still be running in it
    ca_health_->stop();
    join_quiesce_calls(cfg.host.drain_timeout);
    runtime_.reset();
    log_->emit(CC_EV_ServiceStopped, CC_LEVEL_INFO, "certconnector stopped");
    log_->flush();
    return 0;
}

void Connector::reload() {
    std::lock_guard reloading(reload_mutex_);
    if (stopping_) return;
    try {
        // A new build that failed its init probe is refused from then on; scanning again lets
        // the next best version serve instead (once: the failed build is now known).
        for (int pass = 0; pass < 2 && reload_once(); ++pass) {
        }
    } catch (const std::exception& e) {
        log_->emit(CC_EV_ConfigurationReloadFailed, CC_LEVEL_ERROR,
                   std::string("reload failed: ") + e.what() + "; what serves keeps serving");
    }
}

bool Connector::reload_once() {
    // The certificate and key files are re-read on every SIGHUP (renewed in place), whether or
    // not the configuration file changed; their paths stay the running ones, like all of [host].
    if (config_->host.tls) {
        try {
            http_->reload_tls(*config_->host.tls);
        } catch (const std::exception& e) {
            log_->emit(CC_EV_HttpTlsReloadFailed, CC_LEVEL_ERROR,
                       std::string(e.what()) + "; the previous certificate keeps serving", {},
                       {{"certificate", config_->host.tls->certificate.string()}});
        }
    }
    std::function<VersionSelection()> selection;
    {
        std::lock_guard lock(state_mutex_);
        selection = selection_provider_;
    }
    ScanOptions options =
        daemon_scan_options(config_->host.state_dir, config_->host.service_account, selection ? selection() : VersionSelection{});
    options.failed_builds = failed_builds_;
    options.probe_timeout = probe_timeout_ = config_->update.probe_timeout;  // [update] probe_timeout_seconds
    LoadedConfiguration loaded = load_configuration(config_file_, config_->host.plugin_dir, &options);
    if (!loaded.config) {
        json::array problems;
        for (const auto& p : loaded.problems)
            problems.push_back(json::string(p.to_string()));
        log_->emit(CC_EV_ConfigurationReloadFailed, CC_LEVEL_ERROR,
                   std::to_string(loaded.problems.size()) + " problem(s) in " + config_file_.string() +
                       "; keeping the running configuration: " + loaded.problems.front().to_string(),
                   {}, {{"problems", problems}});
        return false;
    }
    auto next = std::make_shared<const Config>(std::move(*loaded.config));
    const auto previous = config_;
    const auto before = flatten(previous->effective);
    const auto after = flatten(next->effective);
    std::vector<std::string> keys;
    keys.reserve(before.size() + after.size());
    for (const auto& [k, v] : before)
        keys.push_back(k);
    for (const auto& [k, v] : after)
        if (!before.count(k)) keys.push_back(k);
    for (const auto& key : keys) {
        auto b = before.find(key);
        auto a = after.find(key);
        const std::string old_value = b == before.end() ? "(unset)" : b->second;
        const std::string new_value = a == after.end() ? "(unset)" : a->second;
        if (old_value == new_value) continue;
        log_->emit(CC_EV_ConfigurationChanged, CC_LEVEL_INFO, key + ": " + old_value + " -> " + new_value, {},
                   {{"key", key}, {"old", old_value}, {"new", new_value}});
        if (key.rfind("host.", 0) == 0)
            log_->emit(CC_EV_ConfigurationNeedsRestart, CC_LEVEL_WARNING, key + " takes effect after a restart");
    }
    // Settings the host cannot change while running keep their running value.
    Config applied = *next;
    applied.host = previous->host;
    log_->set_debug(CC_CHANNEL_ADMIN, applied.log.admin_debug);
    log_->set_debug(CC_CHANNEL_OPERATIONAL, applied.log.operational_debug);
    auto applied_ptr = std::make_shared<const Config>(std::move(applied));
    report_scan(loaded.scan);
    const bool probe_failed = apply_plugins(applied_ptr, loaded.scan, previous.get());  // publishes applied_ptr
    auto access = std::make_shared<const AccessPolicy>(applied_ptr->auth, applied_ptr->host.service_account);
    if (update_) update_->configure(applied_ptr->update);
    publication_->invalidate_all();  // CAs may have changed plugin, key or chain
    ca_health_->wake();
    if (jobs_) jobs_->sync_tenants();  // tenants added or removed (jobs_ changes only under reload_mutex_)
    std::lock_guard lock(state_mutex_);
    config_ = applied_ptr;
    access_ = std::move(access);
    scan_ = std::move(loaded.scan);
    forget_libraries();
    return probe_failed;
}

// What the scan loaded and no generation took is unloaded now, and module files nothing maps
// any more leave the store. Called under state_mutex_.
void Connector::forget_libraries() {
    std::set<fs::path> keep;
    for (const auto& gen : runtime_->generations())
        keep.insert(gen->library->file);
    scan_.libraries.clear();
    try {
        ModuleStore(config_->host.state_dir / "modules").collect(keep);
    } catch (const std::exception& e) {
        log_->emit(CC_EV_PluginModuleStoreFailed, CC_LEVEL_WARNING, e.what());
    }
}

std::vector<update::ServingPlugin> Connector::serving_plugins(bool with_health) const {
    std::vector<update::ServingPlugin> out;
    for (const auto& gen : runtime_->generations()) {
        const PluginIdentity& id = gen->identity();
        update::ServingPlugin p{id.kind,
                                id.name,
                                id.version,
                                id.release_date,
                                gen->library->source.empty() ? gen->library->file : gen->library->source,
                                gen->calls.load(std::memory_order_relaxed),
                                gen->failures.load(std::memory_order_relaxed),
                                std::nullopt};
        if (with_health) {
            std::error_code ec;
            const json::value h = json::parse(runtime_->health(*gen), ec);
            const auto* healthy = !ec && h.is_object() ? h.as_object().if_contains("healthy") : nullptr;
            p.healthy = healthy && healthy->is_bool() && healthy->as_bool();
        }
        out.push_back(std::move(p));
    }
    return out;
}

std::vector<PluginFileReport> Connector::reload_for_update() {
    reload();
    return scan_report();
}

json::object Connector::status() const {
    std::shared_ptr<const Config> cfg;
    std::vector<PluginFileReport> files;
    std::optional<std::string> dir_problem;
    {
        std::lock_guard lock(state_mutex_);
        cfg = config_;
        files = scan_.files;
        dir_problem = scan_.directory_problem;
    }
    const auto now = std::chrono::system_clock::now();
    const SupportStatus support = support_status(CERTCONN_RELEASE_DATE);
    json::object s{{"version", CERTCONN_VERSION},
                   {"release_date", CERTCONN_RELEASE_DATE},
                   {"sdk", std::to_string(CERTCONN_ABI_MAJOR) + "." + std::to_string(CERTCONN_ABI_MINOR)},
                   {"support", json::object{{"state", support_state_name(support.state)}, {"message", support.message}}},
                   {"pid", getpid()},
                   {"uptime_seconds", std::chrono::duration_cast<std::chrono::seconds>(now - started_at_).count()},
                   {"state", stopping_ ? "stopping" : "running"},
                   {"config_file", config_file_.string()},
                   {"listen", cfg->host.listen},
                   {"port", http_ ? http_->tcp_port() : 0}};

    json::array plugins;
    for (const auto& f : files) {
        json::object o = describe_plugin_file(f);
        if (f.accepted && f.identity) {
            auto gen = runtime_->find(f.identity->kind, f.identity->name);
            const bool serving = gen && (gen->library->source.empty() ? gen->library->file : gen->library->source) == f.file;
            o["status"] = serving                                                                            ? "loaded"
                          : (f.identity->kind == CC_KIND_FEATURE && !cfg->feature_enabled(f.identity->name)) ? "disabled"
                                                                                                             : "not in use";
        }
        plugins.push_back(std::move(o));
    }
    s["plugins"] = std::move(plugins);
    if (dir_problem) s["plugin_directory_problem"] = *dir_problem;

    json::array features;
    for (const auto& f : files) {
        if (!f.accepted || !f.identity || f.identity->kind != CC_KIND_FEATURE) continue;
        json::object o{{"name", f.identity->name}, {"enabled", cfg->feature_enabled(f.identity->name)}};
        if (auto gen = runtime_->find(CC_KIND_FEATURE, f.identity->name)) {
            o["version"] = gen->identity().version;
            o["health"] = json::parse(runtime_->health(*gen));
        }
        features.push_back(std::move(o));
    }
    s["features"] = std::move(features);

    json::array cas;
    for (const auto& [name, section] : cfg->cas) {
        json::object o{{"name", name}, {"plugin", section.plugin}};
        auto gen = runtime_->find(CC_KIND_CA, section.plugin);
        if (!gen) {
            o["open"] = false;
            o["state"] = "not open";
            o["error"] = "plugin '" + section.plugin + "' is not loaded";
        } else if (gen->ca_handles.count(name)) {
            o["open"] = true;
            // The last background probe (CaHealthMonitor): status never probes a CA itself.
            const auto probed = ca_health_ ? ca_health_->result(name) : std::nullopt;
            if (!probed) {
                o["state"] = "open, not probed yet";
            } else {
                o["state"] = !probed->probe ? "open, no health probe" : probed->healthy ? "healthy" : "degraded";
                o["health"] = json::object{{"healthy", probed->healthy}, {"detail", probed->detail}};
                o["checked_at"] = sdk::utc_iso8601(probed->checked_at);
            }
        } else {
            o["open"] = false;
            o["state"] = "not open";
            auto why = gen->ca_failures.find(name);
            o["error"] = why != gen->ca_failures.end() ? why->second : "not opened";
        }
        cas.push_back(std::move(o));
    }
    s["cas"] = std::move(cas);
    std::unique_lock jobs_lock(jobs_mutex_);  // jobs_ is reset at stop while status may still be asked
    if (jobs_) s["jobs"] = json::object{{"in_flight", jobs_->in_flight()}, {"outbox", jobs_->outbox_size()}};

    json::array tenants;
    for (const auto& [name, section] : cfg->tenants) {
        json::object t{{"name", name}, {"plugin", section.plugin}, {"default", name == cfg->default_tenant()}};
        if (!section.features.empty()) {
            json::array features;
            for (const auto& f : section.features)
                features.push_back(json::string(f));
            t["features"] = std::move(features);
        }
        if (auto gen = runtime_->find(CC_KIND_TENANT, section.plugin)) {
            json::value health = json::parse(runtime_->health(*gen));
            t["connected"] = health.as_object().contains("healthy") && health.as_object().at("healthy").is_bool() &&
                             health.as_object().at("healthy").get_bool();
            t["health"] = health;
        } else {
            t["connected"] = false;
            t["health"] = json::object{{"healthy", false}, {"detail", "tenant plugin not loaded"}};
        }
        if (jobs_) t["outbox"] = jobs_->outbox_state(name);
        tenants.push_back(std::move(t));
    }
    s["tenants"] = std::move(tenants);
    jobs_lock.unlock();
    if (registry_ && outbox_) {
        try {
            s["fleet"] = registry_->status(collect_queue_stats(*runtime_, *cfg), outbox_->backlog());
        } catch (const std::exception& e) {
            s["fleet"] = json::object{{"error", e.what()}};
        }
    }
    return s;
}

namespace {

HttpResponseMessage text_response(unsigned status, const std::string& text) {
    return make_response(status, "text/plain; charset=utf-8", text + "\n");
}

json::object origin_fields(const Principal& p, const RequestOrigin& origin) {
    json::object f{{"remote", origin.remote_address}, {"principal", p.name.empty() ? "anonymous" : p.name}};
    if (origin.admin) f["uid"] = origin.peer_uid;
    if (origin.admin) f["pid"] = origin.peer_pid;
    return f;
}

}  // namespace

HttpResponseMessage Connector::deny(const Principal& principal, const RequestOrigin& origin, const std::string& what,
                                    const std::string& scope) {
    json::object fields = origin_fields(principal, origin);
    fields["scope"] = scope;
    // The message names no address or port, so a flood of refusals collapses in the event log.
    const bool anonymous = !principal.authenticated();
    log_->emit(CC_EV_AccessDenied, CC_LEVEL_WARNING,
               (anonymous ? "anonymous request " : principal.name + ": ") + what + " refused: it needs scope '" + scope + "'", {},
               fields);
    if (anonymous) {
        auto res = text_response(401, what + " needs credentials with scope '" + scope +
                                          "' (a bearer token, a mapped TLS client certificate, or the admin socket)");
        res.set(boost::beast::http::field::www_authenticate, "Bearer realm=\"certconnector\"");
        return res;
    }
    return text_response(403, what + " needs scope '" + scope + "', which " + principal.name + " does not hold");
}

HttpResponseMessage Connector::dispatch(const HttpRequestMessage& request, const RequestOrigin& origin) {
    auto parsed = boost::urls::parse_origin_form(request.target());
    if (!parsed) return text_response(400, "malformed request target");
    const std::string path = parsed->path();
    const std::string method(request.method_string());

    const Principal principal = access_policy()->authenticate(origin, request[boost::beast::http::field::authorization]);
    if (principal.refused) {
        if (origin.admin) {
            log_->emit(CC_EV_AdminSocketPeerRefused, CC_LEVEL_WARNING, principal.refusal, {}, origin_fields(principal, origin));
            return text_response(403, principal.refusal);
        }
        log_->emit(CC_EV_CredentialRefused, CC_LEVEL_WARNING, principal.refusal, {}, origin_fields(principal, origin));
        auto res = text_response(401, principal.refusal);
        res.set(boost::beast::http::field::www_authenticate, "Bearer realm=\"certconnector\", error=\"invalid_token\"");
        return res;
    }

    if (path == "/healthz" && (method == "GET" || method == "HEAD")) {
        if (stopping_) return make_response(503, "application/json", R"({"status":"stopping"})");
        // The lifecycle in one word (the worst of the host and the serving plugins), without
        // naming plugins or versions: /healthz is public; `status` has the detail.
        SupportState worst = support_status(CERTCONN_RELEASE_DATE).state;
        for (const auto& gen : runtime_->generations()) {
            const SupportState s = support_status(gen->identity().release_date).state;
            if (s == SupportState::Unsupported || (s == SupportState::Outdated && worst != SupportState::Unsupported)) worst = s;
        }
        // "cas": "degraded" when a configured CA's last health probe failed (absent while all are
        // fine, so monitors matching the healthy answer keep matching it).
        json::object answer{{"status", "ok"}, {"support", support_state_name(worst)}};
        if (ca_health_)
            for (const auto& [name, section] : runtime_->config()->cas)
                if (auto r = ca_health_->result(name); r && !r->healthy) answer["cas"] = "degraded";
        return make_response(200, "application/json", json::serialize(answer));
    }
    if (path == "/status" && method == "GET") {
        // Status names files, settings and plugins.
        if (!principal.holds("status")) return deny(principal, origin, "GET /status", "status");
        return make_response(200, "application/json", json::serialize(status()));
    }
    if (path == "/admin/commands" && method == "GET") {
        if (!principal.authenticated()) return deny(principal, origin, "GET /admin/commands", "any");
        return list_commands(principal);
    }
    if (path == "/admin/command" && method == "POST") return run_command(request, principal, origin);
    // Relying parties (public): CRLs, CA certificates and OCSP of every CA, whatever its plugin.
    // A plugin built for ABI < 1.3 may still serve these paths itself (PluginRuntime::register_route):
    // it answers where the host has nothing (404, e.g. its CA plugin has no ocsp query op).
    if (auto published = publication_->handle(request, path, method)) {
        if (published->result() == boost::beast::http::status::not_found)
            if (auto legacy = runtime_->match_route(method, path)) {
                if (!principal.holds(legacy->route->scope))
                    return deny(principal, origin, method + " " + legacy->route->path, legacy->route->scope);
                return call_plugin_route(*legacy, request, origin, principal);
            }
        return std::move(*published);
    }
    if (auto match = runtime_->match_route(method, path)) {
        if (!principal.holds(match->route->scope))
            return deny(principal, origin, method + " " + match->route->path, match->route->scope);
        return call_plugin_route(*match, request, origin, principal);
    }
    return text_response(404, "no route for " + method + " " + path);
}

namespace {

// The host's own administrative commands, listed and run like the plugins'.
struct HostCommand {
    const char* name;
    const char* summary;
    const char* arguments_json;
    const char* scope;
};
const HostCommand kHostCommands[] = {
    {"ca export", "print a configured CA's certificate chain (PEM, issuing CA first)",
     R"j([{"name":"name","kind":"string","required":true,"help":"the CA's name ([ca.<name>])"}])j", "ca:read"},
    {"tenant check", "sign in to each configured tenant (or --name N), discover its services and say what works",
     R"j([{"name":"name","kind":"string","required":false,"help":"only the tenant [tenant.<name>]"}])j", "status"},
    {"outbox retry", "deliver again what tenants refused (kept aside, event 620), e.g. after fixing the tenant",
     R"j([{"name":"tenant","kind":"string","required":false,"help":"only this tenant's entries"}])j", "outbox:write"},
};

}  // namespace

HttpResponseMessage Connector::list_commands(const Principal& principal) {
    json::array out;
    auto add = [&](const std::string& name, const std::string& summary, const std::string& arguments, const std::string& scope,
                   const std::string& owner) {
        if (!principal.holds(scope)) return;
        out.push_back(json::object{
            {"name", name}, {"summary", summary}, {"arguments", json::parse(arguments)}, {"scope", scope}, {"plugin", owner}});
    };
    for (const auto& c : kHostCommands)
        add(c.name, c.summary, c.arguments_json, c.scope, "host");
    if (update_)
        for (const auto& c : update::UpdateManager::commands())
            add(c.name, c.summary, c.arguments_json, c.scope, "host");
    for (const auto& m : runtime_->commands())
        add(m.command->name, m.command->summary, m.command->arguments_json, m.command->scope,
            std::string(kind_name(m.owner->identity().kind)) + " '" + m.owner->identity().name + "'");
    return make_response(200, "application/json", json::serialize(out));
}

HttpResponseMessage Connector::run_command(const HttpRequestMessage& request, const Principal& principal,
                                           const RequestOrigin& origin) {
    std::error_code ec;
    json::value body = json::parse(request.body(), ec);
    if (ec || !body.is_object() || !body.as_object().contains("command") || !body.as_object().at("command").is_string())
        return text_response(400, R"(expected {"command": "NAME", "arguments": {...}})");
    const std::string name(body.as_object().at("command").as_string());
    json::object arguments;
    if (const auto* a = body.as_object().if_contains("arguments")) {
        if (!a->is_object()) return text_response(400, "'arguments' must be a JSON object");
        arguments = a->as_object();
    }
    auto audit = [&](int exit_code) {
        json::object fields = origin_fields(principal, origin);
        fields["command"] = name;
        fields["exit_code"] = exit_code;
        // Arguments are not logged: they may hold passwords (pfx-password) or key material.
        log_->emit(CC_EV_AdminCommandRun, CC_LEVEL_INFO,
                   principal.name + " ran '" + name + "' (exit " + std::to_string(exit_code) + ")", {}, fields);
    };
    for (const auto& c : kHostCommands) {
        if (name != c.name) continue;
        if (!principal.holds(c.scope)) return deny(principal, origin, "command '" + name + "'", c.scope);
        json::object reply = name == "tenant check"   ? check_tenants(arguments)
                             : name == "outbox retry" ? retry_outbox(arguments)
                                                      : export_ca(arguments);
        audit(static_cast<int>(reply.at("exit_code").as_int64()));
        return make_response(200, "application/json", json::serialize(reply));
    }
    if (update_) {
        for (const auto& c : update::UpdateManager::commands()) {
            if (name != c.name) continue;
            if (!principal.holds(c.scope)) return deny(principal, origin, "command '" + name + "'", c.scope);
            json::object reply = update_->command(name, arguments);
            audit(static_cast<int>(reply.at("exit_code").as_int64()));
            return make_response(200, "application/json", json::serialize(reply));
        }
    }
    auto match = runtime_->find_command(name);
    if (!match) return text_response(404, "no administrative command '" + name + "' (see `certconnector help`)");
    if (!principal.holds(match->command->scope)) return deny(principal, origin, "command '" + name + "'", match->command->scope);
    const std::string args = json::serialize(arguments);
    StringSink sink(std::size_t{64} * 1024 * 1024);
    cc_sink s = sink.sink();
    cc_error err = sdk::detail::make_error();
    const int rc = match->command->handler(match->command->handler_ctx, args.data(), args.size(), &s, &err);
    json::value reply;
    if (rc == CC_OK) reply = json::parse(sink.data, ec);
    if (rc != CC_OK || ec || !reply.is_object()) {
        const std::string why = rc != CC_OK ? (err.message[0] ? err.message : "failed without a message")
                                            : "the command's reply is not a JSON object";
        audit(1);
        // A usage error (bad arguments) exits 2 like the CLI's own; anything else 1.
        return make_response(200, "application/json",
                             json::serialize(json::object{{"exit_code", rc == CC_ERR_INVALID_ARGUMENT ? 2 : 1},
                                                          {"stderr", "certconnector " + name + ": " + why + "\n"}}));
    }
    const auto* code = reply.as_object().if_contains("exit_code");
    audit(code && code->is_int64() ? static_cast<int>(code->as_int64()) : 0);
    publication_->invalidate_all();  // a command may have signed a CRL (`ca root-crl`) or changed a CA
    return make_response(200, "application/json", json::serialize(reply));
}

// Each tenant plugin answers "tenant.check" with {"ok", "checks": [{"name", "ok", "detail"}]}.
json::object Connector::check_tenants(const json::object& arguments) {
    const auto cfg = runtime_->config();
    std::string only;
    if (const auto* n = arguments.if_contains("name"); n && n->is_string()) only = n->as_string();
    if (!only.empty() && !cfg->tenants.count(only))
        return json::object{{"exit_code", 1}, {"stderr", "certconnector tenant check: no tenant '" + only + "' is configured\n"}};
    if (cfg->tenants.empty())
        return json::object{{"exit_code", 1}, {"stderr", "certconnector tenant check: no tenant is configured\n"}};
    std::string out;
    bool all_ok = true;
    for (const auto& [name, section] : cfg->tenants) {
        if (!only.empty() && name != only) continue;
        out += "tenant '" + name + "' [" + section.plugin + "]\n";
        StringSink sink(std::size_t{256} * 1024);
        cc_sink s = sink.sink();
        cc_error err = sdk::detail::make_error();
        const int rc = runtime_->tenant_call(name.c_str(), "tenant.check", "{}", &s, &err);
        std::error_code ec;
        const json::value answer = rc == CC_OK ? json::parse(sink.data, ec) : json::value();
        if (rc != CC_OK || ec || !answer.is_object()) {
            all_ok = false;
            out += "  FAIL  " + std::string(rc != CC_OK ? err.message : "the plugin's answer is not a JSON object") + "\n";
            continue;
        }
        const auto* checks = answer.as_object().if_contains("checks");
        if (checks && checks->is_array())
            for (const auto& c : checks->as_array()) {
                if (!c.is_object()) continue;
                const auto& o = c.as_object();
                const bool ok = o.contains("ok") && o.at("ok").is_bool() && o.at("ok").as_bool();
                all_ok = all_ok && ok;
                const auto field = [&](const char* k) {
                    return o.contains(k) && o.at(k).is_string() ? std::string(o.at(k).as_string()) : std::string();
                };
                out += std::string(ok ? "  ok    " : "  FAIL  ") + field("name") +
                       (field("detail").empty() ? "" : ": " + field("detail")) + "\n";
            }
        const auto* ok = answer.as_object().if_contains("ok");
        all_ok = all_ok && ok && ok->is_bool() && ok->as_bool();
    }
    return json::object{{"exit_code", all_ok ? 0 : 1}, {"stdout", out}};
}

json::object Connector::retry_outbox(const json::object& arguments) {
    std::string tenant;
    if (const auto* t = arguments.if_contains("tenant"); t && t->is_string()) tenant = t->as_string();
    const std::int64_t n = outbox_->retry_refused(tenant);
    {
        std::lock_guard lock(jobs_mutex_);
        if (jobs_)
            for (const auto& [name, section] : runtime_->config()->tenants)
                if (tenant.empty() || name == tenant) jobs_->wake_delivery(name);
    }
    return json::object{{"exit_code", 0},
                        {"stdout", std::to_string(n) + " refused entr" + (n == 1 ? "y" : "ies") + " queued again\n"}};
}

json::object Connector::export_ca(const json::object& arguments) {
    auto fail = [](const std::string& why) {
        return json::object{{"exit_code", 1}, {"stderr", "certconnector ca export: " + why + "\n"}};
    };
    const auto* n = arguments.if_contains("name");
    if (!n || !n->is_string()) return json::object{{"exit_code", 2}, {"stderr", "certconnector ca export: needs --name NAME\n"}};
    const std::string name(n->as_string());
    const auto cfg = runtime_->config();
    auto section = cfg->cas.find(name);
    if (section == cfg->cas.end()) return fail("no CA named '" + name + "' is configured");
    auto gen = runtime_->find(CC_KIND_CA, section->second.plugin);
    auto handle = gen ? gen->ca_handles.find(name) : decltype(gen->ca_handles.end()){};
    if (!gen || handle == gen->ca_handles.end()) return fail("CA '" + name + "' is not open");
    const cc_ca_api* api = gen->api.ca;
    if (api->struct_size <= offsetof(cc_ca_api, describe) || api->describe == nullptr)
        return fail("the plugin behind CA '" + name + "' cannot describe it");
    StringSink sink;
    cc_sink s = sink.sink();
    cc_error err = sdk::detail::make_error();
    if (api->describe(gen->api.instance, handle->second, &s, &err) != CC_OK) return fail(err.message);
    std::error_code ec;
    const json::value d = json::parse(sink.data, ec);
    if (ec || !d.is_object() || !d.as_object().contains("chain_pem") || !d.as_object().at("chain_pem").is_string())
        return fail("the plugin's description has no chain_pem");
    return json::object{{"exit_code", 0}, {"stdout", d.as_object().at("chain_pem").as_string()}};
}

HttpResponseMessage Connector::call_plugin_route(const PluginRuntime::RouteMatch& match, const HttpRequestMessage& request,
                                                 const RequestOrigin& origin, const Principal& principal) {
    auto parsed = boost::urls::parse_origin_form(request.target());
    const std::string method(request.method_string());
    const std::string path = parsed->path();
    const std::string query(parsed->encoded_query());
    std::vector<std::string> header_storage;
    for (const auto& field : request) {
        header_storage.emplace_back(field.name_string());
        header_storage.emplace_back(field.value());
    }
    std::vector<cc_http_header> headers;
    for (std::size_t i = 0; i + 1 < header_storage.size(); i += 2)
        headers.push_back({header_storage[i].c_str(), header_storage[i + 1].c_str()});
    std::vector<const char*> scopes;
    for (const auto& sc : principal.scopes)
        scopes.push_back(sc.c_str());
    const cc_http_request req{sizeof(cc_http_request),
                              method.c_str(),
                              path.c_str(),
                              query.c_str(),
                              request.body().data(),
                              request.body().size(),
                              headers.data(),
                              headers.size(),
                              origin.remote_address.c_str(),
                              principal.origin == CC_ORIGIN_ADMIN_SOCKET ? 1 : 0,
                              static_cast<uint32_t>(principal.origin),
                              principal.name.c_str(),
                              scopes.data(),
                              scopes.size()};
    ResponseBuilder builder;
    const cc_http_response resp{sizeof(cc_http_response), &builder,
                                [](void* ctx, int status) { static_cast<ResponseBuilder*>(ctx)->status = status; },
                                [](void* ctx, const char* name, const char* value) {
                                    if (name && value) static_cast<ResponseBuilder*>(ctx)->headers.emplace_back(name, value);
                                },
                                builder.body.sink()};
    cc_error err = sdk::detail::make_error();
    const int rc = match.route->handler(match.route->handler_ctx, &req, &resp, &err);
    match.owner->count_call(rc != CC_OK                                      ? CC_ERR_INTERNAL
                            : builder.status >= 500 && builder.status != 503 ? CC_ERR_INTERNAL
                                                                             : CC_OK);
    if (rc != CC_OK) {
        log_->emit(CC_EV_HttpHandlerFailed, CC_LEVEL_ERROR,
                   method + " " + path + " (" + kind_name(match.owner->identity().kind) + " plugin '" +
                       match.owner->identity().name + "'): " + (err.message[0] ? err.message : "no message"),
                   {}, {{"status", rc}});
        return make_response(CC_STATUS_IS_RETRYABLE(rc) ? 503 : 500, "text/plain; charset=utf-8",
                             CC_STATUS_IS_RETRYABLE(rc) ? "service temporarily unavailable\n" : "internal error\n");
    }
    if (builder.status < 100 || builder.status > 599) builder.status = 500;
    HttpResponseMessage res{static_cast<boost::beast::http::status>(builder.status), 11};
    res.set(boost::beast::http::field::server, "certconnector/" CERTCONN_VERSION);
    for (const auto& [name, value] : builder.headers)
        res.insert(name, value);
    res.body() = std::move(builder.body.data);
    res.prepare_payload();
    return res;
}

}  // namespace certconn::host
