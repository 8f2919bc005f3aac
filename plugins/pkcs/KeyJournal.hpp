// Per-job key material kept until the job's result reaches the tenant, so a job re-run after a
// crash uses the same key and CSR — and, with the CA's idempotent issuance by request id, gets
// the same certificate instead of a second one. SQLite (WAL, synchronous=FULL), file mode 0600.
#pragma once

#include <certconn/secret.hpp>
#include <certconn/sqlite.hpp>

#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace certconn::pkcs {

struct JournalEntry {
    sdk::Secret key_pem;  // the job's private key, PEM (wiped when the entry goes)
    std::string csr_pem;
};

class KeyJournal {
public:
    explicit KeyJournal(const std::filesystem::path& file);
    std::optional<JournalEntry> find(const std::string& job_id);
    /// Stores the entry unless the job has one; returns the stored one.
    JournalEntry put(const std::string& job_id, const JournalEntry& entry);
    /// Forgets a delivered job. Deletions are batched into one transaction: a deleted entry that
    /// a power loss resurrects is never read again and is purged by age.
    void remove(const std::string& job_id);
    /// Writes the batched deletions now (also done when the batch fills, and at destruction).
    void flush();
    ~KeyJournal();

private:
    void flush_locked();
    std::vector<std::string> removed_;
    std::mutex mutex_;
    sqlite::Database db_;
};

}  // namespace certconn::pkcs
