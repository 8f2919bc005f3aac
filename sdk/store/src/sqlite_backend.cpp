// SQLite backend of certconn/sql.hpp: one file, WAL journal, BEGIN IMMEDIATE transactions.
#include "backend.hpp"

#include <sqlite3.h>

#include <filesystem>

namespace certconn::sql {
namespace {

Error error_from(sqlite3* db, const std::string& what, int code) {
    const int primary = code & 0xff;
    const std::string message = what + ": " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(code));
    if (primary == SQLITE_CONSTRAINT) return {Error::Kind::constraint, message};
    if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED) return {Error::Kind::busy, message};
    return {Error::Kind::other, message};
}

class SqliteStatement final : public Statement::Impl {
public:
    SqliteStatement(sqlite3* db, std::string_view sql) : db_(db) {
        const int rc = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt_, nullptr);
        if (rc != SQLITE_OK) throw error_from(db, "SQL prepare failed (" + std::string(sql) + ")", rc);
    }
    ~SqliteStatement() override { sqlite3_finalize(stmt_); }
    SqliteStatement(const SqliteStatement&) = delete;
    SqliteStatement& operator=(const SqliteStatement&) = delete;

    void bind_text(int i, std::string_view v) override {
        check(sqlite3_bind_text(stmt_, index(i), v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
    }
    void bind_integer(int i, std::int64_t v) override { check(sqlite3_bind_int64(stmt_, index(i), v)); }
    void bind_null(int i) override { check(sqlite3_bind_null(stmt_, index(i))); }
    bool step() override {
        const int rc = sqlite3_step(stmt_);
        if (rc == SQLITE_ROW) return true;
        if (rc == SQLITE_DONE) return false;
        throw error_from(db_, "SQL step failed", sqlite3_extended_errcode(db_));
    }
    void reset() override {
        sqlite3_reset(stmt_);
        sqlite3_clear_bindings(stmt_);
    }
    std::string text(int col) const override {
        const auto* p = sqlite3_column_text(stmt_, col);
        return p ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(stmt_, col)))
                 : std::string();
    }
    std::int64_t integer(int col) const override { return sqlite3_column_int64(stmt_, col); }
    bool is_null(int col) const override { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
    std::int64_t changes() const override { return sqlite3_changes64(db_); }

private:
    // "$3" is a named parameter to SQLite; its index is where it first appears.
    int index(int i) const {
        const std::string name = "$" + std::to_string(i);
        const int at = sqlite3_bind_parameter_index(stmt_, name.c_str());
        return at > 0 ? at : i;
    }
    void check(int rc) const {
        if (rc != SQLITE_OK) throw error_from(db_, "SQL bind failed", rc);
    }
    sqlite3* db_;
    sqlite3_stmt* stmt_ = nullptr;
};

class SqliteDatabase final : public Database::Impl {
public:
    explicit SqliteDatabase(const Options& options) : file_(options.sqlite_file) {
        if (sqlite3_open_v2(file_.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr) !=
            SQLITE_OK) {
            const std::string why = db_ ? sqlite3_errmsg(db_) : "out of memory";
            sqlite3_close(db_);
            db_ = nullptr;
            throw Error(Error::Kind::connection, "cannot open database " + file_.string() + ": " + why);
        }
        std::error_code ec;
        std::filesystem::permissions(file_, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write, ec);
        sqlite3_busy_timeout(db_, 10000);
        exec("PRAGMA journal_mode=WAL");
        exec(options.synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
        exec("PRAGMA foreign_keys=ON");
        if (options.secure_delete) exec("PRAGMA secure_delete=ON");
    }
    ~SqliteDatabase() override { sqlite3_close_v2(db_); }
    SqliteDatabase(const SqliteDatabase&) = delete;
    SqliteDatabase& operator=(const SqliteDatabase&) = delete;

    Backend backend() const override { return Backend::sqlite; }
    std::string describe() const override { return "sqlite " + file_.string(); }
    std::unique_ptr<Statement::Impl> prepare(std::string_view sql) override {
        return std::make_unique<SqliteStatement>(db_, sql);
    }
    void exec(std::string_view sql) override {
        char* err = nullptr;
        const std::string s(sql);
        if (sqlite3_exec(db_, s.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
            const std::string why = err ? err : "unknown error";
            sqlite3_free(err);
            const int code = sqlite3_extended_errcode(db_);
            const int primary = code & 0xff;
            const Error::Kind kind = primary == SQLITE_CONSTRAINT                         ? Error::Kind::constraint
                                     : primary == SQLITE_BUSY || primary == SQLITE_LOCKED ? Error::Kind::busy
                                                                                          : Error::Kind::other;
            throw Error(kind, "SQL failed: " + why + " (" + s + ")");
        }
    }
    std::int64_t changes() const override { return sqlite3_changes64(db_); }
    void begin() override { exec("BEGIN IMMEDIATE"); }
    void commit() override { exec("COMMIT"); }
    void rollback() noexcept override {
        try {
            exec("ROLLBACK");
        } catch (...) {
        }
    }
    void checkpoint() override {
        int log = 0, done = 0;
        sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_TRUNCATE, &log, &done);
    }
    const std::string& schema() const override { return schema_; }

private:
    std::filesystem::path file_;
    std::string schema_;
    sqlite3* db_ = nullptr;
};

}  // namespace

std::unique_ptr<Database::Impl> open_sqlite(const Options& options) {
    return std::make_unique<SqliteDatabase>(options);
}

}  // namespace certconn::sql
