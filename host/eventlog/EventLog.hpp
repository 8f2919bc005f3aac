// The event log: two JSON-lines channels (Admin, Operational), rotated by size, with an
// optional human-readable copy on stderr. Every record carries an id from events.h.
//
// Repeated identical events are rate-limited so a flood of one event (a failing accept, a
// misbehaving client) cannot rotate the history away: within `suppress_window` of writing an
// event, further events identical to it (same id, level, source, message, request id and
// fields) are counted instead of written; when the window ends, one summary record with the
// same id says "N similar events suppressed" and carries the count in fields.suppressed.
// Different events are never held back, and interleaved floods of several events are each
// limited on their own.
#pragma once

#include <certconn/abi.h>
#include <certconn/events.h>

#include <boost/json/object.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>

namespace spdlog {
class logger;
}

namespace certconn::host {

struct EventLogOptions {
    std::filesystem::path directory;  // empty: no files, stderr only
    std::uint64_t max_file_bytes = 50ull * 1024 * 1024;
    std::size_t archives = 5;  // rotated files kept per channel
    bool admin_debug = false;
    bool operational_debug = false;
    bool to_stderr = false;
    // Identical events within this window after the first are counted, not written; zero
    // writes every event.
    std::chrono::milliseconds suppress_window{std::chrono::seconds(30)};
};

class EventLog {
public:
    explicit EventLog(const EventLogOptions& options);
    ~EventLog();
    EventLog(const EventLog&) = delete;
    EventLog& operator=(const EventLog&) = delete;

    /// Writes event `id`. `source` names the writer ("host" or the plugin).
    void emit(std::uint32_t id, cc_log_level level, std::string_view message, std::string_view request_id = {},
              const boost::json::object& fields = {}, std::string_view source = "host");

    void set_debug(cc_channel channel, bool enabled);
    /// Writes the summaries of events suppressed so far (ending their windows) and flushes the files.
    void flush();

    /// The JSON record emit() writes for these arguments (for tests and tools).
    static std::string format_record(std::uint32_t id, cc_log_level level, std::string_view message, std::string_view request_id,
                                     const boost::json::object& fields, std::string_view source);

private:
    // One recently written event and how many identical ones were held back since.
    struct Recent {
        std::uint32_t id;
        cc_log_level level;
        std::string key;  // everything that makes two events identical
        std::string message, request_id, source;
        boost::json::object fields;
        std::chrono::steady_clock::time_point window_end;
        std::uint64_t suppressed = 0;
    };
    static constexpr std::size_t kMaxRecent = 1024;  // distinct events remembered at once

    void write(std::uint32_t id, cc_log_level level, std::string_view message, std::string_view request_id,
               const boost::json::object& fields, std::string_view source);
    void write_summary(const Recent& r);
    /// Writes the summaries of windows that ended before `now` (all when `all`); caller holds recent_mutex_.
    void end_windows(std::chrono::steady_clock::time_point now, bool all);
    void sweep_loop();

    std::shared_ptr<spdlog::logger> admin_, operational_, stderr_;
    std::atomic<bool> debug_[2];

    std::chrono::milliseconds window_;
    std::mutex recent_mutex_;
    std::unordered_map<std::size_t, Recent> recent_;  // by hash of Recent::key
    std::condition_variable sweep_wake_;
    bool closing_ = false;
    std::thread sweeper_;  // writes summaries when windows end, also when no further event comes
};

const char* level_name(cc_log_level level);

}  // namespace certconn::host
