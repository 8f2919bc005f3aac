// The local CA's record of every certificate it issued (SQLite, WAL, synchronous=FULL):
// serials are unique, and a request id maps to at most one certificate.
#pragma once

#include <certconn/sqlite.hpp>

#include <filesystem>
#include <mutex>
#include <optional>
#include <string>

namespace certconn::ca_local {

struct IssuedCertificate {
    std::string serial;  // upper-case hex
    std::string request_id;
    std::string subject;
    std::string sans;  // JSON array
    std::string not_before, not_after;
    std::string profile;
    std::string requester;
    std::string status;  // valid | revoked
    std::string revocation_reason, revoked_at;
    std::string certificate_pem;
};

class IssuanceStore {
public:
    explicit IssuanceStore(const std::filesystem::path& file);

    std::optional<IssuedCertificate> find_by_request(const std::string& request_id);
    std::optional<IssuedCertificate> find_by_serial(const std::string& serial);
    bool serial_exists(const std::string& serial);
    /// Inserts; returns false when the request id already has a certificate.
    bool insert(const IssuedCertificate& cert);
    /// Marks revoked; returns false when it already was.
    bool revoke(const std::string& serial, const std::string& reason, const std::string& when);
    std::int64_t count();

private:
    IssuedCertificate row(const sqlite::Statement& s);
    std::mutex mutex_;
    sqlite::Database db_;
};

}  // namespace certconn::ca_local
