// certconn/sqlite.hpp — a small RAII layer over SQLite for the host and plugins that keep
// durable state (WAL journal, busy timeout, prepared statements, transactions).
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace certconn::sqlite {

class Error : public std::runtime_error {
public:
    Error(const std::string& what, int code) : std::runtime_error(what), code_(code) {}
    int code() const noexcept { return code_; }
    bool constraint() const noexcept { return (code_ & 0xff) == SQLITE_CONSTRAINT; }
    bool busy() const noexcept { return (code_ & 0xff) == SQLITE_BUSY || (code_ & 0xff) == SQLITE_LOCKED; }

private:
    int code_;
};

class Database;

class Statement {
public:
    Statement(sqlite3* db, std::string_view sql) : db_(db) {
        if (sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt_, nullptr) != SQLITE_OK)
            throw Error(std::string("SQL prepare failed: ") + sqlite3_errmsg(db) + " in: " + std::string(sql),
                        sqlite3_errcode(db));
    }
    Statement(Statement&& o) noexcept : db_(o.db_), stmt_(std::exchange(o.stmt_, nullptr)) {}
    Statement(const Statement&) = delete;
    ~Statement() { sqlite3_finalize(stmt_); }

    Statement& bind(int i, std::string_view v) {
        check(sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
        return *this;
    }
    Statement& bind(int i, const char* v) { return v ? bind(i, std::string_view(v)) : bind_null(i); }
    Statement& bind(int i, const std::string& v) { return bind(i, std::string_view(v)); }
    Statement& bind(int i, std::int64_t v) {
        check(sqlite3_bind_int64(stmt_, i, v));
        return *this;
    }
    Statement& bind(int i, int v) { return bind(i, static_cast<std::int64_t>(v)); }
    Statement& bind_null(int i) {
        check(sqlite3_bind_null(stmt_, i));
        return *this;
    }
    template <class... Args>
    Statement& bind_all(Args&&... args) {
        int i = 0;
        (bind(++i, std::forward<Args>(args)), ...);
        return *this;
    }

    /// Advances; true while a row is available.
    bool step() {
        const int rc = sqlite3_step(stmt_);
        if (rc == SQLITE_ROW) return true;
        if (rc == SQLITE_DONE) return false;
        throw Error(std::string("SQL step failed: ") + sqlite3_errmsg(db_), sqlite3_extended_errcode(db_));
    }
    void run() {
        while (step()) {
        }
    }
    void reset() {
        sqlite3_reset(stmt_);
        sqlite3_clear_bindings(stmt_);
    }

    std::string text(int col) const {
        const auto* p = sqlite3_column_text(stmt_, col);
        return p ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(stmt_, col)))
                 : std::string();
    }
    std::optional<std::string> optional_text(int col) const {
        if (sqlite3_column_type(stmt_, col) == SQLITE_NULL) return std::nullopt;
        return text(col);
    }
    std::int64_t integer(int col) const { return sqlite3_column_int64(stmt_, col); }

private:
    void check(int rc) {
        if (rc != SQLITE_OK) throw Error(std::string("SQL bind failed: ") + sqlite3_errmsg(db_), rc);
    }
    sqlite3* db_;
    sqlite3_stmt* stmt_ = nullptr;
};

class Database {
public:
    struct Options {
        /// Every commit durable against power loss, not only against a crash of the process.
        bool synchronous_full = true;
        /// PRAGMA secure_delete=ON: deleted rows and freed pages are overwritten with zeros, so
        /// a deleted private key or password does not linger in the file. For tables holding
        /// secrets; pair it with checkpoint_truncate() after deleting, so the WAL lets go too.
        bool secure_delete = false;
    };

    /// Opens (creating, mode 0600) `file` with a WAL journal. `synchronous_full` makes every
    /// commit durable against power loss, not only against a crash of the process.
    explicit Database(const std::filesystem::path& file, bool synchronous_full = true)
        : Database(file, Options{synchronous_full, false}) {}

    Database(const std::filesystem::path& file, const Options& options) {
        if (sqlite3_open_v2(file.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr) !=
            SQLITE_OK) {
            const std::string why = db_ ? sqlite3_errmsg(db_) : "out of memory";
            sqlite3_close(db_);
            throw Error("cannot open database " + file.string() + ": " + why, SQLITE_CANTOPEN);
        }
        std::filesystem::permissions(file, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
        sqlite3_busy_timeout(db_, 10000);
        exec("PRAGMA journal_mode=WAL");
        exec(options.synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
        exec("PRAGMA foreign_keys=ON");
        if (options.secure_delete) exec("PRAGMA secure_delete=ON");
    }
    Database(const Database&) = delete;
    Database& operator=(const Database&) = delete;
    ~Database() { sqlite3_close_v2(db_); }

    void exec(std::string_view sql) {
        char* err = nullptr;
        const std::string s(sql);
        if (sqlite3_exec(db_, s.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
            const std::string why = err ? err : "unknown error";
            sqlite3_free(err);
            throw Error("SQL failed: " + why + " in: " + s, sqlite3_extended_errcode(db_));
        }
    }
    Statement prepare(std::string_view sql) { return Statement(db_, sql); }
    /// Copies the WAL into the database file and truncates the WAL to zero bytes, so frames
    /// holding deleted data leave the disk (with secure_delete, the database pages are already
    /// zeroed). Returns false when readers kept part of the WAL in use (try again later).
    bool checkpoint_truncate() {
        int log = 0, done = 0;
        const int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_TRUNCATE, &log, &done);
        if (rc == SQLITE_BUSY) return false;
        if (rc != SQLITE_OK)
            throw Error(std::string("WAL checkpoint failed: ") + sqlite3_errmsg(db_), sqlite3_extended_errcode(db_));
        return log == done;
    }
    std::int64_t changes() const { return sqlite3_changes64(db_); }
    sqlite3* handle() const { return db_; }

private:
    sqlite3* db_ = nullptr;
};

/// BEGIN IMMEDIATE ... COMMIT, rolled back when destroyed without commit().
class Transaction {
public:
    explicit Transaction(Database& db) : db_(db) { db_.exec("BEGIN IMMEDIATE"); }
    ~Transaction() {
        if (!done_) {
            try {
                db_.exec("ROLLBACK");
            } catch (...) {
            }
        }
    }
    void commit() {
        db_.exec("COMMIT");
        done_ = true;
    }

private:
    Database& db_;
    bool done_ = false;
};

}  // namespace certconn::sqlite
