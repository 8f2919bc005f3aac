// ca-local: the embedded OpenSSL CA. One plugin instance serves every [ca.<name>] with
// plugin = "local"; each gets its own hierarchy and database under the plugin's state dir.
#include "LocalCa.hpp"

#include <certconn/sdk.hpp>

#include <boost/json/parse.hpp>

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
  "public_base_url": {"type":"string","description":"URL relying parties reach this connector at, e.g. http://pki.example.com; adds CRL distribution point and AIA (OCSP, CA issuers) to issued certificates"},
  "crl_validity_hours": {"type":"integer","min":1,"max":8760,"description":"nextUpdate of each CRL (default 48)"},
  "crl_refresh_hours": {"type":"integer","min":1,"max":8759,"description":"a CRL older than this is regenerated even without revocations (default 24)"},
  "ocsp_validity_minutes": {"type":"integer","min":1,"max":10080,"description":"nextUpdate of OCSP answers (default 60)"},
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
using certconn::sdk::HttpRequest;
using certconn::sdk::HttpResponse;

/// The open CAs by name, for the relying-party routes (CRL, OCSP, CA certificate).
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
    /// Runs `fn` with the CA named `name` (kept open meanwhile), or answers 404.
    HttpResponse with(const std::string& name, const std::function<HttpResponse(LocalCa&)>& fn) {
        std::shared_lock lock(mutex_);
        auto it = cas_.find(name);
        if (it == cas_.end()) return HttpResponse{404, {{"Content-Type", "text/plain"}}, "no local CA named '" + name + "'\n"};
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

/// "/crl/local.crl" with prefix "/crl/" and suffix ".crl" -> "local"; "" when it does not fit.
std::string name_between(std::string_view path, std::string_view prefix, std::string_view suffix) {
    if (path.size() <= prefix.size() + suffix.size() || path.substr(0, prefix.size()) != prefix ||
        path.substr(path.size() - suffix.size()) != suffix)
        return {};
    return std::string(path.substr(prefix.size(), path.size() - prefix.size() - suffix.size()));
}

HttpResponse ocsp_answer(Registry& registry, const std::string& name, std::string_view der) {
    return registry.with(name, [&](LocalCa& ca) {
        return HttpResponse{200, {{"Content-Type", "application/ocsp-response"}}, ca.ocsp(der)};
    });
}

class LocalCaPlugin final : public certconn::sdk::CaPlugin {
public:
    explicit LocalCaPlugin(certconn::sdk::Host& host) : host_(host) {
        host.route("GET", "/crl/", [this](const HttpRequest& r) {
            const std::string name = name_between(r.path, "/crl/", ".crl");
            if (name.empty()) return HttpResponse{404, {{"Content-Type", "text/plain"}}, "expected /crl/<ca>.crl\n"};
            return registry_.with(name, [](LocalCa& ca) {
                return HttpResponse{200, {{"Content-Type", "application/pkix-crl"}}, *ca.crl()};
            });
        });
        host.route("GET", "/ca/", [this](const HttpRequest& r) {
            const std::string name = name_between(r.path, "/ca/", ".crt");
            if (name.empty()) return HttpResponse{404, {{"Content-Type", "text/plain"}}, "expected /ca/<ca>.crt\n"};
            return registry_.with(name, [](LocalCa& ca) {
                return HttpResponse{200, {{"Content-Type", "application/pkix-cert"}}, ca.issuing_der()};
            });
        });
        // RFC 6960 appendix A: POST /ocsp/<ca> with the DER request as body, or
        // GET /ocsp/<ca>/<url-encoded base64 of the DER request>.
        host.route("POST", "/ocsp/", [this](const HttpRequest& r) {
            const std::string name(r.path.substr(6));
            if (name.empty() || name.find('/') != std::string::npos)
                return HttpResponse{404, {{"Content-Type", "text/plain"}}, "expected POST /ocsp/<ca>\n"};
            return ocsp_answer(registry_, name, r.body);
        });
        host.route("GET", "/ocsp/", [this](const HttpRequest& r) {
            const std::string_view rest = r.path.substr(6);
            const auto slash = rest.find('/');
            if (slash == std::string_view::npos || slash == 0)
                return HttpResponse{404, {{"Content-Type", "text/plain"}}, "expected GET /ocsp/<ca>/<base64 request>\n"};
            std::string der;
            try {
                der = certconn::crypto::base64_decode(rest.substr(slash + 1));
            } catch (const std::exception&) {
                return HttpResponse{400, {{"Content-Type", "text/plain"}}, "the OCSP request is not base64\n"};
            }
            return ocsp_answer(registry_, std::string(rest.substr(0, slash)), der);
        });
    }

    std::unique_ptr<Ca> open(const std::string& name, const std::string& config_json) override {
        const auto config = json::parse(config_json).as_object();
        return std::make_unique<RegisteredCa>(std::make_unique<LocalCa>(name, config, host_.state_dir() / name, host_),
                                              registry_);
    }

    // Hot-swap hand-over: the CRL refreshers stop, so the next generation's are the only ones
    // writing crl.der. The issuance record is SQLite in WAL mode: both generations may use it.
    void quiesce(std::chrono::milliseconds) override {
        registry_.each([](LocalCa& ca) { ca.pause_background(); });
    }
    void resume() override {
        registry_.each([](LocalCa& ca) { ca.resume_background(); });
    }

private:
    certconn::sdk::Host& host_;
    Registry registry_;
};

}  // namespace

CERTCONN_PLUGIN(LocalCaPlugin, "local", "0.1.0", "2026-11-24", "Embedded OpenSSL CA (root + issuing, profiles, SQLite record)",
                kSchema)
