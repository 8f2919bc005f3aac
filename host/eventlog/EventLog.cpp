#include "eventlog/EventLog.hpp"

#include <certconn/time.hpp>

#include <boost/json/serialize.hpp>
#include <spdlog/logger.h>
#include <spdlog/sinks/ansicolor_sink.h>
#include <spdlog/sinks/rotating_file_sink.h>

#include <algorithm>
#include <chrono>

namespace certconn::host {

namespace {

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

EventLog::EventLog(const EventLogOptions& options) : window_(std::max(options.suppress_window, std::chrono::milliseconds(0))) {
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
    if (window_.count() > 0) sweeper_ = std::thread([this] { sweep_loop(); });
}

EventLog::~EventLog() {
    if (sweeper_.joinable()) {
        {
            std::lock_guard lock(recent_mutex_);
            closing_ = true;
        }
        sweep_wake_.notify_all();
        sweeper_.join();
    }
    flush();
}

std::string EventLog::format_record(std::uint32_t id, cc_log_level level, std::string_view message, std::string_view request_id,
                                    const boost::json::object& fields, std::string_view source) {
    const cc_event_def* def = cc_event_find(id);
    boost::json::object record;
    record["time"] = sdk::utc_iso8601(std::chrono::system_clock::now(), true);
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

void EventLog::emit(std::uint32_t id, cc_log_level level, std::string_view message, std::string_view request_id,
                    const boost::json::object& fields, std::string_view source) {
    const cc_event_def* def = cc_event_find(id);
    const cc_channel channel = def ? def->channel : CC_CHANNEL_OPERATIONAL;
    if (level == CC_LEVEL_DEBUG && !debug_[channel]) return;
    if (window_.count() > 0) {
        // The key is built and hashed before taking the lock; the lock covers one lookup.
        std::string key = std::to_string(id);
        key.reserve(key.size() + source.size() + request_id.size() + message.size() + 8);
        key += '\x1f';
        key += static_cast<char>('0' + level);
        key += '\x1f';
        key += source;
        key += '\x1f';
        key += request_id;
        key += '\x1f';
        key += message;
        if (!fields.empty()) {
            key += '\x1f';
            key += boost::json::serialize(fields);
        }
        const std::size_t hash = std::hash<std::string>{}(key);
        const auto now = std::chrono::steady_clock::now();
        std::unique_lock lock(recent_mutex_);
        auto it = recent_.find(hash);
        if (it != recent_.end() && it->second.key == key) {
            Recent& r = it->second;
            if (now < r.window_end) {
                ++r.suppressed;
                return;
            }
            // The window ended: its summary, then this event opens a new one (both under the
            // lock, so no other thread's copy of this event slips between them).
            if (r.suppressed > 0) write_summary(r);
            r.suppressed = 0;
            r.window_end = now + window_;
            write(id, level, message, request_id, fields, source);
            return;
        }
        if (it != recent_.end()) {  // another event with the same hash: it gives way
            if (it->second.suppressed > 0) write_summary(it->second);
            recent_.erase(it);
        }
        if (recent_.size() >= kMaxRecent) end_windows(now, false);
        if (recent_.size() < kMaxRecent)  // else: too many distinct events to remember; write them all
            recent_.emplace(hash, Recent{id, level, std::move(key), std::string(message), std::string(request_id),
                                         std::string(source), fields, now + window_, 0});
    }
    write(id, level, message, request_id, fields, source);
}

void EventLog::write_summary(const Recent& r) {
    boost::json::object fields = r.fields;
    fields["suppressed"] = r.suppressed;
    const auto window_ms = window_.count();
    const std::string window =
        window_ms % 1000 == 0 ? std::to_string(window_ms / 1000) + " s" : std::to_string(window_ms) + " ms";
    write(r.id, r.level,
          std::to_string(r.suppressed) + " similar events suppressed (identical within " + window + "): " + r.message,
          r.request_id, fields, r.source);
}

void EventLog::end_windows(std::chrono::steady_clock::time_point now, bool all) {
    for (auto it = recent_.begin(); it != recent_.end();) {
        if (all || it->second.window_end <= now) {
            if (it->second.suppressed > 0) write_summary(it->second);
            it = recent_.erase(it);
        } else {
            ++it;
        }
    }
}

void EventLog::sweep_loop() {
    const auto period =
        std::clamp<std::chrono::milliseconds>(window_ / 2, std::chrono::milliseconds(50), std::chrono::milliseconds(5000));
    std::unique_lock lock(recent_mutex_);
    while (!closing_) {
        sweep_wake_.wait_for(lock, period, [this] { return closing_; });
        if (!closing_) end_windows(std::chrono::steady_clock::now(), false);
    }
}

void EventLog::write(std::uint32_t id, cc_log_level level, std::string_view message, std::string_view request_id,
                     const boost::json::object& fields, std::string_view source) {
    const cc_event_def* def = cc_event_find(id);
    const cc_channel channel = def ? def->channel : CC_CHANNEL_OPERATIONAL;
    const auto& logger = channel == CC_CHANNEL_ADMIN ? admin_ : operational_;
    if (logger) logger->info(format_record(id, level, message, request_id, fields, source));
    if (stderr_) {
        std::string line = sdk::utc_iso8601(std::chrono::system_clock::now(), true) + " " + level_name(level) + " [" +
                           (channel == CC_CHANNEL_ADMIN ? "Admin " : "Operational ") + std::to_string(id) + " " +
                           (def ? def->name : "UnknownEvent") + "] ";
        if (source != "host") line += std::string(source) + ": ";
        line += message;
        if (!request_id.empty()) line += " (request " + std::string(request_id) + ")";
        if (!fields.empty()) line += " " + boost::json::serialize(fields);
        stderr_->info(line);
    }
}

void EventLog::set_debug(cc_channel channel, bool enabled) {
    debug_[channel] = enabled;
}

void EventLog::flush() {
    {
        std::lock_guard lock(recent_mutex_);
        end_windows(std::chrono::steady_clock::now(), true);
    }
    if (admin_) admin_->flush();
    if (operational_) operational_->flush();
    if (stderr_) stderr_->flush();
}

}  // namespace certconn::host
