#include "update/RepositoryIndex.hpp"

#include "auth/AccessPolicy.hpp"
#include "status/SupportPolicy.hpp"
#include "update/JsonFields.hpp"
#include "update/Semver.hpp"

#include <certconn/crypto.hpp>
#include <certconn/time.hpp>

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <regex>
#include <set>
#include <tuple>

namespace certconn::host::update {

namespace {

using namespace json_fields;

std::array<unsigned char, 32> sha256(std::string_view data) {
    std::array<unsigned char, 32> digest{};
    unsigned int len = 0;
    if (EVP_Digest(data.data(), data.size(), digest.data(), &len, EVP_sha256(), nullptr) != 1 || len != digest.size())
        crypto::throw_openssl("SHA-256");
    return digest;
}

bool valid_name(const std::string& s) {
    static const std::regex re("[a-z][a-z0-9-]{0,62}");
    return std::regex_match(s, re);
}

bool valid_sha256(const std::string& s) {
    return s.size() == 64 &&
           std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

/// A path relative to the index (no "..", no empty or "." segments, no backslash, no query) or an
/// absolute https:// URL without spaces or control characters.
bool valid_url(const std::string& url) {
    if (url.empty() || url.size() > 1024) return false;
    if (std::any_of(url.begin(), url.end(), [](char c) { return c <= ' ' || c == 0x7f || c == '\\'; })) return false;
    if (url.rfind("https://", 0) == 0) return url.size() > 8 && url[8] != '/';
    if (url.find(':') != std::string::npos || url.find('?') != std::string::npos || url.find('#') != std::string::npos ||
        url.find('%') != std::string::npos || url[0] == '/')
        return false;
    std::size_t start = 0;
    while (start <= url.size()) {
        const auto slash = url.find('/', start);
        const std::string segment = url.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
        if (segment.empty() || segment == "." || segment == "..") return false;
        if (slash == std::string::npos) break;
        start = slash + 1;
    }
    return true;
}

}  // namespace

namespace detail {

IndexEntry parse_entry(const boost::json::value& value, const std::string& what) {
    const auto& o = object_value(value, what);
    only_keys(o, {"kind", "name", "version", "abi", "min_host", "release_date", "size", "sha256", "url", "rollout_percent"},
              what);
    IndexEntry e;
    e.name = string_field(o, "name", what, 63);
    if (!valid_name(e.name)) malformed(what, "name '" + e.name + "' must match [a-z][a-z0-9-]{0,62}");
    const std::string where = what + " ('" + e.name + "')";
    e.kind = string_field(o, "kind", where, 16);
    if (e.kind != "feature" && e.kind != "ca" && e.kind != "tenant")
        malformed(where, "kind '" + e.kind + "' must be feature, ca or tenant");
    e.version = string_field(o, "version", where, 128);
    if (!is_semver(e.version)) malformed(where, "version '" + e.version + "' is not a semantic version like 1.2.3");
    const auto& abi = object_value(field(o, "abi", where), where + ": abi");
    only_keys(abi, {"major", "minor"}, where + ": abi");
    e.abi_major = static_cast<std::uint16_t>(uint_field(abi, "major", where + ": abi", UINT16_MAX));
    e.abi_minor = static_cast<std::uint16_t>(uint_field(abi, "minor", where + ": abi", UINT16_MAX));
    if (o.contains("min_host")) {
        e.min_host = string_field(o, "min_host", where, 128);
        if (!is_semver(e.min_host)) malformed(where, "min_host '" + e.min_host + "' is not a semantic version");
    }
    e.release_date = string_field(o, "release_date", where, 10);
    if (!parse_date(e.release_date)) malformed(where, "release_date '" + e.release_date + "' is not YYYY-MM-DD");
    e.size = uint_field(o, "size", where, kMaxPluginSize);
    if (e.size == 0) malformed(where, "size must be at least 1");
    e.sha256 = string_field(o, "sha256", where, 64);
    if (!valid_sha256(e.sha256)) malformed(where, "sha256 must be 64 lower-case hex digits");
    e.url = string_field(o, "url", where, 1024);
    if (!valid_url(e.url))
        malformed(where, "url '" + e.url + "' must be a relative path without '..' or an absolute https:// URL");
    if (o.contains("rollout_percent")) e.rollout_percent = static_cast<unsigned>(uint_field(o, "rollout_percent", where, 100));
    return e;
}

RepositoryIndex parse_index_unverified(std::string_view bytes) {
    const std::string what = "index";
    if (bytes.size() > kMaxIndexSize)
        throw UpdateRefused(RefusalReason::oversize, "index: larger than " + std::to_string(kMaxIndexSize) + " bytes");
    const boost::json::object o = parse_object(bytes, what);
    only_keys(o, {"type", "repository", "sequence", "issued", "expires", "plugins"}, what);
    if (string_field(o, "type", what) != "certconnector-index") malformed(what, "field 'type' must be \"certconnector-index\"");
    RepositoryIndex index;
    index.repository = string_field(o, "repository", what, 63);
    if (!valid_name(index.repository)) malformed(what, "repository '" + index.repository + "' must match [a-z][a-z0-9-]{0,62}");
    const std::string where = "index of repository '" + index.repository + "'";
    index.sequence = uint_field(o, "sequence", where, INT64_MAX);
    const auto issued = parse_utc_time(string_field(o, "issued", where, 32));
    const auto expires = parse_utc_time(string_field(o, "expires", where, 32));
    if (!issued || !expires) malformed(where, "'issued' and 'expires' must be UTC times like 2027-12-01T00:00:00Z");
    if (*expires <= *issued) malformed(where, "'expires' must be after 'issued'");
    index.issued = *issued;
    index.expires = *expires;
    const auto& plugins = array_field(o, "plugins", where);
    if (plugins.size() > kMaxIndexEntries)
        malformed(where, "more than " + std::to_string(kMaxIndexEntries) + " entries in 'plugins'");
    std::set<std::tuple<std::string, std::string, std::string>> seen;
    for (std::size_t i = 0; i < plugins.size(); ++i) {
        IndexEntry e = parse_entry(plugins[i], where + ": plugins[" + std::to_string(i) + "]");
        if (!seen.emplace(e.kind, e.name, e.version).second)
            malformed(where, e.kind + " '" + e.name + "' " + e.version + " is listed twice");
        index.entries.push_back(std::move(e));
    }
    index.sha256 = sha256_hex(bytes);
    return index;
}

}  // namespace detail

RepositoryIndex verify_index(const TrustRoot& root, std::string_view bytes, std::string_view signatures,
                             std::uint64_t last_sequence_seen, std::chrono::sys_seconds now, std::string_view last_index_sha256) {
    if (bytes.size() > kMaxIndexSize)
        throw UpdateRefused(RefusalReason::oversize, "index.json: larger than " + std::to_string(kMaxIndexSize) + " bytes");
    require_threshold(root.keys, root.threshold, signatures, bytes,
                      "index.json (trust root version " + std::to_string(root.version) + ")");
    RepositoryIndex index = detail::parse_index_unverified(bytes);
    const std::string what = "index.json of repository '" + index.repository + "'";
    if (!root.repositories.empty() &&
        std::find(root.repositories.begin(), root.repositories.end(), index.repository) == root.repositories.end())
        throw UpdateRefused(RefusalReason::not_trusted_for_plugin,
                            what + ": trust root version " + std::to_string(root.version) + " does not name this repository");
    if (index.sequence < last_sequence_seen)
        throw UpdateRefused(RefusalReason::rollback, what + ": sequence " + std::to_string(index.sequence) +
                                                         " is lower than the last one seen (" +
                                                         std::to_string(last_sequence_seen) + "); refused as a rollback");
    if (index.sequence == last_sequence_seen && !last_index_sha256.empty() && index.sha256 != last_index_sha256)
        throw UpdateRefused(RefusalReason::rollback, what + ": sequence " + std::to_string(index.sequence) +
                                                         " was seen before with different content; a new index needs a "
                                                         "higher sequence");
    if (now >= index.expires)
        throw UpdateRefused(RefusalReason::expired, what + ": expired at " + sdk::utc_iso8601(index.expires) +
                                                        "; keeping the installed plugins until the repository publishes a "
                                                        "fresh index");
    return index;
}

bool rollout_includes(std::string_view instance_id, const IndexEntry& entry) {
    if (entry.rollout_percent >= 100) return true;
    if (entry.rollout_percent == 0) return false;
    std::string input(instance_id);
    input += '\n';
    input += entry.name;
    input += '\n';
    input += entry.version;
    const auto digest = sha256(input);
    const std::uint32_t first = (static_cast<std::uint32_t>(digest[0]) << 24) | (static_cast<std::uint32_t>(digest[1]) << 16) |
                                (static_cast<std::uint32_t>(digest[2]) << 8) | static_cast<std::uint32_t>(digest[3]);
    return first % 100 < entry.rollout_percent;
}

bool abi_compatible(const IndexEntry& entry, std::uint16_t host_major, std::uint16_t host_minor) {
    return entry.abi_major == host_major && entry.abi_minor <= host_minor;
}

bool host_compatible(const IndexEntry& entry, std::string_view host_version) {
    return entry.min_host.empty() || compare_versions(host_version, entry.min_host) >= 0;
}

boost::json::object entry_json(const IndexEntry& e) {
    boost::json::object o{{"kind", e.kind},
                          {"name", e.name},
                          {"version", e.version},
                          {"abi", boost::json::object{{"major", e.abi_major}, {"minor", e.abi_minor}}}};
    if (!e.min_host.empty()) o["min_host"] = e.min_host;
    o["release_date"] = e.release_date;
    o["size"] = e.size;
    o["sha256"] = e.sha256;
    o["url"] = e.url;
    o["rollout_percent"] = e.rollout_percent;
    return o;
}

}  // namespace certconn::host::update
