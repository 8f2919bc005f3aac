// certconn/job.hpp — reading the tenant's job documents in a feature plugin (docs/tenant-protocol.md).
// Header-only; needs Boost.JSON, which sdk.hpp itself does not.
#pragma once

#include <certconn/sdk.hpp>

#include <boost/json/object.hpp>

#include <initializer_list>
#include <string>

namespace certconn::sdk {

/// The first of `keys` present (and not null) in `o`, as a string, or `fallback` when none is.
/// A present value that is not a string is an INVALID_ARGUMENT Error naming the key. Several
/// keys let a feature accept its own field name and the tenant's (e.g. "serial", "serialNumber").
inline std::string string_field(const boost::json::object& o, std::initializer_list<const char*> keys,
                                std::string fallback = {}) {
    for (const char* key : keys) {
        const auto* v = o.if_contains(key);
        if (!v || v->is_null()) continue;
        if (!v->is_string()) throw Error(CC_ERR_INVALID_ARGUMENT, std::string("'") + key + "' must be a string");
        return std::string(v->as_string());
    }
    return fallback;
}

/// Which run of a job this is: the host counts attempts and stops at max_attempts.
struct Attempt {
    int number = 1;
    int max = 1;
    bool may_retry() const { return number < max; }
};

inline Attempt attempt_of(const boost::json::object& job) {
    Attempt a;
    if (const auto* n = job.if_contains("attempt"); n && n->is_int64()) a.number = static_cast<int>(n->as_int64());
    if (const auto* m = job.if_contains("max_attempts"); m && m->is_int64()) a.max = static_cast<int>(m->as_int64());
    return a;
}

}  // namespace certconn::sdk
