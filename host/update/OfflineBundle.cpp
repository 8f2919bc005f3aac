#include "update/OfflineBundle.hpp"

#include <certconn/crypto.hpp>
#include <certconn/errno_message.hpp>

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <stdexcept>
#include <string>
#include <vector>

extern char** environ;  // NOLINT(readability-redundant-declaration): POSIX declares it nowhere

namespace certconn::host::update {

namespace fs = std::filesystem;

OfflineBundle::OfflineBundle(const fs::path& tar_file, const fs::path& work_parent) {
    std::error_code ec;
    if (!fs::is_regular_file(tar_file, ec))
        throw std::runtime_error("bundle " + tar_file.string() + ": not a readable regular file");
    std::string pattern = (work_parent / "bundle-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr)
        throw std::runtime_error("cannot create a directory in " + work_parent.string() + ": " + sdk::errno_message(errno));
    directory_ = pattern;
    ::chmod(directory_.c_str(), 0700);
    const fs::path errors = directory_.string() + ".err";
    try {
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&actions, 1, errors.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        posix_spawn_file_actions_adddup2(&actions, 1, 2);
        std::vector<std::string> args = {"tar",         "--extract",         "--file",          tar_file.string(),
                                         "--directory", directory_.string(), "--no-same-owner", "--no-same-permissions"};
        std::vector<char*> argv;
        argv.reserve(args.size() + 1);
        for (auto& a : args)
            argv.push_back(a.data());
        argv.push_back(nullptr);
        pid_t pid = -1;
        const int rc = posix_spawnp(&pid, "tar", &actions, nullptr, argv.data(), environ);
        posix_spawn_file_actions_destroy(&actions);
        if (rc != 0) throw std::runtime_error("cannot run tar: " + sdk::errno_message(rc));
        int status = 0;
        while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            std::string why = crypto::read_file(errors, "tar output");
            while (!why.empty() && why.back() == '\n')
                why.pop_back();
            throw std::runtime_error("bundle " + tar_file.string() + " could not be unpacked: " + why);
        }
        for (const auto& entry : fs::recursive_directory_iterator(directory_)) {
            const auto st = entry.symlink_status();
            if (!fs::is_regular_file(st) && !fs::is_directory(st))
                throw std::runtime_error("bundle " + tar_file.string() + " holds " +
                                         entry.path().lexically_relative(directory_).string() +
                                         ", which is neither a file nor a directory (links are refused)");
        }
        fs::remove(errors, ec);
    } catch (...) {
        fs::remove(errors, ec);
        fs::remove_all(directory_, ec);
        throw;
    }
}

OfflineBundle::~OfflineBundle() {
    std::error_code ec;
    fs::remove_all(directory_, ec);
}

}  // namespace certconn::host::update
