#include "config/Config.hpp"

#include <boost/json/serialize.hpp>

#include <algorithm>
#include <stdexcept>

namespace certconn::host {

namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

// The host's own sections. Plugin sections are added per document in concrete_schema().
constexpr std::string_view kHostSchema = R"json({
  "type": "table",
  "keys": {
    "host": {"type": "table", "keys": {
      "listen": {"type": "string", "description": "HTTP listen address, host:port ([v6]:port for IPv6)"},
      "plugin_dir": {"type": "string", "description": "directory scanned for plugins"},
      "state_dir": {"type": "string", "description": "durable state: databases, keys, admin socket"},
      "log_dir": {"type": "string", "description": "event log files"},
      "keys_dir": {"type": "string", "description": "connector keys (default <state_dir>/keys); point several connectors at one shared directory to share file keys"},
      "service_account": {"type": "string", "description": "user the service runs as"},
      "io_threads": {"type": "integer", "min": 1, "max": 16},
      "workers": {"type": "integer", "min": 1, "max": 256, "description": "threads running plugin route handlers"},
      "max_header_bytes": {"type": "integer", "min": 1024, "max": 1048576},
      "max_body_bytes": {"type": "integer", "min": 1024, "max": 67108864},
      "read_timeout_seconds": {"type": "integer", "min": 1, "max": 3600},
      "drain_timeout_seconds": {"type": "integer", "min": 0, "max": 600},
      "max_connections": {"type": "integer", "min": 1, "max": 1000000, "description": "TCP connections served at once; at the cap the listener pauses until one closes (the admin socket is not counted)"},
      "max_queued_requests": {"type": "integer", "min": 0, "max": 100000, "description": "TCP requests waiting for a busy worker; beyond that they get 503 with Retry-After (default 64)"},
      "ca_health_interval_seconds": {"type": "integer", "min": 5, "max": 86400, "description": "how often each configured CA's health probe runs in the background (default 60)"},
      "publication_cache_seconds": {"type": "integer", "min": 0, "max": 86400, "description": "how long a published CRL or CA certificate is served from the host's cache at most (default 300; never past shortly before the CRL's nextUpdate)"},
      "tls": {"type": "table", "keys": {
        "certificate": {"type": "string", "required": true, "description": "PEM certificate chain; re-read on SIGHUP"},
        "private_key": {"type": "string", "required": true, "description": "PEM private key, mode 0600; re-read on SIGHUP"},
        "client_ca": {"type": "string", "description": "PEM bundle of CAs whose client certificates are verified and reported to authorization; clients without a certificate are still served"}
      }}
    }},
    "log": {"type": "table", "keys": {
      "max_file_mb": {"type": "integer", "min": 1, "max": 10240},
      "archives": {"type": "integer", "min": 0, "max": 1000},
      "admin_debug": {"type": "boolean"},
      "operational_debug": {"type": "boolean"}
    }},
    "jobs": {"type": "table", "keys": {
      "concurrency": {"type": "integer", "min": 1, "max": 256},
      "lease_seconds": {"type": "integer", "min": 10, "max": 86400},
      "poll_interval_ms": {"type": "integer", "min": 10, "max": 60000},
      "max_attempts": {"type": "integer", "min": 1, "max": 100},
      "retry_initial_ms": {"type": "integer", "min": 1, "max": 3600000},
      "retry_max_ms": {"type": "integer", "min": 1, "max": 86400000}
    }},
    "auth": {"type": "table", "keys": {
      "admin_group": {"type": "string", "description": "members of this group may use the admin socket (besides root and the service account)"},
      "tokens": {"type": "table", "values": {"type": "table", "keys": {
        "sha256": {"type": "string", "required": true, "description": "SHA-256 (hex) of the bearer token, as `certconnector token create` prints it"},
        "scopes": {"type": "array", "required": true, "items": {"type": "string"}, "description": "what the token may do, e.g. [\"jobs:submit\", \"jobs:read\"]"}
      }}},
      "certificates": {"type": "table", "values": {"type": "table", "keys": {
        "sha256": {"type": "string", "required": true, "description": "SHA-256 (hex) of the client certificate's DER (openssl x509 -outform DER | sha256sum)"},
        "scopes": {"type": "array", "required": true, "items": {"type": "string"}}
      }}}
    }},
    "store": {"type": "table", "keys": {
      "url": {"type": "string", "description": "PostgreSQL shared by a fleet of instances: \"postgresql://user@host1,host2/db?target_session_attrs=read-write&sslmode=verify-full\" (no password in it); absent: SQLite files in state_dir"},
      "password_file": {"type": "string", "description": "file holding the database password (mode 0600 or 0640); else libpq's PGPASSWORD or ~/.pgpass"},
      "heartbeat_seconds": {"type": "integer", "min": 1, "max": 300, "description": "how often this instance renews its entry in the fleet's registry (default 5)"},
      "lost_after_seconds": {"type": "integer", "min": 3, "max": 3600, "description": "an instance silent this long is reported lost (default 30)"}
    }},
    "update": {"type": "table", "keys": {
      "mode": {"type": "string", "enum": ["off", "notify", "auto"], "description": "auto: install updates (in the maintenance window); notify: report them; off: only when asked (default)"},
      "check_interval": {"type": "string", "description": "time between checks: a number and s, m, h or d, e.g. \"6h\" (default 6h)"},
      "maintenance_window": {"type": "string", "description": "UTC time range in which mode auto installs, e.g. \"02:00-04:00\" (empty: any time)"},
      "pin": {"type": "table", "values": {"type": "string"}, "description": "plugin name = the only version it may run, e.g. { pkcs = \"0.3.1\" }"},
      "allow_downgrade": {"type": "boolean", "description": "accept an index entry older than the serving version (default false)"},
      "watch_seconds": {"type": "integer", "min": 1, "max": 86400, "description": "after an update serves, how long its health and error rate are watched before the previous version is retired (default 300)"},
      "probe_timeout_seconds": {"type": "integer", "min": 1, "max": 3600, "description": "how long a new version's probe in a child process may take (default 30)"},
      "stall_seconds": {"type": "integer", "min": 1, "max": 3600, "description": "a download that receives nothing for this long is refused as stalled (default 30)"},
      "download_timeout_seconds": {"type": "integer", "min": 1, "max": 86400, "description": "a download that takes longer in total is abandoned (default 600)"},
      "instance_id": {"type": "string", "description": "this connector's id for rollout_percent (default: a random id kept in <state_dir>/instance-id)"},
      "repositories": {"type": "table", "values": {"type": "table", "keys": {
        "url": {"type": "string", "required": true, "description": "where index.json lives: https://host/path/ or file:///dir/"},
        "root": {"type": "string", "required": true, "description": "the repository's trust root (N.root.json; its signatures in <root>.minisig)"},
        "plugins": {"type": "array", "required": true, "items": {"type": "string"}, "description": "plugin names this repository is trusted for, or [\"*\"] for every plugin"},
        "ca_bundle": {"type": "string", "description": "PEM CA certificates that verify the https:// server (default: the system's)"}
      }}}
    }},
    "features": {"type": "table"},
    "ca": {"type": "table"},
    "tenant": {"type": "table"}
  }
})json";

const SchemaNode& host_schema() {
    static const SchemaNode schema = parse_schema(kHostSchema);
    return schema;
}

fs::path resolve(const fs::path& base_dir, std::string_view value) {
    fs::path p(value);
    return (p.is_absolute() ? p : base_dir / p).lexically_normal();
}

std::vector<std::string> names_of(const std::vector<PluginIdentity>& plugins, cc_plugin_kind kind) {
    std::vector<std::string> names;
    for (const auto& p : plugins)
        if (p.kind == kind) names.push_back(p.name);
    return names;
}

SchemaNode section_schema(const PluginIdentity* plugin) {
    SchemaNode s;
    s.type = SchemaNode::Type::Table;
    if (plugin && plugin->schema) s = *plugin->schema;
    return s;
}

// A [ca.<name>] / [tenant] section: "plugin" names one of `candidates`; the rest follows that
// plugin's schema.
SchemaNode plugin_section_schema(const toml::node* section, const std::vector<PluginIdentity>& plugins, cc_plugin_kind kind) {
    SchemaNode plugin_key;
    plugin_key.type = SchemaNode::Type::String;
    plugin_key.required = true;
    plugin_key.description = std::string("name of the ") + kind_name(kind) + " plugin serving this section";
    plugin_key.allowed = names_of(plugins, kind);
    if (plugin_key.allowed.empty()) plugin_key.allowed.push_back(std::string("<no ") + kind_name(kind) + " plugin present>");

    const PluginIdentity* chosen = nullptr;
    if (section && section->is_table()) {
        if (auto name = (*section->as_table())["plugin"].value<std::string_view>()) {
            for (const auto& p : plugins)
                if (p.kind == kind && p.name == *name) chosen = &p;
        }
    }
    SchemaNode s = section_schema(chosen);
    if (!chosen) s.additional = true;                    // unknown plugin: only the "plugin" key can be judged
    if (chosen && !chosen->schema) s.additional = true;  // reported by check_schemaless_sections()
    s.keys["plugin"] = plugin_key;
    return s;
}

SchemaNode concrete_schema(const toml::table& root, const std::vector<PluginIdentity>& plugins) {
    SchemaNode schema = host_schema();
    SchemaNode& features = schema.keys["features"];
    for (const auto& p : plugins) {
        if (p.kind != CC_KIND_FEATURE) continue;
        SchemaNode flag;
        flag.type = SchemaNode::Type::Boolean;
        features.keys[p.name] = flag;
        schema.keys[p.name] = section_schema(&p);  // the feature's own [<name>] section
    }
    SchemaNode& cas = schema.keys["ca"];
    if (const toml::table* ca_table = root["ca"].as_table()) {
        for (const auto& [name, section] : *ca_table)
            cas.keys[std::string(name.str())] = plugin_section_schema(&section, plugins, CC_KIND_CA);
    }
    // [tenant.<name>] sections, or the old single [tenant] section (it has a "plugin" key).
    auto tenant_schema = [&](const toml::node* section) {
        SchemaNode s = plugin_section_schema(section, plugins, CC_KIND_TENANT);
        SchemaNode features_key;
        features_key.type = SchemaNode::Type::Array;
        features_key.description = "features whose jobs are claimed from this tenant (default: every enabled feature)";
        auto item = std::make_shared<SchemaNode>();
        item->type = SchemaNode::Type::String;
        features_key.items = item;
        s.keys["features"] = features_key;
        SchemaNode heartbeat;
        heartbeat.type = SchemaNode::Type::Integer;
        heartbeat.min = 0;
        heartbeat.max = 86400;
        heartbeat.description = "seconds between heartbeats the host sends this tenant (default 300; 0 = none)";
        s.keys["heartbeat_seconds"] = heartbeat;
        return s;
    };
    const toml::table* tenant = root["tenant"].as_table();
    if (tenant && tenant->contains("plugin")) {
        schema.keys["tenant"] = tenant_schema(tenant);
    } else if (tenant) {
        SchemaNode& tenants = schema.keys["tenant"];
        for (const auto& [name, section] : *tenant)
            tenants.keys[std::string(name.str())] = tenant_schema(&section);
    }
    return schema;
}

// A plugin that declares no configuration schema takes no configuration. Anything in its section
// would reach the plugin, and the logged effective configuration, unchecked and unredacted (a
// password there would be logged in clear), so the section must be empty: a feature's
// [<name>] section, or a [ca.<name>] / [tenant] section beyond its "plugin" key.
void check_schemaless_sections(const toml::table& root, const std::vector<PluginIdentity>& plugins, const std::string& file,
                               std::vector<ConfigProblem>& problems) {
    auto refuse = [&](const toml::node& section, const std::string& path, const std::string& plugin, bool plugin_key_allowed) {
        const toml::table* table = section.as_table();
        std::vector<std::string> keys;
        toml::source_region where = section.source();
        bool first = true;
        if (table) {
            for (const auto& [key, value] : *table) {
                if (plugin_key_allowed && key.str() == "plugin") continue;
                if (path.rfind("tenant", 0) == 0 && (key.str() == "features" || key.str() == "heartbeat_seconds"))
                    continue;  // the host's keys
                keys.push_back("'" + std::string(key.str()) + "'");
                if (first || (key.source().begin.line > 0 && key.source().begin.line < where.begin.line)) where = key.source();
                first = false;
            }
            if (keys.empty()) return;
        }
        std::string msg = "plugin '" + plugin + "' declares no configuration schema, so its section must be empty";
        if (plugin_key_allowed) msg += " (only 'plugin' may be set)";
        if (!keys.empty()) {
            msg += "; found ";
            for (std::size_t i = 0; i < keys.size(); ++i)
                msg += (i ? ", " : "") + keys[i];
        }
        problems.push_back({file, static_cast<int>(where.begin.line), static_cast<int>(where.begin.column), path, msg});
    };
    auto schemaless = [&](const toml::node& section, cc_plugin_kind kind) -> const PluginIdentity* {
        const toml::table* table = section.as_table();
        if (!table) return nullptr;
        const auto name = (*table)["plugin"].value<std::string_view>();
        if (!name) return nullptr;
        for (const auto& p : plugins)
            if (p.kind == kind && p.name == *name) return p.schema ? nullptr : &p;
        return nullptr;
    };
    for (const auto& p : plugins) {
        if (p.kind != CC_KIND_FEATURE || p.schema) continue;
        if (const toml::node* section = root.get(p.name)) refuse(*section, p.name, p.name, false);
    }
    if (const toml::table* cas = root["ca"].as_table()) {
        for (const auto& [name, section] : *cas)
            if (const PluginIdentity* p = schemaless(section, CC_KIND_CA))
                refuse(section, "ca." + std::string(name.str()), p->name, true);
    }
    if (const toml::table* tenant = root["tenant"].as_table()) {
        if (tenant->contains("plugin")) {
            if (const PluginIdentity* p = schemaless(*tenant, CC_KIND_TENANT)) refuse(*tenant, "tenant", p->name, true);
        } else {
            for (const auto& [name, section] : *tenant)
                if (const PluginIdentity* p = schemaless(section, CC_KIND_TENANT))
                    refuse(section, "tenant." + std::string(name.str()), p->name, true);
        }
    }
}

// [tenant.<name>]: names, one section per tenant plugin, known features; the old [tenant].
void check_tenant_sections(const toml::table& root, const std::vector<PluginIdentity>& plugins, const std::string& file,
                           std::vector<ConfigProblem>& problems) {
    const toml::table* tenant = root["tenant"].as_table();
    if (tenant == nullptr || tenant->contains("plugin")) return;
    std::map<std::string, std::string> served;  // plugin -> tenant name
    for (const auto& [key, section] : *tenant) {
        const std::string name(key.str());
        const auto at = section.source().begin;
        auto problem = [&](const std::string& path, const std::string& msg) {
            problems.push_back({file, static_cast<int>(at.line), static_cast<int>(at.column), path, msg});
        };
        const bool valid_name = !name.empty() && name.size() <= 63 && name[0] >= 'a' && name[0] <= 'z' &&
                                name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") == std::string::npos;
        if (!valid_name) problem("tenant." + name, "a tenant name is [a-z][a-z0-9-]{0,62}, e.g. [tenant.intune]");
        const toml::table* t = section.as_table();
        if (t == nullptr) continue;  // the schema reports it
        if (auto plugin = (*t)["plugin"].value<std::string>()) {
            auto [it, fresh] = served.emplace(*plugin, name);
            if (!fresh)
                problem("tenant." + name + ".plugin", "tenant plugin '" + *plugin + "' already serves [tenant." + it->second +
                                                          "]; a tenant plugin serves one tenant section");
        }
        if (const toml::array* features = (*t)["features"].as_array())
            for (const auto& f : *features) {
                const auto feature = f.value<std::string>();
                if (!feature) continue;
                bool known = false;
                for (const auto& p : plugins)
                    known = known || (p.kind == CC_KIND_FEATURE && p.name == *feature);
                if (!known) problem("tenant." + name + ".features", "no feature plugin named '" + *feature + "' is present");
            }
    }
}

// What the schema cannot say about [store]: a PostgreSQL URL without a password in it, a
// readable password file, heartbeat shorter than the loss threshold.
void check_store_section(const toml::table& root, const fs::path& base, const std::string& file,
                         std::vector<ConfigProblem>& problems) {
    const toml::table* store = root["store"].as_table();
    if (store == nullptr) return;
    auto at = [&](const toml::node& n, const std::string& key, std::string msg) {
        problems.push_back(
            {file, static_cast<int>(n.source().begin.line), static_cast<int>(n.source().begin.column), key, std::move(msg)});
    };
    if (const toml::node* n = store->get("url"); n && n->is_string()) {
        const std::string url = *n->value<std::string>();
        const auto scheme_end = url.find("://");
        const std::string scheme = scheme_end == std::string::npos ? std::string() : url.substr(0, scheme_end);
        if (scheme != "postgresql" && scheme != "postgres") {
            at(*n, "store.url", "expected a PostgreSQL URL starting with postgresql:// (found '" + scheme + "://...')");
        } else {
            // user:password@ in the authority, or password= in the query: refused, it would be logged.
            const auto authority_end = url.find_first_of("/?", scheme_end + 3);
            const std::string authority = url.substr(
                scheme_end + 3, authority_end == std::string::npos ? std::string::npos : authority_end - scheme_end - 3);
            const auto at_sign = authority.rfind('@');
            if ((at_sign != std::string::npos && authority.substr(0, at_sign).find(':') != std::string::npos) ||
                url.find("password=") != std::string::npos)
                at(*n, "store.url",
                   "holds a password; put it in store.password_file (or PGPASSWORD) instead, so it is never logged");
        }
    }
    if (const toml::node* n = store->get("password_file"); n && n->is_string()) {
        const fs::path f = resolve(base, *n->value<std::string_view>());
        std::error_code ec;
        if (!fs::is_regular_file(f, ec))
            at(*n, "store.password_file", "no such file: " + f.string());
        else if ((fs::status(f, ec).permissions() & (fs::perms::others_read | fs::perms::others_write)) != fs::perms::none)
            at(*n, "store.password_file", f.string() + " is readable by others; expected mode 0600 or 0640");
    }
    const auto heartbeat = store->get("heartbeat_seconds") ? store->get("heartbeat_seconds")->value<int64_t>() : std::nullopt;
    const auto lost = store->get("lost_after_seconds") ? store->get("lost_after_seconds")->value<int64_t>() : std::nullopt;
    if (heartbeat && lost && *lost < 2 * *heartbeat)
        at(*store->get("lost_after_seconds"), "store.lost_after_seconds",
           "expected at least twice heartbeat_seconds (" + std::to_string(*heartbeat) + "), or every pause looks like a loss");
}

// What the schema cannot say about [update]: durations, the window, URLs, files, names.
void check_update_section(const toml::table& root, const fs::path& base, const std::string& file,
                          std::vector<ConfigProblem>& problems) {
    const toml::table* update = root["update"].as_table();
    if (update == nullptr) return;
    auto at = [&](const toml::node& n, const std::string& key, std::string msg) {
        problems.push_back(
            {file, static_cast<int>(n.source().begin.line), static_cast<int>(n.source().begin.column), key, std::move(msg)});
    };
    if (const toml::node* n = update->get("check_interval");
        n && n->is_string() && !parse_duration(*n->value<std::string_view>()))
        at(*n, "update.check_interval",
           "expected a positive number followed by s, m, h or d (e.g. \"6h\"), found '" + *n->value<std::string>() + "'");
    if (const toml::node* n = update->get("maintenance_window"); n && n->is_string()) {
        const auto v = *n->value<std::string_view>();
        if (!v.empty() && !parse_time_window(v))
            at(*n, "update.maintenance_window",
               "expected HH:MM-HH:MM in UTC with different begin and end (e.g. \"02:00-04:00\"), found '" + std::string(v) + "'");
    }
    if (const toml::node* n = update->get("instance_id"); n && n->is_string()) {
        const auto v = *n->value<std::string_view>();
        if (v.empty() || v.size() > 128 ||
            v.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") != std::string_view::npos)
            at(*n, "update.instance_id", "expected 1-128 letters, digits, '-', '_' or '.'");
    }
    if (const toml::table* pins = update->get_as<toml::table>("pin")) {
        for (const auto& [name, value] : *pins) {
            const auto v = value.value<std::string_view>();
            if (v && (v->empty() || v->find_first_not_of("0123456789.abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-+") !=
                                        std::string_view::npos))
                at(value, "update.pin." + std::string(name.str()), "expected a version such as \"0.3.1\"");
        }
    }
    const toml::table* repos = update->get_as<toml::table>("repositories");
    if (repos == nullptr) return;
    for (const auto& [name, entry] : *repos) {
        const std::string where = "update.repositories." + std::string(name.str());
        const toml::table* t = entry.as_table();
        if (t == nullptr) continue;
        if (name.str().empty() ||
            name.str().find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-_") != std::string_view::npos)
            at(entry, where,
               "a repository name is lower-case letters, digits, '-' and '_' (it names files in the state directory)");
        if (const toml::node* n = t->get("url"); n && n->is_string()) {
            const std::string v(*n->value<std::string_view>());
            if (v.rfind("https://", 0) != 0 && v.rfind("file:///", 0) != 0)
                at(*n, where + ".url", "expected an https:// or file:/// URL, found '" + v + "'");
            else if (v.back() != '/')
                at(*n, where + ".url", "expected the repository's directory, ending in '/' (index.json is fetched below it)");
        }
        for (const char* key : {"root", "ca_bundle"}) {
            const toml::node* n = t->get(key);
            if (n == nullptr || !n->is_string()) continue;
            const fs::path p = resolve(base, *n->value<std::string_view>());
            std::error_code ec;
            if (!fs::is_regular_file(p, ec)) at(*n, where + "." + key, "file not found: " + p.string());
        }
        if (const toml::array* plugins = t->get_as<toml::array>("plugins")) {
            if (plugins->empty())
                at(*plugins, where + ".plugins",
                   "name the plugins this repository is trusted for (or [\"*\"] for every plugin); an empty list trusts it for "
                   "none");
            for (const auto& item : *plugins) {
                const auto v = item.value<std::string_view>();
                if (v && *v != "*" &&
                    (v->empty() || v->find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-_") != std::string_view::npos))
                    at(item, where + ".plugins", "expected a plugin name (lower-case letters, digits, '-', '_') or \"*\"");
            }
        }
    }
}

json::object section_json(const toml::node& node, const SchemaNode* schema, bool redact) {
    json::value v = to_json(node, schema, redact);
    json::object o = v.is_object() ? v.get_object() : json::object{};
    return o;
}

}  // namespace

const char* kind_name(cc_plugin_kind kind) {
    switch (kind) {
        case CC_KIND_FEATURE: return "feature";
        case CC_KIND_CA: return "ca";
        case CC_KIND_TENANT: return "tenant";
    }
    return "unknown";
}

fs::path ConfigDocument::plugin_dir() const {
    if (auto dir = root["host"]["plugin_dir"].value<std::string_view>()) return resolve(file.parent_path(), *dir);
    return HostSettings{}.plugin_dir;
}

fs::path ConfigDocument::keys_dir() const {
    if (auto dir = root["host"]["keys_dir"].value<std::string_view>()) return resolve(file.parent_path(), *dir);
    return state_dir() / "keys";
}

fs::path ConfigDocument::state_dir() const {
    if (auto dir = root["host"]["state_dir"].value<std::string_view>()) return resolve(file.parent_path(), *dir);
    return HostSettings{}.state_dir;
}

std::string ConfigDocument::service_account() const {
    return root["host"]["service_account"].value<std::string>().value_or("");
}

std::optional<ConfigDocument> parse_config_file(const fs::path& file, std::vector<ConfigProblem>& problems) {
    std::error_code ec;
    if (!fs::is_regular_file(file, ec)) {
        problems.push_back({file.string(), 0, 0, "", "cannot read the configuration file (not a regular file or missing)"});
        return std::nullopt;
    }
    try {
        ConfigDocument doc{fs::absolute(file).lexically_normal(), toml::parse_file(file.string())};
        return doc;
    } catch (const toml::parse_error& e) {
        problems.push_back({file.string(), static_cast<int>(e.source().begin.line), static_cast<int>(e.source().begin.column), "",
                            "TOML syntax error: " + std::string(e.description())});
        return std::nullopt;
    }
}

std::optional<Config> validate_config(const ConfigDocument& doc, const std::vector<PluginIdentity>& plugins,
                                      std::vector<ConfigProblem>& problems) {
    const SchemaNode schema = concrete_schema(doc.root, plugins);
    const std::string file = doc.file.string();
    const std::size_t before = problems.size();

    // Top-level keys get a message of their own: a section is either the host's or a feature's.
    for (const auto& [key, value] : doc.root) {
        if (schema.child(key.str())) continue;
        std::vector<std::string> names;
        for (const auto& [n, s] : schema.keys)
            names.push_back(n);
        std::string msg = "unknown section: neither a host section nor a present feature plugin";
        if (auto hint = closest_match(key.str(), names); !hint.empty()) msg += " (did you mean '" + hint + "'?)";
        problems.push_back({file, static_cast<int>(key.source().begin.line), static_cast<int>(key.source().begin.column),
                            std::string(key.str()), msg});
    }
    SchemaNode known = schema;
    known.additional = true;  // reported above
    validate_node(doc.root, known, "", file, problems);
    check_schemaless_sections(doc.root, plugins, file, problems);
    check_tenant_sections(doc.root, plugins, file, problems);

    if (const toml::node* listen = doc.root["host"]["listen"].node(); listen && listen->is_string()) {
        try {
            split_listen_address(std::string(*listen->value<std::string_view>()));
        } catch (const std::invalid_argument& e) {
            problems.push_back({file, static_cast<int>(listen->source().begin.line),
                                static_cast<int>(listen->source().begin.column), "host.listen", e.what()});
        }
    }

    // Files the connector must be able to use.
    const fs::path base = doc.file.parent_path();
    if (const toml::table* tls = doc.root["host"]["tls"].as_table()) {
        for (const char* key : {"certificate", "private_key", "client_ca"}) {
            const toml::node* n = tls->get(key);
            if (!n || !n->is_string()) continue;
            const fs::path p = resolve(base, *n->value<std::string_view>());
            std::error_code ec;
            const auto st = fs::status(p, ec);
            auto at = [&](std::string msg) {
                problems.push_back({file, static_cast<int>(n->source().begin.line), static_cast<int>(n->source().begin.column),
                                    std::string("host.tls.") + key, std::move(msg)});
            };
            if (ec || !fs::is_regular_file(st))
                at("file not found: " + p.string());
            else if (std::string_view(key) == "private_key" &&
                     (st.permissions() & (fs::perms::group_all | fs::perms::others_all)) != fs::perms::none)
                at("private key " + p.string() + " is accessible by group or others; expected mode 0600");
        }
    }
    // Credentials: a digest of the right form and scopes with a name.
    for (const char* kind : {"tokens", "certificates"}) {
        const toml::table* table = doc.root["auth"][kind].as_table();
        if (!table) continue;
        for (const auto& [name, entry] : *table) {
            const std::string where = std::string("auth.") + kind + "." + std::string(name.str());
            auto at = [&](const toml::node& n, const std::string& key, std::string msg) {
                problems.push_back({file, static_cast<int>(n.source().begin.line), static_cast<int>(n.source().begin.column),
                                    where + "." + key, std::move(msg)});
            };
            if (const toml::node* d = entry.as_table() ? entry.as_table()->get("sha256") : nullptr; d && d->is_string()) {
                const std::string v(*d->value<std::string_view>());
                if (v.size() != 64 || v.find_first_not_of("0123456789abcdef") != std::string::npos)
                    at(*d, "sha256",
                       "expected 64 lower-case hex digits (a SHA-256 digest), found " + std::to_string(v.size()) + " characters");
            }
            if (const toml::array* a = entry.as_table() ? entry.as_table()->get_as<toml::array>("scopes") : nullptr) {
                for (const auto& item : *a) {
                    const auto v = item.value<std::string_view>();
                    const bool ok =
                        v && (*v == "*" || (!v->empty() && v->find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789:_-") ==
                                                               std::string_view::npos));
                    if (!ok)
                        at(item, "scopes",
                           "a scope is \"*\" or lower-case letters, digits, ':', '_' and '-' (e.g. \"jobs:submit\")");
                }
            }
        }
    }
    check_update_section(doc.root, base, file, problems);
    check_store_section(doc.root, base, file, problems);
    if (problems.size() != before) return std::nullopt;

    Config c;
    c.file = doc.file;
    const toml::table& root = doc.root;
    HostSettings& h = c.host;
    auto str = [&](const char* key, auto& out) {
        if (auto v = root["host"][key].value<std::string>()) out = *v;
    };
    auto path = [&](const char* key, fs::path& out) {
        if (auto v = root["host"][key].value<std::string_view>()) out = resolve(base, *v);
    };
    auto integer = [&](const toml::node_view<const toml::node> n, auto& out) {
        if (auto v = n.value<int64_t>()) out = static_cast<std::remove_reference_t<decltype(out)>>(*v);
    };
    str("listen", h.listen);
    path("plugin_dir", h.plugin_dir);
    path("state_dir", h.state_dir);
    path("log_dir", h.log_dir);
    path("keys_dir", h.keys_dir);
    if (h.keys_dir.empty()) h.keys_dir = h.state_dir / "keys";
    str("service_account", h.service_account);
    integer(root["host"]["io_threads"], h.io_threads);
    integer(root["host"]["workers"], h.workers);
    integer(root["host"]["max_header_bytes"], h.max_header_bytes);
    integer(root["host"]["max_body_bytes"], h.max_body_bytes);
    if (auto v = root["host"]["read_timeout_seconds"].value<int64_t>()) h.read_timeout = std::chrono::seconds(*v);
    if (auto v = root["host"]["drain_timeout_seconds"].value<int64_t>()) h.drain_timeout = std::chrono::seconds(*v);
    integer(root["host"]["max_connections"], h.max_connections);
    integer(root["host"]["max_queued_requests"], h.max_queued_requests);
    if (auto v = root["host"]["ca_health_interval_seconds"].value<int64_t>()) h.ca_health_interval = std::chrono::seconds(*v);
    if (auto v = root["host"]["publication_cache_seconds"].value<int64_t>()) h.publication_cache = std::chrono::seconds(*v);
    if (root["host"]["tls"].is_table()) {
        h.tls = TlsSettings{resolve(base, *root["host"]["tls"]["certificate"].value<std::string_view>()),
                            resolve(base, *root["host"]["tls"]["private_key"].value<std::string_view>()),
                            {}};
        if (auto v = root["host"]["tls"]["client_ca"].value<std::string_view>()) h.tls->client_ca = resolve(base, *v);
    }
    integer(root["log"]["max_file_mb"], c.log.max_file_mb);
    integer(root["log"]["archives"], c.log.archives);
    if (auto v = root["log"]["admin_debug"].value<bool>()) c.log.admin_debug = *v;
    if (auto v = root["log"]["operational_debug"].value<bool>()) c.log.operational_debug = *v;

    if (auto v = root["auth"]["admin_group"].value<std::string>()) c.auth.admin_group = *v;
    json::object effective_auth{{"admin_group", c.auth.admin_group}};
    for (const char* kind : {"tokens", "certificates"}) {
        auto& list = std::string_view(kind) == "tokens" ? c.auth.tokens : c.auth.certificates;
        json::object shown;
        if (const toml::table* table = root["auth"][kind].as_table()) {
            for (const auto& [name, entry] : *table) {
                Credential cred{std::string(name.str()), *entry.as_table()->get("sha256")->value<std::string>(), {}};
                json::array scopes;
                for (const auto& item : *entry.as_table()->get_as<toml::array>("scopes")) {
                    cred.scopes.push_back(*item.value<std::string>());
                    scopes.push_back(json::string(cred.scopes.back()));
                }
                // The digest of a random token is not a secret, but a prefix is enough to tell them apart.
                shown[cred.name] = json::object{{"sha256", cred.sha256.substr(0, 12) + "..."}, {"scopes", scopes}};
                list.push_back(std::move(cred));
            }
        }
        effective_auth[kind] = std::move(shown);
    }

    if (auto v = root["store"]["url"].value<std::string>()) c.store.url = *v;
    if (auto v = root["store"]["password_file"].value<std::string_view>()) c.store.password_file = resolve(base, *v);
    integer(root["store"]["heartbeat_seconds"], c.store.heartbeat_seconds);
    integer(root["store"]["lost_after_seconds"], c.store.lost_after_seconds);

    integer(root["jobs"]["concurrency"], c.jobs.concurrency);
    integer(root["jobs"]["lease_seconds"], c.jobs.lease_seconds);
    integer(root["jobs"]["poll_interval_ms"], c.jobs.poll_interval_ms);
    integer(root["jobs"]["max_attempts"], c.jobs.max_attempts);
    integer(root["jobs"]["retry_initial_ms"], c.jobs.retry_initial_ms);
    integer(root["jobs"]["retry_max_ms"], c.jobs.retry_max_ms);

    UpdateSettings& u = c.update;
    if (auto v = root["update"]["mode"].value<std::string_view>())
        u.mode = *v == "auto"     ? UpdateSettings::Mode::Auto
                 : *v == "notify" ? UpdateSettings::Mode::Notify
                                  : UpdateSettings::Mode::Off;
    if (auto v = root["update"]["check_interval"].value<std::string_view>()) u.check_interval = *parse_duration(*v);
    if (auto v = root["update"]["maintenance_window"].value<std::string_view>(); v && !v->empty())
        u.maintenance_window = parse_time_window(*v);
    if (const toml::table* pins = root["update"]["pin"].as_table())
        for (const auto& [name, value] : *pins)
            u.pins[std::string(name.str())] = *value.value<std::string>();
    if (auto v = root["update"]["allow_downgrade"].value<bool>()) u.allow_downgrade = *v;
    if (auto v = root["update"]["watch_seconds"].value<int64_t>()) u.watch = std::chrono::seconds(*v);
    if (auto v = root["update"]["probe_timeout_seconds"].value<int64_t>()) u.probe_timeout = std::chrono::seconds(*v);
    if (auto v = root["update"]["stall_seconds"].value<int64_t>()) u.stall_timeout = std::chrono::seconds(*v);
    if (auto v = root["update"]["download_timeout_seconds"].value<int64_t>()) u.download_timeout = std::chrono::seconds(*v);
    if (auto v = root["update"]["instance_id"].value<std::string>()) u.instance_id = *v;
    json::object effective_repositories;
    if (const toml::table* repos = root["update"]["repositories"].as_table()) {
        for (const auto& [name, entry] : *repos) {
            const toml::table& t = *entry.as_table();
            UpdateRepository r;
            r.name = std::string(name.str());
            r.url = *t["url"].value<std::string>();
            r.root = resolve(base, *t["root"].value<std::string_view>());
            json::array plugins;
            for (const auto& item : *t.get_as<toml::array>("plugins")) {
                r.plugins.push_back(*item.value<std::string>());
                plugins.push_back(json::string(r.plugins.back()));
            }
            if (auto v = t["ca_bundle"].value<std::string_view>()) r.ca_bundle = resolve(base, *v);
            json::object shown{{"url", r.url}, {"root", r.root.string()}, {"plugins", plugins}};
            if (!r.ca_bundle.empty()) shown["ca_bundle"] = r.ca_bundle.string();
            effective_repositories[r.name] = std::move(shown);
            u.repositories.push_back(std::move(r));
        }
    }
    json::object effective_pins;
    for (const auto& [name, version] : u.pins)
        effective_pins[name] = version;

    if (const toml::table* f = root["features"].as_table())
        for (const auto& [name, value] : *f)
            c.features[std::string(name.str())] = *value.value<bool>();

    json::object effective_sections;
    auto plugin_section = [&](const toml::node& node, const SchemaNode* s) {
        PluginSection section;
        section.settings = section_json(node, s, false);
        section.plugin = std::string(section.settings["plugin"].as_string());
        section.settings.erase("plugin");
        return section;
    };
    if (const toml::table* cas = root["ca"].as_table()) {
        for (const auto& [name, node] : *cas)
            c.cas.emplace(std::string(name.str()), plugin_section(node, schema.keys.at("ca").child(name.str())));
    }
    auto tenant_section = [&](const toml::node& node, const SchemaNode* s) {
        PluginSection section = plugin_section(node, s);
        if (const auto* f = section.settings.if_contains("features")) {
            for (const auto& item : f->as_array())
                section.features.emplace_back(item.as_string());
            section.settings.erase("features");
        }
        if (const auto* h = section.settings.if_contains("heartbeat_seconds")) {
            section.heartbeat_seconds = static_cast<int>(h->as_int64());
            section.settings.erase("heartbeat_seconds");
        }
        return section;
    };
    if (const toml::table* t = root["tenant"].as_table()) {
        if (t->contains("plugin")) {
            c.tenants.emplace("default", tenant_section(*t, schema.child("tenant")));
            const auto at = t->source().begin;
            c.deprecations.push_back({c.file.string(), static_cast<int>(at.line), static_cast<int>(at.column), "tenant",
                                      "the single [tenant] section is deprecated: it is read as [tenant.default]; rename it "
                                      "to [tenant.default], which also lets more tenants be configured (another name "
                                      "leaves undelivered outbox entries under 'default': docs/operator-guide.md, Tenants)"});
        } else {
            for (const auto& [name, node] : *t)
                c.tenants.emplace(std::string(name.str()), tenant_section(node, schema.keys.at("tenant").child(name.str())));
        }
    }
    for (const auto& p : plugins) {
        if (p.kind != CC_KIND_FEATURE) continue;
        if (const toml::node* n = root.get(p.name)) c.feature_sections[p.name] = section_json(*n, schema.child(p.name), false);
    }

    // The effective configuration: defaults filled in, secrets redacted.
    json::object host{{"listen", h.listen},
                      {"plugin_dir", h.plugin_dir.string()},
                      {"state_dir", h.state_dir.string()},
                      {"log_dir", h.log_dir.string()},
                      {"keys_dir", h.keys_dir.string()},
                      {"service_account", h.service_account},
                      {"io_threads", h.io_threads},
                      {"workers", h.workers},
                      {"max_header_bytes", h.max_header_bytes},
                      {"max_body_bytes", h.max_body_bytes},
                      {"read_timeout_seconds", h.read_timeout.count()},
                      {"drain_timeout_seconds", h.drain_timeout.count()},
                      {"max_connections", h.max_connections},
                      {"max_queued_requests", h.max_queued_requests},
                      {"ca_health_interval_seconds", h.ca_health_interval.count()},
                      {"publication_cache_seconds", h.publication_cache.count()}};
    if (h.tls) {
        json::object tls{{"certificate", h.tls->certificate.string()}, {"private_key", h.tls->private_key.string()}};
        if (!h.tls->client_ca.empty()) tls["client_ca"] = h.tls->client_ca.string();
        host["tls"] = std::move(tls);
    }
    json::object features;
    for (const auto& p : plugins)
        if (p.kind == CC_KIND_FEATURE) features[p.name] = c.feature_enabled(p.name);
    c.effective = {{"host", host},
                   {"log", json::object{{"max_file_mb", c.log.max_file_mb},
                                        {"archives", c.log.archives},
                                        {"admin_debug", c.log.admin_debug},
                                        {"operational_debug", c.log.operational_debug}}},
                   {"jobs", json::object{{"concurrency", c.jobs.concurrency},
                                         {"lease_seconds", c.jobs.lease_seconds},
                                         {"poll_interval_ms", c.jobs.poll_interval_ms},
                                         {"max_attempts", c.jobs.max_attempts},
                                         {"retry_initial_ms", c.jobs.retry_initial_ms},
                                         {"retry_max_ms", c.jobs.retry_max_ms}}},
                   {"auth", effective_auth},
                   {"store", json::object{{"backend", c.store.shared() ? "postgresql" : "sqlite"},
                                          {"url", c.store.url},
                                          {"password_file", c.store.password_file.string()},
                                          {"heartbeat_seconds", c.store.heartbeat_seconds},
                                          {"lost_after_seconds", c.store.lost_after_seconds}}},
                   {"update", json::object{{"mode", update_mode_name(u.mode)},
                                           {"check_interval_seconds", u.check_interval.count()},
                                           {"maintenance_window", root["update"]["maintenance_window"].value_or(std::string())},
                                           {"pin", effective_pins},
                                           {"allow_downgrade", u.allow_downgrade},
                                           {"watch_seconds", u.watch.count()},
                                           {"probe_timeout_seconds", u.probe_timeout.count()},
                                           {"stall_seconds", u.stall_timeout.count()},
                                           {"download_timeout_seconds", u.download_timeout.count()},
                                           {"instance_id", u.instance_id},
                                           {"repositories", effective_repositories}}},
                   {"features", features}};
    for (const auto& [key, node] : root) {
        const std::string k(key.str());
        if (k == "host" || k == "log" || k == "jobs" || k == "auth" || k == "features" || k == "update" || k == "store") continue;
        c.effective[k] = to_json(node, schema.child(k), true);
    }
    return c;
}

const char* update_mode_name(UpdateSettings::Mode mode) {
    switch (mode) {
        case UpdateSettings::Mode::Off: return "off";
        case UpdateSettings::Mode::Notify: return "notify";
        case UpdateSettings::Mode::Auto: return "auto";
    }
    return "off";
}

std::optional<std::chrono::seconds> parse_duration(std::string_view text) {
    if (text.size() < 2 || text.size() > 12) return std::nullopt;
    const std::string_view digits = text.substr(0, text.size() - 1);
    if (digits.find_first_not_of("0123456789") != std::string_view::npos) return std::nullopt;
    std::int64_t n = 0;
    for (const char d : digits)
        n = n * 10 + (d - '0');
    if (n <= 0) return std::nullopt;
    switch (text.back()) {
        case 's': return std::chrono::seconds(n);
        case 'm': return std::chrono::seconds(n * 60);
        case 'h': return std::chrono::seconds(n * 3600);
        case 'd': return std::chrono::seconds(n * 86400);
        default: return std::nullopt;
    }
}

std::optional<std::pair<int, int>> parse_time_window(std::string_view text) {
    auto minutes = [](std::string_view hhmm) -> std::optional<int> {
        if (hhmm.size() != 5 || hhmm[2] != ':') return std::nullopt;
        for (const std::size_t i : {0, 1, 3, 4})
            if (hhmm[i] < '0' || hhmm[i] > '9') return std::nullopt;
        const int h = (hhmm[0] - '0') * 10 + (hhmm[1] - '0');
        const int m = (hhmm[3] - '0') * 10 + (hhmm[4] - '0');
        if (h > 24 || m > 59 || (h == 24 && m != 0)) return std::nullopt;
        return h * 60 + m;
    };
    const auto dash = text.find('-');
    if (dash == std::string_view::npos) return std::nullopt;
    const auto begin = minutes(text.substr(0, dash));
    const auto end = minutes(text.substr(dash + 1));
    if (!begin || !end || *begin == *end) return std::nullopt;
    return std::make_pair(*begin, *end);
}

std::pair<std::string, std::uint16_t> split_listen_address(const std::string& address) {
    std::string host;
    std::string port;
    if (!address.empty() && address.front() == '[') {
        const auto close = address.find(']');
        if (close == std::string::npos || close + 1 >= address.size() || address[close + 1] != ':')
            throw std::invalid_argument("'" + address + "': expected [ipv6-address]:port");
        host = address.substr(1, close - 1);
        port = address.substr(close + 2);
    } else {
        const auto colon = address.rfind(':');
        if (colon == std::string::npos) throw std::invalid_argument("'" + address + "': expected host:port");
        host = address.substr(0, colon);
        port = address.substr(colon + 1);
    }
    if (host.empty()) throw std::invalid_argument("'" + address + "': missing host (use 0.0.0.0 for all IPv4 addresses)");
    if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos || std::stoul(port) > 65535)
        throw std::invalid_argument("'" + address + "': port must be a number 0-65535");
    return {host, static_cast<std::uint16_t>(std::stoul(port))};
}

std::map<std::string, std::string> flatten(const json::object& effective) {
    std::map<std::string, std::string> out;
    auto walk = [&](auto&& self, const json::value& v, const std::string& prefix) -> void {
        if (v.is_object() && !v.get_object().empty()) {
            for (const auto& [k, sub] : v.get_object())
                self(self, sub, prefix.empty() ? std::string(k) : prefix + "." + std::string(k));
        } else {
            out[prefix] = json::serialize(v);
        }
    };
    walk(walk, effective, "");
    return out;
}

}  // namespace certconn::host
