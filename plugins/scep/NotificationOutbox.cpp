#include "NotificationOutbox.hpp"

#include <certconn/backoff.hpp>

#include <algorithm>
#include <vector>

namespace certconn::scep {

namespace {
std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}
}  // namespace

NotificationOutbox::NotificationOutbox(const std::filesystem::path& file, Sender sender, Observer observer,
                                       std::chrono::milliseconds initial_backoff, std::chrono::milliseconds max_backoff)
    : initial_backoff_(initial_backoff),
      max_backoff_(max_backoff),
      sender_(std::move(sender)),
      observer_(std::move(observer)),
      db_(file, false) {
    db_.exec(R"(CREATE TABLE IF NOT EXISTS notifications (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        transaction_id TEXT NOT NULL,
        operation TEXT NOT NULL,
        body TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL DEFAULT 0,
        last_error TEXT))");
    thread_ = std::thread([this] { run(); });
}

NotificationOutbox::~NotificationOutbox() {
    pause();
}

void NotificationOutbox::pause() {
    {
        std::lock_guard lock(wake_mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void NotificationOutbox::resume() {
    if (thread_.joinable()) return;
    {
        std::lock_guard lock(wake_mutex_);
        stopping_ = false;
    }
    thread_ = std::thread([this] { run(); });
}

void NotificationOutbox::put(const std::string& transaction_id, const std::string& operation, const std::string& body) {
    {
        std::lock_guard lock(db_mutex_);
        db_.prepare("INSERT INTO notifications (transaction_id, operation, body) VALUES (?, ?, ?)")
            .bind_all(transaction_id, operation, body)
            .run();
    }
    {
        std::lock_guard lock(wake_mutex_);
        woken_ = true;
    }
    wake_.notify_all();
}

std::int64_t NotificationOutbox::size() {
    std::lock_guard lock(db_mutex_);
    auto s = db_.prepare("SELECT COUNT(*) FROM notifications");
    s.step();
    return s.integer(0);
}

void NotificationOutbox::run() {
    for (;;) {
        std::vector<std::pair<std::int64_t, Delivery>> due;
        std::int64_t next_due = now_ms() + 1000;
        {
            std::lock_guard lock(db_mutex_);
            auto s = db_.prepare(
                "SELECT seq, transaction_id, operation, body, attempts, next_attempt_ms FROM notifications ORDER BY seq LIMIT "
                "64");
            while (s.step()) {
                if (s.integer(5) <= now_ms())
                    due.push_back({s.integer(0), {s.text(1), s.text(2), s.text(3), s.integer(4)}});
                else
                    next_due = std::min(next_due, s.integer(5));
            }
        }
        for (const auto& [seq, delivery] : due) {
            {
                std::lock_guard lock(wake_mutex_);
                if (stopping_) return;
            }
            std::string error;
            try {
                sender_(delivery);
            } catch (const std::exception& e) {
                error = e.what();
                if (error.empty()) error = "failed";
            }
            std::lock_guard lock(db_mutex_);
            if (error.empty()) {
                db_.prepare("DELETE FROM notifications WHERE seq = ?").bind(1, seq).run();
            } else {
                // delivery.attempts counts the failures before this one, so this is retry attempts + 1
                // (bounded for the int: any count past 62 is at the cap anyway).
                const auto backoff = certconn::sdk::Backoff{initial_backoff_, max_backoff_, 0.0}
                                         .delay(static_cast<int>(std::min<std::int64_t>(delivery.attempts, 62)) + 1)
                                         .count();
                db_.prepare("UPDATE notifications SET attempts = attempts + 1, next_attempt_ms = ?, last_error = ? WHERE seq = ?")
                    .bind_all(now_ms() + static_cast<std::int64_t>(backoff), error, seq)
                    .run();
                next_due = std::min(next_due, now_ms() + static_cast<std::int64_t>(backoff));
            }
            observer_(delivery, error.empty(), error);
        }
        std::unique_lock lock(wake_mutex_);
        if (stopping_) return;
        if (due.empty())
            wake_.wait_for(lock, std::chrono::milliseconds(std::max<std::int64_t>(10, next_due - now_ms())),
                           [this] { return stopping_ || woken_; });
        woken_ = false;
    }
}

}  // namespace certconn::scep
