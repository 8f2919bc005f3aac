// An offline repository bundle: a .tar holding index.json, index.json.minisig, the root chain
// (N.root.json and N.root.json.minisig) and plugins/, for machines without network access.
// It is unpacked with the system's GNU tar (run through posix_spawn, no shell) into a private
// directory (0700) and then read like a file:// repository; nothing in it is trusted until the
// index verifies against the configured repository's trust root.
//
// Why tar and not libarchive: tar is in every Debian base system, needs no new build
// dependency, and GNU tar already refuses absolute and ".." member names; what it can still
// produce that we do not want (symbolic links, devices, FIFOs) is refused after unpacking.
#pragma once

#include <filesystem>

namespace certconn::host::update {

class OfflineBundle {
public:
    /// Unpacks `tar_file` below `work_parent`; throws std::runtime_error naming the problem.
    OfflineBundle(const std::filesystem::path& tar_file, const std::filesystem::path& work_parent);
    ~OfflineBundle();
    OfflineBundle(const OfflineBundle&) = delete;
    OfflineBundle& operator=(const OfflineBundle&) = delete;

    /// The unpacked repository.
    const std::filesystem::path& directory() const { return directory_; }

private:
    std::filesystem::path directory_;
};

}  // namespace certconn::host::update
