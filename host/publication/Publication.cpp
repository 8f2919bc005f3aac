#include "publication/Publication.hpp"

#include "plugins/PluginRuntime.hpp"

#include <certconn/crypto.hpp>
#include <certconn/sdk.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace certconn::host {

namespace json = boost::json;
namespace http = boost::beast::http;
using Clock = std::chrono::system_clock;

namespace {

// Bounds on what a CA plugin may hand back: a CRL of a million entries is some 40 MB of DER.
constexpr std::size_t kMaxAnswerBytes = std::size_t{128} * 1024 * 1024;
// A CRL leaves the cache this long before its nextUpdate (or a tenth of its validity, if less),
// so relying parties never get one that expires while they hold it for max-age.
constexpr std::chrono::seconds kNextUpdateMargin{300};

HttpResponseMessage text(unsigned status, const std::string& body) {
    auto res = make_response(status, "text/plain; charset=utf-8", body + "\n");
    res.set(http::field::cache_control, "no-store");
    return res;
}

std::string etag_of(const std::string& body) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    EVP_Digest(body.data(), body.size(), md, &size, EVP_sha256(), nullptr);
    return "\"" + crypto::hex_encode(std::string_view(reinterpret_cast<const char*>(md), 16)) + "\"";
}

/// True when the If-None-Match header names `etag` (or "*"); weak tags compare by their value.
bool not_modified(std::string_view header, const std::string& etag) {
    while (!header.empty()) {
        const auto comma = header.find(',');
        std::string_view tag = header.substr(0, comma);
        header = comma == std::string_view::npos ? std::string_view{} : header.substr(comma + 1);
        while (!tag.empty() && (tag.front() == ' ' || tag.front() == '\t'))
            tag.remove_prefix(1);
        while (!tag.empty() && (tag.back() == ' ' || tag.back() == '\t'))
            tag.remove_suffix(1);
        if (tag.substr(0, 2) == "W/") tag.remove_prefix(2);
        if (tag == "*" || tag == etag) return true;
    }
    return false;
}

Clock::time_point to_time_point(const ASN1_TIME* t) {
    int days = 0, secs = 0;
    if (t == nullptr || !ASN1_TIME_diff(&days, &secs, nullptr, t)) return Clock::time_point{};
    return Clock::now() + std::chrono::seconds(static_cast<long>(days) * 86400 + secs);
}

/// "name" from "/crl/name.crl" with prefix "/crl/" and suffix ".crl"; "" when it does not fit.
std::string name_between(std::string_view path, std::string_view prefix, std::string_view suffix) {
    if (path.size() <= prefix.size() + suffix.size() || path.substr(0, prefix.size()) != prefix ||
        path.substr(path.size() - suffix.size()) != suffix)
        return {};
    std::string name(path.substr(prefix.size(), path.size() - prefix.size() - suffix.size()));
    return name.find('/') == std::string::npos ? name : std::string();
}

}  // namespace

Publication::Publication(PluginRuntime& runtime, EventLog& log, std::chrono::seconds cache_limit)
    : runtime_(runtime), log_(log), cache_limit_(cache_limit) {}

void Publication::revoked(const std::string& ca, Clock::time_point started) {
    std::lock_guard lock(mutex_);
    auto& last = revoked_[ca];
    if (auto it = cache_.find("crl:" + ca + ":issuing"); it != cache_.end()) {
        last.crl_number = std::max(last.crl_number, it->second.crl_number);
        cache_.erase(it);
    }
    last.started = std::max(last.started, started);
}

void Publication::invalidate_all() {
    std::lock_guard lock(mutex_);
    cache_.clear();
}

bool Publication::resolve(const std::string& name, std::string& ca, Level& level) const {
    const auto cfg = runtime_.config();
    if (cfg->cas.count(name)) {
        ca = name;
        level = Level::issuing;
        return true;
    }
    constexpr std::string_view kRoot = "-root";
    if (name.size() > kRoot.size() && name.compare(name.size() - kRoot.size(), kRoot.size(), kRoot) == 0) {
        const std::string base = name.substr(0, name.size() - kRoot.size());
        if (cfg->cas.count(base)) {
            ca = base;
            level = Level::root;
            return true;
        }
    }
    return false;
}

std::optional<HttpResponseMessage> Publication::handle(const HttpRequestMessage& request, const std::string& path,
                                                       const std::string& method) {
    const bool crl_path = path.rfind("/crl/", 0) == 0;
    const bool ca_path = path.rfind("/ca/", 0) == 0;
    const bool ocsp_path = path.rfind("/ocsp/", 0) == 0;
    if (!crl_path && !ca_path && !ocsp_path) return std::nullopt;

    if (ocsp_path) {
        // RFC 6960 appendix A.1: POST /ocsp/<ca> with the DER request as the body, or
        // GET /ocsp/<ca>/<url-encoded base64 of the DER request> (the path arrives decoded, so
        // the base64 may itself contain '/').
        const std::string rest = path.substr(6);
        if (method == "POST") {
            if (rest.empty() || rest.find('/') != std::string::npos) return text(404, "expected POST /ocsp/<ca>");
            if (!runtime_.config()->cas.count(rest)) return text(404, "no CA named '" + rest + "' is configured");
            return ocsp(rest, request.body());
        }
        if (method == "GET") {
            const auto slash = rest.find('/');
            if (slash == std::string::npos || slash == 0 || slash + 1 == rest.size())
                return text(404, "expected GET /ocsp/<ca>/<base64 request>");
            const std::string ca = rest.substr(0, slash);
            if (!runtime_.config()->cas.count(ca)) return text(404, "no CA named '" + ca + "' is configured");
            std::string der;
            try {
                der = crypto::base64_decode(rest.substr(slash + 1));
            } catch (const std::exception&) {
                return text(400, "the OCSP request in the path is not base64");
            }
            return ocsp(ca, der);
        }
        auto res = text(405, "OCSP takes GET or POST");
        res.set(http::field::allow, "GET, POST");
        return res;
    }
    if (method != "GET") {
        auto res = text(405, std::string(crl_path ? "CRLs" : "CA certificates") + " are fetched with GET");
        res.set(http::field::allow, "GET");
        return res;
    }
    const std::string name = crl_path ? name_between(path, "/crl/", ".crl") : name_between(path, "/ca/", ".crt");
    if (name.empty()) return text(404, crl_path ? "expected /crl/<ca>.crl" : "expected /ca/<ca>.crt");
    std::string ca;
    Level level = Level::issuing;
    if (!resolve(name, ca, level)) return text(404, "no CA named '" + name + "' is configured");
    return crl_path ? crl(request, ca, level) : certificate(request, ca, level);
}

std::optional<Publication::Entry> Publication::cached(const std::string& key) {
    std::lock_guard lock(mutex_);
    auto it = cache_.find(key);
    if (it == cache_.end()) return std::nullopt;
    if (Clock::now() >= it->second.expires) {
        cache_.erase(it);
        return std::nullopt;
    }
    return it->second;
}

HttpResponseMessage Publication::answer(const HttpRequestMessage& request, const Entry& entry) {
    const auto left = std::chrono::duration_cast<std::chrono::seconds>(entry.expires - Clock::now()).count();
    const std::string cache_control = "public, max-age=" + std::to_string(std::max<long long>(0, left));
    if (not_modified(request[http::field::if_none_match], entry.etag)) {
        HttpResponseMessage res{http::status::not_modified, 11};
        res.set(http::field::server, "certconnector/" CERTCONN_VERSION);
        res.set(http::field::etag, entry.etag);
        res.set(http::field::cache_control, cache_control);
        return res;
    }
    auto res = make_response(200, entry.content_type, *entry.body);
    res.set(http::field::etag, entry.etag);
    res.set(http::field::cache_control, cache_control);
    return res;
}

HttpResponseMessage Publication::failure(const std::string& ca, const std::string& what, int status, const std::string& message) {
    if (status == CC_ERR_NOT_FOUND || status == CC_ERR_NOT_SUPPORTED)
        return text(404, "CA '" + ca + "' publishes no " + what + ": " + message);
    log_.emit(CC_EV_PluginCallFailed, CC_LEVEL_WARNING, "CA '" + ca + "': publishing its " + what + " failed: " + message, {},
              {{"ca", ca}, {"status", status}});
    if (CC_STATUS_IS_RETRYABLE(status)) {
        auto res = text(503, "CA '" + ca + "': its " + what + " is not available right now");
        res.set(http::field::retry_after, "30");
        return res;
    }
    return text(500, "CA '" + ca + "': its " + what + " could not be made");
}

HttpResponseMessage Publication::crl(const HttpRequestMessage& request, const std::string& ca, Level level) {
    const std::string key = std::string("crl:") + ca + (level == Level::root ? ":root" : ":issuing");
    const std::string what = level == Level::root ? "root CRL" : "CRL";
    if (auto hit = cached(key)) return answer(request, *hit);

    const auto asked = Clock::now();
    const std::string query = level == Level::root ? R"({"op":"crl","level":"root"})" : R"({"op":"crl"})";
    StringSink sink(kMaxAnswerBytes);
    cc_sink s = sink.sink();
    cc_error err = sdk::detail::make_error();
    const int rc = runtime_.ca_call(CaOperation::query, ca.c_str(), query.c_str(), &s, &err);
    if (rc != CC_OK) return failure(ca, what, rc, err.message[0] ? err.message : "no message");

    std::error_code ec;
    const json::value v = json::parse(sink.data, ec);
    const json::value* der_b64 = !ec && v.is_object() ? v.as_object().if_contains("crl_der") : nullptr;
    std::string der;
    try {
        if (der_b64 == nullptr || !der_b64->is_string()) throw std::invalid_argument("no crl_der");
        der = crypto::base64_decode(der_b64->get_string());
    } catch (const std::exception&) {
        return failure(ca, what, CC_ERR_INTERNAL, "the plugin's answer has no base64 crl_der");
    }
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    std::unique_ptr<X509_CRL, crypto::Deleter<X509_CRL_free>> parsed(d2i_X509_CRL(nullptr, &p, static_cast<long>(der.size())));
    if (!parsed || p != reinterpret_cast<const unsigned char*>(der.data()) + der.size()) {
        ERR_clear_error();
        return failure(ca, what, CC_ERR_INTERNAL, "the plugin's crl_der is not one DER CRL");
    }

    const auto this_update = to_time_point(X509_CRL_get0_lastUpdate(parsed.get()));
    Clock::time_point expires = asked + cache_limit_;
    if (const ASN1_TIME* next = X509_CRL_get0_nextUpdate(parsed.get())) {
        const auto next_update = to_time_point(next);
        const auto margin = std::min<Clock::duration>(kNextUpdateMargin, (next_update - this_update) / 10);
        expires = std::min(expires, next_update - margin);
    }
    Entry entry{std::make_shared<const std::string>(std::move(der)), "application/pkix-crl", "", expires};
    entry.etag = etag_of(*entry.body);
    if (auto* n = static_cast<ASN1_INTEGER*>(X509_CRL_get_ext_d2i(parsed.get(), NID_crl_number, nullptr, nullptr))) {
        std::int64_t v = -1;
        if (ASN1_INTEGER_get_int64(&v, n) == 1) entry.crl_number = v;
        ASN1_INTEGER_free(n);
    }
    ERR_clear_error();
    {
        std::lock_guard lock(mutex_);
        // Just after a revocation the CA may still answer its previous CRL while it makes the
        // next: serve that one, but do not keep it. It is the previous one when its number is not
        // above the one cached at the revocation, or (no number known) when it was made no
        // later than the second the revocation started. After a minute the CA's answer is taken
        // as it is.
        bool may_predate = false;
        if (level == Level::issuing)
            if (auto r = revoked_.find(ca); r != revoked_.end()) {
                if (asked - r->second.started > std::chrono::minutes(1))
                    revoked_.erase(r);
                else if (r->second.crl_number >= 0 && entry.crl_number >= 0)
                    may_predate = entry.crl_number <= r->second.crl_number;
                else
                    may_predate = std::chrono::floor<std::chrono::seconds>(this_update) <=
                                  std::chrono::floor<std::chrono::seconds>(r->second.started);
            }
        if (may_predate) {
            entry.expires = asked;
        } else if (entry.expires > Clock::now()) {
            cache_[key] = entry;
        }
    }
    return answer(request, entry);
}

HttpResponseMessage Publication::certificate(const HttpRequestMessage& request, const std::string& ca, Level level) {
    const std::string key = std::string("crt:") + ca + (level == Level::root ? ":root" : ":issuing");
    const std::string what = level == Level::root ? "root certificate" : "CA certificate";
    if (auto hit = cached(key)) return answer(request, *hit);

    StringSink sink(std::size_t{4} * 1024 * 1024);
    cc_sink s = sink.sink();
    cc_error err = sdk::detail::make_error();
    const int rc = runtime_.ca_call(CaOperation::describe, ca.c_str(), "{}", &s, &err);
    if (rc != CC_OK) return failure(ca, what, rc, err.message[0] ? err.message : "no message");
    std::error_code ec;
    const json::value v = json::parse(sink.data, ec);
    const json::value* chain = !ec && v.is_object() ? v.as_object().if_contains("chain_pem") : nullptr;
    if (chain == nullptr || !chain->is_string()) return failure(ca, what, CC_ERR_INTERNAL, "the description has no chain_pem");
    std::vector<crypto::Cert> certs;
    try {
        certs = crypto::load_certificates(std::string_view(chain->get_string()));
    } catch (const std::exception& e) {
        return failure(ca, what, CC_ERR_INTERNAL, std::string("chain_pem: ") + e.what());
    }
    if (certs.empty()) return failure(ca, what, CC_ERR_INTERNAL, "chain_pem holds no certificate");
    X509* chosen = certs.front().get();
    if (level == Level::root) {
        X509* last = certs.back().get();
        if (certs.size() < 2 || X509_check_issued(last, last) != X509_V_OK) {
            ERR_clear_error();
            return failure(ca, what, CC_ERR_NOT_FOUND, "its chain ends in no self-signed root");
        }
        chosen = last;
    }
    Entry entry{std::make_shared<const std::string>(crypto::certificate_der(chosen)), "application/pkix-cert", "",
                Clock::now() + cache_limit_};
    entry.etag = etag_of(*entry.body);
    if (cache_limit_.count() > 0) {
        std::lock_guard lock(mutex_);
        cache_[key] = entry;
    }
    return answer(request, entry);
}

HttpResponseMessage Publication::ocsp(const std::string& ca, const std::string& request_der) {
    const std::string query = json::serialize(json::object{{"op", "ocsp"}, {"request_der", crypto::base64_encode(request_der)}});
    StringSink sink(std::size_t{1} * 1024 * 1024);
    cc_sink s = sink.sink();
    cc_error err = sdk::detail::make_error();
    const int rc = runtime_.ca_call(CaOperation::query, ca.c_str(), query.c_str(), &s, &err);
    if (rc == CC_ERR_NOT_SUPPORTED) return text(404, "CA '" + ca + "' has no OCSP responder");
    if (rc != CC_OK) return failure(ca, "OCSP answer", rc, err.message[0] ? err.message : "no message");
    std::error_code ec;
    const json::value v = json::parse(sink.data, ec);
    const json::value* der_b64 = !ec && v.is_object() ? v.as_object().if_contains("response_der") : nullptr;
    std::string der;
    try {
        if (der_b64 == nullptr || !der_b64->is_string()) throw std::invalid_argument("no response_der");
        der = crypto::base64_decode(der_b64->get_string());
    } catch (const std::exception&) {
        return failure(ca, "OCSP answer", CC_ERR_INTERNAL, "the plugin's answer has no base64 response_der");
    }
    auto res = make_response(200, "application/ocsp-response", std::move(der));
    res.set(http::field::cache_control, "no-cache");
    return res;
}

}  // namespace certconn::host
