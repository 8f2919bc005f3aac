// ca-local: the embedded OpenSSL CA. One plugin instance serves every [ca.<name>] with
// plugin = "local"; each gets its own hierarchy and database under the plugin's state dir.
#include "LocalCa.hpp"

#include <certconn/sdk.hpp>
#include <certconn/secret.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <functional>
#include <map>
#include <shared_mutex>

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
  "public_base_url": {"type":"string","description":"URL relying parties reach this connector at, e.g. http://pki.example.com; adds CRL distribution point and AIA (OCSP, CA issuers) to issued certificates, and to the issuing CA certificate ca-local creates (the root's CRL and certificate)"},
  "root_crl_validity_days": {"type":"integer","min":1,"max":3650,"description":"nextUpdate of the root CRL, signed when the hierarchy is created and by `certconnector ca root-crl` (default 180)"},
  "root_private_key": {"type":"string","secret":true,"description":"where `ca root-crl` finds the root key when --root-key is not given: absolute PEM path or pkcs11: URI (default: the root-key.pem ca-local created)"},
  "crl_validity_hours": {"type":"integer","min":1,"max":8760,"description":"nextUpdate of each CRL (default 48)"},
  "crl_refresh_hours": {"type":"integer","min":1,"max":8759,"description":"a CRL older than this is regenerated even without revocations (default 24)"},
  "ocsp_validity_minutes": {"type":"integer","min":1,"max":10080,"description":"nextUpdate of OCSP answers (default 60)"},
  "shared_key_file": {"type":"string","description":"with a shared [store] (a fleet) and no certificate/private_key configured: absolute path of a file holding the passphrase (at least 16 characters, the same on every instance) that encrypts the CA keys ca-local creates once and keeps in the store"},
  "crl_leader_seconds": {"type":"integer","min":1,"max":3600,"description":"with a shared [store]: how often the instance leading the CRL duty renews its lease (ttl 3x this) and publishes revocations made through any instance (default 30)"},
  "ocsp_responder_algorithm": {"type":"string","enum":["rsa3072","rsa4096","p256","p384"],"description":"key of the delegated OCSP responder (default p256)"},
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

namespace json = boost::json;
using certconn::ca_local::LocalCa;

/// The open CAs by name, for the plugin's admin command and the hot-swap hand-over.
class Registry {
public:
    void add(LocalCa* ca) {
        std::unique_lock lock(mutex_);
        cas_[ca->name()] = ca;
    }
    void remove(LocalCa* ca) {
        std::unique_lock lock(mutex_);
        if (auto it = cas_.find(ca->name()); it != cas_.end() && it->second == ca) cas_.erase(it);
    }
    /// Runs `fn` on every open CA.
    void each(const std::function<void(LocalCa&)>& fn) {
        std::shared_lock lock(mutex_);
        for (auto& [name, ca] : cas_)
            fn(*ca);
    }
    /// Runs `fn` with the CA named `name` (kept open meanwhile); NOT_FOUND names the open ones.
    std::string with(const std::string& name, const std::function<std::string(LocalCa&)>& fn) {
        std::shared_lock lock(mutex_);
        auto it = cas_.find(name);
        if (it == cas_.end()) {
            std::string open;
            for (const auto& [n, ca] : cas_)
                open += (open.empty() ? "" : ", ") + n;
            throw certconn::sdk::Error(CC_ERR_NOT_FOUND,
                                       "no open local CA named '" + name + "' (open: " + (open.empty() ? "none" : open) + ")");
        }
        return fn(*it->second);
    }

private:
    std::shared_mutex mutex_;
    std::map<std::string, LocalCa*> cas_;
};

class RegisteredCa final : public certconn::sdk::CaPlugin::Ca {
public:
    RegisteredCa(std::unique_ptr<LocalCa> ca, Registry& registry) : ca_(std::move(ca)), registry_(registry) {
        registry_.add(ca_.get());
    }
    ~RegisteredCa() override { registry_.remove(ca_.get()); }
    std::string issue(const std::string& request) override { return ca_->issue(request); }
    std::string revoke(const std::string& request) override { return ca_->revoke(request); }
    std::string describe() override { return ca_->describe(); }
    std::string query(const std::string& request) override { return ca_->query(request); }

private:
    std::unique_ptr<LocalCa> ca_;
    Registry& registry_;
};

constexpr const char* kRootCrlArguments = R"j([
  {"name":"name","kind":"string","required":true,"help":"the CA's name ([ca.<name>])"},
  {"name":"root-key","kind":"file","help":"the root's private key (PEM), e.g. from removable media; default: root_private_key of [ca.<name>], else the root-key.pem ca-local created"},
  {"name":"revoke-issuing","kind":"flag","help":"list the issuing CA certificate as revoked in the root CRL (after a compromise; re-issue the hierarchy next)"},
  {"name":"reason","kind":"string","help":"reason for --revoke-issuing (RFC 5280 name, default cACompromise)"}
])j";

class LocalCaPlugin final : public certconn::sdk::CaPlugin {
public:
    // Relying parties (CRL, OCSP, CA certificates) are served by the host (/crl/, /ocsp/, /ca/)
    // through cc_ca_api.query: this plugin registers no routes.
    explicit LocalCaPlugin(certconn::sdk::Host& host) : host_(host) {
        host.admin_command("ca root-crl", "sign a fresh CRL of a local CA's root with the root key (the offline root's ceremony)",
                           "ca:admin", kRootCrlArguments, [this](std::string_view arguments) { return root_crl(arguments); });
    }

    std::unique_ptr<Ca> open(const std::string& name, const std::string& config_json) override {
        const auto config = json::parse(config_json).as_object();
        return std::make_unique<RegisteredCa>(std::make_unique<LocalCa>(name, config, host_.state_dir() / name, host_),
                                              registry_);
    }

    // Hot-swap hand-over: the CRL refreshers stop, so the next generation's are the only ones
    // writing crl.der. The issuance record (SQLite in WAL mode, or the fleet's PostgreSQL) may
    // be used by both generations; with a shared store both hold the CRL lease as the same
    // instance, so the next generation simply renews it.
    void quiesce(std::chrono::milliseconds) override {
        registry_.each([](LocalCa& ca) { ca.pause_background(); });
    }
    void resume() override {
        registry_.each([](LocalCa& ca) { ca.resume_background(); });
    }

private:
    std::string root_crl(std::string_view arguments) {
        const auto args = json::parse(arguments).as_object();
        auto text = [&](const char* key) {
            const auto* v = args.if_contains(key);
            return v && v->is_string() ? std::string(v->get_string()) : std::string();
        };
        const auto* flag = args.if_contains("revoke-issuing");
        const bool revoke_issuing = flag && flag->is_bool() && flag->get_bool();
        std::string key_pem;
        if (const std::string b64 = text("root-key"); !b64.empty()) {
            try {
                key_pem = certconn::crypto::base64_decode(b64);
            } catch (const std::invalid_argument&) {
                throw certconn::sdk::Error(CC_ERR_INVALID_ARGUMENT, "root-key: the CLI sent no base64 file content");
            }
        }
        const std::string line =
            registry_.with(text("name"), [&](LocalCa& ca) { return ca.sign_root_crl(key_pem, revoke_issuing, text("reason")); });
        certconn::sdk::wipe(key_pem.data(), key_pem.size());
        return json::serialize(json::object{{"exit_code", 0}, {"stdout", line}});
    }

    certconn::sdk::Host& host_;
    Registry registry_;
};

}  // namespace

CERTCONN_PLUGIN(LocalCaPlugin, "local", "0.1.0", "2026-11-24",
                "Embedded OpenSSL CA (root + issuing, profiles, SQLite or shared PostgreSQL record)", kSchema)
