// Per-job key material kept until the job's result reaches the tenant, so a job re-run after a
// crash uses the same key and CSR — and, with the CA's idempotent issuance by request id, gets
// the same certificate instead of a second one.
//
// Where it lives: certconn::store (certconn/sql.hpp). Single machine: the SQLite file
// <state_dir>/journal.db as before (WAL, synchronous=FULL, secure_delete, file mode 0600, WAL
// truncated after deletions), keys as plain PEM in a file only the connector reads. A fleet
// (shared [store]): table `journal` of PostgreSQL schema `pkcs`, so an instance re-running a job
// whose instance died reuses that instance's key; the key PEM is stored there as encrypted
// PKCS#8 (AES-256-CBC, PBKDF2) under the passphrase of `[pkcs] shared_key_file`, which every
// instance holds — the database never sees a job's key in the clear.
#pragma once

#include <certconn/secret.hpp>
#include <certconn/sql.hpp>

#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace certconn::sdk {
class Host;
}

namespace certconn::pkcs {

struct JournalEntry {
    sdk::Secret key_pem;  // the job's private key, plain PEM (wiped when the entry goes)
    std::string csr_pem;
};

class KeyJournal {
public:
    /// The store of `host`: sql::Options::for_plugin(host, "pkcs", "journal.db") with
    /// secure_delete.
    static sql::Options options_for(const sdk::Host& host);
    /// A SQLite file (single machine).
    explicit KeyJournal(const std::filesystem::path& file);
    /// The store behind `options`. A shared store needs `passphrase` (std::invalid_argument
    /// without it): keys are stored encrypted under it. SQLite is opened and migrated at once (a
    /// broken file is an init error); PostgreSQL at first use (it may be down at start).
    explicit KeyJournal(const sql::Options& options, sdk::Secret passphrase = {});
    bool shared() const { return db_.shared(); }
    /// "sqlite <file>" or "postgresql ... schema=pkcs" (no password).
    std::string where() const { return db_.describe(); }

    /// The entry of `job_id`. Throws sql::Error (transient ones: try again later), or
    /// crypto::CryptoError when a shared entry does not decrypt with our passphrase.
    std::optional<JournalEntry> find(const std::string& job_id);
    /// Stores the entry unless the job has one (first writer wins, across instances too);
    /// returns the stored one.
    JournalEntry put(const std::string& job_id, const JournalEntry& entry);
    /// Forgets a delivered job. Deletions are batched into one transaction: a deleted entry that
    /// a power loss resurrects is never read again and is purged by age.
    void remove(const std::string& job_id);
    /// Writes the batched deletions now (also done when the batch fills, and at destruction).
    /// Throws sql::Error; the batch is kept for the next flush then.
    void flush();
    ~KeyJournal();

private:
    sql::Database& ready();
    void flush_locked();
    std::optional<JournalEntry> load(const std::string& job_id);
    std::vector<std::string> removed_;
    std::mutex mutex_;
    sql::Database db_;
    sdk::Secret passphrase_;
    bool migrated_ = false;
};

}  // namespace certconn::pkcs
