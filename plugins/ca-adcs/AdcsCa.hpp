// One configured [ca.<name>] with plugin = "adcs": an enterprise AD CS CA reached through Web
// Enrollment (/certsrv) or the Certificate Enrollment Web Service (MS-WSTEP), revoking through
// WinRM (certutil -revoke) when configured.
#pragma once

#include "RequestStore.hpp"

#include <certconn/http_client.hpp>
#include <certconn/sdk.hpp>

#include <boost/json.hpp>

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace certconn::ca_adcs {

struct Profile {
    std::string name;
    std::string template_name;
    std::vector<std::string> attributes;  ///< extra "Name:Value" request attributes
    bool san_attribute = false;           ///< add the CSR's SANs as a "san:" attribute
};

class AdcsCa {
public:
    AdcsCa(std::string name, const boost::json::object& config, const std::filesystem::path& directory, sdk::Host& host);

    std::string issue(const std::string& request_json);
    std::string revoke(const std::string& request_json);
    std::string describe();
    std::string query(const std::string& request_json);

private:
    struct Issued {
        std::string certificate_pem;
        std::string chain_pem;
    };
    // Web Enrollment
    Issued certsrv_submit(const std::string& request_id, const Profile& profile, const std::string& csr_pem);
    Issued certsrv_fetch(const std::string& request_id, const std::string& ca_request_id);
    // MS-WSTEP
    Issued wstep_call(const std::string& request_id, const std::string& profile, const std::string& body,
                      const std::string& known_ca_request_id);
    std::string wstep_envelope(const std::string& rst) const;
    // WinRM
    std::string winrm_call(const std::string& action, const std::string& shell_id, const std::string& body,
                           const std::string& options = {}, bool receive = false);
    std::string winrm_run(const std::string& command_line, int& exit_code);

    http::Response perform(const http::Request& request, const std::string& request_id, const http::Client& client,
                           const std::string& what);
    [[noreturn]] void unreadable(const std::string& request_id, const std::string& message);
    [[noreturn]] void pending(const std::string& request_id, const std::string& ca_request_id);
    [[noreturn]] void denied(const std::string& request_id, const std::string& ca_request_id, const std::string& message);
    std::string answer(const RequestRecord& record, bool already_issued) const;
    RequestRecord record_issued(RequestRecord record, const Issued& issued);
    std::string chain_pem(const std::string& request_id);
    std::string account() const;
    std::string product_request(const std::string& ca_request_id) const;

    std::string name_;
    sdk::Host& host_;
    std::string url_;      ///< https://host/certsrv (no trailing slash), or empty
    std::string ces_url_;  ///< the CES endpoint, or empty
    std::string ca_config_;
    std::string crl_url_;
    std::map<std::string, Profile> profiles_;
    std::unique_ptr<http::Client> client_;
    std::unique_ptr<http::Client> winrm_;  ///< null: revocation not configured
    std::string winrm_url_;
    std::unique_ptr<RequestStore> store_;
    std::filesystem::path chain_file_;  ///< cache of the fetched chain
    std::mutex chain_mutex_;
    std::string chain_pem_;  ///< configured or fetched; issuing CA first
    std::mutex inflight_mutex_;
    std::map<std::string, std::weak_ptr<std::mutex>> inflight_;  ///< one issue per request id at a time
};

}  // namespace certconn::ca_adcs
