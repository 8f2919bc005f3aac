// The SCEP transaction ledger: one row per (profile, transactionID) that went to the CA, shared by
// every instance of a fleet. It makes a resent PKIOperation (same transactionID, same request)
// get the certificate issued the first time, from any instance, and refuses another request
// under a transactionID already used. Two instances receiving the same transaction at once: the
// INSERT ... ON CONFLICT DO NOTHING lets one claim it; the other waits for its certificate (or
// takes over a claim whose instance died). The CA's idempotency on the request id stays the
// backstop: whoever calls the CA for a transaction calls it with the same request id.
#pragma once

#include "Store.hpp"

#include <cstdint>
#include <string>

namespace certconn::scep {

struct LedgerEntry {
    std::string request_id;
    std::string status;  // issuing | issued
    std::string owner;   // the instance issuing it (or that issued it)
    std::int64_t attempt = 0;
    std::int64_t age_seconds = 0;  // since the current claim, by the database's clock
    std::string certificate_pem;   // once issued
};

struct Claim {
    enum class Outcome {
        claimed,        ///< ours to issue (entry.attempt is our claim)
        issued,         ///< already issued under the same request: entry.certificate_pem
        other_request,  ///< the transaction is used by another request (another CSR or kind)
        in_progress,    ///< another claim is issuing it now: wait, or take it over if stale
    };
    Outcome outcome;
    LedgerEntry entry;
};

class TransactionLedger {
public:
    explicit TransactionLedger(ConnectionPtr connection);
    Claim claim(const std::string& profile, const std::string& transaction_id, const std::string& request_id,
                const std::string& owner);
    /// Takes over an `issuing` claim last seen at `attempt` (its instance died or lost the
    /// request); returns the new attempt, or 0 when someone else changed it first.
    std::int64_t take_over(const std::string& profile, const std::string& transaction_id, std::int64_t attempt,
                           const std::string& owner);
    /// Records the certificate of a claimed transaction (any claim of the same request: the CA
    /// answered each with the same certificate).
    void complete(const std::string& profile, const std::string& transaction_id, const std::string& request_id,
                  const std::string& certificate_pem, const std::string& serial);
    /// Gives a claim up (the CA refused, holds it for approval, or is unreachable): the next
    /// request for the transaction claims it again.
    void release(const std::string& profile, const std::string& transaction_id, std::int64_t attempt, const std::string& owner);

private:
    ConnectionPtr c_;
};

}  // namespace certconn::scep
