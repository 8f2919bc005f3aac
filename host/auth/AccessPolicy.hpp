// Who is asking: turns what the transport saw (RequestOrigin) and the Authorization header into
// a principal with scopes. Only the administrator is privileged: the admin socket admits root,
// the service account and members of [auth] admin_group (checked with SO_PEERCRED); a TCP peer,
// loopback included, is anonymous unless it presents a configured bearer token or TLS client
// certificate. See docs/security.md.
#pragma once

#include "config/Config.hpp"
#include "http/HttpServer.hpp"

#include <certconn/abi.h>

#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace certconn::host {

struct Principal {
    cc_request_origin origin = CC_ORIGIN_ANONYMOUS;
    std::string name;                 // "uid:0", "token:mdm", "certificate:mdm"; "" when anonymous
    std::vector<std::string> scopes;  // "*" = every scope
    /// Set when the caller presented something that must not be served at all: an admin-socket
    /// peer outside the allowed users, or a bearer token that matches no configured one.
    bool refused = false;
    std::string refusal;  // why, safe to log (never the token)

    bool authenticated() const { return origin != CC_ORIGIN_ANONYMOUS && !refused; }
    /// Whether the principal may use something that needs `scope` ("" = public).
    bool holds(std::string_view scope) const;
};

class AccessPolicy {
public:
    /// `service_account` may be empty (then the daemon's own user counts as it).
    AccessPolicy(AuthSettings settings, std::string service_account);

    Principal authenticate(const RequestOrigin& origin, std::string_view authorization_header) const;

    /// Whether `uid` may use the admin socket; `why` says why not.
    bool admin_peer_allowed(long uid, std::string& why) const;

private:
    AuthSettings settings_;
    std::string service_account_;
    uid_t service_uid_;
    bool has_service_uid_ = false;
};

/// Lower-case hex SHA-256 of `data`.
std::string sha256_hex(std::string_view data);

/// A new random bearer token ("cct_" + 43 base64url characters, 256 bits).
std::string new_bearer_token();

}  // namespace certconn::host
