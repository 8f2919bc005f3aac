#include "update/Minisign.hpp"

#include <certconn/crypto.hpp>

#include <openssl/err.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>

namespace certconn::host::update {

namespace {

constexpr std::string_view kUntrusted = "untrusted comment: ";
constexpr std::string_view kTrusted = "trusted comment: ";
// minisign's own limit on a comment (COMMENT_MAXBYTES) plus its prefix.
constexpr std::size_t kMaxLine = 1024 + 32;

/// Splits `text` into lines ("\n", an optional "\r" before it is dropped); a final line
/// without "\n" counts too.
std::vector<std::string_view> split_lines(std::string_view text) {
    std::vector<std::string_view> lines;
    while (!text.empty()) {
        const auto nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        lines.push_back(line);
        if (nl == std::string_view::npos) break;
        text.remove_prefix(nl + 1);
    }
    return lines;
}

/// Decodes a line of canonical base64 that must hold exactly `size` bytes.
std::string decode_exact(std::string_view line, std::size_t size, const std::string& what) {
    const bool charset = std::all_of(line.begin(), line.end(), [](char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/' || c == '=';
    });
    if (!charset || line.size() != 4 * ((size + 2) / 3))
        throw std::invalid_argument(what + ": expected " + std::to_string(size) + " bytes of base64 (" +
                                    std::to_string(4 * ((size + 2) / 3)) + " characters)");
    std::string bytes;
    try {
        bytes = crypto::base64_decode(line);
    } catch (const std::invalid_argument&) {
        throw std::invalid_argument(what + ": invalid base64");
    }
    // Canonical: re-encoding gives the same text (no stray padding, no non-zero spare bits).
    if (bytes.size() != size || crypto::base64_encode(bytes) != line)
        throw std::invalid_argument(what + ": invalid base64 (not " + std::to_string(size) + " bytes)");
    return bytes;
}

template <std::size_t N>
std::array<unsigned char, N> to_array(std::string_view bytes) {
    std::array<unsigned char, N> out{};
    std::memcpy(out.data(), bytes.data(), N);
    return out;
}

std::string line_name(std::size_t index) {
    return "line " + std::to_string(index + 1);
}

using MdCtx = std::unique_ptr<EVP_MD_CTX, crypto::Deleter<EVP_MD_CTX_free>>;
using Md = std::unique_ptr<EVP_MD, crypto::Deleter<EVP_MD_free>>;

/// Ed25519 verification of `sig` over `message` with the raw public `key`.
bool ed25519_verify(const std::array<unsigned char, 32>& key, const unsigned char* sig, std::string_view message) {
    const crypto::PKey pkey(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, key.data(), key.size()));
    if (!pkey) return false;
    const MdCtx ctx(EVP_MD_CTX_new());
    if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, pkey.get()) != 1) return false;
    return EVP_DigestVerify(ctx.get(), sig, 64, reinterpret_cast<const unsigned char*>(message.data()), message.size()) == 1;
}

/// BLAKE2b-512 of `message` (minisign's prehash), or nothing when OpenSSL lacks it.
bool blake2b512(std::string_view message, std::string& digest) {
    const Md md(EVP_MD_fetch(nullptr, "BLAKE2B-512", nullptr));
    if (!md) return false;
    digest.assign(64, '\0');
    unsigned int len = 0;
    if (EVP_Digest(message.data(), message.size(), reinterpret_cast<unsigned char*>(digest.data()), &len, md.get(), nullptr) !=
            1 ||
        len != 64)
        return false;
    return true;
}

}  // namespace

std::string key_id_hex(const std::array<unsigned char, 8>& key_id) {
    static const char* digits = "0123456789ABCDEF";
    std::string out;
    for (auto it = key_id.rbegin(); it != key_id.rend(); ++it) {
        out += digits[*it >> 4];
        out += digits[*it & 15];
    }
    return out;
}

std::array<unsigned char, 8> parse_key_id_hex(std::string_view hex) {
    auto nibble = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        return -1;
    };
    if (hex.empty() || hex.size() > 16)
        throw std::invalid_argument("key id '" + std::string(hex.substr(0, 32)) + "': expected up to 16 hex digits");
    // minisign prints the id as a number, without leading zeros: pad it back to 16 digits.
    const std::string padded = std::string(16 - hex.size(), '0') + std::string(hex);
    hex = padded;
    std::array<unsigned char, 8> out{};
    for (std::size_t i = 0; i < 8; ++i) {
        const int hi = nibble(hex[2 * i]);
        const int lo = nibble(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) throw std::invalid_argument("key id '" + std::string(hex) + "': expected up to 16 hex digits");
        out[7 - i] = static_cast<unsigned char>(hi * 16 + lo);
    }
    return out;
}

std::string MinisignPublicKey::key_id_hex() const {
    return update::key_id_hex(key_id);
}

std::string MinisignPublicKey::base64() const {
    std::string raw = "Ed";
    raw.append(reinterpret_cast<const char*>(key_id.data()), key_id.size());
    raw.append(reinterpret_cast<const char*>(key.data()), key.size());
    return crypto::base64_encode(raw);
}

MinisignPublicKey parse_public_key(std::string_view text) {
    if (text.size() > kMaxPublicKeyText)
        throw std::invalid_argument("minisign public key: larger than " + std::to_string(kMaxPublicKeyText) + " bytes");
    std::vector<std::string_view> lines = split_lines(text);
    while (!lines.empty() && lines.back().empty())
        lines.pop_back();
    std::string_view b64;
    if (lines.size() == 2) {
        if (lines[0].substr(0, kUntrusted.size()) != kUntrusted)
            throw std::invalid_argument("minisign public key line 1: expected 'untrusted comment: ...'");
        b64 = lines[1];
    } else if (lines.size() == 1) {
        b64 = lines[0];
    } else {
        throw std::invalid_argument(
            "minisign public key: expected a .pub file (comment line and base64 line) or its base64 line, found " +
            std::to_string(lines.size()) + " lines");
    }
    const std::string raw = decode_exact(b64, 42, "minisign public key");
    if (raw.compare(0, 2, "Ed") != 0) throw std::invalid_argument("minisign public key: algorithm is not Ed (Ed25519)");
    MinisignPublicKey key;
    key.key_id = to_array<8>(std::string_view(raw).substr(2, 8));
    key.key = to_array<32>(std::string_view(raw).substr(10, 32));
    return key;
}

std::vector<MinisignSignature> parse_signatures(std::string_view text) {
    if (text.size() > kMaxSignatureText)
        throw std::invalid_argument("minisign signatures: larger than " + std::to_string(kMaxSignatureText) + " bytes");
    const std::vector<std::string_view> lines = split_lines(text);
    std::vector<MinisignSignature> out;
    std::size_t i = 0;
    while (i < lines.size()) {
        if (lines[i].empty()) {
            ++i;
            continue;
        }
        if (out.size() == kMaxSignatures)
            throw std::invalid_argument("minisign signatures: more than " + std::to_string(kMaxSignatures) + " signatures");
        if (i + 4 > lines.size())
            throw std::invalid_argument("minisign signatures " + line_name(i) +
                                        ": a signature has 4 lines (untrusted comment, signature, trusted comment, "
                                        "global signature); the text ends early");
        for (std::size_t k = i; k < i + 4; ++k)
            if (lines[k].size() > kMaxLine)
                throw std::invalid_argument("minisign signatures " + line_name(k) + ": longer than " + std::to_string(kMaxLine) +
                                            " characters");
        if (lines[i].substr(0, kUntrusted.size()) != kUntrusted)
            throw std::invalid_argument("minisign signatures " + line_name(i) + ": expected 'untrusted comment: ...'");
        const std::string sig = decode_exact(lines[i + 1], 74, "minisign signatures " + line_name(i + 1));
        MinisignSignature s;
        if (sig.compare(0, 2, "ED") == 0)
            s.prehashed = true;
        else if (sig.compare(0, 2, "Ed") == 0)
            s.prehashed = false;
        else
            throw std::invalid_argument("minisign signatures " + line_name(i + 1) + ": algorithm is neither ED nor Ed");
        s.key_id = to_array<8>(std::string_view(sig).substr(2, 8));
        s.signature = to_array<64>(std::string_view(sig).substr(10, 64));
        if (lines[i + 2].substr(0, kTrusted.size()) != kTrusted)
            throw std::invalid_argument("minisign signatures " + line_name(i + 2) + ": expected 'trusted comment: ...'");
        s.trusted_comment = std::string(lines[i + 2].substr(kTrusted.size()));
        s.global_signature = to_array<64>(decode_exact(lines[i + 3], 64, "minisign signatures " + line_name(i + 3)));
        out.push_back(std::move(s));
        i += 4;
    }
    if (out.empty()) throw std::invalid_argument("minisign signatures: no signature found");
    return out;
}

bool verify(const MinisignPublicKey& key, const MinisignSignature& signature, std::string_view message) {
    bool ok = false;
    if (key.key_id == signature.key_id) {
        if (signature.prehashed) {
            std::string digest;
            ok = blake2b512(message, digest) && ed25519_verify(key.key, signature.signature.data(), digest);
        } else {
            ok = ed25519_verify(key.key, signature.signature.data(), message);
        }
        if (ok) {
            std::string global(reinterpret_cast<const char*>(signature.signature.data()), signature.signature.size());
            global += signature.trusted_comment;
            ok = ed25519_verify(key.key, signature.global_signature.data(), global);
        }
    }
    ERR_clear_error();  // a failed verification leaves nothing behind for the next OpenSSL caller
    return ok;
}

}  // namespace certconn::host::update
