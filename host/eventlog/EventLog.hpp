// The event log: two JSON-lines channels (Admin, Operational), rotated by size, with an
// optional human-readable copy on stderr. Every record carries an id from events.h.
#pragma once

#include <certconn/abi.h>
#include <certconn/events.h>

#include <boost/json/object.hpp>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string_view>

namespace spdlog { class logger; }

namespace certconn::host {

struct EventLogOptions {
    std::filesystem::path directory;       // empty: no files, stderr only
    std::uint64_t max_file_bytes = 50ull * 1024 * 1024;
    std::size_t archives = 5;              // rotated files kept per channel
    bool admin_debug = false;
    bool operational_debug = false;
    bool to_stderr = false;
};

class EventLog {
public:
    explicit EventLog(const EventLogOptions& options);
    ~EventLog();
    EventLog(const EventLog&) = delete;
    EventLog& operator=(const EventLog&) = delete;

    /// Writes event `id`. `source` names the writer ("host" or the plugin).
    void emit(std::uint32_t id, cc_log_level level, std::string_view message,
              std::string_view request_id = {}, const boost::json::object& fields = {},
              std::string_view source = "host");

    void set_debug(cc_channel channel, bool enabled);
    void flush();

    /// The JSON record emit() writes for these arguments (for tests and tools).
    static std::string format_record(std::uint32_t id, cc_log_level level, std::string_view message,
                                     std::string_view request_id, const boost::json::object& fields,
                                     std::string_view source);

private:
    std::shared_ptr<spdlog::logger> admin_, operational_, stderr_;
    std::atomic<bool> debug_[2];
};

const char* level_name(cc_log_level level);

}  // namespace certconn::host
