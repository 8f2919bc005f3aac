// ca-adcs: Microsoft AD CS as a CA for the connector. One plugin instance serves every
// [ca.<name>] with plugin = "adcs"; each gets its own HTTP client and request table under the
// plugin's state directory. See docs/ca-adcs.md.
#include "AdcsCa.hpp"

#include <certconn/http_client.hpp>
#include <certconn/sdk.hpp>

#include <boost/json/parse.hpp>

namespace {

namespace json = boost::json;
using certconn::ca_adcs::AdcsCa;

const char* schema() {
    static const std::string text = std::string(R"json({"type":"table","keys":{)json") + certconn::http::kSchemaProperties +
                                    R"json(,
  "url": {"type":"string","description":"Web Enrollment, e.g. https://ca01.corp.example/certsrv"},
  "ces_url": {"type":"string","description":"Certificate Enrollment Web Service (MS-WSTEP) endpoint; when set, enrollment goes through CES"},
  "ca_config": {"type":"string","required":true,"description":"the CA config string 'host\\CA name'"},
  "user_agent": {"type":"string","description":"User-Agent sent to certsrv (default: a browser's; certsrv needs one)"},
  "ca_chain_file": {"type":"string","description":"PEM of the issuing CA and its issuers (default: fetched through certcarc.asp/certnew.p7b)"},
  "crl_url": {"type":"string","description":"where the CA's CRL is (default: the CRL distribution point of an issued certificate)"},
  "profiles": {"type":"table","required":true,"values":{"type":"table","keys":{
    "template": {"type":"string","required":true,"description":"AD CS certificate template name"},
    "attributes": {"type":"array","items":{"type":"string"},"description":"extra request attributes, \"Name:Value\""},
    "san_attribute": {"type":"boolean","description":"send the CSR's SANs as a san: attribute (needs EDITF_ATTRIBUTESUBJECTALTNAME2 on the CA)"}
  }}},
  "revocation": {"type":"table","keys":{)json" +
                                    certconn::http::kSchemaProperties +
                                    R"json(,
    "winrm_url": {"type":"string","required":true,"description":"WinRM HTTPS listener of a host that runs certutil -revoke, e.g. https://ca01:5986/wsman"}
  }}
}})json";
    return text.c_str();
}

class AdcsCaHandle final : public certconn::sdk::CaPlugin::Ca {
public:
    explicit AdcsCaHandle(std::unique_ptr<AdcsCa> ca) : ca_(std::move(ca)) {}
    std::string issue(const std::string& request) override { return ca_->issue(request); }
    std::string revoke(const std::string& request) override { return ca_->revoke(request); }
    std::string describe() override { return ca_->describe(); }
    std::string query(const std::string& request) override { return ca_->query(request); }

private:
    std::unique_ptr<AdcsCa> ca_;
};

class AdcsPlugin final : public certconn::sdk::CaPlugin {
public:
    explicit AdcsPlugin(certconn::sdk::Host& host) : host_(host) {}

    std::unique_ptr<Ca> open(const std::string& name, const std::string& config_json) override {
        std::error_code ec;
        const json::value config = json::parse(config_json, ec);
        if (ec || !config.is_object())
            throw certconn::sdk::Error(CC_ERR_INVALID_ARGUMENT, "ca." + name + ": the section is not a table");
        return std::make_unique<AdcsCaHandle>(
            std::make_unique<AdcsCa>(name, config.as_object(), host_.state_dir() / name, host_));
    }

private:
    certconn::sdk::Host& host_;
};

}  // namespace

CERTCONN_PLUGIN(AdcsPlugin, "adcs", "0.1.0", "2026-12-07",
                "Microsoft AD CS: Web Enrollment or CES (MS-WSTEP) enrollment, WinRM certutil revocation", schema())
