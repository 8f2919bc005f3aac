// certconn/http_client.hpp — outbound HTTP(S) for plugins that talk to a remote CA or tenant,
// over libcurl (certconn::http, a static library like certconn::crypto).
//
// What every call gets, so no plugin has to remember it: TLS 1.2 or newer with the peer and
// host name verified (against the system store or `ca_file`), an optional client certificate
// (PEM file, or a key in a PKCS#11 token named by a `pkcs11:` URI), an optional HTTP proxy,
// connect and total timeouts, and a bound on the size of the answer. Errors come back as
// sdk::Error with a status a feature can act on (see status_of_http), and never carry a
// password, PIN or token.
#pragma once

#include <certconn/abi.h>
#include <certconn/secret.hpp>

#include <boost/json.hpp>

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace certconn::http {

enum class Auth { none, basic, ntlm, negotiate };
/// How the proxy credentials are sent: Basic (default), NTLM, or whatever the proxy offers
/// (libcurl picks the safest scheme of its 407 challenge).
enum class ProxyAuth { basic, ntlm, any };

struct Settings {
    std::string ca_file;             ///< PEM bundle that roots the server's chain; empty: the system store
    std::string client_certificate;  ///< PEM file (may also hold the key), or empty
    std::string client_key;          ///< PEM file, or a `pkcs11:` URI (PIN in the URI or in key_pin)
    sdk::Secret key_pin;             ///< PIN of a pkcs11: key, or the passphrase of an encrypted PEM key
    std::string proxy;               ///< "http://host:port" (or https://, socks5://); empty: no proxy
    std::string proxy_username;
    sdk::Secret proxy_password;
    ProxyAuth proxy_auth = ProxyAuth::basic;  ///< scheme for proxy_username/proxy_password
    std::string no_proxy;                     ///< comma-separated hosts (".corp.example" = the domain) reached without the proxy
    Auth auth = Auth::none;                   ///< server authentication (negotiate: Kerberos via GSS-API)
    std::string username;                     ///< basic/ntlm: "user" or "DOMAIN\\user"
    sdk::Secret password;
    std::chrono::milliseconds connect_timeout{10'000};
    std::chrono::milliseconds timeout{60'000};  ///< whole request, answer included
    std::size_t max_response_bytes = 4u << 20;  ///< a longer answer fails the call (UNAVAILABLE)
    std::string user_agent = "certconnector";
};

/// Reads the common keys of a plugin's configuration section (all optional):
///   ca_file, client_certificate, client_key, client_key_pin_file, proxy, proxy_username,
///   proxy_password_file, proxy_auth ("basic"|"ntlm"|"any"), no_proxy, auth ("none"|"basic"|"ntlm"|"negotiate"), username,
///   password_file, connect_timeout_seconds, timeout_seconds, max_response_bytes.
/// Secrets are read from files named in the section (never inline). Errors are sdk::Error
/// INVALID_ARGUMENT naming the key, prefixed with `where` (e.g. "ca.corp").
Settings settings_from_config(const boost::json::object& section, std::string_view where = {});

/// The same keys as schema properties, to splice into a plugin's JSON schema object
/// (docs/plugin-sdk.md, "Configuration schema"): `"{" + std::string(kSchemaProperties) + ", ...}"`.
extern const char* const kSchemaProperties;

struct Header {
    std::string name;
    std::string value;
};

struct Request {
    std::string method = "GET";
    std::string url;
    std::vector<Header> headers;  ///< e.g. {"Content-Type", "application/json"}
    std::string body;
};

struct Response {
    long status = 0;
    std::vector<Header> headers;  ///< of the final answer (after auth round trips)
    std::string body;
    /// The first header of that name (case-insensitive), or nullopt.
    std::optional<std::string> header(std::string_view name) const;
    /// Retry-After as a delay (seconds or an HTTP date), if present and sensible (<= 1 day).
    std::optional<std::chrono::seconds> retry_after() const;
};

/// One configured client; thread-safe (each perform() uses its own easy handle).
class Client {
public:
    explicit Client(Settings settings);
    ~Client();
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    /// Performs the request. Any HTTP status is returned (the caller decides); transport failures
    /// throw sdk::Error: TIMEOUT (timed out), UNAVAILABLE (cannot connect/resolve, TLS failure,
    /// answer too large), INVALID_ARGUMENT (bad URL or settings). The message names the host,
    /// never credentials.
    Response perform(const Request& request) const;

    const Settings& settings() const noexcept { return settings_; }

private:
    Settings settings_;
};

/// The status a non-2xx answer means: 429 → BUSY, 5xx/408 → UNAVAILABLE, 401/403 → DENIED,
/// 404 → NOT_FOUND, 409 → CONFLICT, other 4xx → INVALID_ARGUMENT.
cc_status status_of_http(long http_status);

/// application/x-www-form-urlencoded body from name/value pairs.
std::string form_encode(const std::vector<std::pair<std::string, std::string>>& fields);
/// Percent-encodes one URL component (RFC 3986 unreserved kept).
std::string url_escape(std::string_view text);

}  // namespace certconn::http
