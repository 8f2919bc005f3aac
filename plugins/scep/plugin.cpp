// scep: an RFC 8894 SCEP server. Each [scep.profiles.<name>] is an endpoint with its own CA,
// certificate profile and RA certificate; the tenant validates every challenge.
#include "IssuedCertificates.hpp"
#include "PendingRequests.hpp"
#include "ScepMessage.hpp"
#include "SharedRa.hpp"
#include "Store.hpp"
#include "TransactionLedger.hpp"

#include <certconn/admin.hpp>
#include <certconn/crypto.hpp>
#include <certconn/sdk.hpp>
#include <certconn/sql.hpp>
#include <certconn/sqlite.hpp>

#include <boost/json.hpp>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <tuple>

namespace {

namespace json = boost::json;
namespace crypto = certconn::crypto;
namespace scep = certconn::scep;
using certconn::sdk::Error;
using certconn::sdk::HttpRequest;
using certconn::sdk::HttpResponse;

constexpr const char* kSchema = R"json({"type":"table","keys":{
  "shared_key_file": {"type":"string","description":"with a shared [store]: file holding the passphrase that encrypts the profiles' RA keys in the store (the same on every instance; required there)"},
  "profiles": {"type":"table","values":{"type":"table","keys":{
    "path": {"type":"string","required":true,"description":"endpoint path, e.g. /scep (also serves <path>/pkiclient.exe)"},
    "ca": {"type":"string","required":true,"description":"the configured CA that issues"},
    "tenant": {"type":"string","description":"the [tenant.<name>] that validates this profile's challenges and hears of its results (default: the default tenant)"},
    "certificate_profile": {"type":"string","description":"that CA's certificate profile (default: default)"},
    "ra_subject": {"type":"string"},
    "include_root": {"type":"boolean","description":"GetCACert includes the root CA (default true)"},
    "next_ca_certificate": {"type":"string","description":"rollover: PEM file (absolute path) with the next CA (and RA) certificates; enables GetNextCACert"},
    "allow_single_des": {"type":"boolean","description":"accept single-DES requests via OpenSSL's legacy provider (default false)"},
    "max_concurrent_requests": {"type":"integer","min":1,"max":10000,
      "description":"PKIOperations processed at once; more get 429 with Retry-After (default 6; keep it below [host] workers, or the host queue answers first)"},
    "retry_after_seconds": {"type":"integer","min":1,"max":3600},
    "require_approval": {"type":"boolean","description":"requests wait for `certconnector scep approve` (default false)"},
    "renewal_window_days": {"type":"integer","min":0,"max":3650,
      "description":"renewal (signed by a valid certificate this profile issued) only this close to expiry; 0 = any time (default)"},
    "max_renewals": {"type":"integer","min":0,"max":100000,
      "description":"renewals allowed per original enrollment, counted over all its renewals (default 10; 0 = renewal refused)"},
    "renewal_allow_san_subset": {"type":"boolean",
      "description":"a renewal may drop SANs of the certificate it renews (default false: the same SAN set); never add one"},
    "min_digest": {"type":"string","enum":["sha256","sha1"],
      "description":"weakest message and CSR digest accepted (default sha256; sha1 for old clients). MD5 is always refused"}
  }}}
}})json";

/// Percent-decoding of a query value. Base64 '+' arrives as '+', "%2B" or (decoded by some
/// clients' libraries as) a space: all three mean '+'.
std::string query_value(std::string_view query, std::string_view name) {
    std::size_t pos = 0;
    while (pos <= query.size()) {
        const std::size_t end = std::min(query.find('&', pos), query.size());
        const std::string_view pair = query.substr(pos, end - pos);
        const std::size_t eq = pair.find('=');
        if (eq != std::string_view::npos && pair.substr(0, eq) == name) {
            std::string out;
            const std::string_view raw = pair.substr(eq + 1);
            for (std::size_t i = 0; i < raw.size(); ++i) {
                if (raw[i] == '%' && i + 2 < raw.size()) {
                    const std::string hex(raw.substr(i + 1, 2));
                    if (hex.size() == 2 && std::isxdigit(static_cast<unsigned char>(hex[0])) &&
                        std::isxdigit(static_cast<unsigned char>(hex[1]))) {
                        out += static_cast<char>(std::stoi(hex, nullptr, 16));
                        i += 2;
                        continue;
                    }
                }
                out += raw[i] == ' ' ? '+' : raw[i];
            }
            for (auto& c : out)
                if (c == ' ') c = '+';
            return out;
        }
        pos = end + 1;
    }
    return {};
}

struct Profile {
    std::string name, path, ca, certificate_profile, ra_subject;
    std::string tenant;  // "" = the default tenant
    bool include_root = true;
    bool allow_single_des = false;
    int renewal_window_days = 0;
    int max_renewals = 10;
    bool renewal_allow_san_subset = false;
    std::string min_digest = "sha256";
    int min_digest_strength = 2;  // scep::digest_strength of min_digest
    bool require_approval = false;
    int max_concurrent = 6;  // below the host's default 8 workers, so the limit is what answers 429
    int retry_after_seconds = 10;
    std::vector<crypto::Cert> next_ca;  // GetNextCACert; empty when no rollover is configured
    std::atomic<int> in_flight{0};
    // RA identity, created on first use from the CA.
    std::mutex mutex;
    crypto::PKey ra_key;
    crypto::Cert ra_cert;
    std::vector<crypto::Cert> chain;  // issuing CA first
};

class ScepFeature final : public certconn::sdk::FeaturePlugin {
public:
    explicit ScepFeature(certconn::sdk::Host& host) : host_(host) {
        const auto config = json::parse(host.config_json()).as_object();
        if (const auto* f = config.if_contains("shared_key_file"); f && f->is_string())
            shared_key_file_ = std::string(f->as_string());
        // Approval of pending requests: callers holding scep:approve (the host checks it; the
        // CLI's `scep pending|approve|deny` come through the admin socket).
        host.route("GET", "/scep/v1/pending", "scep:approve", [this](const HttpRequest&) {
            return HttpResponse{200, {{"Content-Type", "application/json"}}, json::serialize(pending_.list("pending"))};
        });
        host.route("POST", "/scep/v1/pending/decide", "scep:approve", [this](const HttpRequest& r) { return decide(r); });
        register_approval_commands(host);
        if (const auto* profiles = config.if_contains("profiles")) {
            for (const auto& [name, value] : profiles->as_object()) {
                const auto& o = value.as_object();
                auto p = std::make_unique<Profile>();
                p->name = std::string(name);
                p->path = std::string(o.at("path").as_string());
                p->ca = std::string(o.at("ca").as_string());
                p->certificate_profile =
                    o.contains("certificate_profile") ? std::string(o.at("certificate_profile").as_string()) : "default";
                p->ra_subject = o.contains("ra_subject") ? std::string(o.at("ra_subject").as_string())
                                                         : "CN=certconnector SCEP RA (" + p->name + ")";
                if (o.contains("include_root")) p->include_root = o.at("include_root").as_bool();
                if (o.contains("allow_single_des")) p->allow_single_des = o.at("allow_single_des").as_bool();
                if (o.contains("max_concurrent_requests"))
                    p->max_concurrent = static_cast<int>(o.at("max_concurrent_requests").as_int64());
                if (o.contains("retry_after_seconds"))
                    p->retry_after_seconds = static_cast<int>(o.at("retry_after_seconds").as_int64());
                if (o.contains("require_approval")) p->require_approval = o.at("require_approval").as_bool();
                if (o.contains("tenant")) p->tenant = std::string(o.at("tenant").as_string());
                if (o.contains("next_ca_certificate")) {
                    const std::string file(o.at("next_ca_certificate").as_string());
                    if (!std::filesystem::path(file).is_absolute())
                        throw Error(CC_ERR_INVALID_ARGUMENT,
                                    "profile '" + p->name + "': next_ca_certificate '" + file + "' must be an absolute path");
                    try {
                        p->next_ca = crypto::load_certificates(crypto::read_file(file, "next_ca_certificate"));
                    } catch (const std::exception& e) {
                        throw Error(CC_ERR_INVALID_ARGUMENT, "profile '" + p->name + "': next_ca_certificate: " + e.what());
                    }
                    if (p->next_ca.empty())
                        throw Error(CC_ERR_INVALID_ARGUMENT,
                                    "profile '" + p->name + "': next_ca_certificate " + file + " holds no certificate");
                }
                if (o.contains("renewal_window_days"))
                    p->renewal_window_days = static_cast<int>(o.at("renewal_window_days").as_int64());
                if (o.contains("max_renewals")) p->max_renewals = static_cast<int>(o.at("max_renewals").as_int64());
                if (o.contains("renewal_allow_san_subset"))
                    p->renewal_allow_san_subset = o.at("renewal_allow_san_subset").as_bool();
                if (o.contains("min_digest")) p->min_digest = std::string(o.at("min_digest").as_string());
                p->min_digest_strength = p->min_digest == "sha1" ? 1 : 2;
                Profile* raw = p.get();
                for (const std::string& path : {p->path, p->path + "/pkiclient.exe"})
                    for (const char* method : {"GET", "POST"})
                        host.route(method, path, [this, raw](const HttpRequest& r) { return handle(*raw, r); });
                if (p->allow_single_des && !legacy_) legacy_ = std::make_unique<scep::LegacyProviders>();
                profiles_.push_back(std::move(p));
            }
        }
        if (stores_.pending->db.shared() && !profiles_.empty()) prepare_shared_ra();
        hand_over_old_notifications();  // after the profiles: each names its tenant
    }

    std::string run_job(const std::string&) override {
        throw Error(CC_ERR_NOT_SUPPORTED, "the scep feature serves devices over HTTP; it takes no tenant jobs");
    }

private:
    /// This instance's id in the fleet (the host's instance id; host:pid before ABI 1.5).
    static std::string instance_id_of(const certconn::sdk::Host& host) {
        try {
            std::error_code ec;
            const json::value v = json::parse(host.store_config_json(), ec);
            const auto* id = !ec && v.is_object() ? v.as_object().if_contains("instance_id") : nullptr;
            if (id && id->is_string() && !id->as_string().empty()) return std::string(id->as_string());
        } catch (const std::exception&) {
        }
        char name[256] = {};
        ::gethostname(name, sizeof name - 1);
        return std::string(name) + ":" + std::to_string(::getpid());
    }

    static scep::Connections open_stores(const certconn::sdk::Host& host) {
        try {
            return scep::open_stores(certconn::sql::Options::for_plugin(host, "scep", "pending.db"),
                                     certconn::sql::Options::for_plugin(host, "scep", "issued.db"));
        } catch (const certconn::sql::Error& e) {
            throw Error(e.transient() ? CC_ERR_UNAVAILABLE : CC_ERR_INTERNAL, std::string("scep state store: ") + e.what());
        }
    }

    /// A shared store: every instance must serve the same RA, created once and stored encrypted
    /// under [scep] shared_key_file. Without the file, or when the stored keys do not decrypt with
    /// it, init fails: an instance with another RA would answer devices with a certificate
    /// whose key the other instances do not hold.
    void prepare_shared_ra() {
        if (shared_key_file_.empty())
            throw Error(CC_ERR_INVALID_ARGUMENT,
                        "[scep] shared_key_file: needed with a shared [store] so every instance serves the same RA "
                        "certificate and key for profile '" +
                            profiles_.front()->name + "' (a file holding a passphrase, the same on every instance)");
        try {
            ra_passphrase_ = scep::read_passphrase_file(shared_key_file_);
        } catch (const std::exception& e) {
            throw Error(CC_ERR_INVALID_ARGUMENT, std::string("[scep] shared_key_file: ") + e.what());
        }
        // RAs already in the store must decrypt with our passphrase. The store may be down now:
        // then the first request checks it (and refuses with the same message).
        try {
            for (const auto& p : profiles_)
                if (const auto row = shared_ra_.find(p->name))
                    scep::decrypt_private_key(
                        row->key_pem, ra_passphrase_,
                        "the shared RA key of profile '" + p->name + "' (stored by instance " + row->created_by + ")");
        } catch (const certconn::sql::Error& e) {
            if (!e.transient()) throw Error(CC_ERR_INTERNAL, std::string("scep state store: ") + e.what());
            host_.log(CC_EV_StoreUnavailable, CC_LEVEL_WARNING,
                      std::string("scep: the shared store cannot be read now (") + e.what() +
                          "); the RA keys are checked at the first request");
        } catch (const std::runtime_error& e) {
            throw Error(CC_ERR_INVALID_ARGUMENT, std::string("[scep] shared_key_file ") + shared_key_file_ + ": " + e.what());
        }
    }

    /// The shared store's RA of `p`: the stored one, or ours offered first (an RA this instance
    /// created before the fleet, from its state directory, so its devices keep their RA).
    void load_shared_ra(Profile& p) {
        const auto dir = host_.state_dir() / p.name;
        auto row = shared_ra_.find(p.name);
        if (!row) {
            scep::RaRecord candidate;
            crypto::PKey key;
            if (std::filesystem::exists(dir / "ra.pem") && std::filesystem::exists(dir / "ra-key.pem")) {
                key = crypto::load_private_key(crypto::read_file(dir / "ra-key.pem"));
                candidate.certificate_pem = crypto::read_file(dir / "ra.pem");
                candidate.chain_pem = crypto::read_file(dir / "chain.pem");
            } else {
                key = crypto::generate_key("rsa2048");  // RSA: clients encrypt to the RA
            }
            candidate.key_pem = scep::encrypt_private_key(key.get(), ra_passphrase_);
            candidate.csr_pem = crypto::make_csr_pem(key.get(), p.ra_subject, {});
            candidate.created_by = instance_id_;
            row = shared_ra_.offer(p.name, candidate);
            if (row->created_by == instance_id_ && row->key_pem == candidate.key_pem)
                host_.log(CC_EV_ScepRequestReceived, CC_LEVEL_INFO,
                          "profile '" + p.name + "': this instance stored the RA " +
                              (candidate.certificate_pem.empty() ? "key it created" : "it already had") +
                              " in the shared store; every instance serves it");
        }
        crypto::PKey key = scep::decrypt_private_key(
            row->key_pem, ra_passphrase_,
            "[scep] shared_key_file: the shared RA key of profile '" + p.name + "' (stored by instance " + row->created_by + ")");
        if (row->certificate_pem.empty()) {
            // The CA issues once per request id; the id names the stored CSR, so every instance
            // asking gets the same certificate for the stored key.
            unsigned char md[32];
            unsigned int md_len = 0;
            EVP_Digest(row->csr_pem.data(), row->csr_pem.size(), md, &md_len, EVP_sha256(), nullptr);
            const std::string digest = crypto::hex_encode(std::string_view(reinterpret_cast<char*>(md), 16));
            const std::string answer =
                host_.ca_issue(p.ca, json::serialize(json::object{{"request_id", "scep-ra:" + p.name + ":" + digest},
                                                                  {"csr_pem", row->csr_pem},
                                                                  {"profile", p.certificate_profile},
                                                                  {"requester", "scep"}}));
            const auto a = json::parse(answer).as_object();
            row = shared_ra_.set_certificate(p.name, std::string(a.at("certificate_pem").as_string()),
                                             std::string(a.at("chain_pem").as_string()));
        }
        crypto::Cert cert = crypto::load_certificate(row->certificate_pem);
        if (X509_check_private_key(cert.get(), key.get()) != 1) {
            ERR_clear_error();
            throw Error(CC_ERR_INTERNAL, "profile '" + p.name + "': the shared RA certificate does not match the shared RA key");
        }
        p.ra_key = std::move(key);
        p.chain = crypto::load_certificates(row->chain_pem);
        p.ra_cert = std::move(cert);
    }

    /// Loads the profile's RA key and certificate, or creates them: key here, certificate from the CA.
    void ensure_ra(Profile& p) {
        std::lock_guard lock(p.mutex);
        if (p.ra_cert) return;
        if (stores_.pending->db.shared()) {
            try {
                load_shared_ra(p);
            } catch (const std::runtime_error& e) {
                if (dynamic_cast<const Error*>(&e) || dynamic_cast<const certconn::sql::Error*>(&e)) throw;
                throw Error(CC_ERR_INTERNAL, e.what());
            }
            return;
        }
        const auto dir = host_.state_dir() / p.name;
        std::filesystem::create_directories(dir);
        ::chmod(dir.c_str(), 0700);
        if (!std::filesystem::exists(dir / "ra.pem")) {
            crypto::PKey key = crypto::generate_key("rsa2048");  // RSA: clients encrypt to the RA
            const std::string csr = crypto::make_csr_pem(key.get(), p.ra_subject, {});
            const std::string answer = host_.ca_issue(p.ca, json::serialize(json::object{{"request_id", "scep-ra:" + p.name},
                                                                                         {"csr_pem", csr},
                                                                                         {"profile", p.certificate_profile},
                                                                                         {"requester", "scep"}}));
            const auto a = json::parse(answer).as_object();
            crypto::write_file_atomic(dir / "ra-key.pem", crypto::private_key_pem(key.get()));
            crypto::write_file_atomic(dir / "chain.pem", std::string(a.at("chain_pem").as_string()));
            crypto::write_file_atomic(dir / "ra.pem",
                                      std::string(a.at("certificate_pem").as_string()));  // last: marks completion
        }
        p.ra_key = crypto::load_private_key(crypto::read_file(dir / "ra-key.pem"));
        p.chain = crypto::load_certificates(crypto::read_file(dir / "chain.pem"));
        p.ra_cert = crypto::load_certificate(crypto::read_file(dir / "ra.pem"));
    }

    HttpResponse handle(Profile& p, const HttpRequest& r) {
        const std::string operation = query_value(r.query, "operation");
        try {
            if (operation == "GetCACaps")
                // Only what this profile accepts: SHA-1 when min_digest allows it, never MD5.
                return {200,
                        {{"Content-Type", "text/plain"}},
                        std::string("AES\nDES3\nSHA-256\nSHA-512\n") + (p.min_digest_strength <= 1 ? "SHA-1\n" : "") +
                            "POSTPKIOperation\nSCEPStandard\nRenewal\n" + (p.next_ca.empty() ? "" : "GetNextCACert\n")};
            ensure_ra(p);
            if (operation == "GetNextCACert") {
                if (p.next_ca.empty())
                    return {404,
                            {{"Content-Type", "text/plain"}},
                            "no CA rollover is configured for this profile (next_ca_certificate)\n"};
                std::vector<X509*> certs;
                for (const auto& c : p.next_ca)
                    certs.push_back(c.get());
                return {200,
                        {{"Content-Type", "application/x-x509-next-ca-cert"}},
                        scep::next_ca_reply(certs, p.ra_cert.get(), p.ra_key.get())};
            }
            if (operation == "GetCACert") {
                std::vector<X509*> certs{p.ra_cert.get()};
                for (std::size_t i = 0; i < p.chain.size(); ++i)
                    if (p.include_root || i + 1 < p.chain.size() || p.chain.size() == 1) certs.push_back(p.chain[i].get());
                return {200, {{"Content-Type", "application/x-x509-ca-ra-cert"}}, scep::certs_only(certs)};
            }
            if (operation == "PKIOperation") {
                // Throttle: clients retry a 429 after Retry-After (Windows and Apple devices do).
                struct Slot {
                    std::atomic<int>& n;
                    const bool granted;
                    Slot(std::atomic<int>& count, int limit) : n(count), granted(++count <= limit) {}
                    ~Slot() { --n; }
                } slot(p.in_flight, p.max_concurrent);
                if (!slot.granted) {
                    host_.log(
                        CC_EV_ScepRequestReceived, CC_LEVEL_WARNING,
                        "profile '" + p.name + "': over " + std::to_string(p.max_concurrent) + " requests at once; answered 429");
                    return {429,
                            {{"Content-Type", "text/plain"}, {"Retry-After", std::to_string(p.retry_after_seconds)}},
                            "busy, retry later\n"};
                }
                std::string der;
                if (r.method == "POST") {
                    der = std::string(r.body);
                } else {
                    try {
                        der = crypto::base64_decode(query_value(r.query, "message"));
                    } catch (const std::invalid_argument&) {
                        return {400, {{"Content-Type", "text/plain"}}, "the message parameter is not base64\n"};
                    }
                }
                return pki_operation(p, der, r);
            }
            return {400, {{"Content-Type", "text/plain"}}, "unknown operation\n"};
        } catch (const Error& e) {
            host_.log(CC_EV_ScepIssuedFailure, CC_LEVEL_ERROR, "profile '" + p.name + "': " + e.what());
            if (e.retryable()) return {503, {{"Content-Type", "text/plain"}, {"Retry-After", "60"}}, "temporarily unavailable\n"};
            return {500, {{"Content-Type", "text/plain"}}, "internal error\n"};
        } catch (const certconn::sql::Error& e) {
            // The state store (the fleet's PostgreSQL) failed: nothing was issued that the
            // ledger lost (a claim without a certificate is taken over at the device's resend).
            if (e.transient()) {
                host_.log(CC_EV_StoreUnavailable, CC_LEVEL_WARNING,
                          "profile '" + p.name + "': the SCEP state store is unavailable (" + e.what() + "); " + operation +
                              " answered 503, the device retries");
                return {503, {{"Content-Type", "text/plain"}, {"Retry-After", "30"}}, "temporarily unavailable\n"};
            }
            host_.log(CC_EV_ScepIssuedFailure, CC_LEVEL_ERROR,
                      "profile '" + p.name + "': the SCEP state store refused " + operation + ": " + e.what());
            return {500, {{"Content-Type", "text/plain"}}, "internal error\n"};
        }
    }

    HttpResponse pki_operation(Profile& p, const std::string& der, const HttpRequest& r) {
        scep::PkiRequest req;
        try {
            req = scep::parse_request(der, p.ra_key.get(), p.ra_cert.get(), p.allow_single_des);
        } catch (const scep::MalformedMessage& e) {
            host_.log(
                CC_EV_ScepRequestReceived, CC_LEVEL_WARNING,
                "profile '" + p.name + "': refused a malformed message from " + std::string(r.remote_address) + ": " + e.what());
            return {400, {{"Content-Type", "text/plain"}}, "malformed SCEP message\n"};
        }
        const std::string& tx = req.transaction_id;
        host_.log(CC_EV_ScepRequestReceived, CC_LEVEL_INFO,
                  "profile '" + p.name + "': message type " + std::to_string(static_cast<int>(req.type)) + " via " +
                      std::string(r.method) + " from " + std::string(r.remote_address) + " (" + req.cipher_name + ")",
                  tx);
        auto fail = [&](scep::FailInfo info, std::uint32_t event, const std::string& why) -> HttpResponse {
            host_.log(event, CC_LEVEL_WARNING, "profile '" + p.name + "': " + why, tx);
            host_.log(CC_EV_ScepRequestIssuedFailure, CC_LEVEL_ERROR, "SCEP request refused: " + why, tx);
            return reply(scep::failure_reply(req, info, p.ra_cert.get(), p.ra_key.get()));
        };
        // Every message is signed with a digest at least as strong as the profile's min_digest
        // (MD5 never); the refusal itself is signed with SHA-256.
        if (scep::digest_strength(req.digest) < p.min_digest_strength) {
            const std::string used = req.digest ? EVP_MD_get0_name(req.digest) : "an unknown digest";
            req.digest = EVP_sha256();
            return fail(scep::FailInfo::BadAlg, CC_EV_ScepAlgorithmRefused,
                        "the message is signed with " + used + ", weaker than min_digest = " + p.min_digest);
        }
        if (req.type == scep::MessageType::CertPoll) return poll(p, req, fail);
        if (req.type == scep::MessageType::GetCert || req.type == scep::MessageType::GetCRL) return lookup(p, req, fail);
        if (req.type != scep::MessageType::PKCSReq && req.type != scep::MessageType::RenewalReq)
            return fail(scep::FailInfo::BadRequest, CC_EV_ScepVerifyFailure,
                        "message type " + std::to_string(static_cast<int>(req.type)) + " is not a SCEP request type");
        if (req.refused_cipher) return fail(scep::FailInfo::BadAlg, CC_EV_ScepAlgorithmRefused, req.decrypt_error);
        // Whatever went wrong inside the envelope — it does not decrypt, is not EnvelopedData, or
        // does not hold a PKCS#10 — the device gets the same badMessageCheck CertRep; only the
        // log says which (no padding or decryption oracle).
        if (!req.inner) return fail(scep::FailInfo::BadMessageCheck, CC_EV_ScepVerifyFailure, req.decrypt_error);
        const auto* cp = reinterpret_cast<const unsigned char*>(req.inner->data());
        crypto::Request csr(d2i_X509_REQ(nullptr, &cp, static_cast<long>(req.inner->size())));
        if (!csr) {
            ERR_clear_error();
            return fail(scep::FailInfo::BadMessageCheck, CC_EV_ScepVerifyFailure, "the envelope does not hold a PKCS#10 request");
        }
        if (X509_REQ_verify(csr.get(), X509_REQ_get0_pubkey(csr.get())) != 1) {
            ERR_clear_error();
            return fail(scep::FailInfo::BadMessageCheck, CC_EV_ScepVerifyFailure, "the CSR's signature does not verify");
        }
        {
            int md_nid = NID_undef;
            OBJ_find_sigid_algs(X509_REQ_get_signature_nid(csr.get()), &md_nid, nullptr);
            const EVP_MD* csr_md = md_nid == NID_undef ? nullptr : EVP_get_digestbynid(md_nid);
            // Ed25519/Ed448 CSRs have no separate digest (NID_undef): their strength is the algorithm's.
            const bool pure = md_nid == NID_undef && (X509_REQ_get_signature_nid(csr.get()) == NID_ED25519 ||
                                                      X509_REQ_get_signature_nid(csr.get()) == NID_ED448);
            if (!pure && scep::digest_strength(csr_md) < p.min_digest_strength)
                return fail(scep::FailInfo::BadAlg, CC_EV_ScepAlgorithmRefused,
                            std::string("the CSR is signed with ") + (csr_md ? EVP_MD_get0_name(csr_md) : "an unknown digest") +
                                ", weaker than min_digest = " + p.min_digest);
        }
        crypto::Bio bio(BIO_new(BIO_s_mem()));
        PEM_write_bio_X509_REQ(bio.get(), csr.get());
        char* data = nullptr;
        const long csr_len = BIO_get_mem_data(bio.get(), &data);
        const std::string csr_text(data, static_cast<std::size_t>(csr_len));

        // A RenewalReq, or a PKCSReq without a challenge signed by a certificate (not self-signed),
        // is a renewal: the signing certificate is the credential. A PKCSReq carrying a challenge
        // is an enrollment whoever signed it: the tenant validates the challenge.
        const auto challenge = scep::challenge_password(csr.get());
        const bool self_signed = X509_check_issued(req.signer.get(), req.signer.get()) == X509_V_OK;
        if (req.type == scep::MessageType::RenewalReq || (!challenge && !self_signed))
            return renew(p, req, csr.get(), csr_text, fail);

        // The tenant decides whether this device may enroll.
        const std::string verdict = host_.tenant_call(
            p.tenant, "scep.validate",
            json::serialize(json::object{{"profile", p.name},
                                         {"transaction_id", tx},
                                         {"csr_pem", csr_text},
                                         {"challenge", challenge ? json::value(*challenge) : json::value(nullptr)}}));
        std::error_code verdict_error;
        const json::value parsed_verdict = json::parse(verdict, verdict_error);
        if (verdict_error || !parsed_verdict.is_object())
            return fail(scep::FailInfo::BadRequest, CC_EV_ScepVerifyFailure,
                        "the tenant's answer to scep.validate is not a JSON object; refused");
        const auto& v = parsed_verdict.as_object();
        const std::string code = v.contains("code") && v.at("code").is_string() ? std::string(v.at("code").as_string()) : "";
        if (code != "Success") {
            const auto* description = v.if_contains("errorDescription");
            return fail(refusal_fail_info(code), CC_EV_ScepVerifyFailure,
                        "the tenant refused the request: " + (code.empty() ? std::string("(no code)") : code) +
                            (description && description->is_string() ? " (" + std::string(description->as_string()) + ")" : ""));
        }
        host_.log(CC_EV_ScepVerifySuccess, CC_LEVEL_INFO, "challenge validated by the tenant", tx);
        if (p.require_approval) {
            const auto row = pending_.add(tx, p.name, csr_text);
            if (row.status == "denied")
                return fail(scep::FailInfo::BadRequest, CC_EV_ScepIssuedFailure, "an administrator denied transaction " + tx);
            if (row.status == "pending") {
                host_.log(CC_EV_ScepRequestReceived, CC_LEVEL_INFO,
                          "profile '" + p.name + "': waiting for approval (certconnector scep approve " + tx + ")", tx);
                return reply(scep::pending_reply(req, p.ra_cert.get(), p.ra_key.get()));
            }
        }
        return issue(p, req, csr.get(), csr_text, tx, "enroll", Lineage{}, fail);
    }

    /// CertPoll (GetCertInitial): the state of a transaction that was left pending.
    template <class Fail>
    HttpResponse poll(Profile& p, const scep::PkiRequest& req, Fail& fail) {
        if (!req.inner) return fail(scep::FailInfo::BadMessageCheck, CC_EV_ScepVerifyFailure, req.decrypt_error);
        const auto row = pending_.find(req.transaction_id);
        if (!row || row->profile != p.name)
            return fail(scep::FailInfo::BadCertId, CC_EV_ScepVerifyFailure, "no pending transaction " + req.transaction_id);
        if (row->status == "pending") return reply(scep::pending_reply(req, p.ra_cert.get(), p.ra_key.get()));
        if (row->status == "denied")
            return fail(scep::FailInfo::BadRequest, CC_EV_ScepIssuedFailure,
                        "an administrator denied transaction " + req.transaction_id);
        crypto::Request csr = crypto::load_csr(row->csr_pem);
        return issue(p, req, csr.get(), row->csr_pem, req.transaction_id, "enroll", Lineage{}, fail);
    }

    /// GetCert and GetCRL: a certificate this profile's CA issued, or its CRL, named by an
    /// IssuerAndSerialNumber. Both are public information; the answer is still encrypted to
    /// the requester, as every CertRep SUCCESS is.
    template <class Fail>
    HttpResponse lookup(Profile& p, const scep::PkiRequest& req, Fail& fail) {
        const bool crl = req.type == scep::MessageType::GetCRL;
        const char* what = crl ? "GetCRL" : "GetCert";
        if (!req.inner) return fail(scep::FailInfo::BadMessageCheck, CC_EV_ScepVerifyFailure, req.decrypt_error);
        const auto ias = scep::issuer_and_serial(*req.inner);
        if (!ias)
            return fail(scep::FailInfo::BadRequest, CC_EV_ScepVerifyFailure,
                        std::string(what) + ": the envelope holds no IssuerAndSerialNumber");
        if (X509_NAME_cmp(ias->issuer.get(), X509_get_subject_name(p.chain.front().get())) != 0)
            return fail(scep::FailInfo::BadCertId, CC_EV_ScepVerifyFailure,
                        std::string(what) + ": issuer '" + crypto::name_string(ias->issuer.get()) + "' is not this profile's CA");
        std::string answer;
        try {
            answer =
                host_.ca_query(p.ca, crl ? json::serialize(json::object{{"op", "crl"}})
                                         : json::serialize(json::object{{"op", "certificate"}, {"serial", ias->serial_hex}}));
        } catch (const Error& e) {
            if (e.retryable()) throw;  // 503 with Retry-After
            return fail(e.code() == CC_ERR_NOT_FOUND ? scep::FailInfo::BadCertId : scep::FailInfo::BadRequest,
                        CC_EV_ScepVerifyFailure, std::string(what) + ": " + e.what());
        }
        const auto a = json::parse(answer).as_object();
        std::string degenerate;
        if (crl) {
            degenerate = scep::crl_only(crypto::base64_decode(a.at("crl_der").as_string()));
        } else {
            crypto::Cert cert = crypto::load_certificate(std::string(a.at("certificate_pem").as_string()));
            degenerate = scep::certs_only({cert.get()});
        }
        host_.log(CC_EV_ScepRequestReceived, CC_LEVEL_INFO,
                  "profile '" + p.name + "': " + what + " answered" + (crl ? "" : " with certificate " + ias->serial_hex),
                  req.transaction_id);
        return reply(scep::success_reply_content(req, degenerate, p.ra_cert.get(), p.ra_key.get()));
    }

    void register_approval_commands(certconn::sdk::Host& host) {
        using certconn::sdk::AdminArguments;
        using certconn::sdk::AdminReply;
        host.admin_command(
            "scep pending", "list SCEP requests waiting for approval", "scep:approve", "[]", [this](std::string_view) {
                const json::array rows = pending_.list("pending");
                std::string out = rows.empty() ? "no pending SCEP requests\n" : "";
                for (const auto& r : rows)
                    out += std::string(r.at("transaction_id").as_string()) + "  profile " +
                           std::string(r.at("profile").as_string()) + "  subject " + std::string(r.at("subject").as_string()) +
                           "  since " + std::string(r.at("received_at").as_string()) + "\n";
                return AdminReply::ok(out).json();
            });
        for (const bool approve : {true, false}) {
            const std::string verb = approve ? "approve" : "deny";
            host.admin_command(
                "scep " + verb,
                approve ? "scep approve TXID: issue a SCEP request that waits for approval"
                        : "scep deny TXID: refuse a SCEP request that waits for approval",
                "scep:approve",
                R"j([{"name":"transaction","kind":"string","positional":true,"required":true,"help":"the transaction id (see scep pending)"}])j",
                [this, approve, verb](std::string_view text) {
                    const std::string id = AdminArguments(text).required("transaction");
                    const auto [ok, message] = decide_transaction(id, approve);
                    return ok ? AdminReply::ok(message).json()
                              : AdminReply::failed("certconnector scep " + verb + ": " + message).json();
                });
        }
    }

    /// Approves or denies a pending transaction; (false, why) when it is unknown or decided.
    std::pair<bool, std::string> decide_transaction(const std::string& id, bool approve) {
        if (!pending_.decide(id, approve)) {
            const auto row = pending_.find(id);
            return {false,
                    row ? "transaction " + id + " was already " + row->status + "\n" : "no pending transaction " + id + "\n"};
        }
        host_.log(CC_EV_ScepRequestReceived, CC_LEVEL_INFO,
                  std::string("transaction ") + (approve ? "approved" : "denied") + " by an administrator", id);
        return {true,
                "transaction " + id + (approve ? " approved" : " denied") + "; the client gets its answer at its next poll\n"};
    }

    HttpResponse decide(const HttpRequest& r) {
        std::error_code ec;
        const json::value doc = json::parse(r.body, ec);
        const json::object* o = !ec && doc.is_object() ? &doc.as_object() : nullptr;
        const auto* tx = o ? o->if_contains("transaction_id") : nullptr;
        const auto* decision = o ? o->if_contains("decision") : nullptr;
        if (!tx || !tx->is_string() || !decision || !decision->is_string() ||
            (decision->as_string() != "approve" && decision->as_string() != "deny"))
            return {400,
                    {{"Content-Type", "text/plain"}},
                    "expected {\"transaction_id\": ..., \"decision\": \"approve\" | \"deny\"}\n"};
        const std::string id(tx->as_string());
        const bool approve = decision->as_string() == "approve";
        if (const auto [ok, message] = decide_transaction(id, approve); !ok)
            return {pending_.find(id) ? 409 : 404, {{"Content-Type", "text/plain"}}, message};
        return {200,
                {{"Content-Type", "application/json"}},
                json::serialize(json::object{{"transaction_id", id}, {"status", approve ? "approved" : "denied"}})};
    }

    /// The CA issues once per request id: a client resending the same request gets the same
    /// certificate; a new CSR or a renewal of another certificate is a new request.
    static std::string ca_request_id(const Profile& p, X509_REQ* csr, const std::string& kind, const std::string& tx) {
        unsigned char* der = nullptr;
        const int der_len = i2d_X509_REQ(csr, &der);
        unsigned char md[32];
        unsigned int md_len = 0;
        EVP_Digest(der, static_cast<std::size_t>(der_len), md, &md_len, EVP_sha256(), nullptr);
        OPENSSL_free(der);
        return "scep:" + p.name + ":" + kind + ":" + tx + ":" +
               crypto::hex_encode(std::string_view(reinterpret_cast<char*>(md), 16));
    }

    /// Where an issued certificate sits in its enrollment's renewal chain (an enrollment: empty, 0).
    struct Lineage {
        std::string original_serial;
        std::int64_t renewal_count = 0;
    };

    template <class Fail>
    HttpResponse issue(Profile& p, const scep::PkiRequest& req, X509_REQ* csr, const std::string& csr_text, const std::string& tx,
                       const std::string& kind, const Lineage& lineage, Fail& fail) {
        const std::string request_id = ca_request_id(p, csr, kind, tx);
        // A renewal may reuse its enrollment's transactionID (scepclient derives it from the key): the
        // ledger keys transactions by message kind too.
        const std::string ledger_tx = kind + ":" + tx;
        // The transaction ledger: one claim per transaction across the fleet.
        const std::string key = p.name + "\n" + tx;
        struct InFlight {  // this instance is working on `key` (a claim of ours not in here is orphaned)
            ScepFeature& f;
            std::string key;
            bool held = false;
            bool take(const std::string& k) {
                std::lock_guard lock(f.in_flight_mutex_);
                key = k;
                held = f.in_flight_.insert(k).second;
                return held;
            }
            void drop() {
                if (!held) return;
                std::lock_guard lock(f.in_flight_mutex_);
                f.in_flight_.erase(key);
                held = false;
            }
            ~InFlight() { drop(); }
        } in_flight{*this, {}};
        std::int64_t attempt = 0;
        const auto deadline = std::chrono::steady_clock::now() + kLedgerWait;
        bool waited = false;
        while (attempt == 0) {
            scep::Claim claim = ledger_.claim(p.name, ledger_tx, request_id, instance_id_);
            switch (claim.outcome) {
                case scep::Claim::Outcome::claimed:
                    if (in_flight.take(key)) {
                        attempt = claim.entry.attempt;
                        continue;
                    }
                    // Our own claim while this instance works on it elsewhere: cannot be (claims are
                    // released before the in-flight mark); treat as in progress.
                    break;
                case scep::Claim::Outcome::other_request:
                    return fail(scep::FailInfo::BadRequest, CC_EV_ScepIssuedFailure,
                                "transaction " + tx + " was already used for another request (a different CSR); refused");
                case scep::Claim::Outcome::issued: {
                    crypto::Cert cert = crypto::load_certificate(claim.entry.certificate_pem);
                    if (EVP_PKEY_eq(X509_get0_pubkey(cert.get()), X509_REQ_get0_pubkey(csr)) != 1)
                        return fail(scep::FailInfo::BadRequest, CC_EV_ScepIssuedFailure,
                                    "transaction " + tx + " was already used for another key");
                    host_.log(CC_EV_ScepIssuedSuccess, CC_LEVEL_INFO,
                              "profile '" + p.name + "': transaction " + tx + " resent; answered with certificate " +
                                  crypto::serial_hex(cert.get()) + " issued " +
                                  (claim.entry.owner == instance_id_ ? "here" : "by instance " + claim.entry.owner) + " before",
                              tx);
                    return reply(scep::success_reply(req, {cert.get()}, p.ra_cert.get(), p.ra_key.get()));
                }
                case scep::Claim::Outcome::in_progress: {
                    // Another claim is issuing it. Taken over when its instance is gone (stale), or
                    // when it is this instance's own and nothing here works on it (a request whose
                    // store write had an unknown outcome).
                    bool orphan = claim.entry.age_seconds >= kClaimStaleSeconds;
                    if (!orphan && claim.entry.owner == instance_id_) {
                        std::lock_guard lock(in_flight_mutex_);
                        orphan = !in_flight_.contains(key);
                    }
                    if (orphan && in_flight.take(key)) {
                        attempt = ledger_.take_over(p.name, ledger_tx, claim.entry.attempt, instance_id_);
                        if (attempt != 0) {
                            host_.log(CC_EV_ScepRequestReceived, CC_LEVEL_INFO,
                                      "profile '" + p.name + "': took over transaction " + tx + " from " +
                                          (claim.entry.owner == instance_id_ ? "an earlier request here"
                                                                             : "instance " + claim.entry.owner) +
                                          " (claimed " + std::to_string(claim.entry.age_seconds) +
                                          " s ago without a certificate)",
                                      tx);
                            continue;
                        }
                        in_flight.drop();
                    }
                    break;
                }
            }
            if (std::chrono::steady_clock::now() >= deadline) {
                host_.log(CC_EV_ScepIssuedFailure, CC_LEVEL_WARNING,
                          "profile '" + p.name + "': transaction " + tx +
                              " is being issued by another request; answered 503, the device resends and gets its certificate",
                          tx);
                return {503, {{"Content-Type", "text/plain"}, {"Retry-After", "10"}}, "transaction in progress, retry later\n"};
            }
            if (!waited)
                host_.log(CC_EV_ScepRequestReceived, CC_LEVEL_INFO,
                          "profile '" + p.name + "': transaction " + tx + " is being issued by " +
                              (claim.entry.owner == instance_id_ ? "another request here" : "instance " + claim.entry.owner) +
                              "; waiting for its certificate",
                          tx);
            waited = true;
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
        }
        auto release = [&] {
            try {
                ledger_.release(p.name, ledger_tx, attempt, instance_id_);
            } catch (const certconn::sql::Error& e) {
                // The claim stays; the next request for the transaction takes it over.
                host_.log(CC_EV_StoreUnavailable, CC_LEVEL_WARNING,
                          "profile '" + p.name + "': cannot release the ledger claim of transaction " + tx + ": " + e.what(), tx);
            }
        };
        std::string issued;
        try {
            issued = host_.ca_issue(p.ca, json::serialize(json::object{{"request_id", request_id},
                                                                       {"csr_pem", csr_text},
                                                                       {"profile", p.certificate_profile},
                                                                       {"requester", "scep"}}));
        } catch (const Error& e) {
            release();
            if (e.code() == CC_ERR_PENDING && kind == "enroll") {
                // The CA holds it for approval (AD CS "CA certificate manager approval"): PENDING
                // to the device, whose CertPoll asks the CA again with the same request id.
                pending_.hold_at_ca(tx, p.name, csr_text);
                host_.log(CC_EV_ScepRequestReceived, CC_LEVEL_INFO,
                          "profile '" + p.name + "': the CA holds the request for approval (" + e.what() + "); the device polls",
                          tx);
                return reply(scep::pending_reply(req, p.ra_cert.get(), p.ra_key.get()));
            }
            if (e.retryable()) throw;
            std::string why = std::string("the CA refused: ") + e.what();
            enqueue(p, tx, "scep.notify_failure",
                    json::object{{"transaction_id", tx},
                                 {"profile", p.name},
                                 {"certificate_request", csr_text},
                                 {"hResult", -2147467259 /* E_FAIL */},
                                 {"errorDescription", why.substr(0, 255)}});
            return fail(scep::FailInfo::BadRequest, CC_EV_ScepIssuedFailure, why);
        }
        const auto a = json::parse(issued).as_object();
        crypto::Cert cert = crypto::load_certificate(std::string(a.at("certificate_pem").as_string()));
        if (EVP_PKEY_eq(X509_get0_pubkey(cert.get()), X509_REQ_get0_pubkey(csr)) != 1) {
            release();
            return fail(scep::FailInfo::BadRequest, CC_EV_ScepIssuedFailure,
                        "transaction " + tx + " was already used for another key");
        }
        const std::string serial = crypto::serial_hex(cert.get());
        host_.log(CC_EV_ScepIssuedSuccess, CC_LEVEL_INFO, "certificate " + serial + " issued by CA '" + p.ca + "'", tx);
        // The renewal ledger: what this certificate may later renew, and its place in the chain.
        // Not recorded means it cannot renew (it can still enroll with a challenge): fail closed.
        try {
            issued_.record({p.ca, serial, p.name, lineage.original_serial.empty() ? serial : lineage.original_serial,
                            lineage.renewal_count, tx, request_id, crypto::time_iso8601(X509_get0_notAfter(cert.get()))});
        } catch (const std::exception& e) {
            host_.log(CC_EV_ScepIssuedFailure, CC_LEVEL_ERROR,
                      "certificate " + serial + " issued but not recorded in the renewal ledger (it cannot renew): " + e.what(),
                      tx);
        }
        notify(p, tx, csr_text, cert.get());
        // Last: a claim left without its certificate is taken over and asks the CA again (same
        // request id, same certificate; the outbox keeps one notification per transaction).
        try {
            ledger_.complete(p.name, ledger_tx, request_id, crypto::certificate_pem(cert.get()), serial);
        } catch (const certconn::sql::Error& e) {
            host_.log(CC_EV_StoreUnavailable, CC_LEVEL_WARNING,
                      "profile '" + p.name + "': certificate " + serial +
                          " issued, but the transaction ledger cannot record it (" + e.what() +
                          "); a resent request gets it from the CA again",
                      tx);
        }
        return reply(scep::success_reply(req, {cert.get()}, p.ra_cert.get(), p.ra_key.get()));
    }

    /// Whether `cert` verifies, now, against this profile's CA chain (and is not self-signed).
    /// `why` says what is missing when not.
    bool chains_to_profile_ca(const Profile& p, X509* cert, std::string& why) const {
        if (X509_check_issued(cert, cert) == X509_V_OK) {
            why = "the request is signed by a self-signed certificate";
            return false;
        }
        X509_STORE* store = X509_STORE_new();
        for (const auto& c : p.chain)
            X509_STORE_add_cert(store, c.get());
        X509_STORE_CTX* ctx = X509_STORE_CTX_new();
        X509_STORE_CTX_init(ctx, store, cert, nullptr);
        // The chain's root is in the store as a trust anchor; intermediates are trusted too.
        X509_STORE_CTX_set_flags(ctx, X509_V_FLAG_PARTIAL_CHAIN);
        const int ok = X509_verify_cert(ctx);
        const int err = X509_STORE_CTX_get_error(ctx);
        X509_STORE_CTX_free(ctx);
        X509_STORE_free(store);
        if (ok != 1) {
            why = std::string("the signing certificate does not verify against this profile's CA: ") +
                  X509_verify_cert_error_string(err);
            ERR_clear_error();
            return false;
        }
        return true;
    }

    /// A SAN as text for messages ("DNS:host", "email:a@b", "othername: UPN::u@d").
    static std::string san_text(const GENERAL_NAME* gn) {
        crypto::Bio bio(BIO_new(BIO_s_mem()));
        GENERAL_NAME_print(bio.get(), const_cast<GENERAL_NAME*>(gn));
        char* data = nullptr;
        const long n = BIO_get_mem_data(bio.get(), &data);
        return std::string(data, static_cast<std::size_t>(n));
    }

    /// The subjectAltNames of a certificate or request as a set: DER of each GeneralName (what
    /// is compared, exactly) -> its text (what a message shows).
    static std::map<std::string, std::string> san_set(GENERAL_NAMES* names) {
        std::map<std::string, std::string> out;
        for (int i = 0; names && i < sk_GENERAL_NAME_num(names); ++i) {
            GENERAL_NAME* gn = sk_GENERAL_NAME_value(names, i);
            unsigned char* der = nullptr;
            const int len = i2d_GENERAL_NAME(gn, &der);
            if (len <= 0) continue;
            out.emplace(std::string(reinterpret_cast<char*>(der), static_cast<std::size_t>(len)), san_text(gn));
            OPENSSL_free(der);
        }
        GENERAL_NAMES_free(names);
        return out;
    }
    static std::map<std::string, std::string> sans_of(X509* cert) {
        return san_set(static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
    }
    static std::map<std::string, std::string> sans_of(X509_REQ* csr) {
        STACK_OF(X509_EXTENSION)* exts = X509_REQ_get_extensions(csr);
        auto* names = exts ? static_cast<GENERAL_NAMES*>(X509V3_get_d2i(exts, NID_subject_alt_name, nullptr, nullptr)) : nullptr;
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
        return san_set(names);
    }
    static std::string joined(const std::vector<std::string>& items) {
        std::string out;
        for (const auto& i : items)
            out += (out.empty() ? "" : ", ") + i;
        return out;
    }

    /// A renewal: authorised by the certificate that signed the request instead of a challenge.
    /// Each rule refuses with its own event (41xx) and failInfo:
    ///   badMessageCheck — the signer does not verify against this profile's CA (or expired);
    ///   badCertId       — the signer is revoked, the CA cannot say, or this profile did not issue it;
    ///   badRequest      — the request is not allowed: another identity, outside the window,
    ///                     max_renewals reached, or the tenant vetoed it.
    template <class Fail>
    HttpResponse renew(Profile& p, scep::PkiRequest& req, X509_REQ* csr, const std::string& csr_text, Fail& fail) {
        const std::string& tx = req.transaction_id;
        X509* old = req.signer.get();
        const std::string serial = crypto::serial_hex(old);
        const std::string what = "renewal by certificate " + serial + ": ";
        std::string why;
        if (!chains_to_profile_ca(p, old, why))
            return fail(scep::FailInfo::BadMessageCheck, CC_EV_ScepRenewalSignerNotTrusted, what + why);

        // 1. Not revoked, as the CA says now; no answer is no renewal.
        std::string status, reason;
        try {
            const json::value answer =
                json::parse(host_.ca_query(p.ca, json::serialize(json::object{{"op", "certificate"}, {"serial", serial}})));
            const auto& a = answer.as_object();
            status = std::string(a.at("status").as_string());
            if (const auto* r = a.if_contains("revocation_reason"); r && r->is_string()) reason = std::string(r->as_string());
            if (const auto* pem = a.if_contains("certificate_pem");
                pem && pem->is_string() && X509_cmp(crypto::load_certificate(std::string(pem->as_string())).get(), old) != 0)
                status = "another certificate under that serial";
        } catch (const std::exception& e) {
            return fail(scep::FailInfo::BadCertId, CC_EV_ScepRenewalStatusUnknown,
                        what + "CA '" + p.ca + "' cannot tell whether it is revoked (" + e.what() + "); refused");
        }
        if (status == "revoked")
            return fail(scep::FailInfo::BadCertId, CC_EV_ScepRenewalSignerRevoked,
                        what + "it is revoked" + (reason.empty() ? "" : " (" + reason + ")"));
        if (status != "valid")
            return fail(scep::FailInfo::BadCertId, CC_EV_ScepRenewalStatusUnknown,
                        what + "CA '" + p.ca + "' reports status '" + status + "', not 'valid'; refused");

        // 2. Issued by this SCEP server for this profile.
        std::optional<scep::IssuedCertificate> record;
        try {
            record = issued_.find(p.ca, serial);
        } catch (const certconn::sql::Error& e) {
            if (e.transient()) throw;  // 503: the device renews again later
            return fail(scep::FailInfo::BadCertId, CC_EV_ScepRenewalWrongProfile,
                        what + "the renewal ledger cannot be read: " + e.what());
        } catch (const std::exception& e) {
            return fail(scep::FailInfo::BadCertId, CC_EV_ScepRenewalWrongProfile,
                        what + "the renewal ledger cannot be read: " + e.what());
        }
        if (!record)
            return fail(scep::FailInfo::BadCertId, CC_EV_ScepRenewalWrongProfile,
                        what + "it was not issued by SCEP profile '" + p.name +
                            "' (unknown to its renewal ledger); enroll with a challenge");
        if (record->profile != p.name)
            return fail(scep::FailInfo::BadCertId, CC_EV_ScepRenewalWrongProfile,
                        what + "it was issued for SCEP profile '" + record->profile + "', not '" + p.name + "'");

        // 3. Within the renewal window.
        if (p.renewal_window_days > 0) {
            int days = 0, secs = 0;
            ASN1_TIME_diff(&days, &secs, nullptr, X509_get0_notAfter(old));
            if (days > p.renewal_window_days)
                return fail(scep::FailInfo::BadRequest, CC_EV_ScepRenewalOutsideWindow,
                            what + "it expires in " + std::to_string(days) + " days; renewal opens " +
                                std::to_string(p.renewal_window_days) + " days before expiry (renewal_window_days)");
        }

        // 4. The same identity: subject, and SANs (a subset where the profile allows it).
        if (X509_NAME_cmp(X509_REQ_get_subject_name(csr), X509_get_subject_name(old)) != 0)
            return fail(scep::FailInfo::BadRequest, CC_EV_ScepRenewalIdentityMismatch,
                        what + "the request's subject '" + crypto::name_string(X509_REQ_get_subject_name(csr)) +
                            "' is not the certificate's '" + crypto::name_string(X509_get_subject_name(old)) + "'");
        const auto old_sans = sans_of(old);
        const auto new_sans = sans_of(csr);
        std::vector<std::string> added, dropped;
        for (const auto& [der, text] : new_sans)
            if (!old_sans.contains(der)) added.push_back(text);
        for (const auto& [der, text] : old_sans)
            if (!new_sans.contains(der)) dropped.push_back(text);
        if (!added.empty())
            return fail(scep::FailInfo::BadRequest, CC_EV_ScepRenewalIdentityMismatch,
                        what + "the request adds SANs the certificate does not have: " + joined(added));
        if (!dropped.empty() && !p.renewal_allow_san_subset)
            return fail(
                scep::FailInfo::BadRequest, CC_EV_ScepRenewalIdentityMismatch,
                what + "the request drops SANs of the certificate (renewal_allow_san_subset = false): " + joined(dropped));

        // 5. At most max_renewals per original enrollment. A resent renewal the CA already
        // answered is the same renewal, not another one.
        const std::string kind = "renew:" + serial;
        const std::string request_id = ca_request_id(p, csr, kind, tx);
        const Lineage lineage{record->original_serial, record->renewal_count + 1};
        auto over_limit = [&]() -> std::optional<std::int64_t> {
            if (issued_.find_by_request(p.ca, request_id)) return std::nullopt;
            const std::int64_t done = issued_.renewals_of(p.ca, record->original_serial);
            if (done >= p.max_renewals) return done;
            return std::nullopt;
        };
        auto limit_refusal = [&](std::int64_t done) {
            return fail(scep::FailInfo::BadRequest, CC_EV_ScepRenewalLimitReached,
                        what + "enrollment " + record->original_serial + " was renewed " + std::to_string(done) +
                            " times; max_renewals = " + std::to_string(p.max_renewals));
        };
        if (const auto done = over_limit()) return limit_refusal(*done);

        // 6. The tenant may veto every renewal.
        json::array sans_json;  // "type:value", as challenges bind them (dns:, upn:, email:, uri:)
        {
            STACK_OF(X509_EXTENSION)* exts = X509_REQ_get_extensions(csr);
            for (const auto& san : crypto::read_sans(exts))
                sans_json.push_back(json::string(san.type + ":" + san.value));
            sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
        }
        std::string verdict;
        try {
            verdict =
                host_.tenant_call(p.tenant, "scep.validate",
                                  json::serialize(json::object{{"renewal", true},
                                                               {"profile", p.name},
                                                               {"transaction_id", tx},
                                                               {"csr_pem", csr_text},
                                                               {"challenge", nullptr},
                                                               {"old_certificate_pem", crypto::certificate_pem(old)},
                                                               {"old_serial", serial},
                                                               {"old_not_after", crypto::time_iso8601(X509_get0_notAfter(old))},
                                                               {"original_serial", record->original_serial},
                                                               {"renewal_count", lineage.renewal_count},
                                                               {"subject", crypto::name_string(X509_REQ_get_subject_name(csr))},
                                                               {"sans", std::move(sans_json)}}));
        } catch (const Error& e) {
            if (e.retryable()) throw;  // 503 with Retry-After: the device asks again later
            return fail(scep::FailInfo::BadRequest, CC_EV_ScepRenewalTenantVeto,
                        what + "the tenant could not decide (" + e.what() + "); refused");
        }
        std::error_code ec;
        const json::value v = json::parse(verdict, ec);
        const auto* code = !ec && v.is_object() ? v.as_object().if_contains("code") : nullptr;
        if (!code || !code->is_string() || code->as_string() != "Success") {
            const auto* d = !ec && v.is_object() ? v.as_object().if_contains("errorDescription") : nullptr;
            return fail(scep::FailInfo::BadRequest, CC_EV_ScepRenewalTenantVeto,
                        what + "the tenant refused it: " +
                            (code && code->is_string() ? std::string(code->as_string()) : "no answer code") +
                            (d && d->is_string() ? " (" + std::string(d->as_string()) + ")" : ""));
        }

        // Counted and issued under one lock, so concurrent renewals cannot both take the last one.
        std::lock_guard lock(renewal_mutex_);
        if (const auto done = over_limit()) return limit_refusal(*done);
        host_.log(CC_EV_ScepRenewalAuthorized, CC_LEVEL_INFO,
                  "profile '" + p.name + "': renewal authorised by certificate " + serial + " (renewal " +
                      std::to_string(lineage.renewal_count) + " of enrollment " + record->original_serial + ", max_renewals " +
                      std::to_string(p.max_renewals) + ")",
                  tx);
        return issue(p, req, csr, csr_text, tx, kind, lineage, fail);
    }

    /// Hands the tenant's notification to the host's outbox, which stores it durably and
    /// delivers it (events 4008 delivered, 4009 retried; 4000 once a success notification is in).
    void enqueue(const Profile& p, const std::string& tx, const std::string& operation, const json::object& note) {
        const bool success = operation == "scep.notify_success";
        certconn::sdk::Host::Notification n;
        n.tenant = p.tenant;
        n.operation = operation;
        n.key = tx + (success ? "/success" : "/failure");
        n.request_json = json::serialize(note);
        n.request_id = tx;
        n.event_delivered = CC_EV_ScepNotifySuccess;
        n.event_retry = CC_EV_ScepNotifyAttemptFailed;
        n.event_refused = success ? CC_EV_ScepRequestUploadFailure : CC_EV_ScepNotifyAttemptFailed;
        if (success) {
            n.event_done = CC_EV_ScepRequestSuccess;
            n.done_message = "SCEP certificate " + std::string(note.at("certificate_serial_number").as_string()) +
                             " issued for " + std::string(note.at("certificate_subject").as_string()) + " (profile '" + p.name +
                             "') and the tenant notified";
        }
        try {
            host_.notify_tenant(n);
        } catch (const std::exception& e) {
            host_.log(CC_EV_ScepNotifySaveToDiskFailed, CC_LEVEL_ERROR,
                      std::string("cannot persist the notification: ") + e.what(), tx);
            if (success)
                host_.log(CC_EV_ScepRequestUploadFailure, CC_LEVEL_ERROR, "certificate issued but the tenant cannot be notified",
                          tx);
        }
    }

    void notify(const Profile& p, const std::string& tx, const std::string& csr, X509* cert) {
        enqueue(p, tx, "scep.notify_success",
                json::object{{"transaction_id", tx},
                             {"profile", p.name},
                             {"certificate_request", csr},
                             {"certificate_subject", crypto::name_string(X509_get_subject_name(cert))},
                             {"certificate_thumbprint", crypto::fingerprint_hex(cert, EVP_sha1())},
                             {"certificate_serial_number", crypto::serial_hex(cert)},
                             {"certificate_expiration_date_utc", crypto::time_iso8601(X509_get0_notAfter(cert))},
                             {"certificate_authority", p.ca},
                             {"certificate_issuer", crypto::name_string(X509_get_issuer_name(cert))}});
    }

    /// The failInfo a device gets for a tenant's refusal code (Intune's codes; others: badRequest).
    static scep::FailInfo refusal_fail_info(const std::string& code) {
        if (code == "ChallengeExpired") return scep::FailInfo::BadTime;
        if (code == "SignatureValidationFailed") return scep::FailInfo::BadMessageCheck;
        return scep::FailInfo::BadRequest;
    }

    /// Versions before the host outbox kept undelivered notifications in notifications.db:
    /// each is handed to the host, in order, and its row deleted once the host has it. The
    /// first one the host cannot take stops the hand-over; the rest wait for the next start.
    void hand_over_old_notifications() {
        const auto file = host_.state_dir() / "notifications.db";
        if (!std::filesystem::exists(file)) return;
        int moved = 0;
        try {
            certconn::sqlite::Database db(file);
            auto rows = db.prepare("SELECT seq, transaction_id, operation, body FROM notifications ORDER BY seq");
            std::vector<std::tuple<std::int64_t, std::string, std::string, std::string>> all;
            while (rows.step())
                all.emplace_back(rows.integer(0), rows.text(1), rows.text(2), rows.text(3));
            for (const auto& [seq, tx, operation, body] : all) {
                std::error_code ec;
                json::value parsed = json::parse(body, ec);
                if (!ec && parsed.is_object()) {
                    const auto* profile = parsed.as_object().if_contains("profile");
                    certconn::sdk::Host::Notification n;
                    for (const auto& candidate : profiles_)
                        if (profile && profile->is_string() && candidate->name == profile->as_string())
                            n.tenant = candidate->tenant;
                    const bool success = operation == "scep.notify_success";
                    n.operation = operation;
                    n.key = tx + (success ? "/success" : "/failure");
                    n.request_json = body;
                    n.request_id = tx;
                    n.event_delivered = CC_EV_ScepNotifySuccess;
                    n.event_retry = CC_EV_ScepNotifyAttemptFailed;
                    n.event_refused = success ? CC_EV_ScepRequestUploadFailure : CC_EV_ScepNotifyAttemptFailed;
                    host_.notify_tenant(n);  // throws: the row stays for the next start
                }
                db.prepare("DELETE FROM notifications WHERE seq = ?").bind(1, seq).run();
                ++moved;
            }
        } catch (const std::exception& e) {
            host_.log(CC_EV_ScepNotifySaveToDiskFailed, CC_LEVEL_ERROR,
                      std::string("handing the earlier version's undelivered notifications to the host stopped (") + e.what() +
                          "); the rest stay in " + file.string() + " for the next start");
        }
        if (moved > 0)
            host_.log(CC_EV_ScepNotifySuccess, CC_LEVEL_INFO,
                      std::to_string(moved) + " undelivered notification(s) of an earlier version handed to the host outbox");
    }

    static HttpResponse reply(std::string der) { return {200, {{"Content-Type", "application/x-pki-message"}}, std::move(der)}; }

private:
    /// How long a request waits for another one issuing the same transaction before a 503.
    static constexpr std::chrono::seconds kLedgerWait{10};
    /// A claim this old without a certificate belongs to an instance that died: taken over (a
    /// resend through the balancer waits kLedgerWait per instance, so it crosses this age and
    /// issues). A slow CA taken over early is asked again with the same request id: one certificate.
    static constexpr std::int64_t kClaimStaleSeconds = 15;

    certconn::sdk::Host& host_;
    const std::string instance_id_ = instance_id_of(host_);
    scep::Connections stores_ = open_stores(host_);
    certconn::scep::PendingRequests pending_{stores_.pending};
    certconn::scep::IssuedCertificates issued_{stores_.issued};  // the renewal ledger
    certconn::scep::TransactionLedger ledger_{stores_.pending};
    certconn::scep::SharedRa shared_ra_{stores_.pending};  // used with a shared store only
    std::string shared_key_file_;
    std::string ra_passphrase_;  // from shared_key_file_, with a shared store
    std::mutex in_flight_mutex_;
    std::set<std::string> in_flight_;  // "<profile>\n<transaction>" this instance is issuing
    std::mutex renewal_mutex_;
    std::unique_ptr<certconn::scep::LegacyProviders> legacy_;  // only when a profile allows single DES
    std::vector<std::unique_ptr<Profile>> profiles_;
};

}  // namespace

CERTCONN_PLUGIN(ScepFeature, "scep", "0.2.0", "2026-11-24", "SCEP server (RFC 8894), challenges validated by the tenant", kSchema)
