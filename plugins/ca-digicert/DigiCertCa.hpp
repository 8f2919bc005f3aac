// One configured DigiCert ONE CA ([ca.<name>] with plugin = "digicert"): enrollment, pickup of
// requests held for approval, revocation and lookup through DigiCert ONE's Enterprise PKI
// Manager (mPKI) REST API, /mpki/api/v1 (not the older PKI Platform 8 SOAP API).
#pragma once

#include <certconn/http_client.hpp>
#include <certconn/sdk.hpp>
#include <certconn/secret.hpp>
#include <certconn/sqlite.hpp>

#include <boost/json/object.hpp>

#include <array>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace certconn::ca_digicert {

/// A [ca.<name>.profiles.<p>] table: what DigiCert ONE needs besides the CSR.
struct Profile {
    std::string name;
    std::string profile_id;                  ///< DigiCert ONE certificate profile id
    std::string seat_field = "common_name";  ///< which CSR value is the seat id: common_name | email | upn
    int validity_days = 0;                   ///< 0: the profile's own validity
    bool include_ca_chain = true;
};

/// What the plugin remembers per request id (SQLite, in the CA's state directory).
struct RequestRecord {
    std::string request_id;
    std::string profile;
    std::string dc_request_id;  ///< DigiCert's request id of a request held for approval
    std::string status;         ///< pending | issued | denied
    std::string message;        ///< denied: DigiCert's reason
    std::string serial;         ///< issued: canonical upper-case hex
    std::string dc_serial;      ///< issued: the serial as DigiCert wrote it
    std::string certificate_pem;
    std::string chain_pem;
};

class RequestStore {
public:
    explicit RequestStore(const std::filesystem::path& file);
    std::optional<RequestRecord> find(const std::string& request_id);
    std::optional<RequestRecord> find_serial(const std::string& serial);
    /// The newest issued certificate (its CRL distribution point names the CRL).
    std::optional<RequestRecord> latest_issued();
    void put(const RequestRecord& record);

private:
    std::mutex mutex_;
    sqlite::Database db_;
};

class DigiCertCa final : public sdk::CaPlugin::Ca {
public:
    DigiCertCa(std::string name, const boost::json::object& config, const std::filesystem::path& directory, sdk::Host& host);

    std::string issue(const std::string& request_json) override;
    std::string revoke(const std::string& request_json) override;
    std::string describe() override;
    std::string query(const std::string& request_json) override;

private:
    http::Response call(const std::string& method, const std::string& path, const std::string& body,
                        const std::string& request_id) const;
    [[noreturn]] void fail(const http::Response& response, const std::string& what, const std::string& request_id) const;
    [[noreturn]] void unreadable(const std::string& what, const std::string& request_id) const;
    boost::json::object parse_object(const http::Response& response, const std::string& what,
                                     const std::string& request_id) const;
    std::string finish_issued(const boost::json::object& answer, const std::string& request_id, const std::string& profile,
                              const std::string& dc_request_id, const std::string& csr_public_pem);
    std::string pickup(RequestRecord record);
    std::string answer(const RequestRecord& record, bool already_issued) const;
    std::string health();
    std::string crl();
    std::string certificate(const std::string& serial);
    std::string account() const;
    std::string where() const;

    std::string name_;
    sdk::Host& host_;
    std::string url_;  ///< without a trailing slash
    std::string host_name_;
    sdk::Secret api_key_;
    std::string api_key_file_;
    std::string chain_pem_;  ///< from ca_chain_file (issuing CA first), or empty
    std::string crl_url_;
    std::map<std::string, Profile> profiles_;
    std::unique_ptr<http::Client> client_;
    std::unique_ptr<RequestStore> store_;
    /// Issues of the same request id run one at a time (striped by hash), so two concurrent
    /// runs of one job cannot both enroll at DigiCert.
    std::array<std::mutex, 32> issue_locks_;
};

}  // namespace certconn::ca_digicert
