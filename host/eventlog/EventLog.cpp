#include "eventlog/EventLog.hpp"

#include <boost/json/serialize.hpp>
#include <spdlog/logger.h>
#include <spdlog/sinks/ansicolor_sink.h>
#include <spdlog/sinks/rotating_file_sink.h>

#include <chrono>
#include <ctime>
#include <cstdio>

namespace certconn::host {

namespace {

std::string utc_timestamp() {
    const auto now = std::chrono::system_clock::now();
    const auto secs = std::chrono::system_clock::to_time_t(now);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[40];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                  tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
    return buf;
}

std::shared_ptr<spdlog::logger> channel_logger(const EventLogOptions& o, const char* name) {
    auto path = (o.directory / (std::string(name) + ".jsonl")).string();
    auto sink = std::make_shared<spdlog::sinks::rotating_file_sink_mt>(path, o.max_file_bytes, o.archives);
    auto logger = std::make_shared<spdlog::logger>(name, std::move(sink));
    logger->set_pattern("%v");
    logger->set_level(spdlog::level::trace);  // filtering happens in emit()
    logger->flush_on(spdlog::level::trace);
    return logger;
}

}  // namespace

const char* level_name(cc_log_level level) {
    switch (level) {
        case CC_LEVEL_DEBUG: return "debug";
        case CC_LEVEL_INFO: return "info";
        case CC_LEVEL_WARNING: return "warning";
        case CC_LEVEL_ERROR: return "error";
    }
    return "info";
}

EventLog::EventLog(const EventLogOptions& options) {
    debug_[CC_CHANNEL_ADMIN] = options.admin_debug;
    debug_[CC_CHANNEL_OPERATIONAL] = options.operational_debug;
    if (!options.directory.empty()) {
        admin_ = channel_logger(options, "admin");
        operational_ = channel_logger(options, "operational");
    }
    if (options.to_stderr) {
        stderr_ = std::make_shared<spdlog::logger>(
            "stderr", std::make_shared<spdlog::sinks::ansicolor_stderr_sink_mt>(spdlog::color_mode::never));
        stderr_->set_pattern("%v");
        stderr_->set_level(spdlog::level::trace);
    }
}

EventLog::~EventLog() { flush(); }

std::string EventLog::format_record(std::uint32_t id, cc_log_level level, std::string_view message,
                                    std::string_view request_id, const boost::json::object& fields,
                                    std::string_view source) {
    const cc_event_def* def = cc_event_find(id);
    boost::json::object record;
    record["time"] = utc_timestamp();
    record["id"] = id;
    record["name"] = def ? def->name : "UnknownEvent";
    record["channel"] = (def && def->channel == CC_CHANNEL_ADMIN) ? "Admin" : "Operational";
    record["category"] = def ? def->category : "General";
    record["level"] = level_name(level);
    record["source"] = source;
    record["message"] = message;
    if (!request_id.empty()) record["request_id"] = request_id;
    if (!fields.empty()) record["fields"] = fields;
    return boost::json::serialize(record);
}

void EventLog::emit(std::uint32_t id, cc_log_level level, std::string_view message,
                    std::string_view request_id, const boost::json::object& fields,
                    std::string_view source) {
    const cc_event_def* def = cc_event_find(id);
    const cc_channel channel = def ? def->channel : CC_CHANNEL_OPERATIONAL;
    if (level == CC_LEVEL_DEBUG && !debug_[channel]) return;
    const auto& logger = channel == CC_CHANNEL_ADMIN ? admin_ : operational_;
    if (logger) logger->info(format_record(id, level, message, request_id, fields, source));
    if (stderr_) {
        std::string line = utc_timestamp() + " " + level_name(level) + " [" +
                           (channel == CC_CHANNEL_ADMIN ? "Admin " : "Operational ") + std::to_string(id) +
                           " " + (def ? def->name : "UnknownEvent") + "] ";
        if (source != "host") line += std::string(source) + ": ";
        line += message;
        if (!request_id.empty()) line += " (request " + std::string(request_id) + ")";
        if (!fields.empty()) line += " " + boost::json::serialize(fields);
        stderr_->info(line);
    }
}

void EventLog::set_debug(cc_channel channel, bool enabled) { debug_[channel] = enabled; }

void EventLog::flush() {
    if (admin_) admin_->flush();
    if (operational_) operational_->flush();
    if (stderr_) stderr_->flush();
}

}  // namespace certconn::host
