// Entra ID sign-in (client credentials: a secret or a signed client assertion), Graph service
// discovery and the calls to Intune's services, all through the SDK's HTTP client.
#pragma once

#include "Config.hpp"
#include "Credential.hpp"

#include <certconn/http_client.hpp>
#include <certconn/sdk.hpp>

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace certconn::intune {

class IntuneClient {
public:
    /// `credentials` is null with a client secret (config.client_secret).
    IntuneClient(sdk::Host& host, const Config& config, CredentialStore* credentials);

    /// An access token for `scope`, from the cache unless it expires within 5 minutes.
    std::string token(const std::string& scope);
    /// Drops the cached token of `scope` (after a 401).
    void drop_token(const std::string& scope);
    /// Signs in with `credential` (not the current one) and discards the token: the renewer's test.
    void test_sign_in(const Credential& credential);

    /// A Graph call with an app-only token (path below graph_url, e.g. "/v1.0/applications...");
    /// the parsed JSON answer (null for an empty 204). Retries once after a 401 with a new token.
    boost::json::value graph(const std::string& method, const std::string& path, const std::string& body);

    /// The URI of Intune service `name` (e.g. "ScepRequestValidationFEService"), discovering
    /// (or refreshing, at most once a minute) when unknown. Throws UNAVAILABLE when Intune does
    /// not list it.
    std::string service_uri(const std::string& name);
    /// Discovers the service endpoints now; returns how many. Throws on failure.
    std::size_t discover();

    /// POST `body` to `{service uri}/{path}` with the Intune headers; the parsed JSON object of a
    /// 2xx answer. Non-2xx answers and transport failures throw sdk::Error (Protocol.hpp mapping);
    /// a 401 is retried once with a new token. `request_id` labels the 604 event.
    boost::json::value call(const std::string& service, const std::string& api_version, const std::string& path,
                            const boost::json::object& body, const std::string& request_id);

    struct Status {
        std::optional<std::chrono::system_clock::time_point> signed_in;   ///< last token obtained
        std::optional<std::chrono::system_clock::time_point> discovered;  ///< last discovery
        std::string sign_in_error;                                        ///< the last sign-in failure, cleared by a success
        std::string discovery_error;                                      ///< the last discovery failure, cleared by a success
        std::string last_error;                                           ///< the last failure of any call
        std::size_t services = 0;
    };
    Status status() const;

private:
    struct Token {
        std::string value;
        std::chrono::steady_clock::time_point expires;
    };
    Token fetch_token(const std::string& scope, const Credential* credential);
    boost::json::value parse_answer(const http::Response& response, const std::string& what) const;
    void note_error(const std::string& message);
    bool may_refresh_discovery();

    sdk::Host& host_;
    const Config& config_;
    CredentialStore* credentials_;
    http::Client client_;

    mutable std::mutex mutex_;
    std::map<std::string, Token> tokens_;
    std::map<std::string, std::string> services_;  // lower-cased providerName -> uri
    std::chrono::steady_clock::time_point last_discovery_attempt_{};
    bool discovery_stale_ = true;
    Status status_;
    std::mutex discovery_mutex_;  // one discovery at a time
};

}  // namespace certconn::intune
