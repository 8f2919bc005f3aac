#include "Protocol.hpp"

#include <boost/json.hpp>

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <cctype>

namespace certconn::intune {

namespace json = boost::json;

namespace {

struct NamedCode {
    const char* name;
    int code;
};
// CARequestErrorCodes of Microsoft's Intune-Resource-Access clients (Java enum names, which the
// C# client sends as strings).
constexpr std::array<NamedCode, 14> kCodes = {{{"None", 0},
                                               {"NonRetryableServiceException", 4000},
                                               {"DataSerializationError", 4001},
                                               {"ParameterDataInvalidError", 4002},
                                               {"CryptographyError", 4003},
                                               {"CertificateNotFoundError", 4004},
                                               {"ConflictError", 4005},
                                               {"NotSupportedError", 4006},
                                               {"PayloadTooLargeError", 4007},
                                               {"RetryableServiceException", 4100},
                                               {"ServiceUnavailableException", 4101},
                                               {"ServiceTooBusyException", 4102},
                                               {"AuthenticationException", 4103},
                                               {"", -1}}};

bool known_code(std::int64_t c) {
    return std::any_of(kCodes.begin(), kCodes.end(), [&](const NamedCode& n) { return n.name[0] != '\0' && n.code == c; });
}

std::string string_field(const json::object& o, const char* key) {
    const auto* v = o.if_contains(key);
    return v && v->is_string() ? std::string(v->get_string()) : std::string();
}

}  // namespace

std::string truncate_utf8(std::string_view text, std::size_t max) {
    if (text.size() <= max) return std::string(text);
    std::size_t n = max;
    // Step back over continuation bytes (10xxxxxx) so no character is cut in half.
    while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80)
        --n;
    return std::string(text.substr(0, n));
}

std::string printable(std::string_view text, std::size_t max) {
    std::string out = truncate_utf8(text, max);
    for (auto& c : out)
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
    if (text.size() > max) out += "...";
    return out;
}

std::string odata_error(std::string_view body) {
    if (body.empty() || body.size() > std::size_t{256} * 1024) return {};
    std::error_code ec;
    const json::value v = json::parse(body, ec);
    if (ec || !v.is_object()) return {};
    const auto* e = v.get_object().if_contains("error");
    if (!e) return {};
    if (e->is_string()) {
        // Entra ID's token endpoint: {"error": "invalid_client", "error_description": "AADSTS..."}
        std::string out = printable(e->get_string(), 80);
        if (const auto* d = v.get_object().if_contains("error_description"); d && d->is_string()) {
            std::string_view desc = d->get_string();
            desc = desc.substr(0, desc.find_first_of("\r\n"));  // the trace/correlation ids follow
            out += ": " + printable(desc, 300);
        }
        return out;
    }
    if (!e->is_object()) return {};
    const std::string code = printable(string_field(e->get_object(), "code"), 80);
    const std::string message = printable(string_field(e->get_object(), "message"), 300);
    if (code.empty() && message.empty()) return {};
    return code.empty() ? message : message.empty() ? code : code + ": " + message;
}

sdk::Error http_error(const std::string& what, long status, std::string_view body,
                      std::optional<std::chrono::seconds> retry_after) {
    cc_status code = CC_ERR_INVALID_ARGUMENT;
    if (status == 429)
        code = CC_ERR_BUSY;
    else if (status == 408 || status == 504)
        code = CC_ERR_TIMEOUT;
    else if (status >= 500)
        code = CC_ERR_UNAVAILABLE;
    else if (status == 401 || status == 403)
        code = CC_ERR_DENIED;
    else if (status == 404)
        code = CC_ERR_NOT_FOUND;
    else if (status == 409)
        code = CC_ERR_CONFLICT;
    std::string message = what + ": HTTP " + std::to_string(status);
    if (const std::string odata = odata_error(body); !odata.empty()) message += " (" + odata + ")";
    if (status == 401 || status == 403) message += "; check the app registration's API permissions and admin consent";
    if ((status == 429 || status == 503) && retry_after)
        message += " (retry after " + std::to_string(retry_after->count()) + " s)";
    return sdk::Error(code, message);
}

std::optional<int> revocation_error_code(const json::value& v) {
    if (v.is_int64() && known_code(v.get_int64())) return static_cast<int>(v.get_int64());
    if (v.is_uint64() && v.get_uint64() < 10000 && known_code(static_cast<std::int64_t>(v.get_uint64())))
        return static_cast<int>(v.get_uint64());
    if (!v.is_string()) return std::nullopt;
    const std::string_view s = v.get_string();
    if (!s.empty() && s.size() <= 5 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        const int n = std::stoi(std::string(s));
        if (known_code(n)) return n;
        return std::nullopt;
    }
    for (const auto& n : kCodes)
        if (n.name[0] != '\0' && s == n.name) return n.code;
    return std::nullopt;
}

json::object upload_entry(const std::string& request_context, const json::value& result) {
    json::object out{{"requestContext", request_context}};
    const json::object empty;
    const json::object& r = result.is_object() ? result.get_object() : empty;
    const std::string status = string_field(r, "status");
    const auto* already = r.if_contains("already_revoked");
    const bool already_revoked = already && already->is_bool() && already->get_bool();
    if (status == "succeeded" && !already_revoked) {
        out["succeeded"] = true;
        out["errorCode"] = "0";
        out["errorMessage"] = "";
        return out;
    }
    out["succeeded"] = false;
    if (status == "succeeded") {  // already revoked: Intune's "conflict"
        out["errorCode"] = "4005";
        std::string note = string_field(r, "note");
        if (note.empty()) note = "the certificate was already revoked";
        out["errorMessage"] = truncate_utf8(note, kMaxErrorMessage);
        return out;
    }
    int code = 4000;
    if (const auto* c = r.if_contains("error_code"))
        if (auto known = revocation_error_code(*c); known && *known != 0) code = *known;
    std::string message;
    if (const auto* e = r.if_contains("error"); e && e->is_object()) {
        message = string_field(e->get_object(), "message");
        if (message.empty()) message = string_field(e->get_object(), "code");
    } else if (e && e->is_string()) {
        message = std::string(e->get_string());
    }
    if (status != "failed" && status != "succeeded") message = "the revoke job ended without a result status";
    if (message.empty()) message = "revocation failed";
    out["errorCode"] = std::to_string(code);
    out["errorMessage"] = truncate_utf8(message, kMaxErrorMessage);
    return out;
}

std::string job_id_for(const std::string& request_context) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_Digest(request_context.data(), request_context.size(), digest, &n, EVP_sha256(), nullptr);
    static const char* hex = "0123456789abcdef";
    std::string out = "intune-rev-";
    for (unsigned int i = 0; i < 16 && i < n; ++i) {
        out += hex[digest[i] >> 4];
        out += hex[digest[i] & 0xf];
    }
    return out;
}

ScepReply scep_reply(const json::value& answer, const std::string& what) {
    if (!answer.is_object()) throw sdk::Error(CC_ERR_UNAVAILABLE, what + ": the answer is not a JSON object");
    const json::object& o = answer.get_object();
    const auto* code = o.if_contains("code");
    if (!code || !code->is_string()) throw sdk::Error(CC_ERR_UNAVAILABLE, what + ": the answer has no string field 'code'");
    const std::string_view c = code->get_string();
    if (c.empty() || c.size() > 100 ||
        !std::all_of(c.begin(), c.end(), [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_'; }))
        throw sdk::Error(CC_ERR_UNAVAILABLE, what + ": field 'code' is not an Intune result code ('" + printable(c, 60) + "')");
    ScepReply reply{std::string(c), {}};
    if (const auto* d = o.if_contains("errorDescription")) {
        if (d->is_string())
            reply.description = printable(d->get_string(), kMaxErrorMessage);
        else if (!d->is_null())
            throw sdk::Error(CC_ERR_UNAVAILABLE, what + ": field 'errorDescription' is not a string");
    }
    return reply;
}

std::vector<RevocationRequest> revocation_requests(const json::value& answer, std::size_t max) {
    const std::string what = "Intune downloadRevocationRequests";
    if (!answer.is_object()) throw sdk::Error(CC_ERR_UNAVAILABLE, what + ": the answer is not a JSON object");
    const auto* value = answer.get_object().if_contains("value");
    if (!value || !value->is_array()) throw sdk::Error(CC_ERR_UNAVAILABLE, what + ": the answer has no array 'value'");
    const json::array& items = value->get_array();
    if (items.size() > max)
        throw sdk::Error(CC_ERR_UNAVAILABLE, what + ": " + std::to_string(items.size()) +
                                                 " requests answered, more than maxRequests " + std::to_string(max));
    std::vector<RevocationRequest> out;
    for (std::size_t i = 0; i < items.size(); ++i) {
        const std::string at = what + ": value[" + std::to_string(i) + "]";
        if (!items[i].is_object()) throw sdk::Error(CC_ERR_UNAVAILABLE, at + " is not an object");
        const json::object& o = items[i].get_object();
        auto field = [&](const char* key, bool required, std::size_t limit) {
            const auto* v = o.if_contains(key);
            if (!v || v->is_null()) {
                if (required) throw sdk::Error(CC_ERR_UNAVAILABLE, at + ": field '" + key + "' is missing");
                return std::string();
            }
            if (!v->is_string()) throw sdk::Error(CC_ERR_UNAVAILABLE, at + ": field '" + key + "' is not a string");
            if (v->get_string().size() > limit)
                throw sdk::Error(CC_ERR_UNAVAILABLE,
                                 at + ": field '" + key + "' is longer than " + std::to_string(limit) + " characters");
            return std::string(v->get_string());
        };
        RevocationRequest r;
        r.request_context = field("requestContext", true, 1024);
        if (r.request_context.empty()) throw sdk::Error(CC_ERR_UNAVAILABLE, at + ": field 'requestContext' is empty");
        r.serial_number = field("serialNumber", false, 256);
        r.issuer_name = field("issuerName", false, 2048);
        r.ca_configuration = field("caConfiguration", false, 1024);
        out.push_back(std::move(r));
    }
    return out;
}

}  // namespace certconn::intune
