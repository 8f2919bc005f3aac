#include "auth/AccessPolicy.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <stdexcept>

namespace certconn::host {

namespace {

std::string hex(const unsigned char* data, std::size_t len) {
    static const char digits[] = "0123456789abcdef";
    std::string out(len * 2, '0');
    for (std::size_t i = 0; i < len; ++i) {
        out[2 * i] = digits[data[i] >> 4];
        out[2 * i + 1] = digits[data[i] & 0xf];
    }
    return out;
}

/// The user name of `uid` and its supplementary groups, or false when there is no such user.
bool groups_of(uid_t uid, std::vector<gid_t>& groups) {
    std::array<char, 16384> buffer{};
    passwd pw{};
    passwd* found = nullptr;
    if (getpwuid_r(uid, &pw, buffer.data(), buffer.size(), &found) != 0 || found == nullptr) return false;
    int count = 64;
    groups.assign(static_cast<std::size_t>(count), 0);
    if (getgrouplist(pw.pw_name, pw.pw_gid, groups.data(), &count) == -1) {
        groups.assign(static_cast<std::size_t>(count), 0);
        if (getgrouplist(pw.pw_name, pw.pw_gid, groups.data(), &count) == -1) return false;
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
    return hex(digest, len);
}

bool constant_time_equals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    return a.empty() || CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string new_bearer_token() {
    unsigned char raw[32];
    if (RAND_bytes(raw, sizeof raw) != 1) throw std::runtime_error("no randomness for a token");
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::string out = "cct_";
    unsigned bits = 0, acc = 0;
    for (unsigned char byte : raw) {
        acc = (acc << 8) | byte;
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out += alphabet[(acc >> bits) & 63];
        }
    }
    if (bits > 0) out += alphabet[(acc << (6 - bits)) & 63];
    OPENSSL_cleanse(raw, sizeof raw);
    return out;
}

AccessPolicy::AccessPolicy(AuthSettings settings, std::string service_account)
    : settings_(std::move(settings)), service_account_(std::move(service_account)), service_uid_(geteuid()) {
    if (!service_account_.empty()) {
        std::array<char, 16384> buffer{};
        passwd pw{};
        passwd* found = nullptr;
        if (getpwnam_r(service_account_.c_str(), &pw, buffer.data(), buffer.size(), &found) == 0 && found != nullptr) {
            service_uid_ = pw.pw_uid;
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
            if (constant_time_equals(digest, t.sha256) && match == nullptr) match = &t;
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
            if (constant_time_equals(origin.client_cert_sha256, c.sha256)) {
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
