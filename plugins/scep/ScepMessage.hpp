// SCEP (RFC 8894) PKIMessages: parsing a client's signed, enveloped request and building the
// RA-signed CertRep answer. Every ASN.1 structure is OpenSSL's (CMS and PKCS#7).
#pragma once

#include <certconn/crypto.hpp>

#include <openssl/provider.h>

#include <optional>
#include <string>
#include <vector>

namespace certconn::scep {

enum class MessageType { CertRep = 3, RenewalReq = 17, PKCSReq = 19, CertPoll = 20, GetCert = 21, GetCRL = 22 };
enum class FailInfo { BadAlg = 0, BadMessageCheck = 1, BadRequest = 2, BadTime = 3, BadCertId = 4 };

/// Thrown when a message cannot be parsed far enough to answer with a signed CertRep.
class MalformedMessage : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// A request whose outer signature verified. `inner` is the decrypted content (a PKCS#10 for
/// PKCSReq/RenewalReq) when decryption succeeded; `decrypt_error` says why it did not.
struct PkiRequest {
    MessageType type = MessageType::PKCSReq;
    std::string transaction_id;
    std::string sender_nonce;
    crypto::Cert signer;                 // the client's (usually self-signed) certificate
    const EVP_MD* digest = nullptr;      // the request's digest: the reply uses the same
    const EVP_CIPHER* cipher = nullptr;  // the cipher for the reply's envelope
    std::string cipher_name;
    std::optional<std::string> inner;
    std::string decrypt_error;
    bool refused_cipher = false;  // decryptable, but the profile does not accept its cipher
};

using LegacyProviders = crypto::LegacyProviders;

/// Parses and verifies `der`; decrypts its envelope with the RA key (`ra_cert` is not used to
/// pick the recipient: see ScepMessage.cpp). Throws MalformedMessage.
/// Single DES decrypts only while a LegacyProviders instance exists.
PkiRequest parse_request(std::string_view der, EVP_PKEY* ra_key, X509* ra_cert, bool allow_single_des);

/// How strong a message digest is for SCEP's purposes: 0 = refused everywhere (MD5, unknown),
/// 1 = SHA-1 (only where a profile sets min_digest = "sha1"), 2 = SHA-2 or SHA-3.
int digest_strength(const EVP_MD* md);
/// The digest a CertRep is signed with: the request's when it is SHA-1 or stronger, otherwise
/// SHA-256 — a reply is never signed with MD5.
const EVP_MD* reply_digest(const EVP_MD* requested);

/// CertRep SUCCESS carrying `certificates` (issued certificate first), encrypted to the requester.
std::string success_reply(const PkiRequest& req, const std::vector<X509*>& certificates, X509* ra_cert, EVP_PKEY* ra_key);
/// CertRep SUCCESS carrying `degenerate` (a certs-only or CRL-only PKCS#7), encrypted to the requester.
std::string success_reply_content(const PkiRequest& req, const std::string& degenerate, X509* ra_cert, EVP_PKEY* ra_key);
/// CertRep PENDING: the request waits for approval; the client polls with CertPoll.
std::string pending_reply(const PkiRequest& req, X509* ra_cert, EVP_PKEY* ra_key);
/// CertRep FAILURE with `info`.
std::string failure_reply(const PkiRequest& req, FailInfo info, X509* ra_cert, EVP_PKEY* ra_key);

/// A degenerate (certificates-only) PKCS#7 SignedData, as GetCACert and CertRep carry.
std::string certs_only(const std::vector<X509*>& certificates);

/// A degenerate PKCS#7 SignedData carrying one CRL (DER), as a GetCRL reply carries.
std::string crl_only(std::string_view crl_der);

/// GetNextCACert's answer: the rollover certificates as a degenerate PKCS#7, itself the
/// content of a SignedData signed by the current RA (RFC 8894 §4.7).
std::string next_ca_reply(const std::vector<X509*>& certificates, X509* ra_cert, EVP_PKEY* ra_key);

/// The IssuerAndSerialNumber of a GetCert or GetCRL request; nullopt when `der` is not one.
struct IssuerAndSerial {
    crypto::Name issuer;
    std::string serial_hex;  // upper case, as BN_bn2hex
};
std::optional<IssuerAndSerial> issuer_and_serial(std::string_view der);

/// The challengePassword of a CSR (PrintableString, UTF8String or BMPString) as UTF-8.
std::optional<std::string> challenge_password(X509_REQ* csr);

}  // namespace certconn::scep
