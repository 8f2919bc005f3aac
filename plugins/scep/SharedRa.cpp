#include "SharedRa.hpp"

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
    return crypto::encrypt_private_key_pem(key, passphrase);
}

crypto::PKey decrypt_private_key(const std::string& pem, const std::string& passphrase, const std::string& what) {
    return crypto::decrypt_private_key_pem(pem, passphrase, what);
}

std::string read_passphrase_file(const std::string& file) {
    return crypto::read_passphrase_file(file, "the passphrase file");
}

}  // namespace certconn::scep
