#include "PendingRequests.hpp"

#include <certconn/crypto.hpp>

#include <boost/json/object.hpp>

namespace certconn::scep {

namespace {
std::optional<PendingRequest> select(sql::Database& db, const std::string& tx) {
    auto s = db.prepare("SELECT transaction_id, profile, csr_pem, status FROM pending WHERE transaction_id = $1");
    s.bind(1, tx);
    if (!s.step()) return std::nullopt;
    return PendingRequest{s.text(0), s.text(1), s.text(2), s.text(3)};
}
}  // namespace

PendingRequests::PendingRequests(ConnectionPtr connection) : c_(std::move(connection)) {}

PendingRequest PendingRequests::add(const std::string& tx, const std::string& profile, const std::string& csr_pem) {
    std::lock_guard lock(c_->mutex);
    auto& db = c_->ready();
    db.prepare(
          "INSERT INTO pending (transaction_id, profile, csr_pem) VALUES ($1, $2, $3) ON CONFLICT (transaction_id) DO NOTHING")
        .bind_all(tx, profile, csr_pem)
        .run();
    // Ours or the one another instance recorded first: the same row for everyone.
    auto row = select(db, tx);
    if (!row) throw sql::Error(sql::Error::Kind::busy, "pending request " + tx + " vanished while being recorded");
    return *row;
}

std::optional<PendingRequest> PendingRequests::find(const std::string& tx) {
    std::lock_guard lock(c_->mutex);
    return select(c_->ready(), tx);
}

void PendingRequests::hold_at_ca(const std::string& tx, const std::string& profile, const std::string& csr_pem) {
    std::lock_guard lock(c_->mutex);
    c_->ready()
        .prepare(
            "INSERT INTO pending (transaction_id, profile, csr_pem, status) VALUES ($1, $2, $3, 'at-ca') "
            "ON CONFLICT (transaction_id) DO UPDATE SET status = 'at-ca' WHERE pending.status = 'approved'")
        .bind_all(tx, profile, csr_pem)
        .run();
}

bool PendingRequests::decide(const std::string& tx, bool approve) {
    std::lock_guard lock(c_->mutex);
    auto& db = c_->ready();
    // One statement: of two administrators deciding at once on two instances, one wins.
    // (RETURNING, not Statement::run's count, which counts rows returned, not rows changed.)
    auto s = db.prepare("UPDATE pending SET status = $1, decided_at = " + iso_now_sql(db) +
                        " WHERE transaction_id = $2 AND status = 'pending' RETURNING transaction_id");
    s.bind_all(std::string(approve ? "approved" : "denied"), tx);
    return s.step();
}

boost::json::array PendingRequests::list(const std::string& status) {
    std::lock_guard lock(c_->mutex);
    auto s = c_->ready().prepare(
        "SELECT transaction_id, profile, received_at, csr_pem FROM pending WHERE status = $1 ORDER BY received_at");
    s.bind(1, status);
    boost::json::array out;
    while (s.step()) {
        std::string subject = "(unreadable request)";
        try {
            subject = crypto::name_string(X509_REQ_get_subject_name(crypto::load_csr(s.text(3)).get()));
        } catch (const std::exception&) {
        }
        out.push_back(boost::json::object{
            {"transaction_id", s.text(0)}, {"profile", s.text(1)}, {"received_at", s.text(2)}, {"subject", subject}});
    }
    return out;
}

}  // namespace certconn::scep
