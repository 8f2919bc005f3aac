// A signed plugin repository's index: which plugin versions it offers, where, and their size
// and SHA-256; a sequence number that only grows, an issue time and an expiry.
//
//   {"type":"certconnector-index","repository":"example","sequence":7,
//    "issued":"2026-12-01T00:00:00Z","expires":"2026-12-31T00:00:00Z",
//    "plugins":[{"kind":"feature","name":"pkcs","version":"0.3.1","abi":{"major":1,"minor":2},
//                "min_host":"0.4.0","release_date":"2026-12-01","size":12345,
//                "sha256":"<64 hex>","url":"plugins/feature-pkcs-0.3.1.so","rollout_percent":100}]}
//
// "abi" is the SDK version the plugin was built for (its query export's abi_major/abi_minor):
// a host speaking M.N loads it when major == M and minor <= N, the loader's own rule, so the
// index carries no range that could disagree with the file. "min_host" and "rollout_percent"
// are optional (any host; 100). The index is signed as `index.json.minisig` by a threshold of
// the trust root's keys; it is parsed only after that check.
#pragma once

#include "update/TrustRoot.hpp"

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace certconn::host::update {

/// Largest index accepted.
inline constexpr std::size_t kMaxIndexSize = std::size_t{4} * 1024 * 1024;
/// Largest plugin file an index may announce.
inline constexpr std::uint64_t kMaxPluginSize = 256ULL * 1024 * 1024;
/// Most entries in one index.
inline constexpr std::size_t kMaxIndexEntries = 4096;

struct IndexEntry {
    std::string kind;  // "feature" | "ca" | "tenant" (as kind_name prints it)
    std::string name;  // [a-z][a-z0-9-]{0,62}
    std::string version;
    std::uint16_t abi_major = 0;  // the SDK the plugin was built for
    std::uint16_t abi_minor = 0;
    std::string min_host;  // semantic version; empty: any host
    std::string release_date;
    std::uint64_t size = 0;
    std::string sha256;  // 64 lower-case hex digits
    std::string url;     // relative to the index ("plugins/x.so", no "..") or an absolute https:// URL
    unsigned rollout_percent = 100;
};

struct RepositoryIndex {
    std::string repository;
    std::uint64_t sequence = 0;
    std::chrono::sys_seconds issued{};
    std::chrono::sys_seconds expires{};
    std::vector<IndexEntry> entries;
    std::string sha256;  // of the exact bytes, lower-case hex: persist it with the sequence
};

/// Verifies and parses an index: a threshold of `root`'s keys over the exact bytes first
/// (else unknown_key / bad_signature / below_threshold / malformed signatures), then the
/// strict parse (malformed), then: the repository must be one `root` names (when it names any;
/// else not_trusted_for_plugin), sequence >= last_sequence_seen (else rollback; an equal
/// sequence with bytes whose SHA-256 differs from `last_index_sha256`, when given, is a
/// rollback too), and now < expires (else expired: the caller keeps its plugins and warns).
/// Inputs over kMaxIndexSize are refused as oversize.
RepositoryIndex verify_index(const TrustRoot& root, std::string_view bytes, std::string_view signatures,
                             std::uint64_t last_sequence_seen, std::chrono::sys_seconds now,
                             std::string_view last_index_sha256 = {});

/// Whether the instance `instance_id` is in the entry's rollout: the first 4 bytes of
/// SHA-256(instance_id "\n" name "\n" version), big-endian, mod 100 < rollout_percent.
/// Deterministic per instance and version; 0 includes nobody, 100 everybody.
bool rollout_includes(std::string_view instance_id, const IndexEntry& entry);

/// Whether a host speaking SDK `host_major`.`host_minor` can load the entry's plugin.
bool abi_compatible(const IndexEntry& entry, std::uint16_t host_major, std::uint16_t host_minor);

/// Whether host version `host_version` is at least the entry's min_host.
bool host_compatible(const IndexEntry& entry, std::string_view host_version);

/// The entry as it appears in index.json.
boost::json::object entry_json(const IndexEntry& entry);

namespace detail {
/// Parses index bytes without any signature, sequence or expiry check (for verify_index, the
/// `repo` CLI reading its own drafts, and the fuzzer). Throws UpdateRefused (malformed, oversize).
RepositoryIndex parse_index_unverified(std::string_view bytes);
/// One plugins[] element; `what` names it in messages.
IndexEntry parse_entry(const boost::json::value& value, const std::string& what);
}  // namespace detail

}  // namespace certconn::host::update
