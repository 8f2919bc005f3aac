// A self-signed CA certificate for tests and benchmarks that sign in-process.
#pragma once

#include <certconn/crypto.hpp>

#include <openssl/x509v3.h>

#include <string_view>
#include <utility>

namespace certconn::test {

/// CN=`cn`, CA:TRUE, keyCertSign + cRLSign, a subject key id; valid from a minute ago for `days`.
inline crypto::Cert self_signed_ca(EVP_PKEY* key, std::string_view cn, long days = 1) {
    crypto::Cert ca(X509_new());
    X509_set_version(ca.get(), 2);
    ASN1_INTEGER_set(X509_get_serialNumber(ca.get()), 1);
    crypto::Name name = crypto::parse_name("CN=" + std::string(cn));
    X509_set_subject_name(ca.get(), name.get());
    X509_set_issuer_name(ca.get(), name.get());
    X509_gmtime_adj(X509_getm_notBefore(ca.get()), -60);
    X509_gmtime_adj(X509_getm_notAfter(ca.get()), days * 86400);
    X509_set_pubkey(ca.get(), key);
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, ca.get(), ca.get(), nullptr, nullptr, 0);
    for (const auto& [nid, value] :
         {std::pair{NID_basic_constraints, "critical,CA:TRUE"}, std::pair{NID_key_usage, "critical,keyCertSign,cRLSign"},
          std::pair{NID_subject_key_identifier, "hash"}}) {
        X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
        if (!ext) crypto::throw_openssl("test CA extension");
        X509_add_ext(ca.get(), ext, -1);
        X509_EXTENSION_free(ext);
    }
    if (!X509_sign(ca.get(), key, EVP_sha256())) crypto::throw_openssl("signing the test CA");
    return ca;
}

}  // namespace certconn::test
