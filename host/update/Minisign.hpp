// The minisign signature format (https://jedisct1.github.io/minisign/), read and verified with
// OpenSSL alone: Ed25519 over BLAKE2b-512(message) ("ED", minisign's default since 0.8) or over
// the message itself (legacy "Ed", `minisign -S -l`), plus the global signature over the
// signature and its trusted comment. Signing is left to the real `minisign` tool.
//
// Every parser is bounded and strict: anything but the exact format throws
// std::invalid_argument naming the line and what was expected.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace certconn::host::update {

/// Largest public key text accepted (a .pub file is two short lines).
inline constexpr std::size_t kMaxPublicKeyText = 4096;
/// Largest .minisig text accepted, and most signatures in it (k-of-n signatures are shipped as
/// concatenated .minisig documents: `cat a.minisig b.minisig > index.json.minisig`).
inline constexpr std::size_t kMaxSignatureText = std::size_t{64} * 1024;
inline constexpr std::size_t kMaxSignatures = 32;

struct MinisignPublicKey {
    std::array<unsigned char, 8> key_id{};  // as stored in the key (little-endian)
    std::array<unsigned char, 32> key{};    // raw Ed25519 public key

    /// The key id as minisign prints it ("E97D65B10E6BC225"): upper-case hex of the
    /// little-endian 64-bit number, i.e. the stored bytes in reverse order.
    std::string key_id_hex() const;
    /// The bare base64 line of a .pub file ("RWQ..."), as root files carry it.
    std::string base64() const;
};

/// A whole .pub file ("untrusted comment: ..." line, then the base64 line) or the bare base64
/// line; the algorithm must be "Ed". Throws std::invalid_argument.
MinisignPublicKey parse_public_key(std::string_view text);

/// "E97D65B10E6BC225" -> stored key id bytes; throws std::invalid_argument unless 16 hex digits.
std::array<unsigned char, 8> parse_key_id_hex(std::string_view hex);
/// The inverse of parse_key_id_hex.
std::string key_id_hex(const std::array<unsigned char, 8>& key_id);

struct MinisignSignature {
    bool prehashed = true;  // "ED": over BLAKE2b-512(message); false: legacy "Ed", over the message
    std::array<unsigned char, 8> key_id{};
    std::array<unsigned char, 64> signature{};
    std::string trusted_comment;  // the text after "trusted comment: "
    std::array<unsigned char, 64> global_signature{};
};

/// One or more concatenated .minisig documents, each exactly four lines: "untrusted comment:
/// ...", the base64 signature, "trusted comment: ...", the base64 global signature. Blank lines
/// between documents are allowed. At most kMaxSignatures in kMaxSignatureText bytes. Throws
/// std::invalid_argument naming the line.
std::vector<MinisignSignature> parse_signatures(std::string_view text);

/// True when `signature` is by `key` (key ids match), verifies over `message` (BLAKE2b-512
/// prehash for "ED", the message itself for legacy "Ed"), and its global signature verifies over
/// signature || trusted comment. False on any mismatch; never throws for a bad signature.
bool verify(const MinisignPublicKey& key, const MinisignSignature& signature, std::string_view message);

}  // namespace certconn::host::update
