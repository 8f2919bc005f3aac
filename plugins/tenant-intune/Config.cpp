#include "Config.hpp"

#include <certconn/sdk.hpp>

#include <boost/json.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <fstream>
#include <iterator>

namespace certconn::intune {

namespace json = boost::json;

namespace {

constexpr const char* kWhere = "tenant intune";

sdk::Error bad(const std::string& key, const std::string& what) {
    return sdk::Error(CC_ERR_INVALID_ARGUMENT, std::string(kWhere) + ": " + key + ": " + what);
}

std::string string_key(const json::object& o, const std::string& key, const std::string& prefix = {}) {
    const auto* v = o.if_contains(key);
    if (!v) return {};
    if (!v->is_string()) throw bad(prefix + key, "expected a string");
    return std::string(v->get_string());
}

bool bool_key(const json::object& o, const std::string& key, bool fallback, const std::string& prefix = {}) {
    const auto* v = o.if_contains(key);
    if (!v) return fallback;
    if (!v->is_bool()) throw bad(prefix + key, "expected true or false");
    return v->get_bool();
}

int int_key(const json::object& o, const std::string& key, int fallback, int min, int max, const std::string& prefix = {}) {
    const auto* v = o.if_contains(key);
    if (!v) return fallback;
    if (!v->is_int64() || v->get_int64() < min || v->get_int64() > max)
        throw bad(prefix + key, "expected an integer from " + std::to_string(min) + " to " + std::to_string(max));
    return static_cast<int>(v->get_int64());
}

bool is_guid(const std::string& s) {
    if (s.size() != 36) return false;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') return false;
        } else if (!std::isxdigit(static_cast<unsigned char>(s[i]))) {
            return false;
        }
    }
    return true;
}

bool is_domain(const std::string& s) {
    if (s.empty() || s.size() > 253 || s.find('.') == std::string::npos || s.front() == '.' || s.back() == '.') return false;
    return std::all_of(s.begin(), s.end(),
                       [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-'; });
}

/// An https:// base URL without a trailing slash.
std::string base_url(const json::object& o, const std::string& key, const std::string& fallback) {
    std::string url = o.contains(key) ? string_key(o, key) : fallback;
    if (url.rfind("https://", 0) != 0 || url.size() <= 8)
        throw bad(key,
                  "expected an https:// URL (Intune and Entra ID are reached over TLS only), got '" + url.substr(0, 200) + "'");
    if (url.find_first_of("?# \t\r\n") != std::string::npos) throw bad(key, "expected a base URL without query or spaces");
    while (url.back() == '/')
        url.pop_back();
    return url;
}

/// The first line of `path`: the client secret (never put in a message).
sdk::Secret read_secret(const std::string& path) {
    if (path.empty() || path.front() != '/') throw bad("client_secret_file", "expected an absolute path, got '" + path + "'");
    std::ifstream in(path, std::ios::binary);
    if (!in) throw bad("client_secret_file", "cannot read '" + path + "'");
    std::string text;
    text.reserve(512);
    char c;
    while (text.size() <= 4096 && in.get(c))
        text.push_back(c);
    if (text.size() > 4096) {
        sdk::wipe(text.data(), text.size());
        throw bad("client_secret_file", "'" + path + "' is larger than 4096 bytes; expected one line holding the client secret");
    }
    const auto end = text.find_first_of("\r\n");
    std::string_view line = std::string_view(text).substr(0, end);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t'))
        line.remove_suffix(1);
    sdk::Secret secret(line);
    sdk::wipe(text.data(), text.size());
    if (secret.empty()) throw bad("client_secret_file", "'" + path + "' is empty; expected the client secret on its first line");
    return secret;
}

}  // namespace

bool is_reason_name(const std::string& reason) {
    static const std::array<const char*, 9> names = {"unspecified",        "keyCompromise",      "cACompromise",
                                                     "affiliationChanged", "superseded",         "cessationOfOperation",
                                                     "certificateHold",    "privilegeWithdrawn", "aACompromise"};
    return std::any_of(names.begin(), names.end(), [&](const char* n) { return reason == n; });
}

std::string RevocationConfig::ca_for(const std::string& ca_configuration) const {
    if (const auto it = ca_map.find(ca_configuration); it != ca_map.end()) return it->second;
    return default_ca;
}

std::string Config::token_endpoint() const {
    return login_url + "/" + tenant_id + "/oauth2/v2.0/token";
}

std::string Config::graph_scope() const {
    return graph_url + "/.default";
}

Config parse_config(const json::object& section) {
    Config c;
    c.tenant_id = string_key(section, "tenant_id");
    if (c.tenant_id.empty())
        throw bad("tenant_id",
                  "required: the directory (tenant) id, a GUID, or a verified domain such as contoso.onmicrosoft.com");
    if (!is_guid(c.tenant_id) && !is_domain(c.tenant_id))
        throw bad("tenant_id", "expected a GUID or a domain name, got '" + c.tenant_id.substr(0, 100) + "'");
    c.client_id = string_key(section, "client_id");
    if (!is_guid(c.client_id))
        throw bad("client_id", c.client_id.empty()
                                   ? "required: the application (client) id of the app registration, a GUID"
                                   : "expected the application (client) id, a GUID, got '" + c.client_id.substr(0, 100) + "'");

    c.client_secret_file = string_key(section, "client_secret_file");
    const std::string cert = string_key(section, "credential_certificate");
    const std::string key = string_key(section, "credential_key");
    c.certificate_credential = !cert.empty() || !key.empty();
    if (c.certificate_credential && !c.client_secret_file.empty())
        throw bad("client_secret_file",
                  "configure exactly one credential: client_secret_file, or credential_certificate with "
                  "credential_key (not both)");
    if (!c.certificate_credential && c.client_secret_file.empty())
        throw bad("client_secret_file",
                  "a credential is required: client_secret_file, or credential_certificate with credential_key");
    if (c.certificate_credential) {
        if (cert.empty())
            throw bad("credential_certificate", "required with credential_key: the PEM certificate registered on the app");
        if (key.empty()) throw bad("credential_key", "required with credential_certificate: a PEM key file or a pkcs11: URI");
        if (cert.front() != '/') throw bad("credential_certificate", "expected an absolute path");
        if (key.front() != '/' && key.rfind("pkcs11:", 0) != 0)
            throw bad("credential_key", "expected an absolute path or a pkcs11: URI");
    } else {
        c.client_secret = read_secret(c.client_secret_file);
        for (const char* k : {"credential_key_pin_file", "credential_renewal", "renew_before_days", "warn_before_days",
                              "credential_validity_days", "application_object_id"})
            if (section.contains(k) && !(std::string(k) == "credential_renewal" && !bool_key(section, k, false)))
                throw bad(k, "applies only to a certificate credential (credential_certificate), not to client_secret_file");
    }
    c.credential_renewal = c.certificate_credential && bool_key(section, "credential_renewal", true);
    const int renew_before = int_key(section, "renew_before_days", 30, 1, 3650);
    const int warn_before = int_key(section, "warn_before_days", 14, 1, 3650);
    const int validity = int_key(section, "credential_validity_days", 365, 2, 3650);
    if (warn_before > renew_before)
        throw bad("warn_before_days", "expected at most renew_before_days (" + std::to_string(renew_before) +
                                          "): the warning is for a renewal that keeps failing");
    if (renew_before >= validity)
        throw bad("renew_before_days", "expected less than credential_validity_days (" + std::to_string(validity) + ")");
    c.application_object_id = string_key(section, "application_object_id");
    if (!c.application_object_id.empty() && !is_guid(c.application_object_id))
        throw bad("application_object_id", "expected the application's object id, a GUID");

    c.login_url = base_url(section, "login_url", c.login_url);
    c.graph_url = base_url(section, "graph_url", c.graph_url);
    if (section.contains("intune_scope")) c.intune_scope = string_key(section, "intune_scope");
    if (c.intune_scope.empty() || c.intune_scope.find_first_of(" \t\r\n") != std::string::npos)
        throw bad("intune_scope", "expected one scope such as https://api.manage.microsoft.com//.default");

    c.allow_renewal = bool_key(section, "allow_renewal", false);
    c.ca_configuration = string_key(section, "ca_configuration");

    for (const char* k : {"auth", "username", "password_file"})
        if (section.contains(k))
            throw bad(k,
                      "Intune and Entra ID take bearer tokens, not server authentication; remove it (the proxy "
                      "account is proxy_username / proxy_password_file)");
    try {
        c.http = http::settings_from_config(section, kWhere);
    } catch (const sdk::Error& e) {
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, e.what());
    } catch (const std::exception& e) {
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, std::string(kWhere) + ": " + e.what());
    }
    c.http.user_agent = "certconnector-intune/0.1.0";
    // A deadline on every call: a dead Intune never holds a claim or delivery thread for long.
    if (!section.contains("timeout_seconds")) c.http.timeout = std::chrono::seconds(30);

    if (const auto* r = section.if_contains("revocation")) {
        const std::string p = "revocation.";
        if (!r->is_object()) throw bad("revocation", "expected a table");
        const json::object& o = r->get_object();
        RevocationConfig& rc = c.revocation;
        rc.enabled = bool_key(o, "enabled", true, p);
        rc.batch_size = int_key(o, "batch_size", 100, 1, 500, p);
        rc.interval_seconds = int_key(o, "interval_seconds", 300, 1, 86400, p);
        rc.issuer_name = string_key(o, "issuer_name", p);
        rc.default_ca = string_key(o, "default_ca", p);
        if (o.contains("reason")) rc.reason = string_key(o, "reason", p);
        if (!is_reason_name(rc.reason))
            throw bad(p + "reason", "unknown RFC 5280 reason '" + rc.reason.substr(0, 60) +
                                        "' (expected unspecified, keyCompromise, cACompromise, affiliationChanged, superseded, "
                                        "cessationOfOperation, certificateHold, privilegeWithdrawn or aACompromise)");
        if (const auto* m = o.if_contains("ca_map")) {
            if (!m->is_object()) throw bad(p + "ca_map", "expected a table: \"<caConfiguration>\" = \"<our CA name>\"");
            for (const auto& [from, to] : m->get_object()) {
                if (!to.is_string() || to.get_string().empty())
                    throw bad(p + "ca_map." + std::string(from), "expected the name of a [ca.<name>] section");
                rc.ca_map[std::string(from)] = std::string(to.get_string());
            }
        }
    }
    return c;
}

const char* config_schema() {
    static const std::string text = std::string(R"json({"type":"table","keys":{)json") + http::kSchemaProperties + R"json(,
  "tenant_id": {"type":"string","required":true,"description":"Entra ID directory (tenant) id, a GUID or a verified domain"},
  "client_id": {"type":"string","required":true,"description":"application (client) id of the connector's app registration"},
  "client_secret_file": {"type":"string","description":"file whose first line is the app's client secret"},
  "credential_certificate": {"type":"string","description":"PEM certificate registered as the app's certificate credential"},
  "credential_key": {"type":"string","secret":true,"description":"its key: PEM file (0600) or a pkcs11: URI"},
  "credential_key_pin_file": {"type":"string","description":"file holding the token PIN or the PEM key's passphrase"},
  "credential_renewal": {"type":"boolean","description":"renew the certificate credential before it expires (default true)"},
  "renew_before_days": {"type":"integer","min":1,"max":3650,"description":"renew when fewer days remain (default 30)"},
  "warn_before_days": {"type":"integer","min":1,"max":3650,"description":"warn when renewal keeps failing this close to expiry (default 14)"},
  "credential_validity_days": {"type":"integer","min":2,"max":3650,"description":"validity of a renewed credential (default 365)"},
  "application_object_id": {"type":"string","description":"object id of the app registration (default: looked up by client_id)"},
  "login_url": {"type":"string","description":"Entra ID authority (default https://login.microsoftonline.com)"},
  "graph_url": {"type":"string","description":"Microsoft Graph (default https://graph.microsoft.com)"},
  "intune_scope": {"type":"string","description":"token scope of the Intune services (default https://api.manage.microsoft.com//.default)"},
  "allow_renewal": {"type":"boolean","description":"SCEP renewals are allowed (default false: Intune has no API to validate them)"},
  "ca_configuration": {"type":"string","description":"caConfiguration reported in successNotification (default: our CA's name)"},
  "revocation": {"type":"table","keys":{
    "enabled": {"type":"boolean","description":"download revocation requests from Intune (default true)"},
    "batch_size": {"type":"integer","min":1,"max":500,"description":"maxRequests per download (default 100)"},
    "interval_seconds": {"type":"integer","min":1,"max":86400,"description":"seconds between downloads (default 300)"},
    "issuer_name": {"type":"string","description":"issuerName filter of downloadRevocationRequests (default none)"},
    "default_ca": {"type":"string","description":"our CA for a caConfiguration not in ca_map (default: none, such requests fail with 4002)"},
    "reason": {"type":"string","enum":["unspecified","keyCompromise","cACompromise","affiliationChanged","superseded","cessationOfOperation","certificateHold","privilegeWithdrawn","aACompromise"],"description":"RFC 5280 reason of every revocation (default unspecified)"},
    "ca_map": {"type":"table","values":{"type":"string"},"description":"caConfiguration as Intune sends it -> the name of a [ca.<name>]"}
  }}
}})json";
    return text.c_str();
}

}  // namespace certconn::intune
