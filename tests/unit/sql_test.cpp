// certconn/sql.hpp on both backends. The PostgreSQL cases run when CERTCONN_TEST_PG_URL names a
// server (tests/support/servers/postgresql.sh; ctest's "store: ..." test starts one).
#include <certconn/sql.hpp>

#include "support/Postgres.hpp"
#include "support/TestFiles.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <cstdlib>
#include <random>
#include <set>
#include <thread>

using namespace certconn;

namespace {

using certconn::test::pg_url;

using certconn::test::unique_schema;

sql::Options sqlite_options(const certconn::test::TempDir& dir) {
    sql::Options o;
    o.sqlite_file = dir.path() / "t.db";
    return o;
}

sql::Options pg_options(const std::string& schema) {
    sql::Options o;
    o.url = pg_url();
    o.schema = schema;
    return o;
}

const sql::Migration kMigrations[] = {
    {1, "CREATE TABLE jobs (id TEXT PRIMARY KEY, state TEXT NOT NULL, attempt BIGINT NOT NULL DEFAULT 0, owner TEXT)"},
    {2, "ALTER TABLE jobs ADD COLUMN result TEXT"},
};

void exercise(sql::Database& db) {
    db.migrate(kMigrations);
    CHECK(db.schema_version() == 2);
    db.migrate(kMigrations);  // again: nothing to do
    {
        sql::Transaction tx(db);
        auto ins = db.prepare("INSERT INTO jobs (id, state) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING");
        ins.bind_all("a", "queued").run();
        CHECK(db.changes() == 1);
        ins.reset();
        ins.bind_all("a", "queued").run();
        CHECK(db.changes() == 0);
        ins.reset();
        ins.bind_all("b", "queued").run();
        tx.commit();
    }
    // Parameters used out of order and twice.
    auto upd = db.prepare(
        "UPDATE jobs SET owner = $2, attempt = attempt + 1 WHERE id = $1 AND (owner IS NULL OR owner <> $2) RETURNING attempt");
    upd.bind_all("a", "me");
    REQUIRE(upd.step());
    CHECK(upd.integer(0) == 1);
    CHECK_FALSE(upd.step());
    {
        auto s = db.prepare("SELECT id, owner, result FROM jobs ORDER BY id");
        REQUIRE(s.step());
        CHECK(s.text(0) == "a");
        CHECK(s.optional_text(1) == std::optional<std::string>("me"));
        CHECK_FALSE(s.optional_text(2).has_value());
        REQUIRE(s.step());
        CHECK(s.text(0) == "b");
        CHECK_FALSE(s.step());
    }
    // A constraint violation is told apart from other failures.
    try {
        db.prepare("INSERT INTO jobs (id, state) VALUES ($1, $2)").bind_all("a", "x").run();
        FAIL("duplicate accepted");
    } catch (const sql::Error& e) {
        CHECK(e.kind() == sql::Error::Kind::constraint);
    }
    // A transaction not committed leaves nothing behind.
    {
        sql::Transaction tx(db);
        db.prepare("INSERT INTO jobs (id, state) VALUES ($1, $2)").bind_all("c", "queued").run();
    }
    auto count = db.prepare("SELECT count(*) FROM jobs");
    REQUIRE(count.step());
    CHECK(count.integer(0) == 2);
    // Database time.
    auto now = db.prepare("SELECT " + db.now_sql() + ", " + db.now_ms_sql());
    REQUIRE(now.step());
    const auto secs = now.integer(0);
    CHECK(secs > 1700000000);
    CHECK(std::llabs(now.integer(1) / 1000 - secs) <= 1);
}

void leases(sql::Database& a, sql::Database& b) {
    const sql::Migration m[] = {sql::LeaderLease::migration(1)};
    a.migrate(m);
    b.migrate(m);
    sql::LeaderLease la(a, "crl:corp", "instance-a");
    sql::LeaderLease lb(b, "crl:corp", "instance-b");
    const auto ea = la.acquire(std::chrono::seconds(30));
    REQUIRE(ea.has_value());
    CHECK_FALSE(lb.acquire(std::chrono::seconds(30)).has_value());  // live lease of another holder
    CHECK(la.acquire(std::chrono::seconds(30)) == ea);              // renewal keeps the epoch
    la.release();
    const auto eb = lb.acquire(std::chrono::seconds(30));
    REQUIRE(eb.has_value());
    CHECK(*eb == *ea + 1);
    {
        sql::Transaction tx(a);
        CHECK_FALSE(la.still_held(*ea));  // a lost it: its writes must not happen
    }
    {
        sql::Transaction tx(b);
        CHECK(lb.still_held(*eb));
        tx.commit();
    }
    const auto holder = la.current();
    REQUIRE(holder.has_value());
    CHECK(holder->holder == "instance-b");
}

}  // namespace

TEST_CASE("sql: SQLite backend: parameters, upsert, RETURNING, constraints, rollback, database time, migrations") {
    certconn::test::TempDir dir;
    auto db = sql::Database::open(sqlite_options(dir));
    CHECK(db.backend() == sql::Backend::sqlite);
    exercise(db);
}

TEST_CASE("sql: SQLite backend: leader lease with epochs; a newer schema is refused") {
    certconn::test::TempDir dir;
    auto a = sql::Database::open(sqlite_options(dir));
    auto b = sql::Database::open(sqlite_options(dir));
    leases(a, b);  // schema version 1: the lease table
    const sql::Migration newer[] = {{7, "CREATE TABLE later (x INTEGER)"}};
    a.migrate(newer);
    try {
        b.migrate(std::span<const sql::Migration>(kMigrations));
        FAIL("an older build ran against a newer schema");
    } catch (const sql::Error& e) {
        CHECK(e.kind() == sql::Error::Kind::schema);
        CHECK_THAT(e.what(), Catch::Contains("schema version 7") && Catch::Contains("newer than this build knows (2)"));
        CHECK_THAT(e.what(), Catch::Contains("t.db"));
    }
}

TEST_CASE("sql: PostgreSQL backend: the same statements, leases across connections, schema per store", "[postgresql]") {
    if (pg_url().empty()) {
        WARN("CERTCONN_TEST_PG_URL not set: skipped (ctest runs it under 'store: ...')");
        return;
    }
    const std::string schema = unique_schema("t");
    auto db = sql::Database::open(pg_options(schema));
    CHECK(db.backend() == sql::Backend::postgresql);
    CHECK_THAT(db.describe(), Catch::Contains("schema=" + schema) && !Catch::Contains("password"));
    exercise(db);
    const std::string lease_schema = unique_schema("l");
    auto la = sql::Database::open(pg_options(lease_schema));
    auto lb = sql::Database::open(pg_options(lease_schema));
    leases(la, lb);
    // Another schema sees none of it.
    auto elsewhere = sql::Database::open(pg_options(unique_schema("u")));
    elsewhere.migrate(kMigrations);
    auto s = elsewhere.prepare("SELECT count(*) FROM jobs");
    REQUIRE(s.step());
    CHECK(s.integer(0) == 0);
}

TEST_CASE("sql: PostgreSQL backend: 8 connections migrating and claiming at once never claim a row twice", "[postgresql]") {
    if (pg_url().empty()) {
        WARN("CERTCONN_TEST_PG_URL not set: skipped");
        return;
    }
    const std::string schema = unique_schema("race");
    {
        auto db = sql::Database::open(pg_options(schema));
        db.migrate(kMigrations);
        sql::Transaction tx(db);
        for (int i = 0; i < 400; ++i)
            db.prepare("INSERT INTO jobs (id, state) VALUES ($1, 'queued')").bind(1, std::to_string(i)).run();
        tx.commit();
    }
    std::mutex m;
    std::multiset<std::string> claimed;
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t)
        threads.emplace_back([&, t] {
            auto db = sql::Database::open(pg_options(schema));
            db.migrate(kMigrations);
            for (;;) {
                auto s = db.prepare(
                    "UPDATE jobs SET state = 'running', owner = $1, attempt = attempt + 1 WHERE id IN (SELECT id FROM jobs WHERE "
                    "state = 'queued' ORDER BY id LIMIT 5 FOR UPDATE SKIP LOCKED) RETURNING id");
                s.bind(1, "w" + std::to_string(t));
                int n = 0;
                while (s.step()) {
                    const std::lock_guard lock(m);
                    claimed.insert(s.text(0));
                    ++n;
                }
                if (n == 0) break;
            }
        });
    for (auto& th : threads)
        th.join();
    CHECK(claimed.size() == 400);
    CHECK(std::set<std::string>(claimed.begin(), claimed.end()).size() == 400);
}

TEST_CASE("sql: PostgreSQL backend: an unreachable server is a connection error, then the store reconnects", "[postgresql]") {
    sql::Options o;
    o.url = "postgresql://certconn@127.0.0.1:1/none";
    o.schema = "x";
    o.connect_timeout = std::chrono::seconds(2);
    auto db = sql::Database::open(o);  // lazy: opening does not connect
    try {
        db.exec("SELECT 1");
        FAIL("connected to port 1");
    } catch (const sql::Error& e) {
        CHECK(e.kind() == sql::Error::Kind::connection);
        CHECK(e.transient());
        CHECK_THAT(e.what(), Catch::Contains("cannot reach postgresql") && Catch::Contains("host=127.0.0.1 port=1"));
    }
    try {
        db.exec("SELECT 1");  // within the backoff: refused at once, saying when the next attempt is
        FAIL("connected to port 1");
    } catch (const sql::Error& e) {
        CHECK(e.kind() == sql::Error::Kind::connection);
        CHECK_THAT(e.what(), Catch::Contains("next attempt in"));
    }
}
