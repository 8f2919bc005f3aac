// What the instance registry needs from the running connector: its own description (features
// loaded and enabled, tenants, CAs open, fingerprints of the connector keys it holds) and the
// tenants' queue statistics ("jobs.stats").
#pragma once

#include "config/Config.hpp"
#include "fleet/InstanceRegistry.hpp"
#include "plugins/PluginRuntime.hpp"

#include <boost/json/object.hpp>

#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>

namespace certconn::host {

/// Per configured tenant: its answer to the tenant call "jobs.stats" (tenant-local: {"features":
/// {f: {"queued","running","oldest_queued_age_seconds"}}, "leases_by_owner": {instance: n}}), or
/// {"error": "NOT_SUPPORTED: ..."} for a tenant without it (Intune) or one that failed.
boost::json::object collect_queue_stats(const PluginRuntime& runtime, const Config& config);

/// The SHA-256 of the SubjectPublicKeyInfo of every connector key in `keys_dir` that loads,
/// cached for a minute (a PKCS#11 key is not opened at every heartbeat).
class KeyFingerprints {
public:
    std::map<std::string, std::string> get(const std::filesystem::path& keys_dir);

private:
    std::mutex mutex_;
    std::filesystem::path dir_;
    std::chrono::steady_clock::time_point at_{};
    std::map<std::string, std::string> cached_;
};

SelfDescription describe_self(const PluginRuntime& runtime, const Config& config, KeyFingerprints& keys);

}  // namespace certconn::host
