// scep's notification outbox: retried with backoff until the tenant accepts, across restarts.
#include "NotificationOutbox.hpp"
#include "support/TestFiles.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <thread>

using certconn::scep::NotificationOutbox;
using certconn::test::TempDir;
using namespace std::chrono_literals;

namespace {
bool eventually(const std::function<bool()>& f) {
    for (int i = 0; i < 500; ++i) {  // at most 10 s: a bound, not a timing assertion
        if (f()) return true;
        std::this_thread::sleep_for(20ms);
    }
    return f();
}
}  // namespace

TEST_CASE("a notification is retried until the tenant accepts it") {
    TempDir dir;
    std::atomic<int> calls{0};
    std::mutex m;
    std::vector<std::pair<bool, std::string>> seen;
    NotificationOutbox outbox(
        dir / "n.db",
        [&](const NotificationOutbox::Delivery& d) {
            if (++calls <= 2) throw std::runtime_error("tenant unavailable");
            CHECK(d.operation == "scep.notify_success");
            CHECK(d.body == R"({"x":1})");
        },
        [&](const NotificationOutbox::Delivery&, bool ok, const std::string& error) {
            std::lock_guard lock(m);
            seen.emplace_back(ok, error);
        },
        10ms, 50ms);
    outbox.put("tx-1", "scep.notify_success", R"({"x":1})");
    REQUIRE(eventually([&] { return outbox.size() == 0; }));
    std::lock_guard lock(m);
    REQUIRE(seen.size() == 3);
    CHECK_FALSE(seen[0].first);
    CHECK(seen[0].second == "tenant unavailable");
    CHECK(seen[2].first);
}

TEST_CASE("an undelivered notification survives a restart and is sent then") {
    TempDir dir;
    {
        NotificationOutbox down(
            dir / "n.db", [](const NotificationOutbox::Delivery&) { throw std::runtime_error("down"); },
            [](const NotificationOutbox::Delivery&, bool, const std::string&) {}, 10ms, 20ms);
        down.put("tx-2", "scep.notify_failure", "{}");
        std::this_thread::sleep_for(50ms);
        CHECK(down.size() == 1);
    }
    std::atomic<int> delivered{0};
    NotificationOutbox up(
        dir / "n.db",
        [&](const NotificationOutbox::Delivery& d) {
            if (d.transaction_id == "tx-2") ++delivered;
        },
        [](const NotificationOutbox::Delivery&, bool, const std::string&) {}, 10ms, 20ms);
    REQUIRE(eventually([&] { return up.size() == 0; }));
    CHECK(delivered == 1);
}
