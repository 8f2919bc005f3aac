// The revocation requests downloaded from Intune, kept in SQLite in the plugin's state directory
// from the moment they arrive until Intune has taken their result: nothing Intune hands out is
// lost when the connector stops between the download and the upload.
//
// A request's life: queued (stored, no job yet) -> leased (handed out as a revoke job, with a
// claim number as fencing token and a lease) -> done (result recorded) -> uploaded. A lease that
// expires puts the job back in reach of the next claim, with a higher claim number.
#pragma once

#include "Protocol.hpp"

#include <certconn/sqlite.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace certconn::intune {

struct StoredRequest {
    std::string job_id;
    std::string request_context;
    std::string serial_number;
    std::string issuer_name;
    std::string ca_configuration;
    std::string ca;      ///< our CA; empty when none is configured for ca_configuration
    std::string reason;  ///< RFC 5280 name
    std::int64_t claim = 0;
};

struct PendingUpload {
    std::string job_id;
    std::string request_context;
    std::string result_json;
};

class RevocationStore {
public:
    using Clock = std::function<std::int64_t()>;  ///< milliseconds since the epoch
    explicit RevocationStore(const std::filesystem::path& file, Clock clock = {});

    /// Stores every downloaded request durably (one transaction) before any is handed out.
    /// `ca_for` maps caConfiguration to our CA ("" = none: the request is completed at once as
    /// failed 4002, waiting for upload). A request already known (Intune handed it out again)
    /// is left as it is. Returns how many were new (their requestContexts in `added` if given).
    std::size_t add(const std::vector<RevocationRequest>& requests, const std::function<std::string(const std::string&)>& ca_for,
                    const std::string& reason, std::vector<std::string>* added = nullptr);

    /// Up to `max` requests that are queued or whose lease expired, now leased for
    /// `lease_seconds` under a new claim number.
    std::vector<StoredRequest> claim(std::size_t max, std::uint32_t lease_seconds);

    /// Extends the lease of `job_id` held by `claim`. NOT_FOUND: unknown job; CONFLICT: that
    /// claim no longer holds it (lease expired, claimed again, or completed).
    void renew(const std::string& job_id, std::int64_t claim, std::uint32_t lease_seconds);

    /// Records the result (the first one stands). Returns false when the job already had one.
    /// NOT_FOUND for an unknown job id.
    bool complete(const std::string& job_id, const std::string& result_json);

    /// Whether `job_id`'s result has been uploaded (NOT_FOUND when unknown).
    bool uploaded(const std::string& job_id);

    /// Completed results not yet uploaded, oldest first.
    std::vector<PendingUpload> pending_uploads(std::size_t max);
    void mark_uploaded(const std::vector<std::string>& request_contexts);

    /// When the next download is due (ms since the epoch), 0 when never scheduled.
    std::int64_t next_download();
    void set_next_download(std::int64_t when_ms);

    struct Counts {
        std::int64_t queued = 0, leased = 0, done = 0, uploaded = 0;
    };
    Counts counts();

    /// Drops uploaded requests older than `days` (Intune will not hand them out again).
    void purge_uploaded(int days);

private:
    std::int64_t now() const;
    std::mutex mutex_;
    sqlite::Database db_;
    Clock clock_;
};

}  // namespace certconn::intune
