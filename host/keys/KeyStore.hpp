// Connector keys: named RSA key pairs the connector decrypts with (an administrator encrypts an
// imported PFX's password to one). A key lives in the store directory as <name>.pem (0600), or
// elsewhere — a PKCS#11 token object or a PEM file several connectors share — referenced by
// <name>.ref, one line holding the pkcs11: URI or the absolute path.
#pragma once

#include <certconn/crypto.hpp>

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace certconn::host {

/// OAEP paddings accepted for connector-key decryption: "oaep-sha256" (also Intune's
/// "oaepSha256"), "oaep-sha384", "oaep-sha512". PKCS#1 v1.5 and OAEP-SHA1 are refused.
const EVP_MD* oaep_digest(const std::string& padding);

struct KeyInfo {
    std::string name;
    std::string location;  // "file" or "pkcs11"; a reference shows its target (PIN redacted)
    std::string key_type;  // "rsa3072", ...; empty when the key cannot be loaded now
    std::string spki_sha256;
    std::string problem;  // why it cannot be loaded, when it cannot
};

class KeyStore {
public:
    explicit KeyStore(std::filesystem::path directory);

    /// Generates an RSA key: in the store directory, or in the token `pkcs11_uri` names
    /// (on the token, never extractable), then referenced. Returns its public key (PEM).
    std::string create(const std::string& name, int bits, const std::optional<std::string>& pkcs11_uri);
    /// References an existing key (a pkcs11: URI or an absolute PEM path) under `name`.
    std::string add(const std::string& name, const std::string& path_or_uri);
    std::vector<KeyInfo> list();
    std::string public_pem(const std::string& name);
    bool holds(const std::string& name) const;
    /// RSA-OAEP decryption with key `name`. Throws KeyNotHeld, or std::runtime_error when the
    /// key cannot be used now (token missing), or std::invalid_argument for a bad ciphertext.
    std::string decrypt(const std::string& name, const std::string& padding, std::string_view ciphertext);

    const std::filesystem::path& directory() const { return directory_; }

    class KeyNotHeld : public std::runtime_error {
    public:
        using std::runtime_error::runtime_error;
    };

private:
    static void check_name(const std::string& name);
    std::shared_ptr<crypto::PKey> load(const std::string& name);

    std::filesystem::path directory_;
    std::mutex mutex_;
    std::map<std::string, std::shared_ptr<crypto::PKey>> cache_;
};

/// Generates an RSA key pair on the PKCS#11 token `uri` names (token attributes select it, the
/// PIN comes from pin-value or pin-source), labelled `label`. Returns the URI of the private
/// key object (with the PIN attribute of `uri`, if any).
std::string pkcs11_generate_rsa(const std::string& uri, const std::string& label, int bits);

/// `uri` as it may be shown (crypto::redact_pkcs11_uri: parsed by p11-kit, PIN removed), for
/// messages and listings.
std::string redact_pin(const std::string& uri);

}  // namespace certconn::host
