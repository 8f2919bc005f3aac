// The [tenant.<name>] section of a tenant with plugin = "intune": read once, validated at
// construction (every error names the key), then immutable.
#pragma once

#include <certconn/http_client.hpp>
#include <certconn/secret.hpp>

#include <boost/json/object.hpp>

#include <map>
#include <string>

namespace certconn::intune {

struct RevocationConfig {
    bool enabled = true;
    int batch_size = 100;        ///< downloadRevocationRequests maxRequests, 1..500
    int interval_seconds = 300;  ///< between two downloads (min 1)
    std::string issuer_name;     ///< issuerName filter; empty = null
    std::string default_ca;      ///< our CA for a caConfiguration not in ca_map; empty = none
    std::string reason = "unspecified";
    std::map<std::string, std::string> ca_map;  ///< caConfiguration -> [ca.<name>]

    /// Our CA for `ca_configuration`, or empty when neither ca_map nor default_ca names one.
    std::string ca_for(const std::string& ca_configuration) const;
};

struct Config {
    std::string tenant_id;
    std::string client_id;
    std::string client_secret_file;  ///< empty with a certificate credential
    sdk::Secret client_secret;       ///< the first line of client_secret_file
    bool certificate_credential = false;
    bool credential_renewal = false;
    std::string login_url = "https://login.microsoftonline.com";
    std::string graph_url = "https://graph.microsoft.com";
    std::string intune_scope = "https://api.manage.microsoft.com//.default";
    std::string application_object_id;
    bool allow_renewal = false;
    std::string ca_configuration;  ///< empty: our CA's name
    RevocationConfig revocation;
    http::Settings http;

    /// {login_url}/{tenant_id}/oauth2/v2.0/token
    std::string token_endpoint() const;
    /// {graph_url}/.default
    std::string graph_scope() const;
};

/// Reads and checks `section`. Throws sdk::Error(CC_ERR_INVALID_ARGUMENT, "tenant intune: <key>: ...").
Config parse_config(const boost::json::object& section);

/// The JSON schema of the section (docs/plugin-sdk.md, "Configuration schema").
const char* config_schema();

/// The RFC 5280 reason names the revoke feature accepts.
bool is_reason_name(const std::string& reason);

}  // namespace certconn::intune
