// The ABI's promises against deliberately broken plugins: each is refused with its own reason
// before (loader) or at (runtime) init, and never crashes or half-loads the host.
#include "plugins/PluginRuntime.hpp"
#include "support/TestFiles.hpp"

#include <certconn/events.h>

#include <catch2/catch.hpp>

using namespace certconn::host;
using namespace certconn::test;

namespace {

const PluginFileReport& report_for(const PluginScan& scan, const std::string& file) {
    for (const auto& r : scan.files)
        if (r.file.filename() == file) return r;
    FAIL("no report for " << file);
    throw std::logic_error("unreachable");
}

struct Broken {
    TempDir dir;
    std::filesystem::path plugins = dir / "plugins";
    PluginScan scan;
    std::unique_ptr<EventLog> log;
    std::unique_ptr<PluginRuntime> runtime;

    explicit Broken(const std::vector<const char*>& names) {
        std::filesystem::create_directory(plugins);
        ::chmod(plugins.c_str(), 0755);
        for (const char* n : names)
            install_fixture(plugins, "broken", n);
        scan = scan_plugins(plugins, LoaderPolicy::for_service_account(""));
        write_file(dir / "c.toml", "[host]\nplugin_dir = \"plugins\"\nstate_dir = \"state\"\nlog_dir = \"log\"\n");
        std::vector<ConfigProblem> problems;
        auto doc = parse_config_file(dir / "c.toml", problems);
        auto c = validate_config(*doc, scan.identities(), problems);
        REQUIRE(c);
        log = std::make_unique<EventLog>(EventLogOptions{dir / "log", 1 << 20, 2, true, true, false});
        runtime = std::make_unique<PluginRuntime>(*log, std::make_shared<const Config>(*c));
    }

    /// Runs the named plugin's init; returns the error (empty when it succeeded).
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
};

}  // namespace

TEST_CASE("the loader refuses a NULL info, a too-short struct, an unknown kind and a bad date, each with its reason") {
    Broken b({"broken-query-null", "broken-short-info", "broken-bad-kind", "broken-bad-date"});
    CHECK(b.scan.libraries.empty());
    CHECK_THAT(report_for(b.scan, "broken-query-null.so").reason, Catch::Contains("query export returned no plugin info"));
    CHECK_THAT(report_for(b.scan, "broken-short-info.so").reason,
               Catch::Contains("struct_size 8 is smaller than SDK 1." + std::to_string(CERTCONN_ABI_MINOR) + " defines"));
    CHECK_THAT(report_for(b.scan, "broken-bad-kind.so").reason, Catch::Contains("unknown kind 7"));
    CHECK_THAT(report_for(b.scan, "broken-bad-date.so").reason,
               Catch::Contains("invalid release date '2026-13-45'; expected YYYY-MM-DD"));
    for (const auto& f : b.scan.files)
        CHECK(f.event_id == CC_EV_PluginInfoInvalid);
}

TEST_CASE("init that leaves destroy NULL or the table incomplete is refused - nothing is published") {
    Broken b({"broken-no-destroy", "broken-incomplete-table"});
    CHECK_THAT(b.init("no-destroy"), Catch::Contains("init succeeded but provided no destroy function"));
    CHECK_THAT(b.init("incomplete-table"), Catch::Contains("did not provide a complete cc_feature_api table"));
    CHECK(b.runtime->generations().empty());
}

TEST_CASE("a plugin cannot take the host's routes or commands, nor register with a too-short struct") {
    Broken b({"broken-reserved-route", "broken-short-route", "broken-reserved-command"});
    CHECK_THAT(b.init("reserved-route"), Catch::Contains("path /status is reserved for the host"));
    CHECK_THAT(b.init("short-route"), Catch::Contains("cc_http_route is missing or too short"));
    CHECK_THAT(b.init("reserved-command"), Catch::Contains("admin command 'keys create' is reserved for the host"));
    CHECK(b.runtime->generations().empty());
    CHECK_FALSE(b.runtime->match_route("GET", "/status"));
    CHECK_FALSE(b.runtime->find_command("keys create"));
}
