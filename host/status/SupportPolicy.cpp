#include "status/SupportPolicy.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <string>
#include <system_error>

namespace certconn::host {

using namespace std::chrono;

namespace {

sys_days add_months(sys_days day, int n) {
    year_month_day ymd{day};
    year_month_day shifted = ymd + months(n);
    if (!shifted.ok()) shifted = shifted.year() / shifted.month() / last;  // Aug 31 + 6 months
    return sys_days{shifted};
}

std::string format(sys_days day) {
    const year_month_day ymd{day};
    char buf[32];
    const int n = std::snprintf(buf, sizeof buf, "%04d-%02u-%02u", static_cast<int>(ymd.year()),
                                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()));
    return n > 0 ? std::string(buf, std::min<std::size_t>(static_cast<std::size_t>(n), sizeof buf - 1)) : std::string();
}

}  // namespace

const char* support_state_name(SupportState state) {
    switch (state) {
        case SupportState::Supported: return "supported";
        case SupportState::Outdated: return "outdated";
        case SupportState::Unsupported: return "unsupported";
        case SupportState::Unknown: return "unknown";
    }
    return "unknown";
}

std::optional<sys_days> parse_date(std::string_view text) {
    // Exactly YYYY-MM-DD, digits only (from_chars reports what sscanf would silently accept).
    if (text.size() != 10 || text[4] != '-' || text[7] != '-') return std::nullopt;
    auto number = [&](std::size_t pos, std::size_t len, auto& out) {
        const char* first = text.data() + pos;
        const auto [end, ec] = std::from_chars(first, first + len, out);
        return ec == std::errc{} && end == first + len;
    };
    int y = 0;
    unsigned m = 0, d = 0;
    if (!number(0, 4, y) || !number(5, 2, m) || !number(8, 2, d)) return std::nullopt;
    const year_month_day ymd{year{y}, month{m}, day{d}};
    if (!ymd.ok()) return std::nullopt;
    return sys_days{ymd};
}

SupportStatus support_status(std::string_view release_date, sys_days today) {
    const auto released = parse_date(release_date);
    if (!released) return {SupportState::Unknown, "release date '" + std::string(release_date) + "' is not YYYY-MM-DD"};
    const sys_days supported_until = add_months(*released, 6);
    const sys_days works_until = add_months(*released, 18);
    if (today < supported_until) return {SupportState::Supported, "supported until " + format(supported_until)};
    if (today < works_until)
        return {SupportState::Outdated,
                "support ended " + format(supported_until) + "; keeps working until " + format(works_until) + " — update"};
    return {SupportState::Unsupported, "past its working period (ended " + format(works_until) + "); update now"};
}

SupportStatus support_status(std::string_view release_date) {
    return support_status(release_date, floor<days>(system_clock::now()));
}

}  // namespace certconn::host
