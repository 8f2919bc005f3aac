#include "TransactionLedger.hpp"

namespace certconn::scep {

TransactionLedger::TransactionLedger(ConnectionPtr connection) : c_(std::move(connection)) {}

Claim TransactionLedger::claim(const std::string& profile, const std::string& tx, const std::string& request_id,
                               const std::string& owner) {
    std::lock_guard lock(c_->mutex);
    auto& db = c_->ready();
    for (int round = 0; round < 3; ++round) {
        auto ins = db.prepare(
            "INSERT INTO transactions (profile, transaction_id, request_id, status, owner, attempt, claimed_at) "
            "VALUES ($1, $2, $3, 'issuing', $4, 1, " +
            db.now_sql() + ") ON CONFLICT (profile, transaction_id) DO NOTHING RETURNING attempt");
        ins.bind_all(profile, tx, request_id, owner);
        if (ins.step()) {
            Claim c{Claim::Outcome::claimed, {}};
            c.entry = {request_id, "issuing", owner, ins.integer(0), 0, {}};
            return c;
        }
        auto s = db.prepare("SELECT request_id, status, owner, attempt, " + db.now_sql() +
                            " - claimed_at, certificate_pem FROM transactions WHERE profile = $1 AND transaction_id = $2");
        s.bind_all(profile, tx);
        if (!s.step()) continue;  // released between the two statements: claim again
        Claim c{Claim::Outcome::in_progress,
                {s.text(0), s.text(1), s.text(2), s.integer(3), s.integer(4), s.optional_text(5).value_or("")}};
        if (c.entry.request_id != request_id)
            c.outcome = Claim::Outcome::other_request;
        else if (c.entry.status == "issued" && !c.entry.certificate_pem.empty())
            c.outcome = Claim::Outcome::issued;
        return c;
    }
    throw sql::Error(sql::Error::Kind::busy, "transaction " + tx + ": its ledger row keeps changing; try again");
}

std::int64_t TransactionLedger::take_over(const std::string& profile, const std::string& tx, std::int64_t attempt,
                                          const std::string& owner) {
    std::lock_guard lock(c_->mutex);
    auto& db = c_->ready();
    auto s = db.prepare("UPDATE transactions SET owner = $4, attempt = attempt + 1, claimed_at = " + db.now_sql() +
                        " WHERE profile = $1 AND transaction_id = $2 AND status = 'issuing' AND attempt = $3 RETURNING attempt");
    s.bind_all(profile, tx, attempt, owner);
    return s.step() ? s.integer(0) : 0;
}

void TransactionLedger::complete(const std::string& profile, const std::string& tx, const std::string& request_id,
                                 const std::string& certificate_pem, const std::string& serial) {
    std::lock_guard lock(c_->mutex);
    auto& db = c_->ready();
    db.prepare("UPDATE transactions SET status = 'issued', certificate_pem = $4, serial = $5, completed_at = " + db.now_sql() +
               " WHERE profile = $1 AND transaction_id = $2 AND request_id = $3 AND status = 'issuing'")
        .bind_all(profile, tx, request_id, certificate_pem, serial)
        .run();
}

void TransactionLedger::release(const std::string& profile, const std::string& tx, std::int64_t attempt,
                                const std::string& owner) {
    std::lock_guard lock(c_->mutex);
    c_->ready()
        .prepare(
            "DELETE FROM transactions WHERE profile = $1 AND transaction_id = $2 AND status = 'issuing' AND attempt = $3 "
            "AND owner = $4")
        .bind_all(profile, tx, attempt, owner)
        .run();
}

}  // namespace certconn::scep
