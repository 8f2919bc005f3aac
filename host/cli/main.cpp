// certconnector: the daemon and its command-line interface.
#include "cli/CommandLine.hpp"
#include "auth/AccessPolicy.hpp"
#include "cli/AdminCommands.hpp"
#include "cli/KeyCommands.hpp"
#include "cli/RepoCommands.hpp"
#include "daemon/Connector.hpp"
#include "daemon/Privileges.hpp"
#include "http/AdminClient.hpp"
#include "plugins/PluginProbe.hpp"
#include "status/FleetText.hpp"
#include "status/SupportPolicy.hpp"
#include "update/UpdateState.hpp"

#include <certconn/abi.h>
#include <certconn/events.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <cstdlib>
#include <functional>
#include <iostream>
#include <sstream>

namespace json = boost::json;
namespace fs = std::filesystem;
using namespace certconn::host;

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitProblems = 2;

fs::path default_config() {
    // getenv races only with setenv/putenv, which this program never calls.
    if (const char* env = std::getenv("CERTCONNECTOR_CONFIG")) return env;  // NOLINT(concurrency-mt-unsafe): see above
    return "/etc/certconnector/certconnector.toml";
}

const OptionSpec kConfigOption{"config", true,
                               "configuration file (default: $CERTCONNECTOR_CONFIG or /etc/certconnector/certconnector.toml)"};
const OptionSpec kJsonOption{"json", false, "machine-readable output"};

struct Command {
    std::string name;
    std::string summary;
    std::vector<OptionSpec> options;
    std::function<int(const ParsedOptions&)> run;
    std::size_t positional = 0;  // how many non-option arguments it takes (`repo add DIR FILE...`)
    std::string operands{};      // those arguments as the usage line shows them: "DIR FILE.so..."
};

fs::path config_path(const ParsedOptions& o) {
    return o.value("config").value_or(default_config().string());
}

/// The configuration file's document, or nullopt after printing why it cannot be read.
std::optional<ConfigDocument> read_config_document(const ParsedOptions& o) {
    std::vector<ConfigProblem> problems;
    auto doc = parse_config_file(config_path(o), problems);
    for (const auto& p : problems)
        std::cerr << p.to_string() << "\n";
    return doc;
}

void print_problems(const LoadedConfiguration& loaded) {
    for (const auto& p : loaded.problems)
        std::cerr << p.to_string() << "\n";
    for (const auto& p : loaded.plugin_problems)
        std::cerr << p << "\n";
}

/// The admin socket of the instance the configuration file describes.
std::optional<fs::path> admin_socket(const ParsedOptions& o) {
    if (auto s = o.value("socket")) return fs::path(*s);
    auto doc = read_config_document(o);
    if (!doc) return std::nullopt;
    return doc->state_dir() / "admin.sock";
}

const OptionSpec kSocketOption{"socket", true, "admin socket path (default: <state_dir>/admin.sock)"};

int cmd_run(const ParsedOptions& o) {
    // Before anything from the plugin directory is opened: a plugin's query export is plugin code.
    std::vector<ConfigProblem> problems;
    auto doc = parse_config_file(config_path(o), problems);
    if (doc) {
        try {
            become_service_account(*doc);
        } catch (const std::exception& e) {
            std::cerr << "certconnector: not started: " << e.what() << "\n";
            return kExitFailure;
        }
    }
    std::optional<ScanOptions> options;
    if (doc) {
        // The versions the update manager marked bad and the pins apply from the first scan on
        // ([update] pin read leniently here; validation reports a malformed one).
        std::map<std::string, std::string> pins;
        if (const toml::table* t = doc->root["update"]["pin"].as_table())
            for (const auto& [name, version] : *t)
                if (auto v = version.value<std::string>()) pins[std::string(name.str())] = *v;
        options =
            daemon_scan_options(doc->state_dir(), doc->service_account(), update::persisted_selection(doc->state_dir(), pins));
        if (auto t = doc->root["update"]["probe_timeout_seconds"].value<int64_t>(); t && *t > 0)
            options->probe_timeout = std::chrono::seconds(*t);
    }
    LoadedConfiguration loaded = doc ? load_configuration(*doc, std::nullopt, &*options) : load_configuration(config_path(o));
    if (!loaded.config) {
        print_problems(loaded);
        std::cerr << "certconnector: not started: " << loaded.problems.size() << " configuration problem(s)\n";
        return kExitProblems;
    }
    Connector connector(std::move(loaded), true);
    return connector.run();
}

int cmd_config_check(const ParsedOptions& o) {
    const fs::path file = config_path(o);
    LoadedConfiguration loaded = load_configuration(file);
    print_problems(loaded);
    const std::size_t count = loaded.problems.size() + loaded.plugin_problems.size();
    for (const auto& f : loaded.scan.files) {
        if (!f.accepted || !f.identity) continue;
        const SupportStatus s = support_status(f.identity->release_date);
        if (s.state == SupportState::Outdated || s.state == SupportState::Unsupported)
            std::cerr << "warning: plugin '" << f.identity->name << "' (" << f.file.string() << "): " << s.message << "\n";
    }
    if (loaded.config)
        for (const auto& d : loaded.config->deprecations)
            std::cerr << "note: " << d.to_string() << "\n";
    if (count > 0) {
        std::cerr << file.string() << ": " << count << " problem(s)\n";
        return kExitProblems;
    }
    std::cout << file.string() << ": OK (" << loaded.scan.libraries.size() << " plugin(s) in " << loaded.scan.directory.string()
              << ")\n";
    return kExitOk;
}

int cmd_plugins(const ParsedOptions& o) {
    PluginScan scan;
    if (auto dir = o.value("dir")) {
        scan = scan_plugins(*dir, LoaderPolicy::for_service_account(""));
    } else {
        auto doc = read_config_document(o);
        if (!doc) return kExitProblems;
        scan = scan_plugins(doc->plugin_dir(), LoaderPolicy::for_service_account(doc->service_account()));
    }
    json::array files;
    for (const auto& f : scan.files)
        files.push_back(describe_plugin_file(f));
    if (o.has("json")) {
        json::object out{{"directory", scan.directory.string()}, {"plugins", files}};
        if (scan.directory_problem) out["directory_problem"] = *scan.directory_problem;
        std::cout << json::serialize(out) << "\n";
    } else {
        std::cout << "plugin directory " << scan.directory.string() << "\n";
        if (scan.directory_problem) std::cout << "  " << *scan.directory_problem << "\n";
        if (scan.files.empty() && !scan.directory_problem) std::cout << "  (no *.so files)\n";
        for (const auto& f : scan.files) {
            std::cout << "  " << f.file.filename().string() << ": ";
            if (f.accepted) {
                const auto& id = *f.identity;
                const SupportStatus s = support_status(id.release_date);
                std::cout << "loadable  " << kind_name(id.kind) << " '" << id.name << "' " << id.version << "  SDK "
                          << id.abi_major << "." << id.abi_minor << "  released " << id.release_date << " ("
                          << support_state_name(s.state) << ")";
                if (!id.description.empty()) std::cout << "  — " << id.description;
                std::cout << "\n";
            } else {
                std::cout << "REFUSED   " << f.reason << "\n";
            }
        }
    }
    return scan.directory_problem ? kExitProblems : kExitOk;
}

int cmd_status(const ParsedOptions& o) {
    fs::path socket;
    if (auto s = o.value("socket")) {
        socket = *s;
    } else {
        auto doc = read_config_document(o);
        if (!doc) return kExitProblems;
        socket = doc->state_dir() / "admin.sock";
    }
    AdminReply reply;
    try {
        reply = admin_request(socket, "GET", "/status");
    } catch (const std::exception& e) {
        std::cerr << "certconnector status: " << e.what() << "\n";
        return kExitFailure;
    }
    if (reply.status != 200) {
        std::cerr << "certconnector status: the connector answered HTTP " << reply.status << "\n";
        return kExitFailure;
    }
    if (o.has("fleet")) {
        const json::value doc = json::parse(reply.body);
        const auto* fleet = doc.is_object() ? doc.as_object().if_contains("fleet") : nullptr;
        if (!fleet || !fleet->is_object()) {
            std::cerr << "certconnector status --fleet: the connector's status has no fleet section (an older version?)\n";
            return kExitFailure;
        }
        if (o.has("json")) {
            std::cout << json::serialize(*fleet) << "\n";
            return kExitOk;
        }
        print_fleet(std::cout, fleet->as_object());
        return fleet->as_object().contains("error") ? kExitFailure : kExitOk;
    }
    if (o.has("json")) {
        std::cout << reply.body << "\n";
        return kExitOk;
    }
    const json::object s = json::parse(reply.body).as_object();
    auto str = [](const json::value& v) { return v.is_string() ? std::string(v.get_string()) : json::serialize(v); };
    std::cout << "certconnector " << str(s.at("version")) << " (released " << str(s.at("release_date")) << ", "
              << str(s.at("support").at("state")) << ": " << str(s.at("support").at("message")) << ")\n"
              << "  state: " << str(s.at("state")) << ", pid " << str(s.at("pid")) << ", up " << str(s.at("uptime_seconds"))
              << " s, listening on " << str(s.at("listen")) << "\n";
    std::cout << "  tenants:";
    if (s.at("tenants").as_array().empty()) std::cout << " not configured";
    std::cout << "\n";
    for (const auto& t : s.at("tenants").as_array()) {
        const auto& to = t.as_object();
        std::cout << "    " << str(to.at("name")) << " [" << str(to.at("plugin")) << "]"
                  << (to.at("default").as_bool() ? " (default)" : "") << ": "
                  << (to.at("connected").as_bool() ? "connected" : "NOT connected");
        if (const auto* h = to.if_contains("health"); h && h->is_object() && h->as_object().contains("detail"))
            std::cout << " — " << str(h->as_object().at("detail"));
        if (const auto* ob = to.if_contains("outbox"); ob && ob->is_object()) {
            const auto& b = ob->as_object();
            std::cout << "; outbox " << str(b.at("pending")) << " pending";
            if (b.at("refused").as_int64() > 0) std::cout << ", " << str(b.at("refused")) << " REFUSED";
            if (b.at("pending").as_int64() > 0) std::cout << ", oldest " << str(b.at("oldest_age_seconds")) << " s";
        }
        std::cout << "\n";
    }
    std::cout << "  features:";
    if (s.at("features").as_array().empty()) std::cout << " none";
    for (const auto& f : s.at("features").as_array())
        std::cout << " " << str(f.at("name")) << (f.at("enabled").as_bool() ? "" : " (disabled)");
    std::cout << "\n  CAs:";
    if (s.at("cas").as_array().empty()) std::cout << " none";
    for (const auto& c : s.at("cas").as_array())
        std::cout << " " << str(c.at("name")) << " [" << str(c.at("plugin")) << "]"
                  << (c.at("open").as_bool() ? "" : " (NOT open)");
    std::cout << "\n";
    for (const auto& c : s.at("cas").as_array()) {
        const auto& co = c.as_object();
        // name [plugin]: state — the last background health probe's detail (and when it ran)
        std::cout << "    " << str(co.at("name")) << " [" << str(co.at("plugin"))
                  << "]: " << (co.contains("state") ? str(co.at("state")) : (co.at("open").as_bool() ? "open" : "not open"));
        if (const auto* h = co.if_contains("health");
            h && h->is_object() && h->as_object().contains("detail") && !str(h->as_object().at("detail")).empty())
            std::cout << " - " << str(h->as_object().at("detail"));
        if (const auto* e = co.if_contains("error")) std::cout << " - " << str(*e);
        if (const auto* t = co.if_contains("checked_at")) std::cout << " (probed " << str(*t) << ")";
        std::cout << "\n";
    }
    std::cout << "  plugins:\n";
    for (const auto& p : s.at("plugins").as_array()) {
        const auto& po = p.as_object();
        std::cout << "    " << fs::path(str(po.at("file"))).filename().string() << ": " << str(po.at("status"));
        if (po.contains("name"))
            std::cout << "  " << str(po.at("kind")) << " '" << str(po.at("name")) << "' " << str(po.at("version")) << " ("
                      << str(po.at("support").at("state")) << ")";
        if (po.contains("reason")) std::cout << "  " << str(po.at("reason"));
        std::cout << "\n";
    }
    return kExitOk;
}

int cmd_token_create(const ParsedOptions& o) {
    const auto name = o.value("name");
    const auto scopes = o.value("scopes");
    if (!name || name->empty() || name->find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-_") != std::string::npos)
        throw std::invalid_argument("token create needs --name of lower-case letters, digits, '-' and '_'");
    if (!scopes || scopes->empty()) throw std::invalid_argument("token create needs --scopes, e.g. jobs:submit,jobs:read");
    json::array list;
    std::string rest = *scopes;
    while (!rest.empty()) {
        const auto comma = rest.find(',');
        list.push_back(json::string(rest.substr(0, comma)));
        rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
    }
    const std::string token = new_bearer_token();
    // The token goes to stdout once; the configuration keeps only its digest.
    std::cout << token << "\n";
    std::cerr << "add to the configuration ([auth] keeps only the SHA-256 of the token), then reload (SIGHUP):\n\n"
              << "[auth.tokens." << *name << "]\nsha256 = \"" << sha256_hex(token) << "\"\nscopes = " << json::serialize(list)
              << "\n";
    return kExitOk;
}

int cmd_version(const ParsedOptions& o) {
    const SupportStatus s = support_status(CERTCONN_RELEASE_DATE);
    if (o.has("json")) {
        std::cout << json::serialize(
                         json::object{{"version", CERTCONN_VERSION},
                                      {"release_date", CERTCONN_RELEASE_DATE},
                                      {"sdk", std::to_string(CERTCONN_ABI_MAJOR) + "." + std::to_string(CERTCONN_ABI_MINOR)},
                                      {"support", json::object{{"state", support_state_name(s.state)}, {"message", s.message}}}})
                  << "\n";
    } else {
        std::cout << "certconnector " CERTCONN_VERSION " (released " CERTCONN_RELEASE_DATE "; plugin SDK " << CERTCONN_ABI_MAJOR
                  << "." << CERTCONN_ABI_MINOR << "; " << support_state_name(s.state) << ": " << s.message << ")\n";
    }
    return kExitOk;
}

int cmd_events(const ParsedOptions& o) {
    auto channel = [](cc_channel c) { return c == CC_CHANNEL_ADMIN ? "Admin" : "Operational"; };
    if (o.has("json")) {
        json::array out;
        for (std::size_t i = 0; i < cc_event_def_count; ++i) {
            const auto& e = cc_event_defs[i];
            out.push_back(json::object{{"id", e.id},
                                       {"name", e.name},
                                       {"channel", channel(e.channel)},
                                       {"category", e.category},
                                       {"meaning", e.meaning}});
        }
        std::cout << json::serialize(out) << "\n";
        return kExitOk;
    }
    std::cout << "# Event ids\n\n"
                 "Generated by `certconnector events --markdown` from `sdk/include/certconn/events.h`; do not edit.\n"
                 "Ranges: 0001-0999 general, 1000 PKCS, 2000 PKCS import, 3000 revoke, 4000 SCEP, 5000 health.\n\n"
                 "| id | name | channel | category | meaning |\n|----|------|---------|----------|---------|\n";
    for (std::size_t i = 0; i < cc_event_def_count; ++i) {
        const auto& e = cc_event_defs[i];
        std::cout << "| " << e.id << " | " << e.name << " | " << channel(e.channel) << " | " << e.category << " | " << e.meaning
                  << " |\n";
    }
    return kExitOk;
}

const std::vector<Command>& commands() {
    static const std::vector<Command> all = {
        {"run", "run the connector in the foreground (SIGTERM/SIGINT stop, SIGHUP reloads)", {kConfigOption}, cmd_run},
        {"plugin-probe",
         "(internal) load a plugin file in this short-lived process and print its identity; with --init also run init, "
         "health and destroy against a scratch state directory (the daemon probes new versions this way)",
         {{"file", true, "the plugin file"},
          {"init", false, "also run init (specification on stdin)"},
          {"scratch", true, "scratch state directory for --init"},
          {"service-account", true, "trusted owner of the file besides root and the running user"}},
         [](const ParsedOptions& o) {
             const auto file = o.value("file");
             if (!file) {
                 std::cerr << "plugin-probe: --file is required\n";
                 return kExitProblems;
             }
             return probe_child_main(*file, o.has("init"), o.value("scratch").value_or(""),
                                     o.value("service-account").value_or(""));
         }},
        {"plugins",
         "list plugin files: loadable or refused and why, kind, version, SDK, release date",
         {kConfigOption, {"dir", true, "scan this directory instead of the configured one"}, kJsonOption},
         cmd_plugins},
        {"status",
         "ask the running instance: version, uptime, features, CAs, tenant, plugins' support state; with --fleet every "
         "instance of the fleet, leaders, queues and what is wrong",
         {kConfigOption,
          {"socket", true, "admin socket path (default: <state_dir>/admin.sock)"},
          {"fleet", false, "the fleet as the shared store sees it (instances, leaders, queues, problems)"},
          kJsonOption},
         cmd_status},
        {"config check",
         "validate the configuration and the plugins it names without starting anything; exit 2 on problems",
         {kConfigOption},
         cmd_config_check},
        {"keys create",
         "create a connector key (RSA) in the key store, or on a PKCS#11 token; prints its public key",
         {kConfigOption,
          {"name", true, "key name, as import jobs' key_name"},
          {"size", true, "2048 | 3072 (default) | 4096"},
          {"pkcs11", true, "generate on this token instead: pkcs11:token=LABEL;pin-value=PIN (or pin-source=file:PATH)"}},
         [](const ParsedOptions& o) {
             auto doc = read_config_document(o);
             return doc ? keys_create(o, doc->keys_dir(), doc->service_account()) : kExitProblems;
         }},
        {"keys add",
         "refer to an existing key under a name: a token object, or a PEM file other connectors share",
         {kConfigOption,
          {"name", true, "key name"},
          {"pkcs11", true, "pkcs11: URI of the private key object"},
          {"file", true, "PEM private key file (0600)"}},
         [](const ParsedOptions& o) {
             auto doc = read_config_document(o);
             return doc ? keys_add(o, doc->keys_dir(), doc->service_account()) : kExitProblems;
         }},
        {"keys export-public",
         "print a connector key's public key (PEM), for whoever encrypts PFX passwords",
         {kConfigOption, {"name", true, "key name"}},
         [](const ParsedOptions& o) {
             auto doc = read_config_document(o);
             return doc ? keys_export_public(o, doc->keys_dir()) : kExitProblems;
         }},
        {"keys list",
         "list connector keys: name, type, where it lives, SHA-256 of its public key, and whether it loads",
         {kConfigOption, kJsonOption},
         [](const ParsedOptions& o) {
             auto doc = read_config_document(o);
             return doc ? keys_list(o, doc->keys_dir()) : kExitProblems;
         }},
        {"pfx encrypt-password",
         "encrypt a PFX password to a connector's public key (RSA-OAEP), base64, for an import job",
         {{"key-public", true, "the connector key's public key (PEM, from `keys export-public`)"},
          {"padding", true, "oaep-sha256 | oaep-sha384 | oaep-sha512 (default oaep-sha512)"},
          {"password-file", true, "read the password from this file (default: the first line of stdin)"}},
         pfx_encrypt_password},
        {"token create",
         "create a bearer token for a TCP client (an MDM's intake, a monitoring probe); prints it once",
         {{"name", true, "the token's name, as in [auth.tokens.<name>]"},
          {"scopes", true, "comma-separated scopes, e.g. jobs:submit,jobs:read (see docs/security.md)"}},
         cmd_token_create},
        {"repo init",
         "start a signed plugin repository in DIR: an unsigned N.root.json naming the signing keys and threshold",
         {{"key", true, "a signer's minisign public key (.pub file or its base64 line); repeat for k of n", true},
          {"threshold", true, "how many distinct keys must sign the index and the next root"},
          {"expires-days", true, "the root's lifetime in days (default 365)"},
          {"repository", true, "the repository's name (default: DIR's name)"},
          {"root-version", true, "write N.root.json to rotate the root (default 1)"}},
         repo_init,
         1,
         "DIR"},
        {"repo add",
         "add built plugins to DIR's draft index: copies each to DIR/plugins/, records version, SDK, size, SHA-256",
         {{"min-host", true, "the oldest host version the plugins need (semantic version)"},
          {"rollout", true, "percentage of instances that take these versions (default 100)"}},
         repo_add,
         SIZE_MAX,
         "DIR FILE.so..."},
        {"repo publish",
         "write DIR/index.json from the draft with the next sequence number, issue time and expiry",
         {{"expires-days", true, "the index's lifetime in days (default 30); an expired index freezes updates"}},
         repo_publish,
         1,
         "DIR"},
        {"repo sign",
         "sign FILE (an index or a root) with minisign, once per key, into FILE.minisig",
         {{"secret-key", true, "a minisign secret key file; repeat for k of n", true},
          {"append", false, "keep the signatures already in FILE.minisig (signers on other machines)"}},
         repo_sign,
         2,
         "DIR FILE"},
        {"repo verify",
         "verify DIR's root chain, signed index and plugin files against a trusted root; list the plugins",
         {{"root", true, "the root you trust (N.root.json, with N.root.json.minisig beside it)"},
          {"last-sequence", true, "refuse an index older than this sequence (rollback)"}},
         repo_verify,
         1,
         "DIR"},
        {"version", "print the version, release date, SDK version and support state", {kJsonOption}, cmd_version},
        {"events",
         "list every event id (Markdown table, or JSON)",
         {kJsonOption, {"markdown", false, "Markdown table (default)"}},
         cmd_events},
    };
    return all;
}

/// The admin socket named by --socket or by the configuration in `args` (which are not parsed
/// otherwise: the command's own options are known only after discovery).
std::optional<fs::path> socket_from_args(const std::vector<std::string>& args) {
    ParsedOptions o;
    for (std::size_t i = 0; i < args.size(); ++i) {
        for (const char* name : {"config", "socket"}) {
            const std::string opt = std::string("--") + name;
            if (args[i] == opt && i + 1 < args.size())
                o.values[name] = args[i + 1];
            else if (args[i].rfind(opt + "=", 0) == 0)
                o.values[name] = args[i].substr(opt.size() + 1);
        }
    }
    return admin_socket(o);
}

void print_usage(std::ostream& out, const std::vector<std::string>& args = {}) {
    out << "usage: certconnector <command> [options]\n\ncommands:\n";
    auto line = [&](std::string name, const std::string& summary) {
        if (name.size() < 21)
            name.resize(21, ' ');
        else
            name += ' ';
        out << "  " << name << summary << "\n";
    };
    for (const auto& c : commands())
        line(c.name, c.summary);
    // Plugins' commands come from the running connector.
    std::optional<fs::path> socket;
    {
        std::ostringstream ignored;  // a missing configuration is not an error for help
        auto* old = std::cerr.rdbuf(ignored.rdbuf());
        socket = socket_from_args(args);
        std::cerr.rdbuf(old);
    }
    try {
        if (!socket) throw std::runtime_error("no configuration");
        const json::array found = discover_commands(*socket);
        out << "\ncommands of the running connector (" << socket->string() << "):\n";
        for (const auto& c : found)
            line(std::string(c.at("name").as_string()), std::string(c.at("summary").as_string()));
    } catch (const std::exception& e) {
        out << "\nThe running connector adds its plugins' commands (submit, job show, scep ...); they are listed\n"
               "here when its admin socket answers ("
            << e.what() << ").\n";
    }
    out << "\n`certconnector <command> --help` shows a command's options.\n";
}

void print_command_help(const Command& c) {
    std::cout << "usage: certconnector " << c.name << (c.operands.empty() ? "" : " " + c.operands) << " [options]\n\n"
              << c.summary << "\n\noptions:\n";
    for (const auto& o : c.options) {
        std::string name = "--" + o.name + (o.takes_value ? " VALUE" : "");
        name.resize(18, ' ');
        std::cout << "  " << name << o.help << "\n";
    }
    std::cout << "  --help            this text\n";
}

/// Runs a command; a usage error (std::invalid_argument) exits 2, any other failure 1.
int exit_code_of(const std::function<int()>& run) {
    try {
        return run();
    } catch (const std::invalid_argument& e) {
        std::cerr << "certconnector: " << e.what() << "\n";
        return kExitProblems;
    } catch (const std::exception& e) {
        std::cerr << "certconnector: " << e.what() << "\n";
        return kExitFailure;
    }
}

/// A command the running connector offers (registered by a plugin or the host).
int run_discovered(const std::vector<std::string>& args) {
    const auto socket = socket_from_args(args);
    if (!socket) return kExitProblems;
    json::array found;
    try {
        found = discover_commands(*socket);
    } catch (const std::exception& e) {
        std::string why = e.what();
        while (!why.empty() && why.back() == '\n')
            why.pop_back();
        std::cerr << "certconnector: '" << args[0] << "' is not a built-in command, and the running connector's commands are not "
                  << "available: " << why << "\n";
        return kExitProblems;
    }
    auto match = match_command(found, args);
    if (!match) {
        std::cerr << "certconnector: unknown command '" << args[0] << "'\n\n";
        print_usage(std::cerr, args);
        return kExitProblems;
    }
    std::vector<std::string> rest(args.begin() + static_cast<long>(match->second), args.end());
    if (std::find(rest.begin(), rest.end(), "--help") != rest.end()) {
        print_admin_command_help(match->first);
        return kExitOk;
    }
    return exit_code_of([&] { return run_admin_command(match->first, rest, *socket); });
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
        print_usage(args.empty() ? std::cerr : std::cout, args);
        return args.empty() ? kExitProblems : kExitOk;
    }
    if (args[0] == "--version") args[0] = "version";
    const Command* command = nullptr;
    std::size_t words = 0;
    for (const auto& c : commands())  // two-word commands first: "submit pkcs" before "submit"
        if (!command && args.size() >= 2 && args[0] + " " + args[1] == c.name) {
            command = &c;
            words = 2;
        }
    for (const auto& c : commands())
        if (!command && args[0] == c.name) {
            command = &c;
            words = 1;
        }
    if (command == nullptr) return run_discovered(args);
    std::vector<std::string> rest(args.begin() + static_cast<long>(words), args.end());
    if (std::find(rest.begin(), rest.end(), "--help") != rest.end()) {
        print_command_help(*command);
        return kExitOk;
    }
    return exit_code_of([&] { return command->run(parse_options(rest, command->options, command->name, command->positional)); });
}
