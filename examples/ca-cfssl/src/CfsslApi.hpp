// The few calls of cfssl's HTTP API (cfssl serve, api/v1/cfssl/...) this plugin makes, each a
// typed function. Every call goes through the SDK's HTTP client (certconn/http_client.hpp), and
// every answer is read from cfssl's JSON envelope
//     {"success": bool, "result": ..., "errors": [{"code": n, "message": "..."}], "messages": [...]}
// with a bounded parse. Failures are sdk::Error with a status the host and the features act on.
#pragma once

#include <certconn/http_client.hpp>
#include <certconn/sdk.hpp>
#include <certconn/secret.hpp>

#include <boost/json/value.hpp>

#include <optional>
#include <string>

namespace cfssl_plugin {

class CfsslApi {
public:
    /// `base_url`: "http(s)://host:port" of cfssl serve (or multirootca). `auth_key`: the hex
    /// HMAC key of the cfssl profiles' auth_key; when set, signing goes through authsign.
    /// `label`: the signer label (multirootca), empty for cfssl serve.
    CfsslApi(std::string base_url, certconn::http::Settings settings, std::optional<certconn::sdk::Secret> auth_key,
             std::string label);

    /// POST sign (or authsign): the certificate cfssl signed for `csr_pem` under `profile`
    /// (cfssl's profile name; empty: its default), as PEM.
    std::string sign(const std::string& csr_pem, const std::string& profile) const;

    /// POST revoke: records the revocation in cfssl's certdb. `serial_decimal` as cfssl stores
    /// it; `authority_key_id` empty for cfssl 1.2 (Debian), lower-case hex for later versions.
    void revoke(const std::string& serial_decimal, const std::string& authority_key_id, const std::string& reason) const;

    /// POST info: the signer's certificate (PEM).
    std::string info() const;

    /// GET crl (cfssl 1.3 and later, with a certdb): the CRL (DER), or nullopt when this cfssl has
    /// no such endpoint (cfssl 1.2 answers 404).
    std::optional<std::string> crl() const;

    /// GET an absolute URL (a published CRL); the body, bounded like every answer.
    std::string fetch(const std::string& url) const;

    const std::string& base_url() const { return base_url_; }
    bool authenticated() const { return auth_key_.has_value(); }

private:
    /// POSTs `body` to api/v1/cfssl/<endpoint> and returns the envelope's "result".
    boost::json::value call(const std::string& endpoint, const std::string& body) const;

    std::string base_url_;
    certconn::http::Client client_;
    std::optional<certconn::sdk::Secret> auth_key_;  // raw key bytes (decoded from hex)
    std::string label_;
};

/// Reads a cfssl "standard" auth key (hex, as in cfssl's auth_keys config) from `path`.
certconn::sdk::Secret read_auth_key(const std::string& path, const std::string& config_key);

}  // namespace cfssl_plugin
