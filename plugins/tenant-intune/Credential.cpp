// The Entra ID certificate credential: loading (file or PKCS#11 token, or the renewed one in the
// state directory), JWS signing (RS256 / ES256) and the two JWTs the plugin needs.
#include "Credential.hpp"

#include <certconn/errno_message.hpp>

#include <boost/json.hpp>

#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <ctime>

namespace certconn::intune {
namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

std::string base64url(std::string_view data) {
    std::string out = crypto::base64_encode(data);
    out.erase(std::remove(out.begin(), out.end(), '\n'), out.end());
    while (!out.empty() && out.back() == '=')
        out.pop_back();
    for (char& c : out) {
        if (c == '+') c = '-';
        if (c == '/') c = '_';
    }
    return out;
}

std::string digest(std::string_view data, const EVP_MD* md) {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (!EVP_Digest(data.data(), data.size(), out, &n, md, nullptr)) crypto::throw_openssl("cannot hash the certificate");
    return std::string(reinterpret_cast<const char*>(out), n);
}

std::chrono::system_clock::time_point time_of(const ASN1_TIME* t) {
    std::tm tm{};
    if (!ASN1_TIME_to_tm(t, &tm)) throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "the certificate has an unreadable validity date");
    return std::chrono::system_clock::from_time_t(timegm(&tm));
}

std::string key_config_string(const json::object& section, std::string_view key) {
    const auto* v = section.if_contains(key);
    if (!v) return {};
    if (!v->is_string()) throw sdk::Error(CC_ERR_INVALID_ARGUMENT, std::string(key) + ": expected a string");
    return std::string(v->as_string());
}

/// A PEM private key protected by a passphrase (credential_key_pin_file for a file key).
crypto::PKey load_encrypted_pem_key(const std::string& path, const sdk::Secret& passphrase) {
    const std::string pem = crypto::read_file(path, "credential_key");
    crypto::Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    if (!bio) crypto::throw_openssl("out of memory");
    EVP_PKEY* key = PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, const_cast<char*>(passphrase.reveal_c_str()));
    if (!key) {
        ERR_clear_error();
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT,
                         "credential_key: cannot read the private key in " + path +
                             " with the passphrase of credential_key_pin_file (wrong passphrase, or not a PEM key)");
    }
    return crypto::PKey(key);
}

/// The first line of the pin file (the whole file must be small).
sdk::Secret read_pin_file(const std::string& path) {
    std::string text;
    try {
        text = crypto::read_file(path, "credential_key_pin_file");
    } catch (const std::exception& e) {
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, std::string("credential_key_pin_file: ") + e.what());
    }
    if (text.size() > 4096) {
        sdk::wipe(text.data(), text.size());
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT,
                         "credential_key_pin_file: " + path + " is larger than 4096 bytes; expected one line");
    }
    sdk::Secret pin(std::string_view(text).substr(0, text.find_first_of("\r\n")));
    sdk::wipe(text.data(), text.size());
    if (pin.empty()) throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "credential_key_pin_file: " + path + " is empty");
    return pin;
}

const fs::path kRenewedFile = "credential.pem";
constexpr std::string_view kKeyReferencePrefix = "key-reference: ";

}  // namespace

// Exposed to CredentialRenewal.cpp (declared there).
std::shared_ptr<Credential> make_credential(crypto::Cert certificate, crypto::PKey key, std::string key_reference,
                                            const std::string& what) {
    if (!certificate || !key) throw sdk::Error(CC_ERR_INVALID_ARGUMENT, what + ": no certificate or no key");
    const EVP_PKEY* pub = X509_get0_pubkey(certificate.get());
    if (!pub || EVP_PKEY_eq(pub, key.get()) != 1) {
        ERR_clear_error();
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, what + ": the key " + crypto::redact_pkcs11_uri(key_reference) +
                                                      " does not belong to the certificate (its public key differs)");
    }
    const int type = EVP_PKEY_get_base_id(key.get());
    if (type != EVP_PKEY_RSA && type != EVP_PKEY_EC)
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT,
                         what + ": the key is neither RSA nor EC P-256 (JWTs are signed RS256 or ES256)");
    if (type == EVP_PKEY_EC && crypto::key_type_of(key.get()) != "p256")
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT,
                         what + ": an EC credential key must be P-256 (ES256), got " + crypto::key_type_of(key.get()));
    auto c = std::make_shared<Credential>();
    const std::string der = crypto::certificate_der(certificate.get());
    c->x5t = base64url(digest(der, EVP_sha1()));
    c->x5t_s256 = base64url(digest(der, EVP_sha256()));
    c->thumbprint = crypto::fingerprint_hex(certificate.get(), EVP_sha1());
    for (char& ch : c->thumbprint)
        ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    c->not_after = time_of(X509_get0_notAfter(certificate.get()));
    c->certificate = std::move(certificate);
    c->key = std::move(key);
    c->key_reference = std::move(key_reference);
    return c;
}

/// The renewed credential file: the certificate PEM, then the key PEM (or a "key-reference:" line
/// naming a key in a token).
std::string renewed_credential_text(const Credential& c) {
    std::string text = crypto::certificate_pem(c.certificate.get());
    if (crypto::is_pkcs11_uri(c.key_reference))
        text += std::string(kKeyReferencePrefix) + c.key_reference + "\n";
    else
        text += crypto::private_key_pem(c.key.get());
    return text;
}

std::shared_ptr<Credential> load_credential_file(const fs::path& file, const std::string& what) {
    const std::string text = crypto::read_file(file, what);
    crypto::Cert cert;
    try {
        cert = crypto::load_certificate(text);
    } catch (const std::exception& e) {
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, what + " " + file.string() + ": no certificate (" + e.what() + ")");
    }
    if (const auto pos = text.find(kKeyReferencePrefix); pos != std::string::npos) {
        const auto end = text.find('\n', pos);
        const std::string uri = text.substr(pos + kKeyReferencePrefix.size(),
                                            end == std::string::npos ? end : end - pos - kKeyReferencePrefix.size());
        crypto::PKey key;
        try {
            key = crypto::load_private_key_from(uri);
        } catch (const std::exception& e) {
            throw sdk::Error(CC_ERR_UNAVAILABLE, what + " " + file.string() + ": " + crypto::scrub_pin(e.what(), uri));
        }
        return make_credential(std::move(cert), std::move(key), uri, what + " " + file.string());
    }
    crypto::PKey key;
    try {
        key = crypto::load_private_key(text);
    } catch (const std::exception& e) {
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, what + " " + file.string() + ": no private key (" + e.what() + ")");
    }
    return make_credential(std::move(cert), std::move(key), file.string(), what + " " + file.string());
}

void write_credential_file(const fs::path& file, const Credential& c) {
    std::error_code ec;
    fs::create_directories(file.parent_path(), ec);
    if (ec) throw sdk::Error(CC_ERR_INTERNAL, "cannot create " + file.parent_path().string() + ": " + ec.message());
    ::chmod(file.parent_path().c_str(), 0700);
    std::string text = renewed_credential_text(c);
    try {
        crypto::write_file_atomic(file, text, 0600);
    } catch (const std::exception& e) {
        sdk::wipe(text.data(), text.size());
        throw sdk::Error(CC_ERR_INTERNAL, std::string("cannot store the credential: ") + e.what());
    }
    sdk::wipe(text.data(), text.size());
}

std::string sign_jwt(const Credential& credential, const json::object& claims) {
    const int type = EVP_PKEY_get_base_id(credential.key.get());
    const bool ec = type == EVP_PKEY_EC;
    if (!ec && type != EVP_PKEY_RSA) throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "the credential key is neither RSA nor EC");
    json::object header;
    header["alg"] = ec ? "ES256" : "RS256";
    header["typ"] = "JWT";
    header["x5t"] = credential.x5t;
    header["x5t#S256"] = credential.x5t_s256;
    const std::string input = base64url(json::serialize(header)) + "." + base64url(json::serialize(claims));

    const bool token = crypto::is_pkcs11_uri(credential.key_reference);
    auto fail = [&](const std::string& what) -> sdk::Error {
        std::string detail;
        try {
            crypto::throw_openssl(what);
        } catch (const crypto::CryptoError& e) {
            detail = crypto::scrub_pin(e.what(), credential.key_reference);
        }
        // A token key may be absent or its session lost: that passes; a file key that cannot sign does not.
        return sdk::Error(token ? CC_ERR_UNAVAILABLE : CC_ERR_INTERNAL, detail);
    };
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    if (!ctx) throw sdk::Error(CC_ERR_INTERNAL, "out of memory");
    EVP_PKEY_CTX* pctx = nullptr;
    if (EVP_DigestSignInit(ctx.get(), &pctx, EVP_sha256(), nullptr, credential.key.get()) != 1)
        throw fail("cannot sign with the credential key " + crypto::redact_pkcs11_uri(credential.key_reference));
    if (!ec && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1) throw fail("cannot select RSASSA-PKCS1-v1_5");
    size_t size = 0;
    const auto* data = reinterpret_cast<const unsigned char*>(input.data());
    if (EVP_DigestSign(ctx.get(), nullptr, &size, data, input.size()) != 1) throw fail("cannot sign the JWT");
    std::string signature(size, '\0');
    if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &size, data, input.size()) != 1)
        throw fail("cannot sign the JWT with the credential key " + crypto::redact_pkcs11_uri(credential.key_reference));
    signature.resize(size);
    if (ec) {
        // JWS ES256 is r || s, 32 bytes each (RFC 7518 §3.4), not the DER ECDSA-Sig-Value.
        const auto* p = reinterpret_cast<const unsigned char*>(signature.data());
        std::unique_ptr<ECDSA_SIG, decltype(&ECDSA_SIG_free)> sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(signature.size())),
                                                                  ECDSA_SIG_free);
        if (!sig) throw fail("the EC signature is not DER");
        std::string raw(64, '\0');
        if (BN_bn2binpad(ECDSA_SIG_get0_r(sig.get()), reinterpret_cast<unsigned char*>(raw.data()), 32) != 32 ||
            BN_bn2binpad(ECDSA_SIG_get0_s(sig.get()), reinterpret_cast<unsigned char*>(raw.data()) + 32, 32) != 32)
            throw fail("the EC signature does not fit P-256");
        signature = std::move(raw);
    }
    return input + "." + base64url(signature);
}

std::string client_assertion(const Credential& credential, const std::string& client_id, const std::string& token_endpoint) {
    const auto now = static_cast<std::int64_t>(std::time(nullptr));
    json::object claims;
    claims["aud"] = token_endpoint;
    claims["iss"] = client_id;
    claims["sub"] = client_id;
    claims["jti"] = crypto::uuid4();
    claims["nbf"] = now;
    claims["iat"] = now;
    claims["exp"] = now + 600;
    return sign_jwt(credential, claims);
}

std::string proof_of_possession(const Credential& credential, const std::string& application_object_id) {
    const auto now = static_cast<std::int64_t>(std::time(nullptr));
    json::object claims;
    claims["aud"] = "00000002-0000-0000-c000-000000000000";
    claims["iss"] = application_object_id;
    claims["nbf"] = now;
    claims["exp"] = now + 600;
    return sign_jwt(credential, claims);
}

CredentialStore::CredentialStore(const json::object& section, fs::path state_dir) : state_dir_(std::move(state_dir)) {
    const std::string cert_path = key_config_string(section, "credential_certificate");
    std::string key_ref = key_config_string(section, "credential_key");
    const std::string pin_file = key_config_string(section, "credential_key_pin_file");
    if (cert_path.empty() || key_ref.empty())
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT,
                         "a certificate credential needs both credential_certificate and credential_key");
    if (cert_path.front() != '/')
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "credential_certificate: expected an absolute path, got '" + cert_path + "'");
    const bool token = crypto::is_pkcs11_uri(key_ref);
    if (!token && key_ref.front() != '/')
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "credential_key: expected an absolute PEM path or a pkcs11: URI");

    std::shared_ptr<Credential> configured;
    std::string configured_error;
    try {
        std::string pem;
        try {
            pem = crypto::read_file(cert_path, "credential_certificate");
        } catch (const std::exception& e) {
            throw sdk::Error(CC_ERR_INVALID_ARGUMENT, std::string("credential_certificate: ") + e.what());
        }
        crypto::Cert cert;
        try {
            cert = crypto::load_certificate(pem);
        } catch (const std::exception& e) {
            throw sdk::Error(CC_ERR_INVALID_ARGUMENT,
                             "credential_certificate: " + cert_path + " holds no PEM certificate (" + e.what() + ")");
        }
        crypto::PKey key;
        if (token) {
            if (!pin_file.empty() && key_ref.find("pin-value=") == std::string::npos &&
                key_ref.find("pin-source=") == std::string::npos) {
                (void)read_pin_file(pin_file);  // a clear error for a missing or empty file, before the engine sees it
                key_ref += (key_ref.find('?') == std::string::npos ? "?" : "&") + std::string("pin-source=file:") + pin_file;
            }
            try {
                key = crypto::load_private_key_from(key_ref);
            } catch (const std::exception& e) {
                throw sdk::Error(CC_ERR_UNAVAILABLE, std::string("credential_key: ") + crypto::scrub_pin(e.what(), key_ref));
            }
        } else if (!pin_file.empty()) {
            key = load_encrypted_pem_key(key_ref, read_pin_file(pin_file));
        } else {
            try {
                key = crypto::load_private_key_from(key_ref);
            } catch (const std::exception& e) {
                throw sdk::Error(CC_ERR_INVALID_ARGUMENT, std::string("credential_key: ") + e.what());
            }
        }
        configured = make_credential(std::move(cert), std::move(key), key_ref, "credential_certificate/credential_key");
    } catch (const sdk::Error& e) {
        configured_error = e.what();
        if (!fs::exists(state_dir_ / "credential" / kRenewedFile)) throw;
    }

    std::shared_ptr<Credential> renewed;
    const fs::path renewed_file = state_dir_ / "credential" / kRenewedFile;
    if (fs::exists(renewed_file)) {
        // A renewed credential that cannot be read is an error, not a reason to fall back silently:
        // the configured one may already have been removed from the application.
        renewed = load_credential_file(renewed_file, "the renewed credential");
    }
    if (renewed && (!configured || renewed->not_after > configured->not_after))
        current_ = std::move(renewed);
    else
        current_ = std::move(configured);
}

std::shared_ptr<const Credential> CredentialStore::current() const {
    std::lock_guard lock(mutex_);
    return current_;
}

void CredentialStore::switch_to(std::shared_ptr<const Credential> next) {
    if (!next) throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "switch_to: no credential");
    write_credential_file(state_dir_ / "credential" / kRenewedFile, *next);
    std::lock_guard lock(mutex_);
    current_ = std::move(next);
}

}  // namespace certconn::intune
