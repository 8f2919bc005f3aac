#include "CfsslCa.hpp"

#include <certconn/time.hpp>

#include <boost/json.hpp>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <sys/stat.h>

namespace cfssl_plugin {

namespace json = boost::json;
namespace fs = std::filesystem;
using certconn::sdk::Error;

namespace {

// The RFC 5280 reason names the host sends; cfssl 1.2 accepts them case-insensitively
// (ocsp.ReasonStringToCode). removeFromCRL is for delta CRLs and is not a revocation.
const std::set<std::string> kReasons = {"unspecified",        "keyCompromise",      "cACompromise",
                                        "affiliationChanged", "superseded",         "cessationOfOperation",
                                        "certificateHold",    "privilegeWithdrawn", "aACompromise"};

std::string text(const json::object& o, const char* key, const std::string& fallback = {}) {
    const auto* v = o.if_contains(key);
    return v && v->is_string() ? std::string(v->as_string()) : fallback;
}

json::object parse_object(const std::string& request_json, const char* what) {
    std::error_code ec;
    json::value v = json::parse(request_json, ec);
    if (ec || !v.is_object()) throw Error(CC_ERR_INVALID_ARGUMENT, std::string(what) + " is not a JSON object");
    return std::move(v.as_object());
}

/// Upper-case hex without leading zeros, or INVALID_ARGUMENT.
std::string canonical_serial(const std::string& hex) {
    if (hex.empty() || hex.size() > 64 || hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
        throw Error(CC_ERR_INVALID_ARGUMENT, "serial '" + hex.substr(0, 80) + "' is not a hexadecimal number");
    BIGNUM* bn = nullptr;
    BN_hex2bn(&bn, hex.c_str());
    char* out = BN_bn2hex(bn);
    std::string canonical(out);
    OPENSSL_free(out);
    BN_free(bn);
    if (canonical == "0") throw Error(CC_ERR_INVALID_ARGUMENT, "serial 0 is not a certificate serial number");
    return canonical;
}

/// cfssl's certdb keys certificates by the decimal serial (big.Int.String()).
std::string decimal_serial(const std::string& hex) {
    BIGNUM* bn = nullptr;
    BN_hex2bn(&bn, hex.c_str());
    char* out = BN_bn2dec(bn);
    std::string dec(out);
    OPENSSL_free(out);
    BN_free(bn);
    return dec;
}

/// Lower-case hex of the certificate's authority key identifier, as later cfssl versions store it.
std::string authority_key_id_hex(const X509* cert) {
    const ASN1_OCTET_STRING* akid = X509_get0_authority_key_id(const_cast<X509*>(cert));
    if (!akid) return {};
    return certconn::crypto::hex_encode(std::string_view(reinterpret_cast<const char*>(ASN1_STRING_get0_data(akid)),
                                                         static_cast<std::size_t>(ASN1_STRING_length(akid))));
}

std::string absolute_path(const json::object& config, const std::string& ca, const char* key) {
    const std::string v = text(config, key);
    if (!v.empty() && !fs::path(v).is_absolute())
        throw Error(CC_ERR_INVALID_ARGUMENT, "ca." + ca + "." + key + ": expected an absolute path, got '" + v + "'");
    return v;
}

bool http_url(const std::string& url) {
    return (url.rfind("http://", 0) == 0 && url.size() > 7) || (url.rfind("https://", 0) == 0 && url.size() > 8);
}

/// A CRL as DER, PEM or base64 of DER (what `cfssl gencrl` prints). Throws UNAVAILABLE.
X509_CRL* parse_crl(const std::string& body, const std::string& source) {
    auto from_der = [](std::string_view der) -> X509_CRL* {
        const auto* p = reinterpret_cast<const unsigned char*>(der.data());
        return d2i_X509_CRL(nullptr, &p, static_cast<long>(der.size()));
    };
    X509_CRL* crl = from_der(body);
    if (!crl && body.find("-----BEGIN X509 CRL-----") != std::string::npos) {
        BIO* bio = BIO_new_mem_buf(body.data(), static_cast<int>(body.size()));
        crl = PEM_read_bio_X509_CRL(bio, nullptr, nullptr, nullptr);
        BIO_free(bio);
    }
    if (!crl) {
        std::string compact;
        for (char c : body)
            if (!std::isspace(static_cast<unsigned char>(c))) compact.push_back(c);
        try {
            crl = from_der(certconn::crypto::base64_decode(compact));
        } catch (const std::exception&) {
        }
    }
    ERR_clear_error();
    if (!crl) throw Error(CC_ERR_UNAVAILABLE, source + " is not a CRL (expected DER, PEM or base64 of DER)");
    return crl;
}

}  // namespace

CfsslCa::CfsslCa(std::string name, const json::object& config, const fs::path& state_dir, certconn::sdk::Host& host)
    : name_(std::move(name)), host_(host) {
    const std::string prefix = "ca." + name_ + ".";
    const std::string url = text(config, "url");
    if (!http_url(url))
        throw Error(CC_ERR_INVALID_ARGUMENT,
                    prefix + "url: expected the http:// or https:// URL of cfssl serve, got '" + url + "'");
    certconn::http::Settings settings;
    try {
        settings = certconn::http::settings_from_config(config, "ca." + name_);  // errors name the key
    } catch (const Error&) {
        throw;
    } catch (const std::exception& e) {
        throw Error(CC_ERR_INVALID_ARGUMENT, prefix + e.what());
    }
    std::optional<certconn::sdk::Secret> auth_key;
    if (const std::string f = absolute_path(config, name_, "auth_key_file"); !f.empty())
        auth_key = read_auth_key(f, prefix + "auth_key_file");
    api_ = std::make_unique<CfsslApi>(url, std::move(settings), std::move(auth_key), text(config, "label"));

    if (const std::string f = absolute_path(config, name_, "chain_file"); !f.empty()) {
        try {
            for (const auto& c : certconn::crypto::load_certificates(certconn::crypto::read_file(f, "chain file")))
                chain_file_pem_ += certconn::crypto::certificate_pem(c.get());
        } catch (const std::exception& e) {
            throw Error(CC_ERR_INVALID_ARGUMENT, prefix + "chain_file: expected PEM certificates: " + e.what());
        }
    }
    crl_url_ = text(config, "crl_url");
    if (!crl_url_.empty() && !http_url(crl_url_))
        throw Error(CC_ERR_INVALID_ARGUMENT, prefix + "crl_url: expected an http:// or https:// URL, got '" + crl_url_ + "'");
    if (const auto* v = config.if_contains("crl_cache_seconds"); v && v->is_int64())
        crl_cache_ = std::chrono::seconds(v->as_int64());

    if (const auto* profiles = config.if_contains("profiles"); profiles && profiles->is_object())
        for (const auto& [pname, p] : profiles->as_object())
            profiles_[std::string(pname)] = p.is_object() ? text(p.as_object(), "cfssl_profile") : "";
    if (profiles_.empty()) profiles_["default"] = "";  // cfssl's default signing policy

    const fs::path dir = state_dir / name_;
    fs::create_directories(dir);
    ::chmod(dir.c_str(), 0700);
    table_ = std::make_unique<CertificateTable>(dir / "issued.db");
}

std::shared_ptr<const CfsslCa::Signer> CfsslCa::signer() {
    std::lock_guard lock(signer_mutex_);
    if (signer_ && std::chrono::steady_clock::now() - signer_fetched_ < std::chrono::minutes(5)) return signer_;
    std::string pem;
    try {
        pem = api_->info();
    } catch (const Error& e) {
        // cfssl unreachable: an answer from the last minutes still names the right chain (an
        // already issued certificate can be answered); without one, the caller retries.
        if (signer_ && e.retryable()) return signer_;
        throw;
    }
    auto s = std::make_shared<Signer>();
    try {
        s->certificate = certconn::crypto::load_certificate(pem);
    } catch (const std::exception& e) {
        throw Error(CC_ERR_UNAVAILABLE,
                    "cfssl at " + api_->base_url() + " (info): the signer certificate does not parse: " + e.what());
    }
    s->chain_pem = certconn::crypto::certificate_pem(s->certificate.get()) + chain_file_pem_;
    signer_ = std::move(s);
    signer_fetched_ = std::chrono::steady_clock::now();
    return signer_;
}

void CfsslCa::report(const Error& e, const std::string& request_id, const std::string& what) {
    const std::string fields =
        json::serialize(json::object{{"ca", name_}, {"request_id", request_id}, {"url", api_->base_url()}});
    if (e.retryable())
        host_.log(CC_EV_CaUnreachable, CC_LEVEL_WARNING, "CA '" + name_ + "': " + what + ": " + e.what(), request_id, fields);
    else if (e.code() == CC_ERR_DENIED)
        host_.log(CC_EV_CaRequestDenied, CC_LEVEL_ERROR, "CA '" + name_ + "': " + what + ": " + e.what(), request_id, fields);
}

std::string CfsslCa::answer(const IssuedCertificate& c, bool already_issued) {
    return json::serialize(json::object{{"serial", c.serial},
                                        {"certificate_pem", c.certificate_pem},
                                        {"chain_pem", signer()->chain_pem},
                                        {"subject", c.subject},
                                        {"not_before", c.not_before},
                                        {"not_after", c.not_after},
                                        {"profile", c.profile},
                                        {"already_issued", already_issued}});
}

std::string CfsslCa::issue(const std::string& request_json) {
    const json::object req = parse_object(request_json, "issue request");
    const std::string csr_pem = text(req, "csr_pem");
    const std::string request_id = text(req, "request_id");
    const std::string profile = text(req, "profile", "default");
    if (csr_pem.empty()) throw Error(CC_ERR_INVALID_ARGUMENT, "issue request has no csr_pem");
    if (!request_id.empty())
        if (auto existing = table_->by_request(request_id)) return answer(*existing, true);

    const auto mapped = profiles_.find(profile);
    if (mapped == profiles_.end()) {
        std::string names;
        for (const auto& [n, p] : profiles_)
            names += (names.empty() ? "" : ", ") + n;
        throw Error(CC_ERR_NOT_FOUND, "CA '" + name_ + "' has no profile '" + profile + "' (profiles: " + names + ")");
    }
    certconn::crypto::Request csr;
    try {
        csr = certconn::crypto::load_csr(csr_pem);
    } catch (const std::exception& e) {
        throw Error(CC_ERR_INVALID_ARGUMENT, std::string("csr_pem: ") + e.what());
    }
    EVP_PKEY* csr_key = X509_REQ_get0_pubkey(csr.get());
    if (!csr_key || X509_REQ_verify(csr.get(), csr_key) != 1) {
        ERR_clear_error();
        throw Error(CC_ERR_INVALID_ARGUMENT, "the CSR's signature does not verify");
    }

    // One signing per request id, even when the same request arrives twice at once.
    struct InFlight {
        CfsslCa& ca;
        std::string id;
        InFlight(CfsslCa& c, std::string i) : ca(c), id(std::move(i)) {
            std::unique_lock lock(ca.inflight_mutex_);
            ca.inflight_done_.wait(lock, [&] { return !ca.inflight_.count(id); });
            ca.inflight_.insert(id);
        }
        ~InFlight() {
            {
                std::lock_guard lock(ca.inflight_mutex_);
                ca.inflight_.erase(id);
            }
            ca.inflight_done_.notify_all();
        }
    };
    std::optional<InFlight> guard;
    if (!request_id.empty()) {
        guard.emplace(*this, request_id);
        if (auto existing = table_->by_request(request_id)) return answer(*existing, true);
    }

    std::string pem;
    std::shared_ptr<const Signer> ca;
    try {
        ca = signer();
        pem = api_->sign(csr_pem, mapped->second);
    } catch (const Error& e) {
        report(e, request_id, "signing failed");
        throw;
    }
    certconn::crypto::Cert cert;
    try {
        cert = certconn::crypto::load_certificate(pem);
    } catch (const std::exception& e) {
        const Error err(CC_ERR_UNAVAILABLE,
                        "cfssl at " + api_->base_url() + " returned a certificate that does not parse: " + e.what());
        report(err, request_id, "signing failed");
        throw err;
    }
    // What cfssl returned must be the CSR's key, signed by the CA we hand out as the chain.
    EVP_PKEY* issuer_key = X509_get0_pubkey(ca->certificate.get());
    if (EVP_PKEY_eq(X509_get0_pubkey(cert.get()), csr_key) != 1 || !issuer_key || X509_verify(cert.get(), issuer_key) != 1) {
        ERR_clear_error();
        const Error err(CC_ERR_UNAVAILABLE,
                        "cfssl at " + api_->base_url() +
                            " returned a certificate that is not for the CSR's key or not signed by its signer '" +
                            certconn::crypto::name_string(X509_get_subject_name(ca->certificate.get())) + "'");
        report(err, request_id, "signing failed");
        throw err;
    }
    IssuedCertificate record;
    record.serial = certconn::crypto::serial_hex(cert.get());
    record.request_id = request_id;
    record.profile = profile;
    record.subject = certconn::crypto::name_string(X509_get_subject_name(cert.get()));
    record.not_before = certconn::crypto::time_iso8601(X509_get0_notBefore(cert.get()));
    record.not_after = certconn::crypto::time_iso8601(X509_get0_notAfter(cert.get()));
    record.certificate_pem = certconn::crypto::certificate_pem(cert.get());
    if (!table_->insert(record))
        throw Error(CC_ERR_CONFLICT,
                    "CA '" + name_ + "': cfssl issued serial " + record.serial + ", which this plugin already recorded");
    host_.log(CC_EV_CaRequestIssued, CC_LEVEL_INFO,
              "CA '" + name_ + "': cfssl issued serial " + record.serial + " for " + record.subject +
                  (mapped->second.empty() ? " (cfssl default profile)" : " (cfssl profile '" + mapped->second + "')"),
              request_id,
              json::serialize(json::object{{"ca", name_},
                                           {"request_id", request_id},
                                           // cfssl has no request ids: its certdb keys a certificate by decimal serial.
                                           {"ca_request_id", decimal_serial(record.serial)},
                                           {"serial", record.serial},
                                           {"cfssl_profile", mapped->second}}));
    return answer(record, false);
}

std::string CfsslCa::revoke(const std::string& request_json) {
    const json::object req = parse_object(request_json, "revoke request");
    if (req.contains("batch")) throw Error(CC_ERR_NOT_SUPPORTED, "CA '" + name_ + "' (cfssl) revokes one certificate per call");
    const std::string serial = canonical_serial(text(req, "serial"));
    const std::string reason = text(req, "reason", "unspecified");
    const std::string request_id = text(req, "request_id");
    if (!kReasons.count(reason))
        throw Error(CC_ERR_INVALID_ARGUMENT, "reason '" + reason.substr(0, 40) +
                                                 "': expected an RFC 5280 reason name (unspecified, keyCompromise, cACompromise, "
                                                 "affiliationChanged, superseded, cessationOfOperation, certificateHold, "
                                                 "privilegeWithdrawn, aACompromise)");
    if (const std::string issuer = text(req, "issuer"); !issuer.empty()) {
        std::shared_ptr<const Signer> ca;
        try {
            ca = signer();
        } catch (const Error& e) {
            report(e, request_id, "revoking serial " + serial + " failed");
            throw;
        }
        bool same = false;
        try {
            same = X509_NAME_cmp(certconn::crypto::parse_name(issuer).get(), X509_get_subject_name(ca->certificate.get())) == 0;
        } catch (const std::exception& e) {
            throw Error(CC_ERR_INVALID_ARGUMENT, std::string("issuer: ") + e.what());
        }
        if (!same)
            throw Error(CC_ERR_NOT_FOUND, "CA '" + name_ + "' is '" +
                                              certconn::crypto::name_string(X509_get_subject_name(ca->certificate.get())) +
                                              "', not the issuer '" + issuer + "' named in the request");
    }
    const auto known = table_->by_serial(serial);
    if (known && known->status == "revoked")  // the first revocation's reason and time stand
        return json::serialize(json::object{{"serial", serial},
                                            {"status", "revoked"},
                                            {"reason", known->revocation_reason},
                                            {"revoked_at", known->revoked_at},
                                            {"already_revoked", true},
                                            {"subject", known->subject}});
    const std::string decimal = decimal_serial(serial);
    try {
        try {
            // cfssl 1.2 (Debian) records an empty authority key id; later versions its hex.
            api_->revoke(decimal, "", reason);
        } catch (const Error& e) {
            std::string akid;
            if (e.code() == CC_ERR_NOT_FOUND && known)
                akid = authority_key_id_hex(certconn::crypto::load_certificate(known->certificate_pem).get());
            if (akid.empty()) throw;
            api_->revoke(decimal, akid, reason);
        }
    } catch (const Error& e) {
        report(e, request_id, "revoking serial " + serial + " failed");
        if (e.code() == CC_ERR_NOT_FOUND)
            throw Error(CC_ERR_NOT_FOUND, "CA '" + name_ + "': cfssl's certdb has no certificate with serial " + serial +
                                              " (decimal " + decimal + "): " + e.what());
        throw;
    }
    const std::string when = certconn::sdk::utc_iso8601(std::chrono::system_clock::now());
    if (known) table_->mark_revoked(serial, reason, when);
    {
        std::lock_guard lock(crl_mutex_);
        crl_.clear();  // the next CRL request fetches again
    }
    json::object out{
        {"serial", serial}, {"status", "revoked"}, {"reason", reason}, {"revoked_at", when}, {"already_revoked", false}};
    if (known) out["subject"] = known->subject;
    return json::serialize(out);
}

std::string CfsslCa::crl_der() {
    std::lock_guard lock(crl_mutex_);
    const auto now = std::chrono::steady_clock::now();
    if (!crl_.empty() && now - crl_fetched_ < crl_cache_) return crl_;
    std::string body, source;
    if (!crl_url_.empty()) {
        body = api_->fetch(crl_url_);
        source = "the CRL at " + crl_url_;
    } else {
        auto der = api_->crl();
        if (!der)
            throw Error(CC_ERR_NOT_SUPPORTED,
                        "CA '" + name_ + "': cfssl at " + api_->base_url() +
                            " has no /api/v1/cfssl/crl (cfssl 1.2); publish `cfssl gencrl` output over HTTP and set crl_url");
        body = std::move(*der);
        source = "cfssl's CRL";
    }
    X509_CRL* crl = parse_crl(body, source);
    std::unique_ptr<X509_CRL, decltype(&X509_CRL_free)> owned(crl, &X509_CRL_free);
    const auto ca = signer();
    if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(ca->certificate.get())) != 0 ||
        X509_CRL_verify(crl, X509_get0_pubkey(ca->certificate.get())) != 1) {
        ERR_clear_error();
        throw Error(CC_ERR_UNAVAILABLE, source + " is not signed by cfssl's signer '" +
                                            certconn::crypto::name_string(X509_get_subject_name(ca->certificate.get())) + "'");
    }
    if (const ASN1_TIME* next = X509_CRL_get0_nextUpdate(crl); next && X509_cmp_current_time(next) < 0)
        throw Error(CC_ERR_UNAVAILABLE,
                    source + " expired at " + certconn::crypto::time_iso8601(next) + "; it is not republished");
    unsigned char* der = nullptr;
    const int len = i2d_X509_CRL(crl, &der);
    if (len <= 0) throw Error(CC_ERR_INTERNAL, "re-encoding the CRL failed");
    crl_.assign(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
    OPENSSL_free(der);
    crl_fetched_ = now;
    return crl_;
}

std::string CfsslCa::query(const std::string& request_json) {
    const json::object req = parse_object(request_json, "query");
    const std::string op = text(req, "op");
    if (op == "crl") {
        try {
            return json::serialize(json::object{{"crl_der", certconn::crypto::base64_encode(crl_der())}});
        } catch (const Error& e) {
            report(e, "", "CRL");
            throw;
        }
    }
    if (op == "certificate") {
        const std::string serial = canonical_serial(text(req, "serial"));
        const auto cert = table_->by_serial(serial);
        if (!cert)
            throw Error(CC_ERR_NOT_FOUND, "CA '" + name_ + "' issued no certificate with serial " + serial +
                                              " through this connector (cfssl 1.2 cannot look certificates up by serial)");
        json::object out{{"serial", cert->serial}, {"certificate_pem", cert->certificate_pem}, {"status", cert->status}};
        if (cert->status == "revoked") {
            out["revocation_reason"] = cert->revocation_reason;
            out["revoked_at"] = cert->revoked_at;
        }
        return json::serialize(out);
    }
    if (op == "health") {
        try {
            const auto ca = signer();
            (void)api_->info();  // a real round trip, not the cached answer
            return json::serialize(
                json::object{{"healthy", true},
                             {"detail", "cfssl at " + api_->base_url() + " signs as " +
                                            certconn::crypto::name_string(X509_get_subject_name(ca->certificate.get())) +
                                            (api_->authenticated() ? " (authsign)" : "")}});
        } catch (const std::exception& e) {
            return json::serialize(json::object{{"healthy", false}, {"detail", e.what()}});
        }
    }
    throw Error(CC_ERR_NOT_SUPPORTED,
                "CA '" + name_ + "' answers no query '" + op.substr(0, 40) + "' (known: certificate, crl, health)");
}

std::string CfsslCa::describe() {
    const auto ca = signer();
    return json::serialize(json::object{{"name", name_},
                                        {"plugin", "cfssl"},
                                        {"url", api_->base_url()},
                                        {"authsign", api_->authenticated()},
                                        {"chain_pem", ca->chain_pem},
                                        {"subject", certconn::crypto::name_string(X509_get_subject_name(ca->certificate.get()))},
                                        {"issued", table_->count()},
                                        {"revoked", table_->count("revoked")},
                                        {"crl_url", crl_url_}});
}

}  // namespace cfssl_plugin
