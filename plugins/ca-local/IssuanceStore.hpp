// The local CA's record of every certificate it issued: serials are unique, and a request id
// maps to at most one certificate. Beside it: the CRL number and the latest CRL, the CA
// hierarchy when a fleet shares it, and each instance's OCSP responder certificate.
//
// On one machine it is the SQLite file it always was (<state_dir>/<ca>/issued.db: WAL,
// synchronous=FULL; migration 1 is the original schema, so existing files keep working). With a
// shared [store] it is PostgreSQL schema `ca_local`, one for every ca-local CA, rows keyed by
// the CA's name: every instance of the fleet issues, revokes and answers from the same record.
#pragma once

#include <certconn/sql.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace certconn::ca_local {

struct IssuedCertificate {
    std::string serial;  // upper-case hex
    std::string request_id;
    std::string subject;
    std::string sans;  // JSON array
    std::string not_before, not_after;
    std::string profile;
    std::string requester;
    std::string status;                         // valid | revoked
    std::string revocation_reason, revoked_at;  // RFC 5280 reason name; ISO 8601 UTC
    std::string certificate_pem;
};

/// The latest CRL a CA published through the store (every instance serves this one).
struct StoredCrl {
    std::int64_t number = 0;
    std::int64_t this_update = 0, next_update = 0;  // seconds since the epoch
    std::int64_t revision = 0;                      // the record's revocation revision the CRL was made from
    std::string der;                                // empty when the caller already holds this number
};

/// A CA hierarchy created once for the fleet: certificates, and keys as encrypted PKCS#8 PEM.
struct SharedHierarchy {
    std::string root_pem, issuing_pem;
    std::string root_key_pem, issuing_key_pem;  // "ENCRYPTED PRIVATE KEY"
    std::string root_crl_der;                   // may be empty
    std::string created_by;
};

class IssuanceStore {
public:
    /// `ca_name` keys the rows in a shared store; `instance_id` holds leases ("crl:<ca>").
    IssuanceStore(const sql::Options& options, const std::string& ca_name, std::string instance_id);
    /// A SQLite file (tests, benchmarks).
    explicit IssuanceStore(const std::filesystem::path& file);

    bool shared() const { return shared_; }
    /// "postgresql host=... schema=ca_local" or "sqlite /path": no password.
    std::string where() const { return where_; }

    std::optional<IssuedCertificate> find_by_request(const std::string& request_id);
    std::optional<IssuedCertificate> find_by_serial(const std::string& serial);
    struct Status {
        std::string status;  // valid | revoked
        std::string revocation_reason, revoked_at;
    };
    /// Only what OCSP needs, without the certificate itself.
    std::optional<Status> revocation_status(const std::string& serial);
    /// Inserts; returns false when the request id (or the serial) already has a certificate.
    bool insert(const IssuedCertificate& cert);
    /// Marks each (serial, reason) revoked at `when`, in one transaction; per entry, false
    /// when it already was revoked (a duplicate within the batch counts once). Bumps the
    /// revocation revision, so the CRL leader on any instance knows to publish a new CRL.
    std::vector<bool> revoke_many(const std::vector<std::pair<std::string, std::string>>& serial_reason, const std::string& when);
    std::int64_t count();
    std::int64_t revoked_count();

    /// Every revoked certificate: (serial, revoked_at, reason name).
    void for_each_revoked(const std::function<void(const std::string&, const std::string&, const std::string&)>& fn);
    /// The next CRL number, persisted (monotonic across restarts), without a lease.
    std::int64_t next_crl_number();
    /// The next CRL number, taken in the transaction that checks that the lease "crl:<ca>" is
    /// still held at `epoch`; nullopt (and no number used) when it is not.
    std::optional<std::int64_t> next_crl_number(std::int64_t epoch);
    /// Inserts many revoked entries at once (benchmarks and migrations); one transaction.
    void insert_revoked_bulk(const std::vector<IssuedCertificate>& certs);
    /// The revocation revision: grows with every transaction that revoked something.
    std::int64_t revision();

    // --- the CRL duty (a shared store: one leader per CA) ---
    /// Takes or renews the lease "crl:<ca>" for `ttl`; the epoch held, or nullopt.
    std::optional<std::int64_t> acquire_crl_lease(std::chrono::seconds ttl);
    void release_crl_lease();
    /// Stores `crl` as the CA's latest, when the lease is still held at `epoch` (if given) and
    /// no CRL with a number >= crl.number is stored; false when refused.
    bool store_crl(std::optional<std::int64_t> epoch, const StoredCrl& crl);
    /// The latest stored CRL; its DER only when its number differs from `have_number`.
    std::optional<StoredCrl> latest_crl(std::int64_t have_number = -1);

    // --- the hierarchy created once per fleet ---
    std::optional<SharedHierarchy> load_hierarchy();
    /// INSERT ... ON CONFLICT DO NOTHING: false when another instance stored one first.
    bool insert_hierarchy(const SharedHierarchy& h);
    void store_root_crl(const std::string& der);

    /// Records this instance's OCSP responder certificate (what `status` and operators see).
    void record_responder(const std::string& serial, const std::string& not_after, const std::string& certificate_pem);
    struct Responder {
        std::string instance_id, serial, not_after;
    };
    std::vector<Responder> responders();

    /// Upper-case hex without leading zero bytes (OpenSSL's BN_bn2hex form, as stored);
    /// throws std::invalid_argument when `hex` is not a positive hexadecimal number.
    static std::string canonical_serial(std::string_view hex);

private:
    IssuedCertificate row(const sql::Statement& s);
    void bump_revision();  // caller holds mutex_ inside a transaction

    std::string key_;  // the CA's name in a shared store, "" in its own SQLite file
    std::string instance_id_;
    bool shared_ = false;
    std::string where_;
    std::mutex mutex_;
    sql::Database db_;
    std::unique_ptr<sql::LeaderLease> crl_lease_;  // on db_; used under mutex_
    // CRL generation reads every revoked entry (a million on a big CA) through its own
    // connection: issuance goes on meanwhile.
    std::mutex reader_mutex_;
    std::unique_ptr<sql::Database> reader_;
};

}  // namespace certconn::ca_local
