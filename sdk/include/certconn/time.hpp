// certconn/time.hpp: the one way this code base writes a wall-clock time as text.
// Header-only C++ helper for the host and plugins; it does not touch the C ABI.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>

namespace certconn::sdk {

/// Formats `when` as UTC ISO-8601: "2026-12-07T05:54:07Z", or with `milliseconds`
/// "2026-12-07T05:54:07.123Z". Thread-safe (gmtime_r, no shared static buffer).
inline std::string utc_iso8601(std::chrono::system_clock::time_point when, bool milliseconds = false) {
    using namespace std::chrono;
    // Floor, not truncate toward zero, so times before 1970 keep a valid ms field.
    const auto whole = floor<seconds>(when);
    const std::time_t secs = system_clock::to_time_t(whole);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[48];
    int n = 0;
    if (milliseconds) {
        const auto ms = duration_cast<std::chrono::milliseconds>(when - whole).count();
        n = std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                          tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
    } else {
        n = std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                          tm.tm_hour, tm.tm_min, tm.tm_sec);
    }
    // n is the length written; it only fails or overflows for years beyond any real certificate.
    return n > 0 ? std::string(buf, std::min<std::size_t>(static_cast<std::size_t>(n), sizeof buf - 1)) : std::string();
}

}  // namespace certconn::sdk
