#include "publication/CaHealth.hpp"

#include "plugins/PluginRuntime.hpp"

#include <certconn/sdk.hpp>

#include <boost/json/parse.hpp>

namespace certconn::host {

namespace json = boost::json;

CaHealthMonitor::CaHealthMonitor(PluginRuntime& runtime, EventLog& log, std::chrono::seconds interval)
    : runtime_(runtime), log_(log), interval_(interval) {}

CaHealthMonitor::~CaHealthMonitor() {
    stop();
}

void CaHealthMonitor::start() {
    if (thread_.joinable()) return;
    thread_ = std::jthread([this](const std::stop_token& stop) { loop(stop); });
}

void CaHealthMonitor::stop() {
    if (!thread_.joinable()) return;
    thread_.request_stop();
    wake_cv_.notify_all();
    thread_.join();
}

void CaHealthMonitor::wake() {
    {
        std::lock_guard lock(mutex_);
        woken_ = true;
    }
    wake_cv_.notify_all();
}

void CaHealthMonitor::loop(const std::stop_token& stop) {
    while (!stop.stop_requested()) {
        probe_all();
        std::unique_lock lock(mutex_);
        wake_cv_.wait_for(lock, stop, interval_, [this] { return woken_; });
        woken_ = false;
    }
}

std::optional<CaHealthMonitor::Result> CaHealthMonitor::result(const std::string& ca) const {
    std::lock_guard lock(mutex_);
    auto it = results_.find(ca);
    if (it == results_.end()) return std::nullopt;
    return it->second;
}

void CaHealthMonitor::probe_all() {
    std::lock_guard round(round_mutex_);
    const auto cfg = runtime_.config();
    for (const auto& [name, section] : cfg->cas) {
        Result r;
        StringSink sink(std::size_t{64} * 1024);
        cc_sink s = sink.sink();
        cc_error err = sdk::detail::make_error();
        const int rc = runtime_.ca_call(CaOperation::query, name.c_str(), R"({"op":"health"})", &s, &err);
        r.checked_at = std::chrono::system_clock::now();
        if (rc == CC_ERR_NOT_SUPPORTED) {
            r.probe = false;
            r.healthy = true;  // nothing says otherwise; status shows "open, no health probe"
            r.detail = "the CA's plugin has no health probe";
        } else if (rc != CC_OK) {
            r.detail = err.message[0] ? err.message : "the health probe failed without a message";
        } else {
            std::error_code ec;
            const json::value v = json::parse(sink.data, ec);
            const json::value* healthy = !ec && v.is_object() ? v.as_object().if_contains("healthy") : nullptr;
            const json::value* detail = !ec && v.is_object() ? v.as_object().if_contains("detail") : nullptr;
            if (healthy == nullptr || !healthy->is_bool()) {
                r.detail = "the health probe's answer has no boolean \"healthy\"";
            } else {
                r.healthy = healthy->get_bool();
                if (detail && detail->is_string()) r.detail = std::string(detail->get_string()).substr(0, 1024);
            }
        }
        std::optional<Result> before;
        {
            std::lock_guard lock(mutex_);
            if (auto it = results_.find(name); it != results_.end()) before = it->second;
            results_[name] = r;
        }
        const bool was_healthy = !before || before->healthy;
        if (r.healthy != was_healthy)
            log_.emit(CC_EV_CaHealthChanged, r.healthy ? CC_LEVEL_INFO : CC_LEVEL_WARNING,
                      "CA '" + name + "' (plugin '" + section.plugin + "') is " +
                          (r.healthy ? "healthy again" : "degraded: " + r.detail),
                      {}, {{"ca", name}, {"plugin", section.plugin}, {"healthy", r.healthy}, {"detail", r.detail}});
    }
    std::lock_guard lock(mutex_);
    for (auto it = results_.begin(); it != results_.end();)
        it = cfg->cas.count(it->first) ? std::next(it) : results_.erase(it);
}

}  // namespace certconn::host
