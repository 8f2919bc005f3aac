// The embedded tenant's side of SCEP: validates challenges — a static one per SCEP profile
// ([tenant] scep_challenges), or one-time dynamic ones bound to a profile and optionally to the
// expected subject and SANs — and records the connector's issuance notifications. Dynamic
// challenges are stored as SHA-256 hashes; one is consumed by the first transaction that uses
// it (a client resending that same transaction may retry): one INSERT ... ON CONFLICT DO NOTHING
// RETURNING into scep_challenge_uses, so of any number of instances racing one challenge on a
// shared PostgreSQL store exactly one transaction wins. Expiry is judged in database time.
#pragma once

#include <certconn/sql.hpp>

#include <boost/json/object.hpp>

#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace certconn::tenant_local {

class ScepLedger {
public:
    /// SQLite scep.db or the PostgreSQL schema tenant_local (shared with the job queue).
    ScepLedger(const sql::Options& options, std::map<std::string, std::string> static_challenges);
    /// A SQLite file on this machine (tests, tools).
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
    template <class Fn>
    auto guarded(const char* what, Fn&& fn);
    std::map<std::string, std::string> challenges_;
    std::mutex mutex_;
    sql::Database db_;
    bool migrated_ = false;
};

}  // namespace certconn::tenant_local
