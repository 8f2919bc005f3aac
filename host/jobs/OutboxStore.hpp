// The durable outbox: a job's result is written here (SQLite, WAL) before
// the tenant hears of it, and stays until the tenant acknowledges it. The first result stored
// for a job is the only one: a re-run after a crash finds it and reports it again.
#pragma once

#include <certconn/sqlite.hpp>

#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace certconn::host {

struct OutboxEntry {
    std::string job_id;
    std::string feature;
    std::string result;
    std::int64_t attempts = 0;
};

class OutboxStore {
public:
    explicit OutboxStore(const std::filesystem::path& file);

    /// Stores the result unless one is stored already; returns the stored one.
    std::string put(const std::string& job_id, const std::string& feature, const std::string& result);
    std::optional<OutboxEntry> find(const std::string& job_id);
    /// Entries whose next delivery attempt is due.
    std::vector<OutboxEntry> due(std::int64_t now_ms, std::size_t limit);
    void remove(const std::string& job_id);
    void defer(const std::string& job_id, std::int64_t next_attempt_ms, const std::string& error);
    std::int64_t size();

private:
    std::mutex mutex_;
    sqlite::Database db_;
};

}  // namespace certconn::host
