// What the update manager keeps across restarts, in <state_dir>/update/:
//   state.json    per repository the last verified index (sequence, digest, expiry, entries),
//                 versions marked bad, operator pins (`update pin`), last support states;
//   journal.json  the update in progress, step by step, so a kill -9 at any point resumes or
//                 rolls back at start;
//   roots/<repository>.root.json(.minisig)  the newest trusted root after rotations.
// Every file is written atomically (temporary file, fsync, rename, fsync of the directory).
#pragma once

#include "plugins/VersionSelection.hpp"

#include <boost/json/object.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

namespace certconn::host::update {

struct RepositoryState {
    std::uint64_t sequence = 0;  // highest verified index sequence (rollback protection)
    std::string index_sha256;    // of that index's bytes
    std::string expires;         // RFC 3339
    std::string last_check;      // RFC 3339, last attempt
    std::string last_result;     // "ok", "expired", or why it failed
    boost::json::array entries;  // the last verified index's plugins (entry_json)
};

struct BadVersion {
    std::string repository;      // where it came from ("" when not from a repository)
    std::uint64_t sequence = 0;  // the index sequence it was marked under
    std::string sha256;          // the bad file's digest: a newer index republishing the version with other bytes lifts the mark
    std::string reason;
};

struct UpdateState {
    std::map<std::string, RepositoryState> repositories;
    std::map<std::string, BadVersion> bad;       // "name@version"
    std::map<std::string, std::string> pins;     // `update pin`: name -> version
    std::map<std::string, std::string> support;  // "kind/name" -> last support state seen

    static UpdateState load(const std::filesystem::path& file);
    void save(const std::filesystem::path& file) const;
};

/// The update in progress (journal.json), or none.
struct Journal {
    std::string step;  // see UpdateManager.cpp: downloading ... retiring, rolling-back
    std::string repository;
    std::string kind, name, version, sha256;
    std::uint64_t sequence = 0;
    std::string previous_version;
    std::string previous_file;  // the file serving before; retired after the watch when it lies in updates/
    std::string file;           // the new file in <state_dir>/updates
    std::uint64_t baseline_calls = 0, baseline_failures = 0;  // the previous generation's counters
    std::string started;

    boost::json::object to_json() const;
    static Journal from_json(const boost::json::object& o);
    /// The journal in `file`, or nullopt when there is none (or it is unreadable: reported by the caller).
    static std::optional<Journal> load(const std::filesystem::path& file, std::string& problem);
    void save(const std::filesystem::path& file) const;
    static void clear(const std::filesystem::path& file);
};

/// The selection the loader applies: pins (the configuration's win over `update pin`) and bad versions.
VersionSelection selection_of(const UpdateState& state, const std::map<std::string, std::string>& config_pins);

/// The same, read from <state_dir>/update/state.json (for the scan at start, before the manager runs).
VersionSelection persisted_selection(const std::filesystem::path& state_dir,
                                     const std::map<std::string, std::string>& config_pins);

}  // namespace certconn::host::update
