// tenant-local's queue: leases, exactly one result, idempotent submission.
#include "JobQueue.hpp"
#include "support/TestFiles.hpp"

#include <certconn/sdk.hpp>

#include <catch2/catch.hpp>

#include <thread>

using certconn::tenant_local::JobQueue;
using certconn::test::TempDir;

TEST_CASE("jobs are claimed once per lease - an expired lease returns the job") {
    TempDir dir;
    JobQueue q(dir / "jobs.db");
    q.submit("pkcs", "{}", "a");
    q.submit("pkcs", "{}", "b");
    q.submit("scep", "{}", "c");
    auto first = q.claim({"pkcs"}, 10, 1);
    REQUIRE(first.size() == 2);
    CHECK(first[0].id == "a");  // oldest first
    CHECK(first[0].attempts == 1);
    CHECK(q.claim({"pkcs"}, 10, 1).empty());  // leased
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    auto again = q.claim({"pkcs"}, 1, 60);
    REQUIRE(again.size() == 1);
    CHECK(again[0].attempts == 2);
    CHECK(q.claim({"scep", "pkcs"}, 10, 60).size() == 2);  // b's lease expired too, and c
}

TEST_CASE("the first result stands - unknown jobs are refused") {
    TempDir dir;
    JobQueue q(dir / "jobs.db");
    q.submit("pkcs", "{}", "a");
    q.claim({"pkcs"}, 1, 60);
    CHECK(q.complete("a", "succeeded", R"({"status":"succeeded","n":1})"));
    CHECK_FALSE(q.complete("a", "failed", R"({"status":"failed"})"));
    CHECK(*q.find("a")->result == R"({"status":"succeeded","n":1})");
    CHECK(q.claim({"pkcs"}, 1, 0).empty());  // finished jobs are never claimed again
    CHECK_THROWS_WITH(q.complete("zz", "succeeded", "{}"), Catch::Contains("no job 'zz'"));
}

TEST_CASE("submitting an id twice is idempotent for the same document, a conflict otherwise") {
    TempDir dir;
    JobQueue q(dir / "jobs.db");
    CHECK(q.submit("pkcs", R"({"x":1})", "a").status == "queued");
    CHECK(q.submit("pkcs", R"({"x":1})", "a").id == "a");
    CHECK_THROWS_WITH(q.submit("pkcs", R"({"x":2})", "a"), Catch::Contains("already exists with a different document"));
    CHECK(q.count("queued") == 1);
}

namespace {

int renew_status(JobQueue& q, const std::string& id, std::int64_t claim, std::uint32_t lease_seconds) {
    try {
        q.renew(id, claim, lease_seconds);
        return CC_OK;
    } catch (const certconn::sdk::Error& e) {
        return e.code();
    }
}

}  // namespace

TEST_CASE("a lease is renewed only for the claim that holds it and never after it expired") {
    TempDir dir;
    JobQueue q(dir / "jobs.db");
    q.submit("pkcs", "{}", "a");
    q.submit("pkcs", "{}", "b");
    auto first = q.claim({"pkcs"}, 10, 1);
    REQUIRE(first.size() == 2);
    CHECK(first[0].attempts == 1);  // the claim number the tenant hands out: the fencing token

    // Renewed by its claim: still held after the original lease ran out.
    CHECK(renew_status(q, "a", 1, 5) == CC_OK);
    CHECK(renew_status(q, "a", 2, 5) == CC_ERR_CONFLICT);  // not this claim
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    auto again = q.claim({"pkcs"}, 10, 60);
    REQUIRE(again.size() == 1);  // only b came back
    CHECK(again[0].id == "b");
    CHECK(again[0].attempts == 2);

    // b's first claim lost it: that claim can renew no more; the new claim can.
    CHECK(renew_status(q, "b", 1, 60) == CC_ERR_CONFLICT);
    CHECK(renew_status(q, "b", 2, 60) == CC_OK);

    // An expired lease is not revived, even when nobody claimed the job since.
    q.submit("pkcs", "{}", "c");
    REQUIRE(q.claim({"pkcs"}, 10, 1).size() == 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    CHECK(renew_status(q, "c", 1, 60) == CC_ERR_CONFLICT);

    // A finished job, and an unknown one.
    CHECK(q.complete("a", "succeeded", "{}"));
    CHECK(renew_status(q, "a", 1, 60) == CC_ERR_CONFLICT);
    CHECK(renew_status(q, "nope", 1, 60) == CC_ERR_NOT_FOUND);
}
