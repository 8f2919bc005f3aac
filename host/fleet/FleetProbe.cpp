#include "fleet/FleetProbe.hpp"

#include "keys/KeyStore.hpp"

#include <certconn/sdk.hpp>

#include <boost/json.hpp>

#include <unistd.h>

#include <algorithm>

namespace certconn::host {

namespace json = boost::json;

json::object collect_queue_stats(const PluginRuntime& runtime, const Config& config) {
    json::object out;
    for (const auto& [name, section] : config.tenants) {
        auto tenant = runtime.find(CC_KIND_TENANT, section.plugin);
        if (!tenant) {
            out[name] = json::object{{"error", "UNAVAILABLE: the plugin of tenant '" + name + "' is not loaded"}};
            continue;
        }
        StringSink sink(std::size_t{1} << 20);  // bounded: a tenant's answer
        cc_sink s = sink.sink();
        cc_error err = sdk::detail::make_error();
        const int rc = tenant->api.tenant->call(tenant->api.instance, "jobs.stats", "{}", &s, &err);
        if (rc != CC_OK) {
            out[name] = json::object{{"error", std::string(sdk::status_name(static_cast<cc_status>(rc))) + ": " + err.message}};
            continue;
        }
        std::error_code ec;
        json::value v = json::parse(sink.data, ec);
        if (ec || !v.is_object())
            out[name] =
                json::object{{"error", "INTERNAL: tenant '" + name + "' answered jobs.stats with something not a JSON object"}};
        else
            out[name] = std::move(v);
    }
    return out;
}

std::map<std::string, std::string> KeyFingerprints::get(const std::filesystem::path& keys_dir) {
    std::lock_guard lock(mutex_);
    const auto now = std::chrono::steady_clock::now();
    if (dir_ == keys_dir && at_ != std::chrono::steady_clock::time_point{} && now - at_ < std::chrono::minutes(1)) return cached_;
    std::map<std::string, std::string> out;
    std::error_code ec;
    if (std::filesystem::is_directory(keys_dir, ec)) {
        try {
            KeyStore store(keys_dir);
            for (const auto& k : store.list())
                if (k.problem.empty() && !k.spki_sha256.empty()) out[k.name] = k.spki_sha256;
        } catch (const std::exception&) {
            // An unreadable key directory: no keys held (status --fleet shows the gap).
        }
    }
    dir_ = keys_dir;
    at_ = now;
    cached_ = out;
    return out;
}

SelfDescription describe_self(const PluginRuntime& runtime, const Config& config, KeyFingerprints& keys) {
    SelfDescription d;
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) == 0) d.host = host;
    d.pid = ::getpid();
    d.version = CERTCONN_VERSION;
    std::vector<std::string> closed;
    for (const auto& gen : runtime.generations()) {
        const auto& id = gen->identity();
        if (id.kind == CC_KIND_FEATURE && config.feature_enabled(id.name)) d.features.push_back(id.name);
        if (id.kind == CC_KIND_CA)
            for (const auto& [name, handle] : gen->ca_handles)
                d.cas.push_back(name);
    }
    for (const auto& [name, section] : config.cas)
        if (std::find(d.cas.begin(), d.cas.end(), name) == d.cas.end()) closed.push_back(name);
    for (const auto& [name, section] : config.tenants)
        d.tenants.push_back(name);
    std::sort(d.features.begin(), d.features.end());
    std::sort(d.cas.begin(), d.cas.end());
    d.key_fingerprints = keys.get(config.host.keys_dir);
    if (!closed.empty()) {
        d.health = "degraded: CA";
        for (const auto& c : closed)
            d.health += " " + c;
        d.health += " not open";
    }
    return d;
}

}  // namespace certconn::host
