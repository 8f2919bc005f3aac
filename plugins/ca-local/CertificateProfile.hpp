// A certificate profile of the local CA: what a request may contain and what the issued
// certificate carries. Configured as [ca.<name>.profiles.<profile>].
#pragma once

#include <certconn/crypto.hpp>

#include <boost/json/object.hpp>

#include <chrono>
#include <string>
#include <vector>

namespace certconn::ca_local {

struct CertificateProfile {
    std::string name;
    int validity_days = 365;
    std::vector<std::string> key_usage{"digitalSignature", "keyEncipherment"};
    std::vector<std::string> extended_key_usage{"clientAuth"};
    std::vector<std::string> key_types{"rsa2048", "rsa3072", "rsa4096", "p256", "p384"};
    std::vector<std::string> subject_attributes{"CN", "O", "OU", "L", "ST", "C", "emailAddress", "serialNumber", "UID", "DC"};
    std::vector<std::string> san_types{"email", "upn", "dns", "uri"};
    std::chrono::minutes backdate{60};

    static CertificateProfile from_json(const std::string& name, const boost::json::object& settings);

    /// Throws certconn::sdk::Error(CC_ERR_DENIED, ...) naming the first thing the profile forbids.
    void enforce(X509_REQ* csr) const;
};

}  // namespace certconn::ca_local
