// The client side of a SCEP PKIMessage: what a device sends. Used by tests, the fuzzer's seed
// corpus and benchmarks — not linked into the plugin.
#pragma once

#include "ScepMessage.hpp"

namespace certconn::scep {

struct ClientRequest {
    MessageType type = MessageType::PKCSReq;
    std::string transaction_id;
    std::string sender_nonce;            // 16 random bytes when empty
    std::string content;                 // PKCS#10 DER, or IssuerAndSubject DER for CertPoll
    const EVP_CIPHER* cipher = nullptr;  // AES-256-CBC when null
    const EVP_MD* digest = nullptr;      // SHA-256 when null
};

/// SignedData (by `signer`/`key`) over EnvelopedData (to `ra`) of `req.content`, DER.
std::string build_request(const ClientRequest& req, X509* signer, EVP_PKEY* key, X509* ra);

/// A device's PKCS#10 (DER) for "CN=<cn>" carrying `challenge` as its challengePassword.
std::string csr_with_challenge(EVP_PKEY* key, const std::string& cn, const std::string& challenge);

/// The certificates of a GetCACert answer: a degenerate PKCS#7 (RA first, as ours), or one DER
/// certificate (as scepserver, whose CA is its RA). Throws when it is neither.
std::vector<crypto::Cert> getcacert_certificates(std::string_view body);

/// The IssuerAndSerialNumber (DER) naming `cert`: the content of GetCert and GetCRL.
std::string issuer_and_serial_der(X509* cert);

/// A self-signed certificate for `key`, as a device signs its first request with.
crypto::Cert self_signed(EVP_PKEY* key, std::string_view subject);

/// The pkiStatus ("0", "2", "3"), failInfo and recipientNonce of a CertRep; verifies it with `ra`.
struct ClientReply {
    std::string status, fail_info, recipient_nonce, transaction_id;
    std::string envelope;  // the encrypted degenerate PKCS#7 (SUCCESS)
};
ClientReply read_reply(std::string_view der, X509* ra);

}  // namespace certconn::scep
