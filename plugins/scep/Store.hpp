// Where the SCEP feature keeps its state: certconn::store (certconn/sql.hpp).
//
// Single machine (no [store] url): two SQLite files in the plugin's state directory, as before —
// pending.db (pending approvals; since schema 2 also the transaction ledger and the shared RA
// table) and issued.db (the renewal ledger). A fleet: one PostgreSQL schema `scep` holding every
// table, reached through one connection per instance (the stores share it under its mutex).
//
// Migrations: PostgreSQL has one version for the whole schema; each SQLite file its own. Version
// 1 is what the files held before the store existed (CREATE TABLE IF NOT EXISTS: idempotent on
// an old file). A later change adds a version to the list of each place it touches.
#pragma once

#include <certconn/sql.hpp>

#include <memory>
#include <mutex>
#include <span>
#include <string>

namespace certconn::scep {

/// One database connection and the mutex every store using it holds (sql::Database is used by
/// one thread at a time).
struct Connection {
    Connection(sql::Database d, std::span<const sql::Migration> m) : db(std::move(d)), migrations(m) {}
    std::mutex mutex;
    sql::Database db;
    /// With `mutex` held, before each use: brings the schema up to date the first time (so an
    /// instance starting while PostgreSQL is down migrates once it is back).
    sql::Database& ready() {
        if (!migrated) {
            db.migrate(migrations);
            migrated = true;
        }
        return db;
    }

private:
    std::span<const sql::Migration> migrations;
    bool migrated = false;
};
using ConnectionPtr = std::shared_ptr<Connection>;

enum class StoreFile { pending, issued };

/// Opens the store behind `options` for the tables of `file` (on PostgreSQL every table of the
/// schema, whichever `file` is named). SQLite is migrated at once (a broken file is an init
/// error); PostgreSQL at first use.
ConnectionPtr open_store(const sql::Options& options, StoreFile file);

/// The connections of a plugin: `issued` is `pending` itself on PostgreSQL (one schema).
struct Connections {
    ConnectionPtr pending, issued;
};
Connections open_stores(const sql::Options& pending_options, const sql::Options& issued_options);

/// An SQL expression for the database's time as ISO 8601 UTC text ("2026-12-07T21:59:43Z").
std::string iso_now_sql(const sql::Database& db);

}  // namespace certconn::scep
