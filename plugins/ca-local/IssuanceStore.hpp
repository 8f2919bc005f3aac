// The local CA's record of every certificate it issued (SQLite, WAL, synchronous=FULL):
// serials are unique, and a request id maps to at most one certificate.
#pragma once

#include <certconn/sqlite.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace certconn::ca_local {

struct IssuedCertificate {
    std::string serial;  // upper-case hex
    std::string request_id;
    std::string subject;
    std::string sans;  // JSON array
    std::string not_before, not_after;
    std::string profile;
    std::string requester;
    std::string status;                         // valid | revoked
    std::string revocation_reason, revoked_at;  // RFC 5280 reason name; ISO 8601 UTC
    std::string certificate_pem;
};

class IssuanceStore {
public:
    explicit IssuanceStore(const std::filesystem::path& file);

    std::optional<IssuedCertificate> find_by_request(const std::string& request_id);
    std::optional<IssuedCertificate> find_by_serial(const std::string& serial);
    struct Status {
        std::string status;  // valid | revoked
        std::string revocation_reason, revoked_at;
    };
    /// Only what OCSP needs, without the certificate itself.
    std::optional<Status> revocation_status(const std::string& serial);
    /// Inserts; returns false when the request id already has a certificate.
    bool insert(const IssuedCertificate& cert);
    /// Marks each (serial, reason) revoked at `when`, in one transaction; per entry, false
    /// when it already was revoked (a duplicate within the batch counts once).
    std::vector<bool> revoke_many(const std::vector<std::pair<std::string, std::string>>& serial_reason, const std::string& when);
    std::int64_t count();
    std::int64_t revoked_count();

    /// Every revoked certificate: (serial, revoked_at, reason name), in serial order.
    void for_each_revoked(const std::function<void(const std::string&, const std::string&, const std::string&)>& fn);
    /// The next CRL number, persisted (monotonic across restarts).
    std::int64_t next_crl_number();
    /// Inserts many revoked entries at once (benchmarks and migrations); one transaction.
    void insert_revoked_bulk(const std::vector<IssuedCertificate>& certs);

    /// Upper-case hex without leading zero bytes (OpenSSL's BN_bn2hex form, as stored);
    /// throws std::invalid_argument when `hex` is not a positive hexadecimal number.
    static std::string canonical_serial(std::string_view hex);

private:
    IssuedCertificate row(const sqlite::Statement& s);
    std::mutex mutex_;
    sqlite::Database db_;
    // CRL generation reads every revoked entry (a million on a big CA) through its own
    // connection: WAL lets issuance go on meanwhile.
    std::mutex reader_mutex_;
    std::unique_ptr<sqlite::Database> reader_;
};

}  // namespace certconn::ca_local
