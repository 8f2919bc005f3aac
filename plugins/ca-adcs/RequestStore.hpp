// The local issuance table of one AD CS CA: request_id -> AD CS request id, disposition and,
// once issued, the certificate. It makes issue idempotent (pending included) and answers
// lookups by serial, which AD CS Web Enrollment cannot.
#pragma once

#include <certconn/sqlite.hpp>

#include <filesystem>
#include <mutex>
#include <optional>
#include <string>

namespace certconn::ca_adcs {

struct RequestRecord {
    std::string request_id;
    std::string ca_request_id;  ///< AD CS request id (decimal)
    std::string via;            ///< "certsrv" or "wstep"
    std::string profile;
    std::string status;  ///< pending, issued, denied
    std::string message;
    std::string serial;  ///< upper-case hex, once issued
    std::string certificate_pem;
    std::string chain_pem;
    std::string subject, not_before, not_after;
    std::string revoked_at, revocation_reason;
};

class RequestStore {
public:
    explicit RequestStore(const std::filesystem::path& file);
    std::optional<RequestRecord> find(const std::string& request_id);
    std::optional<RequestRecord> find_by_serial(const std::string& serial);
    /// The newest issued certificate (its CDP names the CRL), if any.
    std::optional<RequestRecord> newest_issued();
    void put(const RequestRecord& record);  ///< insert or replace
    bool mark_revoked(const std::string& serial, const std::string& when, const std::string& reason);
    std::int64_t issued_count();

private:
    static RequestRecord row(sqlite::Statement& s);
    std::mutex mutex_;
    sqlite::Database db_;
};

}  // namespace certconn::ca_adcs
