#include "CertificateProfile.hpp"

#include <certconn/sdk.hpp>

#include <algorithm>

#include <openssl/x509v3.h>

namespace certconn::ca_local {

namespace {

std::vector<std::string> strings(const boost::json::object& o, const char* key, std::vector<std::string> fallback) {
    const auto* v = o.if_contains(key);
    if (!v) return fallback;
    std::vector<std::string> out;
    for (const auto& item : v->as_array())
        out.emplace_back(item.as_string());
    return out;
}

bool contains(const std::vector<std::string>& list, const std::string& value) {
    return std::find(list.begin(), list.end(), value) != list.end();
}

std::string join(const std::vector<std::string>& list) {
    std::string out;
    for (const auto& s : list)
        out += (out.empty() ? "" : ", ") + s;
    return out;
}

}  // namespace

CertificateProfile CertificateProfile::from_json(const std::string& name, const boost::json::object& o) {
    CertificateProfile p;
    p.name = name;
    if (const auto* v = o.if_contains("validity_days")) p.validity_days = static_cast<int>(v->as_int64());
    if (const auto* v = o.if_contains("backdate_minutes")) p.backdate = std::chrono::minutes(v->as_int64());
    p.key_usage = strings(o, "key_usage", p.key_usage);
    p.extended_key_usage = strings(o, "extended_key_usage", p.extended_key_usage);
    p.key_types = strings(o, "key_types", p.key_types);
    p.subject_attributes = strings(o, "subject_attributes", p.subject_attributes);
    p.san_types = strings(o, "san_types", p.san_types);
    for (const auto& t : p.key_types)
        if (!crypto::is_key_type(t))
            throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "profile '" + name + "': unknown key type '" + t + "'");
    return p;
}

void CertificateProfile::enforce(X509_REQ* csr) const {
    EVP_PKEY* key = X509_REQ_get0_pubkey(csr);
    if (!key) throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "the CSR carries no usable public key");
    const std::string type = crypto::key_type_of(key);
    if (!contains(key_types, type))
        throw sdk::Error(CC_ERR_DENIED,
                         "profile '" + name + "' does not allow key type " + type + " (allowed: " + join(key_types) + ")");

    const X509_NAME* subject = X509_REQ_get_subject_name(csr);
    for (int i = 0; i < X509_NAME_entry_count(subject); ++i) {
        const ASN1_OBJECT* obj = X509_NAME_ENTRY_get_object(X509_NAME_get_entry(subject, i));
        const int nid = OBJ_obj2nid(obj);
        const std::string attr = nid != NID_undef ? OBJ_nid2sn(nid) : "unknown";
        if (!contains(subject_attributes, attr))
            throw sdk::Error(CC_ERR_DENIED, "profile '" + name + "' does not allow subject attribute " + attr +
                                                " (allowed: " + join(subject_attributes) + ")");
    }

    // Requested extensions other than subjectAltName are ignored: the profile sets basic
    // constraints, key usages and identifiers (clients such as certmonger request their own).
    // Asking to be a CA is refused outright: no profile of this CA issues CA certificates.
    STACK_OF(X509_EXTENSION)* exts = X509_REQ_get_extensions(csr);
    const auto sans = crypto::read_sans(exts);
    auto* bc = static_cast<BASIC_CONSTRAINTS*>(X509V3_get_d2i(exts, NID_basic_constraints, nullptr, nullptr));
    const bool wants_ca = bc && bc->ca;
    BASIC_CONSTRAINTS_free(bc);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    if (wants_ca) throw sdk::Error(CC_ERR_DENIED, "the CSR asks for a CA certificate (basicConstraints CA:TRUE); refused");
    for (const auto& san : sans)
        if (!contains(san_types, san.type))
            throw sdk::Error(CC_ERR_DENIED, "profile '" + name + "' does not allow SAN type " + san.type +
                                                " (allowed: " + join(san_types) + ")");
}

}  // namespace certconn::ca_local
