// The embedded tenant's side of SCEP: validates challenges (a static challenge per SCEP
// profile, from [tenant] scep_challenges) and records the connector's issuance notifications.
#pragma once

#include <certconn/sqlite.hpp>

#include <boost/json/object.hpp>

#include <filesystem>
#include <map>
#include <mutex>
#include <string>

namespace certconn::tenant_local {

class ScepLedger {
public:
    ScepLedger(const std::filesystem::path& file, std::map<std::string, std::string> static_challenges);
    /// {"code": "Success"} or a refusal code with "errorDescription".
    boost::json::object validate(const boost::json::object& request) const;
    void record(const std::string& kind, const boost::json::object& notification);
    std::int64_t count(const std::string& kind);

private:
    std::map<std::string, std::string> challenges_;
    std::mutex mutex_;
    sqlite::Database db_;
};

}  // namespace certconn::tenant_local
