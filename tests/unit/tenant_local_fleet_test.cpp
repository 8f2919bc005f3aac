// tenant-local on certconn::store: several instances sharing one queue and one SCEP ledger.
// Each case runs on SQLite (two queue objects on one file) and, under [postgresql], on a real
// PostgreSQL schema (CERTCONN_TEST_PG_URL; ctest's "store: ..." test starts one).
#include "JobQueue.hpp"
#include "ScepLedger.hpp"
#include "support/Postgres.hpp"
#include "support/TestFiles.hpp"

#include <certconn/crypto.hpp>
#include <certconn/sdk.hpp>
#include <certconn/sql.hpp>

#include <boost/json.hpp>

#include <catch2/catch.hpp>

#include <openssl/evp.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

using namespace certconn;
using certconn::tenant_local::JobQueue;
using certconn::tenant_local::ScepLedger;
using certconn::test::TempDir;

namespace {

using certconn::test::pg_url;

sql::Options pg_options(const std::string& schema) {
    sql::Options o;
    o.url = pg_url();
    o.schema = schema;
    return o;
}

using certconn::test::unique_schema;

sql::Options sqlite_options(const std::filesystem::path& file) {
    sql::Options o;
    o.sqlite_file = file;
    return o;
}

std::string sha256_hex(const std::string& text) {
    unsigned char md[32];
    unsigned int len = 0;
    EVP_Digest(text.data(), text.size(), md, &len, EVP_sha256(), nullptr);
    return crypto::hex_encode(std::string_view(reinterpret_cast<char*>(md), len));
}

int status_of(const std::function<void()>& fn, std::string* message = nullptr) {
    try {
        fn();
        return CC_OK;
    } catch (const sdk::Error& e) {
        if (message) *message = e.what();
        return e.code();
    }
}

/// Two instances: a's claim expires, b claims the job again; a's late result is fenced off.
void fencing(JobQueue& a, JobQueue& b) {
    a.submit("pkcs", R"({"n":1})", "j1");
    auto first = a.claim({"pkcs"}, 10, 1);
    REQUIRE(first.size() == 1);
    CHECK(first[0].attempts == 1);
    CHECK(first[0].owner == std::optional<std::string>(a.instance_id()));
    CHECK(b.claim({"pkcs"}, 10, 60).empty());  // a's lease is live
    std::this_thread::sleep_for(std::chrono::milliseconds(1200));
    auto second = b.claim({"pkcs"}, 10, 60);
    REQUIRE(second.size() == 1);
    CHECK(second[0].id == "j1");
    CHECK(second[0].attempts == 2);  // claim + 1: the new fencing token
    CHECK(second[0].owner == std::optional<std::string>(b.instance_id()));

    // a wakes up and reports: refused, naming both claims; nothing written.
    std::string why;
    CHECK(status_of([&] { a.complete("j1", "succeeded", R"({"status":"succeeded","by":"a","claim":1})", 1); }, &why) ==
          CC_ERR_CONFLICT);
    CHECK(why == "job j1: claim 1 was fenced off (the job was claimed again as claim 2)");
    CHECK(a.find("j1")->status == "running");
    CHECK(status_of([&] { a.renew("j1", 1, 60); }) == CC_ERR_CONFLICT);

    // b, which holds the claim, completes it; an identical re-delivery is accepted (no change).
    CHECK(b.complete("j1", "succeeded", R"({"status":"succeeded","by":"b","claim":2})", 2));
    CHECK_FALSE(b.complete("j1", "succeeded", R"({"status":"succeeded","by":"b","claim":2})", 2));
    CHECK(*a.find("j1")->result == R"({"status":"succeeded","by":"b","claim":2})");
    // a's result stays refused after the job finished, too.
    CHECK(status_of([&] { a.complete("j1", "failed", R"({"status":"failed","claim":1})", 1); }, &why) == CC_ERR_CONFLICT);
    CHECK(*b.find("j1")->result == R"({"status":"succeeded","by":"b","claim":2})");
    // An unknown job, and a claim number the job never had.
    CHECK(status_of([&] { a.complete("nope", "failed", "{}", 1); }) == CC_ERR_NOT_FOUND);
    a.submit("pkcs", "{}", "j2");
    REQUIRE(a.claim({"pkcs"}, 1, 60).size() == 1);
    CHECK(status_of([&] { b.complete("j2", "failed", "{}", 5); }) == CC_ERR_CONFLICT);
    CHECK(a.complete("j2", "failed", R"({"status":"failed"})", 1));
    // Without a claim (an older host): the first result stands.
    a.submit("pkcs", "{}", "j3");
    CHECK(b.complete("j3", "succeeded", R"({"status":"succeeded"})"));
    CHECK_FALSE(a.complete("j3", "failed", R"({"status":"failed"})"));
}

/// `jobs.stats`: depth and oldest age per feature, live leases per instance.
void stats(JobQueue& a, JobQueue& b) {
    a.submit("pkcs", "{}", "p1");
    a.submit("pkcs", "{}", "p2");
    a.submit("pkcs", "{}", "p3");
    b.submit("revoke", "{}", "r1");
    b.submit("import", "{}", "i1");
    std::this_thread::sleep_for(std::chrono::milliseconds(2100));
    b.submit("scep", "{}", "s1");
    REQUIRE(a.claim({"pkcs"}, 2, 60).size() == 2);
    REQUIRE(b.claim({"revoke"}, 5, 60).size() == 1);
    REQUIRE(b.claim({"import"}, 5, 1).size() == 1);  // expires: claimable again, counted as queued
    b.submit("done", "{}", "d1");
    REQUIRE(b.complete("d1", "succeeded", R"({"status":"succeeded"})"));
    std::this_thread::sleep_for(std::chrono::milliseconds(1200));

    const auto st = a.stats();
    const auto doc = st.to_json();
    INFO(boost::json::serialize(doc));
    REQUIRE(st.features.count("pkcs") == 1);
    CHECK(st.features.at("pkcs").queued == 1);
    CHECK(st.features.at("pkcs").running == 2);
    CHECK(st.features.at("pkcs").oldest_queued_age_seconds >= 2);
    CHECK(st.features.at("pkcs").oldest_queued_age_seconds < 30);
    CHECK(st.features.at("revoke").queued == 0);
    CHECK(st.features.at("revoke").running == 1);
    CHECK(st.features.at("revoke").oldest_queued_age_seconds == 0);
    CHECK(st.features.at("import").queued == 1);
    CHECK(st.features.at("import").running == 0);
    CHECK(st.features.at("import").oldest_queued_age_seconds >= 2);
    CHECK(st.features.at("scep").queued == 1);
    CHECK(st.features.at("scep").oldest_queued_age_seconds <= 2);
    CHECK(st.features.count("done") == 0);  // finished jobs are not queue depth
    CHECK(st.leases_by_owner.size() == 2);
    CHECK(st.leases_by_owner.at(a.instance_id()) == 2);
    CHECK(st.leases_by_owner.at(b.instance_id()) == 1);
    CHECK(doc.at("features").at("pkcs").at("running").as_int64() == 2);
    CHECK(doc.at("leases_by_owner").at(b.instance_id()).as_int64() == 1);
}

/// `threads` ledgers on one store race one challenge with different transactions.
void challenge_race(const std::function<std::unique_ptr<ScepLedger>()>& open, int threads) {
    auto creator = open();
    const std::string challenge = std::string(creator->create_challenge("wifi", "", {}, 600).at("challenge").as_string());
    std::vector<std::unique_ptr<ScepLedger>> ledgers;
    for (int i = 0; i < threads; ++i)
        ledgers.push_back(open());
    std::atomic<int> ready{0};
    std::atomic<int> wins{0};
    std::mutex m;
    std::map<std::string, int> codes;
    std::vector<std::thread> workers;
    for (int i = 0; i < threads; ++i)
        workers.emplace_back([&, i] {
            ++ready;
            while (ready.load() < threads)
                std::this_thread::yield();
            const boost::json::object request{
                {"profile", "wifi"}, {"challenge", challenge}, {"transaction_id", "tx-" + std::to_string(i)}};
            const auto answer = ledgers[i]->validate(request);
            const std::string code(answer.at("code").as_string());
            if (code == "Success") ++wins;
            const std::lock_guard lock(m);
            ++codes[code];
        });
    for (auto& w : workers)
        w.join();
    CHECK(wins.load() == 1);
    CHECK(codes["ChallengeInvalid"] == threads - 1);
    // The winner may resend its transaction (to any instance); nobody else may.
    int winner_resends = 0;
    for (int i = 0; i < threads; ++i) {
        const boost::json::object request{
            {"profile", "wifi"}, {"challenge", challenge}, {"transaction_id", "tx-" + std::to_string(i)}};
        if (creator->validate(request).at("code").as_string() == "Success") ++winner_resends;
    }
    CHECK(winner_resends == 1);
}

}  // namespace

TEST_CASE("tenant-local: SQLite: a claim whose lease expired is re-claimed with claim+1; the first claim's result is fenced") {
    TempDir dir;
    JobQueue a(sqlite_options(dir / "jobs.db"), "instance-a");
    JobQueue b(sqlite_options(dir / "jobs.db"), "instance-b");
    fencing(a, b);
}

TEST_CASE("tenant-local: SQLite: jobs.stats counts depth, oldest age and leases per instance") {
    TempDir dir;
    JobQueue a(sqlite_options(dir / "jobs.db"), "instance-a");
    JobQueue b(sqlite_options(dir / "jobs.db"), "instance-b");
    stats(a, b);
}

TEST_CASE("tenant-local: SQLite: 20 threads racing one SCEP challenge - exactly one wins") {
    TempDir dir;
    challenge_race(
        [&] { return std::make_unique<ScepLedger>(sqlite_options(dir / "scep.db"), std::map<std::string, std::string>{}); }, 20);
}

TEST_CASE("tenant-local: SQLite files of earlier versions keep their jobs and used challenges") {
    TempDir dir;
    {
        auto db = sql::Database::open(sqlite_options(dir / "jobs.db"));
        // The queue's table exactly as 0.2 created it, with a queued and a finished job.
        db.exec(R"(CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, feature TEXT NOT NULL,
            request TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'queued', attempts INTEGER NOT NULL DEFAULT 0,
            lease_until_ms INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')), completed_at TEXT, result TEXT))");
        db.exec("INSERT INTO jobs (id, feature, request) VALUES ('old', 'pkcs', '{\"x\":1}')");
        db.exec(
            "INSERT INTO jobs (id, feature, request, status, attempts, result) VALUES ('done', 'pkcs', '{}', 'succeeded', 1, "
            "'{\"status\":\"succeeded\"}')");
        auto scep = sql::Database::open(sqlite_options(dir / "scep.db"));
        scep.exec(R"(CREATE TABLE scep_challenges (hash TEXT PRIMARY KEY, profile TEXT NOT NULL, subject TEXT, sans TEXT,
            expires_at_ms INTEGER NOT NULL, used_by_transaction TEXT))");
        scep.exec(R"(CREATE TABLE scep_notifications (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,
            transaction_id TEXT NOT NULL, body TEXT NOT NULL, received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))))");
        // A one-time challenge used by tx-1 before the upgrade (stored as its SHA-256, hex).
        scep.prepare("INSERT INTO scep_challenges VALUES ($1, 'wifi', NULL, NULL, 99999999999999, 'tx-1')")
            .bind(1, sha256_hex("used-challenge"))
            .run();
    }
    JobQueue q(dir / "jobs.db");
    CHECK(q.find("done")->status == "succeeded");
    auto claimed = q.claim({"pkcs"}, 10, 60);
    REQUIRE(claimed.size() == 1);
    CHECK(claimed[0].id == "old");
    CHECK(claimed[0].request == R"({"x":1})");
    CHECK(q.complete("old", "succeeded", R"({"status":"succeeded"})", 1));
    // The used marker moved into scep_challenge_uses with migration 2: still tx-1's alone.
    ScepLedger ledger(dir / "scep.db", {});
    CHECK(ledger.validate({{"profile", "wifi"}, {"challenge", "used-challenge"}, {"transaction_id", "tx-2"}}).at("code") ==
          "ChallengeInvalid");
    CHECK(ledger.validate({{"profile", "wifi"}, {"challenge", "used-challenge"}, {"transaction_id", "tx-1"}}).at("code") ==
          "Success");
    auto db = sql::Database::open(sqlite_options(dir / "scep.db"));
    CHECK(db.schema_version() == 2);
}

TEST_CASE("tenant-local: an unreachable store is UNAVAILABLE (retryable), never a crash") {
    sql::Options o;
    o.url = "postgresql://certconn@127.0.0.1:1/none";
    o.schema = "tenant_local";
    o.connect_timeout = std::chrono::seconds(2);
    JobQueue q(o, "instance-a");  // opening does not need the server
    std::string why;
    CHECK(status_of([&] { q.submit("pkcs", "{}", "a"); }, &why) == CC_ERR_UNAVAILABLE);
    CHECK_THAT(why, Catch::Contains("job queue submit") && Catch::Contains("127.0.0.1") && Catch::Contains("try again later"));
    CHECK(status_of([&] { q.claim({"pkcs"}, 1, 60); }) == CC_ERR_UNAVAILABLE);
    CHECK(status_of([&] { q.stats(); }) == CC_ERR_UNAVAILABLE);
    ScepLedger ledger(o, {});
    CHECK(status_of([&] {
              ledger.validate({{"profile", "wifi"}, {"challenge", "x"}, {"transaction_id", "t"}});
          }) == CC_ERR_UNAVAILABLE);
}

TEST_CASE("tenant-local: PostgreSQL: two instances claiming 500 jobs from 8 threads claim every job exactly once",
          "[postgresql]") {
    if (pg_url().empty()) {
        WARN("CERTCONN_TEST_PG_URL not set: skipped (ctest runs it under 'store: ...')");
        return;
    }
    const std::string schema = unique_schema("tl_claims");
    JobQueue a(pg_options(schema), "instance-a");
    JobQueue b(pg_options(schema), "instance-b");
    for (int i = 0; i < 500; ++i)
        (i % 2 ? a : b).submit(i % 3 ? "pkcs" : "revoke", "{}", "job-" + std::to_string(i));
    std::mutex m;
    std::multiset<std::string> claimed;
    std::map<std::string, int> by_owner;
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t)
        threads.emplace_back([&, t] {
            JobQueue& q = t % 2 ? a : b;
            for (;;) {
                auto jobs = q.claim({"pkcs", "revoke"}, 7, 60);
                if (jobs.empty()) break;
                for (const auto& job : jobs) {
                    CHECK(job.attempts == 1);
                    CHECK(q.complete(job.id, "succeeded", R"({"status":"succeeded"})", job.attempts));
                    const std::lock_guard lock(m);
                    claimed.insert(job.id);
                    ++by_owner[*job.owner];
                }
            }
        });
    for (auto& th : threads)
        th.join();
    CHECK(claimed.size() == 500);
    CHECK(std::set<std::string>(claimed.begin(), claimed.end()).size() == 500);
    CHECK(by_owner["instance-a"] + by_owner["instance-b"] == 500);
    CHECK(a.count("succeeded") == 500);
}

TEST_CASE("tenant-local: PostgreSQL: an expired lease is re-claimed by the other instance; the first claim is fenced",
          "[postgresql]") {
    if (pg_url().empty()) {
        WARN("CERTCONN_TEST_PG_URL not set: skipped");
        return;
    }
    const std::string schema = unique_schema("tl_fence");
    JobQueue a(pg_options(schema), "instance-a");
    JobQueue b(pg_options(schema), "instance-b");
    fencing(a, b);
}

TEST_CASE("tenant-local: PostgreSQL: jobs.stats counts depth, oldest age and leases per instance", "[postgresql]") {
    if (pg_url().empty()) {
        WARN("CERTCONN_TEST_PG_URL not set: skipped");
        return;
    }
    const std::string schema = unique_schema("tl_stats");
    JobQueue a(pg_options(schema), "instance-a");
    JobQueue b(pg_options(schema), "instance-b");
    stats(a, b);
}

TEST_CASE("tenant-local: PostgreSQL: 20 instances racing one SCEP challenge - exactly one wins", "[postgresql]") {
    if (pg_url().empty()) {
        WARN("CERTCONN_TEST_PG_URL not set: skipped");
        return;
    }
    const std::string schema = unique_schema("tl_scep");
    JobQueue queue(pg_options(schema), "instance-a");  // the queue and the ledger share the schema
    challenge_race([&] { return std::make_unique<ScepLedger>(pg_options(schema), std::map<std::string, std::string>{}); }, 20);
    CHECK(queue.count("queued") == 0);
}
