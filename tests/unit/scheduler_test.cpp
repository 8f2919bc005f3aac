// The job scheduler against the fixture tenant (an in-memory job source with leases) and the
// echo feature: one delivery thread, claims that go on while a slow tenant takes a result, and
// leases kept across retry waits.
#include "jobs/JobScheduler.hpp"
#include "support/TestFiles.hpp"

#include <certconn/sdk.hpp>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <cstdlib>
#include <functional>
#include <random>
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
    std::unique_ptr<OutboxStore> outbox;
    std::unique_ptr<JobScheduler> scheduler;

    /// `tenants`: the whole tenant configuration when `raw`, else settings of the one [tenant].
    /// `make_outbox`: the outbox to use (default: <state_dir>/outbox.db).
    explicit SchedulerFixture(const std::string& tenant_settings, bool raw = false,
                              std::function<std::unique_ptr<OutboxStore>(const Config&)> make_outbox = {}) {
        std::filesystem::create_directory(plugins);
        ::chmod(plugins.c_str(), 0755);
        for (const char* good : {"fixture-echo", "fixture-ca", "fixture-tenant", "fixture-tenant2"})
            install_fixture(plugins, "good", good);
        write_file(dir / "c.toml",
                   "[host]\nplugin_dir = \"plugins\"\nstate_dir = \"state\"\nlog_dir = \"log\"\n"
                   "[ca.test]\nplugin = \"fixture\"\nlabel = \"first\"\n" +
                       (raw ? tenant_settings : "[tenant]\nplugin = \"fixture\"\n" + tenant_settings));
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
        outbox = make_outbox ? make_outbox(*config) : std::make_unique<OutboxStore>(config->host.state_dir / "outbox.db");
        runtime->set_notification_sink([this](const PluginRuntime::Notification& n) {
            if (outbox->notify(n.tenant, n.key, n.plugin, n.operation, n.body, n.events) && scheduler)
                scheduler->wake_delivery(n.tenant);
        });
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
        scheduler = std::make_unique<JobScheduler>(*runtime, *log, settings, *outbox);
        scheduler->start();
    }

    /// A notification handed over as a feature would (tenant_notify), to tenant `tenant`.
    int notify(const std::string& tenant, const std::string& key, const std::string& body, uint32_t delivered = 4008,
               uint32_t retry = 4009, uint32_t refused = 4002) {
        const cc_tenant_notification n{sizeof(cc_tenant_notification),
                                       tenant.c_str(),
                                       "fixture.note",
                                       key.c_str(),
                                       body.c_str(),
                                       key.c_str(),
                                       delivered,
                                       retry,
                                       refused,
                                       0,
                                       ""};
        PluginContext& ctx = *runtime->find(CC_KIND_FEATURE, "echo")->context;
        cc_error err = certconn::sdk::detail::make_error();
        return runtime->tenant_notify(ctx, &n, &err);
    }

    void submit(const std::string& id, const std::string& request_json) {
        StringSink sink;
        cc_sink s = sink.sink();
        cc_error err = certconn::sdk::detail::make_error();
        const std::string req = R"({"id":")" + id + R"(","feature":"echo","request":)" + request_json + "}";
        REQUIRE(runtime->tenant_call(nullptr, "fixture.submit", req.c_str(), &s, &err) == CC_OK);
    }

    /// The fixture tenant's counters: claims / completions per job id, renewals, overlap.
    json::object tenant(const char* plugin = "fixture") {
        return json::parse(runtime->health(*runtime->find(CC_KIND_TENANT, plugin))).as_object();
    }
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
    std::string admin() {
        log->flush();
        return read_file(dir / "log" / "admin.jsonl");
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

TEST_CASE("notifications: stored before delivery, delivered in order, Retry-After honoured, a refusal kept aside") {
    SchedulerFixture f("note_failures = 2\n");
    JobSettings settings;
    settings.poll_interval_ms = 50;
    settings.retry_initial_ms = 50;  // below the tenant's Retry-After of 1 s: the host must wait longer
    // Stored while no delivery thread runs yet (a feature's init hands over notifications).
    REQUIRE(f.notify("", "n1", R"({"n":"first"})") == CC_OK);
    REQUIRE(f.notify("", "n1", R"({"n":"first-again"})") == CC_OK);  // the same key: stored once
    REQUIRE(f.notify("", "n2", R"({"n":"second","refuse":true})") == CC_OK);
    REQUIRE(f.notify("", "n3", R"({"n":"third"})") == CC_OK);
    CHECK(f.notify("nosuch", "n4", R"({"n":"x"})") == CC_ERR_NOT_FOUND);  // not stored: the caller hears it
    CHECK(f.notify("", "n5", "not json") == CC_ERR_INVALID_ARGUMENT);
    CHECK(f.outbox->size() == 3);
    const auto started = steady_clock::now();
    f.start(settings);
    REQUIRE(f.eventually(seconds(10), [&] { return f.tenant().at("notes").as_array().size() == 2; }));
    const auto took = steady_clock::now() - started;
    const auto notes = f.tenant().at("notes").as_array();
    CHECK(notes[0].as_string() == "first");  // in the order stored; the refused one skipped
    CHECK(notes[1].as_string() == "third");
    // Two BUSY answers asked for 1 s each: the first note waited at least ~2 s (jitter aside),
    // and "third" never overtook it.
    CHECK(took >= milliseconds(1900));
    CHECK(f.outbox->size() == 0);  // pending ones; the refused one is kept aside
    const auto state = f.scheduler->outbox_state("default");
    CHECK(state.at("refused").as_int64() == 1);
    const std::string events = f.operational();
    CHECK_THAT(events, Catch::Contains("\"name\":\"ScepNotifyAttemptFailed\""));    // the feature's retry event
    CHECK_THAT(events, Catch::Contains("\"name\":\"ScepNotifySuccess\""));          // delivered
    CHECK_THAT(f.admin(), Catch::Contains("\"name\":\"TenantOutboxDeadLetter\""));  // refused for good
    // `certconnector outbox retry`: what was refused is tried again (and this tenant refuses it again).
    const auto calls = f.tenant().at("note_calls").as_int64();
    CHECK(f.outbox->retry_refused("") == 1);
    f.scheduler->wake_delivery("default");
    CHECK(f.eventually(seconds(5), [&] { return f.tenant().at("note_calls").as_int64() == calls + 1; }));
    CHECK(f.eventually(seconds(5), [&] { return f.scheduler->outbox_state("default").at("refused").as_int64() == 1; }));
}

TEST_CASE("two tenants: each job's result goes back to the tenant it came from; a slow tenant holds up only itself") {
    SchedulerFixture f(
        "[tenant.slow]\nplugin = \"fixture\"\ncomplete_delay_ms = 3000\n"
        "[tenant.fast]\nplugin = \"fixture2\"\n",
        true);
    JobSettings settings;
    settings.concurrency = 2;
    settings.poll_interval_ms = 50;
    f.start(settings);
    auto submit_to = [&](const char* tenant, const std::string& id) {
        StringSink sink;
        cc_sink s = sink.sink();
        cc_error err = certconn::sdk::detail::make_error();
        const std::string req = R"({"id":")" + id + R"(","feature":"echo","request":{}})";
        REQUIRE(f.runtime->tenant_call(tenant, "fixture.submit", req.c_str(), &s, &err) == CC_OK);
    };
    submit_to("slow", "s1");
    submit_to("fast", "f1");
    auto completions = [&](const char* plugin, const char* id) {
        const auto* v = f.tenant(plugin).at("completions").as_object().if_contains(id);
        return v ? v->as_int64() : 0;
    };
    // The fast tenant's result arrives while the slow tenant still sits in complete_job.
    REQUIRE(f.eventually(seconds(2), [&] { return completions("fixture2", "f1") == 1; }));
    CHECK(completions("fixture", "s1") == 0);
    REQUIRE(f.eventually(seconds(10), [&] { return completions("fixture", "s1") == 1; }));
    // Nothing crossed over: each tenant saw only its own job.
    CHECK_FALSE(f.tenant("fixture").at("completions").as_object().contains("f1"));
    CHECK_FALSE(f.tenant("fixture2").at("completions").as_object().contains("s1"));
    // No default among two: an unnamed call is refused with a clear message.
    StringSink sink;
    cc_sink s = sink.sink();
    cc_error err = certconn::sdk::detail::make_error();
    CHECK(f.runtime->tenant_call(nullptr, "fixture.note", R"({"n":"x"})", &s, &err) == CC_ERR_NOT_FOUND);
    CHECK(std::string(err.message).find("none is named 'default'") != std::string::npos);
}

TEST_CASE("a result whose claim was fenced off (the job was claimed again) is parked as refused with event 822, not retried") {
    SchedulerFixture f("complete_delay_ms = 800\n");
    JobSettings settings;
    settings.concurrency = 2;
    settings.poll_interval_ms = 50;
    settings.retry_initial_ms = 50;
    settings.retry_max_ms = 100;
    f.start(settings);
    f.submit("kept", "{}");  // not stolen: its claim still holds, so its result is taken
    f.submit("fenced", "{}");
    REQUIRE(f.eventually(seconds(5), [&] { return f.count("claims", "fenced") == 1; }));
    // Another instance claims the job again while this one runs it (claim 2).
    StringSink sink;
    cc_sink s = sink.sink();
    cc_error err = certconn::sdk::detail::make_error();
    REQUIRE(f.runtime->tenant_call(nullptr, "fixture.steal", R"({"id":"fenced"})", &s, &err) == CC_OK);
    REQUIRE(f.eventually(seconds(10), [&] { return f.count("complete_calls", "fenced") == 1; }));
    REQUIRE(f.eventually(seconds(10), [&] { return f.count("completions", "kept") == 1; }));
    REQUIRE(f.eventually(seconds(5), [&] { return f.scheduler->outbox_state("default").at("refused").as_int64() == 1; }));
    // Retries would come every 50-100 ms: none does.
    std::this_thread::sleep_for(milliseconds(1500));
    CHECK(f.count("complete_calls", "fenced") == 1);
    CHECK(f.count("completions", "fenced") == 0);
    CHECK(f.count("complete_calls", "kept") == 1);
    const auto state = f.scheduler->outbox_state("default");
    CHECK(state.at("refused").as_int64() == 1);
    CHECK(state.at("pending").as_int64() == 0);
    const std::string events = f.operational() + f.admin();
    CHECK_THAT(events, Catch::Contains("\"id\":822") &&
                           Catch::Contains("job fenced: result fenced off: job fenced: claim 1 was fenced off"));
    CHECK_THAT(events, !Catch::Contains("\"name\":\"JobResultDeliveryFailed\""));
}

TEST_CASE("a run that outlives its lease after the job was claimed again drops its result with event 822 and reports nothing") {
    SchedulerFixture f("");
    JobSettings settings;
    settings.concurrency = 1;
    settings.poll_interval_ms = 50;
    settings.lease_seconds = 2;
    f.start(settings);
    f.submit("late", R"({"sleep_ms":3000})");
    REQUIRE(f.eventually(seconds(5), [&] { return f.count("claims", "late") == 1; }));
    // Another instance claims it again while this one runs it, as if this one had been paused.
    StringSink sink;
    cc_sink s = sink.sink();
    cc_error err = certconn::sdk::detail::make_error();
    REQUIRE(f.runtime->tenant_call(nullptr, "fixture.steal", R"({"id":"late"})", &s, &err) == CC_OK);
    REQUIRE(f.eventually(seconds(10), [&] { return f.operational().find("\"id\":822") != std::string::npos; }));
    std::this_thread::sleep_for(milliseconds(500));
    CHECK(f.count("complete_calls", "late") == 0);  // never offered to the tenant
    CHECK(f.outbox->size() == 0);                   // nor kept: the other claim's run reports
    CHECK_THAT(f.operational(), Catch::Contains("job late: claim 1 finished after its lease"));
}

TEST_CASE(
    "a fleet on PostgreSQL: only the outbox lease holder delivers; when it stops renewing, another instance delivers "
    "its entries in order",
    "[postgresql]") {
    const char* url = std::getenv("CERTCONN_TEST_PG_URL");
    if (!url) {
        WARN("CERTCONN_TEST_PG_URL not set: skipped (ctest runs it under 'store: ...')");
        return;
    }
    std::random_device rd;
    certconn::sql::Options store;
    store.url = url;
    store.schema = "sched_" + std::to_string(rd() % 1000000000);
    auto on = [&](const char* id) { return [&, id](const Config&) { return std::make_unique<OutboxStore>(store, id); }; };
    // Instance a: its notifications are stored, it holds the delivery lease, then it dies (its
    // scheduler never runs: nothing renews the lease).
    SchedulerFixture a("", false, on("instance-a"));
    REQUIRE(a.outbox->lead("default", seconds(3)));
    for (const char* n : {"n1", "n2", "n3"})
        REQUIRE(a.notify("default", n, std::string(R"({"n":")") + n + "\"}") == CC_OK);
    // Instance b runs: it stores too, but must not deliver while a's lease lives.
    SchedulerFixture b("", false, on("instance-b"));
    JobSettings settings;
    settings.poll_interval_ms = 50;
    settings.retry_initial_ms = 50;
    b.start(settings);
    REQUIRE(b.notify("default", "n4", R"({"n":"n4"})") == CC_OK);
    std::this_thread::sleep_for(milliseconds(1500));
    CHECK(b.tenant().at("notes").as_array().empty());
    CHECK(a.outbox->leader("default")->holder == "instance-a");
    // a's lease lapses (3 s): b delivers a's entries and its own, in the order stored.
    REQUIRE(b.eventually(seconds(10), [&] { return b.tenant().at("notes").as_array().size() == 4; }));
    CHECK(b.tenant().at("notes").as_array() == json::array{"n1", "n2", "n3", "n4"});
    CHECK(a.outbox->leader("default")->holder == "instance-b");
    CHECK(b.eventually(seconds(5), [&] { return a.outbox->size() == 0; }));  // removed after the tenant answers
    CHECK_THAT(b.operational() + b.admin(), Catch::Contains("\"id\":820") && Catch::Contains("lease outbox:default"));
    // A clean stop gives the lease up at once.
    b.scheduler->stop(seconds(1));
    CHECK(a.outbox->lead("default", seconds(3)));
}
