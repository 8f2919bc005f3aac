#include "IssuanceStore.hpp"

#include <openssl/bn.h>

#include <stdexcept>

namespace certconn::ca_local {

namespace {
constexpr const char* kColumns =
    "serial, request_id, subject, sans, not_before, not_after, profile, requester, status, "
    "revocation_reason, revoked_at, certificate_pem";
}

IssuanceStore::IssuanceStore(const std::filesystem::path& file) : db_(file, true) {
    db_.exec(R"(CREATE TABLE IF NOT EXISTS certificates (
        serial TEXT PRIMARY KEY,
        request_id TEXT UNIQUE,
        subject TEXT NOT NULL,
        sans TEXT NOT NULL,
        not_before TEXT NOT NULL,
        not_after TEXT NOT NULL,
        profile TEXT NOT NULL,
        requester TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'valid',
        revocation_reason TEXT,
        revoked_at TEXT,
        issued_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now')),
        certificate_pem TEXT NOT NULL))");
    db_.exec("CREATE INDEX IF NOT EXISTS certificates_revoked ON certificates(status) WHERE status = 'revoked'");
    db_.exec("CREATE TABLE IF NOT EXISTS crl_state (id INTEGER PRIMARY KEY CHECK (id = 1), number INTEGER NOT NULL)");
    reader_ = std::make_unique<sqlite::Database>(file, true);
}

std::string IssuanceStore::canonical_serial(std::string_view hex) {
    if (hex.empty() || hex.size() > 64 || hex.find_first_not_of("0123456789abcdefABCDEF") != std::string_view::npos)
        throw std::invalid_argument("serial '" + std::string(hex.substr(0, 80)) + "' is not a hexadecimal number");
    const std::string text(hex);
    BIGNUM* bn = nullptr;
    if (!BN_hex2bn(&bn, text.c_str())) throw std::invalid_argument("serial '" + text + "' is not a hexadecimal number");
    char* out = BN_bn2hex(bn);
    std::string canonical(out);
    OPENSSL_free(out);
    BN_free(bn);
    if (canonical == "0") throw std::invalid_argument("serial 0 is not a certificate serial number");
    return canonical;
}

IssuedCertificate IssuanceStore::row(const sqlite::Statement& s) {
    return {s.text(0), s.text(1), s.text(2), s.text(3), s.text(4),  s.text(5),
            s.text(6), s.text(7), s.text(8), s.text(9), s.text(10), s.text(11)};
}

std::optional<IssuedCertificate> IssuanceStore::find_by_request(const std::string& request_id) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(std::string("SELECT ") + kColumns + " FROM certificates WHERE request_id = ?");
    s.bind(1, request_id);
    if (!s.step()) return std::nullopt;
    return row(s);
}

std::optional<IssuedCertificate> IssuanceStore::find_by_serial(const std::string& serial) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(std::string("SELECT ") + kColumns + " FROM certificates WHERE serial = ?");
    s.bind(1, serial);
    if (!s.step()) return std::nullopt;
    return row(s);
}

std::optional<IssuanceStore::Status> IssuanceStore::revocation_status(const std::string& serial) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare("SELECT status, revocation_reason, revoked_at FROM certificates WHERE serial = ?");
    s.bind(1, serial);
    if (!s.step()) return std::nullopt;
    return Status{s.text(0), s.text(1), s.text(2)};
}

bool IssuanceStore::insert(const IssuedCertificate& c) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(
        "INSERT INTO certificates (serial, request_id, subject, sans, not_before, not_after, profile, requester, "
        "certificate_pem) VALUES (?,?,?,?,?,?,?,?,?)");
    if (c.request_id.empty())
        s.bind_null(2);
    else
        s.bind(2, c.request_id);
    s.bind(1, c.serial).bind(3, c.subject).bind(4, c.sans).bind(5, c.not_before).bind(6, c.not_after);
    s.bind(7, c.profile).bind(8, c.requester).bind(9, c.certificate_pem);
    try {
        s.run();
        return true;
    } catch (const sqlite::Error& e) {
        if (e.constraint()) return false;
        throw;
    }
}

std::vector<bool> IssuanceStore::revoke_many(const std::vector<std::pair<std::string, std::string>>& serial_reason,
                                             const std::string& when) {
    std::vector<bool> changed;
    if (serial_reason.empty()) return changed;
    std::lock_guard lock(mutex_);
    sqlite::Transaction tx(db_);
    auto s = db_.prepare(
        "UPDATE certificates SET status='revoked', revocation_reason=?, revoked_at=? WHERE serial=? AND status='valid'");
    for (const auto& [serial, reason] : serial_reason) {
        s.bind_all(reason, when, serial).run();
        changed.push_back(db_.changes() == 1);
        s.reset();
    }
    tx.commit();
    return changed;
}

std::int64_t IssuanceStore::count() {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare("SELECT COUNT(*) FROM certificates");
    s.step();
    return s.integer(0);
}

std::int64_t IssuanceStore::revoked_count() {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare("SELECT COUNT(*) FROM certificates WHERE status = 'revoked'");
    s.step();
    return s.integer(0);
}

void IssuanceStore::for_each_revoked(const std::function<void(const std::string&, const std::string&, const std::string&)>& fn) {
    std::lock_guard lock(reader_mutex_);
    auto s = reader_->prepare("SELECT serial, revoked_at, revocation_reason FROM certificates WHERE status = 'revoked'");
    while (s.step())
        fn(s.text(0), s.text(1), s.text(2));
}

std::int64_t IssuanceStore::next_crl_number() {
    std::lock_guard lock(mutex_);
    sqlite::Transaction tx(db_);
    db_.exec("INSERT INTO crl_state (id, number) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET number = number + 1");
    auto s = db_.prepare("SELECT number FROM crl_state WHERE id = 1");
    s.step();
    const std::int64_t n = s.integer(0);
    tx.commit();
    return n;
}

void IssuanceStore::insert_revoked_bulk(const std::vector<IssuedCertificate>& certs) {
    std::lock_guard lock(mutex_);
    sqlite::Transaction tx(db_);
    auto s = db_.prepare(
        "INSERT INTO certificates (serial, subject, sans, not_before, not_after, profile, requester, certificate_pem, "
        "status, revocation_reason, revoked_at) VALUES (?,?,?,?,?,?,?,?,'revoked',?,?)");
    for (const auto& c : certs) {
        s.bind_all(c.serial, c.subject, c.sans, c.not_before, c.not_after, c.profile, c.requester, c.certificate_pem,
                   c.revocation_reason, c.revoked_at);
        s.run();
        s.reset();
    }
    tx.commit();
}

}  // namespace certconn::ca_local
