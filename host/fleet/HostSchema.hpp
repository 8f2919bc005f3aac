// The host's own store: schema "host" on a shared PostgreSQL store, <state_dir>/outbox.db on
// one machine. The outbox, the leader leases of its delivery and the instance registry live
// there, under one list of migrations (a schema has one version, so every host table is in it).
#pragma once

#include <certconn/sql.hpp>

#include <span>

namespace certconn::host {

/// 1: the outbox as it was before versioned migrations (idempotent on an old file);
/// 2: certconn_leases; 3: the instance registry.
std::span<const sql::Migration> host_migrations();

/// Opens the host store and brings its schema up to date (throws sql::Error, kind schema when the
/// store is newer than this build). SQLite: moves the outbox table of single-tenant versions over.
sql::Database open_host_store(const sql::Options& options);

}  // namespace certconn::host
