// Hot swap with the real daemon: a different build of a plugin really serves (the module store
// gives every build its own path), requests in flight finish on the generation they started
// on, the old library leaves the address space, the serving generation hands its state
// directory over (quiesce), and a new version that crashes or is unhealthy in init never
// reaches the serving process (probe child).
#include "support/Daemon.hpp"

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <atomic>
#include <future>

using namespace certconn::test;
namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

struct SwapInstallation {
    TempDir dir;
    fs::path config = dir / "certconnector.toml";
    fs::path plugins = dir / "plugins";
    fs::path state = dir / "state";

    explicit SwapInstallation(const std::string& first, const std::string& extra = "") {
        fs::create_directory(plugins);
        ::chmod(plugins.c_str(), 0755);
        install_fixture(plugins, "swap", first);
        write_file(config,
                   "[host]\nlisten = \"127.0.0.1:0\"\nplugin_dir = \"plugins\"\nstate_dir = \"state\"\nlog_dir = \"log\"\n"
                   "drain_timeout_seconds = 10\n" +
                       extra);
    }
    std::string operational() const { return read_file(dir / "log" / "operational.jsonl"); }
    std::string handover() const { return read_file(state / "plugins" / "feature-swap" / "handover.log"); }
    std::uint16_t start(Daemon& daemon) const {
        const json::object status = wait_for_status(daemon, config);
        INFO(daemon.output());
        REQUIRE_FALSE(status.empty());
        return static_cast<std::uint16_t>(status.at("port").as_int64());
    }
};

std::string maps_of(const Daemon& daemon) {
    return read_file("/proc/" + std::to_string(daemon.pid()) + "/maps");
}

std::string version(std::uint16_t port) {
    return http_request(port, "GET", "/swap/version").body;
}

// Installs `name` under `as` by writing a temporary file and renaming it over the old one, as
// package managers do (a file that is mapped is never rewritten in place).
void replace_with(const fs::path& plugins, const std::string& name, const std::string& as) {
    const fs::path tmp = install_fixture(plugins, "swap", name, "." + as + ".tmp");
    fs::rename(tmp, plugins / as);
}

}  // namespace

TEST_CASE("hot swap: new requests see the new build at once, requests in flight finish on the old one, which is unmapped") {
    SwapInstallation inst("swap-0.1.0");
    Daemon daemon(inst.config, inst.dir / "daemon.out");
    const auto port = inst.start(daemon);
    REQUIRE(version(port) == "0.1.0");
    // Loaded from the module store, not from the plugin directory.
    REQUIRE_THAT(maps_of(daemon), Catch::Contains("modules/feature-swap/0.1.0-"));
    CHECK_THAT(maps_of(daemon), !Catch::Contains("plugins/swap-0.1.0.so"));

    auto in_flight = std::async(std::launch::async, [&] { return http_request(port, "GET", "/swap/version?hold=1").body; });
    REQUIRE(eventually([&] { return inst.handover().find("in-flight 0.1.0") != std::string::npos; }));
    // Load through the swap: four clients in a loop. None may fail, and once a client has seen
    // 0.2.0 it never sees 0.1.0 again (new requests go to the new generation at once).
    std::atomic<bool> stop_load{false};
    std::vector<std::future<std::vector<std::string>>> load;
    for (int i = 0; i < 4; ++i)
        load.push_back(std::async(std::launch::async, [&] {
            std::vector<std::string> seen;
            while (!stop_load) {
                const auto r = http_request(port, "GET", "/swap/version");
                seen.push_back(r.status == 200 ? r.body : "HTTP " + std::to_string(r.status));
            }
            return seen;
        }));

    install_fixture(inst.plugins, "swap", "swap-0.2.0");
    daemon.signal(SIGHUP);
    // A new request is served by 0.2.0 while the old request is still running on 0.1.0.
    REQUIRE(eventually([&] { return version(port) == "0.2.0"; }, std::chrono::seconds(20)));
    CHECK(in_flight.wait_for(std::chrono::seconds(0)) != std::future_status::ready);
    // Still held on 0.1.0, which is therefore still mapped.
    CHECK_THAT(maps_of(daemon), Catch::Contains("modules/feature-swap/0.1.0-"));
    write_file(inst.state / "plugins" / "feature-swap" / "release", "");
    CHECK(in_flight.get() == "0.1.0");
    stop_load = true;
    std::size_t requests = 0;
    for (auto& client : load) {
        const auto seen = client.get();
        requests += seen.size();
        bool newer = false;
        for (const auto& answer : seen) {
            INFO(answer);
            CHECK((answer == "0.1.0" || answer == "0.2.0"));
            if (answer == "0.2.0") newer = true;
            if (newer) CHECK(answer == "0.2.0");
        }
        CHECK(newer);
    }
    CHECK(requests > 8);
    // 0.1.0 quiesced (released its lock on the state directory) before 0.2.0's init took it.
    CHECK_THAT(inst.handover(), Catch::Contains("quiesced 0.1.0"));
    // After the last request on it ended, 0.1.0 is gone from the address space.
    CHECK(eventually([&] { return maps_of(daemon).find("modules/feature-swap/0.1.0-") == std::string::npos; }));
    CHECK_THAT(maps_of(daemon), Catch::Contains("modules/feature-swap/0.2.0-"));
    CHECK_THAT(inst.operational(), Catch::Contains("\"name\":\"PluginSwapped\""));
    CHECK_THAT(inst.operational(), !Catch::Contains("PluginStillMapped"));

    // Both files are present; the lower version is listed as superseded.
    const auto status = json::parse(run_cli({"status", "--config", inst.config.string(), "--json"}).output).as_object();
    bool superseded = false, loaded = false;
    for (const auto& p : status.at("plugins").as_array()) {
        const auto& o = p.as_object();
        if (o.at("file").as_string().ends_with("swap-0.1.0.so")) superseded = o.at("status").as_string() == "superseded";
        if (o.at("file").as_string().ends_with("swap-0.2.0.so")) loaded = o.at("status").as_string() == "loaded";
    }
    CHECK(superseded);
    CHECK(loaded);

    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
}

TEST_CASE("hot swap: a file replaced under the same name serves its new bytes (dlopen's cache is not fooled)") {
    SwapInstallation inst("swap-0.1.0");
    fs::rename(inst.plugins / "swap-0.1.0.so", inst.plugins / "swap.so");
    Daemon daemon(inst.config, inst.dir / "daemon.out");
    const auto port = inst.start(daemon);
    REQUIRE(version(port) == "0.1.0");
    replace_with(inst.plugins, "swap-0.2.0", "swap.so");
    daemon.signal(SIGHUP);
    CHECK(eventually([&] { return version(port) == "0.2.0"; }));
    CHECK(eventually([&] { return maps_of(daemon).find("modules/feature-swap/0.1.0-") == std::string::npos; }));
    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
}

TEST_CASE("hot swap: a new version that crashes in init, or is unhealthy, is stopped by the probe and the serving one stays") {
    SwapInstallation inst("swap-0.2.0");
    Daemon daemon(inst.config, inst.dir / "daemon.out");
    const auto port = inst.start(daemon);
    REQUIRE(version(port) == "0.2.0");

    install_fixture(inst.plugins, "swap", "swap-0.3.0-crash");
    daemon.signal(SIGHUP);
    REQUIRE(eventually([&] { return inst.operational().find("\"name\":\"PluginProbeFailed\"") != std::string::npos; }));
    CHECK_THAT(inst.operational(), Catch::Contains("crashed (SIGABRT)"));
    CHECK(daemon.running());
    CHECK(version(port) == "0.2.0");
    CHECK_THAT(maps_of(daemon), !Catch::Contains("feature-swap/0.3.0-"));
    CHECK_THAT(inst.operational(), !Catch::Contains("\"name\":\"PluginSwapped\""));

    fs::remove(inst.plugins / "swap-0.3.0-crash.so");
    install_fixture(inst.plugins, "swap", "swap-0.3.0-unhealthy");
    daemon.signal(SIGHUP);
    REQUIRE(eventually([&] { return inst.operational().find("unhealthy after init") != std::string::npos; }));
    CHECK(version(port) == "0.2.0");
    CHECK(daemon.running());

    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
}

TEST_CASE("hot swap: a plugin built with GNU unique symbols is reported as unable to unload, and shipped plugins are not") {
    SwapInstallation inst("swap-0.4.0-unique");
    Daemon daemon(inst.config, inst.dir / "daemon.out");
    const auto port = inst.start(daemon);
    CHECK(version(port) == "0.4.0");
    CHECK(eventually([&] { return inst.operational().find("\"name\":\"PluginCannotUnload\"") != std::string::npos; }));
    CHECK_THAT(inst.operational(), Catch::Contains("STB_GNU_UNIQUE"));
    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);

    const auto fixtures = run_cli({"plugins", "--dir", inst.plugins.string(), "--json"});
    REQUIRE(fixtures.exit_code == 0);
    CHECK_THAT(fixtures.output, Catch::Contains("cannot_unload"));
    // certconn_add_plugin builds every shipped plugin unloadable: the same check finds nothing.
    const auto listing = run_cli({"plugins", "--dir", CERTCONN_PLUGIN_DIR, "--json"});
    REQUIRE(listing.exit_code == 0);
    const json::value shipped = json::parse(listing.output);
    for (const auto& p : shipped.at("plugins").as_array()) {
        INFO(json::serialize(p));
        CHECK_FALSE(p.as_object().contains("cannot_unload"));
    }
}

TEST_CASE("hot swap: when the highest version fails its probe, the next best one serves") {
    SwapInstallation inst("swap-0.1.0");
    Daemon daemon(inst.config, inst.dir / "daemon.out");
    const auto port = inst.start(daemon);
    REQUIRE(version(port) == "0.1.0");
    install_fixture(inst.plugins, "swap", "swap-0.2.0");
    install_fixture(inst.plugins, "swap", "swap-0.3.0-crash");
    daemon.signal(SIGHUP);
    CHECK(eventually([&] { return version(port) == "0.2.0"; }));
    CHECK_THAT(inst.operational(), Catch::Contains("crashed (SIGABRT)"));
    const auto status = json::parse(run_cli({"status", "--config", inst.config.string(), "--json"}).output).as_object();
    for (const auto& p : status.at("plugins").as_array()) {
        const auto& o = p.as_object();
        INFO(json::serialize(o));
        if (o.at("file").as_string().ends_with("swap-0.3.0-crash.so")) CHECK(o.at("status").as_string() == "refused");
        if (o.at("file").as_string().ends_with("swap-0.2.0.so")) CHECK(o.at("status").as_string() == "loaded");
    }
    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
}

TEST_CASE("hot swap: when the new generation's init fails after the hand-over, the old one resumes and keeps serving") {
    SwapInstallation inst("swap-0.1.0");
    Daemon daemon(inst.config, inst.dir / "daemon.out");
    const auto port = inst.start(daemon);
    REQUIRE(version(port) == "0.1.0");
    // The probe's scratch directory has no marker, so 0.2.0 passes the probe; in the real state
    // directory its init fails after 0.1.0 has quiesced.
    write_file(inst.state / "plugins" / "feature-swap" / "fail-init", "");
    install_fixture(inst.plugins, "swap", "swap-0.2.0");
    daemon.signal(SIGHUP);
    REQUIRE(eventually([&] { return inst.handover().find("resumed 0.1.0") != std::string::npos; }));
    CHECK_THAT(inst.handover(), Catch::Contains("quiesced 0.1.0\nresumed 0.1.0"));
    CHECK_THAT(inst.operational(), Catch::Contains("fail-init marker present"));
    CHECK(version(port) == "0.1.0");

    // 0.1.0 holds its state directory again: once the marker is gone, 0.2.0 takes over only
    // through another hand-over.
    fs::remove(inst.state / "plugins" / "feature-swap" / "fail-init");
    daemon.signal(SIGHUP);
    CHECK(eventually([&] { return version(port) == "0.2.0"; }));
    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
}

TEST_CASE("hot swap: a new version whose init hangs is killed at the probe deadline and the serving one stays") {
    SwapInstallation inst("swap-0.2.0", "[update]\nprobe_timeout_seconds = 2\n");
    Daemon daemon(inst.config, inst.dir / "daemon.out");
    const auto port = inst.start(daemon);
    REQUIRE(version(port) == "0.2.0");
    install_fixture(inst.plugins, "swap", "swap-0.3.0-hang");
    daemon.signal(SIGHUP);
    REQUIRE(eventually([&] { return inst.operational().find("\"name\":\"PluginProbeFailed\"") != std::string::npos; }));
    CHECK_THAT(inst.operational(), Catch::Contains("did not finish loading, init or health within 2000 ms; killed"));
    CHECK(version(port) == "0.2.0");
    // No probe child is left behind.
    CHECK(run_shell("pgrep -f '[p]lugin-probe.*feature-swap' || true").output.empty());
    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
}
