// SCEP notifications to the tenant (issued / failed), durable: each is written to SQLite (WAL)
// before anything else happens and is sent by a background thread, with exponential backoff,
// until the tenant accepts it. Survives restarts: undelivered rows are sent at start.
#pragma once

#include <certconn/sqlite.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace certconn::scep {

class NotificationOutbox {
public:
    struct Delivery {
        std::string transaction_id;
        std::string operation;  // scep.notify_success | scep.notify_failure
        std::string body;       // JSON
        std::int64_t attempts;  // before this one
    };
    /// Sends one notification; throws to report a failed attempt.
    using Sender = std::function<void(const Delivery&)>;
    /// Called after each attempt: delivered, or failed with the reason (it will be retried).
    using Observer = std::function<void(const Delivery&, bool delivered, const std::string& error)>;

    NotificationOutbox(const std::filesystem::path& file, Sender sender, Observer observer,
                       std::chrono::milliseconds initial_backoff = std::chrono::seconds(2),
                       std::chrono::milliseconds max_backoff = std::chrono::minutes(5));
    ~NotificationOutbox();

    /// Persists a notification and wakes the sender; throws sqlite::Error if it cannot persist.
    void put(const std::string& transaction_id, const std::string& operation, const std::string& body);
    std::int64_t size();
    /// Hot-swap hand-over: stops and joins the sender; put() still persists (the next
    /// generation's sender, on the same file, delivers what this one leaves).
    void pause();
    /// Restarts the sender after pause().
    void resume();

private:
    void run();
    std::chrono::milliseconds initial_backoff_, max_backoff_;
    Sender sender_;
    Observer observer_;
    std::mutex db_mutex_;
    sqlite::Database db_;
    std::mutex wake_mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
    bool woken_ = false;  // a put() since the sender last looked: never sleep past it
    std::thread thread_;
};

}  // namespace certconn::scep
