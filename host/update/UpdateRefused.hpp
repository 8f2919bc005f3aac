// Why the update machinery refused a root, an index or a plugin file. Every refusal carries a
// stable reason code (for events, status and tests) and a message naming the file and what was
// expected; messages never contain key material or other secrets.
#pragma once

#include <stdexcept>
#include <string>

namespace certconn::host::update {

enum class RefusalReason {
    malformed,               // not the format expected (JSON, minisign, field values)
    unknown_key,             // no signature by any key the trusted root names
    below_threshold,         // valid signatures by fewer distinct trusted keys than the threshold
    bad_signature,           // a signature by a trusted key does not verify (tampered bytes)
    rollback,                // an index sequence lower than the last one seen
    expired,                 // the index (or the final root) is past its expiry: freeze, keep running
    tampered_size,           // a downloaded file's size differs from the index
    tampered_hash,           // a downloaded file's SHA-256 differs from the index
    oversize,                // input larger than the bound for its kind
    stalled,                 // a download made no progress
    downgrade,               // a version lower than the installed one, without allow_downgrade
    incompatible_abi,        // built for an SDK ABI this host does not speak
    incompatible_host,       // needs a newer host (min_host)
    root_version,            // a root rotation that does not go from version N to exactly N+1
    not_trusted_for_plugin,  // the repository or root is not trusted for this plugin (or repository name)
};

/// The reason's name as events, status and the CLI print it: "below_threshold".
constexpr const char* refusal_reason_name(RefusalReason reason) noexcept {
    switch (reason) {
        case RefusalReason::malformed: return "malformed";
        case RefusalReason::unknown_key: return "unknown_key";
        case RefusalReason::below_threshold: return "below_threshold";
        case RefusalReason::bad_signature: return "bad_signature";
        case RefusalReason::rollback: return "rollback";
        case RefusalReason::expired: return "expired";
        case RefusalReason::tampered_size: return "tampered_size";
        case RefusalReason::tampered_hash: return "tampered_hash";
        case RefusalReason::oversize: return "oversize";
        case RefusalReason::stalled: return "stalled";
        case RefusalReason::downgrade: return "downgrade";
        case RefusalReason::incompatible_abi: return "incompatible_abi";
        case RefusalReason::incompatible_host: return "incompatible_host";
        case RefusalReason::root_version: return "root_version";
        case RefusalReason::not_trusted_for_plugin: return "not_trusted_for_plugin";
    }
    return "unknown";
}

/// Thrown for every refusal; `what()` is the full message, `reason` the code.
struct UpdateRefused : std::runtime_error {
    UpdateRefused(RefusalReason why, const std::string& message) : std::runtime_error(message), reason(why) {}
    RefusalReason reason;
};

}  // namespace certconn::host::update
