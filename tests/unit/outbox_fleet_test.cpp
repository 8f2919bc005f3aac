// The host outbox on both backends: the SQLite file of earlier versions still opens (and its
// single-tenant table moves over), and on a shared PostgreSQL store only the holder of the lease
// "outbox:<tenant>" delivers; when it stops renewing, another instance delivers its entries, in
// order. (The scheduler-level fleet cases are in scheduler_test.cpp.)
#include "jobs/OutboxStore.hpp"
#include "support/Postgres.hpp"
#include "support/TestFiles.hpp"

#include <certconn/sql.hpp>
#include <certconn/sqlite.hpp>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <random>
#include <thread>

using namespace certconn;
using namespace certconn::host;
using namespace std::chrono;

namespace {

using certconn::test::pg_url;

sql::Options pg_host_store(const std::string& schema) {
    sql::Options o;
    o.url = pg_url();
    o.schema = schema;
    return o;
}

using certconn::test::unique_schema;

std::vector<std::string> keys(const std::vector<OutboxEntry>& entries) {
    std::vector<std::string> out;
    for (const auto& e : entries)
        out.push_back(e.key);
    return out;
}

/// The same sequence of calls on any backend: order, dedup, defer (database time), refuse.
void exercise(OutboxStore& box) {
    CHECK(box.put("t", "j1", "pkcs", R"({"status":"ok","claim":1})") == R"({"status":"ok","claim":1})");
    CHECK(box.put("t", "j1", "pkcs", R"({"status":"other"})") == R"({"status":"ok","claim":1})");  // the first stays
    CHECK(box.notify("t", "n1", "scep", "scep.notify_success", "{}", "{}"));
    CHECK_FALSE(box.notify("t", "n1", "scep", "scep.notify_success", "{}", "{}"));
    box.put("t", "j2", "pkcs", "{}");
    box.put("u", "j3", "pkcs", "{}");
    auto p = box.pending("t", false, 10);
    CHECK(keys(p) == std::vector<std::string>{"j1", "n1", "j2"});
    CHECK(p[0].due);
    box.defer(p[0].seq, 60000, "tenant busy");
    p = box.pending("t", false, 10);
    CHECK_FALSE(p[0].due);  // a minute from the database's now
    CHECK(p[0].attempts == 1);
    box.defer(p[0].seq, 0, "again");
    CHECK(box.pending("t", false, 10)[0].due);
    box.restamp(p[0].seq, R"({"status":"ok","claim":2})");
    CHECK(box.find("t", false, "j1")->body == R"({"status":"ok","claim":2})");
    box.refuse(p[2].seq, "job j2: claim 1 was fenced off");
    CHECK_FALSE(box.find("t", false, "j2"));
    const OutboxState s = box.state("t", false);
    CHECK(s.pending == 2);
    CHECK(s.refused == 1);
    CHECK(s.last_error == "job j2: claim 1 was fenced off");
    const auto backlog = box.backlog();
    CHECK(backlog.at("t").pending == 2);
    CHECK(backlog.at("u").pending == 1);
    CHECK(box.retry_refused("t") == 1);
    CHECK(box.size() == 4);
    box.remove(p[0].seq);
    CHECK(keys(box.pending("t", false, 10)) == std::vector<std::string>{"n1", "j2"});
}

}  // namespace

TEST_CASE(
    "outbox: SQLite: an outbox.db of earlier versions opens unchanged, the single-tenant table moves to the default tenant") {
    test::TempDir dir;
    const auto file = dir.path() / "outbox.db";
    {
        sqlite::Database old(file, false);  // as single-tenant versions left it
        old.exec(
            "CREATE TABLE outbox (job_id TEXT PRIMARY KEY, feature TEXT NOT NULL, result TEXT NOT NULL, attempts INTEGER NOT "
            "NULL "
            "DEFAULT 0, next_attempt_ms INTEGER NOT NULL DEFAULT 0, last_error TEXT, stored_at TEXT NOT NULL)");
        old.exec(
            "INSERT INTO outbox (job_id, feature, result, stored_at) VALUES ('old1', 'pkcs', '{\"a\":1}', "
            "'2026-01-01T00:00:00Z')");
    }
    {
        OutboxStore box(file);
        CHECK_FALSE(box.shared());
        CHECK(box.lead("default", seconds(3)) == std::optional<std::int64_t>(0));  // one machine: always delivers
        CHECK(keys(box.pending("default", true, 10)) == std::vector<std::string>{"old1"});
        CHECK(box.adopt_legacy("default") == 0);
        CHECK(keys(box.pending("default", false, 10)) == std::vector<std::string>{"old1"});
    }
    OutboxStore again(file);  // reopening: migrations already applied
    CHECK(again.size() == 1);
    sql::Options o;
    o.sqlite_file = file;
    auto db = sql::Database::open(o);
    CHECK(db.schema_version() == 3);
}

TEST_CASE("outbox: SQLite: order, dedup, deferral in database time, refusal, fenced results restamped") {
    test::TempDir dir;
    OutboxStore box(dir.path() / "outbox.db");
    exercise(box);
}

TEST_CASE(
    "outbox: PostgreSQL: the same calls; only the lease holder delivers, and after it stops renewing another delivers "
    "its entries in order",
    "[postgresql]") {
    if (pg_url().empty()) {
        WARN("CERTCONN_TEST_PG_URL not set: skipped (ctest runs it under 'store: ...')");
        return;
    }
    {
        OutboxStore box(pg_host_store(unique_schema("ob")), "solo");
        CHECK(box.shared());
        exercise(box);
    }
    const std::string schema = unique_schema("obl");
    OutboxStore a(pg_host_store(schema), "instance-a");
    OutboxStore b(pg_host_store(schema), "instance-b");
    const auto epoch_a = a.lead("t", seconds(2));
    REQUIRE(epoch_a);
    CHECK_FALSE(b.lead("t", seconds(2)));  // a holds it
    CHECK(b.lead("u", seconds(2)));        // another tenant's lease is another lease
    CHECK(a.leader("t")->holder == "instance-a");
    // Both store; a is the one delivering.
    a.put("t", "a1", "pkcs", "{}");
    b.put("t", "b1", "pkcs", "{}");
    a.notify("t", "a2", "scep", "scep.notify_success", "{}", "{}");
    CHECK(a.lead("t", seconds(2)) == epoch_a);  // renewed: same epoch
    // a stops renewing (killed): b takes over once the lease lapses, with a newer epoch.
    std::this_thread::sleep_for(milliseconds(3200));
    const auto epoch_b = b.lead("t", seconds(2));
    REQUIRE(epoch_b);
    CHECK(*epoch_b > *epoch_a);
    CHECK_FALSE(a.lead("t", seconds(2)));  // a woke up: it no longer leads
    CHECK(keys(b.pending("t", false, 10)) == std::vector<std::string>{"a1", "b1", "a2"});
    // A clean stop gives the lease up at once.
    b.resign("t");
    CHECK(a.lead("t", seconds(2)));
}
