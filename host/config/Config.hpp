// The connector's configuration: parsed from TOML, validated against the host's schema and
// the schemas the present plugins publish, then turned into typed settings.
#pragma once

#include "config/ConfigSchema.hpp"
#include "plugins/PluginIdentity.hpp"

#include <boost/json/object.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace certconn::host {

struct TlsSettings {
    std::filesystem::path certificate;  // PEM chain
    std::filesystem::path private_key;  // PEM, must not be readable by group or others
    std::filesystem::path client_ca;    // optional: CA bundle that verifies client certificates
};

struct HostSettings {
    std::string listen = "127.0.0.1:8080";
    std::filesystem::path plugin_dir = "/usr/lib/certconnector/plugins";
    std::filesystem::path state_dir = "/var/lib/certconnector";
    std::filesystem::path log_dir = "/var/log/certconnector";
    std::filesystem::path keys_dir;  // connector keys; <state_dir>/keys when not configured
    std::string service_account;
    int io_threads = 1;
    int workers = 8;
    std::size_t max_header_bytes = std::size_t{16} * 1024;
    std::size_t max_body_bytes = std::size_t{2} * 1024 * 1024;
    std::chrono::seconds read_timeout{30};
    std::chrono::seconds drain_timeout{15};
    // TCP connections served at once (the admin socket is not counted); at the cap the listener
    // stops accepting until one closes. Also held below the descriptor limit (see HttpServer).
    std::size_t max_connections = 1024;
    std::size_t max_queued_requests = 64;         // TCP requests waiting for a worker; more get 503
    std::chrono::seconds ca_health_interval{60};  // background health probe of each configured CA
    std::chrono::seconds publication_cache{300};  // CRL / CA certificate cache of /crl/ and /ca/ (at most)
    std::optional<TlsSettings> tls;

    std::filesystem::path admin_socket() const { return state_dir / "admin.sock"; }
};

struct JobSettings {
    int concurrency = 4;          // jobs running at once
    int lease_seconds = 300;      // a claim not completed by then returns to the queue
    int poll_interval_ms = 250;   // how often to ask the tenant for work when idle
    int max_attempts = 5;         // runs of a job that keeps failing transiently
    int retry_initial_ms = 1000;  // first backoff; doubles per attempt
    int retry_max_ms = 60000;
};

struct LogSettings {
    std::uint64_t max_file_mb = 50;
    std::size_t archives = 5;
    bool admin_debug = false;
    bool operational_debug = false;
};

/// A credential a TCP caller may present ([auth.tokens.<name>], [auth.certificates.<name>]).
struct Credential {
    std::string name;
    std::string sha256;               // lower-case hex: of the token, or of the certificate's DER
    std::vector<std::string> scopes;  // e.g. "jobs:submit"; "*" = every scope
};

/// Who may do what ([auth]; docs/security.md). The admin socket admits root, the service
/// account and members of admin_group; TCP callers are anonymous unless they present one of
/// the credentials below.
struct AuthSettings {
    std::string admin_group;
    std::vector<Credential> tokens;
    std::vector<Credential> certificates;
};

/// Where the host and plugins keep shared state ([store]; docs/fleet.md). No url: SQLite files
/// in state_dir (one machine). A url: one PostgreSQL database shared by every instance.
struct StoreSettings {
    std::string url;
    std::filesystem::path password_file;
    int heartbeat_seconds = 5;
    int lost_after_seconds = 30;

    bool shared() const { return !url.empty(); }
};

/// A signed plugin repository the update manager may use ([update.repositories.<name>]).
struct UpdateRepository {
    std::string name;
    std::string url;                   // "https://host/path/" or "file:///dir/": where index.json lives
    std::filesystem::path root;        // the initial trust root (N.root.json); its signatures in <root>.minisig
    std::vector<std::string> plugins;  // plugin names this repository is trusted for; "*" = every plugin
    std::filesystem::path ca_bundle;   // optional: CA certificates for https:// (default: the system's)

    bool trusted_for(const std::string& plugin) const {
        for (const auto& p : plugins)
            if (p == "*" || p == plugin) return true;
        return false;
    }
};

/// The plugin update manager ([update]; docs/updates.md).
struct UpdateSettings {
    enum class Mode { Off, Notify, Auto };
    Mode mode = Mode::Off;
    std::chrono::seconds check_interval{std::chrono::hours(6)};
    /// UTC minutes after midnight, [begin, end); unset = any time. end < begin wraps midnight.
    std::optional<std::pair<int, int>> maintenance_window;
    std::map<std::string, std::string> pins;  // plugin name -> version
    bool allow_downgrade = false;
    std::chrono::seconds watch{300};         // post-publish watch
    std::chrono::seconds probe_timeout{30};  // the loader's child-process probe of a new version
    std::chrono::seconds stall_timeout{30};  // a download receiving nothing for this long is refused
    std::chrono::seconds download_timeout{600};
    std::string instance_id;  // empty: a random id persisted in <state_dir>/instance-id
    std::vector<UpdateRepository> repositories;
};

const char* update_mode_name(UpdateSettings::Mode mode);

/// "90s", "15m", "6h", "1d" (a positive whole number and a unit); nullopt when malformed.
std::optional<std::chrono::seconds> parse_duration(std::string_view text);
/// "02:00-04:00" as UTC minutes after midnight; nullopt when malformed (or begin == end).
std::optional<std::pair<int, int>> parse_time_window(std::string_view text);

/// A [ca.<name>] or [tenant.<name>] section: which plugin serves it and its settings.
struct PluginSection {
    std::string plugin;
    boost::json::object settings;  // without the "plugin" key (and a tenant's "features"); secrets included
    /// A tenant only: the features whose jobs are claimed from it; empty = every enabled feature.
    std::vector<std::string> features;
    /// A tenant only: how often the host sends it "tenant.heartbeat" (0 = never).
    int heartbeat_seconds = 300;

    bool feeds(const std::string& feature) const {
        return features.empty() || std::find(features.begin(), features.end(), feature) != features.end();
    }
};

struct Config {
    std::filesystem::path file;
    HostSettings host;
    LogSettings log;
    JobSettings jobs;
    AuthSettings auth;
    UpdateSettings update;
    StoreSettings store;
    std::map<std::string, bool> features;  // as written in [features]
    std::map<std::string, PluginSection> cas;
    /// [tenant.<name>] sections; the old single [tenant] section is read as "default".
    std::map<std::string, PluginSection> tenants;
    /// Accepted but deprecated settings: `config check` prints them as notes.
    std::vector<ConfigProblem> deprecations;
    std::map<std::string, boost::json::object> feature_sections;
    boost::json::object effective;  // everything above, defaults filled in, secrets redacted

    /// The tenant a plugin's unnamed tenant call goes to: "default", else the only one; "" when
    /// there is none (or several, none named "default").
    std::string default_tenant() const {
        if (tenants.count("default")) return "default";
        return tenants.size() == 1 ? tenants.begin()->first : std::string();
    }
    /// The tenant section plugin `plugin` serves (a tenant plugin serves at most one).
    const std::pair<const std::string, PluginSection>* tenant_of_plugin(const std::string& plugin) const {
        for (const auto& entry : tenants)
            if (entry.second.plugin == plugin) return &entry;
        return nullptr;
    }

    bool feature_enabled(const std::string& name) const {
        auto it = features.find(name);
        return it == features.end() || it->second;
    }
};

/// A parsed but not yet validated configuration file.
struct ConfigDocument {
    std::filesystem::path file;
    toml::table root;
    /// The plugin directory named in [host] (resolved), or the default; needed before
    /// validation because plugins' schemas are part of it.
    std::filesystem::path plugin_dir() const;
    /// Read leniently too: the CLI needs them without a full validation.
    std::filesystem::path state_dir() const;
    std::filesystem::path keys_dir() const;
    std::string service_account() const;
};

/// Parses `file`; a syntax error becomes a problem and returns nullopt.
std::optional<ConfigDocument> parse_config_file(const std::filesystem::path& file, std::vector<ConfigProblem>& problems);

/// Validates the whole document against the host's schema and the plugins' schemas; returns
/// the typed configuration when there is no problem.
std::optional<Config> validate_config(const ConfigDocument& document, const std::vector<PluginIdentity>& plugins,
                                      std::vector<ConfigProblem>& problems);

/// "host:port" or "[v6]:port"; throws std::invalid_argument naming what is wrong.
std::pair<std::string, std::uint16_t> split_listen_address(const std::string& address);

/// Flattens the effective configuration to "dotted.key" -> JSON text, for change reports.
std::map<std::string, std::string> flatten(const boost::json::object& effective);

}  // namespace certconn::host
