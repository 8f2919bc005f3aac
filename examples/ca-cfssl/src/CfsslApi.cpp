#include "CfsslApi.hpp"

#include <certconn/crypto.hpp>

#include <boost/json.hpp>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cctype>

namespace cfssl_plugin {

namespace json = boost::json;
using certconn::sdk::Error;

namespace {

// cfssl's error codes are category * 1000 + reason (cfssl/errors/error.go).
constexpr int kPolicyError = 5000;      // the signing policy refused the request
constexpr int kCsrError = 9000;         // the CSR could not be read
constexpr int kCertStoreError = 11000;  // the certdb: 11200 record not found

std::string clip(std::string_view text, std::size_t n = 300) {
    std::string out(text.substr(0, n));
    for (auto& c : out)
        if (static_cast<unsigned char>(c) < 0x20) c = ' ';
    return text.size() > n ? out + "..." : out;
}

/// The first error of an envelope: (code, message); (0, "") when there is none.
std::pair<int, std::string> first_error(const json::object& envelope) {
    const auto* errors = envelope.if_contains("errors");
    if (!errors || !errors->is_array() || errors->as_array().empty() || !errors->as_array()[0].is_object()) return {0, ""};
    const auto& e = errors->as_array()[0].as_object();
    int code = 0;
    if (const auto* c = e.if_contains("code"); c && c->is_int64()) code = static_cast<int>(c->as_int64());
    std::string message;
    if (const auto* m = e.if_contains("message"); m && m->is_string()) message = clip(m->as_string());
    return {code, message};
}

/// The status of a refusal cfssl explained (HTTP 4xx with an error in the envelope).
cc_status status_of_refusal(long http_status, int code, const std::string& message) {
    if (http_status == 401 || http_status == 403) return CC_ERR_DENIED;
    if (message == "invalid token" || message == "authentication required" || message == "no authentication provider")
        return CC_ERR_DENIED;
    if (code >= kCertStoreError && code < kCertStoreError + 1000 && message.find("not found") != std::string::npos)
        return CC_ERR_NOT_FOUND;
    if (code >= kCsrError && code < kCsrError + 1000) return CC_ERR_INVALID_ARGUMENT;
    if (code >= kPolicyError && code < kPolicyError + 1000) return CC_ERR_DENIED;
    return certconn::http::status_of_http(http_status);
}

/// What an operator should do about an authentication refusal, or "".
std::string auth_hint(const std::string& message, bool authenticated) {
    if (message == "invalid token") return "; the key in auth_key_file does not match the auth_key of that cfssl profile";
    if (message == "authentication required")
        return authenticated ? "" : "; that cfssl profile has an auth_key: set auth_key_file (authsign)";
    if (message == "no authentication provider")
        return "; that cfssl profile has no auth_key, but auth_key_file is set (authsign): give the profile an auth_key";
    return "";
}

}  // namespace

certconn::sdk::Secret read_auth_key(const std::string& path, const std::string& config_key) {
    std::string text;
    try {
        text = certconn::crypto::read_file(path, "auth key");
    } catch (const std::exception& e) {
        throw Error(CC_ERR_INVALID_ARGUMENT, config_key + ": " + e.what());
    }
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back())))
        text.pop_back();
    // cfssl's "standard" provider decodes its key from hex (auth.New); so do we.
    if (text.empty() || text.size() % 2 != 0 || text.size() > 256 ||
        text.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
        std::fill(text.begin(), text.end(), '\0');
        throw Error(
            CC_ERR_INVALID_ARGUMENT,
            config_key + ": expected the profile's auth key as an even number of hexadecimal digits (at most 256) in " + path);
    }
    std::string raw;
    for (std::size_t i = 0; i < text.size(); i += 2)
        raw.push_back(static_cast<char>(std::stoi(text.substr(i, 2), nullptr, 16)));
    std::fill(text.begin(), text.end(), '\0');
    certconn::sdk::Secret key(std::move(raw));
    return key;
}

CfsslApi::CfsslApi(std::string base_url, certconn::http::Settings settings, std::optional<certconn::sdk::Secret> auth_key,
                   std::string label)
    : base_url_(std::move(base_url)), client_(std::move(settings)), auth_key_(std::move(auth_key)), label_(std::move(label)) {
    while (!base_url_.empty() && base_url_.back() == '/')
        base_url_.pop_back();
}

json::value CfsslApi::call(const std::string& endpoint, const std::string& body) const {
    certconn::http::Request request;
    request.method = "POST";
    request.url = base_url_ + "/api/v1/cfssl/" + endpoint;
    request.headers = {{"Content-Type", "application/json"}, {"Accept", "application/json"}};
    request.body = body;
    const certconn::http::Response response = client_.perform(request);  // transport errors: UNAVAILABLE/TIMEOUT

    const std::string where = "cfssl at " + base_url_ + " (" + endpoint + ")";
    if (response.status == 429) {
        const auto delay = response.retry_after();
        throw Error(CC_ERR_BUSY, where + " is throttling requests (HTTP 429" +
                                     (delay ? ", retry after " + std::to_string(delay->count()) + " s" : std::string()) + ")");
    }
    if (response.status == 401 || response.status == 407) {
        // cfssl has no accounts; this is a reverse proxy (auth/username) or a proxy in front of it.
        const auto& user = response.status == 407 ? client_.settings().proxy_username : client_.settings().username;
        throw Error(CC_ERR_DENIED, where + " refused the credentials" +
                                       (user.empty() ? std::string(" (none configured)") : " of '" + user + "'") + " (HTTP " +
                                       std::to_string(response.status) + ")");
    }
    if (response.status >= 500 || response.status == 408)
        throw Error(CC_ERR_UNAVAILABLE,
                    where + " failed with HTTP " + std::to_string(response.status) + ": " + clip(response.body, 200));

    // Bounded parse: the client already capped the size; depth is capped here.
    json::parse_options options;
    options.max_depth = 16;
    std::error_code ec;
    json::value parsed = json::parse(response.body, ec, {}, options);
    if (ec || !parsed.is_object() || !parsed.as_object().contains("success") || !parsed.at("success").is_bool())
        throw Error(CC_ERR_UNAVAILABLE,
                    where + " answered HTTP " + std::to_string(response.status) +
                        " without cfssl's JSON envelope {\"success\", \"result\", \"errors\"}: " + clip(response.body, 120));
    auto& envelope = parsed.as_object();
    if (envelope.at("success").as_bool() && response.status / 100 == 2) return envelope["result"];

    const auto [code, message] = first_error(envelope);
    if (response.status / 100 == 2 || message.empty())
        throw Error(CC_ERR_UNAVAILABLE,
                    where + " reported a failure (HTTP " + std::to_string(response.status) + ") without an error message");
    throw Error(
        status_of_refusal(response.status, code, message),
        where + " refused: " + message + " (cfssl code " + std::to_string(code) + ")" + auth_hint(message, authenticated()));
}

std::string CfsslApi::sign(const std::string& csr_pem, const std::string& profile) const {
    json::object request{{"certificate_request", csr_pem}};
    if (!profile.empty()) request["profile"] = profile;
    if (!label_.empty()) request["label"] = label_;
    const std::string body = json::serialize(request);

    json::value result;
    if (auth_key_) {
        // authsign: {"token": base64(HMAC-SHA256(key, request)), "request": base64(request)}
        // (cfssl/auth/auth.go, StandardProvider.Token); the key never leaves this process.
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int mac_len = 0;
        const auto key = auth_key_->reveal();
        if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(body.data()),
                  body.size(), mac, &mac_len))
            throw Error(CC_ERR_INTERNAL, "HMAC-SHA256 of the authsign request failed");
        const json::object wrapped{
            {"token", certconn::crypto::base64_encode(std::string_view(reinterpret_cast<const char*>(mac), mac_len))},
            {"request", certconn::crypto::base64_encode(body)}};
        result = call("authsign", json::serialize(wrapped));
    } else {
        result = call("sign", body);
    }
    const auto* cert = result.is_object() ? result.as_object().if_contains("certificate") : nullptr;
    if (!cert || !cert->is_string() || cert->as_string().empty())
        throw Error(CC_ERR_UNAVAILABLE, "cfssl at " + base_url_ + " signed but its answer has no result.certificate (PEM)");
    return std::string(cert->as_string());
}

void CfsslApi::revoke(const std::string& serial_decimal, const std::string& authority_key_id, const std::string& reason) const {
    call("revoke",
         json::serialize(json::object{{"serial", serial_decimal}, {"authority_key_id", authority_key_id}, {"reason", reason}}));
}

std::string CfsslApi::info() const {
    json::object request;
    if (!label_.empty()) request["label"] = label_;
    const json::value result = call("info", json::serialize(request));
    const auto* cert = result.is_object() ? result.as_object().if_contains("certificate") : nullptr;
    if (!cert || !cert->is_string() || cert->as_string().empty())
        throw Error(CC_ERR_UNAVAILABLE, "cfssl at " + base_url_ + " (info) answered without result.certificate (PEM)");
    return std::string(cert->as_string());
}

std::optional<std::string> CfsslApi::crl() const {
    certconn::http::Request request;
    request.url = base_url_ + "/api/v1/cfssl/crl";
    const auto response = client_.perform(request);
    if (response.status == 404) return std::nullopt;
    if (response.status != 200)
        throw Error(certconn::http::status_of_http(response.status),
                    "cfssl at " + base_url_ + " (crl) answered HTTP " + std::to_string(response.status));
    std::error_code ec;
    const json::value parsed = json::parse(response.body, ec);
    const json::value* result = !ec && parsed.is_object() ? parsed.as_object().if_contains("result") : nullptr;
    if (!result || !result->is_string())
        throw Error(CC_ERR_UNAVAILABLE, "cfssl at " + base_url_ + " (crl) answered without result (base64 DER CRL)");
    try {
        return certconn::crypto::base64_decode(result->as_string());
    } catch (const std::exception&) {
        throw Error(CC_ERR_UNAVAILABLE, "cfssl at " + base_url_ + " (crl): result is not base64");
    }
}

std::string CfsslApi::fetch(const std::string& url) const {
    certconn::http::Request request;
    request.url = url;
    const auto response = client_.perform(request);
    if (response.status != 200)
        throw Error(response.status >= 500 || response.status == 404 ? CC_ERR_UNAVAILABLE
                                                                     : certconn::http::status_of_http(response.status),
                    "GET " + url + " answered HTTP " + std::to_string(response.status));
    return response.body;
}

}  // namespace cfssl_plugin
