#include "ScepMessage.hpp"

#include <openssl/err.h>
#include <openssl/bn.h>
#include <openssl/pkcs7.h>

#include <charconv>
#include <map>
#include <mutex>

namespace certconn::scep {

namespace {

using Pkcs7 = std::unique_ptr<PKCS7, crypto::Deleter<PKCS7_free>>;

// SCEP attributes (id-VeriSign pki attributes, RFC 8894 section 3.2.1).
ASN1_OBJECT* oid(const char* dotted) {
    using Object = std::unique_ptr<ASN1_OBJECT, crypto::Deleter<ASN1_OBJECT_free>>;
    static std::mutex m;
    static std::map<std::string, Object> cache;  // owns the objects: freed at exit
    std::lock_guard lock(m);
    auto& o = cache[dotted];
    if (!o) o.reset(OBJ_txt2obj(dotted, 1));
    return o.get();
}
constexpr const char* kMessageType = "2.16.840.1.113733.1.9.2";
constexpr const char* kPkiStatus = "2.16.840.1.113733.1.9.3";
constexpr const char* kFailInfo = "2.16.840.1.113733.1.9.4";
constexpr const char* kSenderNonce = "2.16.840.1.113733.1.9.5";
constexpr const char* kRecipientNonce = "2.16.840.1.113733.1.9.6";
constexpr const char* kTransactionId = "2.16.840.1.113733.1.9.7";

std::string attr_string(CMS_SignerInfo* si, const char* dotted, int type) {
    auto* value = static_cast<ASN1_STRING*>(CMS_signed_get0_data_by_OBJ(si, oid(dotted), -3, type));
    if (!value) return {};
    return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(value)),
                       static_cast<std::size_t>(ASN1_STRING_length(value)));
}

crypto::Bio mem(std::string_view data) {
    return crypto::Bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}

std::string bio_string(BIO* bio) {
    char* p = nullptr;
    const long n = BIO_get_mem_data(bio, &p);
    return std::string(p, static_cast<std::size_t>(n));
}

std::string signed_reply(const PkiRequest& req, const std::string& status, std::optional<FailInfo> fail,
                         const std::string* envelope, X509* ra_cert, EVP_PKEY* ra_key) {
    const unsigned flags = CMS_BINARY | CMS_PARTIAL | CMS_NOSMIMECAP;
    crypto::Cms cms(CMS_sign(nullptr, nullptr, nullptr, nullptr, flags));
    if (!cms) crypto::throw_openssl("CMS_sign");
    CMS_SignerInfo* si = CMS_add1_signer(cms.get(), ra_cert, ra_key, reply_digest(req.digest), flags);
    if (!si) crypto::throw_openssl("CMS_add1_signer");
    auto add_printable = [&](const char* dotted, const std::string& v) {
        CMS_signed_add1_attr_by_OBJ(si, oid(dotted), V_ASN1_PRINTABLESTRING, v.data(), static_cast<int>(v.size()));
    };
    auto add_octets = [&](const char* dotted, const std::string& v) {
        CMS_signed_add1_attr_by_OBJ(si, oid(dotted), V_ASN1_OCTET_STRING, v.data(), static_cast<int>(v.size()));
    };
    add_printable(kMessageType, "3");
    add_printable(kPkiStatus, status);
    if (fail) add_printable(kFailInfo, std::to_string(static_cast<int>(*fail)));
    add_printable(kTransactionId, req.transaction_id);
    add_octets(kRecipientNonce, req.sender_nonce);
    add_octets(kSenderNonce, crypto::random_bytes(16));
    static const char kEmpty[] = "";  // a FAILURE carries no content; BIO_new_mem_buf refuses a null pointer
    crypto::Bio content = mem(envelope ? std::string_view(*envelope) : std::string_view(kEmpty));
    if (!CMS_final(cms.get(), content.get(), nullptr, flags)) crypto::throw_openssl("signing the CertRep");
    const int len = i2d_CMS_ContentInfo(cms.get(), nullptr);
    std::string out(static_cast<std::size_t>(len), '\0');
    auto* p = reinterpret_cast<unsigned char*>(out.data());
    i2d_CMS_ContentInfo(cms.get(), &p);
    return out;
}

}  // namespace

PkiRequest parse_request(std::string_view der, EVP_PKEY* ra_key, X509* ra_cert, bool allow_single_des) {
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    crypto::Cms cms(d2i_CMS_ContentInfo(nullptr, &p, static_cast<long>(der.size())));
    if (!cms || OBJ_obj2nid(CMS_get0_type(cms.get())) != NID_pkcs7_signed) {
        ERR_clear_error();
        throw MalformedMessage("not a CMS SignedData");
    }
    STACK_OF(CMS_SignerInfo)* signers = CMS_get0_SignerInfos(cms.get());
    if (sk_CMS_SignerInfo_num(signers) != 1) throw MalformedMessage("expected exactly one signer");
    CMS_SignerInfo* si = sk_CMS_SignerInfo_value(signers, 0);
    STACK_OF(X509)* certs = CMS_get1_certs(cms.get());
    X509* signer = nullptr;
    for (int i = 0; certs && i < sk_X509_num(certs); ++i)
        if (CMS_SignerInfo_cert_cmp(si, sk_X509_value(certs, i)) == 0) signer = sk_X509_value(certs, i);
    if (!signer) {
        sk_X509_pop_free(certs, X509_free);
        throw MalformedMessage("the signer's certificate is not in the message");
    }
    PkiRequest req;
    X509_up_ref(signer);  // shared with the message's certificate list, not copied: a copy re-decodes the key
    req.signer.reset(signer);
    crypto::Bio content(BIO_new(BIO_s_mem()));
    const int ok = CMS_verify(cms.get(), certs, nullptr, nullptr, content.get(), CMS_NO_SIGNER_CERT_VERIFY | CMS_BINARY);
    sk_X509_pop_free(certs, X509_free);
    if (ok != 1) {
        ERR_clear_error();
        throw MalformedMessage("the message signature does not verify");
    }
    X509_ALGOR* digest_alg = nullptr;
    CMS_SignerInfo_get0_algs(si, nullptr, nullptr, &digest_alg, nullptr);
    const ASN1_OBJECT* digest_oid = nullptr;
    X509_ALGOR_get0(&digest_oid, nullptr, nullptr, digest_alg);
    req.digest = EVP_get_digestbyobj(digest_oid);
    const std::string type = attr_string(si, kMessageType, V_ASN1_PRINTABLESTRING);
    req.transaction_id = attr_string(si, kTransactionId, V_ASN1_PRINTABLESTRING);
    req.sender_nonce = attr_string(si, kSenderNonce, V_ASN1_OCTET_STRING);
    if (type.empty() || req.transaction_id.empty()) throw MalformedMessage("messageType or transactionID missing");
    // Not a number: type 0, which the plugin answers as "not a SCEP request type" (as atoi did,
    // but from_chars cannot overflow into undefined behaviour).
    int type_number = 0;
    if (std::from_chars(type.data(), type.data() + type.size(), type_number).ec != std::errc{}) type_number = 0;
    req.type = static_cast<MessageType>(type_number);

    // The envelope: its cipher decides the reply's (single DES is answered with 3DES).
    const std::string envelope = bio_string(content.get());
    const auto* ep = reinterpret_cast<const unsigned char*>(envelope.data());
    Pkcs7 p7(d2i_PKCS7(nullptr, &ep, static_cast<long>(envelope.size())));
    if (!p7 || OBJ_obj2nid(p7->type) != NID_pkcs7_enveloped) {
        ERR_clear_error();
        req.decrypt_error = "content is not EnvelopedData";
        req.cipher = EVP_aes_256_cbc();
        return req;
    }
    const int cipher_nid = OBJ_obj2nid(p7->d.enveloped->enc_data->algorithm->algorithm);
    req.cipher_name = OBJ_nid2sn(cipher_nid);
    req.cipher = cipher_nid == NID_des_cbc ? EVP_des_ede3_cbc() : EVP_get_cipherbynid(cipher_nid);
    if (!req.cipher) req.cipher = EVP_aes_256_cbc();
    if (cipher_nid == NID_des_cbc) {
        if (!allow_single_des) {
            req.decrypt_error = "single DES is disabled (allow_single_des = false)";
            req.refused_cipher = true;
            return req;
        }  // decrypting it needs OpenSSL's legacy provider, which the plugin loads (LegacyProviders)
    }
    // Decrypted without naming the RA certificate (CMS_decrypt(3)): OpenSSL then tries every
    // recipient with the RA key whether or not one succeeds and, when none does, decrypts with a
    // random content key — its countermeasure to Bleichenbacher's attack on PKCS#1 v1.5 (MMA).
    // A forged key transport and a corrupt content then fail alike, in content decryption, and
    // pki_operation answers every decryption failure with the same badMessageCheck CertRep.
    (void)ra_cert;
    crypto::Bio in = mem(envelope);
    crypto::Cms env(d2i_CMS_bio(in.get(), nullptr));
    crypto::Bio out(BIO_new(BIO_s_mem()));
    if (!env || CMS_decrypt(env.get(), ra_key, nullptr, nullptr, out.get(), CMS_BINARY) != 1) {
        std::string why;
        unsigned long code;
        while ((code = ERR_get_error()) != 0) {
            char buf[256];
            ERR_error_string_n(code, buf, sizeof buf);
            why = buf;
        }
        req.decrypt_error = "cannot decrypt the envelope (" + req.cipher_name + "): " + why;
        return req;
    }
    req.inner = bio_string(out.get());
    return req;
}

int digest_strength(const EVP_MD* md) {
    if (!md) return 0;
    switch (EVP_MD_get_type(md)) {
        case NID_sha1: return 1;
        case NID_sha224:
        case NID_sha256:
        case NID_sha384:
        case NID_sha512:
        case NID_sha512_224:
        case NID_sha512_256:
        case NID_sha3_224:
        case NID_sha3_256:
        case NID_sha3_384:
        case NID_sha3_512: return 2;
        default: return 0;  // MD5, MD4, MDC2, RIPEMD, ...
    }
}

const EVP_MD* reply_digest(const EVP_MD* requested) {
    return digest_strength(requested) > 0 ? requested : EVP_sha256();
}

std::string certs_only(const std::vector<X509*>& certificates) {
    Pkcs7 p7(PKCS7_new());
    PKCS7_set_type(p7.get(), NID_pkcs7_signed);
    PKCS7_content_new(p7.get(), NID_pkcs7_data);
    for (X509* c : certificates)
        PKCS7_add_certificate(p7.get(), c);
    const int len = i2d_PKCS7(p7.get(), nullptr);
    std::string out(static_cast<std::size_t>(len), '\0');
    auto* p = reinterpret_cast<unsigned char*>(out.data());
    i2d_PKCS7(p7.get(), &p);
    return out;
}

std::string crl_only(std::string_view crl_der) {
    const auto* c = reinterpret_cast<const unsigned char*>(crl_der.data());
    std::unique_ptr<X509_CRL, crypto::Deleter<X509_CRL_free>> crl(d2i_X509_CRL(nullptr, &c, static_cast<long>(crl_der.size())));
    if (!crl) crypto::throw_openssl("the CA's CRL does not parse");
    Pkcs7 p7(PKCS7_new());
    PKCS7_set_type(p7.get(), NID_pkcs7_signed);
    PKCS7_content_new(p7.get(), NID_pkcs7_data);
    PKCS7_add_crl(p7.get(), crl.get());
    const int len = i2d_PKCS7(p7.get(), nullptr);
    std::string out(static_cast<std::size_t>(len), '\0');
    auto* p = reinterpret_cast<unsigned char*>(out.data());
    i2d_PKCS7(p7.get(), &p);
    return out;
}

std::string next_ca_reply(const std::vector<X509*>& certificates, X509* ra_cert, EVP_PKEY* ra_key) {
    const std::string degenerate = certs_only(certificates);
    crypto::Bio in = mem(degenerate);
    crypto::Cms cms(CMS_sign(ra_cert, ra_key, nullptr, in.get(), CMS_BINARY | CMS_NOSMIMECAP));
    if (!cms) crypto::throw_openssl("signing the GetNextCACert answer");
    const int len = i2d_CMS_ContentInfo(cms.get(), nullptr);
    std::string out(static_cast<std::size_t>(len), '\0');
    auto* p = reinterpret_cast<unsigned char*>(out.data());
    i2d_CMS_ContentInfo(cms.get(), &p);
    return out;
}

std::optional<IssuerAndSerial> issuer_and_serial(std::string_view der) {
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    std::unique_ptr<PKCS7_ISSUER_AND_SERIAL, crypto::Deleter<PKCS7_ISSUER_AND_SERIAL_free>> ias(
        d2i_PKCS7_ISSUER_AND_SERIAL(nullptr, &p, static_cast<long>(der.size())));
    if (!ias || !ias->issuer || !ias->serial) {
        ERR_clear_error();
        return std::nullopt;
    }
    BIGNUM* bn = ASN1_INTEGER_to_BN(ias->serial, nullptr);
    char* hex = bn ? BN_bn2hex(bn) : nullptr;
    IssuerAndSerial out{crypto::Name(X509_NAME_dup(ias->issuer)), hex ? hex : ""};
    OPENSSL_free(hex);
    BN_free(bn);
    if (out.serial_hex.empty()) return std::nullopt;
    return out;
}

std::string success_reply(const PkiRequest& req, const std::vector<X509*>& certificates, X509* ra_cert, EVP_PKEY* ra_key) {
    return success_reply_content(req, certs_only(certificates), ra_cert, ra_key);
}

std::string success_reply_content(const PkiRequest& req, const std::string& degenerate, X509* ra_cert, EVP_PKEY* ra_key) {
    // Encrypted to the requester's signing certificate, with the cipher it used (RSA key transport).
    STACK_OF(X509)* recipients = sk_X509_new_null();
    sk_X509_push(recipients, req.signer.get());
    crypto::Bio in = mem(degenerate);
    crypto::Cms env(CMS_encrypt(recipients, in.get(), req.cipher, CMS_BINARY));
    sk_X509_free(recipients);
    if (!env) crypto::throw_openssl("encrypting the CertRep for the requester");
    const int len = i2d_CMS_ContentInfo(env.get(), nullptr);
    std::string envelope(static_cast<std::size_t>(len), '\0');
    auto* p = reinterpret_cast<unsigned char*>(envelope.data());
    i2d_CMS_ContentInfo(env.get(), &p);
    return signed_reply(req, "0", std::nullopt, &envelope, ra_cert, ra_key);
}

std::string pending_reply(const PkiRequest& req, X509* ra_cert, EVP_PKEY* ra_key) {
    return signed_reply(req, "3", std::nullopt, nullptr, ra_cert, ra_key);
}

std::string failure_reply(const PkiRequest& req, FailInfo info, X509* ra_cert, EVP_PKEY* ra_key) {
    return signed_reply(req, "2", info, nullptr, ra_cert, ra_key);
}

std::optional<std::string> challenge_password(X509_REQ* csr) {
    const int at = X509_REQ_get_attr_by_NID(csr, NID_pkcs9_challengePassword, -1);
    if (at < 0) return std::nullopt;
    X509_ATTRIBUTE* attr = X509_REQ_get_attr(csr, at);
    ASN1_TYPE* value = X509_ATTRIBUTE_get0_type(attr, 0);
    if (!value) return std::nullopt;
    if (value->type != V_ASN1_PRINTABLESTRING && value->type != V_ASN1_UTF8STRING && value->type != V_ASN1_BMPSTRING &&
        value->type != V_ASN1_IA5STRING && value->type != V_ASN1_T61STRING)
        return std::nullopt;
    unsigned char* utf8 = nullptr;
    const int n = ASN1_STRING_to_UTF8(&utf8, value->value.asn1_string);
    if (n < 0) return std::nullopt;
    std::string out(reinterpret_cast<char*>(utf8), static_cast<std::size_t>(n));
    OPENSSL_free(utf8);
    return out;
}

}  // namespace certconn::scep
