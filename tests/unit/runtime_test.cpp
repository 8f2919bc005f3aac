// Initialised plugins: routing by CA name, tenant calls, failing init, hot swap.
#include "plugins/PluginRuntime.hpp"
#include "support/TestFiles.hpp"

#include <certconn/sdk.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <catch2/catch.hpp>

#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <future>
#include <thread>

using namespace certconn::host;
using namespace certconn::test;

namespace {

struct Fixture {
    TempDir dir;
    std::filesystem::path plugins = dir / "plugins";
    PluginScan scan;
    std::shared_ptr<const Config> config;
    std::unique_ptr<EventLog> log;
    std::unique_ptr<PluginRuntime> runtime;

    explicit Fixture(const std::string& extra_toml = "") {
        std::filesystem::create_directory(plugins);
        ::chmod(plugins.c_str(), 0755);
        for (const char* good : {"fixture-echo", "fixture-ca", "fixture-tenant", "fixture-reentrant"})
            install_fixture(plugins, "good", good);
        install_fixture(plugins, "broken", "broken-init-throws");
        install_fixture(plugins, "broken", "broken-init-fails");
        write_file(dir / "c.toml",
                   "[host]\nplugin_dir = \"plugins\"\nstate_dir = \"state\"\nlog_dir = \"log\"\n"
                   "[ca.test]\nplugin = \"fixture\"\nlabel = \"first\"\n"
                   "[ca.second]\nplugin = \"fixture\"\nlabel = \"other\"\n"
                   "[ca.down]\nplugin = \"fixture\"\nlabel = \"x\"\nfail_open = true\n"
                   "[tenant]\nplugin = \"fixture\"\n" +
                       extra_toml);
        std::vector<ConfigProblem> problems;
        auto doc = parse_config_file(dir / "c.toml", problems);
        scan = scan_plugins(plugins, LoaderPolicy::for_service_account(""));
        auto c = validate_config(*doc, scan.identities(), problems);
        for (const auto& p : problems)
            UNSCOPED_INFO(p.to_string());
        REQUIRE(c);
        config = std::make_shared<const Config>(*c);
        log = std::make_unique<EventLog>(EventLogOptions{dir / "log", 1 << 20, 2, true, true, false});
        runtime = std::make_unique<PluginRuntime>(*log, config);
    }

    std::shared_ptr<PluginLibrary> library(cc_plugin_kind kind, const std::string& name) {
        for (const auto& lib : scan.libraries)
            if (lib->identity.kind == kind && lib->identity.name == name) return lib;
        FAIL("no library " << name);
        return nullptr;
    }

    std::shared_ptr<const Generation> start(cc_plugin_kind kind, const std::string& name) {
        std::string error;
        auto gen = runtime->instantiate(library(kind, name), error);
        INFO(error);
        REQUIRE(gen);
        runtime->publish(gen);
        return gen;
    }

    std::string operational() {
        log->flush();
        return read_file(dir / "log" / "operational.jsonl");
    }
};

std::pair<int, std::string> call(int (*fn)(PluginRuntime&, cc_sink*, cc_error*), PluginRuntime& rt) {
    StringSink sink;
    cc_sink s = sink.sink();
    cc_error err = certconn::sdk::detail::make_error();
    const int rc = fn(rt, &s, &err);
    return {rc, rc == CC_OK ? sink.data : std::string(err.message)};
}

long thread_id() {
    return ::syscall(SYS_gettid);
}

/// Runs `fn` on a thread of its own and waits for it up to `limit`. A deadlock cannot be
/// undone (the stuck thread cannot be cancelled), so it ends the test run with a message
/// instead of hanging it.
template <class Fn>
void within(std::chrono::seconds limit, const char* what, Fn fn) {
    auto done = std::make_shared<std::promise<void>>();
    auto finished = done->get_future();
    std::thread([done, fn]() mutable {
        fn();
        done->set_value();
    }).detach();
    if (finished.wait_for(limit) != std::future_status::ready) {
        std::fprintf(stderr, "DEADLOCK: %s did not finish within %lld s\n", what, static_cast<long long>(limit.count()));
        std::fflush(stderr);
        std::_Exit(70);
    }
}

/// What the "reentrant" fixture wrote when its destroy ran, once it exists (bounded wait).
std::string wait_for_destroy(const std::filesystem::path& state) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!std::filesystem::exists(state / "destroyed") && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the fixture writes, then returns
    return std::filesystem::exists(state / "destroyed") ? read_file(state / "destroyed") : std::string();
}

}  // namespace

TEST_CASE("CA requests are routed by configured name to the plugin behind it") {
    Fixture f;
    f.start(CC_KIND_CA, "fixture");
    auto [rc, out] = call([](PluginRuntime& rt, cc_sink* s,
                             cc_error* e) { return rt.ca_call(CaOperation::issue, "second", R"({"csr":"x"})", s, e); },
                          *f.runtime);
    REQUIRE(rc == CC_OK);
    const auto answer = boost::json::parse(out).as_object();
    CHECK(answer.at("ca").as_string() == "second");
    CHECK(answer.at("label").as_string() == "other");
    CHECK(answer.at("request").at("csr").as_string() == "x");

    auto [rc2, msg2] =
        call([](PluginRuntime& rt, cc_sink* s, cc_error* e) { return rt.ca_call(CaOperation::issue, "nope", "{}", s, e); },
             *f.runtime);
    CHECK(rc2 == CC_ERR_NOT_FOUND);
    CHECK(msg2 == "no CA named 'nope' is configured (configured: down, second, test)");

    auto [rc3, msg3] =
        call([](PluginRuntime& rt, cc_sink* s, cc_error* e) { return rt.ca_call(CaOperation::issue, "down", "{}", s, e); },
             *f.runtime);
    CHECK(rc3 == CC_ERR_UNAVAILABLE);
    CHECK(msg3 == "CA 'down' is not open: fixture CA 'down' configured to fail");
    CHECK_THAT(f.operational(), Catch::Contains("\"name\":\"CaOpenFailed\""));

    auto [rc4, msg4] =
        call([](PluginRuntime& rt, cc_sink* s, cc_error* e) { return rt.ca_call(CaOperation::revoke, "test", "{}", s, e); },
             *f.runtime);
    CHECK(rc4 == CC_ERR_NOT_FOUND);
    CHECK(msg4 == "fixture CA knows no certificates");

    // A CA plugin that answers no queries (the SDK's default) says so.
    auto [rc5, msg5] = call([](PluginRuntime& rt, cc_sink* s,
                               cc_error* e) { return rt.ca_call(CaOperation::query, "test", R"({"op":"crl"})", s, e); },
                            *f.runtime);
    CHECK(rc5 == CC_ERR_NOT_SUPPORTED);
}

TEST_CASE("tenant calls reach the configured tenant plugin") {
    Fixture f;
    auto [rc0, msg0] =
        call([](PluginRuntime& rt, cc_sink* s, cc_error* e) { return rt.tenant_call(nullptr, "scep.validate", "{}", s, e); }, *f.runtime);
    CHECK(rc0 == CC_ERR_UNAVAILABLE);
    CHECK(msg0 == "tenant 'default': its plugin 'fixture' is not loaded");
    f.start(CC_KIND_TENANT, "fixture");
    auto [rc, out] =
        call([](PluginRuntime& rt, cc_sink* s, cc_error* e) { return rt.tenant_call(nullptr, "heartbeat", "{}", s, e); }, *f.runtime);
    CHECK(rc == CC_OK);
    CHECK(out == R"({"operation":"heartbeat"})");
}

TEST_CASE("an init that throws or fails is an event with the plugin's own message") {
    Fixture f;
    std::string error;
    CHECK_FALSE(f.runtime->instantiate(f.library(CC_KIND_FEATURE, "throws"), error));
    CHECK_THAT(error, Catch::Contains("broken-init-throws.so): init failed (status 9): fixture: database is locked"));
    CHECK_FALSE(f.runtime->instantiate(f.library(CC_KIND_FEATURE, "init-fails"), error));
    CHECK_THAT(error, Catch::Contains("init failed (status 6): fixture backend refused the connection"));
    CHECK_THAT(f.operational(), Catch::Contains("\"name\":\"PluginInitFailed\""));
}

TEST_CASE("feature jobs cross the ABI - exceptions come back as statuses") {
    Fixture f;
    auto gen = f.start(CC_KIND_FEATURE, "echo");
    StringSink sink;
    cc_sink s = sink.sink();
    cc_error err = certconn::sdk::detail::make_error();
    CHECK(gen->api.feature->run_job(gen->api.instance, R"({"id":"1"})", &s, &err) == CC_OK);
    CHECK(sink.data == R"({"id":"1"})");
    const int rc = gen->api.feature->run_job(gen->api.instance, R"({"kind":"transient"})", &s, &err);
    CHECK(rc == CC_ERR_UNAVAILABLE);
    CHECK(CC_STATUS_IS_RETRYABLE(rc));
    CHECK(std::string(err.message) == "fixture: transient failure");
    CHECK(f.runtime->health(*gen) == R"({"healthy":true,"detail":"echo ready"})");
    auto route = f.runtime->match_route("GET", "/fixture/echo");
    REQUIRE(route);
    CHECK(route->owner == gen);
    CHECK_FALSE(f.runtime->match_route("POST", "/fixture/echo"));
}

TEST_CASE("hot swap: calls in flight finish on the old generation, which is released after them") {
    Fixture f;
    auto old_gen = f.start(CC_KIND_FEATURE, "echo");
    std::weak_ptr<const Generation> watch = old_gen;
    auto new_gen = f.start(CC_KIND_FEATURE, "echo");  // publish replaces
    CHECK(f.runtime->find(CC_KIND_FEATURE, "echo") == new_gen);
    CHECK(f.runtime->match_route("GET", "/fixture/echo")->owner == new_gen);
    CHECK(f.operational().find("PluginUnloaded") == std::string::npos);  // still held by "a request"

    StringSink sink;
    cc_sink s = sink.sink();
    cc_error err = certconn::sdk::detail::make_error();
    CHECK(old_gen->api.feature->run_job(old_gen->api.instance, "{}", &s, &err) == CC_OK);  // old still works
    old_gen.reset();
    CHECK(watch.expired());
    f.runtime->wait_released();  // destroyed on the reaper thread
    CHECK_THAT(f.operational(), Catch::Contains("\"name\":\"PluginUnloaded\""));

    f.runtime->retire(CC_KIND_FEATURE, "echo");
    CHECK_FALSE(f.runtime->find(CC_KIND_FEATURE, "echo"));
    CHECK_FALSE(f.runtime->match_route("GET", "/fixture/echo"));
    CHECK(new_gen->api.feature->run_job(new_gen->api.instance, "{}", &s, &err) == CC_OK);  // held: still alive
}

TEST_CASE("plugins get their own configuration section and a private state directory") {
    Fixture f;
    auto gen = f.start(CC_KIND_FEATURE, "echo");
    CHECK(gen->context->config_json == "{}");
    const auto state = std::filesystem::path(gen->context->state_dir);
    CHECK(state == f.dir / "state" / "plugins" / "feature-echo");
    CHECK((std::filesystem::status(state).permissions() & std::filesystem::perms::all) == std::filesystem::perms::owner_all);
    Fixture g("[echo]\ngreeting = \"hi\"\ntoken = \"abc\"\n");
    auto gen2 = g.start(CC_KIND_FEATURE, "echo");
    CHECK(gen2->context->config_json == R"({"greeting":"hi","token":"abc"})");
}

TEST_CASE("the last release of a generation destroys it on the reaper thread and not on the releasing request thread") {
    Fixture f;
    f.start(CC_KIND_TENANT, "fixture");
    auto gen = f.start(CC_KIND_FEATURE, "reentrant");
    const std::filesystem::path state = gen->context->state_dir;
    f.runtime->retire(CC_KIND_FEATURE, "reentrant");  // a hot swap: only "the request" holds it now
    long request_thread = 0;
    // The request thread lets go; the plugin's destroy calls tenant_call (which takes the
    // runtime's lock) from a thread it starts and waits for.
    within(std::chrono::seconds(10), "releasing the last reference on a request thread", [&] {
        request_thread = thread_id();
        gen.reset();
    });
    const std::string destroyed = wait_for_destroy(state);
    REQUIRE_FALSE(destroyed.empty());
    CHECK_THAT(destroyed, Catch::Contains("answer={\"operation\":\"heartbeat\"}"));
    CHECK_THAT(destroyed, !Catch::Contains("tid=" + std::to_string(request_thread) + "\n"));
    CHECK_THAT(destroyed, !Catch::Contains("tid=" + std::to_string(thread_id()) + "\n"));
    CHECK_THAT(f.operational(), Catch::Contains("destroy called the host from its own thread"));
}

TEST_CASE("destroying the runtime destroys its generations outside its lock: a destroy calling the host does not deadlock") {
    Fixture f;
    f.start(CC_KIND_TENANT, "fixture");
    std::filesystem::path state;
    {
        auto gen = f.start(CC_KIND_FEATURE, "reentrant");
        state = gen->context->state_dir;
    }  // held by the runtime only
    within(std::chrono::seconds(10), "destroying the runtime", [&] { f.runtime.reset(); });
    const std::string destroyed = wait_for_destroy(state);
    CHECK_THAT(destroyed, Catch::Contains("answer="));
}

TEST_CASE("reload: the new configuration is published with the generations built from it and an old generation keeps its own") {
    Fixture f("[echo]\ngreeting = \"old\"\n");
    f.start(CC_KIND_CA, "fixture");
    auto old_echo = f.start(CC_KIND_FEATURE, "echo");  // held by "a request in flight" throughout
    auto issue_label = [&] {
        auto [rc, out] =
            call([](PluginRuntime& rt, cc_sink* s, cc_error* e) { return rt.ca_call(CaOperation::issue, "test", "{}", s, e); },
                 *f.runtime);
        REQUIRE(rc == CC_OK);
        return std::string(boost::json::parse(out).at("label").as_string());
    };
    auto own_section = [](const Generation& gen) {
        StringSink sink;
        cc_sink s = sink.sink();
        cc_error err = certconn::sdk::detail::make_error();
        REQUIRE(gen.context->services.config_json(gen.context->services.host_ctx, &s, &err) == CC_OK);
        return sink.data;
    };
    CHECK(own_section(*old_echo) == R"({"greeting":"old"})");
    CHECK(issue_label() == "first");

    auto changed = std::make_shared<Config>(*f.config);
    changed->feature_sections["echo"]["greeting"] = "new";
    changed->cas.at("test").settings["label"] = "changed";
    const std::shared_ptr<const Config> next = changed;
    std::string error;
    auto new_echo = f.runtime->instantiate(f.library(CC_KIND_FEATURE, "echo"), error, next);
    auto new_ca = f.runtime->instantiate(f.library(CC_KIND_CA, "fixture"), error, next);
    REQUIRE(new_echo);
    REQUIRE(new_ca);
    // Built but not published: everything still routes by the old configuration.
    CHECK(f.runtime->config() == f.config);
    CHECK(issue_label() == "first");
    CHECK(f.runtime->find(CC_KIND_FEATURE, "echo") == old_echo);

    f.runtime->commit(next, {new_echo, new_ca}, {});
    CHECK(f.runtime->config() == next);
    CHECK(f.runtime->find(CC_KIND_FEATURE, "echo") == new_echo);
    CHECK(issue_label() == "changed");
    CHECK(own_section(*new_echo) == R"({"greeting":"new"})");
    // The old generation, still in use, reads the section it was built from, through the
    // host service and in its context, and remembers the configuration it came from.
    CHECK(own_section(*old_echo) == R"({"greeting":"old"})");
    CHECK(old_echo->context->config_json == R"({"greeting":"old"})");
    CHECK(old_echo->config == f.config);
    CHECK(new_echo->config == next);
}
