// tenant-intune: Microsoft Intune as a tenant, through its public APIs only. SCEP requests are
// validated by Intune's ScepRequestValidationFEService (validateRequest, then success or failure
// notifications); revocation requests for third-party CAs come from PkiConnectorFEService
// (downloadRevocationRequests / uploadRevocationResults) and run as revoke jobs. Sign-in is Entra
// ID client credentials (a secret or a certificate, renewed before it expires); the service
// endpoints are discovered through Graph. docs/tenant-intune.md is the operator's guide.
#include "Config.hpp"
#include "Credential.hpp"
#include "IntuneClient.hpp"
#include "Protocol.hpp"
#include "RevocationStore.hpp"

#include <certconn/crypto.hpp>
#include <certconn/admin.hpp>
#include <certconn/sdk.hpp>
#include <certconn/time.hpp>

#include <boost/json.hpp>

#include <openssl/x509.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <memory>
#include <mutex>

namespace {

namespace json = boost::json;
namespace intune = certconn::intune;
namespace crypto = certconn::crypto;
using certconn::sdk::Error;

constexpr const char* kJobPrefix = "intune-rev-";
constexpr std::size_t kUploadBatch = 100;
constexpr int kKeepUploadedDays = 30;

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

const json::object& object_of(const json::value& v, const std::string& what) {
    if (!v.is_object()) throw Error(CC_ERR_INVALID_ARGUMENT, what + ": request is not a JSON object");
    return v.get_object();
}

/// A required string field of a request the host (a feature) sent.
std::string required(const json::object& o, const char* key, const std::string& operation, std::size_t max = 4096) {
    const auto* v = o.if_contains(key);
    if (!v || !v->is_string() || v->get_string().empty())
        throw Error(CC_ERR_INVALID_ARGUMENT, operation + ": field '" + key + "' (a non-empty string) is required");
    if (v->get_string().size() > max)
        throw Error(CC_ERR_INVALID_ARGUMENT, operation + ": field '" + key + "' is longer than " + std::to_string(max));
    return std::string(v->get_string());
}

std::string optional_string(const json::object& o, const char* key) {
    const auto* v = o.if_contains(key);
    return v && v->is_string() ? std::string(v->get_string()) : std::string();
}

/// base64 DER of a PKCS#10 request given as PEM (or already as base64 DER).
std::string csr_base64(const std::string& text, const std::string& field) {
    try {
        if (text.find("-----BEGIN") == std::string::npos) {
            const std::string der = crypto::base64_decode(text);
            const unsigned char* p = reinterpret_cast<const unsigned char*>(der.data());
            crypto::Request req(d2i_X509_REQ(nullptr, &p, static_cast<long>(der.size())));
            if (!req) throw std::invalid_argument("not a DER PKCS#10 request");
            return crypto::base64_encode(der);
        }
        crypto::Request req = crypto::load_csr(text);
        unsigned char* der = nullptr;
        const int n = i2d_X509_REQ(req.get(), &der);
        if (n <= 0) crypto::throw_openssl("encoding the CSR");
        std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(n));
        OPENSSL_free(der);
        return crypto::base64_encode(out);
    } catch (const std::exception& e) {
        throw Error(CC_ERR_INVALID_ARGUMENT, field + ": expected a PEM certificate request: " + intune::printable(e.what(), 200));
    }
}

/// SHA-1 thumbprint as Intune shows it: hex, upper-case (colons, as openssl prints them, dropped).
std::string upper_hex(const std::string& text, const std::string& field) {
    std::string out;
    for (char c : text) {
        if (c == ':') continue;
        if (!std::isxdigit(static_cast<unsigned char>(c))) throw Error(CC_ERR_INVALID_ARGUMENT, field + ": expected hexadecimal");
        out += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    return out;
}

std::string iso(std::optional<std::chrono::system_clock::time_point> t) {
    return t ? certconn::sdk::utc_iso8601(*t) : std::string("never");
}

class IntuneTenant final : public certconn::sdk::TenantPlugin {
public:
    explicit IntuneTenant(certconn::sdk::Host& host)
        : host_(host), section_(section_of(host)), config_(intune::parse_config(section_)) {
        if (config_.certificate_credential) {
            try {
                credentials_ = std::make_unique<intune::CredentialStore>(section_, host.state_dir());
            } catch (const Error&) {
                throw;
            } catch (const std::exception& e) {
                throw Error(CC_ERR_INVALID_ARGUMENT, std::string("tenant intune: credential_certificate / credential_key: ") +
                                                         crypto::redact_pkcs11_uri(e.what()));
            }
        }
        client_ = std::make_unique<intune::IntuneClient>(host, config_, credentials_.get());
        (void)store();  // a state directory we cannot use fails init, not the first claim
        start_renewer();
        // Renewal on demand (the renewer otherwise runs renew_before_days ahead of expiry):
        // before a planned change of the credential, or to prove the path works.
        host.admin_command(
            "intune renew-credential",
            "renew the Entra ID certificate credential now: new key, addKey, sign-in test, switch, removeKey",
            "tenant:credential", "[]", [this](std::string_view) {
                std::unique_lock lock(renewer_mutex_);
                if (!renewer_)
                    return certconn::sdk::AdminReply::failed(
                               "the intune tenant signs in with a secret, or credential_renewal = false: "
                               "nothing to renew\n")
                        .json();
                try {
                    renewer_->renew_now();  // under the lock: quiesce waits for it
                } catch (const std::exception& e) {
                    return certconn::sdk::AdminReply::failed(std::string("renewal failed: ") + e.what() + "\n").json();
                }
                const auto current = credentials_->current();
                return certconn::sdk::AdminReply::ok("renewed: the connector signs in with certificate " + current->thumbprint +
                                                     " (valid until " + certconn::sdk::utc_iso8601(current->not_after) + ")\n")
                    .json();
            });
    }

    ~IntuneTenant() override { stop_renewer(); }

    // ---- revocation jobs ----------------------------------------------------------------

    std::string claim_jobs(const std::string& features_json, uint32_t max_jobs, uint32_t lease_seconds) override {
        std::error_code ec;
        const json::value features = json::parse(features_json, ec);
        if (ec || !features.is_array()) throw Error(CC_ERR_INVALID_ARGUMENT, "claim_jobs: features is not a JSON array");
        const bool revoke = std::any_of(features.get_array().begin(), features.get_array().end(),
                                        [](const json::value& f) { return f.is_string() && f.get_string() == "revoke"; });
        if (!revoke || !config_.revocation.enabled || max_jobs == 0) return "[]";

        auto db = store();
        std::optional<Error> download_error;
        const std::int64_t now = now_ms();
        if (now >= db->next_download() && db->counts().queued < config_.revocation.batch_size) {
            try {
                const std::size_t got = download(*db);
                // A full batch: Intune may hold more, so ask again at the next claim.
                db->set_next_download(got >= static_cast<std::size_t>(config_.revocation.batch_size)
                                          ? now
                                          : now + std::int64_t{config_.revocation.interval_seconds} * 1000);
            } catch (const Error& e) {
                download_error = e;
                db->set_next_download(now + std::int64_t{std::min(config_.revocation.interval_seconds, 30)} * 1000);
            }
        }
        const auto jobs = db->claim(max_jobs, lease_seconds);
        if (jobs.empty() && download_error) throw Error(*download_error);  // the host writes 3003 through the revoke feature
        json::array out;
        for (const auto& j : jobs) {
            json::object request{
                {"ca", j.ca}, {"serialNumber", j.serial_number}, {"caConfiguration", j.ca_configuration}, {"reason", j.reason}};
            if (!j.issuer_name.empty()) request["issuerName"] = j.issuer_name;
            out.push_back(
                json::object{{"id", j.job_id}, {"feature", "revoke"}, {"request", std::move(request)}, {"claim", j.claim}});
        }
        return json::serialize(out);
    }

    void complete_job(const std::string& job_id, const std::string& result_json) override {
        std::error_code ec;
        const json::value result = json::parse(result_json, ec);
        if (ec || !result.is_object())
            throw Error(CC_ERR_INVALID_ARGUMENT, "result of job '" + job_id + "' is not a JSON object");
        const std::string status = optional_string(result.get_object(), "status");
        if (status != "succeeded" && status != "failed")
            throw Error(CC_ERR_INVALID_ARGUMENT, "result of job '" + job_id + "' has no status 'succeeded' or 'failed'");
        if (job_id.rfind(kJobPrefix, 0) != 0) throw Error(CC_ERR_NOT_FOUND, "tenant intune has no job '" + job_id + "'");
        auto db = store();
        db->complete(job_id, result_json);  // durable first; a repeated report keeps the first result
        if (db->uploaded(job_id)) return;
        try {
            upload(*db);
        } catch (const Error& e) {
            // Kept in the store: the host retries this call, and every upload sends all pending results.
            throw Error(e.retryable() ? e.code() : CC_ERR_UNAVAILABLE,
                        std::string("result of job '") + job_id + "' recorded, not yet uploaded to Intune: " + e.what());
        }
        if (!db->uploaded(job_id))
            throw Error(CC_ERR_UNAVAILABLE, "result of job '" + job_id + "' recorded; Intune has not taken it yet");
    }

    // ---- calls ----------------------------------------------------------------------------

    std::string call(const std::string& operation, const std::string& request_json) override {
        std::error_code ec;
        const json::value request = json::parse(request_json, ec);
        if (ec) throw Error(CC_ERR_INVALID_ARGUMENT, operation + ": request is not JSON");
        if (operation == "scep.validate") return validate(object_of(request, operation));
        if (operation == "scep.notify_success") return notify_success(object_of(request, operation));
        if (operation == "scep.notify_failure") return notify_failure(object_of(request, operation));
        if (operation == "jobs.renew_lease") return renew_lease(object_of(request, operation));
        if (operation == "tenant.check") return check();
        throw Error(CC_ERR_NOT_SUPPORTED, "tenant intune has no operation '" + intune::printable(operation, 80) + "'");
    }

    std::string health() override {
        const auto s = client_->status();
        json::object out;
        std::string detail;
        bool healthy = true;
        if (!s.sign_in_error.empty()) {
            healthy = false;
            detail = "sign-in failing: " + s.sign_in_error;
        } else if (!s.discovery_error.empty()) {
            healthy = false;
            detail = "service discovery failing: " + s.discovery_error;
        } else if (!s.signed_in) {
            detail = "not signed in yet (signs in at the first call)";
        } else {
            detail =
                "signed in " + iso(s.signed_in) + "; " + std::to_string(s.services) + " services discovered " + iso(s.discovered);
        }
        if (config_.revocation.enabled) {
            try {
                const auto c = store()->counts();
                detail += "; revocation: " + std::to_string(c.queued) + " queued, " + std::to_string(c.leased) + " running, " +
                          std::to_string(c.done) + " awaiting upload";
            } catch (const std::exception& e) {
                healthy = false;
                detail += std::string("; revocation store: ") + e.what();
            }
        }
        if (renewer_) {
            const json::object r = renewer_->state();
            if (const auto* st = r.if_contains("renewal"); st && st->is_string() && st->get_string() == "failed") {
                const auto* why = r.if_contains("last_error");
                detail += "; credential renewal failing" +
                          (why && why->is_string() ? ": " + intune::printable(why->get_string(), 200) : std::string());
            }
            out["credential"] = r;
        }
        out["healthy"] = healthy;
        out["detail"] = detail;
        return json::serialize(out);
    }

    void quiesce(std::chrono::milliseconds) override {
        stop_renewer();
        std::lock_guard lock(store_mutex_);
        store_.reset();  // the next generation opens the file; ours reopens it if still called
    }

    void resume() override { start_renewer(); }

private:
    static json::object section_of(certconn::sdk::Host& host) {
        std::error_code ec;
        json::value v = json::parse(host.config_json(), ec);
        if (ec || !v.is_object()) throw Error(CC_ERR_INVALID_ARGUMENT, "tenant intune: the configuration section is not a table");
        return std::move(v.get_object());
    }

    std::shared_ptr<intune::RevocationStore> store() {
        std::lock_guard lock(store_mutex_);
        if (!store_) store_ = std::make_shared<intune::RevocationStore>(host_.state_dir() / "revocation.db");
        return store_;
    }

    void start_renewer() {
        std::lock_guard lock(renewer_mutex_);
        if (!credentials_ || !config_.credential_renewal || renewer_) return;
        intune::GraphAccess graph{[this](const std::string& method, const std::string& path, const std::string& body) {
                                      return client_->graph(method, path, body);
                                  },
                                  [this] { return application_object_id(); }};
        renewer_ = std::make_unique<intune::CredentialRenewer>(host_, section_, *credentials_, std::move(graph),
                                                               [this](const intune::Credential& c) { client_->test_sign_in(c); });
        renewer_->start();
    }

    void stop_renewer() {
        std::unique_ptr<intune::CredentialRenewer> renewer;
        {
            std::lock_guard lock(renewer_mutex_);
            renewer = std::move(renewer_);
        }
        if (renewer) renewer->stop();
    }

    std::string application_object_id() {
        if (!config_.application_object_id.empty()) return config_.application_object_id;
        {
            std::lock_guard lock(object_id_mutex_);
            if (!object_id_.empty()) return object_id_;
        }
        const json::value a = client_->graph("GET", "/v1.0/applications(appId='" + config_.client_id + "')?$select=id", "");
        const json::object* o = a.if_object();
        const json::value* id = o ? o->if_contains("id") : nullptr;
        if (!id || !id->is_string() || id->get_string().empty() || id->get_string().size() > 64)
            throw Error(CC_ERR_UNAVAILABLE, "Graph GET /v1.0/applications(appId='" + config_.client_id +
                                                "'): the answer has no string field 'id' (set application_object_id)");
        std::lock_guard lock(object_id_mutex_);
        object_id_ = std::string(id->get_string());
        return object_id_;
    }

    /// One downloadRevocationRequests call; every request stored before this returns.
    std::size_t download(intune::RevocationStore& db) {
        const auto& rc = config_.revocation;
        json::object params{{"maxRequests", rc.batch_size}};
        if (rc.issuer_name.empty())
            params["issuerName"] = nullptr;
        else
            params["issuerName"] = rc.issuer_name;
        const json::value answer =
            client_->call(intune::kPkiService, intune::kPkiApiVersion, "CertificateAuthorityRequests/downloadRevocationRequests",
                          json::object{{"downloadParameters", params}}, {});
        const auto requests = intune::revocation_requests(answer, static_cast<std::size_t>(rc.batch_size));
        std::vector<std::string> fresh;
        const std::size_t added = db.add(
            requests, [&](const std::string& c) { return rc.ca_for(c); }, rc.reason, &fresh);
        std::vector<intune::RevocationRequest> unmapped;
        for (const auto& r : requests)
            if (rc.ca_for(r.ca_configuration).empty() && std::find(fresh.begin(), fresh.end(), r.request_context) != fresh.end())
                unmapped.push_back(r);
        for (const auto& r : unmapped) {
            // No job runs for it, so the revoke feature never sees it: its events are written here.
            host_.log(CC_EV_RevokeDownloadedRequest, CC_LEVEL_INFO, "revocation request downloaded",
                      intune::job_id_for(r.request_context));
            host_.log(CC_EV_RevokeRequestFailure, CC_LEVEL_ERROR,
                      "revocation of " + intune::printable(r.serial_number, 80) +
                          " refused: no CA configured for caConfiguration " + intune::printable(r.ca_configuration, 200) +
                          " (add it to [revocation.ca_map] or set default_ca)",
                      intune::job_id_for(r.request_context),
                      json::serialize(json::object{{"error_code", 4002}, {"caConfiguration", r.ca_configuration}}));
        }
        if (added > 0) db.purge_uploaded(kKeepUploadedDays);
        if (!unmapped.empty()) {
            try {
                upload(db);
            } catch (const Error&) {
                // Event 604 is written; the results stay pending and go with the next upload.
            }
        }
        return requests.size();
    }

    /// Uploads every completed, not yet uploaded result (in batches). Throws on failure.
    void upload(intune::RevocationStore& db) {
        std::lock_guard one(upload_mutex_);
        for (int round = 0; round < 100; ++round) {
            const auto pending = db.pending_uploads(kUploadBatch);
            if (pending.empty()) return;
            json::array results;
            std::vector<std::string> contexts;
            for (const auto& p : pending) {
                std::error_code ec;
                const json::value r = json::parse(p.result_json, ec);
                results.push_back(intune::upload_entry(p.request_context, ec ? json::value() : r));
                contexts.push_back(p.request_context);
            }
            const json::value answer =
                client_->call(intune::kPkiService, intune::kPkiApiVersion, "CertificateAuthorityRequests/uploadRevocationResults",
                              json::object{{"results", std::move(results)}}, pending.front().job_id);
            const auto* value = answer.get_object().if_contains("value");
            if (!value || !value->is_bool())
                throw Error(CC_ERR_UNAVAILABLE, "Intune uploadRevocationResults: the answer has no boolean field 'value'");
            if (!value->get_bool())
                throw Error(CC_ERR_UNAVAILABLE, "Intune uploadRevocationResults answered value false (results not taken)");
            db.mark_uploaded(contexts);
            if (pending.size() < kUploadBatch) return;
        }
    }

    std::string renew_lease(const json::object& o) {
        const auto* id = o.if_contains("id");
        const auto* claim = o.if_contains("claim");
        const auto* lease = o.if_contains("lease_seconds");
        if (!id || !id->is_string() || !claim || !claim->is_int64() || !lease || !lease->is_int64() || lease->get_int64() < 1 ||
            lease->get_int64() > std::int64_t{7} * 86400)
            throw Error(CC_ERR_INVALID_ARGUMENT,
                        "jobs.renew_lease needs \"id\", the \"claim\" it was handed and \"lease_seconds\" (1 .. 604800)");
        const std::string job_id(id->get_string());
        if (job_id.rfind(kJobPrefix, 0) != 0) throw Error(CC_ERR_NOT_FOUND, "tenant intune has no job '" + job_id + "'");
        store()->renew(job_id, claim->get_int64(), static_cast<uint32_t>(lease->get_int64()));
        return json::serialize(json::object{{"id", job_id}, {"lease_seconds", lease->get_int64()}});
    }

    // ---- SCEP -----------------------------------------------------------------------------

    std::string validate(const json::object& o) {
        const std::string op = "scep.validate";
        const std::string tx = required(o, "transaction_id", op, 256);
        const auto* renewal = o.if_contains("renewal");
        if (renewal && renewal->is_bool() && renewal->get_bool()) {
            // Intune has no API that validates a renewal (validateRequest needs the challenge
            // Intune put in the profile, which a renewal does not carry). Allowing renewals is the
            // operator's decision: the device proved possession of a certificate we issued.
            if (!config_.allow_renewal)
                return json::serialize(json::object{
                    {"code", "RenewalNotAllowed"},
                    {"errorDescription",
                     "renewals are not allowed: Intune cannot validate them (allow_renewal = false for this tenant)"}});
            return json::serialize(json::object{{"code", "Success"}});
        }
        const std::string csr = csr_base64(required(o, "csr_pem", op, std::size_t{64} * 1024), op + ": field 'csr_pem'");
        json::object body{
            {"request", json::object{{"transactionId", tx}, {"certificateRequest", csr}, {"callerInfo", intune::kCallerInfo}}}};
        const json::value answer =
            client_->call(intune::kScepService, intune::kScepApiVersion, "ScepActions/validateRequest", body, tx);
        const auto reply = intune::scep_reply(answer, "Intune validateRequest");
        json::object out{{"code", reply.code}};
        if (reply.code != "Success" || !reply.description.empty()) out["errorDescription"] = reply.description;
        return json::serialize(out);
    }

    std::string notify(const std::string& path, const std::string& tx, json::object notification) {
        const json::value answer = client_->call(intune::kScepService, intune::kScepApiVersion, "ScepActions/" + path,
                                                 json::object{{"notification", std::move(notification)}}, tx);
        const auto reply = intune::scep_reply(answer, "Intune " + path);
        if (reply.code != "Success")
            throw Error(CC_ERR_INVALID_ARGUMENT, "Intune " + path + " for transaction " + intune::printable(tx, 80) +
                                                     " answered code " + reply.code +
                                                     (reply.description.empty() ? "" : ": " + reply.description));
        return json::serialize(json::object{{"code", reply.code}});
    }

    std::string notify_success(const json::object& o) {
        const std::string op = "scep.notify_success";
        const std::string tx = required(o, "transaction_id", op, 256);
        const std::string ca = required(o, "certificate_authority", op, 256);
        std::string issuer = optional_string(o, "certificate_issuer");
        if (issuer.empty()) issuer = ca;  // a host older than certificate_issuer: our CA's name is the best we know
        json::object n{{"transactionId", tx},
                       {"certificateRequest", csr_base64(required(o, "certificate_request", op, std::size_t{64} * 1024),
                                                         op + ": field 'certificate_request'")},
                       {"certificateThumbprint",
                        upper_hex(required(o, "certificate_thumbprint", op, 128), op + ": field 'certificate_thumbprint'")},
                       {"certificateSerialNumber", required(o, "certificate_serial_number", op, 128)},
                       {"certificateExpirationDateUtc", required(o, "certificate_expiration_date_utc", op, 64)},
                       {"issuingCertificateAuthority", issuer},
                       {"caConfiguration", config_.ca_configuration.empty() ? ca : config_.ca_configuration},
                       {"certificateAuthority", ca},
                       {"callerInfo", intune::kCallerInfo}};
        return notify("successNotification", tx, std::move(n));
    }

    std::string notify_failure(const json::object& o) {
        const std::string op = "scep.notify_failure";
        const std::string tx = required(o, "transaction_id", op, 256);
        const auto* h = o.if_contains("hResult");
        if (!h || !(h->is_int64() || h->is_uint64()))
            throw Error(CC_ERR_INVALID_ARGUMENT, op + ": field 'hResult' (an integer) is required");
        // HRESULTs are 32-bit; 0x80004005 arrives as a positive number or as a negative int32.
        std::int64_t hresult = h->is_int64() ? h->get_int64() : static_cast<std::int64_t>(h->get_uint64() & 0xffffffffu);
        if (hresult > 0x7fffffff && hresult <= 0xffffffffLL)
            hresult = static_cast<std::int32_t>(static_cast<std::uint32_t>(hresult));
        std::string description = optional_string(o, "errorDescription");
        if (description.empty()) description = "issuance failed";
        json::object n{{"transactionId", tx},
                       {"certificateRequest", csr_base64(required(o, "certificate_request", op, std::size_t{64} * 1024),
                                                         op + ": field 'certificate_request'")},
                       {"hResult", hresult},
                       {"errorDescription", intune::truncate_utf8(description, intune::kMaxErrorMessage)},
                       {"callerInfo", intune::kCallerInfo}};
        return notify("failureNotification", tx, std::move(n));
    }

    // ---- tenant.check ---------------------------------------------------------------------

    std::string check() {
        json::array checks;
        bool ok = true;
        auto add = [&](const std::string& name, bool good, const std::string& detail) {
            ok = ok && good;
            checks.push_back(json::object{{"name", name}, {"ok", good}, {"detail", detail}});
        };
        auto attempt = [&](const std::string& name, auto&& fn) {
            try {
                add(name, true, fn());
            } catch (const std::exception& e) {
                add(name, false, e.what());
            }
        };
        if (credentials_) {
            attempt("credential", [&] {
                const auto c = credentials_->current();
                return "certificate " + c->thumbprint + ", valid until " + certconn::sdk::utc_iso8601(c->not_after);
            });
        }
        // A new token each, so the check proves the credential works now, not an hour ago.
        for (const auto& [name, scope] : {std::pair<std::string, std::string>{"sign-in (Graph)", config_.graph_scope()},
                                          std::pair<std::string, std::string>{"sign-in (Intune)", config_.intune_scope}}) {
            attempt(name, [&, scope = scope] {
                client_->drop_token(scope);
                client_->token(scope);
                return "token obtained for " + scope + " from " + config_.token_endpoint();
            });
        }
        attempt("service discovery", [&] {
            return std::to_string(client_->discover()) +
                   " Intune endpoints listed by Graph (servicePrincipals/appId=" + intune::kIntuneAppId + "/endpoints)";
        });
        for (const char* service : {intune::kScepService, intune::kPkiService})
            attempt(std::string("service ") + service, [&] { return client_->service_uri(service); });
        if (config_.revocation.enabled)
            attempt("revocation store", [&] {
                const auto c = store()->counts();
                return std::to_string(c.queued) + " queued, " + std::to_string(c.leased) + " running, " + std::to_string(c.done) +
                       " awaiting upload";
            });
        return json::serialize(json::object{{"ok", ok}, {"checks", std::move(checks)}});
    }

    certconn::sdk::Host& host_;
    json::object section_;
    intune::Config config_;
    std::unique_ptr<intune::CredentialStore> credentials_;
    std::unique_ptr<intune::IntuneClient> client_;
    std::mutex store_mutex_;
    std::shared_ptr<intune::RevocationStore> store_;
    std::mutex renewer_mutex_;
    std::unique_ptr<intune::CredentialRenewer> renewer_;
    std::mutex upload_mutex_;
    std::mutex object_id_mutex_;
    std::string object_id_;
};

}  // namespace

CERTCONN_PLUGIN(IntuneTenant, "intune", "0.1.0", "2026-12-07",
                "Microsoft Intune tenant: SCEP validation and notifications, revocation requests for third-party CAs (Entra ID "
                "client credentials, Graph discovery)",
                intune::config_schema())
