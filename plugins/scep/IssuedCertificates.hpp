// The certificates this SCEP server issued, per profile, kept in certconn::store (issued.db in
// the plugin's state directory, or the fleet's shared schema `scep`). A renewal is only authorised by a certificate found here
// for the same profile (a certificate the CA issued through another path — another SCEP profile, the pkcs feature, the RA itself
// — renews nothing), and the ledger counts the renewals of each original enrollment so `max_renewals` can be enforced.
#pragma once

#include "Store.hpp"

#include <cstdint>
#include <optional>
#include <string>

namespace certconn::scep {

struct IssuedCertificate {
    std::string ca;                  // the configured CA that issued it
    std::string serial;              // upper-case hex, as crypto::serial_hex
    std::string profile;             // the SCEP profile it was issued for
    std::string original_serial;     // the serial of the enrollment this renewal chain started with
    std::int64_t renewal_count = 0;  // 0 for an enrollment, n for the n-th renewal in its chain
    std::string transaction_id;      // the SCEP transaction that obtained it
    std::string request_id;          // the CA request id (a resent request maps to the same one)
    std::string not_after;           // ISO 8601 UTC
};

class IssuedCertificates {
public:
    explicit IssuedCertificates(ConnectionPtr connection);
    /// Records `cert`; a second record of the same (ca, serial) is a no-op (a resent request).
    void record(const IssuedCertificate& cert);
    std::optional<IssuedCertificate> find(const std::string& ca, const std::string& serial);
    /// The certificate a CA request id produced, when it was recorded (a resent renewal).
    std::optional<IssuedCertificate> find_by_request(const std::string& ca, const std::string& request_id);
    /// How many renewals were issued for the enrollment that started with `original_serial`
    /// (a chain of renewals and renewals of the same certificate count alike).
    std::int64_t renewals_of(const std::string& ca, const std::string& original_serial);

private:
    ConnectionPtr c_;
};

}  // namespace certconn::scep
