// certconn/sql.hpp — one small SQL layer over two backends: SQLite files on one machine and
// PostgreSQL (libpq) for a fleet of instances sharing state.
//
// A store writes its SQL once, with numbered parameters ($1, $2, ...) that both backends
// understand, and keeps to what both speak (INSERT ... ON CONFLICT, RETURNING, CAST). Where they
// differ it asks backend(); database time comes from now_sql(), never from the local clock.
//
//     auto db = certconn::sql::Database::open(certconn::sql::Options::for_plugin(host, "scep", "scep.db"));
//     db.migrate(kMigrations);                       // versioned; refuses a newer schema
//     certconn::sql::Transaction tx(db);
//     auto s = db.prepare("UPDATE jobs SET state = 'done' WHERE id = $1 AND attempt = $2");
//     s.bind_all(id, attempt).run();
//     tx.commit();
//
// Errors are certconn::sql::Error with a kind: a lost connection is `connection` (nothing was
// written), or `outcome_unknown` when a write or COMMIT may or may not have reached the database
// (re-read to learn which). The next call reconnects, with backoff. A Database is used by one
// thread at a time (stores hold their own mutex). Nothing here crosses the plugin ABI.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace certconn::sdk {
class Host;
}

namespace certconn::sql {

enum class Backend { sqlite, postgresql };

class Error : public std::runtime_error {
public:
    enum class Kind {
        other,            ///< a bug or a refused statement (syntax, type)
        constraint,       ///< a unique, foreign-key or check constraint refused the write
        busy,             ///< locked, serialization failure or deadlock: run the transaction again
        connection,       ///< the database cannot be reached; nothing was written
        outcome_unknown,  ///< the connection broke while a write or COMMIT was in flight
        schema,           ///< the database's schema is newer than this build knows
    };
    Error(Kind kind, const std::string& what, std::string sqlstate = {})
        : std::runtime_error(what), kind_(kind), sqlstate_(std::move(sqlstate)) {}
    Kind kind() const noexcept { return kind_; }
    /// PostgreSQL's SQLSTATE ("23505"), or "" for SQLite and connection failures.
    const std::string& sqlstate() const noexcept { return sqlstate_; }
    bool constraint() const noexcept { return kind_ == Kind::constraint; }
    /// Worth trying again later (the same statement or transaction may succeed).
    bool transient() const noexcept { return kind_ == Kind::busy || kind_ == Kind::connection || kind_ == Kind::outcome_unknown; }

private:
    Kind kind_;
    std::string sqlstate_;
};

/// Where a store lives. `url` empty: SQLite at `sqlite_file`.
struct Options {
    std::string url;       ///< "postgresql://..." (libpq URI or key=value conninfo); "" = SQLite
    std::string password;  ///< overrides the URL's; "" = libpq's own (PGPASSWORD, ~/.pgpass)
    /// PostgreSQL schema holding this store's tables ("ca_local"); created when missing. Every
    /// statement of the store runs with search_path set to it (passed at connection start).
    std::string schema;
    std::string application_name = "certconnector";  ///< pg_stat_activity shows it
    std::filesystem::path sqlite_file;
    bool synchronous_full = true;  ///< SQLite: every commit durable against power loss
    /// SQLite: PRAGMA secure_delete=ON, for tables holding secrets (see sqlite.hpp). PostgreSQL
    /// leaves dead tuples until VACUUM: protect the database itself (docs/fleet.md).
    bool secure_delete = false;
    std::chrono::seconds connect_timeout{10};
    /// PostgreSQL: a statement running longer than this is cancelled by the server (0 = none).
    std::chrono::milliseconds statement_timeout{30000};

    /// From a plugin's host (Host::store_config_json): PostgreSQL schema `schema` when the host
    /// has a [store] url, else `<state_dir>/<sqlite_file_name>`.
    static Options for_plugin(const sdk::Host& host, std::string_view schema, std::string_view sqlite_file_name);
    /// From a store_config JSON document (abi.h) and a state directory.
    static Options from_store_config(std::string_view store_config_json, const std::filesystem::path& state_dir,
                                     std::string_view schema, std::string_view sqlite_file_name);
};

/// A versioned schema change. `sql` runs on both backends unless `postgresql_sql` is given
/// (then `sql` is SQLite's). Several statements may be separated by ';'.
struct Migration {
    int version;
    std::string sql;
    std::string postgresql_sql = {};
};

class Database;

/// A prepared statement: bind, then step() through rows (or run()).
class Statement {
public:
    class Impl;
    explicit Statement(std::unique_ptr<Impl> impl);
    Statement(Statement&&) noexcept;
    Statement& operator=(Statement&&) noexcept;
    Statement(const Statement&) = delete;
    ~Statement();

    /// Binds parameter $i (1-based).
    Statement& bind(int i, std::string_view v);
    Statement& bind(int i, const char* v) { return v ? bind(i, std::string_view(v)) : bind_null(i); }
    Statement& bind(int i, const std::string& v) { return bind(i, std::string_view(v)); }
    Statement& bind(int i, std::int64_t v);
    Statement& bind(int i, int v) { return bind(i, static_cast<std::int64_t>(v)); }
    Statement& bind(int i, std::uint32_t v) { return bind(i, static_cast<std::int64_t>(v)); }
    Statement& bind(int i, const std::optional<std::string>& v) { return v ? bind(i, *v) : bind_null(i); }
    Statement& bind_null(int i);
    template <class... Args>
    Statement& bind_all(Args&&... args) {
        int i = 0;
        (bind(++i, std::forward<Args>(args)), ...);
        return *this;
    }

    /// Executes on the first call; true while a row is available.
    bool step();
    /// Executes, discarding rows; returns the rows changed.
    std::int64_t run();
    /// Ready to execute again with new bindings.
    void reset();

    std::string text(int col) const;
    std::optional<std::string> optional_text(int col) const;
    std::int64_t integer(int col) const;
    bool is_null(int col) const;

private:
    std::unique_ptr<Impl> impl_;
};

class Database {
public:
    class Impl;
    /// Opens (and for SQLite creates, 0600) the store. PostgreSQL connects lazily: opening
    /// never fails because the server is down; the first statement does.
    static Database open(const Options& options);
    explicit Database(std::unique_ptr<Impl> impl);
    Database(Database&&) noexcept;
    Database& operator=(Database&&) noexcept;
    ~Database();

    Backend backend() const;
    bool shared() const { return backend() == Backend::postgresql; }
    /// "sqlite /var/lib/certconnector/x.db" or "postgresql host=db1 dbname=cc schema=scep": no password.
    std::string describe() const;

    Statement prepare(std::string_view sql);
    /// Runs one or more statements without parameters.
    void exec(std::string_view sql);
    /// Rows changed by the last statement executed.
    std::int64_t changes() const;

    /// An SQL expression for the database's current time in whole seconds since the epoch
    /// (SQLite: the machine's clock; PostgreSQL: the server's clock, shared by the fleet).
    std::string now_sql() const;
    /// The same in milliseconds.
    std::string now_ms_sql() const;

    /// Brings the schema up to the newest of `migrations` (ascending versions), once across the
    /// fleet (a PostgreSQL advisory lock inside the transaction). Throws Error(schema) when the
    /// database already has a version newer than the newest known here.
    void migrate(std::span<const Migration> migrations);
    /// The schema version recorded (0 before the first migration).
    int schema_version();

    /// SQLite: truncate the WAL after deleting secrets (see sqlite.hpp); PostgreSQL: nothing.
    void checkpoint();

private:
    friend class Transaction;
    std::unique_ptr<Impl> impl_;
};

/// BEGIN (SQLite: BEGIN IMMEDIATE) ... COMMIT; rolled back when destroyed without commit().
/// A COMMIT whose outcome the connection did not report throws Error(outcome_unknown).
class Transaction {
public:
    explicit Transaction(Database& db);
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    ~Transaction();
    void commit();

private:
    Database& db_;
    bool done_ = false;
};

/// A leader lease: one holder at a time for a singleton duty ("crl:corp"), in the same store as
/// the state the duty writes, with an epoch that grows each time the lease changes hands (or
/// lapses). A writer proves it still leads by checking the epoch in the same transaction as
/// its write: still_held(). Table `certconn_leases` in the store's schema.
class LeaderLease {
public:
    LeaderLease(Database& db, std::string name, std::string holder);
    /// Takes the lease if free or expired, or renews it if held by us, for `ttl` from the
    /// database's now. Returns the epoch held, or nullopt when another holder's lease is live.
    std::optional<std::int64_t> acquire(std::chrono::seconds ttl);
    /// Gives the lease up (when held by us) so another instance can take it at once.
    void release();
    /// Inside a transaction: true when we still hold the lease at `epoch` and it has not
    /// expired. Locks the lease row (PostgreSQL) until the transaction ends.
    bool still_held(std::int64_t epoch);
    /// The current holder, its epoch and seconds until expiry (negative when expired).
    struct Holder {
        std::string holder;
        std::int64_t epoch = 0;
        std::int64_t expires_in = 0;
    };
    std::optional<Holder> current();

    /// The migration creating certconn_leases; add it to the store's own list (any version).
    static Migration migration(int version);

private:
    Database& db_;
    std::string name_, holder_;
};

}  // namespace certconn::sql
