// certconn::http over libcurl: one easy handle per call, TLS 1.2+, bounded answers.
#include <certconn/errno_message.hpp>
#include <certconn/http_client.hpp>
#include <certconn/sdk.hpp>

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>

namespace certconn::http {
namespace json = boost::json;

const char* const kSchemaProperties = R"json(
  "ca_file": {"type":"string","description":"PEM bundle that roots the server's certificate (absolute path; default: the system store)"},
  "client_certificate": {"type":"string","description":"TLS client certificate (absolute PEM path)"},
  "client_key": {"type":"string","secret":true,"description":"its key: absolute PEM path or pkcs11: URI"},
  "client_key_pin_file": {"type":"string","description":"file holding the PIN of a pkcs11: key or the passphrase of an encrypted PEM key"},
  "proxy": {"type":"string","description":"HTTP proxy, e.g. http://proxy.example.com:3128 (default: none; the environment is not read)"},
  "proxy_username": {"type":"string"},
  "proxy_password_file": {"type":"string","description":"file holding the proxy password"},
  "proxy_auth": {"type":"string","enum":["basic","ntlm","any"],"description":"how proxy_username/proxy_password_file are sent to the proxy (default basic; any: the safest scheme the proxy offers)"},
  "no_proxy": {"type":"string","description":"comma-separated hosts reached without the proxy: a name, .domain (its subdomains), an IP address or CIDR, or * (default: none; the environment is not read)"},
  "auth": {"type":"string","enum":["none","basic","ntlm","negotiate"],"description":"server authentication (negotiate: Kerberos through GSS-API, needs a keytab in KRB5_CLIENT_KTNAME)"},
  "username": {"type":"string","description":"account for basic/ntlm: user or DOMAIN\\user"},
  "password_file": {"type":"string","description":"file holding that account's password"},
  "connect_timeout_seconds": {"type":"integer","min":1,"max":300},
  "timeout_seconds": {"type":"integer","min":1,"max":3600},
  "max_response_bytes": {"type":"integer","min":1024,"max":268435456}
)json";

namespace {

void global_init() {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

sdk::Error config_error(std::string_view where, std::string_view key, const std::string& what) {
    std::string name = where.empty() ? std::string(key) : std::string(where) + "." + std::string(key);
    return sdk::Error(CC_ERR_INVALID_ARGUMENT, name + ": " + what);
}

std::string string_of(const json::object& o, std::string_view where, std::string_view key) {
    const auto* v = o.if_contains(key);
    if (!v) return {};
    if (!v->is_string()) throw config_error(where, key, "expected a string");
    return std::string(v->as_string());
}

long seconds_of(const json::object& o, std::string_view where, std::string_view key, long fallback) {
    const auto* v = o.if_contains(key);
    if (!v) return fallback;
    if (!v->is_int64() || v->as_int64() <= 0) throw config_error(where, key, "expected a positive integer");
    return static_cast<long>(v->as_int64());
}

/// A secret from a file: its first line (a trailing newline is not part of a password).
sdk::Secret secret_file(const json::object& o, std::string_view where, std::string_view key) {
    const std::string path = string_of(o, where, key);
    if (path.empty()) return {};
    std::ifstream in(path, std::ios::binary);
    if (!in) throw config_error(where, key, "cannot read '" + path + "': " + sdk::errno_message(errno));
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (text.size() > 4096) {
        sdk::wipe(text.data(), text.size());
        throw config_error(where, key, "'" + path + "' is larger than 4096 bytes; expected one line holding the secret");
    }
    const auto end = text.find_first_of("\r\n");
    sdk::Secret secret(std::string_view(text).substr(0, end));
    sdk::wipe(text.data(), text.size());
    if (secret.empty()) throw config_error(where, key, "'" + path + "' is empty; expected the secret on its first line");
    return secret;
}

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
           });
}

/// scheme://host[:port]/path of a URL, without user info or query: safe to put in a message.
std::string describe_url(const std::string& url) {
    std::unique_ptr<CURLU, decltype(&curl_url_cleanup)> u(curl_url(), curl_url_cleanup);
    if (!u || curl_url_set(u.get(), CURLUPART_URL, url.c_str(), 0) != CURLUE_OK) return "(unparsable URL)";
    auto part = [&](CURLUPart p) {
        char* text = nullptr;
        std::string out;
        if (curl_url_get(u.get(), p, &text, 0) == CURLUE_OK && text) out = text;
        curl_free(text);
        return out;
    };
    std::string out = part(CURLUPART_SCHEME) + "://" + part(CURLUPART_HOST);
    if (const auto port = part(CURLUPART_PORT); !port.empty()) out += ":" + port;
    return out + part(CURLUPART_PATH);
}

struct Transfer {
    Response response;
    std::size_t limit = 0;
    bool too_large = false;
};

size_t on_body(char* data, size_t size, size_t count, void* user) {
    auto* t = static_cast<Transfer*>(user);
    const size_t n = size * count;
    if (t->response.body.size() + n > t->limit) {
        t->too_large = true;
        return 0;  // aborts the transfer (CURLE_WRITE_ERROR)
    }
    t->response.body.append(data, n);
    return n;
}

size_t on_header(char* data, size_t size, size_t count, void* user) {
    auto* t = static_cast<Transfer*>(user);
    const size_t n = size * count;
    std::string_view line(data, n);
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r'))
        line.remove_suffix(1);
    if (line.starts_with("HTTP/")) {
        t->response.headers.clear();  // a new answer (after a 401 challenge, a 100 Continue)
        return n;
    }
    if (t->response.headers.size() >= 200 || line.size() > 16384) return n;  // bounded: ignore the rest
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) return n;
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
        value.remove_prefix(1);
    t->response.headers.push_back({std::string(line.substr(0, colon)), std::string(value)});
    return n;
}

cc_status status_of_curl(CURLcode code) {
    switch (code) {
        case CURLE_OPERATION_TIMEDOUT: return CC_ERR_TIMEOUT;
        case CURLE_URL_MALFORMAT:
        case CURLE_UNSUPPORTED_PROTOCOL:
        case CURLE_SSL_ENGINE_NOTFOUND:
        case CURLE_SSL_ENGINE_SETFAILED:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_BAD_FUNCTION_ARGUMENT: return CC_ERR_INVALID_ARGUMENT;
        default: return CC_ERR_UNAVAILABLE;
    }
}

struct SlistDeleter {
    void operator()(curl_slist* l) const noexcept { curl_slist_free_all(l); }
};

}  // namespace

Settings settings_from_config(const json::object& section, std::string_view where) {
    Settings s;
    s.ca_file = string_of(section, where, "ca_file");
    s.client_certificate = string_of(section, where, "client_certificate");
    s.client_key = string_of(section, where, "client_key");
    s.key_pin = secret_file(section, where, "client_key_pin_file");
    s.proxy = string_of(section, where, "proxy");
    s.proxy_username = string_of(section, where, "proxy_username");
    s.proxy_password = secret_file(section, where, "proxy_password_file");
    const std::string proxy_auth = string_of(section, where, "proxy_auth");
    if (proxy_auth.empty() || proxy_auth == "basic")
        s.proxy_auth = ProxyAuth::basic;
    else if (proxy_auth == "ntlm")
        s.proxy_auth = ProxyAuth::ntlm;
    else if (proxy_auth == "any")
        s.proxy_auth = ProxyAuth::any;
    else
        throw config_error(where, "proxy_auth", "'" + proxy_auth + "' is not one of basic, ntlm, any");
    if (s.proxy_auth == ProxyAuth::ntlm && (s.proxy_username.empty() || s.proxy_password.empty()))
        throw config_error(where, "proxy_auth", "'ntlm' needs proxy_username and proxy_password_file");
    s.no_proxy = string_of(section, where, "no_proxy");
    if (s.no_proxy.size() > 4096) throw config_error(where, "no_proxy", "longer than 4096 characters");
    if (std::any_of(s.no_proxy.begin(), s.no_proxy.end(), [](char ch) { return static_cast<unsigned char>(ch) < 0x20; }))
        throw config_error(where, "no_proxy", "expected comma-separated host names, without control characters");
    const std::string auth = string_of(section, where, "auth");
    if (auth.empty() || auth == "none")
        s.auth = Auth::none;
    else if (auth == "basic")
        s.auth = Auth::basic;
    else if (auth == "ntlm")
        s.auth = Auth::ntlm;
    else if (auth == "negotiate")
        s.auth = Auth::negotiate;
    else
        throw config_error(where, "auth", "'" + auth + "' is not one of none, basic, ntlm, negotiate");
    s.username = string_of(section, where, "username");
    s.password = secret_file(section, where, "password_file");
    if ((s.auth == Auth::basic || s.auth == Auth::ntlm) && (s.username.empty() || s.password.empty()))
        throw config_error(where, "auth", "'" + auth + "' needs username and password_file");
    if (!s.client_key.empty() && s.client_certificate.empty() && s.client_key.starts_with("pkcs11:"))
        throw config_error(where, "client_key", "a pkcs11: key needs client_certificate (the certificate as a PEM file)");
    s.connect_timeout = std::chrono::seconds(seconds_of(section, where, "connect_timeout_seconds", 10));
    s.timeout = std::chrono::seconds(seconds_of(section, where, "timeout_seconds", 60));
    s.max_response_bytes = static_cast<std::size_t>(seconds_of(section, where, "max_response_bytes", 4 << 20));
    for (const auto* key : {"ca_file", "client_certificate"}) {
        const std::string path = string_of(section, where, key);
        if (!path.empty() && path.front() != '/') throw config_error(where, key, "expected an absolute path, got '" + path + "'");
    }
    if (!s.client_key.empty() && !s.client_key.starts_with("pkcs11:") && s.client_key.front() != '/')
        throw config_error(where, "client_key", "expected an absolute PEM path or a pkcs11: URI");
    return s;
}

std::optional<std::string> Response::header(std::string_view name) const {
    for (const auto& h : headers)
        if (iequals(h.name, name)) return h.value;
    return std::nullopt;
}

std::optional<std::chrono::seconds> Response::retry_after() const {
    const auto value = header("Retry-After");
    if (!value || value->empty()) return std::nullopt;
    constexpr long kMax = 24L * 3600;
    if (std::all_of(value->begin(), value->end(), [](char c) { return c >= '0' && c <= '9'; })) {
        if (value->size() > 6) return std::chrono::seconds(kMax);
        return std::chrono::seconds(std::min(std::stol(*value), kMax));
    }
    const time_t when = curl_getdate(value->c_str(), nullptr);  // RFC 7231 HTTP-date
    if (when < 0) return std::nullopt;
    const time_t now = std::time(nullptr);
    return std::chrono::seconds(std::clamp<long>(static_cast<long>(when - now), 0, kMax));
}

Client::Client(Settings settings) : settings_(std::move(settings)) {
    global_init();
}

Client::~Client() = default;

Response Client::perform(const Request& request) const {
    std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> handle(curl_easy_init(), curl_easy_cleanup);
    if (!handle) throw sdk::Error(CC_ERR_INTERNAL, "libcurl could not create a handle");
    CURL* c = handle.get();
    const Settings& s = settings_;
    Transfer transfer;
    transfer.limit = s.max_response_bytes;
    char error_text[CURL_ERROR_SIZE] = {};
    std::unique_ptr<curl_slist, SlistDeleter> headers;
    for (const auto& h : request.headers) {
        const std::string line = h.name + ": " + h.value;
        curl_slist* next = curl_slist_append(headers.get(), line.c_str());
        if (!next) throw sdk::Error(CC_ERR_INTERNAL, "out of memory building HTTP headers");
        (void)headers.release();
        headers.reset(next);
    }

    curl_easy_setopt(c, CURLOPT_URL, request.url.c_str());
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error_text);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, s.user_agent.c_str());
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(s.connect_timeout.count()));
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(s.timeout.count()));
    curl_easy_setopt(c, CURLOPT_SSLVERSION, static_cast<long>(CURL_SSLVERSION_TLSv1_2));
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(s.max_response_bytes));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &transfer);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &transfer);
    if (!s.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, s.ca_file.c_str());
    // An empty proxy turns off the http_proxy/https_proxy environment too: only configuration decides.
    curl_easy_setopt(c, CURLOPT_PROXY, s.proxy.c_str());
    // Likewise an empty no_proxy: the no_proxy environment variable is not read.
    curl_easy_setopt(c, CURLOPT_NOPROXY, s.no_proxy.c_str());
    if (!s.proxy_username.empty()) {
        curl_easy_setopt(c, CURLOPT_PROXYUSERNAME, s.proxy_username.c_str());
        curl_easy_setopt(c, CURLOPT_PROXYPASSWORD, s.proxy_password.reveal_c_str());
        const unsigned long scheme = s.proxy_auth == ProxyAuth::ntlm  ? CURLAUTH_NTLM
                                     : s.proxy_auth == ProxyAuth::any ? CURLAUTH_ANY
                                                                      : CURLAUTH_BASIC;
        curl_easy_setopt(c, CURLOPT_PROXYAUTH, scheme);
    }
    // Every call has its own easy handle, hence its own connection: a connection that a
    // restarted proxy dropped is never reused, and the next call connects afresh
    // (tests/unit/http_client_test.cpp kills and restarts tinyproxy between two calls).
    if (!s.client_certificate.empty()) {
        curl_easy_setopt(c, CURLOPT_SSLCERT, s.client_certificate.c_str());
        curl_easy_setopt(c, CURLOPT_SSLCERTTYPE, "PEM");
    }
    if (!s.client_key.empty()) {
        if (s.client_key.starts_with("pkcs11:")) {
            // The key stays in the token: OpenSSL's pkcs11 engine (libp11) signs the handshake.
            curl_easy_setopt(c, CURLOPT_SSLENGINE, "pkcs11");
            curl_easy_setopt(c, CURLOPT_SSLKEYTYPE, "ENG");
        } else {
            curl_easy_setopt(c, CURLOPT_SSLKEYTYPE, "PEM");
        }
        curl_easy_setopt(c, CURLOPT_SSLKEY, s.client_key.c_str());
    }
    // libcurl copies option strings; the copies die with the handle (curl_easy_cleanup).
    if (!s.key_pin.empty()) curl_easy_setopt(c, CURLOPT_KEYPASSWD, s.key_pin.reveal_c_str());
    switch (s.auth) {
        case Auth::none: break;
        case Auth::basic:
        case Auth::ntlm:
            curl_easy_setopt(c, CURLOPT_HTTPAUTH, s.auth == Auth::basic ? CURLAUTH_BASIC : CURLAUTH_NTLM);
            curl_easy_setopt(c, CURLOPT_USERNAME, s.username.c_str());
            curl_easy_setopt(c, CURLOPT_PASSWORD, s.password.reveal_c_str());
            break;
        case Auth::negotiate:
            curl_easy_setopt(c, CURLOPT_HTTPAUTH, CURLAUTH_NEGOTIATE);
            curl_easy_setopt(c, CURLOPT_USERPWD, ":");  // the credentials come from the Kerberos cache/keytab
            break;
    }
    if (request.method == "GET") {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    } else {
        if (request.method != "POST") curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, request.method.c_str());
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, request.body.data());
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
    }
    if (headers) curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());

    const CURLcode rc = curl_easy_perform(c);
    const std::string where = request.method + " " + describe_url(request.url);
    if (transfer.too_large || rc == CURLE_FILESIZE_EXCEEDED)
        throw sdk::Error(CC_ERR_UNAVAILABLE, where + ": the answer is larger than " + std::to_string(s.max_response_bytes) +
                                                 " bytes (max_response_bytes)");
    if (rc != CURLE_OK) {
        std::string detail = error_text[0] ? error_text : curl_easy_strerror(rc);
        while (!detail.empty() && (detail.back() == '\n' || detail.back() == '\r'))
            detail.pop_back();
        throw sdk::Error(status_of_curl(rc), where + ": " + detail);
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &transfer.response.status);
    return std::move(transfer.response);
}

cc_status status_of_http(long http_status) {
    if (http_status >= 200 && http_status < 300) return CC_OK;
    if (http_status == 429) return CC_ERR_BUSY;
    if (http_status == 408 || http_status >= 500) return CC_ERR_UNAVAILABLE;
    if (http_status == 401 || http_status == 403) return CC_ERR_DENIED;
    if (http_status == 404) return CC_ERR_NOT_FOUND;
    if (http_status == 409) return CC_ERR_CONFLICT;
    return CC_ERR_INVALID_ARGUMENT;
}

std::string url_escape(std::string_view text) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(text.size());
    for (const unsigned char ch : text) {
        if (std::isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            out += static_cast<char>(ch);
        } else {
            out += '%';
            out += kHex[ch >> 4];
            out += kHex[ch & 15];
        }
    }
    return out;
}

std::string form_encode(const std::vector<std::pair<std::string, std::string>>& fields) {
    std::string out;
    for (const auto& [name, value] : fields) {
        if (!out.empty()) out += '&';
        out += url_escape(name) + "=" + url_escape(value);
    }
    return out;
}

}  // namespace certconn::http
