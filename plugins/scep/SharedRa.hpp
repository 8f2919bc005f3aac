// The RA identity (key and certificate) of each SCEP profile, shared by a fleet through the
// store, so GetCACert from one instance and PKIOperation to another agree. The first instance
// offers a key (INSERT ... ON CONFLICT DO NOTHING); every instance then uses the key stored,
// whichever won. The key is stored as encrypted PKCS#8 PEM (AES-256-CBC, PBKDF2) under the
// passphrase of `[scep] shared_key_file`, which every instance holds; the store never sees it
// in the clear. The certificate is obtained from the CA for the stored key's CSR by whichever
// instance first finds it missing (the CA issues once per request id; the request id names the
// CSR, so every instance gets the same certificate).
#pragma once

#include "Store.hpp"

#include <certconn/crypto.hpp>

#include <optional>
#include <string>
#include <vector>

namespace certconn::scep {

struct RaRecord {
    std::string key_pem;  // encrypted PKCS#8 PEM
    std::string csr_pem;
    std::string certificate_pem;  // "" until the CA answered
    std::string chain_pem;
    std::string created_by;  // instance id
};

class SharedRa {
public:
    explicit SharedRa(ConnectionPtr connection);
    std::optional<RaRecord> find(const std::string& profile);
    /// Stores `candidate` unless the profile has an RA already; returns the stored one (ours or
    /// the winner's).
    RaRecord offer(const std::string& profile, const RaRecord& candidate);
    /// Records the certificate for the stored CSR when none is there yet; returns the stored row.
    RaRecord set_certificate(const std::string& profile, const std::string& certificate_pem, const std::string& chain_pem);
    /// The profiles that have a stored RA.
    std::vector<std::string> profiles();

private:
    ConnectionPtr c_;
};

/// `key` as encrypted PKCS#8 PEM (AES-256-CBC, key derived with PBKDF2 from `passphrase`).
std::string encrypt_private_key(EVP_PKEY* key, const std::string& passphrase);
/// The key of an encrypted PKCS#8 PEM; throws std::runtime_error naming `what` when the
/// passphrase is wrong or the PEM is damaged (never the passphrase itself).
crypto::PKey decrypt_private_key(const std::string& pem, const std::string& passphrase, const std::string& what);

/// The passphrase in `file` (crypto::read_passphrase_file): its content without trailing
/// whitespace. Throws (a std::runtime_error or std::invalid_argument) naming the file when it
/// cannot be read, is accessible by others, is empty or holds fewer than 16 characters.
std::string read_passphrase_file(const std::string& file);

}  // namespace certconn::scep
