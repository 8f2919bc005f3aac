// certconn/time.hpp and certconn/backoff.hpp: the one time formatter and the one retry delay
// policy that the host and plugins share.
#include <certconn/backoff.hpp>
#include <certconn/time.hpp>

#include <catch2/catch.hpp>

#include <chrono>

using certconn::sdk::Backoff;
using certconn::sdk::utc_iso8601;
using namespace std::chrono;

namespace {

// 2026-11-25T22:30:01.042Z
const system_clock::time_point kFixed = system_clock::time_point(seconds(1795645801)) + milliseconds(42);

}  // namespace

TEST_CASE("utc_iso8601 formats a fixed time point in UTC, seconds only by default", "[sdk][time]") {
    CHECK(utc_iso8601(kFixed) == "2026-11-25T22:30:01Z");
    CHECK(utc_iso8601(system_clock::time_point{}) == "1970-01-01T00:00:00Z");
}

TEST_CASE("utc_iso8601 with milliseconds keeps three digits", "[sdk][time]") {
    CHECK(utc_iso8601(kFixed, true) == "2026-11-25T22:30:01.042Z");
    CHECK(utc_iso8601(system_clock::time_point{}, true) == "1970-01-01T00:00:00.000Z");
    // Before the epoch the millisecond field still counts forward within its second.
    CHECK(utc_iso8601(system_clock::time_point{} - milliseconds(1), true) == "1969-12-31T23:59:59.999Z");
}

TEST_CASE("Backoff doubles from the initial delay, attempt 1 being the initial delay", "[sdk][backoff]") {
    const Backoff b{milliseconds(100), milliseconds(100000), 0.0};
    CHECK(b.delay(1) == milliseconds(100));
    CHECK(b.delay(2) == milliseconds(200));
    CHECK(b.delay(3) == milliseconds(400));
    CHECK(b.delay(8) == milliseconds(12800));
}

TEST_CASE("Backoff stops at the cap, even for huge attempt numbers", "[sdk][backoff]") {
    const Backoff b{milliseconds(100), milliseconds(1000), 0.0};
    CHECK(b.delay(4) == milliseconds(800));
    CHECK(b.delay(5) == milliseconds(1000));
    CHECK(b.delay(6) == milliseconds(1000));
    CHECK(b.delay(1000) == milliseconds(1000));
    CHECK(b.delay(2147483647) == milliseconds(1000));
}

TEST_CASE("Backoff treats attempt <= 0 as the first attempt", "[sdk][backoff]") {
    const Backoff b{milliseconds(250), milliseconds(1000), 0.0};
    CHECK(b.delay(0) == milliseconds(250));
    CHECK(b.delay(-5) == milliseconds(250));
}

TEST_CASE("Backoff jitter stays within the fraction around the capped delay", "[sdk][backoff]") {
    const Backoff b{milliseconds(1000), milliseconds(60000), 0.2};
    bool varied = false;
    milliseconds first{};
    for (int i = 0; i < 500; ++i) {
        const auto d1 = b.delay(1);
        CHECK(d1 >= milliseconds(800));
        CHECK(d1 <= milliseconds(1200));
        const auto capped = b.delay(30);
        CHECK(capped >= milliseconds(48000));
        CHECK(capped <= milliseconds(72000));
        if (i == 0)
            first = d1;
        else if (d1 != first)
            varied = true;
    }
    CHECK(varied);
}
