#include "plugins/PluginRuntime.hpp"

#include "plugins/ModuleStore.hpp"

#include <certconn/sdk.hpp>
#include <certconn/sql.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

namespace certconn::host {

namespace json = boost::json;
namespace fs = std::filesystem;

cc_sink StringSink::sink() {
    return cc_sink{this, [](void* ctx, const char* data, size_t len) -> int {
                       auto* self = static_cast<StringSink*>(ctx);
                       if (self->data.size() + len > self->limit) return 1;
                       self->data.append(data, len);
                       return 0;
                   }};
}

namespace {

// --- the host-services table: C thunks over PluginRuntime --------------------------------

PluginContext& ctx_of(void* host_ctx) {
    return *static_cast<PluginContext*>(host_ctx);
}

void svc_log_event(void* host_ctx, uint32_t id, int level, const char* request_id, const char* message, const char* fields_json) {
    try {
        PluginContext& ctx = ctx_of(host_ctx);
        json::object fields;
        if (fields_json != nullptr) {
            std::error_code ec;
            json::value v = json::parse(fields_json, ec);
            if (!ec && v.is_object())
                fields = std::move(v.get_object());
            else
                fields["raw"] = fields_json;
        }
        const auto lvl = static_cast<cc_log_level>(std::clamp(level, 0, 3));
        ctx.runtime->log().emit(id, lvl, message ? message : "", request_id ? request_id : "", fields, ctx.identity.name);
    } catch (...) {
    }
}

int svc_config_json(void* host_ctx, cc_sink* out, cc_error* error) {
    const std::string& text = ctx_of(host_ctx).config_json;
    if (out == nullptr || out->write(out->ctx, text.data(), text.size()) != 0) {
        sdk::detail::set_error(error, CC_ERR_INVALID_ARGUMENT, "sink refused the configuration");
        return CC_ERR_INVALID_ARGUMENT;
    }
    return CC_OK;
}

const char* svc_state_dir(void* host_ctx) {
    return ctx_of(host_ctx).state_dir.c_str();
}

int svc_ca_issue(void* host_ctx, const char* ca, const char* req, cc_sink* out, cc_error* error) {
    return ctx_of(host_ctx).runtime->ca_call(CaOperation::issue, ca, req, out, error);
}
int svc_ca_revoke(void* host_ctx, const char* ca, const char* req, cc_sink* out, cc_error* error) {
    return ctx_of(host_ctx).runtime->ca_call(CaOperation::revoke, ca, req, out, error);
}
int svc_ca_query(void* host_ctx, const char* ca, const char* req, cc_sink* out, cc_error* error) {
    return ctx_of(host_ctx).runtime->ca_call(CaOperation::query, ca, req, out, error);
}
int svc_tenant_call(void* host_ctx, const char* op, const char* req, cc_sink* out, cc_error* error) {
    return ctx_of(host_ctx).runtime->tenant_call(nullptr, op, req, out, error);
}
int svc_tenant_call_to(void* host_ctx, const char* tenant, const char* op, const char* req, cc_sink* out, cc_error* error) {
    return ctx_of(host_ctx).runtime->tenant_call(tenant, op, req, out, error);
}
int svc_tenant_notify(void* host_ctx, const cc_tenant_notification* notification, cc_error* error) {
    PluginContext& ctx = ctx_of(host_ctx);
    return ctx.runtime->tenant_notify(ctx, notification, error);
}
int svc_store_config(void* host_ctx, cc_sink* out, cc_error* error) {
    return ctx_of(host_ctx).runtime->store_config(out, error);
}
int svc_register_route(void* host_ctx, const char* method, const char* path, cc_http_handler handler, void* handler_ctx,
                       cc_error* error) {
    PluginContext& ctx = ctx_of(host_ctx);
    return ctx.runtime->register_route(ctx, method, path, nullptr, handler, handler_ctx, error);
}
int svc_http_register(void* host_ctx, const cc_http_route* route, cc_error* error) {
    PluginContext& ctx = ctx_of(host_ctx);
    if (route == nullptr || route->struct_size < offsetof(cc_http_route, handler_ctx) + sizeof(void*)) {
        sdk::detail::set_error(error, CC_ERR_INVALID_ARGUMENT, "cc_http_route is missing or too short (struct_size)");
        return CC_ERR_INVALID_ARGUMENT;
    }
    return ctx.runtime->register_route(ctx, route->method, route->path, route->scope, route->handler, route->handler_ctx, error);
}
int svc_admin_register_command(void* host_ctx, const cc_admin_command* command, cc_error* error) {
    PluginContext& ctx = ctx_of(host_ctx);
    return ctx.runtime->register_command(ctx, command, error);
}

int svc_key_decrypt(void* host_ctx, const char* key_name, const char* padding, const char* ciphertext, size_t len, cc_sink* out,
                    cc_error* error) {
    PluginContext& ctx = ctx_of(host_ctx);
    return ctx.runtime->key_decrypt(ctx, key_name ? key_name : "", padding ? padding : "", std::string_view(ciphertext, len), out,
                                    error);
}

std::string describe(const PluginIdentity& id) {
    return std::string(kind_name(id.kind)) + " plugin '" + id.name + "' " + id.version;
}

json::object identity_fields(const PluginIdentity& id, const fs::path& file) {
    return {{"kind", kind_name(id.kind)}, {"plugin", id.name}, {"version", id.version}, {"file", file.string()}};
}

}  // namespace

Generation::~Generation() {
    if (api.ca != nullptr && api.ca->close != nullptr)
        for (auto& [name, handle] : ca_handles)
            api.ca->close(api.instance, handle);
    if (api.destroy != nullptr) api.destroy(api.instance);
    EventLog* log = context && context->runtime ? &context->runtime->log() : nullptr;
    if (log)
        log->emit(CC_EV_PluginUnloaded, CC_LEVEL_INFO, describe(identity()) + " released", {},
                  identity_fields(identity(), library->file));
    if (!reaper || !library) return;
    // The library goes now (dlclose, when no scan holds it either); once the last generation
    // built from the module is gone, the module must be gone from the address space too.
    const PluginIdentity id = identity();
    const fs::path file = library->file;
    const std::vector<std::string> problems = library->unload_problems;
    const bool last_holder = library.use_count() == 1;  // a scan may still hold it: then it stays loaded
    library.reset();
    if (!reaper->module_released(file) || !last_holder || log == nullptr || !is_mapped(file)) return;
    std::string why;
    for (const auto& p : problems)
        why += (why.empty() ? "" : "; ") + p;
    log->emit(CC_EV_PluginStillMapped, problems.empty() ? CC_LEVEL_ERROR : CC_LEVEL_WARNING,
              describe(id) + " (" + file.string() + ") is still mapped after its last generation was released" +
                  (why.empty() ? "" : " (expected: " + why + ")"),
              {}, identity_fields(id, file));
}

void GenerationReaper::module_acquired(const fs::path& file) {
    std::lock_guard lock(mutex_);
    ++modules_[file];
}

bool GenerationReaper::module_released(const fs::path& file) {
    std::lock_guard lock(mutex_);
    auto it = modules_.find(file);
    if (it == modules_.end()) return true;
    if (--it->second > 0) return false;
    modules_.erase(it);
    return true;
}

GenerationReaper::GenerationReaper() : thread_([this] { loop(); }) {}

GenerationReaper::~GenerationReaper() {
    stop();
}

void GenerationReaper::release(Generation* generation) noexcept {
    if (generation == nullptr) return;
    {
        std::lock_guard lock(mutex_);
        if (!stopped_) {
            queue_.push_back(generation);
            wake_.notify_one();
            return;
        }
    }
    delete generation;  // the reaper is gone: only at process teardown
}

void GenerationReaper::loop() {
    std::unique_lock lock(mutex_);
    for (;;) {
        wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) {  // stopping, and nothing left: later releases are destroyed inline
            stopped_ = true;
            idle_.notify_all();
            return;
        }
        Generation* next = queue_.front();
        queue_.pop_front();
        busy_ = true;
        lock.unlock();
        delete next;  // destroy() may call the host, which may release (and queue) other generations
        lock.lock();
        busy_ = false;
        if (queue_.empty()) idle_.notify_all();
    }
}

void GenerationReaper::wait_idle() {
    if (std::this_thread::get_id() == thread_.get_id()) return;  // a destroy waiting on itself
    std::unique_lock lock(mutex_);
    idle_.wait(lock, [this] { return stopped_ || (queue_.empty() && !busy_); });
}

void GenerationReaper::stop() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable() && std::this_thread::get_id() != thread_.get_id()) thread_.join();
}

PluginRuntime::PluginRuntime(EventLog& log, std::shared_ptr<const Config> config) : log_(log), config_(std::move(config)) {}

PluginRuntime::~PluginRuntime() {
    std::map<Key, std::shared_ptr<const Generation>> published;
    {
        std::lock_guard lock(mutex_);
        published.swap(published_);
        snapshot_ = std::make_shared<Snapshot>();
    }
    published.clear();  // outside the lock: the reaper's destroys may call find()
    // Everything released so far is destroyed while this runtime (log, config) still exists.
    reaper_->stop();
}

void PluginRuntime::wait_released() {
    reaper_->wait_idle();
}

std::shared_ptr<const Config> PluginRuntime::config() const {
    std::lock_guard lock(mutex_);
    return config_;
}

void PluginRuntime::set_config(std::shared_ptr<const Config> config) {
    std::lock_guard lock(mutex_);
    config_ = std::move(config);
}

std::shared_ptr<const Generation> PluginRuntime::instantiate(const std::shared_ptr<PluginLibrary>& library, std::string& error) {
    return instantiate(library, error, config());
}

std::shared_ptr<const Generation> PluginRuntime::instantiate(const std::shared_ptr<PluginLibrary>& library, std::string& error,
                                                             const std::shared_ptr<const Config>& cfg) {
    const PluginIdentity& id = library->identity;
    // The last owner to let go hands the generation to the reaper (see PluginRuntime.hpp).
    std::shared_ptr<Generation> gen(new Generation, [reaper = reaper_](Generation* g) { reaper->release(g); });
    gen->config = cfg;
    gen->library = library;
    gen->reaper = reaper_;
    reaper_->module_acquired(library->file);
    gen->loaded_at = std::chrono::system_clock::now();
    gen->context = std::make_unique<PluginContext>();
    PluginContext& ctx = *gen->context;
    ctx.runtime = this;
    ctx.identity = id;
    if (id.kind == CC_KIND_FEATURE) {
        auto it = cfg->feature_sections.find(id.name);
        ctx.config_json = json::serialize(it != cfg->feature_sections.end() ? it->second : json::object{});
    } else if (const auto* t = id.kind == CC_KIND_TENANT ? cfg->tenant_of_plugin(id.name) : nullptr) {
        ctx.config_json = json::serialize(t->second.settings);
    } else {
        ctx.config_json = "{}";
    }
    const fs::path state = cfg->host.state_dir / "plugins" / (std::string(kind_name(id.kind)) + "-" + id.name);
    std::error_code ec;
    fs::create_directories(state, ec);
    ::chmod(state.c_str(), 0700);
    ctx.state_dir = state.string();
    ctx.services = cc_host_services{sizeof(cc_host_services),
                                    CERTCONN_ABI_MAJOR,
                                    CERTCONN_ABI_MINOR,
                                    &ctx,
                                    &svc_log_event,
                                    &svc_config_json,
                                    &svc_state_dir,
                                    &svc_ca_issue,
                                    &svc_ca_revoke,
                                    &svc_tenant_call,
                                    &svc_register_route,
                                    &svc_key_decrypt,
                                    &svc_ca_query,
                                    &svc_http_register,
                                    &svc_admin_register_command,
                                    &svc_tenant_call_to,
                                    &svc_tenant_notify,
                                    &svc_store_config};

    const std::string label = "plugin '" + library->file.stem().string() + "' (" + library->file.string() + "): ";
    auto fail = [&](const std::string& why) -> std::shared_ptr<const Generation> {
        error = label + why;
        log_.emit(CC_EV_PluginInitFailed, CC_LEVEL_ERROR, error, {}, identity_fields(id, library->file));
        return nullptr;
    };

    gen->api.struct_size = sizeof(cc_plugin_api);
    cc_error err = sdk::detail::make_error();
    const int status = library->init(&ctx.services, &gen->api, &err);
    ctx.accepting_routes = false;
    if (status != CC_OK) {
        gen->api.destroy = nullptr;  // a failed init owns nothing the host must release
        return fail("init failed (status " + std::to_string(status) + "): " + (err.message[0] ? err.message : "no message"));
    }
    if (gen->api.destroy == nullptr) return fail("init succeeded but provided no destroy function");
    // A refused route fails the plugin even when its init ignored the status: half its
    // namespace would be served by someone else.
    if (!ctx.route_conflict.empty()) return fail("init registered a conflicting route: " + ctx.route_conflict);
    const bool table_ok = (id.kind == CC_KIND_FEATURE && gen->api.feature && gen->api.feature->run_job) ||
                          (id.kind == CC_KIND_CA && gen->api.ca && gen->api.ca->open && gen->api.ca->close &&
                           gen->api.ca->issue && gen->api.ca->revoke) ||
                          (id.kind == CC_KIND_TENANT && gen->api.tenant && gen->api.tenant->claim_jobs &&
                           gen->api.tenant->complete_job && gen->api.tenant->call);
    if (!table_ok) return fail(std::string("init did not provide a complete cc_") + kind_name(id.kind) + "_api table");

    if (id.kind == CC_KIND_CA) {
        for (const auto& [ca_name, section] : cfg->cas) {
            if (section.plugin != id.name) continue;
            cc_error open_err = sdk::detail::make_error();
            void* handle = nullptr;
            const std::string settings = json::serialize(section.settings);
            const int rc = gen->api.ca->open(gen->api.instance, ca_name.c_str(), settings.c_str(), &handle, &open_err);
            if (rc == CC_OK) {
                gen->ca_handles[ca_name] = handle;
            } else {
                const std::string why = open_err.message[0] ? open_err.message : "no message";
                gen->ca_failures[ca_name] = why;
                json::object fields = identity_fields(id, library->file);
                fields["ca"] = ca_name;
                log_.emit(CC_EV_CaOpenFailed, CC_LEVEL_ERROR,
                          "CA '" + ca_name + "' (" + describe(id) + ") could not be opened: " + why, {}, fields);
            }
        }
    }
    log_.emit(CC_EV_PluginLoaded, CC_LEVEL_INFO, describe(id) + " loaded from " + library->file.string(), {},
              identity_fields(id, library->file));
    return gen;
}

void PluginRuntime::rebuild_snapshot_locked() {
    auto snap = std::make_shared<Snapshot>();
    for (const auto& [key, gen] : published_)
        snap->push_back(gen);
    snapshot_ = std::move(snap);
}

void PluginRuntime::publish(std::shared_ptr<const Generation> generation) {
    std::shared_ptr<const Generation> previous;  // released outside the lock
    {
        std::lock_guard lock(mutex_);
        auto& slot = published_[{generation->identity().kind, generation->identity().name}];
        previous = std::move(slot);
        slot = std::move(generation);
        rebuild_snapshot_locked();
    }
}

void PluginRuntime::commit(std::shared_ptr<const Config> config, std::vector<std::shared_ptr<const Generation>> publish,
                           const std::vector<std::pair<cc_plugin_kind, std::string>>& retire) {
    std::vector<std::shared_ptr<const Generation>> previous;  // released outside the lock
    {
        std::lock_guard lock(mutex_);
        for (const auto& key : retire) {
            auto it = published_.find(key);
            if (it == published_.end()) continue;
            previous.push_back(std::move(it->second));
            published_.erase(it);
        }
        for (auto& gen : publish) {
            auto& slot = published_[{gen->identity().kind, gen->identity().name}];
            previous.push_back(std::move(slot));
            slot = std::move(gen);
        }
        if (config) config_ = std::move(config);
        rebuild_snapshot_locked();
    }
}

void PluginRuntime::retire(cc_plugin_kind kind, const std::string& name) {
    std::shared_ptr<const Generation> previous;
    {
        std::lock_guard lock(mutex_);
        auto it = published_.find({kind, name});
        if (it == published_.end()) return;
        previous = std::move(it->second);
        published_.erase(it);
        rebuild_snapshot_locked();
    }
}

std::shared_ptr<const Generation> PluginRuntime::find(cc_plugin_kind kind, const std::string& name) const {
    std::lock_guard lock(mutex_);
    auto it = published_.find({kind, name});
    return it == published_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<const Generation>> PluginRuntime::generations() const {
    std::lock_guard lock(mutex_);
    return *snapshot_;
}

std::optional<PluginRuntime::RouteMatch> PluginRuntime::match_route(std::string_view method, std::string_view path) const {
    std::shared_ptr<const Snapshot> snap;
    {
        std::lock_guard lock(mutex_);
        snap = snapshot_;
    }
    std::optional<RouteMatch> best;
    for (const auto& gen : *snap) {
        for (const auto& route : gen->context->routes) {
            if (route.matches(method, path) && (!best || route.path.size() > best->route->path.size()))
                best = RouteMatch{gen, &route};
        }
    }
    return best;
}

std::shared_ptr<KeyStore> PluginRuntime::keys() {
    std::lock_guard lock(mutex_);
    if (!keys_ || keys_->directory() != config_->host.keys_dir) keys_ = std::make_shared<KeyStore>(config_->host.keys_dir);
    return keys_;
}

int PluginRuntime::key_decrypt(PluginContext& ctx, const std::string& key_name, const std::string& padding,
                               std::string_view ciphertext, cc_sink* out, cc_error* error) {
    const json::object fields{{"key", key_name}, {"plugin", ctx.identity.name}};
    try {
        const std::string plain = keys()->decrypt(key_name, padding, ciphertext);
        if (out == nullptr || out->write(out->ctx, plain.data(), plain.size()) != 0) {
            sdk::detail::set_error(error, CC_ERR_INVALID_ARGUMENT, "sink refused the plaintext");
            return CC_ERR_INVALID_ARGUMENT;
        }
        return CC_OK;
    } catch (const KeyStore::KeyNotHeld& e) {
        log_.emit(CC_EV_ConnectorKeyMissing, CC_LEVEL_ERROR, e.what(), {}, fields);
        sdk::detail::set_error(error, CC_ERR_NOT_FOUND, e.what());
        return CC_ERR_NOT_FOUND;
    } catch (const std::invalid_argument& e) {
        sdk::detail::set_error(error, CC_ERR_INVALID_ARGUMENT, e.what());
        return CC_ERR_INVALID_ARGUMENT;
    } catch (const std::exception& e) {
        log_.emit(CC_EV_ConnectorKeyFailed, CC_LEVEL_ERROR, e.what(), {}, fields);
        sdk::detail::set_error(error, CC_ERR_UNAVAILABLE, e.what());
        return CC_ERR_UNAVAILABLE;
    }
}

bool PluginRuntime::paths_overlap(std::string_view a, std::string_view b) {
    if (a == b) return true;
    if (!a.empty() && a.back() == '/' && b.substr(0, a.size()) == a) return true;
    return !b.empty() && b.back() == '/' && a.substr(0, b.size()) == b;
}

namespace {

bool overlaps_any(std::string_view path, std::initializer_list<std::string_view> namespaces) {
    for (const auto ns : namespaces) {
        if (PluginRuntime::paths_overlap(path, ns)) return true;
        // "/crl" (no slash) is a namespace root too: a plugin's exact "/crl" would look like ours.
        if (ns.back() == '/' && path == ns.substr(0, ns.size() - 1)) return true;
    }
    return false;
}

}  // namespace

bool PluginRuntime::host_path(std::string_view path) {
    return overlaps_any(path, {"/healthz", "/status", "/admin/"});
}

bool PluginRuntime::relying_party_path(std::string_view path) {
    return overlaps_any(path, {"/crl/", "/ca/", "/ocsp/"});
}

bool PluginRuntime::reserved_path(std::string_view path) {
    // The host's own paths, and the relying-party namespaces it publishes for every CA.
    return host_path(path) || relying_party_path(path);
}

namespace {

bool valid_scope(std::string_view s) {
    return !s.empty() && s.size() <= 64 &&
           s.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789:_-") == std::string_view::npos;
}

bool valid_command_name(std::string_view s) {
    if (s.empty() || s.size() > 64 || s.front() == ' ' || s.back() == ' ' || s.find("  ") != std::string_view::npos) return false;
    if (s.front() < 'a' || s.front() > 'z') return false;
    return s.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789- ") == std::string_view::npos;
}

/// Checks a command's argument description (abi.h); returns why it is wrong, or "".
std::string check_arguments(const std::string& text) {
    std::error_code ec;
    const json::value v = json::parse(text, ec);
    if (ec || !v.is_array()) return "arguments_json is not a JSON array";
    for (const auto& a : v.get_array()) {
        if (!a.is_object()) return "arguments_json: every entry is an object";
        const auto& o = a.get_object();
        const auto* name = o.if_contains("name");
        const auto* kind = o.if_contains("kind");
        if (!name || !name->is_string() || name->get_string().empty() ||
            name->get_string().find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") != json::string::npos)
            return "arguments_json: each argument needs a \"name\" of lower-case letters, digits and '-'";
        static const std::vector<std::string> kinds = {"string", "strings", "flag", "file", "output_dir"};
        if (!kind || !kind->is_string() || std::find(kinds.begin(), kinds.end(), std::string(kind->get_string())) == kinds.end())
            return "arguments_json: argument '" + std::string(name->get_string()) +
                   "' has no valid \"kind\" (string, strings, flag, file, output_dir)";
        for (const auto& [k, val] : o)
            if (k != "name" && k != "kind" && k != "required" && k != "positional" && k != "help")
                return "arguments_json: argument '" + std::string(name->get_string()) + "' has an unknown key '" +
                       std::string(k) + "'";
    }
    return "";
}

}  // namespace

bool PluginRuntime::reserved_command(std::string_view name) {
    static const std::vector<std::string_view> host = {"run",   "plugins",   "plugin-probe", "status", "config",
                                                       "keys",  "pfx",       "version",      "events", "help",
                                                       "token", "ca export", "repo",         "update"};
    for (const auto& h : host)
        if (name == h || (name.size() > h.size() && name.substr(0, h.size()) == h && name[h.size()] == ' ')) return true;
    return false;
}

int PluginRuntime::register_command(PluginContext& ctx, const cc_admin_command* command, cc_error* error) {
    auto refuse = [&](int code, const std::string& why) {
        sdk::detail::set_error(error, code, why);
        return code;
    };
    if (!ctx.accepting_routes) return refuse(CC_ERR_INVALID_ARGUMENT, "admin commands can only be registered during init");
    if (command == nullptr || command->struct_size < offsetof(cc_admin_command, handler_ctx) + sizeof(void*))
        return refuse(CC_ERR_INVALID_ARGUMENT, "cc_admin_command is missing or too short (struct_size)");
    if (command->name == nullptr || !valid_command_name(command->name))
        return refuse(CC_ERR_INVALID_ARGUMENT,
                      "an admin command name is lower-case words separated by one space, e.g. \"scep approve\"");
    const std::string name = command->name;
    if (command->handler == nullptr) return refuse(CC_ERR_INVALID_ARGUMENT, "admin command '" + name + "' has no handler");
    if (command->scope == nullptr || !valid_scope(command->scope))
        return refuse(CC_ERR_INVALID_ARGUMENT,
                      "admin command '" + name + "' needs a scope (lower-case letters, digits, ':', '_', '-')");
    if (reserved_command(name)) return refuse(CC_ERR_CONFLICT, "admin command '" + name + "' is reserved for the host");
    const std::string arguments = command->arguments_json ? command->arguments_json : "[]";
    if (auto why = check_arguments(arguments); !why.empty())
        return refuse(CC_ERR_INVALID_ARGUMENT, "admin command '" + name + "': " + why);
    for (const auto& gen : generations()) {
        const PluginIdentity& owner = gen->identity();
        if (owner.kind == ctx.identity.kind && owner.name == ctx.identity.name) continue;  // being replaced
        for (const auto& c : gen->context->commands)
            if (c.name == name)
                return refuse(CC_ERR_CONFLICT, "admin command '" + name + "' is already registered by " + describe(owner));
    }
    for (const auto& c : ctx.commands)
        if (c.name == name) return refuse(CC_ERR_CONFLICT, "admin command '" + name + "' registered twice");
    ctx.commands.push_back(
        {name, command->summary ? command->summary : "", arguments, command->scope, command->handler, command->handler_ctx});
    return CC_OK;
}

std::optional<PluginRuntime::CommandMatch> PluginRuntime::find_command(std::string_view name) const {
    for (const auto& gen : generations())
        for (const auto& c : gen->context->commands)
            if (c.name == name) return CommandMatch{gen, &c};
    return std::nullopt;
}

std::vector<PluginRuntime::CommandMatch> PluginRuntime::commands() const {
    std::vector<CommandMatch> out;
    for (const auto& gen : generations())
        for (const auto& c : gen->context->commands)
            out.push_back({gen, &c});
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.command->name < b.command->name; });
    return out;
}

int PluginRuntime::register_route(PluginContext& ctx, const char* method, const char* path, const char* scope,
                                  cc_http_handler handler, void* handler_ctx, cc_error* error) {
    auto refuse = [&](int code, const std::string& why) {
        sdk::detail::set_error(error, code, why);
        return code;
    };
    if (!ctx.accepting_routes) return refuse(CC_ERR_INVALID_ARGUMENT, "routes can only be registered during init");
    if (method == nullptr || path == nullptr || handler == nullptr || path[0] != '/')
        return refuse(CC_ERR_INVALID_ARGUMENT, "a route needs a method, a path starting with '/' and a handler");
    const std::string scope_text = scope ? scope : "";
    if (!scope_text.empty() && !valid_scope(scope_text))
        return refuse(CC_ERR_INVALID_ARGUMENT, "route " + std::string(method) + " " + path + ": scope '" + scope_text +
                                                   "' is not lower-case letters, digits, ':', '_', '-'");
    HttpRoute route{method, path, scope_text, handler, handler_ctx};
    // Before 1.3 a CA plugin served relying parties itself (ca-local 0.1 registered /crl/, /ca/,
    // /ocsp/): a plugin built for an older minor keeps doing so, behind the host's publication
    // (used only where the host has nothing to say for that CA, e.g. no ocsp query op).
    const bool legacy_publication =
        ctx.identity.abi_major == 1 && ctx.identity.abi_minor < 3 && relying_party_path(route.path) && !host_path(route.path);
    if (!legacy_publication && reserved_path(route.path)) {
        const std::string why = "path " + route.path + " is reserved for the host (/healthz, /status, /admin/, and /crl/, " +
                                "/ca/, /ocsp/ which the host publishes for every CA)";
        ctx.route_conflict = describe(ctx.identity) + ": " + why;
        return refuse(CC_ERR_CONFLICT, why);
    }
    // Paths are namespaced per plugin: a route of another plugin that is the same, lies inside
    // this prefix or contains this path is a conflict (longest-prefix routing would otherwise
    // hand one plugin's requests to the other without a word). Methods do not matter: GET of
    // one plugin and POST of another under one path is the same namespace shared.
    for (const auto& gen : generations()) {
        const PluginIdentity& owner = gen->identity();
        if (owner.kind == ctx.identity.kind && owner.name == ctx.identity.name) continue;  // being replaced
        for (const auto& r : gen->context->routes)
            if (paths_overlap(r.path, route.path)) {
                const std::string why = "route " + route.method + " " + route.path + " of " + describe(ctx.identity) +
                                        " overlaps " + r.method + " " + r.path + " of " + describe(owner) +
                                        " (each plugin serves its own path namespace)";
                ctx.route_conflict = why;  // init fails with it: event 109 names both plugins
                return refuse(CC_ERR_CONFLICT, why);
            }
    }
    for (const auto& r : ctx.routes)
        if (r.method == route.method && r.path == route.path)
            return refuse(CC_ERR_CONFLICT, "route " + route.method + " " + route.path + " registered twice");
    ctx.routes.push_back(route);
    log_.emit(CC_EV_HttpRouteRegistered, CC_LEVEL_DEBUG,
              route.method + " " + route.path + " -> " + describe(ctx.identity) +
                  (route.scope.empty() ? " (public)" : " (scope " + route.scope + ")"));
    return CC_OK;
}

int PluginRuntime::ca_call(CaOperation op, const char* ca_name, const char* request, cc_sink* out, cc_error* error) {
    if (ca_name == nullptr || request == nullptr) {
        sdk::detail::set_error(error, CC_ERR_INVALID_ARGUMENT, "CA name and request are required");
        return CC_ERR_INVALID_ARGUMENT;
    }
    // Routing follows the published configuration and the generations published with it
    // (commit()), read under one lock so they always belong together. What a caller's own
    // generation was configured with (its config_json) plays no part here; the CA's sections
    // are those its generation opened (ca_handles), fixed at instantiate.
    std::shared_ptr<const Config> cfg;
    std::shared_ptr<const Generation> gen;
    {
        std::lock_guard lock(mutex_);
        cfg = config_;
        if (auto s = cfg->cas.find(ca_name); s != cfg->cas.end())
            if (auto it = published_.find({CC_KIND_CA, s->second.plugin}); it != published_.end()) gen = it->second;
    }
    auto section = cfg->cas.find(ca_name);
    if (section == cfg->cas.end()) {
        std::string known;
        for (const auto& [n, s] : cfg->cas)
            known += (known.empty() ? "" : ", ") + n;
        sdk::detail::set_error(
            error, CC_ERR_NOT_FOUND,
            std::string("no CA named '") + ca_name + "' is configured (configured: " + (known.empty() ? "none" : known) + ")");
        return CC_ERR_NOT_FOUND;
    }
    if (!gen) {
        sdk::detail::set_error(error, CC_ERR_UNAVAILABLE,
                               std::string("CA '") + ca_name + "': its plugin '" + section->second.plugin + "' is not loaded");
        return CC_ERR_UNAVAILABLE;
    }
    auto handle = gen->ca_handles.find(ca_name);
    if (handle == gen->ca_handles.end()) {
        auto why = gen->ca_failures.find(ca_name);
        sdk::detail::set_error(error, CC_ERR_UNAVAILABLE,
                               std::string("CA '") + ca_name + "' is not open" +
                                   (why != gen->ca_failures.end() ? ": " + why->second : std::string()));
        return CC_ERR_UNAVAILABLE;
    }
    const cc_ca_api* api = gen->api.ca;
    if (op == CaOperation::describe) {
        if (api->struct_size <= offsetof(cc_ca_api, describe) || api->describe == nullptr) {
            sdk::detail::set_error(
                error, CC_ERR_NOT_SUPPORTED,
                std::string("CA '") + ca_name + "' (plugin '" + section->second.plugin + "') cannot describe itself");
            return CC_ERR_NOT_SUPPORTED;
        }
        const int rc = api->describe(gen->api.instance, handle->second, out, error);
        gen->count_call(rc);
        return rc;
    }
    if (op == CaOperation::query && (api->struct_size <= offsetof(cc_ca_api, query) || api->query == nullptr)) {
        sdk::detail::set_error(error, CC_ERR_NOT_SUPPORTED,
                               std::string("CA '") + ca_name + "' (plugin '" + section->second.plugin + "') answers no queries");
        return CC_ERR_NOT_SUPPORTED;
    }
    auto fn = op == CaOperation::issue ? api->issue : op == CaOperation::revoke ? api->revoke : api->query;
    const auto started = std::chrono::system_clock::now();
    const int rc = fn(gen->api.instance, handle->second, request, out, error);
    gen->count_call(rc);
    if (op == CaOperation::revoke) {
        std::function<void(const std::string&, std::chrono::system_clock::time_point)> listener;
        {
            std::lock_guard lock(mutex_);
            listener = revocation_listener_;
        }
        if (listener) listener(ca_name, started);
    }
    return rc;
}

void PluginRuntime::set_revocation_listener(
    std::function<void(const std::string&, std::chrono::system_clock::time_point)> listener) {
    std::lock_guard lock(mutex_);
    revocation_listener_ = std::move(listener);
}

int PluginRuntime::tenant_call(const char* tenant, const char* operation, const char* request, cc_sink* out, cc_error* error) {
    std::shared_ptr<const Config> cfg;
    std::shared_ptr<const Generation> gen;
    std::string name = tenant != nullptr ? tenant : "";
    {
        std::lock_guard lock(mutex_);  // the tenant of the published configuration (see ca_call)
        cfg = config_;
        if (name.empty()) name = cfg->default_tenant();
        if (auto t = cfg->tenants.find(name); t != cfg->tenants.end())
            if (auto it = published_.find({CC_KIND_TENANT, t->second.plugin}); it != published_.end()) gen = it->second;
    }
    const auto section = cfg->tenants.find(name);
    if (section == cfg->tenants.end()) {
        const std::string why = tenant != nullptr && *tenant != '\0'
                                    ? "no tenant '" + name + "' is configured ([tenant." + name + "])"
                                : cfg->tenants.empty() ? std::string("no tenant is configured ([tenant.<name>] section)")
                                                       : std::string(
                                                             "several tenants are configured and none is named 'default': "
                                                             "the caller must name one");
        sdk::detail::set_error(error, CC_ERR_NOT_FOUND, why);
        return CC_ERR_NOT_FOUND;
    }
    if (!gen) {
        sdk::detail::set_error(error, CC_ERR_UNAVAILABLE,
                               "tenant '" + name + "': its plugin '" + section->second.plugin + "' is not loaded");
        return CC_ERR_UNAVAILABLE;
    }
    if (operation == nullptr || request == nullptr) {
        sdk::detail::set_error(error, CC_ERR_INVALID_ARGUMENT, "operation and request are required");
        return CC_ERR_INVALID_ARGUMENT;
    }
    const int rc = gen->api.tenant->call(gen->api.instance, operation, request, out, error);
    gen->count_call(rc);
    return rc;
}

void PluginRuntime::set_notification_sink(NotificationSink sink) {
    std::lock_guard lock(mutex_);
    notification_sink_ = std::move(sink);
}

void PluginRuntime::set_store_config(std::string json) {
    const std::lock_guard lock(mutex_);
    store_config_ = std::move(json);
}

int PluginRuntime::store_config(cc_sink* out, cc_error* error) {
    std::string json;
    {
        const std::lock_guard lock(mutex_);
        json = store_config_;
    }
    if (out == nullptr || out->write == nullptr) {
        sdk::detail::set_error(error, CC_ERR_INVALID_ARGUMENT, "store_config needs a sink");
        return CC_ERR_INVALID_ARGUMENT;
    }
    out->write(out->ctx, json.data(), json.size());
    return CC_OK;
}

int PluginRuntime::tenant_notify(PluginContext& ctx, const cc_tenant_notification* n, cc_error* error) {
    if (n == nullptr || n->struct_size < offsetof(cc_tenant_notification, done_message) + sizeof(const char*) ||
        n->operation == nullptr || *n->operation == '\0' || n->key == nullptr || *n->key == '\0' || n->request_json == nullptr) {
        sdk::detail::set_error(error, CC_ERR_INVALID_ARGUMENT,
                               "tenant_notify needs a cc_tenant_notification with operation, key and request_json");
        return CC_ERR_INVALID_ARGUMENT;
    }
    std::error_code ec;
    json::value body = json::parse(n->request_json, ec);
    if (ec || !body.is_object()) {
        sdk::detail::set_error(error, CC_ERR_INVALID_ARGUMENT,
                               std::string("tenant notification '") + n->operation + "': request_json is not a JSON object");
        return CC_ERR_INVALID_ARGUMENT;
    }
    std::shared_ptr<const Config> cfg;
    NotificationSink sink;
    {
        std::lock_guard lock(mutex_);
        cfg = config_;
        sink = notification_sink_;
    }
    std::string name = n->tenant != nullptr ? n->tenant : "";
    if (name.empty()) name = cfg->default_tenant();
    if (!cfg->tenants.count(name)) {
        sdk::detail::set_error(error, CC_ERR_NOT_FOUND,
                               name.empty() ? std::string("no default tenant to notify (several [tenant.<name>], none 'default')")
                                            : "no tenant '" + name + "' is configured");
        return CC_ERR_NOT_FOUND;
    }
    if (!sink) {
        sdk::detail::set_error(error, CC_ERR_UNAVAILABLE, "the tenant outbox is not open");
        return CC_ERR_UNAVAILABLE;
    }
    json::object events{{"delivered", n->event_delivered},
                        {"retry", n->event_retry},
                        {"refused", n->event_refused},
                        {"done", n->event_done},
                        {"done_message", n->done_message != nullptr ? n->done_message : ""},
                        {"request_id", n->request_id != nullptr ? n->request_id : ""}};
    try {
        sink(Notification{name, n->key, ctx.identity.name, n->operation, n->request_json, json::serialize(events)});
    } catch (const sql::Error& e) {
        // The store is down or busy: the feature may try again (SCEP answers the device 503).
        const int rc = e.transient() ? CC_ERR_UNAVAILABLE : CC_ERR_INTERNAL;
        sdk::detail::set_error(error, rc, std::string("the tenant outbox could not store it: ") + e.what());
        return rc;
    } catch (const std::exception& e) {
        sdk::detail::set_error(error, CC_ERR_INTERNAL, std::string("the tenant outbox could not store it: ") + e.what());
        return CC_ERR_INTERNAL;
    }
    return CC_OK;
}

std::string PluginRuntime::health(const Generation& gen) const {
    if (gen.api.health == nullptr) return R"({"healthy":true})";
    StringSink sink(std::size_t{64} * 1024);
    cc_sink s = sink.sink();
    cc_error err = sdk::detail::make_error();
    if (gen.api.health(gen.api.instance, &s, &err) != CC_OK)
        return json::serialize(json::object{{"healthy", false}, {"detail", err.message}});
    std::error_code ec;
    json::value v = json::parse(sink.data, ec);
    if (ec || !v.is_object())
        return json::serialize(json::object{{"healthy", false}, {"detail", "health returned invalid JSON"}});
    return sink.data;
}

}  // namespace certconn::host
