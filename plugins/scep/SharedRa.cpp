#include "SharedRa.hpp"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <fstream>
#include <iterator>
#include <stdexcept>

namespace certconn::scep {

namespace {
RaRecord load(sql::Database& db, const std::string& profile, bool& found) {
    auto s = db.prepare("SELECT key_pem, csr_pem, certificate_pem, chain_pem, created_by FROM ra WHERE profile = $1");
    s.bind(1, profile);
    found = s.step();
    if (!found) return {};
    return {s.text(0), s.text(1), s.optional_text(2).value_or(""), s.optional_text(3).value_or(""), s.text(4)};
}
}  // namespace

SharedRa::SharedRa(ConnectionPtr connection) : c_(std::move(connection)) {}

std::optional<RaRecord> SharedRa::find(const std::string& profile) {
    std::lock_guard lock(c_->mutex);
    bool found = false;
    RaRecord r = load(c_->ready(), profile, found);
    if (!found) return std::nullopt;
    return r;
}

RaRecord SharedRa::offer(const std::string& profile, const RaRecord& candidate) {
    std::lock_guard lock(c_->mutex);
    auto& db = c_->ready();
    db.prepare(
          "INSERT INTO ra (profile, key_pem, csr_pem, certificate_pem, chain_pem, created_by, created_at) "
          "VALUES ($1, $2, $3, $4, $5, $6, " +
          db.now_sql() + ") ON CONFLICT (profile) DO NOTHING")
        .bind(1, profile)
        .bind(2, candidate.key_pem)
        .bind(3, candidate.csr_pem)
        .bind(4, candidate.certificate_pem.empty() ? std::optional<std::string>() : candidate.certificate_pem)
        .bind(5, candidate.chain_pem.empty() ? std::optional<std::string>() : candidate.chain_pem)
        .bind(6, candidate.created_by)
        .run();
    bool found = false;
    RaRecord r = load(db, profile, found);
    if (!found) throw sql::Error(sql::Error::Kind::busy, "the RA of profile '" + profile + "' vanished while being stored");
    return r;
}

RaRecord SharedRa::set_certificate(const std::string& profile, const std::string& certificate_pem, const std::string& chain_pem) {
    std::lock_guard lock(c_->mutex);
    auto& db = c_->ready();
    db.prepare("UPDATE ra SET certificate_pem = $2, chain_pem = $3 WHERE profile = $1 AND certificate_pem IS NULL")
        .bind_all(profile, certificate_pem, chain_pem)
        .run();
    bool found = false;
    RaRecord r = load(db, profile, found);
    if (!found) throw sql::Error(sql::Error::Kind::other, "the RA of profile '" + profile + "' is missing from the store");
    return r;
}

std::vector<std::string> SharedRa::profiles() {
    std::lock_guard lock(c_->mutex);
    auto s = c_->ready().prepare("SELECT profile FROM ra ORDER BY profile");
    std::vector<std::string> out;
    while (s.step())
        out.push_back(s.text(0));
    return out;
}

std::string encrypt_private_key(EVP_PKEY* key, const std::string& passphrase) {
    crypto::Bio bio(BIO_new(BIO_s_mem()));
    // PKCS#8 with PBES2: AES-256-CBC, key from PBKDF2 (OpenSSL's defaults for PKCS#8 output).
    if (PEM_write_bio_PKCS8PrivateKey(bio.get(), key, EVP_aes_256_cbc(), nullptr, 0, nullptr,
                                      const_cast<char*>(passphrase.c_str())) != 1) {
        ERR_clear_error();
        throw std::runtime_error("cannot encrypt the RA key");
    }
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(n));
}

crypto::PKey decrypt_private_key(const std::string& pem, const std::string& passphrase, const std::string& what) {
    if (pem.find("-----BEGIN ENCRYPTED PRIVATE KEY-----") == std::string::npos)
        throw std::runtime_error(what + " is not an encrypted PKCS#8 PEM key");
    crypto::Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    EVP_PKEY* key = PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, const_cast<char*>(passphrase.c_str()));
    if (!key) {
        ERR_clear_error();
        throw std::runtime_error(what + " does not decrypt with this passphrase (every instance needs the same one)");
    }
    return crypto::PKey(key);
}

std::string read_passphrase_file(const std::string& file) {
    std::ifstream in(file, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + file);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (text.size() > 4096) throw std::runtime_error(file + " is longer than 4096 bytes; expected one passphrase");
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ' || text.back() == '\t'))
        text.pop_back();
    if (text.empty()) throw std::runtime_error(file + " is empty; expected a passphrase");
    return text;
}

}  // namespace certconn::scep
