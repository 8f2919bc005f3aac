// The instance registry: instances see each other join, an instance whose heartbeat stops is
// reported lost exactly once across the fleet (the "fleet:watch" lease holder reports), a clean
// stop is "left", and the fleet status document shows versions, unserved features, leases held
// by dead instances and connector keys missing on an import instance. SQLite (one file, several
// registries) always; PostgreSQL under [postgresql].
#include "fleet/InstanceRegistry.hpp"
#include "status/FleetText.hpp"
#include "support/Postgres.hpp"
#include "support/TestFiles.hpp"

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <cstdlib>
#include <random>
#include <sstream>
#include <thread>

using namespace certconn;
using namespace certconn::host;
using namespace certconn::test;
using namespace std::chrono;
namespace json = boost::json;

namespace {

using certconn::test::pg_url;

struct Member {
    Member(const std::filesystem::path& dir, const sql::Options& store, const std::string& id, SelfDescription self,
           InstanceRegistry::QueueStats stats = {})
        : log_dir(dir / ("log-" + id)),
          log(EventLogOptions{log_dir, 1 << 20, 2, true, true, false}),
          registry(
              store, id, log, FleetSettings{1, 2}, [self] { return self; }, std::move(stats)) {}
    std::filesystem::path log_dir;
    EventLog log;
    InstanceRegistry registry;

    std::string events() {
        log.flush();
        std::string out;
        for (const char* f : {"admin.jsonl", "operational.jsonl"})
            if (std::filesystem::exists(log_dir / f)) out += read_file(log_dir / f);
        return out;
    }
    int count(int id, const std::string& text) {
        const std::string all = events();
        int n = 0;
        std::size_t line_start = 0;
        while (line_start < all.size()) {
            auto end = all.find('\n', line_start);
            if (end == std::string::npos) end = all.size();
            const std::string line = all.substr(line_start, end - line_start);
            if (line.find("\"id\":" + std::to_string(id) + ",") != std::string::npos && line.find(text) != std::string::npos) ++n;
            line_start = end + 1;
        }
        return n;
    }
};

SelfDescription self(const std::string& version, std::vector<std::string> features,
                     std::map<std::string, std::string> keys = {}) {
    SelfDescription d;
    d.host = "host-test";
    d.pid = 4242;
    d.version = version;
    d.features = std::move(features);
    d.tenants = {"default"};
    d.cas = {"corp"};
    d.key_fingerprints = std::move(keys);
    return d;
}

const json::object* instance(const json::object& fleet, const std::string& id) {
    for (const auto& i : fleet.at("instances").as_array())
        if (i.at("instance_id").as_string() == id) return &i.as_object();
    return nullptr;
}

void fleet_scenario(const std::filesystem::path& dir, const sql::Options& store) {
    const json::object stats{
        {"default",
         json::object{
             {"features", json::object{{"pkcs", json::object{{"queued", 3}, {"running", 1}, {"oldest_queued_age_seconds", 40}}},
                                       {"import", json::object{{"queued", 0}, {"running", 0}}}}},
             {"leases_by_owner", json::object{{"b", 2}, {"c", 1}}}}},
        {"intune", json::object{{"error", "NOT_SUPPORTED: no jobs.stats"}}}};
    Member a(dir, store, "a", self("1.0.0", {"echo"}), [&] { return stats; });
    Member b(dir, store, "b", self("1.0.0", {"pkcs", "import"}, {{"k1", "fp-one"}}), [&] { return stats; });
    REQUIRE(a.registry.beat());  // a takes the watch lease first
    REQUIRE(b.registry.beat());
    REQUIRE(a.registry.beat());
    // Each sees the other join (and itself, once).
    CHECK(a.count(810, "instance b ") == 1);
    CHECK(b.count(810, "instance a ") == 1);
    CHECK(a.count(800, "host store") == 1);
    REQUIRE(a.registry.beat());
    CHECK(a.count(810, "instance b ") == 1);  // once per observer

    Member c(dir, store, "c", self("1.0.0", {"import"}), [&] { return stats; });
    Member d(dir, store, "d", self("1.1.0", {"import"}, {{"k1", "fp-other"}}), [&] { return stats; });
    REQUIRE(c.registry.beat());
    REQUIRE(d.registry.beat());
    REQUIRE(c.registry.beat());
    CHECK(c.count(813, "1.1.0 on 1 instance") == 1);  // skew: reported ...
    REQUIRE(c.registry.beat());
    CHECK(c.count(813, "several versions") == 1);  // ... at most every 10 minutes
    CHECK(c.count(810, "instance d ") == 1);

    // b's heartbeat stops (killed): reported lost once, by the watch holder only.
    b.registry.halt();
    const auto until = steady_clock::now() + milliseconds(3600);  // lost_after 2 s, in whole database seconds
    while (steady_clock::now() < until) {                         // the others keep heartbeating
        for (Member* m : {&a, &c, &d})
            REQUIRE(m->registry.beat());
        std::this_thread::sleep_for(milliseconds(300));
    }
    for (int round = 0; round < 3; ++round)
        for (Member* m : {&a, &c, &d})
            REQUIRE(m->registry.beat());
    CHECK(a.count(812, "instance a ") + a.count(812, "instance c ") + a.count(812, "instance d ") == 0);
    CHECK(a.count(812, "instance b ") + c.count(812, "instance b ") + d.count(812, "instance b ") == 1);
    CHECK(a.count(812, "instance b ") == 1);  // a holds fleet:watch
    // No instance serves pkcs any more (b is lost) while 3 jobs wait: reported by the watcher.
    CHECK(a.count(814, "feature 'pkcs'") == 1);

    const json::object fleet = c.registry.status(stats, {{"default", OutboxState{5, 1, 120, "busy"}}});
    INFO(json::serialize(fleet));
    CHECK(fleet.at("instances").as_array().size() == 4);
    CHECK(instance(fleet, "b")->at("state") == "lost");
    CHECK(instance(fleet, "a")->at("state") == "live");
    CHECK(instance(fleet, "c")->at("this").as_bool());
    CHECK(instance(fleet, "d")->at("version_skew").as_bool());
    CHECK_FALSE(instance(fleet, "a")->at("version_skew").as_bool());
    CHECK(instance(fleet, "a")->at("features").as_array().at(0) == "echo");
    CHECK(instance(fleet, "d")->at("key_fingerprints").at("k1") == "fp-other");
    CHECK(fleet.at("unserved_features").as_array() == json::array{"pkcs"});
    CHECK(fleet.at("queues").at("pkcs").at("queued") == 3);
    CHECK(fleet.at("dead_leases").as_array().size() == 1);  // b's 2 leases; c's are live
    CHECK(fleet.at("dead_leases").at(0).at("owner") == "b");
    // c (import) lacks k1, which d (import) holds; b holds it too but is lost.
    bool gap = false;
    for (const auto& g : fleet.at("key_gaps").as_array())
        gap |= g.at("instance_id") == "c" && g.at("key") == "k1" && g.at("problem") == "missing";
    CHECK(gap);
    bool watch = false;
    for (const auto& l : fleet.at("leaders").as_array())
        watch |= l.at("name") == "fleet:watch" && l.at("holder") == "a" && l.at("holder_state") == "live";
    CHECK(watch);
    CHECK(fleet.at("outbox").at("default").at("pending") == 5);
    std::ostringstream text;
    print_fleet(text, fleet);
    CHECK_THAT(text.str(), Catch::Contains("b  lost") && Catch::Contains("(VERSION SKEW)") &&
                               Catch::Contains("no live instance serves feature pkcs") &&
                               Catch::Contains("import instance c lacks connector key 'k1'") &&
                               Catch::Contains("job lease(s) of tenant 'default' held by lost instance b") &&
                               Catch::Contains("no queue statistics (NOT_SUPPORTED"));

    // A clean stop: left, reported by the leaver; the watch duty passes on.
    a.registry.stop();
    CHECK(a.count(811, "instance a left the fleet") == 1);
    REQUIRE(c.registry.beat());
    const json::object after = c.registry.status({}, {});
    CHECK(instance(after, "a")->at("state") == "left");
    CHECK(c.count(820, "fleet:watch") == 1);  // c took over the reporting duty at once
    CHECK(c.count(812, "instance a") == 0);   // left is not lost
}

}  // namespace

TEST_CASE("fleet registry: SQLite: join, lost exactly once, left on a clean stop, fleet status document") {
    TempDir dir;
    sql::Options store;
    store.sqlite_file = dir.path() / "outbox.db";
    fleet_scenario(dir.path(), store);
}

TEST_CASE("fleet registry: PostgreSQL: join, lost exactly once, left on a clean stop, fleet status document", "[postgresql]") {
    if (pg_url().empty()) {
        WARN("CERTCONN_TEST_PG_URL not set: skipped (ctest runs it under 'store: ...')");
        return;
    }
    TempDir dir;
    std::random_device rd;
    sql::Options store;
    store.url = pg_url();
    store.schema = "fleet_" + std::to_string(rd() % 1000000000);
    fleet_scenario(dir.path(), store);
}

TEST_CASE("fleet registry: an unreachable store is reported once (801), not at every heartbeat", "[postgresql]") {
    TempDir dir;
    sql::Options store;
    store.url = "postgresql://certconn@127.0.0.1:1/none";
    store.schema = "host";
    store.connect_timeout = seconds(2);
    Member m(dir.path(), store, "x", self("1.0.0", {}));
    CHECK_FALSE(m.registry.beat());
    CHECK_FALSE(m.registry.beat());
    CHECK(m.count(801, "cannot be reached") == 1);
    CHECK(m.count(800, "host store") == 0);
}
