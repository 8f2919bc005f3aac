#include "auth/AccessPolicy.hpp"

#include "daemon/Accounts.hpp"

#include <certconn/crypto.hpp>
#include <certconn/secret.hpp>

#include <openssl/evp.h>

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <stdexcept>

namespace certconn::host {

namespace {

/// The user name of `uid` and its supplementary groups, or false when there is no such user.
bool groups_of(uid_t uid, std::vector<gid_t>& groups) {
    const auto account = account_of(uid);
    if (!account) return false;
    int count = 64;
    groups.assign(static_cast<std::size_t>(count), 0);
    if (getgrouplist(account->name.c_str(), account->gid, groups.data(), &count) == -1) {
        groups.assign(static_cast<std::size_t>(count), 0);
        if (getgrouplist(account->name.c_str(), account->gid, groups.data(), &count) == -1) return false;
    }
    groups.resize(static_cast<std::size_t>(count));
    return true;
}

}  // namespace

bool Principal::holds(std::string_view scope) const {
    if (refused) return false;
    if (scope.empty()) return true;
    return std::any_of(scopes.begin(), scopes.end(), [&](const std::string& s) { return s == scope || s == CC_SCOPE_ALL; });
}

std::string sha256_hex(std::string_view data) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr) != 1)
        throw std::runtime_error("SHA-256 failed");
    return crypto::hex_encode(std::string_view(reinterpret_cast<const char*>(digest), len));
}

std::string new_bearer_token() {
    // 256 random bits, base64url without padding.
    std::string text = crypto::base64_encode(crypto::random_bytes(32));
    while (!text.empty() && text.back() == '=')
        text.pop_back();
    for (char& c : text)
        c = c == '+' ? '-' : c == '/' ? '_' : c;
    return "cct_" + text;
}

AccessPolicy::AccessPolicy(AuthSettings settings, std::string service_account)
    : settings_(std::move(settings)), service_account_(std::move(service_account)), service_uid_(geteuid()) {
    if (!service_account_.empty()) {
        if (const auto account = account_named(service_account_)) {
            service_uid_ = account->uid;
            has_service_uid_ = true;
        }
    }
}

bool AccessPolicy::admin_peer_allowed(long uid, std::string& why) const {
    if (uid < 0) {
        why = "the peer's credentials are unknown";
        return false;
    }
    const auto u = static_cast<uid_t>(uid);
    // root, the service account, and the user the daemon runs as (the same unless misconfigured).
    if (u == 0 || u == geteuid() || (has_service_uid_ && u == service_uid_)) return true;
    if (!settings_.admin_group.empty()) {
        std::array<char, 16384> buffer{};
        group gr{};
        group* found = nullptr;
        std::vector<gid_t> groups;
        if (getgrnam_r(settings_.admin_group.c_str(), &gr, buffer.data(), buffer.size(), &found) == 0 && found != nullptr &&
            groups_of(u, groups) && std::find(groups.begin(), groups.end(), gr.gr_gid) != groups.end())
            return true;
    }
    why = "uid " + std::to_string(uid) + " is not root, the service account" +
          (service_account_.empty() ? std::string() : " '" + service_account_ + "'") +
          (settings_.admin_group.empty() ? std::string(" (no [auth] admin_group is configured)")
                                         : " or a member of group '" + settings_.admin_group + "'");
    return false;
}

Principal AccessPolicy::authenticate(const RequestOrigin& origin, std::string_view authorization) const {
    Principal p;
    if (origin.admin) {
        std::string why;
        if (!admin_peer_allowed(origin.peer_uid, why)) {
            p.refused = true;
            p.refusal = "admin socket: " + why;
            return p;
        }
        p.origin = CC_ORIGIN_ADMIN_SOCKET;
        p.name = "uid:" + std::to_string(origin.peer_uid);
        p.scopes = {CC_SCOPE_ALL};
        return p;
    }
    // A bearer token, when presented, decides: a wrong one is refused rather than downgraded,
    // so a misconfigured client sees 401 instead of a confusing 403.
    constexpr std::string_view bearer = "Bearer ";
    if (!authorization.empty()) {
        if (authorization.size() <= bearer.size() || authorization.substr(0, bearer.size()) != bearer) {
            p.refused = true;
            p.refusal = "the Authorization header is not 'Bearer <token>'";
            return p;
        }
        const std::string digest = sha256_hex(authorization.substr(bearer.size()));
        const Credential* match = nullptr;
        for (const auto& t : settings_.tokens)  // every entry is compared: the time says nothing about which matched
            if (sdk::constant_time_equals(digest, t.sha256) && match == nullptr) match = &t;
        if (match == nullptr) {
            p.refused = true;
            p.refusal = "the bearer token matches no [auth.tokens] entry";
            return p;
        }
        p.origin = CC_ORIGIN_TOKEN;
        p.name = "token:" + match->name;
        p.scopes = match->scopes;
        return p;
    }
    if (!origin.client_cert_sha256.empty()) {
        for (const auto& c : settings_.certificates) {
            if (sdk::constant_time_equals(origin.client_cert_sha256, c.sha256)) {
                p.origin = CC_ORIGIN_CLIENT_CERTIFICATE;
                p.name = "certificate:" + c.name;
                p.scopes = c.scopes;
                return p;
            }
        }
        // A verified certificate that is not mapped (a device's) gives no privilege.
    }
    return p;
}

}  // namespace certconn::host
