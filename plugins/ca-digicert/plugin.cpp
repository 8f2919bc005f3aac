// ca-digicert: DigiCert ONE (Trust Lifecycle Manager / Enterprise PKI Manager) as a CA, through
// its mPKI REST API (/mpki/api/v1). One plugin instance serves every [ca.<name>] with
// plugin = "digicert"; each keeps its request record under the plugin's state dir.
#include "DigiCertCa.hpp"

#include <certconn/http_client.hpp>
#include <certconn/sdk.hpp>

#include <boost/json/parse.hpp>

#include <string>

namespace {

const char* schema() {
    static const std::string text = std::string(R"json({"type":"table","keys":{)json") + certconn::http::kSchemaProperties +
                                    R"json(,
  "url": {"type":"string","required":true,"description":"DigiCert ONE base URL: https://one.digicert.com, or the clientauth. host with a client certificate"},
  "api_key_file": {"type":"string","description":"file holding the API key (service user token), sent only in x-api-key"},
  "ca_chain_file": {"type":"string","description":"PEM: the issuing CA (first) and its chain, when DigiCert's answer carries none"},
  "crl_url": {"type":"string","description":"the issuing CA's CRL; default: the CRL distribution point of the certificates it issued"},
  "profiles": {"type":"table","values":{"type":"table","keys":{
    "profile_id": {"type":"string","required":true,"description":"DigiCert ONE certificate profile id"},
    "seat_field": {"type":"string","enum":["common_name","email","upn"],"description":"which CSR value is the seat id (default common_name)"},
    "validity_days": {"type":"integer","min":1,"max":3650,"description":"requested validity (default: the profile's)"},
    "include_ca_chain": {"type":"boolean","description":"ask DigiCert for the CA chain with each certificate (default true)"}
  }}}
}})json";
    return text.c_str();
}

class DigiCertPlugin final : public certconn::sdk::CaPlugin {
public:
    explicit DigiCertPlugin(certconn::sdk::Host& host) : host_(host) {}

    std::unique_ptr<Ca> open(const std::string& name, const std::string& config_json) override {
        const auto config = boost::json::parse(config_json).as_object();
        return std::make_unique<certconn::ca_digicert::DigiCertCa>(name, config, host_.state_dir() / name, host_);
    }

private:
    certconn::sdk::Host& host_;
};

}  // namespace

CERTCONN_PLUGIN(DigiCertPlugin, "digicert", "0.1.0", "2026-12-07",
                "DigiCert ONE CA (Enterprise PKI Manager REST API, mpki/api/v1): issue, approval pickup, revoke, lookup, CRL",
                schema())
