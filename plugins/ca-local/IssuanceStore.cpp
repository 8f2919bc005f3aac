#include "IssuanceStore.hpp"

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

bool IssuanceStore::serial_exists(const std::string& serial) { return find_by_serial(serial).has_value(); }

bool IssuanceStore::insert(const IssuedCertificate& c) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(
        "INSERT INTO certificates (serial, request_id, subject, sans, not_before, not_after, profile, requester, "
        "certificate_pem) VALUES (?,?,?,?,?,?,?,?,?)");
    if (c.request_id.empty()) s.bind_null(2);
    else s.bind(2, c.request_id);
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

bool IssuanceStore::revoke(const std::string& serial, const std::string& reason, const std::string& when) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare("UPDATE certificates SET status='revoked', revocation_reason=?, revoked_at=? WHERE serial=? AND status='valid'");
    s.bind_all(reason, when, serial).run();
    return db_.changes() == 1;
}

std::int64_t IssuanceStore::count() {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare("SELECT COUNT(*) FROM certificates");
    s.step();
    return s.integer(0);
}

}  // namespace certconn::ca_local
