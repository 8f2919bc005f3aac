// tenant-intune's local revocation store: what Intune handed out survives a crash before it is
// handed on, an unmapped request is answered without a job, and a lost claim cannot act.
#include "RevocationStore.hpp"
#include "support/TestFiles.hpp"

#include <certconn/sdk.hpp>

#include <boost/json.hpp>

#include <catch2/catch.hpp>

namespace json = boost::json;
using certconn::intune::RevocationRequest;
using certconn::intune::RevocationStore;
using certconn::test::TempDir;

namespace {

struct FakeClock {
    std::int64_t now = 1'000'000;
    RevocationStore::Clock fn() {
        return [this] { return now; };
    }
};

std::string map_ca(const std::string& ca_configuration) {
    return ca_configuration == "ca01\\Issuing" ? "adcs" : "";
}

std::vector<RevocationRequest> batch(std::initializer_list<const char*> contexts,
                                     const char* ca_configuration = "ca01\\Issuing") {
    std::vector<RevocationRequest> out;
    for (const char* c : contexts)
        out.push_back({c, std::string("0A") + c, "CN=Issuing", ca_configuration});
    return out;
}

}  // namespace

TEST_CASE("intune store: requests stored before a crash are handed out after the restart") {
    TempDir dir;
    FakeClock clock;
    {
        RevocationStore store(dir / "revocation.db", clock.fn());
        CHECK(store.add(batch({"c1", "c2"}), map_ca, "keyCompromise") == 2);
        // The process dies here: nothing was claimed yet.
    }
    RevocationStore store(dir / "revocation.db", clock.fn());
    const auto jobs = store.claim(10, 60);
    REQUIRE(jobs.size() == 2);
    CHECK(jobs[0].request_context == "c1");
    CHECK(jobs[0].ca == "adcs");
    CHECK(jobs[0].serial_number == "0Ac1");
    CHECK(jobs[0].reason == "keyCompromise");
    CHECK(jobs[0].claim == 1);
    CHECK(jobs[0].job_id == certconn::intune::job_id_for("c1"));
    CHECK(store.claim(10, 60).empty());  // leased
}

TEST_CASE("intune store: a leased job whose holder crashed is handed out again after its lease") {
    TempDir dir;
    FakeClock clock;
    {
        RevocationStore store(dir / "revocation.db", clock.fn());
        store.add(batch({"c1"}), map_ca, "unspecified");
        REQUIRE(store.claim(10, 60).size() == 1);
    }
    RevocationStore store(dir / "revocation.db", clock.fn());
    CHECK(store.claim(10, 60).empty());
    clock.now += 61'000;
    const auto again = store.claim(10, 60);
    REQUIRE(again.size() == 1);
    CHECK(again[0].claim == 2);
}

TEST_CASE("intune store: the same request downloaded again is neither duplicated nor reset") {
    TempDir dir;
    FakeClock clock;
    RevocationStore store(dir / "revocation.db", clock.fn());
    store.add(batch({"c1"}), map_ca, "unspecified");
    const auto jobs = store.claim(10, 60);
    REQUIRE(jobs.size() == 1);
    CHECK(store.complete(jobs[0].job_id, R"({"status":"succeeded"})"));
    // Intune hands it out again (the upload has not reached it yet).
    CHECK(store.add(batch({"c1"}), map_ca, "unspecified") == 0);
    CHECK(store.claim(10, 60).empty());
    REQUIRE(store.pending_uploads(10).size() == 1);
}

TEST_CASE("intune store: an unmapped caConfiguration is answered 4002 without a job") {
    TempDir dir;
    FakeClock clock;
    RevocationStore store(dir / "revocation.db", clock.fn());
    store.add(batch({"u1"}, "other\\CA"), map_ca, "unspecified");
    CHECK(store.claim(10, 60).empty());
    const auto pending = store.pending_uploads(10);
    REQUIRE(pending.size() == 1);
    CHECK(pending[0].request_context == "u1");
    const json::value r = json::parse(pending[0].result_json);
    CHECK(r.at("status") == "failed");
    CHECK(r.at("error_code") == 4002);
    CHECK(std::string(r.at("error").at("message").as_string()).find("other\\CA") != std::string::npos);
    const auto entry = certconn::intune::upload_entry(pending[0].request_context, r);
    CHECK(entry.at("errorCode") == "4002");
    store.mark_uploaded({"u1"});
    CHECK(store.pending_uploads(10).empty());
    CHECK(store.uploaded(pending[0].job_id));
}

TEST_CASE("intune store: fencing - a lost claim can neither renew nor be confused with the new one") {
    TempDir dir;
    FakeClock clock;
    RevocationStore store(dir / "revocation.db", clock.fn());
    store.add(batch({"c1"}), map_ca, "unspecified");
    const auto first = store.claim(1, 10);
    REQUIRE(first.size() == 1);
    const std::string id = first[0].job_id;
    store.renew(id, 1, 10);  // held: fine
    clock.now += 11'000;
    // Expired, not yet reclaimed: the old holder must not revive it.
    CHECK_THROWS_MATCHES(store.renew(id, 1, 10), certconn::sdk::Error,
                         Catch::Predicate<certconn::sdk::Error>([](const auto& e) { return e.code() == CC_ERR_CONFLICT; }));
    const auto second = store.claim(1, 10);
    REQUIRE(second.size() == 1);
    CHECK(second[0].claim == 2);
    CHECK_THROWS_WITH(store.renew(id, 1, 10), Catch::Contains("claimed again"));
    store.renew(id, 2, 10);
    CHECK_THROWS_MATCHES(store.renew("intune-rev-unknown", 1, 10), certconn::sdk::Error,
                         Catch::Predicate<certconn::sdk::Error>([](const auto& e) { return e.code() == CC_ERR_NOT_FOUND; }));
    store.complete(id, R"({"status":"failed","error_code":4004})");
    CHECK_THROWS_WITH(store.renew(id, 2, 10), Catch::Contains("has a result"));
}

TEST_CASE("intune store: complete is idempotent - the first result stands, unknown ids are refused") {
    TempDir dir;
    FakeClock clock;
    RevocationStore store(dir / "revocation.db", clock.fn());
    store.add(batch({"c1"}), map_ca, "unspecified");
    const auto jobs = store.claim(1, 60);
    CHECK(store.complete(jobs[0].job_id, R"({"status":"succeeded","n":1})"));
    CHECK_FALSE(store.complete(jobs[0].job_id, R"({"status":"failed","n":2})"));
    REQUIRE(store.pending_uploads(10).size() == 1);
    CHECK(json::parse(store.pending_uploads(10)[0].result_json).at("n") == 1);
    CHECK_THROWS_MATCHES(store.complete("intune-rev-nope", "{}"), certconn::sdk::Error,
                         Catch::Predicate<certconn::sdk::Error>([](const auto& e) { return e.code() == CC_ERR_NOT_FOUND; }));
    // A result recorded but not uploaded survives a restart.
}

TEST_CASE("intune store: recorded results waiting for upload survive a restart") {
    TempDir dir;
    FakeClock clock;
    std::string id;
    {
        RevocationStore store(dir / "revocation.db", clock.fn());
        store.add(batch({"c1", "c2"}), map_ca, "unspecified");
        const auto jobs = store.claim(2, 60);
        id = jobs[1].job_id;
        store.complete(id, R"({"status":"succeeded"})");
    }
    RevocationStore store(dir / "revocation.db", clock.fn());
    const auto pending = store.pending_uploads(10);
    REQUIRE(pending.size() == 1);
    CHECK(pending[0].job_id == id);
    CHECK_FALSE(store.uploaded(id));
    const auto c = store.counts();
    CHECK(c.leased == 1);
    CHECK(c.done == 1);
    store.set_next_download(1234);
    CHECK(store.next_download() == 1234);
}
