#include "daemon/Privileges.hpp"

#include "daemon/Accounts.hpp"

#include <certconn/errno_message.hpp>

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace certconn::host {

namespace fs = std::filesystem;

namespace {

/// Keeps exactly CAP_NET_BIND_SERVICE (permitted and effective), or nothing.
void set_capabilities(bool bind_service) {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
    if (bind_service) {
        data[CAP_TO_INDEX(CAP_NET_BIND_SERVICE)].permitted = CAP_TO_MASK(CAP_NET_BIND_SERVICE);
        data[CAP_TO_INDEX(CAP_NET_BIND_SERVICE)].effective = CAP_TO_MASK(CAP_NET_BIND_SERVICE);
    }
    if (::syscall(SYS_capset, &header, data) != 0)
        throw std::runtime_error(std::string("cannot set capabilities after switching user: ") + sdk::errno_message(errno));
}

}  // namespace

void become_service_account(const ConfigDocument& doc) {
    const std::string account = doc.service_account();
    if (account.empty() || ::geteuid() != 0) return;
    const auto pw = account_named(account);
    if (!pw) throw std::runtime_error("host.service_account: no user named '" + account + "'");
    const uid_t uid = pw->uid;
    const gid_t gid = pw->gid;
    const std::string name = pw->name;

    // The directories the account must own; created here because the account may not be able to.
    const fs::path state = doc.state_dir();
    const fs::path base = doc.file.parent_path();
    fs::path log_dir = "/var/log/certconnector";
    if (auto v = doc.root["host"]["log_dir"].value<std::string>())
        log_dir = fs::path(*v).is_absolute() ? fs::path(*v) : base / *v;
    for (const auto& [dir, mode] : {std::pair{state, 0700}, std::pair{log_dir.lexically_normal(), 0750}}) {
        std::error_code ec;
        fs::create_directories(dir, ec);
        if (ec) throw std::runtime_error("cannot create " + dir.string() + ": " + ec.message());
        // Root works in directories the account owns: never follow a link the account planted
        // (a log entry pointing at /etc/shadow would be handed to it).
        const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) throw std::runtime_error("cannot open " + dir.string() + ": " + sdk::errno_message(errno));
        const bool handed = ::fchmod(fd, static_cast<mode_t>(mode)) == 0 && ::fchown(fd, uid, gid) == 0;
        const int saved = errno;
        if (handed && dir == log_dir.lexically_normal())
            for (const auto& entry : fs::directory_iterator(dir, ec)) {
                const std::string name = entry.path().filename().string();
                struct stat st {};
                // Only the account's own log files: no link, no hard link to a file elsewhere.
                if (::fstatat(fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1)
                    (void)::fchownat(fd, name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW);
            }
        ::close(fd);
        if (!handed)
            throw std::runtime_error("cannot hand " + dir.string() + " to '" + account + "': " + sdk::errno_message(saved));
    }

    std::uint16_t port = 8080;
    try {
        port = split_listen_address(doc.root["host"]["listen"].value<std::string>().value_or("127.0.0.1:8080")).second;
    } catch (const std::exception&) {
        // validation reports it later
    }
    const bool bind_service = port != 0 && port < 1024;
    if (bind_service && ::prctl(PR_SET_KEEPCAPS, 1L, 0L, 0L, 0L) != 0)
        throw std::runtime_error(std::string("cannot keep CAP_NET_BIND_SERVICE: ") + sdk::errno_message(errno));
    if (::initgroups(name.c_str(), gid) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0)
        throw std::runtime_error("cannot switch to the service account '" + account + "': " + sdk::errno_message(errno));
    if (bind_service) {
        set_capabilities(true);
        ::prctl(PR_SET_KEEPCAPS, 0L, 0L, 0L, 0L);
    }
    if (::setuid(0) == 0) throw std::runtime_error("switched to '" + account + "' but could regain root");
}

}  // namespace certconn::host
