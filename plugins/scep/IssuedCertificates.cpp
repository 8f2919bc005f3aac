#include "IssuedCertificates.hpp"

namespace certconn::scep {

namespace {
constexpr const char* kColumns = "ca, serial, profile, original_serial, renewal_count, transaction_id, request_id, not_after";

IssuedCertificate row(const sqlite::Statement& s) {
    return {s.text(0), s.text(1), s.text(2), s.text(3), s.integer(4), s.text(5), s.text(6), s.text(7)};
}
}  // namespace

IssuedCertificates::IssuedCertificates(const std::filesystem::path& file) : db_(file, true) {
    db_.exec(R"(CREATE TABLE IF NOT EXISTS issued (
        ca TEXT NOT NULL,
        serial TEXT NOT NULL,
        profile TEXT NOT NULL,
        original_serial TEXT NOT NULL,
        renewal_count INTEGER NOT NULL,
        transaction_id TEXT NOT NULL,
        request_id TEXT NOT NULL,
        not_after TEXT NOT NULL,
        issued_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now')),
        PRIMARY KEY (ca, serial)))");
    db_.exec("CREATE INDEX IF NOT EXISTS issued_by_original ON issued(ca, original_serial)");
    db_.exec("CREATE INDEX IF NOT EXISTS issued_by_request ON issued(ca, request_id)");
}

void IssuedCertificates::record(const IssuedCertificate& c) {
    std::lock_guard lock(mutex_);
    db_.prepare(
           "INSERT INTO issued (ca, serial, profile, original_serial, renewal_count, transaction_id, request_id, not_after) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(ca, serial) DO NOTHING")
        .bind_all(c.ca, c.serial, c.profile, c.original_serial, c.renewal_count, c.transaction_id, c.request_id, c.not_after)
        .run();
}

std::optional<IssuedCertificate> IssuedCertificates::find(const std::string& ca, const std::string& serial) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(std::string("SELECT ") + kColumns + " FROM issued WHERE ca = ? AND serial = ?");
    s.bind_all(ca, serial);
    if (!s.step()) return std::nullopt;
    return row(s);
}

std::optional<IssuedCertificate> IssuedCertificates::find_by_request(const std::string& ca, const std::string& request_id) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(std::string("SELECT ") + kColumns + " FROM issued WHERE ca = ? AND request_id = ?");
    s.bind_all(ca, request_id);
    if (!s.step()) return std::nullopt;
    return row(s);
}

std::int64_t IssuedCertificates::renewals_of(const std::string& ca, const std::string& original_serial) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare("SELECT COUNT(*) FROM issued WHERE ca = ? AND original_serial = ? AND renewal_count > 0");
    s.bind_all(ca, original_serial);
    s.step();
    return s.integer(0);
}

}  // namespace certconn::scep
