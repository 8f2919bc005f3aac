// The job scheduler against the fixture tenant (an in-memory job source with leases) and the
// echo feature: one delivery thread, claims that go on while a slow tenant takes a result, and
// leases kept across retry waits.
#include "jobs/JobScheduler.hpp"
#include "support/TestFiles.hpp"

#include <certconn/sdk.hpp>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <thread>

using namespace certconn::host;
using namespace certconn::test;
using namespace std::chrono;
namespace json = boost::json;

namespace {

struct SchedulerFixture {
    TempDir dir;
    std::filesystem::path plugins = dir / "plugins";
    PluginScan scan;
    std::shared_ptr<const Config> config;
    std::unique_ptr<EventLog> log;
    std::unique_ptr<PluginRuntime> runtime;
    std::unique_ptr<JobScheduler> scheduler;

    explicit SchedulerFixture(const std::string& tenant_settings) {
        std::filesystem::create_directory(plugins);
        ::chmod(plugins.c_str(), 0755);
        for (const char* good : {"fixture-echo", "fixture-ca", "fixture-tenant"})
            install_fixture(plugins, "good", good);
        write_file(dir / "c.toml",
                   "[host]\nplugin_dir = \"plugins\"\nstate_dir = \"state\"\nlog_dir = \"log\"\n"
                   "[ca.test]\nplugin = \"fixture\"\nlabel = \"first\"\n"
                   "[tenant]\nplugin = \"fixture\"\n" +
                       tenant_settings);
        std::vector<ConfigProblem> problems;
        auto doc = parse_config_file(dir / "c.toml", problems);
        scan = scan_plugins(plugins, LoaderPolicy::for_service_account(""));
        auto c = validate_config(*doc, scan.identities(), problems);
        for (const auto& p : problems)
            UNSCOPED_INFO(p.to_string());
        REQUIRE(c);
        config = std::make_shared<const Config>(*c);
        std::filesystem::create_directories(config->host.state_dir);
        log = std::make_unique<EventLog>(EventLogOptions{dir / "log", 1 << 20, 2, true, true, false});
        runtime = std::make_unique<PluginRuntime>(*log, config);
        for (const auto& lib : scan.libraries) {
            if (lib->identity.kind == CC_KIND_CA) continue;
            std::string error;
            auto gen = runtime->instantiate(lib, error);
            INFO(error);
            REQUIRE(gen);
            runtime->publish(gen);
        }
    }
    ~SchedulerFixture() {
        if (scheduler) scheduler->stop(seconds(0));
    }

    void start(JobSettings settings) {
        scheduler = std::make_unique<JobScheduler>(*runtime, *log, settings, config->host.state_dir);
        scheduler->start();
    }

    void submit(const std::string& id, const std::string& request_json) {
        StringSink sink;
        cc_sink s = sink.sink();
        cc_error err = certconn::sdk::detail::make_error();
        const std::string req = R"({"id":")" + id + R"(","feature":"echo","request":)" + request_json + "}";
        REQUIRE(runtime->tenant_call("fixture.submit", req.c_str(), &s, &err) == CC_OK);
    }

    /// The fixture tenant's counters: claims / completions per job id, renewals, overlap.
    json::object tenant() { return json::parse(runtime->health(*runtime->find(CC_KIND_TENANT, "fixture"))).as_object(); }
    std::int64_t count(const char* what, const std::string& id) {
        const auto t = tenant();
        const auto* v = t.at(what).as_object().if_contains(id);
        return v ? v->as_int64() : 0;
    }

    template <class Pred>
    bool eventually(milliseconds limit, Pred pred) {
        const auto deadline = steady_clock::now() + limit;
        while (steady_clock::now() < deadline) {
            if (pred()) return true;
            std::this_thread::sleep_for(milliseconds(20));
        }
        return pred();
    }

    std::string operational() {
        log->flush();
        return read_file(dir / "log" / "operational.jsonl");
    }
};

}  // namespace

TEST_CASE("a slow tenant acknowledgement stalls neither claims nor runs and each result is delivered once") {
    SchedulerFixture f("complete_delay_ms = 2000\n");
    JobSettings settings;
    settings.concurrency = 2;
    settings.poll_interval_ms = 50;
    settings.retry_initial_ms = 100;
    f.start(settings);
    f.submit("a", "{}");
    REQUIRE(f.eventually(seconds(5), [&] { return f.count("claims", "a") == 1; }));
    std::this_thread::sleep_for(milliseconds(300));  // a's result is stored; its delivery sleeps 2 s
    f.submit("b", "{}");
    f.submit("c", "{}");
    // Claimed and run while a's delivery is still in flight.
    CHECK(f.eventually(milliseconds(1000), [&] { return f.count("claims", "b") == 1 && f.count("claims", "c") == 1; }));
    CHECK(f.count("completions", "a") == 0);
    REQUIRE(f.eventually(seconds(15), [&] {
        return f.count("completions", "a") >= 1 && f.count("completions", "b") >= 1 && f.count("completions", "c") >= 1;
    }));
    std::this_thread::sleep_for(milliseconds(500));  // a second delivery, if any, would show now
    for (const char* id : {"a", "b", "c"}) {
        INFO(id);
        CHECK(f.count("completions", id) == 1);
        CHECK(f.count("claims", id) == 1);
    }
    CHECK(f.tenant().at("max_overlapping_completions").as_int64() == 1);  // one delivery at a time
    CHECK(f.scheduler->outbox_size() == 0);
}

TEST_CASE("a job retrying after a backoff longer than its lease renews the lease and runs to one result") {
    SchedulerFixture f("");
    JobSettings settings;
    settings.concurrency = 2;
    settings.poll_interval_ms = 50;
    settings.lease_seconds = 2;        // below the configurable minimum (10 s) to keep the test short
    settings.retry_initial_ms = 3000;  // 2.4 .. 3.6 s with jitter: longer than the lease
    settings.retry_max_ms = 3000;
    settings.max_attempts = 3;
    const auto started = steady_clock::now();
    f.start(settings);
    f.submit("r", R"({"kind":"transient_once"})");
    REQUIRE(f.eventually(seconds(10), [&] { return f.count("completions", "r") >= 1; }));
    std::this_thread::sleep_until(started + seconds(6));  // past a second run's result, if there were one
    CHECK(f.count("claims", "r") == 1);
    CHECK(f.count("completions", "r") == 1);
    CHECK(f.tenant().at("renewals").as_int64() >= 1);
}

TEST_CASE("a tenant that cannot renew leases: the host never waits past the lease but abandons the claim") {
    SchedulerFixture f("renew_lease = false\n");
    JobSettings settings;
    settings.concurrency = 2;
    settings.poll_interval_ms = 50;
    settings.lease_seconds = 2;
    settings.retry_initial_ms = 3000;
    settings.retry_max_ms = 3000;
    settings.max_attempts = 3;
    const auto started = steady_clock::now();
    f.start(settings);
    f.submit("r", R"({"kind":"transient_once"})");
    // Abandoned at once; the lease returns it after 2 s and the second claim succeeds.
    REQUIRE(f.eventually(seconds(10), [&] { return f.count("completions", "r") >= 1; }));
    std::this_thread::sleep_until(started + seconds(6));
    CHECK(f.count("claims", "r") == 2);
    CHECK(f.count("completions", "r") == 1);
    CHECK_THAT(f.operational(), Catch::Contains("\"name\":\"JobLeaseLost\""));
}

TEST_CASE("a job running longer than its lease has the lease renewed while it runs and ends with one result") {
    SchedulerFixture f("");
    JobSettings settings;
    settings.concurrency = 2;
    settings.poll_interval_ms = 50;
    settings.lease_seconds = 2;
    const auto started = steady_clock::now();
    f.start(settings);
    f.submit("long", R"({"sleep_ms":3500})");
    REQUIRE(f.eventually(seconds(10), [&] { return f.count("completions", "long") >= 1; }));
    std::this_thread::sleep_until(started + seconds(7));  // past a second run's result, if there were one
    CHECK(f.count("claims", "long") == 1);
    CHECK(f.count("completions", "long") == 1);
    CHECK(f.tenant().at("renewals").as_int64() >= 1);
}
