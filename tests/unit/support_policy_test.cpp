#include "status/SupportPolicy.hpp"

#include <catch2/catch.hpp>

using namespace certconn::host;
using namespace std::chrono;

TEST_CASE("support: 6 months supported, then outdated until 18 months, then unsupported") {
    const auto date = [](int y, unsigned m, unsigned d) { return sys_days{year{y} / month{m} / std::chrono::day{d}}; };
    CHECK(support_status("2026-01-15", date(2026, 7, 14)).state == SupportState::Supported);
    CHECK(support_status("2026-01-15", date(2026, 7, 15)).state == SupportState::Outdated);
    CHECK(support_status("2026-01-15", date(2027, 7, 14)).state == SupportState::Outdated);
    CHECK(support_status("2026-01-15", date(2027, 7, 15)).state == SupportState::Unsupported);
    CHECK(support_status("2026-08-31", date(2027, 2, 28)).state == SupportState::Outdated);  // Feb has no 31st
    CHECK(support_status("2026-08-31", date(2027, 2, 27)).message == "supported until 2027-02-28");
    CHECK(support_status("2026-13-01", date(2026, 1, 1)).state == SupportState::Unknown);
    CHECK(support_status("yesterday", date(2026, 1, 1)).state == SupportState::Unknown);
}

TEST_CASE("dates are parsed strictly") {
    CHECK(parse_date("2026-02-28"));
    CHECK_FALSE(parse_date("2026-02-30"));
    CHECK_FALSE(parse_date("2026-2-28"));
    CHECK_FALSE(parse_date("2026-02-28x"));
}
