#include "Store.hpp"

namespace certconn::scep {

namespace {

// SQLite: exactly the statements of the versions before certconn::store.
constexpr const char* kPendingV1 = R"(CREATE TABLE IF NOT EXISTS pending (
        transaction_id TEXT PRIMARY KEY,
        profile TEXT NOT NULL,
        csr_pem TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now')),
        decided_at TEXT))";
constexpr const char* kIssuedV1 = R"(CREATE TABLE IF NOT EXISTS issued (
        ca TEXT NOT NULL,
        serial TEXT NOT NULL,
        profile TEXT NOT NULL,
        original_serial TEXT NOT NULL,
        renewal_count INTEGER NOT NULL,
        transaction_id TEXT NOT NULL,
        request_id TEXT NOT NULL,
        not_after TEXT NOT NULL,
        issued_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now')),
        PRIMARY KEY (ca, serial));
    CREATE INDEX IF NOT EXISTS issued_by_original ON issued(ca, original_serial);
    CREATE INDEX IF NOT EXISTS issued_by_request ON issued(ca, request_id))";

#define CC_PG_ISO_NOW "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
// PostgreSQL: the same tables in its dialect, both in the one schema.
constexpr const char* kPostgresV1 = R"(CREATE TABLE IF NOT EXISTS pending (
        transaction_id TEXT PRIMARY KEY,
        profile TEXT NOT NULL,
        csr_pem TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        received_at TEXT NOT NULL DEFAULT )" CC_PG_ISO_NOW R"(,
        decided_at TEXT);
    CREATE TABLE IF NOT EXISTS issued (
        ca TEXT NOT NULL,
        serial TEXT NOT NULL,
        profile TEXT NOT NULL,
        original_serial TEXT NOT NULL,
        renewal_count BIGINT NOT NULL,
        transaction_id TEXT NOT NULL,
        request_id TEXT NOT NULL,
        not_after TEXT NOT NULL,
        issued_at TEXT NOT NULL DEFAULT )" CC_PG_ISO_NOW R"(,
        PRIMARY KEY (ca, serial));
    CREATE INDEX IF NOT EXISTS issued_by_original ON issued(ca, original_serial);
    CREATE INDEX IF NOT EXISTS issued_by_request ON issued(ca, request_id))";
#undef CC_PG_ISO_NOW

// Version 2: the transaction ledger (one row per SCEP transaction that reached the CA: who is
// issuing it, then its certificate) and the RA identity shared by a fleet. Same SQL on both.
constexpr const char* kV2 = R"(CREATE TABLE IF NOT EXISTS transactions (
        profile TEXT NOT NULL,
        transaction_id TEXT NOT NULL,
        request_id TEXT NOT NULL,
        status TEXT NOT NULL,
        owner TEXT NOT NULL,
        attempt BIGINT NOT NULL DEFAULT 1,
        claimed_at BIGINT NOT NULL,
        certificate_pem TEXT,
        serial TEXT,
        completed_at BIGINT,
        PRIMARY KEY (profile, transaction_id));
    CREATE TABLE IF NOT EXISTS ra (
        profile TEXT PRIMARY KEY,
        key_pem TEXT NOT NULL,
        csr_pem TEXT NOT NULL,
        certificate_pem TEXT,
        chain_pem TEXT,
        created_by TEXT NOT NULL,
        created_at BIGINT NOT NULL))";

const sql::Migration kPendingFile[] = {{1, kPendingV1}, {2, kV2}};
const sql::Migration kIssuedFile[] = {{1, kIssuedV1}};
const sql::Migration kPostgres[] = {{1, kPostgresV1}, {2, kV2}};

}  // namespace

ConnectionPtr open_store(const sql::Options& options, StoreFile file) {
    sql::Database db = sql::Database::open(options);
    std::span<const sql::Migration> m = db.shared()                  ? std::span<const sql::Migration>(kPostgres)
                                        : file == StoreFile::pending ? std::span<const sql::Migration>(kPendingFile)
                                                                     : std::span<const sql::Migration>(kIssuedFile);
    auto c = std::make_shared<Connection>(std::move(db), m);
    if (!c->db.shared()) {
        std::lock_guard lock(c->mutex);
        c->ready();
    }
    return c;
}

Connections open_stores(const sql::Options& pending_options, const sql::Options& issued_options) {
    Connections c;
    c.pending = open_store(pending_options, StoreFile::pending);
    c.issued = c.pending->db.shared() ? c.pending : open_store(issued_options, StoreFile::issued);
    return c;
}

std::string iso_now_sql(const sql::Database& db) {
    return db.shared() ? "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
                       : "strftime('%Y-%m-%dT%H:%M:%SZ','now')";
}

}  // namespace certconn::scep
