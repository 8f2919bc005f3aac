// SCEP requests waiting for an administrator's approval (profiles with require_approval): kept
// by transaction id in certconn::store (pending.db, or the fleet's shared schema `scep`) so they
// survive restarts and any instance can answer the device's CertPoll or take the decision.
#pragma once

#include "Store.hpp"

#include <boost/json/array.hpp>

#include <optional>
#include <string>

namespace certconn::scep {

struct PendingRequest {
    std::string transaction_id;
    std::string profile;
    std::string csr_pem;
    std::string status;  // pending | approved | denied | at-ca (the CA holds it for its own approval)
};

class PendingRequests {
public:
    explicit PendingRequests(ConnectionPtr connection);
    /// Records a request as pending unless the transaction is known; returns the stored row.
    PendingRequest add(const std::string& transaction_id, const std::string& profile, const std::string& csr_pem);
    std::optional<PendingRequest> find(const std::string& transaction_id);
    /// Records that the CA holds the enrollment for approval: the device's CertPoll asks the CA
    /// again (same request id). A request an administrator approved here moves on to at-ca.
    void hold_at_ca(const std::string& transaction_id, const std::string& profile, const std::string& csr_pem);
    /// approve/deny a pending request; false when it is unknown or already decided.
    bool decide(const std::string& transaction_id, bool approve);
    boost::json::array list(const std::string& status);

private:
    ConnectionPtr c_;
};

}  // namespace certconn::scep
