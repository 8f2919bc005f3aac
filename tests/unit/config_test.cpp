#include "config/Config.hpp"
#include "support/TestFiles.hpp"

#include <boost/json/serialize.hpp>
#include <catch2/catch.hpp>

using namespace certconn::host;
using certconn::test::TempDir;
using certconn::test::write_file;

namespace {

struct Checked {
    std::optional<Config> config;
    std::vector<ConfigProblem> problems;
    std::string text() const {
        std::string out;
        for (const auto& p : problems)
            out += p.to_string() + "\n";
        return out;
    }
};

PluginIdentity plugin(cc_plugin_kind kind, const std::string& name, const char* schema = nullptr) {
    PluginIdentity id;
    id.kind = kind;
    id.name = name;
    id.version = "1.0.0";
    id.release_date = "2026-11-01";
    if (schema) id.schema = std::make_shared<const SchemaNode>(parse_schema(std::string_view(schema)));
    return id;
}

const std::vector<PluginIdentity> kPlugins = {
    plugin(CC_KIND_FEATURE, "pkcs", R"({"type":"table","keys":{"workers":{"type":"integer","min":1}}})"),
    plugin(
        CC_KIND_CA, "local",
        R"({"type":"table","keys":{"algorithm":{"type":"string","enum":["rsa3072","p256"]},"key_pin":{"type":"string","secret":true}}})"),
    plugin(CC_KIND_TENANT, "local", nullptr),
};

Checked check(const TempDir& dir, const std::string& toml, const std::vector<PluginIdentity>& plugins = kPlugins) {
    const auto file = dir / "connector.toml";
    write_file(file, toml);
    Checked out;
    auto doc = parse_config_file(file, out.problems);
    if (doc) out.config = validate_config(*doc, plugins, out.problems);
    return out;
}

}  // namespace

TEST_CASE("a valid configuration gives typed settings with relative paths resolved") {
    TempDir dir;
    auto c = check(dir, R"(
[host]
listen = "127.0.0.1:9443"
state_dir = "state"
[features]
pkcs = false
[ca.corp]
plugin = "local"
algorithm = "p256"
key_pin = "1234"
[tenant]
plugin = "local"
[pkcs]
workers = 4
)");
    INFO(c.text());
    REQUIRE(c.config);
    CHECK(c.config->host.listen == "127.0.0.1:9443");
    CHECK(c.config->host.state_dir == dir.path() / "state");
    CHECK_FALSE(c.config->feature_enabled("pkcs"));
    CHECK(c.config->feature_enabled("scep"));  // not mentioned: enabled when present
    REQUIRE(c.config->cas.count("corp"));
    CHECK(c.config->cas.at("corp").plugin == "local");
    CHECK_FALSE(c.config->cas.at("corp").settings.contains("plugin"));
    CHECK(c.config->cas.at("corp").settings.at("key_pin").as_string() == "1234");  // plugins get secrets
    CHECK(c.config->tenants.at("default").plugin == "local");                      // the old [tenant] section
    CHECK(c.config->deprecations.size() == 1);
    CHECK(c.config->feature_sections.at("pkcs").at("workers").as_int64() == 4);
}

TEST_CASE("several tenants: [tenant.<name>] sections, the features each feeds, and the default") {
    TempDir dir;
    const std::vector<PluginIdentity> plugins = {
        plugin(CC_KIND_FEATURE, "pkcs", nullptr), plugin(CC_KIND_FEATURE, "scep", nullptr),
        plugin(CC_KIND_TENANT, "local", nullptr),
        plugin(CC_KIND_TENANT, "intune", R"({"type":"table","keys":{"tenant_id":{"type":"string","required":true}}})")};
    auto c = check(dir, R"(
[tenant.local]
plugin = "local"
features = ["pkcs"]
[tenant.intune]
plugin = "intune"
tenant_id = "contoso.example"
)",
                   plugins);
    INFO(c.text());
    REQUIRE(c.config);
    REQUIRE(c.config->tenants.size() == 2);
    CHECK(c.config->tenants.at("intune").settings.at("tenant_id").as_string() == "contoso.example");
    CHECK_FALSE(c.config->tenants.at("local").settings.contains("features"));  // the host's key, not the plugin's
    CHECK(c.config->tenants.at("local").feeds("pkcs"));
    CHECK_FALSE(c.config->tenants.at("local").feeds("scep"));
    CHECK(c.config->tenants.at("intune").feeds("scep"));  // no list: every feature
    CHECK(c.config->default_tenant().empty());            // two, none named "default"
    CHECK(c.config->tenant_of_plugin("intune")->first == "intune");
    CHECK(c.config->deprecations.empty());

    SECTION("the plugin's schema applies to its tenant section") {
        auto bad = check(dir, "[tenant.intune]\nplugin = \"intune\"\ntenant_idd = \"x\"\n", plugins);
        CHECK_FALSE(bad.config);
        CHECK(bad.text().find("tenant.intune") != std::string::npos);
    }
    SECTION("a tenant plugin serves one section") {
        auto bad = check(dir, "[tenant.a]\nplugin = \"local\"\n[tenant.b]\nplugin = \"local\"\n", plugins);
        CHECK_FALSE(bad.config);
        CHECK(bad.text().find("already serves [tenant.a]") != std::string::npos);
    }
    SECTION("an unknown feature and a bad name are named") {
        auto bad = check(dir, "[tenant.Local]\nplugin = \"local\"\nfeatures = [\"pkcss\"]\n", plugins);
        CHECK_FALSE(bad.config);
        CHECK(bad.text().find("no feature plugin named 'pkcss'") != std::string::npos);
        CHECK(bad.text().find("[a-z][a-z0-9-]{0,62}") != std::string::npos);
    }
    SECTION("the old [tenant] section is the tenant 'default', with a deprecation note") {
        auto old = check(dir, "[tenant]\nplugin = \"local\"\n", plugins);
        REQUIRE(old.config);
        CHECK(old.config->tenants.at("default").plugin == "local");
        CHECK(old.config->default_tenant() == "default");
        REQUIRE(old.config->deprecations.size() == 1);
        CHECK(old.config->deprecations[0].message.find("[tenant.default]") != std::string::npos);
    }
}

TEST_CASE("the effective configuration redacts secrets and fills defaults") {
    TempDir dir;
    auto c = check(dir, "[ca.corp]\nplugin = \"local\"\nkey_pin = \"s3cret-pin\"\n");
    REQUIRE(c.config);
    const std::string effective = boost::json::serialize(c.config->effective);
    CHECK(effective.find("s3cret-pin") == std::string::npos);
    CHECK(effective.find("********") != std::string::npos);
    CHECK(c.config->effective.at("host").at("workers").as_int64() == 8);
    const auto flat = flatten(c.config->effective);
    CHECK(flat.at("ca.corp.key_pin") == "\"********\"");
}

TEST_CASE("a typo'd key is an error naming file, line, column and key, with a suggestion") {
    TempDir dir;
    auto c = check(dir, "[host]\nlisten = \"127.0.0.1:8080\"\nplugin_dri = \"/x\"\n");
    CHECK_FALSE(c.config);
    REQUIRE(c.problems.size() == 1);
    CHECK(c.problems[0].line == 3);
    CHECK(c.problems[0].column == 1);
    CHECK(c.problems[0].key == "host.plugin_dri");
    CHECK_THAT(c.problems[0].to_string(), Catch::Contains("connector.toml:3:1: host.plugin_dri: unknown key 'plugin_dri'") &&
                                              Catch::Contains("did you mean 'plugin_dir'?"));
}

TEST_CASE("a wrong type is an error naming the key, what was expected and what was found") {
    TempDir dir;
    auto c = check(dir, "[host]\nworkers = \"eight\"\n");
    REQUIRE(c.problems.size() == 1);
    CHECK(c.problems[0].to_string().find(":2:11: host.workers: expected an integer, found a string") != std::string::npos);
}

TEST_CASE("a missing required value is an error naming the key and its section's line") {
    TempDir dir;
    auto c = check(dir, "\n[ca.corp]\nalgorithm = \"p256\"\n");
    REQUIRE_FALSE(c.problems.empty());
    CHECK_THAT(c.text(), Catch::Contains("connector.toml:2:1: ca.corp.plugin: missing required key 'plugin'"));
}

TEST_CASE("plugin sections are validated against the plugin's schema") {
    TempDir dir;
    auto c = check(dir, "[ca.corp]\nplugin = \"local\"\nalgoritm = \"p256\"\n[pkcs]\nworkers = 0\n");
    INFO(c.text());
    CHECK_THAT(c.text(), Catch::Contains(":3:1: ca.corp.algoritm: unknown key 'algoritm' (did you mean 'algorithm'?)"));
    CHECK_THAT(c.text(), Catch::Contains(":5:11: pkcs.workers: value out of range (expected 1 .. inf)"));
}

TEST_CASE("an enum value outside the schema is refused with the allowed values") {
    TempDir dir;
    auto c = check(dir, "[ca.corp]\nplugin = \"local\"\nalgorithm = \"rsa1024\"\n");
    CHECK_THAT(c.text(), Catch::Contains("ca.corp.algorithm: 'rsa1024' is not one of: rsa3072, p256"));
}

TEST_CASE("naming a plugin that is not present is an error listing the present ones") {
    TempDir dir;
    auto c = check(dir, "[ca.corp]\nplugin = \"adcs\"\nanything = 1\n[tenant]\nplugin = \"lokal\"\n");
    CHECK_THAT(c.text(), Catch::Contains("ca.corp.plugin: 'adcs' is not one of: local"));
    CHECK_THAT(c.text(), Catch::Contains("tenant.plugin: 'lokal' is not one of: local (did you mean 'local'?)"));
    CHECK(c.text().find("anything") == std::string::npos);  // unknown plugin: its keys cannot be judged
}

TEST_CASE("an unknown section or feature flag is an error, never silently ignored") {
    TempDir dir;
    auto c = check(dir, "[pkc]\nworkers = 2\n[features]\nscep = true\n");
    CHECK_THAT(c.text(), Catch::Contains(":1:2: pkc: unknown section") && Catch::Contains("did you mean 'pkcs'?"));
    CHECK_THAT(c.text(), Catch::Contains(":4:1: features.scep: unknown key 'scep'"));
}

TEST_CASE("TOML syntax errors carry the position") {
    TempDir dir;
    auto c = check(dir, "[host]\nlisten = \"127.0.0.1:8080\n");
    REQUIRE(c.problems.size() == 1);
    CHECK(c.problems[0].line == 2);
    CHECK_THAT(c.problems[0].message, Catch::Contains("TOML syntax error"));
}

TEST_CASE("listen addresses are checked") {
    TempDir dir;
    CHECK_THAT(check(dir, "[host]\nlisten = \"8080\"\n").text(), Catch::Contains("host.listen: '8080': expected host:port"));
    CHECK_THAT(check(dir, "[host]\nlisten = \"127.0.0.1:99999\"\n").text(), Catch::Contains("port must be a number 0-65535"));
    CHECK(check(dir, "[host]\nlisten = \"[::1]:8443\"\n").config);
    CHECK(split_listen_address("[::1]:8443") == std::pair<std::string, std::uint16_t>{"::1", 8443});
}

TEST_CASE("a TLS private key readable by others is refused") {
    TempDir dir;
    write_file(dir / "cert.pem", "x");
    write_file(dir / "key.pem", "x");
    ::chmod((dir / "key.pem").c_str(), 0644);
    auto c = check(dir, "[host.tls]\ncertificate = \"cert.pem\"\nprivate_key = \"key.pem\"\n");
    CHECK_THAT(c.text(), Catch::Contains("host.tls.private_key: private key") && Catch::Contains("expected mode 0600"));
    ::chmod((dir / "key.pem").c_str(), 0600);
    CHECK(check(dir, "[host.tls]\ncertificate = \"cert.pem\"\nprivate_key = \"key.pem\"\n").config);
}

TEST_CASE("schemas themselves are validated") {
    CHECK_THROWS_WITH(parse_schema(std::string_view(R"({"type":"tabel"})")), Catch::Contains("unknown type 'tabel'"));
    CHECK_THROWS_WITH(parse_schema(std::string_view(R"({"type":"table","keys":{"a":{"typ":"string"}}})")),
                      Catch::Contains("schema.keys.a: unknown schema field 'typ'"));
    CHECK_THROWS_WITH(parse_schema(std::string_view("not json")), Catch::Contains("not valid JSON"));
}

TEST_CASE("a plugin without a configuration schema must have an empty section, so nothing in it is logged unchecked") {
    TempDir dir;
    const std::vector<PluginIdentity> plugins = {
        plugin(CC_KIND_FEATURE, "import", nullptr),  // as the shipped import feature: no schema
        plugin(CC_KIND_FEATURE, "pkcs", R"({"type":"table","keys":{"workers":{"type":"integer"}}})"),
        plugin(CC_KIND_CA, "bare", nullptr),
        plugin(CC_KIND_TENANT, "local", nullptr),
    };
    SECTION("empty sections, and a [ca]/[tenant] section holding only 'plugin', are fine") {
        auto c = check(dir, "[import]\n[ca.corp]\nplugin = \"bare\"\n[tenant]\nplugin = \"local\"\n", plugins);
        INFO(c.text());
        CHECK(c.config);
    }
    SECTION("a feature section") {
        auto c =
            check(dir, "[host]\nlisten = \"127.0.0.1:9443\"\n[import]\nwatch = \"x\"\nadmin_password = \"hunter2\"\n", plugins);
        REQUIRE_FALSE(c.config);
        REQUIRE(c.problems.size() == 1);
        CHECK(c.problems[0].to_string() ==
              dir.path().string() +
                  "/connector.toml:4:1: import: plugin 'import' declares no configuration schema, so its section "
                  "must be empty; found 'admin_password', 'watch'");
        CHECK_THAT(c.text(), !Catch::Contains("hunter2"));
    }
    SECTION("a CA section beyond its 'plugin' key") {
        auto c = check(dir, "[ca.corp]\nplugin = \"bare\"\napi_key = \"s3cret-key\"\n", plugins);
        REQUIRE_FALSE(c.config);
        REQUIRE(c.problems.size() == 1);  // not also "unknown key"
        CHECK_THAT(
            c.problems[0].to_string(),
            Catch::EndsWith("connector.toml:3:1: ca.corp: plugin 'bare' declares no configuration schema, so its section must "
                            "be empty (only 'plugin' may be set); found 'api_key'"));
        CHECK_THAT(c.text(), !Catch::Contains("s3cret-key"));
    }
    SECTION("a tenant section beyond its 'plugin' key") {
        auto c = check(dir, "[tenant]\nplugin = \"local\"\ntoken = \"t0ken\"\n", plugins);
        REQUIRE_FALSE(c.config);
        REQUIRE(c.problems.size() == 1);
        CHECK_THAT(c.problems[0].to_string(), Catch::Contains(":3:1: tenant: plugin 'local' declares no configuration schema"));
    }
}

TEST_CASE("config: [host] max_connections and [host.tls] client_ca are typed, range-checked and in the effective configuration") {
    TempDir dir;
    auto defaults = check(dir, "");
    REQUIRE(defaults.config);
    CHECK(defaults.config->host.max_connections == 1024);
    CHECK(defaults.config->effective.at("host").at("max_connections").to_number<long>() == 1024);

    write_file(dir / "cert.pem", "x");
    write_file(dir / "key.pem", "x");
    ::chmod((dir / "key.pem").c_str(), 0600);
    write_file(dir / "clients.pem", "x");
    auto c = check(dir,
                   "[host]\nmax_connections = 8\n[host.tls]\ncertificate = \"cert.pem\"\nprivate_key = \"key.pem\"\n"
                   "client_ca = \"clients.pem\"\n");
    INFO(c.text());
    REQUIRE(c.config);
    CHECK(c.config->host.max_connections == 8);
    REQUIRE(c.config->host.tls);
    CHECK(c.config->host.tls->client_ca == dir.path() / "clients.pem");
    CHECK(c.config->effective.at("host").at("tls").at("client_ca").as_string() == (dir.path() / "clients.pem").string());

    auto zero = check(dir, "[host]\nmax_connections = 0\n");
    CHECK_FALSE(zero.config);
    CHECK_THAT(zero.text(), Catch::Contains("host.max_connections"));
    auto missing = check(dir, "[host.tls]\ncertificate = \"cert.pem\"\nprivate_key = \"key.pem\"\nclient_ca = \"nope.pem\"\n");
    CHECK_FALSE(missing.config);
    CHECK_THAT(missing.text(), Catch::Contains("host.tls.client_ca: file not found"));
}

TEST_CASE("[update] gives typed settings: mode, interval, window, pins, repositories") {
    TempDir dir;
    write_file(dir / "corp.root.json", "{}");
    auto c = check(dir, R"(
[update]
mode = "auto"
check_interval = "90m"
maintenance_window = "23:30-01:00"
pin = { pkcs = "0.3.1" }
allow_downgrade = true
watch_seconds = 20
[update.repositories.corp]
url = "https://updates.example/certconnector/"
root = "corp.root.json"
plugins = ["pkcs", "scep"]
)");
    INFO(c.text());
    REQUIRE(c.config);
    const UpdateSettings& u = c.config->update;
    CHECK(u.mode == UpdateSettings::Mode::Auto);
    CHECK(u.check_interval == std::chrono::minutes(90));
    REQUIRE(u.maintenance_window);
    CHECK(u.maintenance_window->first == 23 * 60 + 30);
    CHECK(u.maintenance_window->second == 60);
    CHECK(u.pins.at("pkcs") == "0.3.1");
    CHECK(u.allow_downgrade);
    CHECK(u.watch == std::chrono::seconds(20));
    REQUIRE(u.repositories.size() == 1);
    CHECK(u.repositories[0].name == "corp");
    CHECK(u.repositories[0].root == dir / "corp.root.json");
    CHECK(u.repositories[0].trusted_for("scep"));
    CHECK_FALSE(u.repositories[0].trusted_for("import"));
    CHECK(c.config->effective.at("update").at("mode").as_string() == "auto");
}

TEST_CASE("[update] defaults to off, and bad values are refused naming the key and what was expected") {
    TempDir dir;
    auto defaults = check(dir, "");
    REQUIRE(defaults.config);
    CHECK(defaults.config->update.mode == UpdateSettings::Mode::Off);
    CHECK(defaults.config->update.check_interval == std::chrono::hours(6));
    CHECK(defaults.config->update.watch == std::chrono::seconds(300));

    auto c = check(dir, R"(
[update]
mode = "sometimes"
check_interval = "6 hours"
maintenance_window = "2am-4am"
frequency = 3
[update.repositories.corp]
url = "http://updates.example/"
root = "missing.root.json"
plugins = []
trust = "all"
)");
    const std::string text = c.text();
    INFO(text);
    CHECK_FALSE(c.config);
    CHECK_THAT(text, Catch::Contains("update.mode: 'sometimes' is not one of: off, notify, auto"));
    CHECK_THAT(text, Catch::Contains("update.check_interval: expected a positive number followed by s, m, h or d"));
    CHECK_THAT(text, Catch::Contains("update.maintenance_window: expected HH:MM-HH:MM"));
    CHECK_THAT(text, Catch::Contains("update.frequency: unknown key 'frequency'"));
    CHECK_THAT(text, Catch::Contains("update.repositories.corp.url: expected an https:// or file:/// URL"));
    CHECK_THAT(text, Catch::Contains("update.repositories.corp.root: file not found"));
    CHECK_THAT(text, Catch::Contains("update.repositories.corp.plugins: name the plugins"));
    CHECK_THAT(text, Catch::Contains("update.repositories.corp.trust: unknown key 'trust'"));
    CHECK_THAT(text, Catch::Contains("connector.toml:"));
}

TEST_CASE("durations and time windows parse strictly") {
    CHECK(parse_duration("30s") == std::chrono::seconds(30));
    CHECK(parse_duration("1d") == std::chrono::hours(24));
    CHECK_FALSE(parse_duration("0s"));
    CHECK_FALSE(parse_duration("h"));
    CHECK_FALSE(parse_duration("-5m"));
    CHECK_FALSE(parse_duration("5w"));
    CHECK(parse_time_window("02:00-04:00") == std::make_pair(120, 240));
    CHECK_FALSE(parse_time_window("02:00-02:00"));
    CHECK_FALSE(parse_time_window("25:00-04:00"));
    CHECK_FALSE(parse_time_window("2:00-4:00"));
}

TEST_CASE("[store]: absent means SQLite; a PostgreSQL URL, password file and heartbeat are typed and checked") {
    TempDir dir;
    auto defaults = check(dir, "");
    REQUIRE(defaults.config);
    CHECK_FALSE(defaults.config->store.shared());
    CHECK(defaults.config->effective.at("store").at("backend").as_string() == "sqlite");

    write_file(dir / "pg-password", "s3cret\n");
    std::filesystem::permissions(dir / "pg-password", std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    auto ok = check(dir, R"(
[store]
url = "postgresql://certconn@db1,db2/certconn?target_session_attrs=read-write"
password_file = "pg-password"
heartbeat_seconds = 2
lost_after_seconds = 10
)");
    INFO(ok.text());
    REQUIRE(ok.config);
    CHECK(ok.config->store.shared());
    CHECK(ok.config->store.password_file == dir / "pg-password");
    CHECK(ok.config->store.heartbeat_seconds == 2);
    CHECK(ok.config->effective.at("store").at("backend").as_string() == "postgresql");
    CHECK_THAT(boost::json::serialize(ok.config->effective), !Catch::Contains("s3cret"));

    std::filesystem::permissions(dir / "pg-password", std::filesystem::perms::others_read, std::filesystem::perm_options::add);
    auto bad = check(dir, R"(
[store]
url = "postgresql://certconn:hunter2@db1/certconn"
password_file = "pg-password"
heartbeat_seconds = 10
lost_after_seconds = 15
)");
    const std::string text = bad.text();
    INFO(text);
    CHECK_FALSE(bad.config);
    CHECK_THAT(text, Catch::Contains("store.url: holds a password; put it in store.password_file"));
    CHECK_THAT(text, !Catch::Contains("hunter2"));
    CHECK_THAT(text, Catch::Contains("store.password_file: ") && Catch::Contains("is readable by others"));
    CHECK_THAT(text, Catch::Contains("store.lost_after_seconds: expected at least twice heartbeat_seconds (10)"));

    auto wrong = check(dir, "[store]\nurl = \"mysql://db/x\"\n");
    CHECK_THAT(wrong.text(), Catch::Contains("store.url: expected a PostgreSQL URL starting with postgresql://"));
    auto query_password = check(dir, "[store]\nurl = \"postgresql://db/x?password=abc\"\n");
    CHECK_THAT(query_password.text(), Catch::Contains("store.url: holds a password"));
}
