// The durable tenant outbox: everything a tenant must hear — job results and the notifications
// features hand the host (tenant_notify) — is written here before anything is sent, and stays
// until the tenant takes it. Entries are delivered per tenant in the order they were stored. The
// first result stored for a job is the only one: a re-run after a crash finds it and reports it
// again; a notification stored twice under one key is stored once.
//
// One machine: <state_dir>/outbox.db (SQLite, WAL). A fleet: table host.deliveries on the shared
// PostgreSQL store. Every instance stores; only the holder of the leader lease "outbox:<tenant>"
// delivers that tenant's entries (lead()), so what an instance that died had stored is delivered
// by another, still in order.
#pragma once

#include <certconn/sql.hpp>

#include <chrono>

#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace certconn::host {

struct OutboxEntry {
    enum class Kind { result, notification };
    std::int64_t seq = 0;
    std::string tenant;  // "" = the default tenant (results stored before several tenants existed)
    Kind kind = Kind::result;
    std::string key;        // result: the job id; notification: its idempotency key
    std::string feature;    // result: the job's feature; notification: the plugin that handed it over
    std::string operation;  // notification: the tenant call
    std::string body;       // result JSON, or the call's request JSON
    std::string events;     // notification: {"delivered","retry","refused","done","done_message","request_id"}
    std::int64_t attempts = 0;
    std::int64_t next_attempt_ms = 0;  // database time
    bool due = true;                   // next_attempt_ms has passed (by the database's clock)

    const std::string& job_id() const { return key; }
};

/// What the outbox holds for one tenant, for status.
struct OutboxState {
    std::int64_t pending = 0;
    std::int64_t refused = 0;
    std::int64_t oldest_age_seconds = 0;  // of the oldest pending entry
    std::string last_error;
};

class OutboxStore {
public:
    /// `options`: sql::Options::from_store_config(<store_config>, state_dir, "host", "outbox.db").
    /// `instance_id` names this instance as a lease holder. Throws sql::Error (kind schema when the
    /// store is newer than this build).
    OutboxStore(const sql::Options& options, std::string instance_id);
    /// SQLite file `file` (one machine).
    explicit OutboxStore(const std::filesystem::path& file);

    bool shared();
    std::string describe();
    /// Whether this instance may deliver `tenant`'s entries now: always on one machine; on a
    /// shared store when it holds (takes or renews) the lease "outbox:<tenant>" for `ttl`.
    /// Returns the lease epoch (0 on one machine), or nullopt when another instance holds it.
    std::optional<std::int64_t> lead(const std::string& tenant, std::chrono::seconds ttl);
    /// Gives the delivery lease of `tenant` up (at stop), so another instance takes it at once.
    void resign(const std::string& tenant);
    /// The current holder of "outbox:<tenant>" (shared stores only).
    std::optional<sql::LeaderLease::Holder> leader(const std::string& tenant);

    /// Stores a job's result unless one is stored already; returns the stored one.
    std::string put(const std::string& tenant, const std::string& job_id, const std::string& feature, const std::string& result);
    /// The pending (not refused) result of `job_id` for `tenant` (legacy rows too when `is_default`).
    std::optional<OutboxEntry> find(const std::string& tenant, bool is_default, const std::string& job_id);
    /// Stores a notification; a second one with the same tenant and key is ignored. Returns
    /// false when it was already stored.
    bool notify(const std::string& tenant, const std::string& key, const std::string& plugin, const std::string& operation,
                const std::string& body, const std::string& events);
    /// The pending entries of `tenant` (or of the default tenant too, when `is_default`), in
    /// the order stored, up to `limit`. Includes entries not yet due: the caller keeps order.
    std::vector<OutboxEntry> pending(const std::string& tenant, bool is_default, std::size_t limit);
    /// Gives the rows stored before several tenants existed (tenant "") to `tenant`, once;
    /// returns how many remain unassigned (a row whose key `tenant` already has).
    std::int64_t adopt_legacy(const std::string& tenant);
    /// Makes refused entries pending again (all tenants when `tenant` is ""); returns how many.
    std::int64_t retry_refused(const std::string& tenant);
    /// Every tenant name the outbox holds entries for, with their count (configured or not).
    std::map<std::string, std::int64_t> tenants_with_entries();
    void remove(std::int64_t seq);
    /// Replaces the body of a pending result (a new claim of the job delivers it under its claim).
    void restamp(std::int64_t seq, const std::string& body);
    /// Not before `wait_ms` from the database's now.
    void defer(std::int64_t seq, std::int64_t wait_ms, const std::string& error);
    /// The tenant refused it for good: kept for inspection, never sent again.
    void refuse(std::int64_t seq, const std::string& error);
    /// refuse() only while the entry still holds `body` (the one delivered): false when a newer
    /// claim restamped it meanwhile (it is then delivered again, not refused).
    bool refuse_if_unchanged(std::int64_t seq, const std::string& body, const std::string& error);
    std::int64_t size();
    OutboxState state(const std::string& tenant, bool is_default);
    /// Every tenant's pending / refused count and oldest pending age (fleet status).
    std::map<std::string, OutboxState> backlog();

private:
    std::mutex mutex_;
    sql::Database db_;
    std::string instance_id_;
};

}  // namespace certconn::host
