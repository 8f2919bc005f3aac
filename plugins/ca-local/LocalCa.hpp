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
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
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
    void pause_background() { revocation_->pause(); }
    void resume_background() { revocation_->resume(); }

    /// {"healthy", "detail"}: a real probe (the issuing key signs, the record answers, the
    /// certificates and the root CRL are within their validity).
    std::string health();
    /// The root CRL ceremony (`certconnector ca root-crl`): signs a fresh CRL of the root with
    /// the root key (`root_key_pem`, or else [ca.<name>] root_private_key, or else the
    /// root-key.pem ca-local created), optionally listing the issuing CA as revoked first.
    /// Returns a line for the operator.
    std::string sign_root_crl(const std::string& root_key_pem, bool revoke_issuing, const std::string& reason);

    /// Converts store errors: transient ones (PostgreSQL away, a lock, a commit whose outcome
    /// is unknown) to CC_ERR_UNAVAILABLE, so the job retries; others name the record.
    template <class F>
    auto store_guard(F&& fn) const -> decltype(fn()) {
        try {
            return fn();
        } catch (const sql::Error& e) {
            const std::string where = store_ ? " (" + store_->where() + ")" : std::string();
            if (e.transient())
                throw sdk::Error(CC_ERR_UNAVAILABLE,
                                 "CA '" + name_ + "': the issuance record" + where + " is unavailable, retry later: " + e.what());
            if (e.kind() == sql::Error::Kind::schema) throw sdk::Error(CC_ERR_NOT_SUPPORTED, "CA '" + name_ + "': " + e.what());
            throw sdk::Error(CC_ERR_INTERNAL, "CA '" + name_ + "': the issuance record" + where + ": " + e.what());
        }
    }

private:
    struct NewHierarchy {
        std::string algorithm;
        crypto::Cert root;
        crypto::PKey root_key;
        crypto::Cert issuing;
        crypto::PKey issuing_key;
    };
    NewHierarchy make_hierarchy(const boost::json::object& config);
    /// A shared store: loads the fleet's hierarchy, creating it first when no instance has.
    void load_shared_hierarchy(const boost::json::object& config);
    /// The passphrase in shared_key_file (trailing newline removed); caller wipes it.
    std::string shared_passphrase() const;
    std::string issue_unguarded(const std::string& request_json);
    std::string revoke_unguarded(const std::string& request_json);
    std::string query_unguarded(const std::string& request_json);
    std::string describe_unguarded();
    void create_hierarchy(const boost::json::object& config, const std::filesystem::path& directory);
    /// The root certificate (the chain's last, self-signed), or null when the chain has none.
    X509* root_certificate() const;
    /// Signs and stores root-crl.der (the root's revoked CAs, from root-revoked.json) with
    /// `root_key`; caller holds root_mutex_.
    /// `persist` false: only signed and kept in memory (a shared hierarchy not yet stored).
    void publish_root_crl(X509* root, EVP_PKEY* root_key, bool persist = true);
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
    std::filesystem::path directory_;
    std::string root_key_source_;  // [ca.<name>] root_private_key: path or pkcs11: URI ("" = directory/root-key.pem)
    std::chrono::seconds root_crl_validity_{180L * 24 * 3600};
    std::mutex root_mutex_;                        // one root CRL ceremony at a time; guards root_crl_
    std::shared_ptr<const std::string> root_crl_;  // DER; null when this CA publishes no root CRL
    std::string shared_key_file_;                  // [ca.<name>] shared_key_file ("" = none)
    bool shared_hierarchy_ = false;                // the hierarchy lives in the shared store (keys encrypted)
    std::map<std::string, CertificateProfile> profiles_;
    std::unique_ptr<IssuanceStore> store_;
    std::unique_ptr<RevocationService> revocation_;  // after store_: destroyed first

public:
    RevocationService& revocation() { return *revocation_; }
    IssuanceStore& store() { return *store_; }
};

}  // namespace certconn::ca_local
