// Looking up a user account, thread-safe: getpwnam/getpwuid return one static struct that the
// next lookup (on any thread) overwrites, so two lookups in a row alias each other.
#pragma once

#include <pwd.h>
#include <sys/types.h>
#include <unistd.h>

#include <optional>
#include <string>
#include <vector>

#include <cerrno>

namespace certconn::host {

struct Account {
    uid_t uid = 0;
    gid_t gid = 0;
    std::string name;
};

namespace detail {
template <class Lookup>
std::optional<Account> find_account(Lookup&& lookup) {
    long hint = ::sysconf(_SC_GETPW_R_SIZE_MAX);
    std::vector<char> buf(hint > 0 ? static_cast<std::size_t>(hint) : 16384);
    passwd pw{};
    passwd* found = nullptr;
    for (;;) {
        const int rc = lookup(&pw, buf.data(), buf.size(), &found);
        if (rc == ERANGE && buf.size() < (1U << 20)) {
            buf.resize(buf.size() * 2);
            continue;
        }
        if (rc != 0 || found == nullptr) return std::nullopt;
        return Account{found->pw_uid, found->pw_gid, found->pw_name};
    }
}
}  // namespace detail

/// The account named `name`, or nothing when there is none (or the lookup failed).
inline std::optional<Account> account_named(const std::string& name) {
    return detail::find_account([&](passwd* pw, char* buf, std::size_t size, passwd** found) {
        return ::getpwnam_r(name.c_str(), pw, buf, size, found);
    });
}

/// The account with user id `uid`, or nothing.
inline std::optional<Account> account_of(uid_t uid) {
    return detail::find_account(
        [&](passwd* pw, char* buf, std::size_t size, passwd** found) { return ::getpwuid_r(uid, pw, buf, size, found); });
}

}  // namespace certconn::host
