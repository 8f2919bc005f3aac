#include "update/Semver.hpp"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace certconn::host::update {

namespace {

constexpr std::size_t kMaxVersionText = 256;

struct Parsed {
    std::uint64_t major = 0, minor = 0, patch = 0;
    std::vector<std::string_view> prerelease;  // empty: a release
};

bool is_digits(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool is_identifier_char(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-';
}

/// Dot-separated identifiers, none empty; numeric ones without leading zeros when `numeric_rule`.
std::optional<std::vector<std::string_view>> identifiers(std::string_view s, bool numeric_rule) {
    std::vector<std::string_view> out;
    while (true) {
        const auto dot = s.find('.');
        const std::string_view id = s.substr(0, dot);
        if (id.empty() || !std::all_of(id.begin(), id.end(), is_identifier_char)) return std::nullopt;
        if (numeric_rule && is_digits(id) && id.size() > 1 && id[0] == '0') return std::nullopt;
        out.push_back(id);
        if (dot == std::string_view::npos) break;
        s.remove_prefix(dot + 1);
    }
    return out;
}

std::optional<std::uint64_t> number(std::string_view s) {
    if (!is_digits(s) || (s.size() > 1 && s[0] == '0')) return std::nullopt;
    std::uint64_t v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || end != s.data() + s.size()) return std::nullopt;
    return v;
}

std::optional<Parsed> parse(std::string_view text) {
    if (text.empty() || text.size() > kMaxVersionText) return std::nullopt;
    std::string_view core = text;
    if (const auto plus = core.find('+'); plus != std::string_view::npos) {
        if (!identifiers(core.substr(plus + 1), false)) return std::nullopt;
        core = core.substr(0, plus);
    }
    Parsed p;
    if (const auto dash = core.find('-'); dash != std::string_view::npos) {
        auto pre = identifiers(core.substr(dash + 1), true);
        if (!pre) return std::nullopt;
        p.prerelease = std::move(*pre);
        core = core.substr(0, dash);
    }
    const auto d1 = core.find('.');
    if (d1 == std::string_view::npos) return std::nullopt;
    const auto d2 = core.find('.', d1 + 1);
    if (d2 == std::string_view::npos) return std::nullopt;
    const auto ma = number(core.substr(0, d1));
    const auto mi = number(core.substr(d1 + 1, d2 - d1 - 1));
    const auto pa = number(core.substr(d2 + 1));
    if (!ma || !mi || !pa) return std::nullopt;
    p.major = *ma;
    p.minor = *mi;
    p.patch = *pa;
    return p;
}

Parsed parse_or_throw(std::string_view text) {
    auto p = parse(text);
    if (!p)
        throw std::invalid_argument("'" + std::string(text.substr(0, 64)) +
                                    "' is not a semantic version (MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD])");
    return *p;
}

int compare_identifier(std::string_view a, std::string_view b) {
    const bool na = is_digits(a);
    const bool nb = is_digits(b);
    if (na && nb) {  // numerically: compare length first (no leading zeros), then digits
        if (a.size() != b.size()) return a.size() < b.size() ? -1 : 1;
        return a.compare(b) < 0 ? -1 : (a == b ? 0 : 1);
    }
    if (na != nb) return na ? -1 : 1;  // numeric identifiers have lower precedence
    const int c = a.compare(b);        // ASCII order
    return c < 0 ? -1 : (c == 0 ? 0 : 1);
}

}  // namespace

bool is_semver(std::string_view text) {
    return parse(text).has_value();
}

int compare_versions(std::string_view a, std::string_view b) {
    const Parsed pa = parse_or_throw(a);
    const Parsed pb = parse_or_throw(b);
    for (const auto& [x, y] : {std::pair{pa.major, pb.major}, std::pair{pa.minor, pb.minor}, std::pair{pa.patch, pb.patch}})
        if (x != y) return x < y ? -1 : 1;
    // A release has higher precedence than any of its pre-releases.
    if (pa.prerelease.empty() || pb.prerelease.empty()) {
        if (pa.prerelease.empty() == pb.prerelease.empty()) return 0;
        return pa.prerelease.empty() ? 1 : -1;
    }
    const std::size_t n = std::min(pa.prerelease.size(), pb.prerelease.size());
    for (std::size_t i = 0; i < n; ++i)
        if (const int c = compare_identifier(pa.prerelease[i], pb.prerelease[i]); c != 0) return c;
    if (pa.prerelease.size() == pb.prerelease.size()) return 0;
    return pa.prerelease.size() < pb.prerelease.size() ? -1 : 1;
}

}  // namespace certconn::host::update
