#include "DigiCertCa.hpp"

#include <certconn/crypto.hpp>
#include <certconn/time.hpp>

#include <boost/json.hpp>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>

namespace certconn::ca_digicert {

namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

constexpr std::size_t kMaxMessage = 300;  // of DigiCert's own error text, in our messages

std::string str(const json::object& o, const char* key, std::string fallback = {}) {
    const auto* v = o.if_contains(key);
    return v && v->is_string() ? std::string(v->as_string()) : std::move(fallback);
}

std::string lower(std::string s) {
    for (auto& c : s)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

/// Text from the remote side, safe to put in a message: printable, one line, bounded.
std::string printable(std::string_view text, std::size_t max = kMaxMessage) {
    std::string out;
    for (char c : text.substr(0, max))
        out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? ' ' : c;
    if (text.size() > max) out += "...";
    return out;
}

/// "4099ab..." or "00A1" -> upper case, no leading zeros; throws INVALID_ARGUMENT when not hex.
std::string canonical_serial(std::string_view hex) {
    if (hex.empty() || hex.size() > 64 || hex.find_first_not_of("0123456789abcdefABCDEF") != std::string_view::npos)
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "serial '" + printable(hex, 80) + "' is not a hexadecimal number");
    std::string s(hex);
    for (auto& c : s)
        c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    const auto first = s.find_first_not_of('0');
    if (first == std::string::npos) throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "serial 0 is not a certificate serial number");
    return s.substr(first);
}

// RFC 5280 reason names (as the revoke feature sends them) -> DigiCert ONE's revocation_reason.
const std::map<std::string, std::string>& reasons() {
    static const std::map<std::string, std::string> m = {{"unspecified", "unspecified"},
                                                         {"keyCompromise", "key_compromise"},
                                                         {"cACompromise", "ca_compromise"},
                                                         {"affiliationChanged", "affiliation_changed"},
                                                         {"superseded", "superseded"},
                                                         {"cessationOfOperation", "cessation_of_operation"},
                                                         {"certificateHold", "certificate_hold"},
                                                         {"privilegeWithdrawn", "privilege_withdrawn"},
                                                         {"aACompromise", "aa_compromise"}};
    return m;
}

std::string rfc5280_reason(const std::string& digicert) {
    for (const auto& [rfc, dc] : reasons())
        if (dc == digicert) return rfc;
    return "unspecified";
}

/// DigiCert's error text: {"errors":[{"code","message","field"}]} or {"error":{...}} or {"error":"..."}.
std::string error_text(const std::string& body) {
    std::error_code ec;
    const json::value v = json::parse(body.substr(0, std::size_t{64} * 1024), ec);
    if (ec || !v.is_object()) return {};
    const json::object& o = v.get_object();
    auto one = [](const json::value& e) -> std::string {
        if (e.is_string()) return printable(e.get_string());
        if (!e.is_object()) return {};
        const auto& eo = e.get_object();
        std::string t = printable(str(eo, "message"));
        if (const std::string code = str(eo, "code"); !code.empty()) t += " [" + printable(code, 80) + "]";
        if (const std::string field = str(eo, "field"); !field.empty()) t += " (field " + printable(field, 80) + ")";
        return t;
    };
    std::string out;
    if (const auto* errors = o.if_contains("errors"); errors && errors->is_array())
        for (const auto& e : errors->get_array()) {
            if (out.size() > kMaxMessage) break;
            const std::string t = one(e);
            if (!t.empty()) out += (out.empty() ? "" : "; ") + t;
        }
    if (out.empty())
        if (const auto* e = o.if_contains("error")) out = one(*e);
    if (out.empty())
        if (const auto* m = o.if_contains("message"); m && m->is_string()) out = printable(m->get_string());
    return out;
}

/// The first value of `nid` in `name`, or empty.
std::string name_entry(const X509_NAME* name, int nid) {
    const int i = X509_NAME_get_index_by_NID(name, nid, -1);
    if (i < 0) return {};
    const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
    unsigned char* utf8 = nullptr;
    const int n = ASN1_STRING_to_UTF8(&utf8, data);
    if (n < 0) return {};
    std::string out(reinterpret_cast<char*>(utf8), static_cast<std::size_t>(n));
    OPENSSL_free(utf8);
    return out;
}

json::array name_entries(const X509_NAME* name, int nid) {
    json::array out;
    for (int i = X509_NAME_get_index_by_NID(name, nid, -1); i >= 0; i = X509_NAME_get_index_by_NID(name, nid, i)) {
        unsigned char* utf8 = nullptr;
        const int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i)));
        if (n < 0) continue;
        out.emplace_back(json::string(reinterpret_cast<char*>(utf8), static_cast<std::size_t>(n)));
        OPENSSL_free(utf8);
    }
    return out;
}

/// A certificate from a PEM block or from base64 DER (DigiCert's lookup answers the latter).
crypto::Cert certificate_from(const std::string& text) {
    if (text.find("-----BEGIN") != std::string::npos) return crypto::load_certificate(text);
    const std::string der = crypto::base64_decode(text);
    const unsigned char* p = reinterpret_cast<const unsigned char*>(der.data());
    crypto::Cert cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
    if (!cert) crypto::throw_openssl("certificate (base64 DER)");
    return cert;
}

/// The URI of the first CRL distribution point of `cert`, or empty.
std::string crl_distribution_point(X509* cert) {
    auto* points = static_cast<CRL_DIST_POINTS*>(X509_get_ext_d2i(cert, NID_crl_distribution_points, nullptr, nullptr));
    std::string out;
    for (int i = 0; points && out.empty() && i < sk_DIST_POINT_num(points); ++i) {
        const DIST_POINT* dp = sk_DIST_POINT_value(points, i);
        if (!dp->distpoint || dp->distpoint->type != 0) continue;
        const GENERAL_NAMES* names = dp->distpoint->name.fullname;
        for (int j = 0; j < sk_GENERAL_NAME_num(names); ++j) {
            const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names, j);
            if (gn->type != GEN_URI) continue;
            const ASN1_IA5STRING* uri = gn->d.uniformResourceIdentifier;
            out.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                       static_cast<std::size_t>(ASN1_STRING_length(uri)));
            break;
        }
    }
    CRL_DIST_POINTS_free(points);
    ERR_clear_error();
    return out;
}

/// `certs` ordered from the issuer of `leaf` upwards (issuing CA first); certificates that do
/// not continue the chain follow in their original order.
std::string ordered_chain(X509* leaf, std::vector<crypto::Cert> certs) {
    std::string out;
    std::vector<bool> used(certs.size(), false);
    X509* current = leaf;
    for (std::size_t step = 0; step < certs.size(); ++step) {
        std::size_t found = certs.size();
        for (std::size_t i = 0; i < certs.size(); ++i)
            if (!used[i] && X509_check_issued(certs[i].get(), current) == X509_V_OK) {
                found = i;
                break;
            }
        if (found == certs.size()) break;
        used[found] = true;
        out += crypto::certificate_pem(certs[found].get());
        current = certs[found].get();
        if (X509_check_issued(current, current) == X509_V_OK) break;  // the root
    }
    for (std::size_t i = 0; i < certs.size(); ++i)
        if (!used[i]) out += crypto::certificate_pem(certs[i].get());
    ERR_clear_error();
    return out;
}

}  // namespace

// ---- the request store ----------------------------------------------------------------------

RequestStore::RequestStore(const fs::path& file) : db_(file) {
    db_.exec(
        "CREATE TABLE IF NOT EXISTS requests ("
        " request_id TEXT PRIMARY KEY, profile TEXT NOT NULL, dc_request_id TEXT NOT NULL DEFAULT '',"
        " status TEXT NOT NULL, message TEXT NOT NULL DEFAULT '', serial TEXT NOT NULL DEFAULT '',"
        " dc_serial TEXT NOT NULL DEFAULT '', certificate_pem TEXT NOT NULL DEFAULT '', chain_pem TEXT NOT NULL DEFAULT '',"
        " updated_at INTEGER NOT NULL)");
    db_.exec("CREATE INDEX IF NOT EXISTS requests_serial ON requests(serial)");
}

namespace {
constexpr const char* kColumns =
    "request_id, profile, dc_request_id, status, message, serial, dc_serial, certificate_pem, chain_pem";
RequestRecord row(const sqlite::Statement& s) {
    return {s.text(0), s.text(1), s.text(2), s.text(3), s.text(4), s.text(5), s.text(6), s.text(7), s.text(8)};
}
}  // namespace

std::optional<RequestRecord> RequestStore::find(const std::string& request_id) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(std::string("SELECT ") + kColumns + " FROM requests WHERE request_id = ?");
    s.bind(1, request_id);
    if (!s.step()) return std::nullopt;
    return row(s);
}

std::optional<RequestRecord> RequestStore::find_serial(const std::string& serial) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(std::string("SELECT ") + kColumns + " FROM requests WHERE serial = ? LIMIT 1");
    s.bind(1, serial);
    if (!s.step()) return std::nullopt;
    return row(s);
}

std::optional<RequestRecord> RequestStore::latest_issued() {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(std::string("SELECT ") + kColumns +
                         " FROM requests WHERE status = 'issued' ORDER BY updated_at DESC, rowid DESC LIMIT 1");
    if (!s.step()) return std::nullopt;
    return row(s);
}

void RequestStore::put(const RequestRecord& r) {
    std::lock_guard lock(mutex_);
    const auto now =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    db_.prepare(
           "INSERT INTO requests (request_id, profile, dc_request_id, status, message, serial, dc_serial, certificate_pem,"
           " chain_pem, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT(request_id) DO UPDATE SET"
           " profile = excluded.profile, dc_request_id = excluded.dc_request_id, status = excluded.status,"
           " message = excluded.message, serial = excluded.serial, dc_serial = excluded.dc_serial,"
           " certificate_pem = excluded.certificate_pem, chain_pem = excluded.chain_pem, updated_at = excluded.updated_at")
        .bind_all(r.request_id, r.profile, r.dc_request_id, r.status, r.message, r.serial, r.dc_serial, r.certificate_pem,
                  r.chain_pem, static_cast<std::int64_t>(now))
        .run();
}

// ---- configuration --------------------------------------------------------------------------

DigiCertCa::DigiCertCa(std::string name, const json::object& config, const fs::path& directory, sdk::Host& host)
    : name_(std::move(name)), host_(host) {
    const std::string prefix = "ca." + name_ + ".";
    auto bad = [&](const std::string& key, const std::string& what) {
        return sdk::Error(CC_ERR_INVALID_ARGUMENT, prefix + key + ": " + what);
    };
    url_ = str(config, "url");
    if (url_.rfind("https://", 0) != 0)
        throw bad("url", "expected the https:// address of DigiCert ONE, e.g. \"https://one.digicert.com\" (got '" +
                             printable(url_, 200) + "')");
    while (!url_.empty() && url_.back() == '/')
        url_.pop_back();
    host_name_ = url_.substr(8, url_.find('/', 8) == std::string::npos ? std::string::npos : url_.find('/', 8) - 8);

    http::Settings settings;
    try {
        settings = http::settings_from_config(config, "ca." + name_);  // errors name ca.<name>.<key>
    } catch (const sdk::Error& e) {
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, e.what());
    } catch (const std::exception& e) {
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, prefix + e.what());
    }

    api_key_file_ = str(config, "api_key_file");
    if (!api_key_file_.empty()) {
        if (api_key_file_.front() != '/') throw bad("api_key_file", "expected an absolute path, got '" + api_key_file_ + "'");
        std::string key;
        try {
            key = crypto::read_file(api_key_file_, "DigiCert API key file");
        } catch (const std::exception& e) {
            throw bad("api_key_file", e.what());
        }
        while (!key.empty() && (key.back() == '\n' || key.back() == '\r' || key.back() == ' ' || key.back() == '\t'))
            key.pop_back();
        if (key.empty()) throw bad("api_key_file", "the file " + api_key_file_ + " is empty; expected the API key (x-api-key)");
        if (key.find_first_of("\r\n") != std::string::npos)
            throw bad("api_key_file", "the file " + api_key_file_ + " holds more than one line; expected only the API key");
        api_key_ = sdk::Secret(std::move(key));
    }
    if (api_key_.empty() && settings.client_certificate.empty())
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT,
                         prefix +
                             "api_key_file: expected an API key file, or client_certificate (with the clientauth. host "
                             "in url) to authenticate to DigiCert ONE");

    if (const std::string chain_file = str(config, "ca_chain_file"); !chain_file.empty()) {
        try {
            const auto certs = crypto::load_certificates(crypto::read_file(chain_file, "CA chain file"));
            if (certs.empty()) throw std::invalid_argument("no certificate in " + chain_file);
            for (const auto& c : certs)
                chain_pem_ += crypto::certificate_pem(c.get());
        } catch (const std::exception& e) {
            throw bad("ca_chain_file", std::string("expected a PEM file of the issuing CA (first) and its chain: ") + e.what());
        }
    }
    crl_url_ = str(config, "crl_url");
    if (!crl_url_.empty() && crl_url_.rfind("http://", 0) != 0 && crl_url_.rfind("https://", 0) != 0)
        throw bad("crl_url", "expected an http:// or https:// URL");

    if (const auto* profiles = config.if_contains("profiles"); profiles && profiles->is_object()) {
        for (const auto& [pname, value] : profiles->get_object()) {
            const std::string key = "profiles." + std::string(pname) + ".";
            if (!value.is_object()) throw bad(key.substr(0, key.size() - 1), "expected a table");
            const json::object& p = value.get_object();
            Profile profile;
            profile.name = std::string(pname);
            profile.profile_id = str(p, "profile_id");
            if (profile.profile_id.empty()) throw bad(key + "profile_id", "expected the DigiCert ONE certificate profile id");
            profile.seat_field = str(p, "seat_field", "common_name");
            if (profile.seat_field != "common_name" && profile.seat_field != "email" && profile.seat_field != "upn")
                throw bad(key + "seat_field", "expected common_name, email or upn");
            if (const auto* v = p.if_contains("validity_days")) {
                if (!v->is_int64() || v->as_int64() < 1 || v->as_int64() > 3650)
                    throw bad(key + "validity_days", "expected a number of days, 1 to 3650");
                profile.validity_days = static_cast<int>(v->as_int64());
            }
            if (const auto* v = p.if_contains("include_ca_chain")) {
                if (!v->is_bool()) throw bad(key + "include_ca_chain", "expected true or false");
                profile.include_ca_chain = v->as_bool();
            }
            profiles_.emplace(profile.name, std::move(profile));
        }
    }
    if (profiles_.empty())
        throw bad("profiles", "expected at least one [ca." + name_ + ".profiles.<name>] table with a profile_id");

    client_ = std::make_unique<http::Client>(std::move(settings));
    fs::create_directories(directory);
    ::chmod(directory.c_str(), 0700);
    store_ = std::make_unique<RequestStore>(directory / "requests.db");
}

std::string DigiCertCa::account() const {
    if (!api_key_.empty()) return "the API key in " + api_key_file_;
    return "the client certificate " + client_->settings().client_certificate;
}

std::string DigiCertCa::where() const {
    return "CA '" + name_ + "' (DigiCert ONE at " + host_name_ + ")";
}

// ---- HTTP -----------------------------------------------------------------------------------

http::Response DigiCertCa::call(const std::string& method, const std::string& path, const std::string& body,
                                const std::string& request_id) const {
    http::Request request;
    request.method = method;
    request.url = path.rfind("https://", 0) == 0 || path.rfind("http://", 0) == 0 ? path : url_ + path;
    request.headers.push_back({"Accept", "application/json"});
    if (!body.empty()) request.headers.push_back({"Content-Type", "application/json"});
    if (!api_key_.empty() && request.url.rfind(url_, 0) == 0)  // the key goes to DigiCert only, never to a CRL host
        request.headers.push_back({"x-api-key", std::string(api_key_.reveal())});
    request.body = body;
    struct WipeKey {  // the key's copy in the header leaves memory with the call
        http::Request& r;
        ~WipeKey() {
            for (auto& h : r.headers)
                if (h.name == "x-api-key") sdk::wipe(h.value.data(), h.value.size());
        }
    } wipe_key{request};
    try {
        return client_->perform(request);
    } catch (const sdk::Error& e) {
        const std::string message = where() + ": " + e.what();
        if (e.retryable())
            host_.log(CC_EV_CaUnreachable, CC_LEVEL_WARNING, message, request_id,
                      json::serialize(json::object{{"ca", name_}, {"request_id", request_id}}));
        throw sdk::Error(e.code(), message);
    }
}

void DigiCertCa::fail(const http::Response& response, const std::string& what, const std::string& request_id) const {
    const std::string detail = error_text(response.body);
    std::string message =
        where() + ": " + what + " failed with HTTP " + std::to_string(response.status) + (detail.empty() ? "" : ": " + detail);
    const long s = response.status;
    if (s == 401 || s == 403)
        throw sdk::Error(CC_ERR_DENIED, message + " — DigiCert ONE refused " + account() +
                                            " (check the key or certificate and its permissions; not retried)");
    if (s == 429 || s >= 500 || s == 408) {
        if (const auto delay = response.retry_after()) message += "; retry after " + std::to_string(delay->count()) + " s";
        host_.log(CC_EV_CaUnreachable, CC_LEVEL_WARNING, message, request_id,
                  json::serialize(json::object{{"ca", name_}, {"request_id", request_id}, {"http_status", s}}));
        throw sdk::Error(s == 429 ? CC_ERR_BUSY : CC_ERR_UNAVAILABLE, message);
    }
    throw sdk::Error(http::status_of_http(s), message);
}

void DigiCertCa::unreadable(const std::string& what, const std::string& request_id) const {
    const std::string message = where() + ": " + what;
    host_.log(CC_EV_CaUnreachable, CC_LEVEL_WARNING, message, request_id,
              json::serialize(json::object{{"ca", name_}, {"request_id", request_id}}));
    throw sdk::Error(CC_ERR_UNAVAILABLE, message);
}

json::object DigiCertCa::parse_object(const http::Response& response, const std::string& what,
                                      const std::string& request_id) const {
    std::error_code ec;
    json::value v = json::parse(response.body, ec);
    if (ec || !v.is_object())
        unreadable("HTTP " + std::to_string(response.status) + " to " + what + " is not the expected JSON object (" +
                       std::to_string(response.body.size()) + " bytes, starting '" + printable(response.body, 60) + "')",
                   request_id);
    return std::move(v.as_object());
}

// ---- issue ----------------------------------------------------------------------------------

std::string DigiCertCa::answer(const RequestRecord& r, bool already_issued) const {
    crypto::Cert cert = crypto::load_certificate(r.certificate_pem);
    return json::serialize(json::object{{"serial", r.serial},
                                        {"certificate_pem", r.certificate_pem},
                                        {"chain_pem", r.chain_pem},
                                        {"subject", crypto::name_string(X509_get_subject_name(cert.get()))},
                                        {"not_before", crypto::time_iso8601(X509_get0_notBefore(cert.get()))},
                                        {"not_after", crypto::time_iso8601(X509_get0_notAfter(cert.get()))},
                                        {"profile", r.profile},
                                        {"already_issued", already_issued}});
}

std::string DigiCertCa::finish_issued(const json::object& a, const std::string& request_id, const std::string& profile,
                                      const std::string& dc_request_id, const std::string& csr_public_pem) {
    const auto* cert_value = a.if_contains("certificate");
    if (!cert_value || !cert_value->is_string())
        unreadable("the answer has no certificate (expected {serial_number, certificate, ...})", request_id);
    crypto::Cert cert;
    try {
        cert = certificate_from(std::string(cert_value->get_string()));
    } catch (const std::exception& e) {
        unreadable(std::string("the answer's certificate does not parse: ") + printable(e.what()), request_id);
    }
    if (!csr_public_pem.empty()) {
        const crypto::PKey expected = crypto::load_public_key(csr_public_pem);
        if (EVP_PKEY_eq(X509_get0_pubkey(cert.get()), expected.get()) != 1)
            throw sdk::Error(CC_ERR_INTERNAL, where() + " returned a certificate for another key than the request's");
    }
    std::vector<crypto::Cert> chain;
    if (const auto* c = a.if_contains("ca_chain"); c && c->is_array()) {
        for (const auto& item : c->get_array()) {
            std::string text;
            if (item.is_string())
                text = std::string(item.get_string());
            else if (item.is_object())
                text = str(item.get_object(), "blob", str(item.get_object(), "pem", str(item.get_object(), "certificate")));
            if (text.empty()) continue;
            try {
                chain.push_back(certificate_from(text));
            } catch (const std::exception& e) {
                unreadable(std::string("a ca_chain certificate does not parse: ") + printable(e.what()), request_id);
            }
        }
    }
    if (chain.empty() && !chain_pem_.empty()) chain = crypto::load_certificates(chain_pem_);

    RequestRecord r;
    r.request_id = request_id;
    r.profile = profile;
    r.dc_request_id = dc_request_id;
    r.status = "issued";
    r.serial = crypto::serial_hex(cert.get());
    r.dc_serial = str(a, "serial_number", r.serial);
    r.certificate_pem = crypto::certificate_pem(cert.get());
    r.chain_pem = ordered_chain(cert.get(), std::move(chain));
    if (!request_id.empty())
        store_->put(r);
    else
        store_->put(RequestRecord{r.serial + ":" + crypto::uuid4(), r.profile, r.dc_request_id, r.status, "", r.serial,
                                  r.dc_serial, r.certificate_pem, r.chain_pem});
    host_.log(CC_EV_CaRequestIssued, CC_LEVEL_INFO, "DigiCert ONE issued certificate " + r.serial + " for CA '" + name_ + "'",
              request_id,
              json::serialize(json::object{{"ca", name_},
                                           {"request_id", request_id},
                                           {"ca_request_id", dc_request_id.empty() ? r.dc_serial : dc_request_id},
                                           {"serial", r.serial}}));
    return answer(r, false);
}

std::string DigiCertCa::issue(const std::string& request_json) {
    std::error_code ec;
    const json::value parsed = json::parse(request_json, ec);
    if (ec || !parsed.is_object()) throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "issue request is not a JSON object");
    const json::object& req = parsed.get_object();
    const std::string request_id = str(req, "request_id");
    const std::string csr_pem = str(req, "csr_pem");
    const std::string profile_name = str(req, "profile", "default");
    if (csr_pem.empty()) throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "issue request has no csr_pem");

    std::unique_lock<std::mutex> same_request;
    if (!request_id.empty())
        same_request = std::unique_lock(issue_locks_[std::hash<std::string>{}(request_id) % issue_locks_.size()]);
    // Idempotent by request id: never submit twice; a held request is collected instead.
    if (!request_id.empty())
        if (auto existing = store_->find(request_id)) {
            if (existing->status == "issued") return answer(*existing, true);
            if (existing->status == "denied")
                throw sdk::Error(CC_ERR_DENIED,
                                 where() + " rejected request " + existing->dc_request_id + ": " + existing->message);
            if (existing->status == "pending") return pickup(std::move(*existing));
        }

    auto it = profiles_.find(profile_name);
    if (it == profiles_.end()) {
        std::string names;
        for (const auto& [n, p] : profiles_)
            names += (names.empty() ? "" : ", ") + n;
        throw sdk::Error(CC_ERR_NOT_FOUND, "CA '" + name_ + "' has no profile '" + profile_name + "' (profiles: " + names + ")");
    }
    const Profile& profile = it->second;

    crypto::Request csr;
    try {
        csr = crypto::load_csr(csr_pem);
    } catch (const std::exception& e) {
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, std::string("csr_pem: ") + e.what());
    }
    EVP_PKEY* public_key = X509_REQ_get0_pubkey(csr.get());
    if (!public_key || X509_REQ_verify(csr.get(), public_key) != 1) {
        ERR_clear_error();
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "the CSR's signature does not verify");
    }

    // Subject and SANs, read from the CSR, go into DigiCert's attributes.
    const X509_NAME* subject = X509_REQ_get_subject_name(csr.get());
    json::object subj;
    const std::string cn = name_entry(subject, NID_commonName);
    if (!cn.empty()) subj["common_name"] = cn;
    if (auto o = name_entry(subject, NID_organizationName); !o.empty()) subj["organization_name"] = o;
    if (auto ou = name_entries(subject, NID_organizationalUnitName); !ou.empty()) subj["organization_units"] = ou;
    if (auto c = name_entry(subject, NID_countryName); !c.empty()) subj["country"] = c;
    if (auto st = name_entry(subject, NID_stateOrProvinceName); !st.empty()) subj["state"] = st;
    if (auto l = name_entry(subject, NID_localityName); !l.empty()) subj["locality"] = l;
    const std::string subject_email = name_entry(subject, NID_pkcs9_emailAddress);
    if (!subject_email.empty()) subj["email"] = subject_email;

    STACK_OF(X509_EXTENSION)* exts = X509_REQ_get_extensions(csr.get());
    std::vector<crypto::SubjectAltName> sans;
    try {
        sans = crypto::read_sans(exts);
    } catch (const std::exception& e) {
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, std::string("the CSR's subjectAltName: ") + e.what());
    }
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    json::array emails, dns, upns, uris, ips;
    for (const auto& s : sans) {
        if (s.type == "email")
            emails.emplace_back(json::string(s.value));
        else if (s.type == "dns")
            dns.emplace_back(json::string(s.value));
        else if (s.type == "upn")
            upns.emplace_back(json::string(s.value));
        else if (s.type == "uri")
            uris.emplace_back(json::string(s.value));
        else if (s.type == "ip")
            ips.emplace_back(json::string(s.value));
    }
    json::object san;
    if (!emails.empty()) san["emails"] = emails;
    if (!dns.empty()) san["dns_names"] = dns;
    if (!upns.empty()) san["user_principal_names"] = upns;
    if (!uris.empty()) san["uris"] = uris;
    if (!ips.empty()) san["ip_addresses"] = ips;

    std::string seat;
    if (profile.seat_field == "common_name")
        seat = cn;
    else if (profile.seat_field == "email")
        seat = !emails.empty() ? std::string(emails[0].as_string()) : subject_email;
    else if (!upns.empty())
        seat = std::string(upns[0].as_string());
    if (seat.empty())
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "the CSR has no " +
                                                      std::string(profile.seat_field == "common_name" ? "common name"
                                                                  : profile.seat_field == "email"     ? "email address"
                                                                                                      : "UPN") +
                                                      " to use as the DigiCert seat id (ca." + name_ + ".profiles." +
                                                      profile.name + ".seat_field = \"" + profile.seat_field + "\")");

    json::object body{{"profile", json::object{{"id", profile.profile_id}}},
                      {"seat", json::object{{"seat_id", seat}}},
                      {"csr", csr_pem},
                      {"delivery_format", "x509"},
                      {"include_ca_chain", profile.include_ca_chain}};
    if (profile.validity_days > 0) body["validity"] = json::object{{"unit", "days"}, {"duration", profile.validity_days}};
    json::object attributes{{"subject", subj}};
    if (!san.empty()) attributes["extensions"] = json::object{{"san", san}};
    body["attributes"] = attributes;

    if (str(req, "requester") == "pkcs")
        host_.log(CC_EV_PkcsDigiCertRequest, CC_LEVEL_INFO,
                  "PKCS request sent to DigiCert ONE (CA '" + name_ + "', profile " + profile.profile_id + ", seat " + seat + ")",
                  request_id,
                  json::serialize(json::object{{"ca", name_}, {"profile_id", profile.profile_id}, {"seat_id", seat}}));

    const http::Response response = call("POST", "/mpki/api/v1/certificate", json::serialize(body), request_id);
    if (response.status != 200 && response.status != 201) fail(response, "the certificate request", request_id);
    const json::object a = parse_object(response, "the certificate request", request_id);
    const std::string public_pem = crypto::public_key_pem(public_key);
    if (a.contains("certificate")) return finish_issued(a, request_id, profile.name, "", public_pem);

    // Held for approval: DigiCert answers a request id (and a pending status) instead.
    const std::string dc_request_id = str(a, "request_id", str(a, "id"));
    const std::string status = lower(str(a, "status"));
    if (dc_request_id.empty() || (!status.empty() && status.rfind("pending", 0) != 0 && status != "approved"))
        unreadable("HTTP " + std::to_string(response.status) +
                       " to the certificate request has neither a certificate nor a pending request_id (status '" +
                       printable(status, 60) + "')",
                   request_id);
    RequestRecord r;
    r.request_id = request_id.empty() ? "dc:" + dc_request_id : request_id;
    r.profile = profile.name;
    r.dc_request_id = dc_request_id;
    r.status = "pending";
    r.message = public_pem;  // while pending: the key the certificate must carry
    store_->put(r);
    host_.log(CC_EV_CaRequestPending, CC_LEVEL_INFO,
              "DigiCert ONE holds request " + dc_request_id + " for approval (CA '" + name_ + "')", request_id,
              json::serialize(json::object{{"ca", name_}, {"request_id", request_id}, {"ca_request_id", dc_request_id}}));
    throw sdk::Error(CC_ERR_PENDING, "pending approval at CA '" + name_ + "' (DigiCert ONE request id " + dc_request_id + ")");
}

std::string DigiCertCa::pickup(RequestRecord r) {
    const http::Response response =
        call("POST", "/mpki/api/v1/certificate-pickup/" + http::url_escape(r.dc_request_id), "{}", r.request_id);
    if (response.status != 200 && response.status != 201) fail(response, "picking up request " + r.dc_request_id, r.request_id);
    const json::object a = parse_object(response, "the pickup of request " + r.dc_request_id, r.request_id);
    const std::string status = lower(str(a, "status"));
    if (a.contains("certificate")) return finish_issued(a, r.request_id, r.profile, r.dc_request_id, r.message);
    if (status.rfind("pending", 0) == 0 || status == "approved" || status == "processing") {
        host_.log(
            CC_EV_CaRequestPending, CC_LEVEL_INFO,
            "DigiCert ONE still holds request " + r.dc_request_id + " (CA '" + name_ + "', status " + printable(status, 40) + ")",
            r.request_id,
            json::serialize(json::object{{"ca", name_}, {"request_id", r.request_id}, {"ca_request_id", r.dc_request_id}}));
        throw sdk::Error(CC_ERR_PENDING,
                         "pending approval at CA '" + name_ + "' (DigiCert ONE request id " + r.dc_request_id + ")");
    }
    if (status == "rejected" || status == "denied" || status == "declined" || status == "canceled" || status == "cancelled") {
        std::string why = printable(str(a, "reason", str(a, "message", str(a, "comment"))));
        if (why.empty()) why = "status " + status;
        r.status = "denied";
        r.message = why;
        store_->put(r);
        host_.log(CC_EV_CaRequestDenied, CC_LEVEL_WARNING,
                  "DigiCert ONE rejected request " + r.dc_request_id + " (CA '" + name_ + "'): " + why, r.request_id,
                  json::serialize(json::object{{"ca", name_}, {"request_id", r.request_id}, {"ca_request_id", r.dc_request_id}}));
        throw sdk::Error(CC_ERR_DENIED, where() + " rejected request " + r.dc_request_id + ": " + why);
    }
    unreadable("the pickup of request " + r.dc_request_id + " answered an unknown status '" + printable(status, 60) +
                   "' without a certificate",
               r.request_id);
}

// ---- revoke ---------------------------------------------------------------------------------

std::string DigiCertCa::revoke(const std::string& request_json) {
    std::error_code ec;
    const json::value parsed = json::parse(request_json, ec);
    if (ec || !parsed.is_object()) throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "revoke request is not a JSON object");
    const json::object& req = parsed.get_object();
    if (req.contains("batch"))
        throw sdk::Error(CC_ERR_NOT_SUPPORTED,
                         "CA '" + name_ + "' revokes one certificate per call (DigiCert ONE has no batch revoke)");
    const std::string request_id = str(req, "request_id");
    const std::string serial = canonical_serial(str(req, "serial"));
    const std::string reason = str(req, "reason", "unspecified");
    if (reason == "removeFromCRL")
        throw sdk::Error(CC_ERR_NOT_SUPPORTED, "removeFromCRL: resume a held certificate in DigiCert ONE instead");
    const auto mapped = reasons().find(reason);
    if (mapped == reasons().end())
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT,
                         "unknown revocation reason '" + printable(reason, 60) +
                             "' (expected unspecified, keyCompromise, cACompromise, affiliationChanged, superseded, "
                             "cessationOfOperation, certificateHold, privilegeWithdrawn or aACompromise)");
    const auto known = store_->find_serial(serial);
    // A serial is unique per issuer: refuse one named with another issuer than this CA's.
    if (const std::string issuer = str(req, "issuer"); !issuer.empty()) {
        std::string issuer_of_known;
        if (known) {
            crypto::Cert c = crypto::load_certificate(known->certificate_pem);
            issuer_of_known = crypto::name_string(X509_get_issuer_name(c.get()));
        } else if (!chain_pem_.empty()) {
            crypto::Cert c = crypto::load_certificate(chain_pem_);
            issuer_of_known = crypto::name_string(X509_get_subject_name(c.get()));
        }
        if (!issuer_of_known.empty()) {
            bool same = false;
            try {
                same = X509_NAME_cmp(crypto::parse_name(issuer).get(), crypto::parse_name(issuer_of_known).get()) == 0;
            } catch (const std::exception& e) {
                throw sdk::Error(CC_ERR_INVALID_ARGUMENT, std::string("issuer: ") + e.what());
            }
            if (!same)
                throw sdk::Error(CC_ERR_NOT_FOUND, "CA '" + name_ + "' issues as '" + issuer_of_known + "', not '" +
                                                       printable(issuer, 200) + "' named in the request");
        }
    }
    const std::string dc_serial = known ? known->dc_serial : serial;
    host_.log(CC_EV_RevokeDigicertRequest, CC_LEVEL_INFO,
              "revocation of " + serial + " (" + mapped->second + ") forwarded to DigiCert ONE (CA '" + name_ + "')", request_id,
              json::serialize(json::object{{"ca", name_}, {"serial", serial}, {"reason", mapped->second}}));
    const http::Response response = call("PUT", "/mpki/api/v1/certificate/" + http::url_escape(dc_serial) + "/revoke",
                                         json::serialize(json::object{{"revocation_reason", mapped->second}}), request_id);
    const std::string when = sdk::utc_iso8601(std::chrono::system_clock::now());
    if (response.status == 204 || response.status == 200)
        return json::serialize(json::object{
            {"serial", serial}, {"status", "revoked"}, {"reason", reason}, {"revoked_at", when}, {"already_revoked", false}});
    if (response.status == 404) fail(response, "revoking " + serial, request_id);
    if (response.status == 400 || response.status == 409 || response.status == 422) {
        // Already revoked? DigiCert refuses a second revocation; its lookup says how it stands.
        const http::Response lookup = call("GET", "/mpki/api/v1/certificate/" + http::url_escape(dc_serial), "", request_id);
        if (lookup.status == 200) {
            const json::object details = parse_object(lookup, "the lookup of " + serial, request_id);
            if (lower(str(details, "status")) == "revoked") {
                std::string first_reason = "unspecified", first_time;
                if (const auto* rv = details.if_contains("revocation"); rv && rv->is_object()) {
                    first_reason = rfc5280_reason(str(rv->get_object(), "reason"));
                    first_time = printable(str(rv->get_object(), "revocation_date"), 40);
                }
                return json::serialize(json::object{{"serial", serial},
                                                    {"status", "revoked"},
                                                    {"reason", first_reason},
                                                    {"revoked_at", first_time},
                                                    {"already_revoked", true}});
            }
        }
    }
    fail(response, "revoking " + serial, request_id);
}

// ---- query and describe ---------------------------------------------------------------------

std::string DigiCertCa::certificate(const std::string& serial_text) {
    const std::string serial = canonical_serial(serial_text);
    const auto known = store_->find_serial(serial);
    const std::string dc_serial = known ? known->dc_serial : serial;
    const http::Response response = call("GET", "/mpki/api/v1/certificate/" + http::url_escape(dc_serial), "", "");
    if (response.status != 200) fail(response, "looking up " + serial, "");
    const json::object d = parse_object(response, "the lookup of " + serial, "");
    crypto::Cert cert;
    try {
        cert = certificate_from(str(d, "certificate"));
    } catch (const std::exception& e) {
        unreadable("the lookup of " + serial + " has no readable certificate: " + printable(e.what()), "");
    }
    const std::string status = lower(str(d, "status"));
    json::object out{{"serial", crypto::serial_hex(cert.get())},
                     {"certificate_pem", crypto::certificate_pem(cert.get())},
                     {"status", status == "issued"      ? "valid"
                                : status == "suspended" ? "revoked"
                                                        : status}};
    if (status == "revoked" || status == "suspended") {
        const auto* rv = d.if_contains("revocation");
        const json::object none;
        const json::object& r = rv && rv->is_object() ? rv->get_object() : none;
        out["revocation_reason"] = status == "suspended" ? "certificateHold" : rfc5280_reason(str(r, "reason"));
        out["revoked_at"] = printable(str(r, "revocation_date"), 40);
    }
    return json::serialize(out);
}

std::string DigiCertCa::crl() {
    std::string url = crl_url_;
    if (url.empty())
        if (auto latest = store_->latest_issued()) {
            crypto::Cert c = crypto::load_certificate(latest->certificate_pem);
            url = crl_distribution_point(c.get());
        }
    if (url.empty())
        throw sdk::Error(CC_ERR_NOT_FOUND, "CA '" + name_ +
                                               "' knows no CRL URL yet: set crl_url, or issue a certificate (its CRL "
                                               "distribution point is used)");
    const http::Response response = call("GET", url, "", "");
    if (response.status != 200) fail(response, "fetching the CRL " + url, "");
    std::string der = response.body;
    if (der.find("-----BEGIN X509 CRL-----") != std::string::npos) {
        crypto::Bio bio(BIO_new_mem_buf(der.data(), static_cast<int>(der.size())));
        X509_CRL* pem = PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr);
        if (!pem) unreadable("the CRL at " + url + " is not a readable PEM CRL", "");
        unsigned char* out = nullptr;
        const int n = i2d_X509_CRL(pem, &out);
        der.assign(reinterpret_cast<char*>(out), static_cast<std::size_t>(std::max(n, 0)));
        OPENSSL_free(out);
        X509_CRL_free(pem);
    }
    const unsigned char* p = reinterpret_cast<const unsigned char*>(der.data());
    X509_CRL* parsed = d2i_X509_CRL(nullptr, &p, static_cast<long>(der.size()));
    if (!parsed) {
        ERR_clear_error();
        unreadable("the CRL at " + url + " is not a DER or PEM CRL (" + std::to_string(response.body.size()) + " bytes)", "");
    }
    X509_CRL_free(parsed);
    return json::serialize(json::object{{"crl_der", crypto::base64_encode(der)}, {"url", url}});
}

std::string DigiCertCa::health() {
    // A cheap authenticated call: the first profile's details (also proves the profile exists).
    const Profile& p = profiles_.begin()->second;
    try {
        const http::Response r = call("GET", "/mpki/api/v1/profile/" + http::url_escape(p.profile_id), "", "");
        if (r.status == 200)
            return json::serialize(json::object{
                {"healthy", true}, {"detail", "DigiCert ONE at " + host_name_ + " answers; profile " + p.profile_id + " found"}});
        const std::string detail = error_text(r.body);
        return json::serialize(
            json::object{{"healthy", false},
                         {"detail", "DigiCert ONE at " + host_name_ + " answered HTTP " + std::to_string(r.status) +
                                        " for profile " + p.profile_id + (detail.empty() ? "" : ": " + detail) +
                                        (r.status == 401 || r.status == 403 ? " (" + account() + " refused)" : "")}});
    } catch (const std::exception& e) {
        return json::serialize(json::object{{"healthy", false}, {"detail", e.what()}});
    }
}

std::string DigiCertCa::query(const std::string& request_json) {
    std::error_code ec;
    const json::value parsed = json::parse(request_json, ec);
    if (ec || !parsed.is_object()) throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "query is not a JSON object");
    const json::object& req = parsed.get_object();
    const std::string op = str(req, "op");
    if (op == "certificate") return certificate(str(req, "serial"));
    if (op == "crl") {
        // The issuing CA's CRL only: DigiCert publishes its roots' CRLs itself.
        if (const std::string level = str(req, "level", "issuing"); level != "issuing")
            throw sdk::Error(CC_ERR_NOT_FOUND, "CA '" + name_ +
                                                   "' serves only its issuing CA's CRL (DigiCert ONE publishes the " +
                                                   printable(level, 20) + " CRL at its own distribution point)");
        return crl();
    }
    if (op == "health") return health();
    throw sdk::Error(CC_ERR_NOT_SUPPORTED,
                     "CA '" + name_ + "' answers no query '" + printable(op, 60) + "' (known: certificate, crl, health)");
}

std::string DigiCertCa::describe() {
    std::string chain = chain_pem_;
    if (chain.empty())
        if (auto latest = store_->latest_issued()) chain = latest->chain_pem;
    return json::serialize(json::object{{"name", name_},
                                        {"chain_pem", chain},
                                        {"url", url_},
                                        {"api", "DigiCert ONE Enterprise PKI Manager REST (mpki/api/v1)"},
                                        {"crl_url", crl_url_}});
}

}  // namespace certconn::ca_digicert
