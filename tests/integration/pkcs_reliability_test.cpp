// The main job under failure: a CA outage (retries, then a failed result, events, nothing
// lost) and kill -9 in the middle of 200 jobs (each job ends with exactly one result and no
// certificate is issued twice for one job). Real plugins from the build tree.
#include "support/Daemon.hpp"

#include <certconn/sqlite.hpp>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

using namespace certconn::test;
namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

struct PkcsInstallation {
    TempDir dir;
    fs::path config = dir / "c.toml";
    fs::path plugins = dir / "plugins";
    fs::path device_key = dir / "device.pub";

    explicit PkcsInstallation(const std::string& extra) {
        install_plugins(plugins, {"ca-local", "tenant-local", "pkcs"});
        install_fixture(plugins, "good", "fixture-ca");
        REQUIRE(
            run_shell("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 2>/dev/null | openssl pkey -pubout -out " +
                      device_key.string())
                .exit_code == 0);
        write_file(config,
                   "[host]\nlisten = \"127.0.0.1:0\"\nplugin_dir = \"plugins\"\nstate_dir = \"state\"\nlog_dir = \"log\"\n" +
                       test_token_config() +
                       "[tenant]\nplugin = \"local\"\n[ca.local]\nplugin = \"local\"\nalgorithm = \"p256\"\n" + extra);
    }

    std::uint16_t start(Daemon& daemon) const {
        json::object status = wait_for_status(daemon, config);
        INFO(daemon.output());
        REQUIRE_FALSE(status.empty());
        return static_cast<std::uint16_t>(status.at("port").as_int64());
    }

    std::string submit(const std::string& id) const {
        auto r = run_cli({"submit", "pkcs", "--config", config.string(), "--subject", "CN=" + id, "--key-type", "p256",
                          "--device-key", device_key.string(), "--id", id});
        INFO(r.output);
        REQUIRE(r.exit_code == 0);
        return id;
    }

    json::object job(const std::string& id) const {
        auto r = run_cli({"job", "show", id, "--config", config.string()});
        REQUIRE(r.exit_code == 0);
        return json::parse(r.output).as_object();
    }

    std::string admin_log() const { return read_file(dir / "log" / "admin.jsonl"); }
    std::string operational_log() const { return read_file(dir / "log" / "operational.jsonl"); }
};

std::size_t count_events(const std::string& log, int id, const std::string& request_id) {
    std::size_t n = 0;
    std::istringstream in(log);
    for (std::string line; std::getline(in, line);)
        if (line.find("\"id\":" + std::to_string(id) + ",") != std::string::npos &&
            line.find("\"request_id\":\"" + request_id + "\"") != std::string::npos)
            ++n;
    return n;
}

}  // namespace

TEST_CASE("a CA outage: jobs retry with events, then fail after max_attempts or succeed once the CA is back") {
    PkcsInstallation inst(
        "[ca.flaky]\nplugin = \"fixture\"\nlabel = \"flaky\"\nforward_to = \"local\"\nunavailable_while = \"" +
        (fs::temp_directory_path() / "unused").string() +
        "\"\n"
        "[jobs]\nmax_attempts = 3\nretry_initial_ms = 100\nretry_max_ms = 300\n[pkcs]\ndefault_ca = \"flaky\"\n");
    const fs::path marker = inst.dir / "ca-down";
    std::string text = read_file(inst.config);
    text.replace(text.find((fs::temp_directory_path() / "unused").string()),
                 (fs::temp_directory_path() / "unused").string().size(), marker.string());
    write_file(inst.config, text);
    write_file(marker, "down");

    Daemon daemon(inst.config, inst.dir / "daemon.out");
    inst.start(daemon);

    const std::string doomed = inst.submit("outage-1");
    REQUIRE(eventually([&] { return inst.job(doomed).at("status").as_string() == "failed"; }, std::chrono::seconds(30)));
    const auto failed = inst.job(doomed);
    CHECK(failed.at("result").at("status").as_string() == "failed");
    CHECK(failed.at("result").at("error").at("code").as_string() == "unavailable");
    CHECK_THAT(std::string(failed.at("result").at("error").at("message").as_string()), Catch::Contains("connection refused"));
    CHECK(count_events(inst.operational_log(), 1051, doomed) == 2);  // attempts 1 and 2 will retry
    CHECK(count_events(inst.operational_log(), 1052, doomed) == 1);  // attempt 3 is final
    CHECK(count_events(inst.admin_log(), 1001, doomed) == 1);

    const std::string recovering = inst.submit("outage-2");
    REQUIRE(eventually([&] { return count_events(inst.operational_log(), 1051, recovering) >= 1; }, std::chrono::seconds(30)));
    fs::remove(marker);  // the CA comes back
    REQUIRE(eventually([&] { return inst.job(recovering).at("status").as_string() == "succeeded"; }, std::chrono::seconds(30)));
    CHECK(count_events(inst.admin_log(), 1000, recovering) == 1);
    CHECK(count_events(inst.operational_log(), 1102, recovering) == 1);

    auto status = json::parse(run_cli({"status", "--config", inst.config.string(), "--json"}).output);
    CHECK(status.at("jobs").at("outbox").as_int64() == 0);  // every result reached the tenant
    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
}

TEST_CASE(
    "a CA holding requests for approval: the job frees its worker, is asked again when its lease returns it, "
    "and ends issued or denied with the CA's message") {
    PkcsInstallation inst(
        "[ca.approving]\nplugin = \"fixture\"\nlabel = \"approving\"\nforward_to = \"local\"\n"
        "pending_while = \"PENDING_MARKER\"\ndenied_while = \"DENIED_MARKER\"\n"
        "[jobs]\nlease_seconds = 10\nconcurrency = 1\n[pkcs]\ndefault_ca = \"approving\"\n");
    const fs::path pending = inst.dir / "pending", denied = inst.dir / "denied";
    std::string text = read_file(inst.config);
    text.replace(text.find("PENDING_MARKER"), 14, pending.string());
    text.replace(text.find("DENIED_MARKER"), 13, denied.string());
    write_file(inst.config, text);
    write_file(pending, "held");

    Daemon daemon(inst.config, inst.dir / "daemon.out");
    inst.start(daemon);
    const std::string held = inst.submit("approval-1");
    REQUIRE(eventually([&] { return count_events(inst.operational_log(), 310, held) >= 1; }, std::chrono::seconds(20)));
    CHECK_THAT(inst.operational_log(), Catch::Contains("waits for approval at its CA"));
    // Its worker is free: with concurrency 1, a job for another CA runs while this one waits.
    auto other = run_cli({"submit", "pkcs", "--config", inst.config.string(), "--subject", "CN=other", "--key-type", "p256",
                          "--device-key", inst.device_key.string(), "--ca", "local", "--id", "other-ca", "--wait"});
    INFO(other.output);
    CHECK(other.exit_code == 0);
    CHECK(inst.job(held).at("status").as_string() != "failed");  // pending is not a failure
    CHECK(count_events(inst.operational_log(), 1052, held) == 0);

    fs::remove(pending);  // the CA manager approves: the next run (lease returns it) gets the certificate
    REQUIRE(eventually([&] { return inst.job(held).at("status").as_string() == "succeeded"; }, std::chrono::seconds(40)));
    CHECK(count_events(inst.operational_log(), 1050, held) == 1);

    write_file(pending, "held");
    const std::string refused = inst.submit("approval-2");
    REQUIRE(eventually([&] { return count_events(inst.operational_log(), 310, refused) >= 1; }, std::chrono::seconds(20)));
    write_file(denied, "no");  // the CA manager denies it
    REQUIRE(eventually([&] { return inst.job(refused).at("status").as_string() == "failed"; }, std::chrono::seconds(40)));
    const auto failed = inst.job(refused);
    CHECK(failed.at("result").at("error").at("code").as_string() == "denied");
    CHECK_THAT(std::string(failed.at("result").at("error").at("message").as_string()),
               Catch::Contains("the manager denied request approval-2"));
    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
}

TEST_CASE("kill -9 in the middle of 200 jobs: every job ends with exactly one result, no certificate issued twice") {
    PkcsInstallation inst("[jobs]\nconcurrency = 4\nlease_seconds = 10\n[pkcs]\ndefault_ca = \"local\"\n");
    const fs::path jobs_db = inst.dir / "state" / "plugins" / "tenant-local" / "jobs.db";
    const fs::path issued_db = inst.dir / "state" / "plugins" / "ca-local" / "local" / "issued.db";
    const std::string device = read_file(inst.device_key);
    auto count = [&](const std::string& sql) {
        certconn::sqlite::Database db(jobs_db, false);
        auto s = db.prepare(sql);
        s.step();
        return s.integer(0);
    };

    std::uint16_t port;
    {
        Daemon first(inst.config, inst.dir / "first.out");
        port = inst.start(first);
        for (int i = 0; i < 200; ++i) {
            char id[16];
            std::snprintf(id, sizeof id, "job-%03d", i);
            const json::object job{
                {"id", id},
                {"feature", "pkcs"},
                {"request",
                 json::object{{"subject", std::string("CN=") + id}, {"key_type", "p256"}, {"device_key_pem", device}}}};
            REQUIRE(http_request(port, "POST", "/tenant/v1/jobs", json::serialize(job), kTestToken).status == 201);
        }
        REQUIRE(eventually([&] { return count("SELECT COUNT(*) FROM jobs WHERE status = 'succeeded'") >= 30; },
                           std::chrono::seconds(120)));
        first.signal(SIGKILL);
        first.wait_exit();
    }
    const auto done_at_kill = count("SELECT COUNT(*) FROM jobs WHERE status IN ('succeeded', 'failed')");
    INFO("jobs finished before kill -9: " << done_at_kill);
    CHECK(done_at_kill < 200);

    Daemon second(inst.config, inst.dir / "second.out");
    inst.start(second);
    REQUIRE(eventually([&] { return count("SELECT COUNT(*) FROM jobs WHERE status IN ('succeeded', 'failed')") == 200; },
                       std::chrono::seconds(240)));
    second.signal(SIGTERM);
    CHECK(second.wait_exit() == 0);

    CHECK(count("SELECT COUNT(*) FROM jobs WHERE status = 'succeeded'") == 200);
    CHECK(count("SELECT COUNT(*) FROM jobs WHERE attempts > 1") >= 1);  // the kill interrupted jobs, which ran again

    certconn::sqlite::Database issued(issued_db, false);
    auto totals = issued.prepare("SELECT COUNT(*), COUNT(DISTINCT request_id) FROM certificates");
    totals.step();
    CHECK(totals.integer(0) == 200);  // one certificate per job: none issued twice
    CHECK(totals.integer(1) == 200);

    // Each job's single result names the certificate the CA recorded for that job.
    certconn::sqlite::Database jobs(jobs_db, false);
    auto rows = jobs.prepare("SELECT id, result FROM jobs");
    std::size_t matched = 0;
    while (rows.step()) {
        const auto result = json::parse(rows.text(1)).as_object();
        auto serial = issued.prepare("SELECT serial FROM certificates WHERE request_id = ?");
        serial.bind(1, rows.text(0));
        REQUIRE(serial.step());
        if (serial.text(0) == std::string(result.at("serial").as_string())) ++matched;
    }
    CHECK(matched == 200);
}
