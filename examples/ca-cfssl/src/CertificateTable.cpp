#include "CertificateTable.hpp"

namespace cfssl_plugin {

namespace {
constexpr const char* kColumns =
    "serial, request_id, profile, subject, not_before, not_after, certificate_pem, status, revocation_reason, revoked_at";

IssuedCertificate row(const certconn::sqlite::Statement& s) {
    return {s.text(0), s.text(1), s.text(2), s.text(3), s.text(4), s.text(5), s.text(6), s.text(7), s.text(8), s.text(9)};
}
}  // namespace

CertificateTable::CertificateTable(const std::filesystem::path& file) : db_(file, true) {
    db_.exec(R"(CREATE TABLE IF NOT EXISTS issued (
        serial TEXT PRIMARY KEY,
        request_id TEXT UNIQUE,
        profile TEXT NOT NULL,
        subject TEXT NOT NULL,
        not_before TEXT NOT NULL,
        not_after TEXT NOT NULL,
        certificate_pem TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'valid',
        revocation_reason TEXT NOT NULL DEFAULT '',
        revoked_at TEXT NOT NULL DEFAULT '',
        issued_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now'))))");
}

std::optional<IssuedCertificate> CertificateTable::by_request(const std::string& request_id) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(std::string("SELECT ") + kColumns + " FROM issued WHERE request_id = ?");
    s.bind(1, request_id);
    if (!s.step()) return std::nullopt;
    return row(s);
}

std::optional<IssuedCertificate> CertificateTable::by_serial(const std::string& serial) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(std::string("SELECT ") + kColumns + " FROM issued WHERE serial = ?");
    s.bind(1, serial);
    if (!s.step()) return std::nullopt;
    return row(s);
}

bool CertificateTable::insert(const IssuedCertificate& c) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(
        "INSERT INTO issued (serial, request_id, profile, subject, not_before, not_after, certificate_pem) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)");
    s.bind(1, c.serial);
    if (c.request_id.empty())
        s.bind_null(2);
    else
        s.bind(2, c.request_id);
    s.bind(3, c.profile).bind(4, c.subject).bind(5, c.not_before).bind(6, c.not_after).bind(7, c.certificate_pem);
    try {
        s.run();
    } catch (const certconn::sqlite::Error& e) {
        if (e.constraint()) return false;
        throw;
    }
    return true;
}

bool CertificateTable::mark_revoked(const std::string& serial, const std::string& reason, const std::string& when) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(
        "UPDATE issued SET status = 'revoked', revocation_reason = ?, revoked_at = ? WHERE serial = ? AND status <> 'revoked'");
    s.bind_all(reason, when, serial);
    s.run();
    return db_.changes() > 0;
}

long long CertificateTable::count(const char* status) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(status ? "SELECT count(*) FROM issued WHERE status = ?" : "SELECT count(*) FROM issued");
    if (status) s.bind(1, status);
    s.step();
    return s.integer(0);
}

}  // namespace cfssl_plugin
