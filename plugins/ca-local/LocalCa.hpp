// One configured local CA: an issuing CA (created with its root on first start, or loaded from
// configured files / a PKCS#11 token) that signs CSRs under a profile and records every
// certificate in its IssuanceStore.
#pragma once

#include "CertificateProfile.hpp"
#include "IssuanceStore.hpp"
#include "Revocation.hpp"

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
    std::string query(const std::string& request_json) override;

    const std::string& name() const { return name_; }
    /// What relying parties fetch: the CRL (DER), OCSP answers, the issuing certificate (DER).
    std::shared_ptr<const std::string> crl() { return revocation_->crl(); }
    std::string ocsp(std::string_view request_der) { return revocation_->ocsp(request_der); }
    void pause_background() { revocation_->pause(); }
    void resume_background() { revocation_->resume(); }
    const std::string& issuing_der() const { return issuing_der_; }

private:
    void create_hierarchy(const boost::json::object& config, const std::filesystem::path& directory);
    std::string answer(const IssuedCertificate& cert, bool already_issued) const;
    std::string new_serial();
    /// Validates one revoke request; returns the certificate and sets the RFC 5280 reason name.
    IssuedCertificate prepare_revocation(const boost::json::object& request, std::string& reason) const;
    boost::json::object revocation_answer(const IssuedCertificate& cert, bool changed, const std::string& reason,
                                          const std::string& when) const;

    std::string name_;
    sdk::Host& host_;
    crypto::PKey issuing_key_;
    crypto::Cert issuing_cert_;
    std::vector<crypto::Cert> chain_;  // issuing CA first, root last
    std::string chain_pem_;
    std::string issuing_der_;
    std::string public_base_url_;  // when set: CDP and AIA in issued certificates
    std::map<std::string, CertificateProfile> profiles_;
    std::unique_ptr<IssuanceStore> store_;
    std::unique_ptr<RevocationService> revocation_;  // after store_: destroyed first
};

}  // namespace certconn::ca_local
