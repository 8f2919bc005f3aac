// The content-addressed module store (<state_dir>/modules) the daemon loads plugins from.
//
// dlopen() of a path (or an inode) that is already loaded returns the loaded image, so
// replacing plugins/pkcs.so and reloading would keep the old code. The daemon therefore never
// maps a file from the plugin directory: each file's bytes are copied once to
//   <store>/<kind>-<name>/<version>-<sha256[:12]>.so
// (read once, hashed and written from the same bytes, mode 0400, never overwritten) and the
// copy is what dlopen sees. A different build is a different path, hence a different image;
// the same bytes reuse the same path.
#pragma once

#include "plugins/PluginIdentity.hpp"

#include <filesystem>
#include <set>
#include <string>
#include <vector>

namespace certconn::host {

/// Why dlclose() cannot unmap `file`: defined STB_GNU_UNIQUE symbols, DF_1_NODELETE, or
/// thread_local objects with destructors (glibc keeps such a library until every thread that
/// used them exits; the host's threads live as long as the process). Empty when it can. Reads
/// the ELF dynamic symbol table with bounds checks; a file that is not a 64-bit ELF gets one
/// problem naming that.
std::vector<std::string> unload_problems(const std::filesystem::path& file);

/// Whether `file` is mapped into this process (/proc/self/maps), compared by device and inode.
bool is_mapped(const std::filesystem::path& file);

class ModuleStore {
public:
    /// Creates `directory` (0700) when missing. Throws std::runtime_error naming the path.
    explicit ModuleStore(std::filesystem::path directory);

    struct Staged {
        std::filesystem::path path;  // <store>/.incoming/<sha256>.so: not loaded by the daemon
        std::string sha256;
    };
    /// Copies `source` into the store under its hash. Files larger than 256 MiB are refused.
    Staged stage(const std::filesystem::path& source) const;
    /// The final path of a staged file whose identity is known; moves it there unless the same
    /// bytes are already there. Throws std::runtime_error naming the path.
    std::filesystem::path place(const Staged& staged, const PluginIdentity& identity) const;
    /// Removes module files that are neither in `keep` nor mapped into this process.
    void collect(const std::set<std::filesystem::path>& keep) const;

    const std::filesystem::path& directory() const { return directory_; }

private:
    std::filesystem::path directory_;
};

}  // namespace certconn::host
