// The trust layer of plugin updates: minisign signatures made by the real `minisign` tool and
// verified with OpenSSL, k-of-n trust roots and their rotation, signed repository indexes.
#include "cli/RepoCommands.hpp"
#include "support/TestFiles.hpp"
#include "update/Minisign.hpp"
#include "update/RepositoryIndex.hpp"
#include "update/Semver.hpp"
#include "update/TrustRoot.hpp"

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <cstdlib>
#include <iostream>
#include <sstream>
#include <map>
#include <memory>

using namespace certconn::host::update;
using certconn::test::read_file;
using certconn::test::TempDir;
using certconn::test::write_file;
namespace fs = std::filesystem;

namespace {

bool have_minisign() {
    // NOLINTNEXTLINE(cert-env33-c): a test probing for a tool
    static const bool found = std::system("command -v minisign >/dev/null 2>&1") == 0;
    return found;
}

#define REQUIRE_MINISIGN()                                                          \
    if (!have_minisign()) {                                                         \
        WARN("minisign is not installed (apt-get install minisign); test skipped"); \
        SUCCEED();                                                                  \
        return;                                                                     \
    }

void run(const std::string& command) {
    // NOLINTNEXTLINE(cert-env33-c): tests drive the real minisign tool
    if (std::system((command + " >/dev/null 2>&1").c_str()) != 0) throw std::runtime_error("failed: " + command);
}

/// A minisign key pair made by `minisign -G -W` (no password).
struct Signer {
    fs::path pub;
    fs::path key;
    std::string pub_text;
    MinisignPublicKey public_key;
};

/// Keys are made once per test run (key generation is the slow part).
class Keys {
public:
    const Signer& operator[](const std::string& name) {
        auto it = signers_.find(name);
        if (it != signers_.end()) return it->second;
        Signer s{dir_.path() / (name + ".pub"), dir_.path() / (name + ".key"), {}, {}};
        run("minisign -G -W -f -p " + s.pub.string() + " -s " + s.key.string());
        s.pub_text = read_file(s.pub);
        s.public_key = parse_public_key(s.pub_text);
        return signers_.emplace(name, std::move(s)).first->second;
    }

    /// The .minisig text of `signer` over `bytes` (prehashed by default, legacy with -l).
    std::string sign(const std::string& name, const std::string& bytes, bool legacy = false,
                     const std::string& comment = "certconnector test") {
        const Signer& s = (*this)[name];
        const fs::path file = dir_.path() / "message";
        const fs::path sig = dir_.path() / "message.minisig";
        write_file(file, bytes);
        run("minisign -S " + std::string(legacy ? "-l " : "") + "-s " + s.key.string() + " -m " + file.string() + " -x " +
            sig.string() + " -t '" + comment + "'");
        return read_file(sig);
    }

    std::string sign_all(std::initializer_list<const char*> names, const std::string& bytes) {
        std::string out;
        for (const char* n : names)
            out += sign(n, bytes);
        return out;
    }

private:
    TempDir dir_;
    std::map<std::string, Signer> signers_;
};

Keys& keys() {
    static Keys k;
    return k;
}

std::string root_json(std::uint64_t version, unsigned threshold, std::initializer_list<const char*> names,
                      const std::string& expires = "2099-01-01T00:00:00Z", const std::string& extra = "") {
    boost::json::array list;
    for (const char* n : names) {
        const auto& pk = keys()[n].public_key;
        list.push_back(boost::json::object{{"id", pk.key_id_hex()}, {"public_key", pk.base64()}});
    }
    std::string text = boost::json::serialize(boost::json::object{
        {"type", "certconnector-root"}, {"version", version}, {"expires", expires}, {"threshold", threshold}, {"keys", list}});
    if (!extra.empty()) text.insert(text.size() - 1, "," + extra);
    return text + "\n";
}

std::string entry_text(const std::string& name = "pkcs", const std::string& version = "0.3.1") {
    return R"({"kind":"feature","name":")" + name + R"(","version":")" + version +
           R"(","abi":{"major":1,"minor":2},"min_host":"0.4.0","release_date":"2026-12-01","size":12345,)"
           R"("sha256":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",)"
           R"("url":"plugins/feature-pkcs-0.3.1.so","rollout_percent":100})";
}

std::string index_json(std::uint64_t sequence, const std::string& expires = "2099-01-01T00:00:00Z",
                       const std::string& plugins = "") {
    return R"({"type":"certconnector-index","repository":"example","sequence":)" + std::to_string(sequence) +
           R"(,"issued":"2026-12-01T00:00:00Z","expires":")" + expires + R"(","plugins":[)" +
           (plugins.empty() ? entry_text() : plugins) + "]}\n";
}

RefusalReason refusal_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const UpdateRefused& e) {
        return e.reason;
    }
    FAIL("expected UpdateRefused");
    return RefusalReason::malformed;
}

std::chrono::sys_seconds at(const std::string& text) {
    return *parse_utc_time(text);
}

}  // namespace

TEST_CASE("minisign public keys are read from a .pub file or its base64 line, key id as minisign prints it", "[update]") {
    REQUIRE_MINISIGN();
    const Signer& a = keys()["a"];
    // minisign writes "untrusted comment: minisign public key <KEYID>" on the first line, the id
    // as a number: without its leading zeros (1 key in 16 has one), so compare parsed ids.
    const std::string prefix = "untrusted comment: minisign public key ";
    const std::string first_line = a.pub_text.substr(0, a.pub_text.find('\n'));
    REQUIRE(first_line.rfind(prefix, 0) == 0);
    CHECK(parse_key_id_hex(first_line.substr(prefix.size())) == a.public_key.key_id);
    const std::string b64 = a.pub_text.substr(a.pub_text.find('\n') + 1, 56);
    CHECK(a.public_key.base64() == b64);
    const MinisignPublicKey bare = parse_public_key(b64);
    CHECK(bare.key == a.public_key.key);
    CHECK(bare.key_id == a.public_key.key_id);
    CHECK(parse_key_id_hex(a.public_key.key_id_hex()) == a.public_key.key_id);

    CHECK_THROWS_AS(parse_public_key(""), std::invalid_argument);
    CHECK_THROWS_AS(parse_public_key(b64.substr(0, 55)), std::invalid_argument);
    CHECK_THROWS_AS(parse_public_key("comment\n" + b64), std::invalid_argument);
    CHECK_THROWS_AS(parse_public_key(std::string(5000, 'A')), std::invalid_argument);
    CHECK_THROWS_AS(parse_public_key("untrusted comment: x\n" + b64 + "\n" + b64), std::invalid_argument);
    std::string other_alg = b64;
    other_alg[1] = 'X';  // "RWQ" -> "RXQ": not "Ed"
    CHECK_THROWS_AS(parse_public_key(other_alg), std::invalid_argument);
}

TEST_CASE("minisign signatures by the real tool verify with OpenSSL, prehashed and legacy", "[update]") {
    REQUIRE_MINISIGN();
    const std::string message = "index bytes\n";
    for (const bool legacy : {false, true}) {
        DYNAMIC_SECTION((legacy ? "legacy Ed" : "prehashed ED")) {
            const auto sigs = parse_signatures(keys().sign("a", message, legacy, "file:index.json"));
            REQUIRE(sigs.size() == 1);
            CHECK(sigs[0].prehashed == !legacy);
            CHECK(sigs[0].trusted_comment == "file:index.json");
            CHECK(sigs[0].key_id == keys()["a"].public_key.key_id);
            CHECK(verify(keys()["a"].public_key, sigs[0], message));

            std::string tampered = message;
            tampered[0] ^= 1;
            CHECK_FALSE(verify(keys()["a"].public_key, sigs[0], tampered));
            CHECK_FALSE(verify(keys()["a"].public_key, sigs[0], message + " "));

            MinisignSignature comment_changed = sigs[0];
            comment_changed.trusted_comment = "file:other.json";
            CHECK_FALSE(verify(keys()["a"].public_key, comment_changed, message));

            MinisignSignature flipped = sigs[0];
            flipped.signature[10] ^= 0x40;
            CHECK_FALSE(verify(keys()["a"].public_key, flipped, message));

            // Key b with a's key id: the key id matches, the signature does not verify.
            MinisignPublicKey impostor = keys()["b"].public_key;
            impostor.key_id = keys()["a"].public_key.key_id;
            CHECK_FALSE(verify(impostor, sigs[0], message));
            CHECK_FALSE(verify(keys()["b"].public_key, sigs[0], message));
        }
    }
}

TEST_CASE("minisign signature files are parsed strictly and bounded", "[update]") {
    REQUIRE_MINISIGN();
    const std::string one = keys().sign("a", "m");
    const std::string two = one + keys().sign("b", "m");
    CHECK(parse_signatures(two).size() == 2);
    CHECK(parse_signatures(one + "\n" + one).size() == 2);  // blank line between documents

    std::string many;
    for (int i = 0; i < 33; ++i)
        many += one;
    CHECK(parse_signatures(many.substr(0, one.size() * 32)).size() == 32);
    CHECK_THROWS_WITH(parse_signatures(many), Catch::Contains("more than 32"));
    CHECK_THROWS_WITH(parse_signatures(one + std::string(70000, '\n')), Catch::Contains("larger than"));

    const auto lines = [&] {
        std::vector<std::string> out;
        std::string rest = one;
        while (!rest.empty()) {
            out.push_back(rest.substr(0, rest.find('\n')));
            rest.erase(0, rest.find('\n') + 1);
        }
        return out;
    }();
    REQUIRE(lines.size() == 4);
    auto joined = [](std::vector<std::string> l) {
        std::string s;
        for (auto& x : l)
            s += x + "\n";
        return s;
    };
    CHECK_THROWS_WITH(parse_signatures(joined({lines[0], lines[1], lines[2]})), Catch::Contains("line 1"));
    CHECK_THROWS_WITH(parse_signatures(joined({"comment", lines[1], lines[2], lines[3]})), Catch::Contains("line 1"));
    CHECK_THROWS_WITH(parse_signatures(joined({lines[0], lines[1] + "A", lines[2], lines[3]})), Catch::Contains("line 2"));
    CHECK_THROWS_WITH(parse_signatures(joined({lines[0], lines[1], "comment: x", lines[3]})), Catch::Contains("line 3"));
    CHECK_THROWS_WITH(parse_signatures(joined({lines[0], lines[1], lines[2], lines[3].substr(1)})), Catch::Contains("line 4"));
    CHECK_THROWS_WITH(parse_signatures(one + joined({lines[0], "!" + lines[1].substr(1), lines[2], lines[3]})),
                      Catch::Contains("line 6"));
    CHECK_THROWS_AS(parse_signatures(""), std::invalid_argument);
    CHECK_THROWS_AS(parse_signatures("\n\n"), std::invalid_argument);
}

TEST_CASE("each trusted key counts once, unknown keys count zero", "[update]") {
    REQUIRE_MINISIGN();
    const std::string bytes = "root bytes";
    const std::vector<MinisignPublicKey> trusted = {keys()["a"].public_key, keys()["b"].public_key};
    CHECK(count_valid_signatures(trusted, keys().sign_all({"a"}, bytes), bytes) == 1);
    CHECK(count_valid_signatures(trusted, keys().sign_all({"a", "a"}, bytes), bytes) == 1);
    CHECK(count_valid_signatures(trusted, keys().sign_all({"a", "b"}, bytes), bytes) == 2);
    CHECK(count_valid_signatures(trusted, keys().sign_all({"c"}, bytes), bytes) == 0);
    CHECK(count_valid_signatures(trusted, keys().sign_all({"c", "b", "a", "b"}, bytes), bytes) == 2);
    CHECK(count_valid_signatures(trusted, keys().sign_all({"a", "b"}, bytes), "other bytes") == 0);
}

TEST_CASE("an initial root must be self-consistent and signed by its own threshold", "[update]") {
    REQUIRE_MINISIGN();
    const std::string root = root_json(1, 2, {"a", "b", "c"});
    const TrustRoot r = load_initial_root(root, keys().sign_all({"a", "c"}, root));
    CHECK(r.version == 1);
    CHECK(r.threshold == 2);
    CHECK(r.keys.size() == 3);
    CHECK(r.bytes == root);
    CHECK(r.expires == at("2099-01-01T00:00:00Z"));

    CHECK(refusal_of([&] { load_initial_root(root, keys().sign_all({"a"}, root)); }) == RefusalReason::below_threshold);
    CHECK(refusal_of([&] { load_initial_root(root, keys().sign_all({"a", "a"}, root)); }) == RefusalReason::below_threshold);
    CHECK(refusal_of([&] { load_initial_root(root, keys().sign_all({"a", "d"}, root)); }) == RefusalReason::below_threshold);
    CHECK(refusal_of([&] { load_initial_root(root, keys().sign_all({"d"}, root)); }) == RefusalReason::unknown_key);
    CHECK(refusal_of([&] { load_initial_root(root, "not a signature"); }) == RefusalReason::malformed);
    std::string tampered = root;
    tampered.replace(tampered.find("2099"), 4, "2098");
    CHECK(refusal_of([&] { load_initial_root(tampered, keys().sign_all({"a", "b"}, root)); }) == RefusalReason::bad_signature);

    SECTION("threshold, ids and fields are checked") {
        for (const std::string& bad :
             {root_json(1, 0, {"a"}), root_json(1, 2, {"a"}), root_json(1, 1, {"a", "a"}), root_json(0, 1, {"a"}),
              root_json(1, 1, {"a"}, "2099-01-01"), root_json(1, 1, {"a"}, "2099-01-01T00:00:00Z", R"("extra":1)"),
              std::string(R"({"type":"certconnector-index"})"), std::string("[]"), std::string("{")}) {
            INFO(bad);
            CHECK(refusal_of([&] { load_initial_root(bad, keys().sign_all({"a"}, bad)); }) == RefusalReason::malformed);
        }
        std::string wrong_id = root_json(1, 1, {"a"});
        const std::string id = keys()["a"].public_key.key_id_hex();
        wrong_id.replace(wrong_id.find(id), id.size(), keys()["b"].public_key.key_id_hex());
        CHECK_THROWS_WITH(load_initial_root(wrong_id, keys().sign_all({"a"}, wrong_id)), Catch::Contains("does not match"));
    }
}

TEST_CASE("a root rotates 1 to 2 to 3, each step signed by the old and the new threshold", "[update]") {
    REQUIRE_MINISIGN();
    const std::string r1 = root_json(1, 2, {"a", "b"});
    const std::string r2 = root_json(2, 2, {"b", "c"});  // a retired, c added
    const std::string r3 = root_json(3, 1, {"c", "d"});
    const TrustRoot root1 = load_initial_root(r1, keys().sign_all({"a", "b"}, r1));

    const TrustRoot root2 = verify_next_root(root1, r2, keys().sign_all({"a", "b", "c"}, r2));
    CHECK(root2.version == 2);
    const TrustRoot root3 = verify_next_root(root2, r3, keys().sign_all({"b", "c", "d"}, r3));
    CHECK(root3.version == 3);
    CHECK(root3.threshold == 1);

    // Only the old keys: the new root's own threshold (b, c) is not reached.
    CHECK(refusal_of([&] { verify_next_root(root1, r2, keys().sign_all({"a", "b"}, r2)); }) == RefusalReason::below_threshold);
    // Only the new keys: the old root's threshold (a, b) is not reached.
    CHECK(refusal_of([&] { verify_next_root(root1, r2, keys().sign_all({"b", "c"}, r2)); }) == RefusalReason::below_threshold);
    CHECK(refusal_of([&] { verify_next_root(root1, r3, keys().sign_all({"c", "d"}, r3)); }) == RefusalReason::unknown_key);
    // Skipping a version, even signed by everybody.
    CHECK(refusal_of([&] {
              verify_next_root(root1, r3, keys().sign_all({"a", "b", "c", "d"}, r3));
          }) == RefusalReason::root_version);
    // Replaying the current version.
    CHECK(refusal_of([&] { verify_next_root(root1, r1, keys().sign_all({"a", "b"}, r1)); }) == RefusalReason::root_version);
    // An expired intermediate root does not stop the rotation (TUF); the caller checks the last.
    const std::string r2_expired = root_json(2, 2, {"b", "c"}, "2020-01-01T00:00:00Z");
    CHECK(verify_next_root(root1, r2_expired, keys().sign_all({"a", "b", "c"}, r2_expired)).version == 2);

    SECTION("follow_root_chain walks to the newest root and stops at a bad link") {
        std::map<std::uint64_t, std::pair<std::string, std::string>> repo = {{2, {r2, keys().sign_all({"a", "b", "c"}, r2)}},
                                                                             {3, {r3, keys().sign_all({"b", "c", "d"}, r3)}}};
        const RootSource source = [&](std::uint64_t v) -> std::optional<std::pair<std::string, std::string>> {
            auto it = repo.find(v);
            if (it == repo.end()) return std::nullopt;
            return it->second;
        };
        CHECK(follow_root_chain(root1, source).version == 3);
        CHECK(follow_root_chain(root1, source, 1).version == 2);
        repo[3].second = keys().sign_all({"c", "d"}, r3);  // c alone: 1 of root 2's 2
        CHECK(refusal_of([&] { follow_root_chain(root1, source); }) == RefusalReason::below_threshold);
    }
}

TEST_CASE("an index is verified over its exact bytes, then checked for rollback and expiry", "[update]") {
    REQUIRE_MINISIGN();
    const std::string r = root_json(1, 2, {"a", "b", "c"});
    const TrustRoot root = load_initial_root(r, keys().sign_all({"a", "b"}, r));
    const auto now = at("2026-12-10T00:00:00Z");
    const std::string idx = index_json(7);
    const std::string sigs = keys().sign_all({"a", "c"}, idx);

    const RepositoryIndex index = verify_index(root, idx, sigs, 0, now);
    CHECK(index.repository == "example");
    CHECK(index.sequence == 7);
    CHECK(index.issued == at("2026-12-01T00:00:00Z"));
    REQUIRE(index.entries.size() == 1);
    const IndexEntry& e = index.entries[0];
    CHECK(e.kind == "feature");
    CHECK(e.name == "pkcs");
    CHECK(e.version == "0.3.1");
    CHECK(e.abi_major == 1);
    CHECK(e.abi_minor == 2);
    CHECK(e.min_host == "0.4.0");
    CHECK(e.size == 12345);
    CHECK(e.rollout_percent == 100);
    CHECK(abi_compatible(e, 1, 2));
    CHECK(abi_compatible(e, 1, 5));
    CHECK_FALSE(abi_compatible(e, 1, 1));
    CHECK_FALSE(abi_compatible(e, 2, 2));
    CHECK(host_compatible(e, "0.4.0"));
    CHECK_FALSE(host_compatible(e, "0.3.9"));
    CHECK(index.sha256.size() == 64);

    // The same index fetched again is fine; the same sequence with other bytes is not.
    CHECK(verify_index(root, idx, sigs, 7, now, index.sha256).sequence == 7);
    const std::string other = index_json(7, "2098-01-01T00:00:00Z");
    CHECK(refusal_of([&] {
              verify_index(root, other, keys().sign_all({"a", "b"}, other), 7, now, index.sha256);
          }) == RefusalReason::rollback);
    CHECK(refusal_of([&] { verify_index(root, idx, sigs, 8, now); }) == RefusalReason::rollback);
    CHECK(refusal_of([&] { verify_index(root, idx, sigs, 0, at("2099-01-01T00:00:00Z")); }) == RefusalReason::expired);
    CHECK_THROWS_WITH(verify_index(root, idx, sigs, 0, at("2099-01-02T00:00:00Z")), Catch::Contains("expired"));

    SECTION("k of n, each key once, unknown keys and tampering") {
        CHECK(refusal_of([&] { verify_index(root, idx, keys().sign_all({"a"}, idx), 0, now); }) ==
              RefusalReason::below_threshold);
        CHECK(refusal_of([&] {
                  verify_index(root, idx, keys().sign_all({"a", "a"}, idx), 0, now);
              }) == RefusalReason::below_threshold);
        CHECK(refusal_of([&] {
                  verify_index(root, idx, keys().sign_all({"a", "d"}, idx), 0, now);
              }) == RefusalReason::below_threshold);
        CHECK(refusal_of([&] { verify_index(root, idx, keys().sign_all({"d"}, idx), 0, now); }) == RefusalReason::unknown_key);
        std::string tampered = idx;
        tampered.replace(tampered.find("12345"), 5, "12346");
        CHECK(refusal_of([&] { verify_index(root, tampered, sigs, 0, now); }) == RefusalReason::bad_signature);
        CHECK(refusal_of([&] { verify_index(root, std::string(kMaxIndexSize + 1, ' '), sigs, 0, now); }) ==
              RefusalReason::oversize);
    }

    SECTION("a validly signed but malformed index is refused as malformed") {
        for (const std::string& bad :
             {std::string("{\"type\":\"certconnector-index\""), std::string("[1,2]"),
              index_json(7, "2099-01-01T00:00:00Z", entry_text("Bad")), index_json(7, "2026-11-01T00:00:00Z"),
              index_json(7, "2099-01-01T00:00:00Z", entry_text() + "," + entry_text())}) {
            INFO(bad);
            CHECK(refusal_of([&] {
                      verify_index(root, bad, keys().sign_all({"a", "b"}, bad), 0, now);
                  }) == RefusalReason::malformed);
        }
    }

    SECTION("a root naming its repositories signs only those") {
        const std::string named = root_json(1, 1, {"a"}, "2099-01-01T00:00:00Z", R"("repositories":["other"])");
        const TrustRoot only_other = load_initial_root(named, keys().sign_all({"a"}, named));
        CHECK(refusal_of([&] { verify_index(only_other, idx, sigs, 0, now); }) == RefusalReason::not_trusted_for_plugin);
    }
}

TEST_CASE("index entries are validated field by field", "[update]") {
    auto entry_with = [](const std::string& from, const std::string& to) {
        std::string e = entry_text();
        const auto at_pos = e.find(from);
        REQUIRE(at_pos != std::string::npos);
        e.replace(at_pos, from.size(), to);
        return index_json(1, "2099-01-01T00:00:00Z", e);
    };
    CHECK(detail::parse_index_unverified(index_json(1)).entries.size() == 1);
    std::string twice = index_json(1);
    twice.insert(twice.find(R"("sequence")"), R"("sequence":9,)");
    CHECK_THROWS_WITH(detail::parse_index_unverified(twice), Catch::Contains("twice"));
    CHECK(detail::parse_index_unverified(entry_with(R"(,"rollout_percent":100)", "")).entries[0].rollout_percent == 100);
    CHECK(detail::parse_index_unverified(entry_with(R"("min_host":"0.4.0",)", "")).entries[0].min_host.empty());
    CHECK(detail::parse_index_unverified(entry_with("plugins/feature-pkcs-0.3.1.so", "https://example.com/p/x.so"))
              .entries[0]
              .url == "https://example.com/p/x.so");
    for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
             {R"("kind":"feature")", R"("kind":"gadget")"},
             {R"("name":"pkcs")", R"("name":"-pkcs")"},
             {R"("version":"0.3.1")", R"("version":"0.3")"},
             {R"("version":"0.3.1")", R"("version":"01.3.1")"},
             {R"("min_host":"0.4.0")", R"("min_host":"four")"},
             {R"("release_date":"2026-12-01")", R"("release_date":"2026-02-30")"},
             {R"("size":12345)", R"("size":0)"},
             {R"("size":12345)", R"("size":268435457)"},
             {R"("size":12345)", R"("size":-1)"},
             {R"("size":12345)", R"("size":1.5)"},
             {R"("size":12345)", R"("size":"12345")"},
             {"0123456789abcdef0123", "0123456789ABCDEF0123"},
             {"0123456789abcdef0123", "0123456789abcdef012"},
             {"plugins/feature-pkcs-0.3.1.so", "../feature-pkcs-0.3.1.so"},
             {"plugins/feature-pkcs-0.3.1.so", "plugins/../../x.so"},
             {"plugins/feature-pkcs-0.3.1.so", "/etc/passwd"},
             {"plugins/feature-pkcs-0.3.1.so", "http://example.com/x.so"},
             {"plugins/feature-pkcs-0.3.1.so", "file:///x.so"},
             {"plugins/feature-pkcs-0.3.1.so", "plugins//x.so"},
             {R"("rollout_percent":100)", R"("rollout_percent":101)"},
             {R"("abi":{"major":1,"minor":2})", R"("abi":{"major":1})"},
             {R"("abi":{"major":1,"minor":2})", R"("abi":{"min":"1.0","max":"1.2"})"},
             {R"("kind":"feature")", R"("kind":"feature","extra":true)"},
             {R"("size":12345)", R"("size":12345,"size":1)"},  // a reviewer and the connector must read one value
         }) {
        INFO(from << " -> " << to);
        CHECK(refusal_of([&] { detail::parse_index_unverified(entry_with(from, to)); }) == RefusalReason::malformed);
    }
}

TEST_CASE("rollout hashing is deterministic and spreads instances", "[update]") {
    IndexEntry e;
    e.name = "pkcs";
    e.version = "0.3.1";
    e.rollout_percent = 50;
    int included = 0;
    for (int i = 0; i < 1000; ++i) {
        const std::string id = "instance-" + std::to_string(i);
        const bool in = rollout_includes(id, e);
        CHECK(rollout_includes(id, e) == in);
        included += in ? 1 : 0;
    }
    CHECK(included > 400);
    CHECK(included < 600);
    const bool host1 = rollout_includes("host-1", e);
    e.rollout_percent = 0;
    CHECK_FALSE(rollout_includes("host-1", e));
    e.rollout_percent = 100;
    CHECK(rollout_includes("host-1", e));
    // A growing percentage only adds instances.
    e.rollout_percent = 80;
    if (host1) CHECK(rollout_includes("host-1", e));
}

TEST_CASE("semantic versions compare by precedence", "[update]") {
    const std::vector<std::string> ascending = {"0.9.9",       "1.0.0-alpha",    "1.0.0-alpha.1", "1.0.0-alpha.beta",
                                                "1.0.0-beta",  "1.0.0-beta.2",   "1.0.0-beta.11", "1.0.0-rc.1",
                                                "1.0.0",       "1.0.1",          "1.9.0",         "1.10.0",
                                                "2.0.0-0.3.7", "2.0.0-x.7.z.92", "2.0.0",         "10.0.0"};
    for (std::size_t i = 0; i < ascending.size(); ++i)
        for (std::size_t j = 0; j < ascending.size(); ++j) {
            INFO(ascending[i] << " vs " << ascending[j]);
            const int c = compare_versions(ascending[i], ascending[j]);
            CHECK((i < j ? c < 0 : (i == j ? c == 0 : c > 0)));
        }
    CHECK(compare_versions("1.0.0+build.1", "1.0.0+build.2") == 0);
    CHECK(compare_versions("1.0.0-alpha+x", "1.0.0-alpha") == 0);
    CHECK(compare_versions("18446744073709551615.0.0", "1.0.0") > 0);
    for (const char* bad : {"1.0", "1.0.0.0", "01.0.0", "1.0.0-", "1.0.0-01", "1.0.0+", "1.0.0-a..b", "v1.0.0", "", "1.0.0 "}) {
        INFO(bad);
        CHECK_FALSE(is_semver(bad));
        CHECK_THROWS_AS(compare_versions(bad, "1.0.0"), std::invalid_argument);
    }
    CHECK(is_semver("1.0.0-0A.is.legal+build-1.2"));
    CHECK_FALSE(is_semver("99999999999999999999.0.0"));  // beyond 64 bits
}

TEST_CASE("UTC times are parsed strictly", "[update]") {
    CHECK(parse_utc_time("2027-12-01T00:00:00Z"));
    CHECK(parse_utc_time("2028-02-29T23:59:59Z"));
    for (const char* bad : {"2027-12-01", "2027-12-01T00:00:00", "2027-12-01T24:00:00Z", "2027-02-30T00:00:00Z",
                            "2027-12-01t00:00:00z", "2027-12-01T00:00:00+00:00", "2027-12-01T00:60:00Z"}) {
        INFO(bad);
        CHECK_FALSE(parse_utc_time(bad));
    }
}

TEST_CASE("refusal reasons have stable names", "[update]") {
    CHECK(std::string(refusal_reason_name(RefusalReason::below_threshold)) == "below_threshold");
    CHECK(std::string(refusal_reason_name(RefusalReason::not_trusted_for_plugin)) == "not_trusted_for_plugin");
    const UpdateRefused e(RefusalReason::expired, "index.json: expired");
    CHECK(e.reason == RefusalReason::expired);
    CHECK(std::string(e.what()) == "index.json: expired");
}

TEST_CASE("repo init, add, publish, sign and verify build a repository the verifier accepts", "[update]") {
    REQUIRE_MINISIGN();
    using certconn::host::ParsedOptions;
    // The commands talk to an operator on stdout and stderr; keep the test output readable
    // (only while a command runs: Catch reports on std::cout).
    const auto quietly = [](int (*command)(const ParsedOptions&), const ParsedOptions& o) {
        std::ostringstream quiet;
        struct Redirect {
            std::ostream& stream;
            std::streambuf* old;
            ~Redirect() { stream.rdbuf(old); }
        } out{std::cout, std::cout.rdbuf(quiet.rdbuf())}, err{std::cerr, std::cerr.rdbuf(quiet.rdbuf())};
        return command(o);
    };
    const TempDir tmp;
    const fs::path repo = tmp / "example";
    fs::create_directories(tmp / "built");
    const auto echo = certconn::test::install_fixture(tmp / "built", "good", "fixture-echo");
    const auto ca = certconn::test::install_fixture(tmp / "built", "good", "fixture-ca");

    ParsedOptions init;
    init.positional = {repo.string()};
    init.lists["key"] = {keys()["a"].pub.string(), keys()["b"].pub.string(), keys()["c"].pub.string()};
    init.values["threshold"] = "2";
    REQUIRE(quietly(certconn::host::repo_init, init) == 0);
    CHECK(fs::is_directory(repo / "plugins"));
    const TrustRoot unsigned_root = detail::parse_root_unverified(read_file(repo / "1.root.json"));
    CHECK(unsigned_root.threshold == 2);
    CHECK(unsigned_root.repositories == std::vector<std::string>{"example"});
    CHECK_THROWS_AS(quietly(certconn::host::repo_init, init), std::invalid_argument);  // a root is never rewritten

    ParsedOptions add;
    add.positional = {repo.string(), echo.string(), ca.string()};
    add.values["min-host"] = "0.1.0";
    add.values["rollout"] = "50";
    REQUIRE(quietly(certconn::host::repo_add, add) == 0);

    ParsedOptions publish;
    publish.positional = {repo.string()};
    REQUIRE(quietly(certconn::host::repo_publish, publish) == 0);

    auto sign = [&](const fs::path& file, std::initializer_list<const char*> who) {
        ParsedOptions o;
        o.positional = {repo.string(), file.string()};
        for (const char* w : who)
            o.lists["secret-key"].push_back(keys()[w].key.string());
        return quietly(certconn::host::repo_sign, o);
    };
    REQUIRE(sign(repo / "1.root.json", {"a", "b"}) == 0);
    REQUIRE(sign(repo / "index.json", {"a", "c"}) == 0);

    ParsedOptions verify_options;
    verify_options.positional = {repo.string()};
    verify_options.values["root"] = (repo / "1.root.json").string();
    CHECK(quietly(certconn::host::repo_verify, verify_options) == 0);

    const TrustRoot root = load_initial_root(read_file(repo / "1.root.json"), read_file(repo / "1.root.json.minisig"));
    const RepositoryIndex index = verify_index(root, read_file(repo / "index.json"), read_file(repo / "index.json.minisig"), 0,
                                               std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now()));
    CHECK(index.sequence == 1);
    REQUIRE(index.entries.size() == 2);
    for (const auto& e : index.entries) {
        INFO(e.name);
        CHECK(e.min_host == "0.1.0");
        CHECK(e.rollout_percent == 50);
        CHECK(e.abi_major == 1);
        CHECK(fs::file_size(repo / e.url) == e.size);
    }

    SECTION("a second publish takes the next sequence and voids the old signature") {
        REQUIRE(quietly(certconn::host::repo_publish, publish) == 0);
        CHECK_FALSE(fs::exists(repo / "index.json.minisig"));
        REQUIRE(sign(repo / "index.json", {"b"}) == 0);
        CHECK(quietly(certconn::host::repo_verify, verify_options) == 1);  // 1 of 2 keys
        ParsedOptions more;
        more.positional = {repo.string(), "index.json"};
        more.lists["secret-key"] = {keys()["c"].key.string()};
        more.flags = {"append"};
        REQUIRE(quietly(certconn::host::repo_sign, more) == 0);
        CHECK(parse_signatures(read_file(repo / "index.json.minisig")).size() == 2);
        CHECK(quietly(certconn::host::repo_verify, verify_options) == 0);
        CHECK(detail::parse_index_unverified(read_file(repo / "index.json")).sequence == 2);
        verify_options.values["last-sequence"] = "3";
        CHECK(quietly(certconn::host::repo_verify, verify_options) == 1);  // rollback
    }

    SECTION("a plugin file changed after signing is refused") {
        const fs::path file = repo / index.entries[0].url;
        std::string bytes = read_file(file);
        bytes[bytes.size() / 2] ^= 1;
        write_file(file, bytes);
        CHECK(quietly(certconn::host::repo_verify, verify_options) == 1);
    }

    SECTION("the root rotates with repo init --root-version 2") {
        ParsedOptions next;
        next.positional = {repo.string()};
        next.lists["key"] = {keys()["c"].pub.string(), keys()["d"].pub.string()};
        next.values["threshold"] = "1";
        next.values["root-version"] = "2";
        REQUIRE(quietly(certconn::host::repo_init, next) == 0);
        REQUIRE(sign(repo / "2.root.json", {"a", "d"}) == 0);  // old a + new d: only 1 of the old 2
        CHECK(quietly(certconn::host::repo_verify, verify_options) == 1);
        REQUIRE(sign(repo / "2.root.json", {"a", "b", "d"}) == 0);
        REQUIRE(sign(repo / "index.json", {"d"}) == 0);
        CHECK(quietly(certconn::host::repo_verify, verify_options) == 0);  // from the trusted 1 through 2
    }
}

TEST_CASE("a key id as minisign prints it, without leading zeros, names the same key", "[update]") {
    CHECK(parse_key_id_hex("ABC") == parse_key_id_hex("0000000000000ABC"));
    CHECK(key_id_hex(parse_key_id_hex("abc")) == "0000000000000ABC");
    CHECK_THROWS_AS(parse_key_id_hex(""), std::invalid_argument);
    CHECK_THROWS_AS(parse_key_id_hex("00000000000000ABC"), std::invalid_argument);  // 17 digits
    CHECK_THROWS_AS(parse_key_id_hex("XYZ"), std::invalid_argument);
}
