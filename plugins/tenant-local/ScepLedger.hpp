// The embedded tenant's side of SCEP: validates challenges — a static one per SCEP profile
// ([tenant] scep_challenges), or one-time dynamic ones bound to a profile and optionally to the
// expected subject and SANs — and records the connector's issuance notifications. Dynamic
// challenges are stored as SHA-256 hashes; one is consumed by the first transaction that uses
// it (a client resending that same transaction may retry).
#pragma once

#include <certconn/sqlite.hpp>

#include <boost/json/object.hpp>

#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace certconn::tenant_local {

class ScepLedger {
public:
    ScepLedger(const std::filesystem::path& file, std::map<std::string, std::string> static_challenges);
    /// {"code": "Success"} or a refusal code with "errorDescription".
    boost::json::object validate(const boost::json::object& request);
    /// A renewal (scep.validate with "renewal": true) carries no challenge: the scep feature
    /// checked the old certificate. This tenant only says whether renewals are `allowed`.
    boost::json::object validate_renewal(const boost::json::object& request, bool allowed);
    /// Creates a dynamic challenge; returns {"challenge", "expires_at"}.
    boost::json::object create_challenge(const std::string& profile, const std::string& subject,
                                         const std::vector<std::string>& sans, std::int64_t ttl_seconds);
    void record(const std::string& kind, const boost::json::object& notification);
    std::int64_t count(const std::string& kind);

private:
    std::map<std::string, std::string> challenges_;
    std::mutex mutex_;
    sqlite::Database db_;
};

}  // namespace certconn::tenant_local
