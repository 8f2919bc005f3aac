// The support policy for a release (the host's or a plugin's): supported for 6 months after
// its release date, working with a warning up to 18 months, then an error.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace certconn::host {

enum class SupportState { Supported, Outdated, Unsupported, Unknown };

struct SupportStatus {
    SupportState state = SupportState::Unknown;
    std::string message;  // e.g. "supported until 2027-05-24"
};

const char* support_state_name(SupportState state);

/// Parses "YYYY-MM-DD"; nullopt when malformed or not a calendar date.
std::optional<std::chrono::sys_days> parse_date(std::string_view text);

SupportStatus support_status(std::string_view release_date, std::chrono::sys_days today);
SupportStatus support_status(std::string_view release_date);  // today = now (UTC)

}  // namespace certconn::host
