#include "AdcsCa.hpp"

#include "Markup.hpp"

#include <certconn/crypto.hpp>
#include <certconn/time.hpp>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>

namespace certconn::ca_adcs {

namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

// Real AD CS Web Enrollment serves only browsers it recognises (certsrv checks the agent).
constexpr const char* kBrowserAgent = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; Trident/7.0; rv:11.0) like Gecko";

constexpr const char* kNsSoap = "http://www.w3.org/2003/05/soap-envelope";
constexpr const char* kNsAddressing = "http://www.w3.org/2005/08/addressing";
constexpr const char* kNsTrust = "http://docs.oasis-open.org/ws-sx/ws-trust/200512";
constexpr const char* kNsSecext = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
constexpr const char* kNsUtility = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
constexpr const char* kNsEnrollment = "http://schemas.microsoft.com/windows/pki/2009/01/enrollment";
constexpr const char* kNsAuthorization = "http://schemas.xmlsoap.org/ws/2006/12/authorization";
constexpr const char* kTokenX509 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3";
constexpr const char* kBase64Binary =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#base64binary";

constexpr const char* kWsmanShell = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell";
constexpr const char* kWsmanCmd = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd";

std::string str(const json::object& o, const char* key, std::string fallback = {}) {
    const auto* v = o.if_contains(key);
    return v && v->is_string() ? std::string(v->as_string()) : std::move(fallback);
}

/// Hex serial as AD CS and the SDK print it: upper case, no separators, no leading zeros.
std::string canonical_serial(const std::string& text) {
    std::string hex;
    for (char c : text) {
        if (c == ':' || c == ' ') continue;
        if (!std::isxdigit(static_cast<unsigned char>(c)))
            throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "serial '" + text.substr(0, 80) + "': expected hexadecimal digits");
        hex += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    const auto nz = hex.find_first_not_of('0');
    hex = nz == std::string::npos ? std::string() : hex.substr(nz);
    if (hex.empty() || hex.size() > 64) throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "serial: expected 1 to 64 hex digits");
    return hex;
}

/// RFC 5280 reason name -> the code certutil -revoke takes (MS-CSRA RevokeCertificate: 0-6).
int reason_code(const std::string& reason) {
    static const std::pair<const char*, int> known[] = {
        {"unspecified", 0}, {"keyCompromise", 1},        {"cACompromise", 2},   {"affiliationChanged", 3},
        {"superseded", 4},  {"cessationOfOperation", 5}, {"certificateHold", 6}};
    for (const auto& [n, c] : known)
        if (reason == n) return c;
    if (reason == "privilegeWithdrawn" || reason == "aACompromise" || reason == "removeFromCRL")
        throw sdk::Error(CC_ERR_NOT_SUPPORTED, "reason '" + reason +
                                                   "': AD CS revokes only with reasons unspecified, keyCompromise, "
                                                   "cACompromise, affiliationChanged, superseded, cessationOfOperation, "
                                                   "certificateHold");
    throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "reason '" + reason + "': expected an RFC 5280 reason name");
}

bool is_https(const std::string& url) {
    return url.rfind("https://", 0) == 0;
}

std::string host_of(const std::string& url) {
    const auto start = url.find("://");
    if (start == std::string::npos) return url;
    const auto end = url.find('/', start + 3);
    return url.substr(start + 3, end == std::string::npos ? std::string::npos : end - start - 3);
}

/// Every certificate of a PKCS#7 SignedData (DER; also accepts a PEM/base64 armoured one).
std::vector<crypto::Cert> pkcs7_certificates(std::string der) {
    if (der.rfind("-----BEGIN", 0) == 0) {
        std::string b64;
        std::size_t line_start = 0;
        while (line_start < der.size()) {
            auto eol = der.find('\n', line_start);
            if (eol == std::string::npos) eol = der.size();
            std::string line = der.substr(line_start, eol - line_start);
            if (!line.empty() && line.back() == '\r') line.pop_back();
            if (line.rfind("-----", 0) != 0) b64 += line;
            line_start = eol + 1;
        }
        der = crypto::base64_decode(b64);
    }
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    std::unique_ptr<PKCS7, crypto::Deleter<PKCS7_free>> p7(d2i_PKCS7(nullptr, &p, static_cast<long>(der.size())));
    if (!p7 || !PKCS7_type_is_signed(p7.get()) || !p7->d.sign) {
        ERR_clear_error();
        throw std::invalid_argument("not a PKCS#7 certificate bundle");
    }
    std::vector<crypto::Cert> out;
    STACK_OF(X509)* certs = p7->d.sign->cert;
    for (int i = 0; certs && i < sk_X509_num(certs) && i < 32; ++i)
        out.emplace_back(X509_dup(sk_X509_value(certs, i)));
    return out;
}

bool self_signed(X509* c) {
    return X509_check_issued(c, c) == X509_V_OK;
}

/// The CA certificates in chain order, issuing CA first: the issuer of `leaf` (or, without a
/// leaf, the CA that issued none of the others), then its issuers up to the root.
std::string ordered_chain_pem(std::vector<crypto::Cert>& certs, X509* leaf) {
    std::vector<X509*> cas;
    for (auto& c : certs)
        if (!leaf || X509_cmp(c.get(), leaf) != 0) cas.push_back(c.get());
    X509* cur = nullptr;
    if (leaf) {
        for (X509* c : cas)
            if (X509_check_issued(c, leaf) == X509_V_OK) cur = c;
    } else {
        for (X509* c : cas) {
            bool issues_other = false;
            for (X509* d : cas)
                if (d != c && !self_signed(d) && X509_check_issued(c, d) == X509_V_OK) issues_other = true;
            if (!issues_other) cur = c;
        }
    }
    std::string pem;
    for (int depth = 0; cur && depth < 10; ++depth) {
        pem += crypto::certificate_pem(cur);
        if (self_signed(cur)) break;
        X509* next = nullptr;
        for (X509* c : cas)
            if (c != cur && X509_check_issued(c, cur) == X509_V_OK) next = c;
        cur = next;
    }
    ERR_clear_error();
    return pem;
}

/// The first URI of the certificate's CRL distribution points, or empty.
std::string cdp_of(X509* cert) {
    std::string url;
    auto* points = static_cast<CRL_DIST_POINTS*>(X509_get_ext_d2i(cert, NID_crl_distribution_points, nullptr, nullptr));
    for (int i = 0; points && url.empty() && i < sk_DIST_POINT_num(points); ++i) {
        const DIST_POINT* dp = sk_DIST_POINT_value(points, i);
        if (!dp->distpoint || dp->distpoint->type != 0) continue;
        const GENERAL_NAMES* names = dp->distpoint->name.fullname;
        for (int k = 0; url.empty() && k < sk_GENERAL_NAME_num(names); ++k) {
            const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, k);
            if (n->type != GEN_URI) continue;
            const ASN1_IA5STRING* uri = n->d.uniformResourceIdentifier;
            std::string u(reinterpret_cast<const char*>(uri->data), static_cast<std::size_t>(uri->length));
            if (u.rfind("http://", 0) == 0 || u.rfind("https://", 0) == 0) url = u;  // ldap:// needs a directory
        }
    }
    CRL_DIST_POINTS_free(points);
    return url;
}

/// "dns=a.example&email=b@example" for AD CS's san: request attribute (EDITF_ATTRIBUTESUBJECTALTNAME2).
std::string san_attribute_of(X509_REQ* csr) {
    STACK_OF(X509_EXTENSION)* exts = X509_REQ_get_extensions(csr);
    const auto sans = crypto::read_sans(exts);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    std::string out;
    for (const auto& s : sans) {
        std::string kind = s.type == "dns"     ? "dns"
                           : s.type == "email" ? "email"
                           : s.type == "uri"   ? "url"
                           : s.type == "upn"   ? "upn"
                           : s.type == "ip"    ? "ipaddress"
                                               : "";
        if (kind.empty()) continue;
        out += (out.empty() ? "" : "&") + kind + "=" + s.value;
    }
    return out;
}

}  // namespace

// ---- configuration -------------------------------------------------------------------------

AdcsCa::AdcsCa(std::string name, const json::object& config, const fs::path& directory, sdk::Host& host)
    : name_(std::move(name)), host_(host) {
    const std::string prefix = "ca." + name_ + ".";
    auto bad = [&](const std::string& key, const std::string& what) {
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, prefix + key + ": " + what);
    };
    url_ = str(config, "url");
    ces_url_ = str(config, "ces_url");
    while (!url_.empty() && url_.back() == '/')
        url_.pop_back();
    if (url_.empty() && ces_url_.empty()) bad("url", "expected the Web Enrollment URL (https://host/certsrv) or a ces_url");
    if (!url_.empty() && !is_https(url_)) bad("url", "expected an https:// URL (credentials must not travel in clear)");
    if (!ces_url_.empty() && !is_https(ces_url_)) bad("ces_url", "expected an https:// URL of the CES endpoint");
    ca_config_ = str(config, "ca_config");
    if (ca_config_.find('\\') == std::string::npos || ca_config_.front() == '\\' || ca_config_.back() == '\\')
        bad("ca_config", "expected 'host\\CA name' (the CA's DNS host name, a backslash, the CA's common name)");
    if (ca_config_.find_first_of("\"&|<>^%\r\n") != std::string::npos)
        bad("ca_config", "must not contain quotes or the characters & | < > ^ %");
    crl_url_ = str(config, "crl_url");
    if (!crl_url_.empty() && crl_url_.rfind("http://", 0) != 0 && !is_https(crl_url_))
        bad("crl_url", "expected an http:// or https:// URL");

    if (const auto* profiles = config.if_contains("profiles"); profiles && profiles->is_object())
        for (const auto& [pname, value] : profiles->as_object()) {
            const std::string key = "profiles." + std::string(pname);
            if (!value.is_object()) bad(key, "expected a table");
            const auto& p = value.as_object();
            Profile profile{std::string(pname), str(p, "template"), {}, false};
            if (profile.template_name.empty()) bad(key + ".template", "expected the AD CS certificate template name");
            if (const auto* a = p.if_contains("attributes"); a && a->is_array())
                for (const auto& v : a->as_array()) {
                    const std::string attr = v.is_string() ? std::string(v.as_string()) : "";
                    if (attr.find(':') == std::string::npos || attr.find_first_of("\r\n") != std::string::npos)
                        bad(key + ".attributes", "expected \"Name:Value\" request attributes, one per entry");
                    profile.attributes.push_back(attr);
                }
            if (const auto* s = p.if_contains("san_attribute"); s && s->is_bool()) profile.san_attribute = s->as_bool();
            profiles_.emplace(profile.name, std::move(profile));
        }
    if (profiles_.empty()) bad("profiles", "expected at least one [ca." + name_ + ".profiles.<name>] table with a template");

    http::Settings settings = http::settings_from_config(config, "ca." + name_);
    settings.user_agent = str(config, "user_agent", kBrowserAgent);
    client_ = std::make_unique<http::Client>(std::move(settings));

    if (const auto* rev = config.if_contains("revocation"); rev && rev->is_object()) {
        json::object section = rev->as_object();
        winrm_url_ = str(section, "winrm_url");
        if (!is_https(winrm_url_))
            bad("revocation.winrm_url", "expected the WinRM HTTPS listener, e.g. https://ca01.corp.example:5986/wsman");
        section.erase("winrm_url");
        if (!section.contains("ca_file") && config.contains("ca_file")) section["ca_file"] = config.at("ca_file");
        if (!section.contains("auth")) section["auth"] = "ntlm";
        http::Settings ws = http::settings_from_config(section, "ca." + name_ + ".revocation");
        if (ws.username.empty()) bad("revocation.username", "expected the account holding Issue and Manage Certificates");
        if (ws.auth != http::Auth::basic && ws.auth != http::Auth::ntlm && ws.auth != http::Auth::negotiate)
            bad("revocation.auth", "expected basic, ntlm or negotiate");
        ws.user_agent = "certconnector (WinRM)";
        winrm_ = std::make_unique<http::Client>(std::move(ws));
    }

    fs::create_directories(directory);
    ::chmod(directory.c_str(), 0700);
    store_ = std::make_unique<RequestStore>(directory / "requests.db");
    chain_file_ = directory / "chain.pem";
    if (const std::string file = str(config, "ca_chain_file"); !file.empty()) {
        try {
            auto certs = crypto::load_certificates(crypto::read_file(file, "CA chain file"));
            if (certs.empty()) bad("ca_chain_file", "'" + file + "' holds no PEM certificate");
            chain_pem_ = ordered_chain_pem(certs, nullptr);
        } catch (const sdk::Error&) {
            throw;
        } catch (const std::exception& e) {
            bad("ca_chain_file", e.what());
        }
    } else if (fs::exists(chain_file_)) {
        try {
            chain_pem_ = crypto::read_file(chain_file_);
        } catch (const std::exception&) {
            chain_pem_.clear();  // fetched again when needed
        }
    }
}

std::string AdcsCa::account() const {
    const auto& u = client_->settings().username;
    return u.empty() ? "(no account: auth = none or a client certificate)" : u;
}

std::string AdcsCa::product_request(const std::string& ca_request_id) const {
    return "AD CS request id " + ca_request_id;
}

// ---- HTTP, errors and events -------------------------------------------------------------

http::Response AdcsCa::perform(const http::Request& request, const std::string& request_id, const http::Client& client,
                               const std::string& what) {
    http::Response response;
    try {
        response = client.perform(request);
    } catch (const sdk::Error& e) {
        const std::string message = "CA '" + name_ + "': " + what + ": " + e.what();
        if (e.retryable())
            host_.log(CC_EV_CaUnreachable, CC_LEVEL_WARNING, message, request_id,
                      json::serialize(json::object{{"ca", name_}, {"host", host_of(request.url)}, {"error", e.what()}}));
        throw sdk::Error(e.code(), message);
    }
    const long s = response.status;
    if (s == 401 || s == 403) {
        const std::string& user = &client == winrm_.get() ? client.settings().username : account();
        throw sdk::Error(CC_ERR_DENIED, "CA '" + name_ + "': " + what + ": " + host_of(request.url) + " refused the account '" +
                                            user + "' (HTTP " + std::to_string(s) +
                                            "); check the username and password file (or its rights on the CA)");
    }
    const bool soap_fault = s == 500 && response.header("Content-Type").value_or("").find("soap+xml") != std::string::npos;
    if ((s >= 500 && !soap_fault) || s == 408 || s == 429) {
        const cc_status code = http::status_of_http(s);
        std::string message = "CA '" + name_ + "': " + what + ": " + host_of(request.url) + " answered HTTP " + std::to_string(s);
        if (auto after = response.retry_after()) message += " (retry after " + std::to_string(after->count()) + " s)";
        host_.log(CC_EV_CaUnreachable, CC_LEVEL_WARNING, message, request_id,
                  json::serialize(json::object{{"ca", name_}, {"host", host_of(request.url)}, {"http_status", s}}));
        throw sdk::Error(code, message);
    }
    if (s == 404)
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "CA '" + name_ + "': " + what + ": " + request.url +
                                                      " does not exist (HTTP 404); check the configured URL");
    if (s != 200 && !soap_fault)
        unreadable(request_id, what + ": " + host_of(request.url) + " answered HTTP " + std::to_string(s));
    return response;
}

void AdcsCa::unreadable(const std::string& request_id, const std::string& message) {
    const std::string text = "CA '" + name_ + "': " + message;
    host_.log(CC_EV_CaUnreachable, CC_LEVEL_WARNING, text, request_id,
              json::serialize(json::object{{"ca", name_}, {"error", message}}));
    throw sdk::Error(CC_ERR_UNAVAILABLE, text);
}

void AdcsCa::pending(const std::string& request_id, const std::string& ca_request_id) {
    host_.log(CC_EV_CaRequestPending, CC_LEVEL_INFO,
              "CA '" + name_ + "' holds the request for approval (" + product_request(ca_request_id) + ")", request_id,
              json::serialize(json::object{{"ca", name_}, {"request_id", request_id}, {"ca_request_id", ca_request_id}}));
    throw sdk::Error(CC_ERR_PENDING, "pending approval at CA '" + name_ + "' (" + product_request(ca_request_id) + ")");
}

void AdcsCa::denied(const std::string& request_id, const std::string& ca_request_id, const std::string& message) {
    // A request AD CS already holds (pending, or submitted) stays denied: later calls answer
    // from the table. A fresh submission's denial is not kept, so a retry after the operator
    // fixed the template (or its permissions) submits again.
    if (auto r = store_->find(request_id); r && r->status != "denied" && r->status != "issued") {
        r->status = "denied";
        r->message = message;
        store_->put(*r);
    }
    host_.log(CC_EV_CaRequestDenied, CC_LEVEL_WARNING,
              "CA '" + name_ + "' denied the request" +
                  (ca_request_id.empty() ? "" : " (" + product_request(ca_request_id) + ")") + ": " + message,
              request_id,
              json::serialize(json::object{
                  {"ca", name_}, {"request_id", request_id}, {"ca_request_id", ca_request_id}, {"message", message}}));
    throw sdk::Error(CC_ERR_DENIED, "CA '" + name_ + "' denied the request" +
                                        (ca_request_id.empty() ? "" : " (" + product_request(ca_request_id) + ")") + ": " +
                                        message);
}

std::string AdcsCa::answer(const RequestRecord& r, bool already_issued) const {
    return json::serialize(json::object{{"serial", crypto::serial_hex(crypto::load_certificate(r.certificate_pem).get())},
                                        {"certificate_pem", r.certificate_pem},
                                        {"chain_pem", r.chain_pem},
                                        {"subject", r.subject},
                                        {"not_before", r.not_before},
                                        {"not_after", r.not_after},
                                        {"profile", r.profile},
                                        {"ca_request_id", r.ca_request_id},
                                        {"already_issued", already_issued}});
}

RequestRecord AdcsCa::record_issued(RequestRecord r, const Issued& issued) {
    crypto::Cert cert;
    try {
        cert = crypto::load_certificate(issued.certificate_pem);
    } catch (const std::exception& e) {
        unreadable(r.request_id, "the certificate of " + product_request(r.ca_request_id) + " is not readable: " + e.what());
    }
    r.status = "issued";
    r.message = "Issued";
    r.serial = canonical_serial(crypto::serial_hex(cert.get()));  // the table's key: no leading zeros
    r.certificate_pem = crypto::certificate_pem(cert.get());
    r.chain_pem = issued.chain_pem.empty() ? chain_pem(r.request_id) : issued.chain_pem;
    r.subject = crypto::name_string(X509_get_subject_name(cert.get()));
    r.not_before = crypto::time_iso8601(X509_get0_notBefore(cert.get()));
    r.not_after = crypto::time_iso8601(X509_get0_notAfter(cert.get()));
    store_->put(r);
    host_.log(CC_EV_CaRequestIssued, CC_LEVEL_INFO,
              "CA '" + name_ + "' issued certificate " + r.serial + " (" + product_request(r.ca_request_id) + ")", r.request_id,
              json::serialize(json::object{
                  {"ca", name_}, {"request_id", r.request_id}, {"ca_request_id", r.ca_request_id}, {"serial", r.serial}}));
    return r;
}

// ---- issue ---------------------------------------------------------------------------------

std::string AdcsCa::issue(const std::string& request_json) {
    std::error_code ec;
    const json::value parsed = json::parse(request_json, ec);
    if (ec || !parsed.is_object()) throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "issue request is not a JSON object");
    const json::object& req = parsed.get_object();
    const std::string csr_pem = str(req, "csr_pem");
    std::string request_id = str(req, "request_id");
    const std::string profile_name = str(req, "profile", "default");
    if (csr_pem.empty()) throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "issue request has no csr_pem");
    if (request_id.empty()) request_id = "adcs:" + crypto::uuid4();  // no idempotency asked for

    // One call per request id at a time, so a retry racing the first call never submits twice.
    std::shared_ptr<std::mutex> gate;
    {
        std::lock_guard lock(inflight_mutex_);
        gate = inflight_[request_id].lock();
        if (!gate) inflight_[request_id] = gate = std::make_shared<std::mutex>();
        if (inflight_.size() > 1024) std::erase_if(inflight_, [](const auto& kv) { return kv.second.expired(); });
    }
    std::lock_guard request_lock(*gate);

    if (auto r = store_->find(request_id)) {
        if (r->status == "issued") return answer(*r, true);
        if (r->status == "denied")
            throw sdk::Error(CC_ERR_DENIED,
                             "CA '" + name_ + "' denied the request (" + product_request(r->ca_request_id) + "): " + r->message);
        // Pending (or submitted, the answer lost): ask AD CS about the stored request id;
        // never submit again.
        const Issued issued =
            r->via == "wstep"
                ? wstep_call(
                      request_id, r->profile,
                      wstep_envelope(std::string("<wst:RequestSecurityToken xmlns:wst=\"") + kNsTrust + "\"><wst:TokenType>" +
                                     kTokenX509 +
                                     "</wst:TokenType><wst:RequestType>http://schemas.microsoft.com/windows/pki/"
                                     "2009/01/enrollment/QueryTokenStatus</wst:RequestType><enr:RequestID "
                                     "xmlns:enr=\"" +
                                     kNsEnrollment + "\">" + r->ca_request_id + "</enr:RequestID></wst:RequestSecurityToken>"),
                      r->ca_request_id)
                : certsrv_fetch(request_id, r->ca_request_id);
        return answer(record_issued(*r, issued), false);
    }

    const auto profile = profiles_.find(profile_name);
    if (profile == profiles_.end()) {
        std::string names;
        for (const auto& [n, p] : profiles_)
            names += (names.empty() ? "" : ", ") + n;
        throw sdk::Error(CC_ERR_NOT_FOUND, "CA '" + name_ + "' has no profile '" + profile_name + "' (profiles: " + names + ")");
    }
    crypto::Request csr;
    try {
        csr = crypto::load_csr(csr_pem);
    } catch (const std::exception& e) {
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, std::string("csr_pem: ") + e.what());
    }

    RequestRecord record;
    record.request_id = request_id;
    record.profile = profile->second.name;
    Issued issued;
    if (!ces_url_.empty()) {
        record.via = "wstep";
        const Profile& p = profile->second;
        std::string context = std::string("<ac:AdditionalContext xmlns:ac=\"") + kNsAuthorization +
                              "\"><ac:ContextItem Name=\"CertificateTemplate\"><ac:Value>" + xml_escape(p.template_name) +
                              "</ac:Value></ac:ContextItem>";
        for (const auto& attr : p.attributes) {
            const auto colon = attr.find(':');
            context += "<ac:ContextItem Name=\"" + xml_escape(attr.substr(0, colon)) + "\"><ac:Value>" +
                       xml_escape(attr.substr(colon + 1)) + "</ac:Value></ac:ContextItem>";
        }
        if (p.san_attribute)
            if (const std::string san = san_attribute_of(csr.get()); !san.empty())
                context += "<ac:ContextItem Name=\"san\"><ac:Value>" + xml_escape(san) + "</ac:Value></ac:ContextItem>";
        context += "</ac:AdditionalContext>";
        unsigned char* der = nullptr;
        const int len = i2d_X509_REQ(csr.get(), &der);
        const std::string csr_der(reinterpret_cast<char*>(der), static_cast<std::size_t>(std::max(len, 0)));
        OPENSSL_free(der);
        const std::string rst = std::string("<wst:RequestSecurityToken xmlns:wst=\"") + kNsTrust +
                                "\" PreferredLanguage=\"en-US\"><wst:TokenType>" + kTokenX509 +
                                "</wst:TokenType><wst:RequestType>http://docs.oasis-open.org/ws-sx/ws-trust/200512/Issue"
                                "</wst:RequestType><wsse:BinarySecurityToken xmlns:wsse=\"" +
                                kNsSecext +
                                "\" ValueType=\"http://schemas.microsoft.com/windows/pki/2009/01/enrollment#PKCS10\" "
                                "EncodingType=\"" +
                                kBase64Binary + "\">" + crypto::base64_encode(csr_der) + "</wsse:BinarySecurityToken>" + context +
                                "</wst:RequestSecurityToken>";
        issued = wstep_call(request_id, p.name, wstep_envelope(rst), "");
    } else {
        record.via = "certsrv";
        issued = certsrv_submit(request_id, profile->second, csr_pem);
    }
    // The calls above store pending/denied dispositions themselves and only return issued ones.
    auto stored = store_->find(request_id);
    RequestRecord r = stored ? *stored : record;
    r.via = record.via;
    r.profile = record.profile;
    return answer(record_issued(r, issued), false);
}

// ---- Web Enrollment (certsrv) ---------------------------------------------------------------

AdcsCa::Issued AdcsCa::certsrv_submit(const std::string& request_id, const Profile& profile, const std::string& csr_pem) {
    std::string attributes = "CertificateTemplate:" + profile.template_name;
    for (const auto& a : profile.attributes)
        attributes += "\n" + a;
    if (profile.san_attribute) {
        crypto::Request csr = crypto::load_csr(csr_pem);
        if (const std::string san = san_attribute_of(csr.get()); !san.empty()) attributes += "\nsan:" + san;
    }
    http::Request request;
    request.method = "POST";
    request.url = url_ + "/certfnsh.asp";
    request.headers = {{"Content-Type", "application/x-www-form-urlencoded"}, {"Accept", "text/html, */*"}};
    request.body = http::form_encode({{"Mode", "newreq"},
                                      {"CertRequest", csr_pem},
                                      {"CertAttrib", attributes},
                                      {"TargetStoreFlags", "0"},
                                      {"SaveCert", "yes"},
                                      {"ThumbPrint", ""}});
    const http::Response response = perform(request, request_id, *client_, "submitting to certfnsh.asp");
    const Disposition d = read_certfnsh(response.body);
    RequestRecord record{request_id, d.request_id, "certsrv", profile.name, "", "", "", "", "", "", "", "", "", ""};
    switch (d.kind) {
        case Disposition::issued:
            record.status = "submitted";
            store_->put(record);  // the AD CS request id is known even if the fetch below fails
            return certsrv_fetch(request_id, d.request_id);
        case Disposition::pending:
            record.status = "pending";
            record.message = "Taken Under Submission";
            store_->put(record);
            pending(request_id, d.request_id);
        case Disposition::denied: denied(request_id, d.request_id, d.message);
        case Disposition::unreadable: break;
    }
    unreadable(request_id,
               "certfnsh.asp answered a page without a disposition (expected a certnew.cer?ReqID=<n>& link, "
               "'Your Request Id is <n>.' or 'The disposition message is \"...\"')");
}

AdcsCa::Issued AdcsCa::certsrv_fetch(const std::string& request_id, const std::string& ca_request_id) {
    http::Request request;
    request.url = url_ + "/certnew.cer?ReqID=" + ca_request_id + "&Enc=b64";
    const http::Response response = perform(request, request_id, *client_, "fetching certnew.cer");
    const std::string type = response.header("Content-Type").value_or("");
    if (type.find("application/pkix-cert") != std::string::npos) {
        try {
            std::string body = response.body;
            if (body.find("-----BEGIN CERTIFICATE-----") == std::string::npos)
                body = "-----BEGIN CERTIFICATE-----\n" + body + "\n-----END CERTIFICATE-----\n";
            return Issued{crypto::certificate_pem(crypto::load_certificate(body).get()), ""};
        } catch (const std::exception&) {
            unreadable(request_id,
                       "certnew.cer?ReqID=" + ca_request_id + " answered application/pkix-cert that is not a base64 certificate");
        }
    }
    const auto message = error_page_disposition(response.body);
    if (message && message->find("Taken Under Submission") != std::string::npos) {
        if (auto r = store_->find(request_id); !r || r->status != "pending") {
            RequestRecord p =
                r.value_or(RequestRecord{request_id, ca_request_id, "certsrv", "", "", "", "", "", "", "", "", "", "", ""});
            p.status = "pending";
            p.message = *message;
            store_->put(p);
        }
        pending(request_id, ca_request_id);
    }
    if (message) denied(request_id, ca_request_id, *message);
    unreadable(request_id, "certnew.cer?ReqID=" + ca_request_id +
                               " answered neither a certificate (application/pkix-cert) nor a certsrv page with a "
                               "disposition message");
}

std::string AdcsCa::chain_pem(const std::string& request_id) {
    std::lock_guard lock(chain_mutex_);
    if (!chain_pem_.empty()) return chain_pem_;
    if (url_.empty())
        throw sdk::Error(CC_ERR_UNAVAILABLE, "CA '" + name_ + "': no CA chain known yet; set ca_chain_file (CES only)");
    http::Request carc;
    carc.url = url_ + "/certcarc.asp";
    const auto page = perform(carc, request_id, *client_, "reading certcarc.asp");
    const auto renewals = read_renewals(page.body);
    if (!renewals) unreadable(request_id, "certcarc.asp answered a page without 'var nRenewals=<n>;'");
    http::Request p7b;
    p7b.url = url_ + "/certnew.p7b?ReqID=CACert&Renewal=" + std::to_string(*renewals) + "&Enc=bin";
    const auto bundle = perform(p7b, request_id, *client_, "fetching the CA chain (certnew.p7b)");
    std::vector<crypto::Cert> certs;
    try {
        certs = pkcs7_certificates(bundle.body);
    } catch (const std::exception& e) {
        unreadable(request_id, std::string("certnew.p7b?ReqID=CACert answered something else than a PKCS#7 chain: ") + e.what());
    }
    std::string pem = ordered_chain_pem(certs, nullptr);
    if (pem.empty()) unreadable(request_id, "certnew.p7b?ReqID=CACert holds no CA certificate");
    try {
        crypto::write_file_atomic(chain_file_, pem, 0644);
    } catch (const std::exception&) {
        // only a cache
    }
    chain_pem_ = pem;
    return chain_pem_;
}

// ---- MS-WSTEP (CES) -------------------------------------------------------------------------

std::string AdcsCa::wstep_envelope(const std::string& rst) const {
    std::string security;
    const auto& s = client_->settings();
    // The CES "UsernamePassword" endpoint authenticates the message (WS-Security UsernameToken
    // over TLS), not the HTTP request.
    if (!s.username.empty() && !s.password.empty() && s.auth != http::Auth::ntlm && s.auth != http::Auth::negotiate)
        security = std::string("<o:Security s:mustUnderstand=\"1\" xmlns:o=\"") + kNsSecext + "\"><o:UsernameToken u:Id=\"uuid-" +
                   crypto::uuid4() + "-1\" xmlns:u=\"" + kNsUtility + "\"><o:Username>" + xml_escape(s.username) +
                   "</o:Username><o:Password "
                   "Type=\"http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText\">" +
                   xml_escape(s.password.reveal()) + "</o:Password></o:UsernameToken></o:Security>";
    return std::string("<s:Envelope xmlns:s=\"") + kNsSoap + "\" xmlns:a=\"" + kNsAddressing +
           "\"><s:Header><a:Action s:mustUnderstand=\"1\">http://schemas.microsoft.com/windows/pki/2009/01/enrollment/RST/"
           "wstep</a:Action><a:MessageID>urn:uuid:" +
           crypto::uuid4() + "</a:MessageID><a:To s:mustUnderstand=\"1\">" + xml_escape(ces_url_) + "</a:To>" + security +
           "</s:Header><s:Body>" + rst + "</s:Body></s:Envelope>";
}

AdcsCa::Issued AdcsCa::wstep_call(const std::string& request_id, const std::string& profile, const std::string& body,
                                  const std::string& known_ca_request_id) {
    http::Request request;
    request.method = "POST";
    request.url = ces_url_;
    request.headers = {{"Content-Type", "application/soap+xml; charset=utf-8"}};
    request.body = body;
    const http::Response response = perform(request, request_id, *client_, "calling the enrollment web service (CES)");
    const std::string& xml = response.body;
    if (element(xml, "Envelope") == std::nullopt)
        unreadable(request_id, "the enrollment web service answered something else than a SOAP envelope");

    if (const auto fault = element(xml, "Fault")) {
        const auto detail = element(fault->content, "CertificateEnrollmentWSDetail");
        const auto reason = element(fault->content, "Text");
        const std::string reason_text = reason ? html_text(xml_text(reason->content)) : "";
        std::string subcode;
        for (const auto& v : elements(fault->content, "Value", 4))
            subcode += xml_text(v.content) + " ";
        if (subcode.find("InvalidSecurity") != std::string::npos || subcode.find("FailedAuthentication") != std::string::npos)
            throw sdk::Error(CC_ERR_DENIED, "CA '" + name_ + "': the enrollment web service refused the account '" + account() +
                                                "' (" + (reason_text.empty() ? "security fault" : reason_text) + ")");
        if (!detail)
            unreadable(request_id, "the enrollment web service answered a SOAP fault: " +
                                       (reason_text.empty() ? std::string("(no reason)") : reason_text.substr(0, 300)));
        std::string ca_request_id = known_ca_request_id;
        if (const auto id = element(detail->content, "RequestID"); id && !xml_text(id->content).empty())
            ca_request_id = xml_text(id->content);
        std::string code = element(detail->content, "ErrorCode") ? xml_text(element(detail->content, "ErrorCode")->content) : "";
        std::string hex;
        try {
            const long long v = std::stoll(code);
            char buf[16];
            (void)std::snprintf(buf, sizeof buf, "0x%08llX", static_cast<unsigned long long>(v) & 0xFFFFFFFFull);
            hex = buf;
        } catch (const std::exception&) {
            hex = code;
        }
        denied(request_id, ca_request_id,
               (reason_text.empty() ? std::string("AD CS error") : reason_text) + (hex.empty() ? "" : " (" + hex + ")"));
    }

    const auto rstr = element(xml, "RequestSecurityTokenResponse");
    if (!rstr) unreadable(request_id, "the enrollment web service answered without a RequestSecurityTokenResponse");
    std::string ca_request_id = known_ca_request_id;
    if (const auto id = element(rstr->content, "RequestID"); id && !xml_text(id->content).empty())
        ca_request_id = xml_text(id->content);
    if (ca_request_id.empty() || ca_request_id.size() > 10 ||
        !std::all_of(ca_request_id.begin(), ca_request_id.end(), [](char c) { return c >= '0' && c <= '9'; }))
        unreadable(request_id, "the enrollment web service answered without a numeric RequestID");
    const auto requested = element(rstr->content, "RequestedSecurityToken");
    std::optional<Element> token = requested ? element(requested->content, "BinarySecurityToken") : std::nullopt;
    if (!token || xml_text(token->content).empty()) {
        // No certificate: the request waits for a CA manager (MS-WSTEP; what cepces polls).
        RequestRecord r =
            store_->find(request_id)
                .value_or(RequestRecord{request_id, ca_request_id, "wstep", profile, "", "", "", "", "", "", "", "", "", ""});
        r.ca_request_id = ca_request_id;
        r.via = "wstep";
        if (r.status != "pending") {
            r.status = "pending";
            const auto disposition = element(rstr->content, "DispositionMessage");
            r.message = disposition ? xml_text(disposition->content) : "pending";
            store_->put(r);
        }
        pending(request_id, ca_request_id);
    }
    Issued issued;
    crypto::Cert leaf;
    try {
        std::string b64;
        for (char c : xml_text(token->content))
            if (!std::isspace(static_cast<unsigned char>(c))) b64 += c;
        const std::string der = crypto::base64_decode(b64);
        const auto* p = reinterpret_cast<const unsigned char*>(der.data());
        leaf.reset(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
        if (!leaf) throw std::invalid_argument("not a DER certificate");
    } catch (const std::exception& e) {
        ERR_clear_error();
        unreadable(request_id, std::string("the issued certificate in the CES answer is not readable: ") + e.what());
    }
    issued.certificate_pem = crypto::certificate_pem(leaf.get());
    // The PKCS#7 next to it carries the chain.
    for (const auto& bst : elements(rstr->content, "BinarySecurityToken", 4)) {
        const auto type = attribute(bst.attributes, "ValueType");
        if (!type || type->find("#PKCS7") == std::string::npos) continue;
        try {
            std::string b64;
            for (char c : xml_text(bst.content))
                if (!std::isspace(static_cast<unsigned char>(c))) b64 += c;
            auto certs = pkcs7_certificates(crypto::base64_decode(b64));
            issued.chain_pem = ordered_chain_pem(certs, leaf.get());
        } catch (const std::exception&) {
            issued.chain_pem.clear();  // fall back to the configured or fetched chain
        }
    }
    if (auto r = store_->find(request_id); !r) {
        store_->put(RequestRecord{request_id, ca_request_id, "wstep", profile, "submitted", "", "", "", "", "", "", "", "", ""});
    } else if (r->ca_request_id != ca_request_id) {
        r->ca_request_id = ca_request_id;
        store_->put(*r);
    }
    if (!issued.chain_pem.empty()) {
        std::lock_guard lock(chain_mutex_);
        if (chain_pem_.empty()) {
            chain_pem_ = issued.chain_pem;
            try {
                crypto::write_file_atomic(chain_file_, chain_pem_, 0644);  // for describe after a restart
            } catch (const std::exception&) {
                // only a cache
            }
        }
    }
    return issued;
}

// ---- revoke (WinRM: certutil -revoke on the CA) -----------------------------------------------

std::string AdcsCa::winrm_call(const std::string& action, const std::string& shell_id, const std::string& body,
                               const std::string& options, bool receive) {
    const std::string envelope =
        std::string("<s:Envelope xmlns:s=\"") + kNsSoap +
        "\" xmlns:a=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\" "
        "xmlns:w=\"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd\" xmlns:rsp=\"" +
        kWsmanShell + "\"><s:Header><a:To>" + xml_escape(winrm_url_) + "</a:To><w:ResourceURI s:mustUnderstand=\"true\">" +
        kWsmanCmd +
        "</w:ResourceURI><a:ReplyTo><a:Address s:mustUnderstand=\"true\">"
        "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address></a:ReplyTo>"
        "<a:Action s:mustUnderstand=\"true\">" +
        action +
        "</a:Action><w:MaxEnvelopeSize s:mustUnderstand=\"true\">153600</w:MaxEnvelopeSize><a:MessageID>uuid:" + crypto::uuid4() +
        "</a:MessageID><w:Locale xml:lang=\"en-US\" s:mustUnderstand=\"false\"/><w:OperationTimeout>PT60S</"
        "w:OperationTimeout>" +
        (shell_id.empty()
             ? ""
             : "<w:SelectorSet><w:Selector Name=\"ShellId\">" + xml_escape(shell_id) + "</w:Selector></w:SelectorSet>") +
        options + "</s:Header><s:Body>" + body + "</s:Body></s:Envelope>";
    http::Request request;
    request.method = "POST";
    request.url = winrm_url_;
    request.headers = {{"Content-Type", "application/soap+xml;charset=UTF-8"}};
    request.body = envelope;
    const http::Response response = perform(request, "", *winrm_, "WinRM at " + host_of(winrm_url_));
    if (const auto fault = element(response.body, "Fault")) {
        // A Receive that waited OperationTimeout without output answers w:TimedOut: ask again.
        if (receive)
            for (const auto& v : elements(fault->content, "Value", 4))
                if (xml_text(v.content).find("TimedOut") != std::string::npos) return {};
        const auto text = element(fault->content, "Text");
        throw sdk::Error(CC_ERR_UNAVAILABLE, "CA '" + name_ + "': WinRM at " + host_of(winrm_url_) + " answered a fault: " +
                                                 (text ? html_text(xml_text(text->content), 300) : std::string("(no reason)")));
    }
    if (!element(response.body, "Envelope"))
        throw sdk::Error(CC_ERR_UNAVAILABLE,
                         "CA '" + name_ + "': WinRM at " + host_of(winrm_url_) + " answered no SOAP envelope");
    return response.body;
}

std::string AdcsCa::winrm_run(const std::string& command_line, int& exit_code) {
    const std::string created = winrm_call(
        "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create", "",
        std::string("<rsp:Shell><rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams>"
                    "</rsp:Shell>"),
        "<w:OptionSet><w:Option Name=\"WINRS_NOPROFILE\">TRUE</w:Option><w:Option Name=\"WINRS_CODEPAGE\">437</w:Option>"
        "</w:OptionSet>");
    std::string shell_id;
    for (const auto& sel : elements(created, "Selector", 8))
        if (attribute(sel.attributes, "Name") == std::optional<std::string>("ShellId")) shell_id = xml_text(sel.content);
    if (shell_id.empty())
        if (const auto id = element(created, "ShellId")) shell_id = xml_text(id->content);
    if (shell_id.empty() || shell_id.size() > 64)
        throw sdk::Error(CC_ERR_UNAVAILABLE, "CA '" + name_ + "': WinRM created no shell (no ShellId in its answer)");

    std::string output;
    bool done = false;
    exit_code = -1;
    std::string command_id;
    try {
        const std::string started =
            winrm_call(std::string(kWsmanShell) + "/Command", shell_id,
                       "<rsp:CommandLine><rsp:Command>" + xml_escape(command_line) + "</rsp:Command></rsp:CommandLine>",
                       "<w:OptionSet><w:Option Name=\"WINRS_CONSOLEMODE_STDIN\">TRUE</w:Option><w:Option "
                       "Name=\"WINRS_SKIP_CMD_SHELL\">FALSE</w:Option></w:OptionSet>");
        if (const auto id = element(started, "CommandId")) command_id = xml_text(id->content);
        if (command_id.empty() || command_id.size() > 64)
            throw sdk::Error(CC_ERR_UNAVAILABLE, "CA '" + name_ + "': WinRM started no command (no CommandId)");
        for (int round = 0; round < 30 && !done; ++round) {
            const std::string received = winrm_call(std::string(kWsmanShell) + "/Receive", shell_id,
                                                    "<rsp:Receive><rsp:DesiredStream CommandId=\"" + xml_escape(command_id) +
                                                        "\">stdout stderr</rsp:DesiredStream></rsp:Receive>",
                                                    {}, true);
            for (const auto& stream : elements(received, "Stream", 64)) {
                const std::string b64 = xml_text(stream.content);
                if (b64.empty()) continue;
                try {
                    if (output.size() < 65536) output += crypto::base64_decode(b64);
                } catch (const std::exception&) {
                    throw sdk::Error(CC_ERR_UNAVAILABLE, "CA '" + name_ + "': WinRM sent output that is not base64");
                }
            }
            if (const auto state = element(received, "CommandState")) {
                const auto s = attribute(state->attributes, "State");
                if (s && s->size() >= 5 && s->substr(s->size() - 5) == "/Done") {
                    done = true;
                    if (const auto code = element(state->content, "ExitCode")) {
                        try {
                            exit_code = std::stoi(xml_text(code->content));
                        } catch (const std::exception&) {
                            exit_code = -1;
                        }
                    }
                }
            }
        }
        winrm_call(std::string(kWsmanShell) + "/Signal", shell_id,
                   "<rsp:Signal CommandId=\"" + xml_escape(command_id) + "\"><rsp:Code>" + kWsmanShell +
                       "/signal/terminate</rsp:Code></rsp:Signal>");
    } catch (...) {
        try {
            winrm_call("http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete", shell_id, "");
        } catch (...) {
        }
        throw;
    }
    winrm_call("http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete", shell_id, "");
    if (!done) throw sdk::Error(CC_ERR_TIMEOUT, "CA '" + name_ + "': certutil did not finish on the CA host in time");
    return output;
}

std::string AdcsCa::revoke(const std::string& request_json) {
    std::error_code ec;
    const json::value parsed = json::parse(request_json, ec);
    if (ec || !parsed.is_object()) throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "revoke request is not a JSON object");
    const json::object& req = parsed.get_object();
    if (req.contains("batch"))
        throw sdk::Error(CC_ERR_NOT_SUPPORTED, "CA '" + name_ + "' (AD CS) revokes one certificate per call");
    const std::string serial = canonical_serial(str(req, "serial"));
    const std::string reason = str(req, "reason", "unspecified");
    const int code = reason_code(reason);
    const std::string request_id = str(req, "request_id");
    if (const std::string issuer = str(req, "issuer"); !issuer.empty()) {
        std::string chain;
        try {
            chain = chain_pem(request_id);
        } catch (const sdk::Error&) {
            chain.clear();  // cannot compare; AD CS itself knows its serials
        }
        if (!chain.empty()) {
            const auto issuing = crypto::load_certificate(chain);
            bool same = false;
            try {
                same = X509_NAME_cmp(crypto::parse_name(issuer).get(), X509_get_subject_name(issuing.get())) == 0;
            } catch (const std::exception& e) {
                throw sdk::Error(CC_ERR_INVALID_ARGUMENT, std::string("issuer: ") + e.what());
            }
            if (!same)
                throw sdk::Error(CC_ERR_NOT_FOUND, "CA '" + name_ + "' is '" +
                                                       crypto::name_string(X509_get_subject_name(issuing.get())) +
                                                       "', not the issuer '" + issuer + "' named in the request");
        }
    }
    const auto known = store_->find_by_serial(serial);
    if (known && !known->revoked_at.empty())
        return json::serialize(json::object{{"serial", serial},
                                            {"status", "revoked"},
                                            {"reason", known->revocation_reason},
                                            {"revoked_at", known->revoked_at},
                                            {"already_revoked", true}});
    const std::string command = "certutil -config \"" + ca_config_ + "\" -revoke " + serial + " " + std::to_string(code);
    if (!winrm_) {
        const std::string message = "CA '" + name_ + "' (AD CS) cannot revoke from this connector: no [ca." + name_ +
                                    ".revocation] winrm_url is configured. Revoke on a Windows host as an account with "
                                    "'Issue and Manage Certificates': " +
                                    command + " (reason " + std::to_string(code) + " = " + reason + ")";
        host_.log(CC_EV_CaRevokeUnsupported, CC_LEVEL_ERROR, message, request_id,
                  json::serialize(json::object{{"ca", name_}, {"serial", serial}, {"command", command}}));
        throw sdk::Error(CC_ERR_NOT_SUPPORTED, message);
    }
    int exit_code = -1;
    const std::string output = winrm_run(command, exit_code);
    const std::string shown = html_text(output, 400);
    if (exit_code != 0) {
        if (output.find("0x80092004") != std::string::npos || output.find("CRYPT_E_NOT_FOUND") != std::string::npos)
            throw sdk::Error(CC_ERR_NOT_FOUND,
                             "CA '" + name_ + "' (" + ca_config_ + ") has no certificate with serial " + serial);
        if (output.find("0x80070005") != std::string::npos || output.find("E_ACCESSDENIED") != std::string::npos)
            throw sdk::Error(CC_ERR_DENIED, "CA '" + name_ + "': account '" + winrm_->settings().username +
                                                "' may not revoke on " + ca_config_ +
                                                " (it needs 'Issue and Manage Certificates'): " + shown);
        const std::string message =
            "certutil -revoke failed on the CA host (exit code " + std::to_string(exit_code) + "): " + shown;
        host_.log(CC_EV_CaUnreachable, CC_LEVEL_WARNING, "CA '" + name_ + "': " + message, request_id,
                  json::serialize(json::object{{"ca", name_}, {"serial", serial}, {"error", message}}));
        throw sdk::Error(CC_ERR_UNAVAILABLE, "CA '" + name_ + "': " + message);
    }
    if (output.find("completed successfully") == std::string::npos)
        throw sdk::Error(CC_ERR_UNAVAILABLE, "CA '" + name_ + "': certutil -revoke ended without its success line: " + shown);
    const std::string when = sdk::utc_iso8601(std::chrono::system_clock::now());
    store_->mark_revoked(serial, when, reason);
    return json::serialize(json::object{
        {"serial", serial}, {"status", "revoked"}, {"reason", reason}, {"revoked_at", when}, {"already_revoked", false}});
}

// ---- describe and query ------------------------------------------------------------------------

std::string AdcsCa::describe() {
    return json::serialize(json::object{{"name", name_},
                                        {"chain_pem", chain_pem("")},
                                        {"ca_config", ca_config_},
                                        {"url", url_},
                                        {"ces_url", ces_url_},
                                        {"revocation", winrm_ ? "winrm" : "none"},
                                        {"issued_here", store_->issued_count()}});
}

std::string AdcsCa::query(const std::string& request_json) {
    std::error_code ec;
    const json::value parsed = json::parse(request_json, ec);
    if (ec || !parsed.is_object()) throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "query is not a JSON object");
    const json::object& req = parsed.get_object();
    const std::string op = str(req, "op");
    if (op == "certificate") {
        const std::string serial = canonical_serial(str(req, "serial"));
        const auto r = store_->find_by_serial(serial);
        if (!r)
            throw sdk::Error(CC_ERR_NOT_FOUND, "CA '" + name_ +
                                                   "' knows only the certificates it obtained through this connector "
                                                   "(AD CS Web Enrollment cannot look up by serial); " +
                                                   serial + " is not one of them");
        json::object answer{{"serial", r->serial},
                            {"certificate_pem", r->certificate_pem},
                            {"status", r->revoked_at.empty() ? "valid" : "revoked"}};
        if (!r->revoked_at.empty()) {
            answer["revocation_reason"] = r->revocation_reason;
            answer["revoked_at"] = r->revoked_at;
        }
        return json::serialize(answer);
    }
    if (op == "crl") {
        std::string url = crl_url_;
        if (url.empty())
            if (const auto r = store_->newest_issued()) url = cdp_of(crypto::load_certificate(r->certificate_pem).get());
        if (url.empty())
            throw sdk::Error(CC_ERR_NOT_FOUND, "CA '" + name_ +
                                                   "': no CRL URL known (set crl_url, or issue a certificate whose CRL "
                                                   "distribution point has an http(s) URL)");
        // The CDP is anonymous (IIS CertEnroll); never send the enrollment account's password there.
        const http::Settings& s = client_->settings();
        http::Settings anonymous;
        anonymous.ca_file = s.ca_file;
        anonymous.proxy = s.proxy;
        anonymous.proxy_username = s.proxy_username;
        anonymous.proxy_password = s.proxy_password.clone();
        anonymous.connect_timeout = s.connect_timeout;
        anonymous.timeout = s.timeout;
        anonymous.max_response_bytes = s.max_response_bytes;
        anonymous.user_agent = s.user_agent;
        const http::Client cdp(std::move(anonymous));
        http::Request request;
        request.url = url;
        const auto response = perform(request, "", cdp, "fetching the CRL from " + url);
        std::string der = response.body;
        if (der.rfind("-----BEGIN X509 CRL-----", 0) == 0) {
            std::unique_ptr<BIO, crypto::Deleter<BIO_free_all>> bio(BIO_new_mem_buf(der.data(), static_cast<int>(der.size())));
            std::unique_ptr<X509_CRL, crypto::Deleter<X509_CRL_free>> crl(
                PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr));
            if (crl) {
                unsigned char* out = nullptr;
                const int len = i2d_X509_CRL(crl.get(), &out);
                der.assign(reinterpret_cast<char*>(out), static_cast<std::size_t>(std::max(len, 0)));
                OPENSSL_free(out);
            }
        }
        const auto* p = reinterpret_cast<const unsigned char*>(der.data());
        std::unique_ptr<X509_CRL, crypto::Deleter<X509_CRL_free>> crl(d2i_X509_CRL(nullptr, &p, static_cast<long>(der.size())));
        if (!crl) {
            ERR_clear_error();
            unreadable("", url + " answered something else than a CRL");
        }
        return json::serialize(json::object{{"crl_der", crypto::base64_encode(der)}, {"url", url}});
    }
    if (op == "health") {
        http::Request request;
        request.url = url_.empty() ? ces_url_ : url_ + "/";
        try {
            const http::Response r = client_->perform(request);
            if (r.status == 401 || r.status == 403)
                return json::serialize(json::object{{"healthy", false},
                                                    {"detail", host_of(request.url) + " refused the account '" + account() +
                                                                   "' (HTTP " + std::to_string(r.status) + ")"}});
            const bool ok = url_.empty() ? r.status < 500 : r.status == 200;
            return json::serialize(
                json::object{{"healthy", ok},
                             {"detail", (url_.empty() ? "CES at " : "Web Enrollment at ") + host_of(request.url) +
                                            " answered HTTP " + std::to_string(r.status)}});
        } catch (const sdk::Error& e) {
            return json::serialize(json::object{{"healthy", false}, {"detail", e.what()}});
        }
    }
    throw sdk::Error(CC_ERR_NOT_SUPPORTED, "CA '" + name_ + "' answers no query '" + op + "' (known: certificate, crl, health)");
}

}  // namespace certconn::ca_adcs
