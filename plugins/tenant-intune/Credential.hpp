// The connector's Entra ID application credential (a certificate and its key, in a file or a
// PKCS#11 token), the JWTs it signs (client assertions for the token endpoint, proof-of-
// possession tokens for Graph addKey/removeKey), and its automatic renewal before expiry.
#pragma once

#include <certconn/crypto.hpp>
#include <certconn/sdk.hpp>

#include <boost/json/object.hpp>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace certconn::intune {

/// One certificate credential: the certificate registered on the application and its key.
struct Credential {
    crypto::Cert certificate;
    crypto::PKey key;           // file key, or a handle into the token (pkcs11 engine)
    std::string key_reference;  // the file path or the pkcs11: URI (redact before showing)
    std::string x5t;            // base64url(SHA-1 of the certificate DER): the JWT header
    std::string x5t_s256;       // base64url(SHA-256 of the certificate DER)
    std::string thumbprint;     // SHA-1 hex, upper-case (what the Entra portal shows)
    std::chrono::system_clock::time_point not_after;
};

/// Signs a compact JWS (RS256 for RSA keys, ES256 for P-256) over `claims` with `credential`,
/// header {"alg", "typ": "JWT", "x5t", "x5t#S256"}. Throws sdk::Error (UNAVAILABLE when a token
/// key cannot sign now).
std::string sign_jwt(const Credential& credential, const boost::json::object& claims);

/// The client assertion for `token_endpoint` (RFC 7523 / Entra ID certificate credentials):
/// aud = token endpoint, iss = sub = client_id, jti = a new UUID, nbf = iat = now, exp = now + 10 min.
std::string client_assertion(const Credential& credential, const std::string& client_id, const std::string& token_endpoint);

/// The Graph addKey/removeKey proof: aud "00000002-0000-0000-c000-000000000000", iss = the
/// application's object id, nbf = now, exp = now + 10 min, signed by a key the application
/// already has.
std::string proof_of_possession(const Credential& credential, const std::string& application_object_id);

/// Holds the current credential; thread-safe. Reads the configured `credential_certificate` /
/// `credential_key` (/ `credential_key_pin_file`), unless a renewed credential in
/// `<state_dir>/credential/` (written by the renewer, key 0600) is newer.
class CredentialStore {
public:
    CredentialStore(const boost::json::object& section, std::filesystem::path state_dir);
    std::shared_ptr<const Credential> current() const;
    /// Makes `next` current (and durable in the state directory before returning).
    void switch_to(std::shared_ptr<const Credential> next);

private:
    mutable std::mutex mutex_;
    std::shared_ptr<const Credential> current_;
    std::filesystem::path state_dir_;
};

/// What the renewer needs from the rest of the plugin: a Graph call with an app-only token
/// (method, path below graph_url e.g. "/v1.0/applications(appId='...')/addKey", JSON body) that
/// returns the parsed JSON answer or throws sdk::Error; and the application's object id.
struct GraphAccess {
    std::function<boost::json::value(const std::string& method, const std::string& path, const std::string& body)> call;
    std::function<std::string()> application_object_id;  // GET /v1.0/applications(appId='..')?$select=id when not configured
};

/// Renews the credential before expiry (renew_before_days): a new key (a file 0600 in the state
/// directory, or a new key object in the same token), a self-signed certificate for it
/// (credential_validity_days), addKey with a proof signed by the current key, a test sign-in
/// with the new one, switch, removeKey of the old keyId. Events 610-616 for each step; a failed
/// step retries (backoff) and warns (616) from warn_before_days before expiry. One background thread.
class CredentialRenewer {
public:
    using SignInTest = std::function<void(const Credential&)>;  // throws when the credential cannot sign in
    CredentialRenewer(sdk::Host& host, const boost::json::object& section, CredentialStore& store, GraphAccess graph,
                      SignInTest sign_in);
    ~CredentialRenewer();
    void start();
    void stop();
    /// Renews now whatever the expiry (tests, `certconnector tenant renew-credential`).
    void renew_now();
    /// {"renewal": "idle|renewing|failed", "not_after", "last_error", "next_check"} for health/status.
    boost::json::object state() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace certconn::intune
