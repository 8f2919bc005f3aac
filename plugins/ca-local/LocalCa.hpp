// One configured local CA: an issuing CA (created with its root on first start, or loaded from
// configured files / a PKCS#11 token) that signs CSRs under a profile and records every
// certificate in its IssuanceStore.
#pragma once

#include "CertificateProfile.hpp"
#include "IssuanceStore.hpp"

#include <certconn/crypto.hpp>
#include <certconn/sdk.hpp>

#include <boost/json/object.hpp>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace certconn::ca_local {

class LocalCa final : public sdk::CaPlugin::Ca {
public:
    LocalCa(std::string name, const boost::json::object& config, const std::filesystem::path& directory, sdk::Host& host);

    std::string issue(const std::string& request_json) override;
    std::string revoke(const std::string& request_json) override;
    std::string describe() override;

private:
    void create_hierarchy(const boost::json::object& config, const std::filesystem::path& directory);
    std::string answer(const IssuedCertificate& cert, bool already_issued) const;
    std::string new_serial();

    std::string name_;
    sdk::Host& host_;
    crypto::PKey issuing_key_;
    crypto::Cert issuing_cert_;
    std::vector<crypto::Cert> chain_;  // issuing CA first, root last
    std::string chain_pem_;
    std::map<std::string, CertificateProfile> profiles_;
    std::unique_ptr<IssuanceStore> store_;
};

}  // namespace certconn::ca_local
