// ca-cfssl: a certconnector CA plugin that issues, revokes and publishes CRLs through
// CloudFlare's cfssl (cfssl serve), built out of tree against the installed SDK.
// One plugin instance serves every [ca.<name>] with plugin = "cfssl".
#include "CfsslCa.hpp"

#include <certconn/http_client.hpp>
#include <certconn/sdk.hpp>

#include <boost/json/parse.hpp>

#include <string>

namespace {

// The configuration of one [ca.<name>] section; the host validates the operator's TOML against
// it before open() (docs/plugin-sdk.md, "Configuration"). The common HTTP keys (ca_file,
// client_certificate, proxy, timeouts, ...) come from the SDK's HTTP client.
const std::string kSchema = std::string(R"json({"type":"table","keys":{)json") + certconn::http::kSchemaProperties + R"json(,
  "url": {"type":"string","required":true,
          "description":"base URL of cfssl serve (or multirootca), e.g. https://cfssl.example.com:8888"},
  "label": {"type":"string","description":"signer label (multirootca); empty for cfssl serve"},
  "auth_key_file": {"type":"string","secret":true,
                    "description":"absolute path of a file holding the hex auth_key of the cfssl profiles: requests then go to authsign (HMAC-SHA256 token)"},
  "chain_file": {"type":"string","description":"absolute path of PEM certificates above cfssl's signer (intermediate setups)"},
  "crl_url": {"type":"string","description":"where cfssl's CRL is published (cfssl 1.2 has no CRL endpoint: publish `cfssl gencrl` output); DER, PEM or base64"},
  "crl_cache_seconds": {"type":"integer","min":0,"max":86400,"description":"how long a fetched CRL is reused (default 60)"},
  "profiles": {"type":"table","values":{"type":"table","keys":{
    "cfssl_profile": {"type":"string","required":true,"description":"the cfssl signing profile this connector profile uses (\"\": cfssl's default)"}
  }}}
}})json";

class CfsslPlugin final : public certconn::sdk::CaPlugin {
public:
    explicit CfsslPlugin(certconn::sdk::Host& host) : host_(host) {}

    std::unique_ptr<Ca> open(const std::string& name, const std::string& config_json) override {
        const auto config = boost::json::parse(config_json).as_object();
        return std::make_unique<cfssl_plugin::CfsslCa>(name, config, host_.state_dir(), host_);
    }

private:
    certconn::sdk::Host& host_;
};

}  // namespace

CERTCONN_PLUGIN(CfsslPlugin, "cfssl", "0.1.0", "2026-12-07",
                "CA backed by a CloudFlare cfssl server (sign/authsign, revoke, CRL)", kSchema.c_str())
