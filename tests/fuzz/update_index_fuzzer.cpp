// libFuzzer target: the update trust layer's parsers, which read bytes from a repository that
// may be hostile (before and after signature checks): minisign signatures and public keys, root
// and index JSON, semantic versions and UTC times.
// Build and run: scripts/fuzz update-index [seconds]. Any crash, leak, hang or sanitizer report is a bug.
#include "update/Minisign.hpp"
#include "update/RepositoryIndex.hpp"
#include "update/Semver.hpp"
#include "update/TrustRoot.hpp"

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string_view>

using namespace certconn::host::update;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    // The first byte chooses the parser, the rest is its input.
    const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
    try {
        switch (data[0] % 6) {
            case 0: {
                const auto signatures = parse_signatures(input);
                // A real key (whose secret nobody has here): nothing the fuzzer makes may verify.
                MinisignPublicKey key = parse_public_key("RWQlwmsOsWV96QkFpkVtgTivkmzckZ7sRqg2BnMt4vGZZROv26F2t18d");
                key.key_id = signatures.front().key_id;
                for (const auto& s : signatures)
                    if (verify(key, s, input)) __builtin_trap();
                break;
            }
            case 1: {
                const MinisignPublicKey key = parse_public_key(input);
                if (parse_public_key(key.base64()).key != key.key) __builtin_trap();  // round trip
                break;
            }
            case 2: detail::parse_root_unverified(input); break;
            case 3: {
                const RepositoryIndex index = detail::parse_index_unverified(input);
                for (const auto& e : index.entries) {
                    rollout_includes("fuzz", e);
                    if (!e.min_host.empty()) host_compatible(e, "1.0.0");
                }
                break;
            }
            case 4: {
                const auto bar = input.find('|');
                if (bar == std::string_view::npos) {
                    is_semver(input);
                    break;
                }
                const int c = compare_versions(input.substr(0, bar), input.substr(bar + 1));
                if (c != -compare_versions(input.substr(bar + 1), input.substr(0, bar))) __builtin_trap();  // antisymmetric
                break;
            }
            default: parse_utc_time(input); break;
        }
    } catch (const std::invalid_argument&) {
    } catch (const UpdateRefused&) {
    }
    return 0;
}
