#include "update/TrustRoot.hpp"

#include "status/SupportPolicy.hpp"
#include "update/JsonFields.hpp"

#include <algorithm>
#include <charconv>
#include <set>

namespace certconn::host::update {

namespace {

using namespace json_fields;

struct Tally {
    unsigned valid = 0;          // distinct trusted keys with a valid signature
    bool any_known_bad = false;  // a signature names a trusted key but does not verify
    bool any_known = false;      // a signature names a trusted key
};

Tally tally(const std::vector<MinisignPublicKey>& keys, const std::vector<MinisignSignature>& signatures,
            std::string_view bytes) {
    Tally t;
    std::set<std::size_t> counted;
    for (const auto& sig : signatures) {
        for (std::size_t k = 0; k < keys.size(); ++k) {
            if (keys[k].key_id != sig.key_id) continue;
            t.any_known = true;
            if (verify(keys[k], sig, bytes))
                counted.insert(k);
            else
                t.any_known_bad = true;
        }
    }
    t.valid = static_cast<unsigned>(counted.size());
    return t;
}

}  // namespace

std::optional<std::chrono::sys_seconds> parse_utc_time(std::string_view text) {
    // Exactly YYYY-MM-DDTHH:MM:SSZ.
    if (text.size() != 20 || text[10] != 'T' || text[13] != ':' || text[16] != ':' || text[19] != 'Z') return std::nullopt;
    const auto date = parse_date(text.substr(0, 10));
    if (!date) return std::nullopt;
    auto two = [&](std::size_t pos, unsigned max, unsigned& out) {
        const char* first = text.data() + pos;
        const auto [end, ec] = std::from_chars(first, first + 2, out);
        return ec == std::errc{} && end == first + 2 && out <= max;
    };
    unsigned h = 0, m = 0, s = 0;
    if (!two(11, 23, h) || !two(14, 59, m) || !two(17, 59, s)) return std::nullopt;
    return std::chrono::sys_seconds{*date} + std::chrono::hours{h} + std::chrono::minutes{m} + std::chrono::seconds{s};
}

unsigned count_valid_signatures(const std::vector<MinisignPublicKey>& keys, std::string_view signatures_text,
                                std::string_view bytes) {
    return tally(keys, parse_signatures(signatures_text), bytes).valid;
}

void require_threshold(const std::vector<MinisignPublicKey>& keys, unsigned threshold, std::string_view signatures_text,
                       std::string_view bytes, const std::string& what) {
    std::vector<MinisignSignature> signatures;
    try {
        signatures = parse_signatures(signatures_text);
    } catch (const std::invalid_argument& e) {
        throw UpdateRefused(RefusalReason::malformed, what + ": unreadable signatures: " + e.what());
    }
    const Tally t = tally(keys, signatures, bytes);
    if (threshold > 0 && t.valid >= threshold) return;
    const std::string counts = std::to_string(t.valid) + " valid signature(s) by trusted keys, " + std::to_string(threshold) +
                               " needed (" + std::to_string(signatures.size()) + " signature(s) present)";
    if (t.any_known_bad)
        throw UpdateRefused(RefusalReason::bad_signature,
                            what + ": a signature by a trusted key does not verify (the file was changed?); " + counts);
    if (!t.any_known)
        throw UpdateRefused(RefusalReason::unknown_key, what + ": signed by no key the trusted root names; " + counts);
    throw UpdateRefused(RefusalReason::below_threshold, what + ": below the signature threshold: " + counts);
}

namespace detail {

TrustRoot parse_root_unverified(std::string_view bytes) {
    const std::string what = "root";
    if (bytes.size() > kMaxRootSize)
        throw UpdateRefused(RefusalReason::oversize, "root: larger than " + std::to_string(kMaxRootSize) + " bytes");
    const boost::json::object o = parse_object(bytes, what);
    only_keys(o, {"type", "version", "expires", "threshold", "keys", "repositories"}, what);
    if (string_field(o, "type", what) != "certconnector-root") malformed(what, "field 'type' must be \"certconnector-root\"");
    TrustRoot root;
    root.version = uint_field(o, "version", what, INT64_MAX);
    const std::string where = "root version " + std::to_string(root.version);
    if (root.version == 0) malformed(where, "field 'version' must be at least 1");
    const auto expires = parse_utc_time(string_field(o, "expires", where));
    if (!expires) malformed(where, "field 'expires' must be a UTC time like 2027-12-01T00:00:00Z");
    root.expires = *expires;
    const auto& keys = array_field(o, "keys", where);
    if (keys.empty() || keys.size() > kMaxRootKeys)
        malformed(where, "field 'keys' must name 1 to " + std::to_string(kMaxRootKeys) + " keys");
    for (const auto& k : keys) {
        const auto& ko = object_value(k, where + ": keys[]");
        only_keys(ko, {"id", "public_key"}, where + ": keys[]");
        const std::string id = string_field(ko, "id", where + ": keys[]", 64);
        MinisignPublicKey key;
        try {
            key = parse_public_key(string_field(ko, "public_key", where + ": keys[]", 128));
        } catch (const std::invalid_argument& e) {
            malformed(where, std::string("key '") + id + "': " + e.what());
        }
        if (id != key.key_id_hex())
            malformed(where, "key id '" + id + "' does not match its public key (whose id is " + key.key_id_hex() + ")");
        if (std::any_of(root.keys.begin(), root.keys.end(),
                        [&](const MinisignPublicKey& other) { return other.key_id == key.key_id; }))
            malformed(where, "key id '" + id + "' is listed twice");
        root.keys.push_back(key);
    }
    root.threshold = static_cast<unsigned>(uint_field(o, "threshold", where, kMaxRootKeys));
    if (root.threshold < 1 || root.threshold > root.keys.size())
        malformed(where, "field 'threshold' must be between 1 and the number of keys (" + std::to_string(root.keys.size()) + ")");
    if (o.contains("repositories")) {
        const auto& repos = array_field(o, "repositories", where);
        if (repos.size() > kMaxRootKeys) malformed(where, "field 'repositories' names too many repositories");
        for (const auto& r : repos) {
            if (!r.is_string() || r.get_string().empty() || r.get_string().size() > 63)
                malformed(where, "field 'repositories' must hold repository names");
            root.repositories.emplace_back(r.get_string());
        }
    }
    root.bytes = std::string(bytes);
    return root;
}

}  // namespace detail

TrustRoot load_initial_root(std::string_view bytes, std::string_view signatures_text) {
    // The operator placed this file, so it is the one root parsed before its signatures are
    // checked: its keys are what the signatures are checked with.
    TrustRoot root = detail::parse_root_unverified(bytes);
    require_threshold(root.keys, root.threshold, signatures_text, bytes,
                      "root version " + std::to_string(root.version) + " (self-signature)");
    return root;
}

TrustRoot verify_next_root(const TrustRoot& current, std::string_view next_bytes, std::string_view next_signatures) {
    const std::string what = "root version " + std::to_string(current.version + 1);
    if (next_bytes.size() > kMaxRootSize)
        throw UpdateRefused(RefusalReason::oversize, what + ": larger than " + std::to_string(kMaxRootSize) + " bytes");
    // The old keys first, over the exact bytes: nothing unsigned is parsed.
    require_threshold(current.keys, current.threshold, next_signatures, next_bytes,
                      what + " (signatures by root version " + std::to_string(current.version) + "'s keys)");
    TrustRoot next = detail::parse_root_unverified(next_bytes);
    if (next.version != current.version + 1)
        throw UpdateRefused(RefusalReason::root_version, what + ": the file says version " + std::to_string(next.version) +
                                                             "; a rotation goes from version " + std::to_string(current.version) +
                                                             " to exactly " + std::to_string(current.version + 1));
    require_threshold(next.keys, next.threshold, next_signatures, next_bytes, what + " (signatures by its own keys)");
    return next;
}

TrustRoot follow_root_chain(TrustRoot current, const RootSource& source, unsigned max_steps) {
    for (unsigned step = 0; step < max_steps; ++step) {
        auto next = source(current.version + 1);
        if (!next) break;
        current = verify_next_root(current, next->first, next->second);
    }
    return current;
}

}  // namespace certconn::host::update
