#include "fleet/HostSchema.hpp"

#include <array>

namespace certconn::host {

namespace {

const std::array<sql::Migration, 3> kMigrations{
    sql::Migration{1,
                   // Today's outbox, as every SQLite file since multi-tenant versions has it.
                   R"(CREATE TABLE IF NOT EXISTS deliveries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('result', 'notification')),
        key TEXT NOT NULL,
        feature TEXT NOT NULL,
        operation TEXT NOT NULL DEFAULT '',
        body TEXT NOT NULL,
        events TEXT NOT NULL DEFAULT '{}',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        refused INTEGER NOT NULL DEFAULT 0,
        stored_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
        stored_ms INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
        UNIQUE (tenant, kind, key)))",
                   R"(CREATE TABLE IF NOT EXISTS deliveries (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tenant TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('result', 'notification')),
        key TEXT NOT NULL,
        feature TEXT NOT NULL,
        operation TEXT NOT NULL DEFAULT '',
        body TEXT NOT NULL,
        events TEXT NOT NULL DEFAULT '{}',
        attempts BIGINT NOT NULL DEFAULT 0,
        next_attempt_ms BIGINT NOT NULL DEFAULT 0,
        last_error TEXT,
        refused INTEGER NOT NULL DEFAULT 0,
        stored_at TEXT NOT NULL DEFAULT (to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
        stored_ms BIGINT NOT NULL DEFAULT (CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 1000) AS BIGINT)),
        UNIQUE (tenant, kind, key)))"},
    sql::LeaderLease::migration(2),
    sql::Migration{3,
                   // Times are the database's, in epoch seconds; JSON columns are TEXT.
                   R"(CREATE TABLE IF NOT EXISTS instances (
        instance_id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid BIGINT NOT NULL,
        version TEXT NOT NULL,
        features TEXT NOT NULL DEFAULT '[]',
        tenants TEXT NOT NULL DEFAULT '[]',
        cas TEXT NOT NULL DEFAULT '[]',
        key_fingerprints TEXT NOT NULL DEFAULT '{}',
        started_at BIGINT NOT NULL,
        heartbeat_at BIGINT NOT NULL,
        left_at BIGINT,
        health TEXT NOT NULL DEFAULT '',
        lost_reported INTEGER NOT NULL DEFAULT 0))"},
};

}  // namespace

std::span<const sql::Migration> host_migrations() {
    return kMigrations;
}

sql::Database open_host_store(const sql::Options& options) {
    auto db = sql::Database::open(options);
    db.migrate(kMigrations);
    if (!db.shared()) {
        // The outbox of versions with one tenant held job results only: they go to the default tenant.
        auto old = db.prepare("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'outbox'");
        old.step();
        if (old.integer(0) > 0) {
            sql::Transaction tx(db);
            db.exec(
                R"(INSERT OR IGNORE INTO deliveries (tenant, kind, key, feature, body, attempts, next_attempt_ms, last_error, stored_at)
                    SELECT '', 'result', job_id, feature, result, attempts, next_attempt_ms, last_error, stored_at
                    FROM outbox ORDER BY stored_at)");
            db.exec("DROP TABLE outbox");
            tx.commit();
        }
    }
    return db;
}

}  // namespace certconn::host
