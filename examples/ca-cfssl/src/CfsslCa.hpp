// One configured [ca.<name>] with plugin = "cfssl": issues, revokes and answers questions
// through a cfssl server (cfssl serve / multirootca), following docs/plugin-sdk.md "ca".
#pragma once

#include "CertificateTable.hpp"
#include "CfsslApi.hpp"

#include <certconn/crypto.hpp>
#include <certconn/sdk.hpp>

#include <boost/json/object.hpp>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

namespace cfssl_plugin {

class CfsslCa final : public certconn::sdk::CaPlugin::Ca {
public:
    CfsslCa(std::string name, const boost::json::object& config, const std::filesystem::path& state_dir,
            certconn::sdk::Host& host);

    std::string issue(const std::string& request_json) override;
    std::string revoke(const std::string& request_json) override;
    std::string describe() override;
    std::string query(const std::string& request_json) override;

private:
    struct Signer {
        certconn::crypto::Cert certificate;  // cfssl's signing CA
        std::string chain_pem;               // it first, then chain_file's certificates
    };
    /// cfssl's signer (POST info), cached for a few minutes.
    std::shared_ptr<const Signer> signer();
    /// The CRL (DER) from crl_url, or from cfssl's crl endpoint (cfssl >= 1.3), verified and cached.
    std::string crl_der();
    std::string answer(const IssuedCertificate& cert, bool already_issued);
    /// Logs event 408 (CA unreachable / unreadable) for a retryable failure, 407 for a denial.
    void report(const certconn::sdk::Error& e, const std::string& request_id, const std::string& what);

    std::string name_;
    certconn::sdk::Host& host_;
    std::unique_ptr<CfsslApi> api_;
    std::map<std::string, std::string> profiles_;  // connector profile -> cfssl profile ("" = default)
    std::string chain_file_pem_;
    std::string crl_url_;
    std::chrono::seconds crl_cache_{60};
    std::unique_ptr<CertificateTable> table_;

    std::mutex signer_mutex_;
    std::shared_ptr<const Signer> signer_;
    std::chrono::steady_clock::time_point signer_fetched_;

    std::mutex crl_mutex_;
    std::string crl_;
    std::chrono::steady_clock::time_point crl_fetched_;

    // Request ids being signed now: a concurrent duplicate waits instead of signing twice.
    std::mutex inflight_mutex_;
    std::condition_variable inflight_done_;
    std::set<std::string> inflight_;
};

}  // namespace cfssl_plugin
