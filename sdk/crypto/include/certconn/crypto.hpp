// certconn::crypto — the small OpenSSL toolkit plugins share: RAII handles, key generation
// and loading, CSRs, PKCS#12 and CMS EnvelopedData. Every ASN.1 structure is built by OpenSSL.
// Functions throw CryptoError (OpenSSL's error queue included) or std::invalid_argument for
// bad input, with a message naming what was wrong.
#pragma once

#include <certconn/secret.hpp>

#include <openssl/cms.h>
#include <openssl/evp.h>
#include <openssl/pkcs12.h>
#include <openssl/provider.h>
#include <openssl/x509.h>

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace certconn::crypto {

template <auto Free>
struct Deleter {
    template <class T>
    void operator()(T* p) const noexcept {
        Free(p);
    }
};
using PKey = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY_free>>;
using Cert = std::unique_ptr<X509, Deleter<X509_free>>;
using Request = std::unique_ptr<X509_REQ, Deleter<X509_REQ_free>>;
using Name = std::unique_ptr<X509_NAME, Deleter<X509_NAME_free>>;
using Cms = std::unique_ptr<CMS_ContentInfo, Deleter<CMS_ContentInfo_free>>;
using Pkcs12 = std::unique_ptr<PKCS12, Deleter<PKCS12_free>>;
using Bio = std::unique_ptr<BIO, Deleter<BIO_free_all>>;

class CryptoError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// Throws CryptoError("<what>: <OpenSSL's error queue>") and clears the queue.
[[noreturn]] void throw_openssl(const std::string& what);

// ---- keys ------------------------------------------------------------------------------
/// "rsa2048", "rsa3072", "rsa4096", "p256", "p384".
PKey generate_key(std::string_view key_type);
bool is_key_type(std::string_view key_type);
/// The key type name of `key` ("rsa2048", "p256", ...; "rsa<bits>" or "ec-<curve>" otherwise).
std::string key_type_of(const EVP_PKEY* key);
PKey load_private_key(std::string_view pem);
/// A public key from PEM: "PUBLIC KEY", "RSA PUBLIC KEY" or a certificate's key.
PKey load_public_key(std::string_view pem);
std::string private_key_pem(const EVP_PKEY* key);
std::string public_key_pem(const EVP_PKEY* key);
/// `key` as encrypted PKCS#8 PEM ("ENCRYPTED PRIVATE KEY"): PBES2 with AES-256-CBC and a key
/// derived from `passphrase` with PBKDF2 — for key material kept where others may read it (a
/// shared store). Throws std::invalid_argument for an empty passphrase.
std::string encrypt_private_key_pem(EVP_PKEY* key, std::string_view passphrase);
/// The key of an encrypted PKCS#8 PEM. Throws CryptoError naming `what` ("<what> is not an
/// encrypted PKCS#8 PEM key", "<what> does not decrypt with this passphrase ...") — never the
/// passphrase, and never prompts on a terminal.
PKey decrypt_private_key_pem(std::string_view pem, std::string_view passphrase, std::string_view what = "the private key");
/// Loads a private key from a `pkcs11:` URI through OpenSSL's pkcs11 engine, else from a PEM file.
/// Error messages show the URI redacted (redact_pkcs11_uri) and never the PIN.
PKey load_private_key_from(const std::string& path_or_uri);

// ---- PKCS#11 URIs (RFC 7512) -------------------------------------------------------------
/// `text` as it may be shown in a message, event, status or log: a `pkcs11:` URI is parsed by
/// p11-kit and formatted again without its PIN: a pin-value becomes "pin-value=***" (wherever
/// it stood, percent-encoded or not); a pin-source keeps its path (the file's contents are
/// never read here); attributes p11-kit does not know are dropped; a URI p11-kit cannot parse
/// is not shown at all. Anything else (a file path) is returned unchanged.
std::string redact_pkcs11_uri(std::string_view text);
/// True when `text` starts with "pkcs11:" (in any case).
bool is_pkcs11_uri(std::string_view text);
/// The PIN a `pkcs11:` URI carries: its pin-value, else the contents of its pin-source file
/// ("file:" prefix optional; trailing newlines removed); empty when it carries neither.
/// Throws std::invalid_argument for an unparseable URI or an unreadable pin-source (the
/// message names the URI redacted and the file, never its contents).
sdk::Secret pkcs11_pin(std::string_view uri);
/// `message` with every occurrence of the PIN `uri` carries replaced by "***": a last line of
/// defence for text from libraries (OpenSSL's error queue, the pkcs11 engine) that might echo
/// it. PINs shorter than 4 characters are left alone (any digit would match them).
std::string scrub_pin(std::string message, std::string_view uri) noexcept;

// ---- certificates ----------------------------------------------------------------------
Cert load_certificate(std::string_view pem);
/// Every certificate in a PEM bundle, in order.
std::vector<Cert> load_certificates(std::string_view pem);
std::string certificate_pem(const X509* cert);
std::string certificate_der(const X509* cert);
std::string fingerprint_hex(const X509* cert, const EVP_MD* md);  // lower-case hex
std::string serial_hex(const X509* cert);                         // upper-case hex, no leading zeros
std::string name_string(const X509_NAME* name);                   // RFC 2253
std::string time_iso8601(const ASN1_TIME* time);                  // 2026-11-24T22:30:01Z

// ---- names and CSRs --------------------------------------------------------------------
/// "CN=Alice,O=Example" (first attribute first) or "/CN=Alice/O=Example"; "\," escapes.
Name parse_name(std::string_view dn);

struct SubjectAltName {
    std::string type;  // email, upn, dns, uri, ip
    std::string value;
};
/// "email:a@b" -> {email, a@b}; throws std::invalid_argument on an unknown type.
SubjectAltName parse_san(std::string_view type_colon_value);
/// Adds the subjectAltName extension (UPN as the Microsoft otherName) to `exts`.
void add_san_extension(STACK_OF(X509_EXTENSION) * exts, const std::vector<SubjectAltName>& sans);
/// The SANs of a CSR or certificate extension list.
std::vector<SubjectAltName> read_sans(const STACK_OF(X509_EXTENSION) * exts);

std::string make_csr_pem(EVP_PKEY* key, std::string_view subject_dn, const std::vector<SubjectAltName>& sans);
Request load_csr(std::string_view pem);

// ---- PKCS#12 ---------------------------------------------------------------------------
/// Key + leaf + chain. Modern: AES-256-CBC with PBKDF2, SHA-256 MAC. Legacy: 3DES, SHA-1 MAC.
std::string pkcs12_der(EVP_PKEY* key, X509* leaf, const std::vector<Cert>& chain, const std::string& password, bool legacy,
                       std::string_view friendly_name = {});
std::string pkcs12_der(EVP_PKEY* key, X509* leaf, const std::vector<Cert>& chain, const sdk::Secret& password, bool legacy,
                       std::string_view friendly_name = {});

struct Pkcs12Contents {
    PKey key;
    Cert certificate;         // the certificate of `key` (matched, not merely the first)
    std::vector<Cert> chain;  // the other certificates in the file
};
/// Opens a PKCS#12 (PBES2 or the classic 3DES/RC2 schemes; RC2 needs LegacyProviders).
/// Throws std::invalid_argument: wrong password (MAC), no key, or no certificate of that key.
Pkcs12Contents pkcs12_open(std::string_view der, const std::string& password);
Pkcs12Contents pkcs12_open(std::string_view der, const sdk::Secret& password);

/// OpenSSL's legacy provider (single DES, RC2-40 PKCS#12), loaded while an instance lives.
/// Loading any provider explicitly turns off the implicit default one, so "default" is
/// loaded beside it.
class LegacyProviders {
public:
    LegacyProviders();
    ~LegacyProviders();
    LegacyProviders(const LegacyProviders&) = delete;
    LegacyProviders& operator=(const LegacyProviders&) = delete;

private:
    OSSL_PROVIDER* legacy_ = nullptr;
    OSSL_PROVIDER* default_ = nullptr;
};

// ---- CMS EnvelopedData -----------------------------------------------------------------
/// A recipient: a certificate (identified by issuer and serial), or a bare public key
/// (identified by subjectKeyIdentifier = SHA-1 of the key).
struct Recipient {
    static Recipient from_pem(std::string_view pem);  // certificate or public key
    Cert certificate;
    bool key_only = false;
};
/// EnvelopedData (DER) of `content` for `recipient`: AES-256-CBC; RSA-OAEP(SHA-256) key
/// transport for RSA, ECDH (SHA-256 KDF) key agreement for EC.
std::string cms_encrypt(std::string_view content, const Recipient& recipient);
/// Decrypts EnvelopedData (DER) with `key`; throws CryptoError when no recipient matches.
std::string cms_decrypt(std::string_view der, EVP_PKEY* key);

// ---- files holding key material ---------------------------------------------------------
/// The whole file; throws std::invalid_argument("cannot read <what> <path>").
std::string read_file(const std::filesystem::path& path, std::string_view what = "file");
/// The passphrase held in `path` (a `shared_key_file`): the file's text without trailing
/// whitespace (newline, CR, blanks). Throws std::invalid_argument("<what> <path>: ...") when the
/// file cannot be read, is readable or writable by others (mode & 007), is longer than 4096
/// bytes, is empty, or holds fewer than 16 characters. The message never holds the passphrase.
std::string read_passphrase_file(const std::filesystem::path& path, std::string_view what = "the passphrase file");
/// Writes atomically and durably (temporary file + fsync + rename + fsync of the directory)
/// with `mode` set before any byte is written, so a key is never readable by others, not even
/// for a moment.
void write_file_atomic(const std::filesystem::path& path, std::string_view data, mode_t mode = 0600);

// ---- encodings and randomness ----------------------------------------------------------
std::string base64_encode(std::string_view data);
std::string base64_decode(std::string_view text);  // throws std::invalid_argument
std::string hex_encode(std::string_view data);
std::string random_bytes(std::size_t n);
/// A random (version 4) UUID.
std::string uuid4();

}  // namespace certconn::crypto
