// certconn/errno_message.hpp: the text of an errno value, thread-safe (std::strerror and
// std::system_category().message() in libstdc++ 12 may share one static buffer between threads).
// Header-only C++ helper; it does not touch the C ABI.
#pragma once

#include <string>

#include <string.h>

namespace certconn::sdk {

namespace detail {
// strerror_r comes in two flavours: GNU (returns the text, maybe not in buf) and XSI (fills buf).
inline const char* strerror_result(const char* text, const char* /*buf*/) {
    return text;
}
inline const char* strerror_result(int rc, const char* buf) {
    return rc == 0 ? buf : "unknown error";
}
}  // namespace detail

/// "No such file or directory" for ENOENT; safe to call from any thread.
inline std::string errno_message(int err) {
    char buf[256] = {0};
    return detail::strerror_result(strerror_r(err, buf, sizeof buf), buf);
}

}  // namespace certconn::sdk
