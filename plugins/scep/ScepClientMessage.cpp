#include "ScepClientMessage.hpp"

#include <openssl/err.h>
#include <openssl/pkcs7.h>

namespace certconn::scep {

namespace {
ASN1_OBJECT* attr(const char* dotted) {
    return OBJ_txt2obj(dotted, 1);
}

std::string der_of(CMS_ContentInfo* cms) {
    const int len = i2d_CMS_ContentInfo(cms, nullptr);
    std::string out(static_cast<std::size_t>(len), '\0');
    auto* p = reinterpret_cast<unsigned char*>(out.data());
    i2d_CMS_ContentInfo(cms, &p);
    return out;
}

std::string text_attr(CMS_SignerInfo* si, const char* dotted, int type) {
    ASN1_OBJECT* o = attr(dotted);
    auto* v = static_cast<ASN1_STRING*>(CMS_signed_get0_data_by_OBJ(si, o, -3, type));
    ASN1_OBJECT_free(o);
    return v ? std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(v)),
                           static_cast<std::size_t>(ASN1_STRING_length(v)))
             : std::string();
}
}  // namespace

std::string csr_with_challenge(EVP_PKEY* key, const std::string& cn, const std::string& challenge) {
    crypto::Request csr = crypto::load_csr(crypto::make_csr_pem(key, "CN=" + cn, {}));
    X509_REQ_add1_attr_by_NID(csr.get(), NID_pkcs9_challengePassword, MBSTRING_UTF8,
                              reinterpret_cast<const unsigned char*>(challenge.c_str()), -1);
    X509_REQ_sign(csr.get(), key, EVP_sha256());
    unsigned char* der = nullptr;
    const int len = i2d_X509_REQ(csr.get(), &der);
    if (len <= 0) crypto::throw_openssl("encoding the CSR");
    std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
    OPENSSL_free(der);
    return out;
}

std::vector<crypto::Cert> getcacert_certificates(std::string_view body) {
    std::vector<crypto::Cert> out;
    const auto* p = reinterpret_cast<const unsigned char*>(body.data());
    if (PKCS7* p7 = d2i_PKCS7(nullptr, &p, static_cast<long>(body.size()))) {
        STACK_OF(X509)* certs = OBJ_obj2nid(p7->type) == NID_pkcs7_signed ? p7->d.sign->cert : nullptr;
        for (int i = 0; certs && i < sk_X509_num(certs); ++i)
            out.emplace_back(X509_dup(sk_X509_value(certs, i)));
        PKCS7_free(p7);
    } else {
        ERR_clear_error();
        p = reinterpret_cast<const unsigned char*>(body.data());
        if (X509* c = d2i_X509(nullptr, &p, static_cast<long>(body.size()))) out.emplace_back(c);
    }
    if (out.empty()) throw std::runtime_error("the GetCACert answer is neither a PKCS#7 with certificates nor a certificate");
    return out;
}

std::string issuer_and_serial_der(X509* cert) {
    PKCS7_ISSUER_AND_SERIAL* ias = PKCS7_ISSUER_AND_SERIAL_new();
    X509_NAME_set(&ias->issuer, X509_get_issuer_name(cert));
    ASN1_INTEGER_free(ias->serial);
    ias->serial = ASN1_INTEGER_dup(X509_get0_serialNumber(cert));
    unsigned char* der = nullptr;
    const int len = i2d_PKCS7_ISSUER_AND_SERIAL(ias, &der);
    PKCS7_ISSUER_AND_SERIAL_free(ias);
    if (len <= 0) crypto::throw_openssl("IssuerAndSerialNumber");
    std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
    OPENSSL_free(der);
    return out;
}

crypto::Cert self_signed(EVP_PKEY* key, std::string_view subject) {
    crypto::Cert cert(X509_new());
    crypto::Name name = crypto::parse_name(subject);
    X509_set_version(cert.get(), 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1);
    X509_set_subject_name(cert.get(), name.get());
    X509_set_issuer_name(cert.get(), name.get());
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600);
    X509_set_pubkey(cert.get(), key);
    X509_sign(cert.get(), key, EVP_sha256());
    return cert;
}

std::string build_request(const ClientRequest& req, X509* signer, EVP_PKEY* key, X509* ra) {
    STACK_OF(X509)* recipients = sk_X509_new_null();
    sk_X509_push(recipients, ra);
    crypto::Bio content(BIO_new_mem_buf(req.content.data(), static_cast<int>(req.content.size())));
    crypto::Cms env(CMS_encrypt(recipients, content.get(), req.cipher ? req.cipher : EVP_aes_256_cbc(), CMS_BINARY));
    sk_X509_free(recipients);
    if (!env) crypto::throw_openssl("enveloping the request");
    const std::string envelope = der_of(env.get());

    const unsigned flags = CMS_BINARY | CMS_PARTIAL | CMS_NOSMIMECAP;
    crypto::Cms cms(CMS_sign(nullptr, nullptr, nullptr, nullptr, flags));
    CMS_SignerInfo* si = CMS_add1_signer(cms.get(), signer, key, req.digest ? req.digest : EVP_sha256(), flags);
    if (!si) crypto::throw_openssl("signing the request");
    auto add = [&](const char* dotted, int type, const std::string& v) {
        ASN1_OBJECT* o = attr(dotted);
        CMS_signed_add1_attr_by_OBJ(si, o, type, v.data(), static_cast<int>(v.size()));
        ASN1_OBJECT_free(o);
    };
    add("2.16.840.1.113733.1.9.2", V_ASN1_PRINTABLESTRING, std::to_string(static_cast<int>(req.type)));
    add("2.16.840.1.113733.1.9.7", V_ASN1_PRINTABLESTRING, req.transaction_id);
    add("2.16.840.1.113733.1.9.5", V_ASN1_OCTET_STRING, req.sender_nonce.empty() ? crypto::random_bytes(16) : req.sender_nonce);
    crypto::Bio body(BIO_new_mem_buf(envelope.data(), static_cast<int>(envelope.size())));
    if (!CMS_final(cms.get(), body.get(), nullptr, flags)) crypto::throw_openssl("finishing the request");
    return der_of(cms.get());
}

ClientReply read_reply(std::string_view der, X509* ra) {
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    crypto::Cms cms(d2i_CMS_ContentInfo(nullptr, &p, static_cast<long>(der.size())));
    if (!cms) crypto::throw_openssl("not a CMS reply");
    STACK_OF(X509)* trusted = sk_X509_new_null();
    sk_X509_push(trusted, ra);
    crypto::Bio out(BIO_new(BIO_s_mem()));
    const int ok = CMS_verify(cms.get(), trusted, nullptr, nullptr, out.get(), CMS_NO_SIGNER_CERT_VERIFY | CMS_BINARY);
    sk_X509_free(trusted);
    if (ok != 1) crypto::throw_openssl("the reply's signature does not verify");
    CMS_SignerInfo* si = sk_CMS_SignerInfo_value(CMS_get0_SignerInfos(cms.get()), 0);
    ClientReply r;
    r.status = text_attr(si, "2.16.840.1.113733.1.9.3", V_ASN1_PRINTABLESTRING);
    r.fail_info = text_attr(si, "2.16.840.1.113733.1.9.4", V_ASN1_PRINTABLESTRING);
    r.recipient_nonce = text_attr(si, "2.16.840.1.113733.1.9.6", V_ASN1_OCTET_STRING);
    r.transaction_id = text_attr(si, "2.16.840.1.113733.1.9.7", V_ASN1_PRINTABLESTRING);
    char* data = nullptr;
    const long n = BIO_get_mem_data(out.get(), &data);
    r.envelope.assign(data, static_cast<std::size_t>(n));
    return r;
}

}  // namespace certconn::scep
