// The real daemon as a process, with real plugins from the build tree.
#include "support/Daemon.hpp"

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <pwd.h>
#include <sys/stat.h>

using namespace certconn::test;
namespace json = boost::json;

namespace {

struct Installation {
    TempDir dir;
    std::filesystem::path config = dir / "certconnector.toml";
    std::filesystem::path plugins = dir / "plugins";
    std::filesystem::path log = dir / "log";

    Installation() {
        std::filesystem::create_directory(plugins);
        ::chmod(plugins.c_str(), 0755);
        for (const char* good : {"fixture-echo", "fixture-ca", "fixture-tenant"})
            install_fixture(plugins, "good", good);
        install_fixture(plugins, "broken", "broken-abi-major");
        write_config("hello", "");
    }

    void write_config(const std::string& greeting, const std::string& extra) const {
        write_file(config,
                   "[host]\nlisten = \"127.0.0.1:0\"\nplugin_dir = \"plugins\"\nstate_dir = \"state\"\n"
                   "log_dir = \"log\"\nmax_body_bytes = 4096\ndrain_timeout_seconds = 10\n"
                   "[ca.test]\nplugin = \"fixture\"\nlabel = \"issuing\"\npassword = \"hunter2\"\n"
                   "[tenant]\nplugin = \"fixture\"\n"
                   "[echo]\nca = \"test\"\ngreeting = \"" +
                       greeting + "\"\n" + extra);
    }

    std::string operational() const { return read_file(log / "operational.jsonl"); }

    /// Waits until the daemon answers on its admin socket; returns its /status.
    json::object wait_ready(Daemon& daemon) const {
        json::object status = wait_for_status(daemon, config);
        INFO(daemon.output());
        REQUIRE_FALSE(status.empty());
        return status;
    }
};

const json::object* find_by(const json::array& items, const char* key, const std::string& value) {
    for (const auto& item : items)
        if (item.as_object().contains(key) && item.as_object().at(key).as_string() == value) return &item.as_object();
    return nullptr;
}

}  // namespace

TEST_CASE("the daemon serves /healthz, /status and plugin routes, and stops cleanly on SIGTERM") {
    Installation inst;
    Daemon daemon(inst.config, inst.dir / "daemon.out");
    const json::object status = inst.wait_ready(daemon);
    const auto port = static_cast<std::uint16_t>(status.at("port").as_int64());
    REQUIRE(port != 0);

    CHECK(status.at("state").as_string() == "running");
    REQUIRE(status.at("tenants").as_array().size() == 1);
    CHECK(status.at("tenants").as_array()[0].at("connected").as_bool());
    CHECK(status.at("tenants").as_array()[0].at("default").as_bool());
    const json::object* echo = find_by(status.at("features").as_array(), "name", "echo");
    REQUIRE(echo);
    CHECK(echo->at("enabled").as_bool());
    CHECK(echo->at("version").as_string() == "1.2.0");
    const json::object* ca = find_by(status.at("cas").as_array(), "name", "test");
    REQUIRE(ca);
    CHECK(ca->at("open").as_bool());
    const json::object* broken =
        find_by(status.at("plugins").as_array(), "file", (inst.plugins / "broken-abi-major.so").string());
    REQUIRE(broken);
    CHECK(broken->at("status").as_string() == "refused");
    CHECK_THAT(std::string(broken->at("reason").as_string()), Catch::Contains("built for SDK 2.1, this host speaks 1.0-1.5"));
    const json::object* ca_plugin = find_by(status.at("plugins").as_array(), "file", (inst.plugins / "fixture-ca.so").string());
    REQUIRE(ca_plugin);
    CHECK(ca_plugin->at("status").as_string() == "loaded");
    CHECK(ca_plugin->at("support").at("state").as_string() != "unknown");

    auto health = http_request(port, "GET", "/healthz");
    CHECK(health.status == 200);
    CHECK(health.body == R"({"status":"ok","support":"supported"})");

    // Status names files and settings: a loopback TCP caller is anonymous, not "local".
    CHECK(http_request(port, "GET", "/status").status == 401);

    auto routed = http_request(port, "GET", "/fixture/echo?x=1");
    CHECK(routed.status == 200);
    const auto echoed = json::parse(routed.body).as_object();
    CHECK(echoed.at("greeting").as_string() == "hello");
    CHECK(echoed.at("query").as_string() == "x=1");
    CHECK(echoed.at("user_agent").as_string() == "certconn-test");

    // route -> feature plugin -> host CA routing -> CA plugin, and back
    auto issued = http_request(port, "POST", "/fixture/issue", R"({"csr":"abc"})");
    REQUIRE(issued.status == 200);
    const auto answer = json::parse(issued.body).as_object();
    CHECK(answer.at("ca").as_string() == "test");
    CHECK(answer.at("label").as_string() == "issuing");
    CHECK(answer.at("request").at("csr").as_string() == "abc");

    CHECK(http_request(port, "GET", "/no/such/route").status == 404);
    CHECK(http_request(port, "POST", "/fixture/issue", std::string(5000, 'x')).status == 413);

    auto text = run_cli({"status", "--config", inst.config.string()});
    CHECK(text.exit_code == 0);
    CHECK_THAT(text.output, Catch::Contains("default [fixture] (default): connected") && Catch::Contains("features: echo") &&
                                Catch::Contains("CAs: test [fixture]") && Catch::Contains("broken-abi-major.so: refused"));

    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
    const std::string log = inst.operational();
    CHECK_THAT(log, Catch::Contains("\"name\":\"ServiceStopping\"") && Catch::Contains("\"name\":\"ServiceStopped\""));
    CHECK_THAT(log, Catch::Contains("\"name\":\"PluginAbiMismatch\""));
    CHECK(log.find("hunter2") == std::string::npos);  // the CA's secret is redacted in the logged configuration
    CHECK_THAT(log, Catch::Contains("\"name\":\"ConfigurationLoaded\""));
    CHECK_FALSE(std::filesystem::exists(inst.dir / "state" / "admin.sock"));
}

TEST_CASE("plugins and config check name a broken plugin with its reason while the good ones load") {
    Installation inst;
    auto plugins = run_cli({"plugins", "--config", inst.config.string()});
    CHECK(plugins.exit_code == 0);
    CHECK_THAT(plugins.output, Catch::Contains("broken-abi-major.so: REFUSED   plugin 'broken-abi-major'") &&
                                   Catch::Contains("built for SDK 2.1, this host speaks 1.0-1.5"));
    CHECK_THAT(plugins.output, Catch::Contains("fixture-ca.so: loadable  ca 'fixture' 0.3.0  SDK 1.5  released 2026-11-01"));

    auto as_json = run_cli({"plugins", "--dir", inst.plugins.string(), "--json"});
    REQUIRE(as_json.exit_code == 0);
    CHECK(json::parse(as_json.output).at("plugins").as_array().size() == 4);

    auto check = run_cli({"config", "check", "--config", inst.config.string()});
    CHECK(check.exit_code == 2);
    CHECK_THAT(check.output, Catch::Contains("plugin 'broken-abi-major'") && Catch::Contains("1 problem(s)"));

    std::filesystem::remove(inst.plugins / "broken-abi-major.so");
    auto clean = run_cli({"config", "check", "--config", inst.config.string()});
    CHECK(clean.exit_code == 0);
    CHECK_THAT(clean.output, Catch::Contains(": OK (3 plugin(s)"));
}

TEST_CASE("a typo'd key fails config check naming key and line, and run refuses to start") {
    Installation inst;
    inst.write_config("hello", "[tenant.extra]\n");  // tenant tables are not nested
    write_file(inst.config, read_file(inst.config) + "[ca.second]\nplugin = \"fixture\"\nlable = \"x\"\n");
    auto check = run_cli({"config", "check", "--config", inst.config.string()});
    CHECK(check.exit_code == 2);
    CHECK_THAT(check.output,
               Catch::Contains("certconnector.toml:20:1: ca.second.lable: unknown key 'lable' (did you mean 'label'?)"));
    CHECK_THAT(check.output, Catch::Contains("certconnector.toml:18:1: ca.second.label: missing required key 'label'"));
    auto run = run_cli({"run", "--config", inst.config.string()});
    CHECK(run.exit_code == 2);
    CHECK_THAT(run.output, Catch::Contains("not started"));
}

TEST_CASE("SIGHUP reloads: changes are logged, changed plugins are swapped, a bad edit keeps the running configuration") {
    Installation inst;
    Daemon daemon(inst.config, inst.dir / "daemon.out");
    const auto port = static_cast<std::uint16_t>(inst.wait_ready(daemon).at("port").as_int64());
    CHECK(json::parse(http_request(port, "GET", "/fixture/echo").body).at("greeting").as_string() == "hello");

    inst.write_config("bonjour", "[log]\noperational_debug = true\n");
    daemon.signal(SIGHUP);
    REQUIRE(eventually(
        [&] { return inst.operational().find("echo.greeting: \\\"hello\\\" -> \\\"bonjour\\\"") != std::string::npos; }));
    REQUIRE(eventually(
        [&] { return json::parse(http_request(port, "GET", "/fixture/echo").body).at("greeting").as_string() == "bonjour"; }));
    // The old generation was released (destroyed on the runtime's reaper thread, just after).
    CHECK(eventually([&] { return inst.operational().find("\"name\":\"PluginUnloaded\"") != std::string::npos; }));

    write_file(inst.config, read_file(inst.config) + "[host.tls]\ncertfile = \"x\"\n");
    daemon.signal(SIGHUP);
    REQUIRE(eventually([&] { return inst.operational().find("ConfigurationReloadFailed") != std::string::npos; }));
    CHECK_THAT(inst.operational(), Catch::Contains("host.tls.certfile: unknown key 'certfile'"));
    CHECK(json::parse(http_request(port, "GET", "/fixture/echo").body).at("greeting").as_string() == "bonjour");

    inst.write_config("bonjour", "[features]\necho = false\n");
    daemon.signal(SIGHUP);
    REQUIRE(eventually([&] { return http_request(port, "GET", "/fixture/echo").status == 404; }));
    CHECK_THAT(inst.operational(), Catch::Contains("\"name\":\"PluginDisabled\""));

    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
}

TEST_CASE("graceful stop: a request in flight when SIGTERM arrives is answered") {
    Installation inst;
    Daemon daemon(inst.config, inst.dir / "daemon.out");
    const auto port = static_cast<std::uint16_t>(inst.wait_ready(daemon).at("port").as_int64());
    HttpResult slow;
    std::thread client([&] { slow = http_request(port, "GET", "/fixture/slow"); });
    REQUIRE(eventually([&] { return inst.operational().find("slow request started") != std::string::npos; }));
    daemon.signal(SIGTERM);
    client.join();
    CHECK(slow.status == 200);
    CHECK(slow.body == "slow done");
    CHECK(daemon.wait_exit() == 0);
}

TEST_CASE("the daemon refuses to start when its port is taken, with an event naming the address") {
    Installation inst;
    Daemon first(inst.config, inst.dir / "first.out");
    const auto port = static_cast<std::uint16_t>(inst.wait_ready(first).at("port").as_int64());
    TempDir other;
    std::filesystem::create_directory(other / "plugins");
    write_file(other / "c.toml", "[host]\nlisten = \"127.0.0.1:" + std::to_string(port) +
                                     "\"\nplugin_dir = \"plugins\"\nstate_dir = \"state\"\nlog_dir = \"log\"\n");
    auto second = run_cli({"run", "--config", (other / "c.toml").string()});
    CHECK(second.exit_code == 1);
    CHECK_THAT(second.output,
               Catch::Contains("HttpServerError") && Catch::Contains("cannot listen on 127.0.0.1:" + std::to_string(port)));
    first.signal(SIGTERM);
    CHECK(first.wait_exit() == 0);
}

TEST_CASE("the example in docs/plugin-sdk.md builds, loads, validates its section and serves its route") {
    Installation inst;
    install_fixture(inst.plugins, "docs", "docs-example-hello", "hello.so");
    inst.write_config("hello", "[hello]\ngreting = \"hi\"\n");
    auto typo = run_cli({"config", "check", "--config", inst.config.string()});
    CHECK_THAT(typo.output, Catch::Contains("hello.greting: unknown key 'greting' (did you mean 'greeting'?)"));

    std::filesystem::remove(inst.plugins / "broken-abi-major.so");
    inst.write_config("hello", "[hello]\ngreeting = \"hi from the guide\"\n");
    Daemon daemon(inst.config, inst.dir / "daemon.out");
    const auto port = static_cast<std::uint16_t>(inst.wait_ready(daemon).at("port").as_int64());
    auto hello = http_request(port, "GET", "/hello");
    CHECK(hello.status == 200);
    CHECK(hello.body == "hi from the guide\n");
    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
}

TEST_CASE("TLS: the listener speaks TLS 1.2 and 1.3 and refuses older versions") {
    Installation inst;
    const auto cert = inst.dir / "cert.pem";
    const auto key = inst.dir / "key.pem";
    const std::string gen =
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1"
        " -addext subjectAltName=IP:127.0.0.1 -keyout " +
        key.string() + " -out " + cert.string() + " 2>&1";
    REQUIRE(std::system(gen.c_str()) == 0);
    ::chmod(key.c_str(), 0600);
    inst.write_config("hello", "");
    write_file(inst.config, read_file(inst.config) + "[host.tls]\ncertificate = \"cert.pem\"\nprivate_key = \"key.pem\"\n");
    Daemon daemon(inst.config, inst.dir / "daemon.out");
    const auto port = std::to_string(inst.wait_ready(daemon).at("port").as_int64());

    const auto run = run_shell;
    auto ok = run("curl -sS --tlsv1.2 --cacert " + cert.string() + " https://127.0.0.1:" + port + "/healthz");
    CHECK(ok.exit_code == 0);
    CHECK(ok.output == R"({"status":"ok","support":"supported"})");
    auto tls13 = run("echo | openssl s_client -connect 127.0.0.1:" + port + " -tls1_3 -CAfile " + cert.string());
    CHECK_THAT(tls13.output, Catch::Contains("Protocol  : TLSv1.3") || Catch::Contains("TLSv1.3"));
    auto old = run("echo | openssl s_client -connect 127.0.0.1:" + port + " -tls1_1 -cipher DEFAULT:@SECLEVEL=0");
    CHECK(old.exit_code != 0);
    CHECK_THAT(old.output, Catch::Contains("alert protocol version") && Catch::Contains("Cipher is (NONE)"));
    auto plain = run("curl -sS http://127.0.0.1:" + port + "/healthz");
    CHECK(plain.output.find(R"({"status":"ok")") == std::string::npos);  // no plaintext on a TLS port
    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
}

TEST_CASE("started as root with a service account, the daemon becomes that account before any plugin code runs") {
    if (::geteuid() != 0) {
        WARN("not root: privilege drop cannot be exercised here");
        return;
    }
    Installation inst;
    ::chmod(inst.dir.path().c_str(), 0755);  // the service account reads the plugins (as from /usr/lib)
    install_fixture(inst.plugins, "good", "fixture-uid");
    write_file(inst.config, read_file(inst.config) + "");
    std::string text = read_file(inst.config);
    text.insert(text.find("listen"), "service_account = \"nobody\"\n");
    write_file(inst.config, text);
    // What the account could have planted in its log directory before a root start: a link and a
    // hard link to files root owns. Root must hand over only the account's own log files.
    std::filesystem::create_directories(inst.dir / "log");
    write_file(inst.dir / "root-owned", "secret");
    write_file(inst.dir / "root-owned-2", "secret");
    write_file(inst.dir / "log" / "old.jsonl", "{}\n");
    std::filesystem::create_symlink(inst.dir / "root-owned", inst.dir / "log" / "planted.jsonl");
    std::filesystem::create_hard_link(inst.dir / "root-owned-2", inst.dir / "log" / "linked.jsonl");
    Daemon daemon(inst.config, inst.dir / "daemon.out");
    const auto port = static_cast<std::uint16_t>(inst.wait_ready(daemon).at("port").as_int64());
    const std::string proc = read_file("/proc/" + std::to_string(daemon.pid()) + "/status");
    const auto uid_line = proc.substr(proc.find("Uid:"), proc.find('\n', proc.find("Uid:")) - proc.find("Uid:"));
    const passwd* nobody = getpwnam("nobody");
    REQUIRE(nobody);
    CHECK_THAT(uid_line, Catch::Contains("\t" + std::to_string(nobody->pw_uid) + "\t"));
    CHECK(uid_line.find("\t0\t") == std::string::npos);
    struct stat st {};
    REQUIRE(::stat((inst.dir / "state").c_str(), &st) == 0);
    CHECK(st.st_uid == nobody->pw_uid);
    CHECK((st.st_mode & 0777) == 0700);
    REQUIRE(::stat((inst.dir / "log" / "old.jsonl").c_str(), &st) == 0);
    CHECK(st.st_uid == nobody->pw_uid);
    for (const char* target : {"root-owned", "root-owned-2"}) {
        REQUIRE(::stat((inst.dir / target).c_str(), &st) == 0);
        CHECK(st.st_uid == 0);  // not followed through the link, not changed through the hard link
    }
    CHECK(http_request(port, "POST", "/fixture/issue", R"({"csr":"x"})").status == 200);  // plugins work as nobody
    // Plugin code never ran as root: not its init, and not its query export at the scan either.
    const std::string who = "query " + std::to_string(nobody->pw_uid) + " init " + std::to_string(nobody->pw_uid);
    CHECK(http_request(port, "GET", "/fixture/uid").body == who);
    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
}

TEST_CASE("HTTP limits: stalled clients are cut off, oversized headers and garbage are refused") {
    Installation inst;
    std::string text = read_file(inst.config);
    text.insert(text.find("listen"), "read_timeout_seconds = 1\nmax_header_bytes = 2048\n");
    write_file(inst.config, text);
    Daemon daemon(inst.config, inst.dir / "daemon.out");
    const auto port = static_cast<std::uint16_t>(inst.wait_ready(daemon).at("port").as_int64());

    auto [stalled, closed] = raw_exchange(port, "GET /healthz HTTP/1.1\r\nHost: x\r\n");  // never finishes
    CHECK(closed);  // the server hung up after read_timeout_seconds instead of waiting forever
    CHECK(stalled.empty());

    auto [big, big_closed] = raw_exchange(port, "GET /healthz HTTP/1.1\r\nX-Big: " + std::string(4096, 'a') + "\r\n\r\n");
    CHECK_THAT(big, Catch::StartsWith("HTTP/1.1 431"));
    CHECK(big_closed);

    auto [garbage, garbage_closed] = raw_exchange(port, "\x16\x03\x01 this is not HTTP\r\n\r\n");
    CHECK_THAT(garbage, Catch::StartsWith("HTTP/1.1 400"));
    CHECK(garbage_closed);

    auto [no_host, no_host_closed] = raw_exchange(port, "GET /healthz HTTP/1.0\r\n\r\n");
    CHECK_THAT(no_host, Catch::StartsWith("HTTP/1.0 200") && Catch::EndsWith(R"({"status":"ok","support":"supported"})"));

    auto [two, two_closed] = raw_exchange(
        port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /fixture/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    CHECK(two.find("HTTP/1.1 200") != std::string::npos);
    CHECK(two.find("\"greeting\":\"hello\"") != std::string::npos);  // second request on the same connection
    CHECK(two_closed);

    CHECK(daemon.running());
    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
    CHECK_THAT(inst.operational(), Catch::Contains("\"name\":\"HttpRequestRejected\""));
}
