// Revocation as relying parties see it: the CRL (RFC 5280 §5) and the OCSP responder
// (RFC 6960) of one local CA, both produced from its IssuanceStore.
#pragma once

#include "IssuanceStore.hpp"

#include <certconn/crypto.hpp>
#include <certconn/sdk.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

namespace certconn::ca_local {

/// RFC 5280 CRLReason code of "keyCompromise" (also "key_compromise", "KeyCompromise");
/// throws std::invalid_argument listing the valid names.
int reason_code(std::string_view name);
/// The RFC 5280 name of a reason code ("keyCompromise").
const char* reason_name(int code);

struct RevocationSettings {
    std::string ca_name;
    std::chrono::seconds crl_validity{48 * 3600};  // nextUpdate - thisUpdate
    std::chrono::seconds crl_refresh{24 * 3600};   // a CRL older than this is regenerated
    std::chrono::seconds ocsp_validity{3600};      // nextUpdate of OCSP answers
    std::string responder_algorithm = "p256";      // key of the delegated OCSP responder
    // A shared store (fleet): how often the CRL leader renews its lease "crl:<ca>" (ttl 3x this)
    // and looks for revocations made through any instance; the other instances try to take the
    // lease as often, so a dead leader is replaced within 3x this.
    std::chrono::seconds leader_period{30};
};

class RevocationService {
public:
    /// `issuing_cert`/`issuing_key` outlive the service. `directory` holds crl.der and the
    /// responder's certificate and key. `host` may be null (benchmarks): no events then.
    RevocationService(RevocationSettings settings, X509* issuing_cert, EVP_PKEY* issuing_key, IssuanceStore& store,
                      std::filesystem::path directory, sdk::Host* host, bool background = true);
    ~RevocationService();
    RevocationService(const RevocationService&) = delete;
    RevocationService& operator=(const RevocationService&) = delete;

    /// The current CRL (DER). With a shared store: the latest CRL the leader stored (every
    /// instance publishes the same one); regenerated here only when this instance leads and
    /// something changed, or when the stored one is missing or past its nextUpdate.
    /// On one machine: regenerated first when a certificate was revoked since the last
    /// one was made, or when the last one is due for refresh — unless making one takes over a
    /// second: then the previous CRL (within its nextUpdate) is answered meanwhile.
    std::shared_ptr<const std::string> crl();
    /// A certificate was revoked: the next crl() is a new one, and the refresher makes it soon.
    void changed();
    /// Builds, signs and stores a new CRL now. On failure the previous CRL stays and the next
    /// fetch (or the refresher, after a minute) tries again; event 402.
    std::shared_ptr<const std::string> regenerate();
    /// Answers a DER OCSPRequest with a DER OCSPResponse. Bad input gets a malformedRequest
    /// or unauthorized response, never an exception.
    std::string ocsp(std::string_view request_der);

    /// One round of the CRL duty (a shared store; the refresher calls it every leader_period):
    /// takes or renews the lease "crl:<ca>" (events 820/821), and when leading publishes a new
    /// CRL if a revocation happened through any instance or the stored one is due. Returns
    /// whether this instance leads.
    bool lead();
    /// Gives the CRL duty up at once (the lease is released; event 821 when it was held).
    void step_down();
    /// The number of the CRL this instance serves (0 before the first).
    std::int64_t crl_number();

    /// Hot-swap hand-over (abi.h quiesce): stops and joins the background refresher, so only the
    /// next generation refreshes on a schedule; crl() still answers, regenerating on demand (and
    /// then writing crl.der, atomically, as the next generation may too). pause() and resume()
    /// are the host's control thread's, never concurrent with each other.
    void pause();
    /// Restarts the refresher after pause() (the hand-over was abandoned).
    void resume();

private:
    // Builds, signs, stores and caches a CRL; with `epoch`, only while the lease is held at it
    // (null when the lease was lost or a newer CRL is stored: the stored one is then served).
    std::shared_ptr<const std::string> publish(std::optional<std::int64_t> epoch);
    std::shared_ptr<const std::string> regenerate(std::optional<std::int64_t> epoch);
    std::shared_ptr<const std::string> shared_crl();
    void lead_locked();   // caller holds generate_mutex_
    void adopt_latest();  // the stored CRL, when newer than the cached one; caller holds generate_mutex_
    void leadership(std::optional<std::int64_t> epoch);  // events 820/821 on a change
    void refresher(const std::stop_token& stop);
    void ensure_responder();  // issues or renews the delegated responder certificate
    void record_responder(X509* cert);
    void event(uint32_t id, cc_log_level level, const std::string& message, const std::string& fields = {}) const;

    RevocationSettings settings_;
    X509* issuing_cert_;
    EVP_PKEY* issuing_key_;
    IssuanceStore& store_;
    std::filesystem::path directory_;
    sdk::Host* host_;

    std::mutex generate_mutex_;  // one CRL generation at a time
    std::mutex mutex_;           // guards the fields below
    std::condition_variable_any wake_;
    bool dirty_ = true;
    using Clock = std::chrono::system_clock;
    std::chrono::system_clock::time_point refresh_due_{};
    std::chrono::system_clock::time_point current_next_update_{};
    std::chrono::steady_clock::duration last_duration_{};  // how long the last CRL took to make
    std::shared_ptr<const std::string> current_;
    std::int64_t current_number_ = 0;
    std::int64_t current_revision_ = -1;  // the record's revision the cached CRL reflects
    Clock::time_point current_this_update_{};
    std::optional<std::int64_t> held_epoch_;  // the CRL lease as this instance last saw it

    std::mutex responder_mutex_;
    crypto::Cert responder_cert_;
    crypto::PKey responder_key_;
    std::chrono::system_clock::time_point responder_renew_at_{};

    bool paused_ = false;                  // the control thread's: pause() and resume() are never concurrent
    std::atomic<bool> background_{false};  // the refresher runs (read by crl() on any thread)
    std::jthread thread_;                  // last: stopped and joined before the members above go
};

}  // namespace certconn::ca_local
