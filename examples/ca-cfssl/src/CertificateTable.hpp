// The plugin's own record of what cfssl issued through it, in SQLite (certconn/sqlite.hpp) under
// the plugin's state directory. It makes issue idempotent by request id (cfssl has no request
// ids: a second sign would be a second certificate), and answers "certificate by serial",
// which cfssl 1.2's certinfo cannot (it takes a PEM or a domain, not a serial).
#pragma once

#include <certconn/sqlite.hpp>

#include <filesystem>
#include <mutex>
#include <optional>
#include <string>

namespace cfssl_plugin {

struct IssuedCertificate {
    std::string serial;  // upper-case hex, no leading zeros
    std::string request_id;
    std::string profile;
    std::string subject;
    std::string not_before, not_after;  // ISO 8601 UTC
    std::string certificate_pem;
    std::string status = "valid";  // valid | revoked
    std::string revocation_reason, revoked_at;
};

class CertificateTable {
public:
    explicit CertificateTable(const std::filesystem::path& file);

    std::optional<IssuedCertificate> by_request(const std::string& request_id);
    std::optional<IssuedCertificate> by_serial(const std::string& serial);
    /// False when the request id or the serial is already recorded.
    bool insert(const IssuedCertificate& cert);
    /// Marks `serial` revoked unless it already is; true when this call changed it.
    bool mark_revoked(const std::string& serial, const std::string& reason, const std::string& when);
    long long count(const char* status = nullptr);

private:
    std::mutex mutex_;
    certconn::sqlite::Database db_;
};

}  // namespace cfssl_plugin
