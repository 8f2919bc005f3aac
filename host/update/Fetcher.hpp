// Fetches repository files: index, roots, signatures and plugins, over https:// (libcurl:
// TLS 1.2 or newer, https only, redirects only to https) or from file:// paths. Every fetch has
// a size cap (the body is abandoned the moment it passes it), a stall timeout (nothing received
// for that long) and a total timeout.
#pragma once

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace certconn::host::update {

enum class FetchFailure {
    NotFound,  // HTTP 404/410, or no such file: the end of a root chain, or a missing file
    Oversize,  // the body passed the cap
    Stalled,   // nothing received for the stall timeout
    Failed,    // anything else: unreachable, TLS, HTTP error status, total timeout
};

class FetchError : public std::runtime_error {
public:
    FetchError(FetchFailure failure, const std::string& message) : std::runtime_error(message), failure(failure) {}
    FetchFailure failure;
};

struct FetchOptions {
    std::size_t max_bytes = std::size_t{4} * 1024 * 1024;
    std::chrono::seconds stall_timeout{30};
    std::chrono::seconds total_timeout{600};
    std::filesystem::path ca_bundle;  // https: CA certificates (PEM); empty = the system's
};

/// The body of `url` (https:// or file://); throws FetchError naming the URL and what happened.
std::string fetch(const std::string& url, const FetchOptions& options);

/// `reference` (absolute, or relative to `base`, a directory URL ending in '/') as an absolute
/// URL; throws std::invalid_argument when either is not a URL.
std::string resolve_url(const std::string& base, const std::string& reference);

/// The scheme of an absolute URL, lower case ("https", "file"), or empty.
std::string url_scheme(const std::string& url);

}  // namespace certconn::host::update
