// Strict reading of the update documents (roots, indexes): exact types, bounded strings, no
// unknown keys. Internal to host/update/; every failure is UpdateRefused(malformed) naming the
// document and the field.
#pragma once

#include "update/UpdateRefused.hpp"

#include <boost/json.hpp>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

namespace certconn::host::update::json_fields {

[[noreturn]] inline void malformed(const std::string& what, const std::string& detail) {
    throw UpdateRefused(RefusalReason::malformed, what + ": " + detail);
}

/// The document as a JSON object (UTF-8 checked by Boost.JSON, nesting bounded).
inline boost::json::object parse_object(std::string_view bytes, const std::string& what) {
    boost::system::error_code ec;
    boost::json::parse_options options;
    options.max_depth = 16;
    boost::json::value v = boost::json::parse(bytes, ec, {}, options);
    if (ec) malformed(what, "not valid JSON (" + ec.message() + ")");
    if (!v.is_object()) malformed(what, "expected a JSON object");
    return std::move(v.as_object());
}

/// Refuses keys not in `allowed`: a field this version does not understand is not silently ignored.
inline void only_keys(const boost::json::object& o, std::initializer_list<std::string_view> allowed, const std::string& what) {
    for (const auto& kv : o) {
        bool known = false;
        for (auto a : allowed)
            known = known || kv.key() == a;
        if (!known) malformed(what, "unknown field '" + std::string(kv.key().substr(0, 64)) + "'");
    }
}

inline const boost::json::value& field(const boost::json::object& o, std::string_view key, const std::string& what) {
    const auto* v = o.if_contains(key);
    if (v == nullptr) malformed(what, "missing field '" + std::string(key) + "'");
    return *v;
}

inline std::string string_field(const boost::json::object& o, std::string_view key, const std::string& what,
                                std::size_t max_length = 256) {
    const auto& v = field(o, key, what);
    if (!v.is_string()) malformed(what, "field '" + std::string(key) + "' must be a string");
    const auto& s = v.get_string();
    if (s.size() > max_length)
        malformed(what, "field '" + std::string(key) + "' is longer than " + std::to_string(max_length) + " characters");
    return std::string(s);
}

inline std::uint64_t uint_field(const boost::json::object& o, std::string_view key, const std::string& what,
                                std::uint64_t max = UINT64_MAX) {
    const auto& v = field(o, key, what);
    std::uint64_t n = 0;
    if (v.is_uint64())
        n = v.get_uint64();
    else if (v.is_int64() && v.get_int64() >= 0)
        n = static_cast<std::uint64_t>(v.get_int64());
    else
        malformed(what, "field '" + std::string(key) + "' must be a non-negative integer");
    if (n > max) malformed(what, "field '" + std::string(key) + "' is larger than " + std::to_string(max));
    return n;
}

inline const boost::json::array& array_field(const boost::json::object& o, std::string_view key, const std::string& what) {
    const auto& v = field(o, key, what);
    if (!v.is_array()) malformed(what, "field '" + std::string(key) + "' must be an array");
    return v.get_array();
}

inline const boost::json::object& object_value(const boost::json::value& v, const std::string& what) {
    if (!v.is_object()) malformed(what, "expected a JSON object");
    return v.get_object();
}

}  // namespace certconn::host::update::json_fields
