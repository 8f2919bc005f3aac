#include "PendingRequests.hpp"

#include <certconn/crypto.hpp>

#include <boost/json/object.hpp>

namespace certconn::scep {

PendingRequests::PendingRequests(const std::filesystem::path& file) : db_(file, true) {
    db_.exec(R"(CREATE TABLE IF NOT EXISTS pending (
        transaction_id TEXT PRIMARY KEY,
        profile TEXT NOT NULL,
        csr_pem TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now')),
        decided_at TEXT))");
}

PendingRequest PendingRequests::add(const std::string& tx, const std::string& profile, const std::string& csr_pem) {
    std::lock_guard lock(mutex_);
    db_.prepare("INSERT INTO pending (transaction_id, profile, csr_pem) VALUES (?, ?, ?) ON CONFLICT(transaction_id) DO NOTHING")
        .bind_all(tx, profile, csr_pem)
        .run();
    auto s = db_.prepare("SELECT transaction_id, profile, csr_pem, status FROM pending WHERE transaction_id = ?");
    s.bind(1, tx);
    s.step();
    return {s.text(0), s.text(1), s.text(2), s.text(3)};
}

std::optional<PendingRequest> PendingRequests::find(const std::string& tx) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare("SELECT transaction_id, profile, csr_pem, status FROM pending WHERE transaction_id = ?");
    s.bind(1, tx);
    if (!s.step()) return std::nullopt;
    return PendingRequest{s.text(0), s.text(1), s.text(2), s.text(3)};
}

void PendingRequests::hold_at_ca(const std::string& tx, const std::string& profile, const std::string& csr_pem) {
    std::lock_guard lock(mutex_);
    db_.prepare(
           "INSERT INTO pending (transaction_id, profile, csr_pem, status) VALUES (?, ?, ?, 'at-ca') "
           "ON CONFLICT(transaction_id) DO UPDATE SET status = 'at-ca' WHERE status = 'approved'")
        .bind_all(tx, profile, csr_pem)
        .run();
}

bool PendingRequests::decide(const std::string& tx, bool approve) {
    std::lock_guard lock(mutex_);
    db_.prepare(
           "UPDATE pending SET status = ?, decided_at = strftime('%Y-%m-%dT%H:%M:%SZ','now') "
           "WHERE transaction_id = ? AND status = 'pending'")
        .bind_all(std::string(approve ? "approved" : "denied"), tx)
        .run();
    return db_.changes() == 1;
}

boost::json::array PendingRequests::list(const std::string& status) {
    std::lock_guard lock(mutex_);
    auto s =
        db_.prepare("SELECT transaction_id, profile, received_at, csr_pem FROM pending WHERE status = ? ORDER BY received_at");
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
