// Revocation as relying parties see it: the CRL (RFC 5280 §5) and the OCSP responder
// (RFC 6960) of one local CA, both produced from its IssuanceStore.
#pragma once

#include "IssuanceStore.hpp"

#include <certconn/crypto.hpp>
#include <certconn/sdk.hpp>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <memory>
#include <mutex>
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

    /// The current CRL (DER). Regenerated first when a certificate was revoked since the last
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

    /// Hot-swap hand-over (abi.h quiesce): stops and joins the background refresher, so only the
    /// next generation writes crl.der; crl() still answers (and regenerates on demand).
    void pause();
    /// Restarts the refresher after pause() (the hand-over was abandoned).
    void resume();

private:
    std::shared_ptr<const std::string> publish();  // builds, signs, stores and caches a CRL
    void refresher(const std::stop_token& stop);
    void ensure_responder();  // issues or renews the delegated responder certificate
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
    std::chrono::system_clock::time_point refresh_due_{};
    std::chrono::system_clock::time_point current_next_update_{};
    std::chrono::steady_clock::duration last_duration_{};  // how long the last CRL took to make
    std::shared_ptr<const std::string> current_;

    std::mutex responder_mutex_;
    crypto::Cert responder_cert_;
    crypto::PKey responder_key_;
    std::chrono::system_clock::time_point responder_renew_at_{};

    bool paused_ = false;  // the control thread's: pause() and resume() are never concurrent
    std::jthread thread_;  // last: stopped and joined before the members above go
};

}  // namespace certconn::ca_local
