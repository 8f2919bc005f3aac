// ca-local: the embedded OpenSSL CA. One plugin instance serves every [ca.<name>] with
// plugin = "local"; each gets its own hierarchy and database under the plugin's state dir.
#include "LocalCa.hpp"

#include <certconn/sdk.hpp>

#include <boost/json/parse.hpp>

namespace {

constexpr const char* kSchema = R"json({"type":"table","keys":{
  "algorithm": {"type":"string","enum":["rsa3072","rsa4096","p256","p384"],
                "description":"key algorithm of the root and issuing CA created on first start"},
  "root_subject": {"type":"string"},
  "issuing_subject": {"type":"string"},
  "root_validity_days": {"type":"integer","min":1,"max":36500},
  "issuing_validity_days": {"type":"integer","min":1,"max":36500},
  "certificate": {"type":"string","description":"existing issuing CA certificate (absolute PEM path)"},
  "private_key": {"type":"string","secret":true,"description":"its key: absolute PEM path or pkcs11: URI (may carry pin-value, hence redacted in logs)"},
  "chain": {"type":"string","description":"certificates above the issuing CA (absolute PEM path)"},
  "profiles": {"type":"table","values":{"type":"table","keys":{
    "validity_days": {"type":"integer","min":1,"max":3650},
    "key_usage": {"type":"array","items":{"type":"string","enum":["digitalSignature","nonRepudiation",
      "keyEncipherment","dataEncipherment","keyAgreement"]}},
    "extended_key_usage": {"type":"array","items":{"type":"string"}},
    "key_types": {"type":"array","items":{"type":"string","enum":["rsa2048","rsa3072","rsa4096","p256","p384"]}},
    "subject_attributes": {"type":"array","items":{"type":"string"}},
    "san_types": {"type":"array","items":{"type":"string","enum":["email","upn","dns","uri","ip"]}},
    "backdate_minutes": {"type":"integer","min":0,"max":10080}
  }}}
}})json";

class LocalCaPlugin final : public certconn::sdk::CaPlugin {
public:
    explicit LocalCaPlugin(certconn::sdk::Host& host) : host_(host) {}

    std::unique_ptr<Ca> open(const std::string& name, const std::string& config_json) override {
        const auto config = boost::json::parse(config_json).as_object();
        return std::make_unique<certconn::ca_local::LocalCa>(name, config, host_.state_dir() / name, host_);
    }

private:
    certconn::sdk::Host& host_;
};

}  // namespace

CERTCONN_PLUGIN(LocalCaPlugin, "local", "0.1.0", "2026-11-24", "Embedded OpenSSL CA (root + issuing, profiles, SQLite record)", kSchema)
