#include "plugins/ModuleStore.hpp"

#include "auth/AccessPolicy.hpp"
#include "plugins/ElfCheck.hpp"

#include <certconn/crypto.hpp>
#include <certconn/errno_message.hpp>

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string_view>

namespace certconn::host {

namespace fs = std::filesystem;

namespace {

constexpr std::uintmax_t kMaxModuleBytes = std::uintmax_t{256} * 1024 * 1024;

std::string read_bounded(const fs::path& file) {
    std::error_code ec;
    const auto size = fs::file_size(file, ec);
    if (ec) throw std::runtime_error("cannot read " + file.string() + ": " + ec.message());
    if (size > kMaxModuleBytes)
        throw std::runtime_error(file.string() + " is " + std::to_string(size) + " bytes; a plugin may have at most " +
                                 std::to_string(kMaxModuleBytes));
    return crypto::read_file(file, "plugin file");
}

}  // namespace

std::vector<std::string> unload_problems(const fs::path& file) {
    try {
        return elf_unload_problems(read_bounded(file));
    } catch (const std::exception& e) {
        return {e.what()};
    }
}

bool is_mapped(const fs::path& file) {
    struct stat st {};
    const bool exists = ::stat(file.c_str(), &st) == 0;
    std::ifstream maps("/proc/self/maps");
    std::string line;
    // "start-end perms offset dev(major:minor hex) inode path"
    while (std::getline(maps, line)) {
        std::istringstream fields(line);
        std::string range, perms, offset, dev, inode_text;
        if (!(fields >> range >> perms >> offset >> dev >> inode_text)) continue;
        const auto colon = dev.find(':');
        if (colon == std::string::npos) continue;
        const unsigned long major = std::strtoul(dev.substr(0, colon).c_str(), nullptr, 16);
        const unsigned long minor = std::strtoul(dev.substr(colon + 1).c_str(), nullptr, 16);
        const unsigned long long inode = std::strtoull(inode_text.c_str(), nullptr, 10);
        if (exists && inode == st.st_ino && major == ::major(st.st_dev) && minor == ::minor(st.st_dev)) return true;
        // By path too: module paths are unique, and on overlayfs maps shows another device and
        // inode than stat(); a removed file still mapped shows as "<path> (deleted)".
        const auto at = line.find(file.string());
        if (at != std::string::npos && line.find('/') == at &&
            (line.size() == at + file.string().size() || line.compare(at + file.string().size(), 10, " (deleted)") == 0))
            return true;
    }
    return false;
}

ModuleStore::ModuleStore(fs::path directory) : directory_(std::move(directory)) {
    std::error_code ec;
    fs::create_directories(directory_ / ".incoming", ec);
    if (ec) throw std::runtime_error("cannot create the module store " + directory_.string() + ": " + ec.message());
    ::chmod(directory_.c_str(), 0700);
    ::chmod((directory_ / ".incoming").c_str(), 0700);
}

ModuleStore::Staged ModuleStore::stage(const fs::path& source) const {
    const std::string bytes = read_bounded(source);
    const std::string sha = sha256_hex(bytes);
    Staged staged{directory_ / ".incoming" / (sha + ".so"), sha};
    std::error_code ec;
    if (!fs::exists(staged.path, ec)) {
        fs::remove(staged.path.string() + ".tmp", ec);  // left by a crash mid-write (0400: not reopenable)
        crypto::write_file_atomic(staged.path, bytes, 0400);
    }
    return staged;
}

fs::path ModuleStore::place(const Staged& staged, const PluginIdentity& id) const {
    const fs::path dir = directory_ / (std::string(kind_name(id.kind)) + "-" + id.name);
    fs::path target = dir / (id.version + "-" + staged.sha256.substr(0, 12) + ".so");
    std::error_code ec;
    fs::create_directories(dir, ec);
    ::chmod(dir.c_str(), 0700);
    if (fs::exists(target, ec)) {
        // Same name, so the same leading hash: compare the whole hash before trusting it.
        if (sha256_hex(read_bounded(target)) != staged.sha256)
            throw std::runtime_error(target.string() + " exists with other bytes (a 48-bit hash prefix collision); refused");
        fs::remove(staged.path, ec);
        return target;
    }
    fs::rename(staged.path, target, ec);
    if (ec) throw std::runtime_error("cannot move " + staged.path.string() + " to " + target.string() + ": " + ec.message());
    return target;
}

void ModuleStore::collect(const std::set<fs::path>& keep) const {
    std::error_code ec;
    for (const auto& entry : fs::recursive_directory_iterator(directory_, ec)) {
        if (!entry.is_regular_file(ec) || entry.path().extension() != ".so") continue;
        if (keep.count(entry.path()) || is_mapped(entry.path())) continue;
        fs::remove(entry.path(), ec);
    }
}

}  // namespace certconn::host
