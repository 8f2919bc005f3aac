// Test helpers: a signed plugin repository built with the real minisign tool (keys, roots,
// index, plugin files), as the update manager's tests need it.
#pragma once

#include "support/TestFiles.hpp"

#include <certconn/abi.h>
#include <certconn/crypto.hpp>

#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

namespace certconn::test {

namespace json = boost::json;
namespace fs = std::filesystem;

inline std::string quoted(const std::string& s) {
    std::string out = "'";
    for (char c : s)
        out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

/// Runs a shell command; the test fails (with its output) unless it succeeds.
inline void must(const std::string& command) {
    std::string output;
    FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
    REQUIRE(pipe != nullptr);
    char buf[4096];
    std::size_t n = 0;
    while ((n = fread(buf, 1, sizeof buf, pipe)) > 0)
        output.append(buf, n);
    const int status = ::pclose(pipe);
    INFO(command << "\n" << output);
    REQUIRE((WIFEXITED(status) && WEXITSTATUS(status) == 0));
}

inline constexpr const char* kFuture = "2030-01-01T00:00:00Z";
inline constexpr const char* kPast = "2026-01-01T00:00:00Z";

inline std::string sha256_hex(const std::string& data) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr);
    return certconn::crypto::hex_encode(std::string_view(reinterpret_cast<const char*>(digest), len));
}

/// A minisign key pair made by the real minisign tool (no password).
struct Signer {
    fs::path secret;
    std::string id;          // as minisign prints it
    std::string public_key;  // base64 line of the .pub file

    Signer(const fs::path& dir, const std::string& name) : secret(dir / (name + ".key")) {
        const fs::path pub = dir / (name + ".pub");
        must("minisign -G -W -f -p " + quoted(pub.string()) + " -s " + quoted(secret.string()) + " >/dev/null");
        std::istringstream lines(read_file(pub));
        std::string comment;
        std::getline(lines, comment);
        std::getline(lines, public_key);
        id = comment.substr(comment.rfind(' ') + 1);
        // minisign prints the id without leading zeros (%"PRIX64"); roots spell all 16 digits.
        id.insert(0, 16 - std::min<std::size_t>(16, id.size()), '0');
    }
};

/// Signatures of `file` by each of `signers`, concatenated (a threshold signature file).
inline std::string sign(const fs::path& file, const std::vector<const Signer*>& signers) {
    std::string out;
    const fs::path sig = file.string() + ".one";
    for (const Signer* s : signers) {
        must("minisign -S -s " + quoted(s->secret.string()) + " -m " + quoted(file.string()) + " -x " + quoted(sig.string()) +
             " >/dev/null");
        out += read_file(sig);
    }
    fs::remove(sig);
    return out;
}

inline std::string root_json(unsigned version, unsigned threshold, const std::vector<const Signer*>& keys) {
    json::array k;
    for (const Signer* s : keys)
        k.push_back(json::object{{"id", s->id}, {"public_key", s->public_key}});
    return json::serialize(json::object{{"type", "certconnector-root"},
                                        {"version", version},
                                        {"expires", kFuture},
                                        {"threshold", threshold},
                                        {"keys", k},
                                        {"repositories", json::array{"test"}}});
}

/// A plugin file offered by the index.
struct Offer {
    Offer(std::string fixture, std::string version, std::string min_host = {}, std::string size_override = {},
          std::string sha_override = {})
        : fixture(std::move(fixture)),
          version(std::move(version)),
          min_host(std::move(min_host)),
          size_override(std::move(size_override)),
          sha_override(std::move(sha_override)) {}
    std::string fixture;  // tests/fixtures/update/<fixture>.so
    std::string version;
    std::string min_host;       // empty: none
    std::string size_override;  // announce another size
    std::string sha_override;   // announce another digest
};

/// The repository directory a server publishes: roots, index and plugins, all signed.
struct Repository {
    fs::path dir;
    explicit Repository(fs::path d) : dir(std::move(d)) {
        fs::create_directories(dir / "plugins");
        ::chmod(dir.c_str(), 0755);
        ::chmod((dir / "plugins").c_str(), 0755);
    }

    /// Publishes root `version` (signed by `signers`).
    void publish_root(unsigned version, const std::string& bytes, const std::vector<const Signer*>& signers) const {
        const fs::path file = dir / (std::to_string(version) + ".root.json");
        write_file(file, bytes);
        const std::string sigs = sign(file, signers);
        write_file(file.string() + ".minisig", sigs);
    }

    /// Publishes an index offering `offers` (files copied next to it), signed by `signers`.
    void publish_index(std::uint64_t sequence, const std::vector<Offer>& offers, const std::vector<const Signer*>& signers,
                       const std::string& expires = kFuture) const {
        json::array plugins;
        for (const auto& o : offers) {
            const std::string bytes = read_file(fixture("update", o.fixture));
            const std::string name = "updemo-" + o.version + ".so";
            write_file(dir / "plugins" / name, bytes);
            json::object e{{"kind", "feature"},
                           {"name", "updemo"},
                           {"version", o.version},
                           {"abi", json::object{{"major", CERTCONN_ABI_MAJOR}, {"minor", CERTCONN_ABI_MINOR}}},
                           {"release_date", "2026-11-01"},
                           {"size", o.size_override.empty() ? bytes.size() : std::stoull(o.size_override)},
                           {"sha256", o.sha_override.empty() ? sha256_hex(bytes) : o.sha_override},
                           {"url", "plugins/" + name}};
            if (!o.min_host.empty()) e["min_host"] = o.min_host;
            plugins.push_back(std::move(e));
        }
        const fs::path file = dir / "index.json";
        write_file(file, json::serialize(json::object{{"type", "certconnector-index"},
                                                      {"repository", "test"},
                                                      {"sequence", sequence},
                                                      {"issued", "2025-06-01T00:00:00Z"},
                                                      {"expires", expires},
                                                      {"plugins", plugins}}));
        write_file(file.string() + ".minisig", sign(file, signers));
    }
};

}  // namespace certconn::test
