#include "IssuedCertificates.hpp"

namespace certconn::scep {

namespace {
constexpr const char* kColumns = "ca, serial, profile, original_serial, renewal_count, transaction_id, request_id, not_after";

IssuedCertificate row(const sql::Statement& s) {
    return {s.text(0), s.text(1), s.text(2), s.text(3), s.integer(4), s.text(5), s.text(6), s.text(7)};
}
}  // namespace

IssuedCertificates::IssuedCertificates(ConnectionPtr connection) : c_(std::move(connection)) {}

void IssuedCertificates::record(const IssuedCertificate& c) {
    std::lock_guard lock(c_->mutex);
    c_->ready()
        .prepare(
            "INSERT INTO issued (ca, serial, profile, original_serial, renewal_count, transaction_id, request_id, not_after) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (ca, serial) DO NOTHING")
        .bind_all(c.ca, c.serial, c.profile, c.original_serial, c.renewal_count, c.transaction_id, c.request_id, c.not_after)
        .run();
}

std::optional<IssuedCertificate> IssuedCertificates::find(const std::string& ca, const std::string& serial) {
    std::lock_guard lock(c_->mutex);
    auto s = c_->ready().prepare(std::string("SELECT ") + kColumns + " FROM issued WHERE ca = $1 AND serial = $2");
    s.bind_all(ca, serial);
    if (!s.step()) return std::nullopt;
    return row(s);
}

std::optional<IssuedCertificate> IssuedCertificates::find_by_request(const std::string& ca, const std::string& request_id) {
    std::lock_guard lock(c_->mutex);
    auto s = c_->ready().prepare(std::string("SELECT ") + kColumns + " FROM issued WHERE ca = $1 AND request_id = $2");
    s.bind_all(ca, request_id);
    if (!s.step()) return std::nullopt;
    return row(s);
}

std::int64_t IssuedCertificates::renewals_of(const std::string& ca, const std::string& original_serial) {
    std::lock_guard lock(c_->mutex);
    auto s = c_->ready().prepare("SELECT COUNT(*) FROM issued WHERE ca = $1 AND original_serial = $2 AND renewal_count > 0");
    s.bind_all(ca, original_serial);
    s.step();
    return s.integer(0);
}

}  // namespace certconn::scep
