// Route namespaces (issue #11): two plugins cannot share a path silently, and the relying-party
// paths /crl/, /ca/, /ocsp/ belong to the host, which publishes them for every CA.
#include "plugins/PluginRuntime.hpp"
#include "support/TestFiles.hpp"

#include <certconn/abi.h>
#include <certconn/events.h>

#include <catch2/catch.hpp>

using namespace certconn::host;
using namespace certconn::test;

namespace {

struct Host {
    TempDir dir;
    std::filesystem::path plugins = dir / "plugins";
    PluginScan scan;
    std::unique_ptr<EventLog> log;
    std::unique_ptr<PluginRuntime> runtime;

    Host() {
        std::filesystem::create_directory(plugins);
        ::chmod(plugins.c_str(), 0755);
        install_fixture(plugins, "good", "fixture-echo");
        install_fixture(plugins, "broken", "broken-overlap-route");
        install_fixture(plugins, "broken", "broken-reserved-crl");
        install_fixture(plugins, "broken", "legacy-ocsp-route");
        scan = scan_plugins(plugins, LoaderPolicy::for_service_account(""));
        write_file(dir / "c.toml", "[host]\nplugin_dir = \"plugins\"\nstate_dir = \"state\"\nlog_dir = \"log\"\n");
        std::vector<ConfigProblem> problems;
        auto doc = parse_config_file(dir / "c.toml", problems);
        auto c = validate_config(*doc, scan.identities(), problems);
        REQUIRE(c);
        log = std::make_unique<EventLog>(EventLogOptions{dir / "log", 1 << 20, 2, true, true, false});
        runtime = std::make_unique<PluginRuntime>(*log, std::make_shared<const Config>(*c));
    }

    std::string init(const std::string& name) {
        for (const auto& lib : scan.libraries) {
            if (lib->identity.name != name) continue;
            std::string error;
            auto gen = runtime->instantiate(lib, error);
            if (gen) runtime->publish(gen);
            return gen ? std::string() : error;
        }
        FAIL("plugin " << name << " did not pass the loader");
        return {};
    }

    std::string events() {
        log->flush();
        return read_file(dir / "log" / "operational.jsonl");
    }
};

}  // namespace

TEST_CASE("paths overlap when equal or when one lies in the other's prefix") {
    CHECK(PluginRuntime::paths_overlap("/a/b", "/a/b"));
    CHECK(PluginRuntime::paths_overlap("/a/", "/a/b"));
    CHECK(PluginRuntime::paths_overlap("/a/b", "/a/"));
    CHECK(PluginRuntime::paths_overlap("/a/", "/a/b/"));
    CHECK_FALSE(PluginRuntime::paths_overlap("/a/b", "/a/c"));
    CHECK_FALSE(PluginRuntime::paths_overlap("/a", "/a/b"));  // "/a" is exact, not a prefix
    CHECK_FALSE(PluginRuntime::paths_overlap("/ab/", "/a/"));
    for (const char* p :
         {"/crl/", "/crl/x.crl", "/crl", "/ca/", "/ca/x.crt", "/ocsp/", "/ocsp/x", "/ocsp", "/", "/healthz", "/admin/x"})
        CHECK(PluginRuntime::reserved_path(p));
    for (const char* p : {"/crls", "/cab/x", "/ocspx/", "/scep", "/tenant/v1/jobs"})
        CHECK_FALSE(PluginRuntime::reserved_path(p));
}

TEST_CASE("a second plugin whose prefix covers another's route fails init, naming both, even if it ignores the refusal") {
    Host h;
    REQUIRE(h.init("echo").empty());
    const std::string error = h.init("overlap");
    CHECK_THAT(error, Catch::Contains("route GET /fixture/ of feature plugin 'overlap'"));
    CHECK_THAT(error, Catch::Contains("overlaps GET /fixture/echo of feature plugin 'echo'"));
    CHECK(h.runtime->find(CC_KIND_FEATURE, "overlap") == nullptr);
    // The first plugin keeps its namespace.
    auto match = h.runtime->match_route("GET", "/fixture/echo");
    REQUIRE(match);
    CHECK(match->owner->identity().name == "echo");
    CHECK_FALSE(h.runtime->match_route("GET", "/fixture/other"));
    const std::string events = h.events();
    CHECK_THAT(events, Catch::Contains("\"id\":109,"));
    CHECK_THAT(events, Catch::Contains("overlaps GET /fixture/echo of feature plugin 'echo'"));
}

TEST_CASE("a plugin whose route lies inside another's prefix route fails init, naming both") {
    Host h;
    REQUIRE(h.init("overlap").empty());  // alone, its prefix overlaps nobody
    const std::string error = h.init("echo");
    CHECK_THAT(error, Catch::Contains("route GET /fixture/echo of feature plugin 'echo'"));
    CHECK_THAT(error, Catch::Contains("overlaps GET /fixture/ of feature plugin 'overlap'"));
    CHECK(h.runtime->find(CC_KIND_FEATURE, "echo") == nullptr);
    auto match = h.runtime->match_route("GET", "/fixture/echo");
    REQUIRE(match);
    CHECK(match->owner->identity().name == "overlap");
}

TEST_CASE("the host's relying-party paths cannot be registered by plugins") {
    Host h;
    CHECK_THAT(h.init("reserved-crl"), Catch::Contains("path /crl/x.crl is reserved for the host"));
    CHECK_FALSE(h.runtime->match_route("GET", "/crl/x.crl"));
}

TEST_CASE("a plugin built for ABI 1.2 may still serve a relying-party path itself, behind the host's publication") {
    Host h;
    CHECK(h.init("legacy-ocsp").empty());
    auto match = h.runtime->match_route("GET", "/ocsp/legacy");
    REQUIRE(match);
    CHECK(match->owner->identity().name == "legacy-ocsp");
    // The host's own paths stay refused whatever the plugin's ABI.
    CHECK(PluginRuntime::host_path("/status"));
    CHECK_FALSE(PluginRuntime::host_path("/ocsp/legacy"));
}
