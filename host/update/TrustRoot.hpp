// Trust roots for signed plugin repositories, rotated as TUF does.
//
// A root file `N.root.json` names the keys that may sign a repository's index and how many of
// them must (k of n):
//
//   {"type":"certconnector-root","version":N,"expires":"2027-12-01T00:00:00Z","threshold":k,
//    "keys":[{"id":"E97D65B10E6BC225","public_key":"RWQ..."}, ...],
//    "repositories":["example"]}            // optional: the index names this root may sign
//
// Its signatures live beside it in `N.root.json.minisig` (concatenated minisign documents, one
// per signer). A root rotates by a chain 2.root.json, 3.root.json, ...: each one signed by a
// threshold of the previous root's keys AND a threshold of its own, with the version exactly
// one higher. Signatures are verified over the exact bytes before they are parsed (except the
// operator-placed initial root, which must be parsed to learn its keys).
#pragma once

#include "update/Minisign.hpp"
#include "update/UpdateRefused.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace certconn::host::update {

/// Largest root file accepted.
inline constexpr std::size_t kMaxRootSize = std::size_t{256} * 1024;
/// Most keys a root may name.
inline constexpr std::size_t kMaxRootKeys = 64;

struct TrustRoot {
    std::uint64_t version = 0;
    std::chrono::sys_seconds expires{};
    unsigned threshold = 0;
    std::vector<MinisignPublicKey> keys;
    std::vector<std::string> repositories;  // empty: the root may sign any repository's index
    std::string bytes;                      // the exact file, to persist as the new trusted root
};

/// "2027-12-01T00:00:00Z" (RFC 3339, UTC, whole seconds); nullopt when anything else.
std::optional<std::chrono::sys_seconds> parse_utc_time(std::string_view text);

/// How many distinct `keys` have a valid signature over `bytes` in `signatures_text`: two
/// signatures by one key count once, signatures by keys not in `keys` count zero. Throws
/// std::invalid_argument when `signatures_text` is not minisign signatures.
unsigned count_valid_signatures(const std::vector<MinisignPublicKey>& keys, std::string_view signatures_text,
                                std::string_view bytes);

/// Refuses (UpdateRefused) unless a threshold of distinct `keys` signed `bytes`: reason
/// malformed (unreadable signatures), unknown_key (no signature by any of `keys`),
/// bad_signature (a signature by one of `keys` does not verify: the bytes were changed) or
/// below_threshold. `what` names the file in the message.
void require_threshold(const std::vector<MinisignPublicKey>& keys, unsigned threshold, std::string_view signatures_text,
                       std::string_view bytes, const std::string& what);

/// The operator-configured root: trusted because the operator placed it, but it must still be
/// self-consistent (threshold 1..keys, unique key ids matching their keys) and signed by its own
/// threshold. Its expiry is not checked here (the caller checks the newest root of the chain).
TrustRoot load_initial_root(std::string_view bytes, std::string_view signatures_text);

/// One rotation step: `next` must be signed by current.threshold of current.keys and by its
/// own threshold of its own keys (both checked over the exact bytes, the first before parsing),
/// with version current.version + 1 (else reason root_version). Intermediate expiry is not
/// checked (as in TUF).
TrustRoot verify_next_root(const TrustRoot& current, std::string_view next_bytes, std::string_view next_signatures);

/// Bytes and signatures of root `version`, or nullopt when the repository has no such root.
using RootSource = std::function<std::optional<std::pair<std::string, std::string>>(std::uint64_t version)>;

/// Follows the rotation chain from `current` (current.version + 1, + 2, ...) while `source`
/// has the next root, at most `max_steps` steps; returns the newest verified root. Throws
/// UpdateRefused at the first bad link (the caller keeps its current root).
TrustRoot follow_root_chain(TrustRoot current, const RootSource& source, unsigned max_steps = 1000);

namespace detail {
/// Parses a root file without any signature check (for load_initial_root, verify_next_root and
/// the fuzzer). Throws UpdateRefused(malformed) naming the field.
TrustRoot parse_root_unverified(std::string_view bytes);
}  // namespace detail

}  // namespace certconn::host::update
