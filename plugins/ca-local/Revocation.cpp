#include "Revocation.hpp"

#include <boost/json.hpp>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/x509v3.h>

#include <array>
#include <cctype>

namespace certconn::ca_local {

namespace json = boost::json;
using Clock = std::chrono::system_clock;

namespace {

// RFC 5280 §5.3.1; 7 is unused.
constexpr std::array<const char*, 11> kReasons = {
    "unspecified",     "keyCompromise", "cACompromise",  "affiliationChanged", "superseded",  "cessationOfOperation",
    "certificateHold", nullptr,         "removeFromCRL", "privilegeWithdrawn", "aACompromise"};

std::string folded(std::string_view s) {  // "key_compromise", "KeyCompromise" -> "keycompromise"
    std::string out;
    for (char c : s)
        if (c != '_' && c != '-') out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

ASN1_INTEGER* serial_integer(const std::string& hex) {
    BIGNUM* bn = nullptr;
    if (!BN_hex2bn(&bn, hex.c_str())) crypto::throw_openssl("serial " + hex);
    ASN1_INTEGER* out = BN_to_ASN1_INTEGER(bn, nullptr);
    BN_free(bn);
    if (!out) crypto::throw_openssl("serial " + hex);
    return out;
}

// "2026-11-25T10:00:00Z" -> an ASN1_TIME in RFC 5280 form (UTCTime before 2050).
ASN1_TIME* asn1_time(const std::string& iso) {
    std::string compact;
    for (char c : iso)
        if (std::isdigit(static_cast<unsigned char>(c))) compact += c;
    compact += 'Z';
    ASN1_TIME* t = ASN1_TIME_new();
    if (!t || compact.size() != 15 || !ASN1_TIME_set_string_X509(t, compact.c_str())) {
        ASN1_TIME_free(t);
        throw std::invalid_argument("revocation time '" + iso + "' is not ISO 8601 UTC");
    }
    return t;
}

std::string ocsp_response_der(int status, OCSP_BASICRESP* basic) {
    OCSP_RESPONSE* response = OCSP_response_create(status, basic);
    if (!response) crypto::throw_openssl("OCSP response");
    unsigned char* der = nullptr;
    const int len = i2d_OCSP_RESPONSE(response, &der);
    OCSP_RESPONSE_free(response);
    if (len <= 0) crypto::throw_openssl("encoding the OCSP response");
    std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
    OPENSSL_free(der);
    return out;
}

constexpr int kMaxOcspRequests = 32;  // certificates asked about in one OCSP request

}  // namespace

int reason_code(std::string_view name) {
    const std::string wanted = folded(name);
    for (std::size_t i = 0; i < kReasons.size(); ++i)
        if (kReasons[i] && folded(kReasons[i]) == wanted) return static_cast<int>(i);
    std::string valid;
    for (const char* r : kReasons)
        if (r) valid += (valid.empty() ? "" : ", ") + std::string(r);
    throw std::invalid_argument("unknown revocation reason '" + std::string(name.substr(0, 64)) + "' (expected one of: " + valid +
                                ")");
}

const char* reason_name(int code) {
    return code >= 0 && code < static_cast<int>(kReasons.size()) && kReasons[code] ? kReasons[code] : "unspecified";
}

RevocationService::RevocationService(RevocationSettings settings, X509* issuing_cert, EVP_PKEY* issuing_key, IssuanceStore& store,
                                     std::filesystem::path directory, sdk::Host* host, bool background)
    : settings_(std::move(settings)),
      issuing_cert_(issuing_cert),
      issuing_key_(issuing_key),
      store_(store),
      directory_(std::move(directory)),
      host_(host) {
    if (background) thread_ = std::jthread([this](const std::stop_token& stop) { refresher(stop); });
    background_.store(background);
}

void RevocationService::pause() {
    if (!thread_.joinable()) return;
    background_.store(false);
    thread_.request_stop();
    thread_.join();
    thread_ = std::jthread();
    paused_ = true;
}

void RevocationService::resume() {
    if (!paused_) return;
    paused_ = false;
    thread_ = std::jthread([this](const std::stop_token& stop) { refresher(stop); });
    background_.store(true);
}

RevocationService::~RevocationService() {
    if (thread_.joinable()) {
        thread_.request_stop();
        thread_.join();
    }
    // Leaving (not a hot-swap hand-over, where the next generation of this instance, the same
    // holder, renews the lease): another instance may take the CRL duty at once.
    if (store_.shared() && !paused_) {
        try {
            step_down();
        } catch (const std::exception&) {
            // The lease lapses by itself within its ttl.
        }
    }
}

void RevocationService::leadership(std::optional<std::int64_t> epoch) {
    // Caller holds generate_mutex_.
    std::optional<std::int64_t> before;
    {
        std::lock_guard lock(mutex_);
        before = held_epoch_;
        held_epoch_ = epoch;
    }
    const std::string duty = "crl:" + settings_.ca_name;
    if (before && before != epoch)
        event(CC_EV_LeadershipLost, CC_LEVEL_WARNING,
              "lost the CRL duty (lease " + duty + ", epoch " + std::to_string(*before) + ")" +
                  (epoch ? "; took it again at epoch " + std::to_string(*epoch) : ""),
              json::serialize(json::object{{"duty", duty}, {"ca", settings_.ca_name}, {"epoch", *before}}));
    if (epoch && before != epoch)
        event(CC_EV_LeadershipAcquired, CC_LEVEL_INFO,
              "leads the CRL duty (lease " + duty + ", epoch " + std::to_string(*epoch) + ")",
              json::serialize(json::object{{"duty", duty}, {"ca", settings_.ca_name}, {"epoch", *epoch}}));
}

void RevocationService::step_down() {
    std::lock_guard generating(generate_mutex_);
    bool held;
    {
        std::lock_guard lock(mutex_);
        held = held_epoch_.has_value();
    }
    if (!held) return;
    store_.release_crl_lease();
    leadership(std::nullopt);
}

std::int64_t RevocationService::crl_number() {
    std::lock_guard lock(mutex_);
    return current_number_;
}

bool RevocationService::lead() {
    std::lock_guard generating(generate_mutex_);
    lead_locked();
    std::lock_guard lock(mutex_);
    return held_epoch_.has_value();
}

void RevocationService::lead_locked() {
    std::optional<std::int64_t> epoch;
    try {
        epoch = store_.acquire_crl_lease(3 * settings_.leader_period);
    } catch (const std::exception&) {
        leadership(std::nullopt);  // cannot tell: another instance may take it meanwhile
        throw;
    }
    leadership(epoch);
    adopt_latest();
    if (!epoch) return;
    const std::int64_t revision = store_.revision();
    bool due;
    {
        std::lock_guard lock(mutex_);
        const auto now = Clock::now();
        due = !current_ || dirty_ || revision > current_revision_ || now >= current_this_update_ + settings_.crl_refresh ||
              now >= current_next_update_;
    }
    if (due) regenerate(epoch);
}

void RevocationService::adopt_latest() {
    std::int64_t have;
    {
        std::lock_guard lock(mutex_);
        have = current_ ? current_number_ : -1;
    }
    const auto latest = store_.latest_crl(have);
    if (!latest || latest->der.empty() || latest->number <= have) return;
    auto der = std::make_shared<const std::string>(latest->der);
    try {
        crypto::write_file_atomic(directory_ / "crl.der", *der, 0644);
    } catch (const std::exception&) {
        // The CRL is served from memory; the file is a convenience copy.
    }
    std::lock_guard lock(mutex_);
    current_ = std::move(der);
    current_number_ = latest->number;
    current_revision_ = latest->revision;
    current_this_update_ = Clock::from_time_t(static_cast<time_t>(latest->this_update));
    current_next_update_ = Clock::from_time_t(static_cast<time_t>(latest->next_update));
    refresh_due_ = current_this_update_ + settings_.crl_refresh;
}

std::shared_ptr<const std::string> RevocationService::shared_crl() {
    std::unique_lock generating(generate_mutex_);
    try {
        adopt_latest();
    } catch (const std::exception& e) {
        std::lock_guard lock(mutex_);
        // The store is away: the CRL in hand is still good until its nextUpdate.
        if (current_ && Clock::now() < current_next_update_) return current_;
        throw sdk::Error(CC_ERR_UNAVAILABLE, "CA '" + settings_.ca_name + "': the shared issuance record (" + store_.where() +
                                                 ") cannot be read and no valid CRL is in hand: " + e.what());
    }
    bool leading, stale, big;
    {
        std::lock_guard lock(mutex_);
        const auto now = Clock::now();
        leading = held_epoch_.has_value();
        stale = !current_ || now >= current_next_update_;
        big = current_ && background_.load() && last_duration_ > std::chrono::seconds(1);
    }
    if (leading) {
        bool due;
        const std::int64_t revision = store_.revision();
        {
            std::lock_guard lock(mutex_);
            due = stale || dirty_ || revision > current_revision_ || Clock::now() >= refresh_due_;
        }
        if (due && big && !stale) {
            wake_.notify_all();  // the refresher makes it; the previous one is still valid
        } else if (due) {
            lead_locked();
        }
    } else if (stale) {
        // No CRL from a leader (none yet, or the leader is gone and its CRL expired): make one
        // here. The number still comes from the store (strictly increasing), and it is stored
        // only when no newer CRL is.
        regenerate(std::nullopt);
    }
    std::lock_guard lock(mutex_);
    if (!current_) throw sdk::Error(CC_ERR_UNAVAILABLE, "CA '" + settings_.ca_name + "' has no CRL yet");
    return current_;
}

void RevocationService::event(uint32_t id, cc_log_level level, const std::string& message, const std::string& fields) const {
    if (host_) host_->log(id, level, "CA '" + settings_.ca_name + "': " + message, {}, fields);
}

void RevocationService::changed() {
    {
        std::lock_guard lock(mutex_);
        dirty_ = true;
    }
    wake_.notify_all();
}

std::shared_ptr<const std::string> RevocationService::crl() {
    if (store_.shared()) return shared_crl();
    {
        std::lock_guard lock(mutex_);
        const auto now = Clock::now();
        if (current_ && !dirty_ && now < refresh_due_) return current_;
        // A big CRL takes seconds to make: fetches then get the previous one, still within its
        // nextUpdate, while the refresher makes the next. Small ones are made before answering.
        if (current_ && background_.load() && last_duration_ > std::chrono::seconds(1) && now < current_next_update_) {
            wake_.notify_all();
            return current_;
        }
    }
    std::lock_guard generating(generate_mutex_);
    {
        std::lock_guard lock(mutex_);
        if (current_ && !dirty_ && Clock::now() < refresh_due_) return current_;  // made while we waited
    }
    return regenerate();
}

std::shared_ptr<const std::string> RevocationService::regenerate() {
    if (store_.shared()) {
        std::lock_guard generating(generate_mutex_);
        std::optional<std::int64_t> epoch;
        {
            std::lock_guard lock(mutex_);
            epoch = held_epoch_;
        }
        regenerate(epoch);
        std::lock_guard lock(mutex_);
        return current_;
    }
    return regenerate(std::nullopt);
}

std::shared_ptr<const std::string> RevocationService::regenerate(std::optional<std::int64_t> epoch) {
    {
        std::lock_guard lock(mutex_);
        dirty_ = false;  // before reading the store: a revocation after this point marks it again
    }
    try {
        if (auto made = publish(epoch)) return made;
        // Refused: the lease was lost meanwhile, or a newer CRL is stored. Serve that one.
        {
            std::lock_guard lock(mutex_);
            dirty_ = true;
        }
        if (epoch) leadership(std::nullopt);
        adopt_latest();
        std::lock_guard lock(mutex_);
        if (!current_) throw std::runtime_error("the CRL made here was refused and none is stored");
        return current_;
    } catch (const std::exception& e) {
        {
            std::lock_guard lock(mutex_);
            dirty_ = true;  // what this CRL would have listed still has to be published
        }
        event(CC_EV_CaCrlFailed, CC_LEVEL_ERROR,
              std::string("CRL generation failed; the previous CRL is still served: ") + e.what());
        throw sdk::Error(CC_ERR_UNAVAILABLE,
                         "CA '" + settings_.ca_name + "': CRL generation failed (" + store_.where() + "): " + e.what());
    }
}

std::shared_ptr<const std::string> RevocationService::publish(std::optional<std::int64_t> epoch) {
    const auto started = std::chrono::steady_clock::now();
    // Read before the entries: a revocation committed after this is in the next CRL.
    const std::int64_t revision = store_.shared() ? store_.revision() : 0;
    std::int64_t number = 0;
    if (epoch) {
        // The number is taken in the transaction that checks the lease: strictly increasing
        // even when two instances believe they lead.
        const auto n = store_.next_crl_number(*epoch);
        if (!n) return nullptr;
        number = *n;
    } else {
        number = store_.next_crl_number();
    }
    const time_t now = Clock::to_time_t(Clock::now());

    std::unique_ptr<X509_CRL, crypto::Deleter<X509_CRL_free>> crl(X509_CRL_new());
    X509_CRL_set_version(crl.get(), X509_CRL_VERSION_2);
    X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(issuing_cert_));
    {
        ASN1_TIME* this_update = ASN1_TIME_set(nullptr, now);
        ASN1_TIME* next_update = ASN1_TIME_adj(nullptr, now, 0, static_cast<long>(settings_.crl_validity.count()));
        X509_CRL_set1_lastUpdate(crl.get(), this_update);
        X509_CRL_set1_nextUpdate(crl.get(), next_update);
        ASN1_TIME_free(this_update);
        ASN1_TIME_free(next_update);
    }
    std::size_t entries = 0;
    // Entries share a few reason extensions and, in bursts, revocation times: build each once.
    std::array<std::unique_ptr<X509_EXTENSION, crypto::Deleter<X509_EXTENSION_free>>, kReasons.size()> reason_ext;
    std::string last_time_text;
    std::unique_ptr<ASN1_TIME, crypto::Deleter<ASN1_TIME_free>> last_time;
    store_.for_each_revoked([&](const std::string& serial, const std::string& revoked_at, const std::string& reason) {
        X509_REVOKED* entry = X509_REVOKED_new();
        ASN1_INTEGER* sn = serial_integer(serial);
        X509_REVOKED_set_serialNumber(entry, sn);
        ASN1_INTEGER_free(sn);
        if (!last_time || revoked_at != last_time_text) {
            last_time.reset(asn1_time(revoked_at));
            last_time_text = revoked_at;
        }
        X509_REVOKED_set_revocationDate(entry, last_time.get());
        int code = 0;
        try {
            code = reason_code(reason);
        } catch (const std::invalid_argument&) {
        }
        if (code != 0) {  // RFC 5280 §5.3.1: reasonCode unspecified SHOULD be absent
            auto& ext = reason_ext[static_cast<std::size_t>(code)];
            if (!ext) {
                ASN1_ENUMERATED* e = ASN1_ENUMERATED_new();
                ASN1_ENUMERATED_set(e, code);
                ext.reset(X509V3_EXT_i2d(NID_crl_reason, 0, e));
                ASN1_ENUMERATED_free(e);
            }
            X509_REVOKED_add_ext(entry, ext.get(), -1);
        }
        X509_CRL_add0_revoked(crl.get(), entry);
        ++entries;
    });
    X509_CRL_sort(crl.get());
    {
        ASN1_INTEGER* n = ASN1_INTEGER_new();
        ASN1_INTEGER_set_int64(n, number);
        X509_CRL_add1_ext_i2d(crl.get(), NID_crl_number, n, 0, 0);
        ASN1_INTEGER_free(n);
        X509V3_CTX ctx;
        X509V3_set_ctx(&ctx, issuing_cert_, nullptr, nullptr, crl.get(), 0);
        X509_EXTENSION* aki = X509V3_EXT_conf_nid(nullptr, &ctx, NID_authority_key_identifier, "keyid:always");
        if (!aki) crypto::throw_openssl("CRL authorityKeyIdentifier");
        X509_CRL_add_ext(crl.get(), aki, -1);
        X509_EXTENSION_free(aki);
    }
    const EVP_MD* md = crypto::key_type_of(issuing_key_) == "p384" || crypto::key_type_of(issuing_key_) == "rsa4096"
                           ? EVP_sha384()
                           : EVP_sha256();
    if (!X509_CRL_sign(crl.get(), issuing_key_, md)) crypto::throw_openssl("signing the CRL");
    unsigned char* der = nullptr;
    const int len = i2d_X509_CRL(crl.get(), &der);
    if (len <= 0) crypto::throw_openssl("encoding the CRL");
    auto out = std::make_shared<const std::string>(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
    OPENSSL_free(der);
    if (store_.shared()) {
        const auto next = now + static_cast<time_t>(settings_.crl_validity.count());
        // Every instance serves what is stored; refused when the lease moved on meanwhile or a
        // newer CRL is already there (its number is higher: it wins).
        if (!store_.store_crl(epoch,
                              StoredCrl{number, static_cast<std::int64_t>(now), static_cast<std::int64_t>(next), revision, *out}))
            return nullptr;
    }
    try {
        crypto::write_file_atomic(directory_ / "crl.der", *out, 0644);
    } catch (const std::exception& e) {
        event(CC_EV_CaCrlFailed, CC_LEVEL_WARNING, std::string("the CRL was generated but not stored: ") + e.what());
    }
    {
        std::lock_guard lock(mutex_);
        current_ = out;
        current_number_ = number;
        current_revision_ = revision;
        current_this_update_ = Clock::from_time_t(now);
        refresh_due_ = Clock::now() + settings_.crl_refresh;
        current_next_update_ = Clock::from_time_t(now) + settings_.crl_validity;
        last_duration_ = std::chrono::steady_clock::now() - started;
    }
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count();
    event(CC_EV_CaCrlPublished, CC_LEVEL_INFO,
          "CRL " + std::to_string(number) + " with " + std::to_string(entries) + " entries generated in " + std::to_string(ms) +
              " ms",
          json::serialize(
              json::object{{"ca", settings_.ca_name}, {"crl_number", number}, {"entries", entries}, {"bytes", out->size()}}));
    return out;
}

void RevocationService::refresher(const std::stop_token& stop) {
    Clock::time_point backoff_until{};  // after a failure: no retry before this
    if (store_.shared()) {
        // The fleet's CRL duty: every instance tries to lead each period; the leader renews its
        // lease and publishes when a revocation happened through any instance or the CRL is due.
        while (!stop.stop_requested()) {
            bool failed = false;
            try {
                lead();
            } catch (const std::exception& e) {
                failed = true;
                event(CC_EV_CaCrlFailed, CC_LEVEL_WARNING, std::string("the CRL duty could not run: ") + e.what());
            }
            std::unique_lock lock(mutex_);
            if (failed) {  // the store is away: try again next period, not at every revocation
                wake_.wait_for(lock, stop, settings_.leader_period, [] { return false; });
                continue;
            }
            // A revocation here wakes the leader at once (after a burst settles).
            wake_.wait_for(lock, stop, settings_.leader_period, [&] { return dirty_ && held_epoch_.has_value(); });
            if (stop.stop_requested()) return;
            if (dirty_ && held_epoch_) wake_.wait_for(lock, stop, std::chrono::milliseconds(200), [] { return false; });
        }
        return;
    }
    while (!stop.stop_requested()) {
        {
            std::unique_lock lock(mutex_);
            if (Clock::now() < backoff_until) wake_.wait_until(lock, stop, backoff_until, [] { return false; });
            const auto due = current_ ? refresh_due_ : Clock::now();
            wake_.wait_until(lock, stop, due, [&] { return dirty_ && current_; });
            if (stop.stop_requested()) return;
        }
        // Let a burst of revocations land in one CRL.
        {
            std::unique_lock lock(mutex_);
            wake_.wait_for(lock, stop, std::chrono::milliseconds(200), [] { return false; });
            if (stop.stop_requested()) return;
        }
        try {
            std::lock_guard generating(generate_mutex_);
            bool due;
            {
                std::lock_guard lock(mutex_);
                due = !current_ || dirty_ || Clock::now() >= refresh_due_;
            }
            if (due) regenerate();  // not crl(): for a big CRL that would hand back the previous one
        } catch (const std::exception&) {
            backoff_until = Clock::now() + std::chrono::minutes(1);  // regenerate() logged why (402)
        }
    }
}

void RevocationService::ensure_responder() {
    // Caller holds responder_mutex_.
    const auto now = Clock::now();
    if (responder_cert_ && now < responder_renew_at_) return;
    const auto cert_file = directory_ / "ocsp-responder.pem";
    const auto key_file = directory_ / "ocsp-responder-key.pem";
    constexpr long kValidity = 30L * 24 * 3600;  // renewed with a third of it left
    auto renew_at = [&](X509* cert) {
        int days = 0, secs = 0;
        ASN1_TIME_diff(&days, &secs, nullptr, X509_get0_notAfter(cert));
        return now + std::chrono::seconds(static_cast<long>(days) * 86400 + secs - kValidity / 3);
    };
    if (!responder_cert_ && std::filesystem::exists(cert_file) && std::filesystem::exists(key_file)) {
        crypto::Cert cert = crypto::load_certificate(crypto::read_file(cert_file));
        crypto::PKey key = crypto::load_private_key(crypto::read_file(key_file));
        if (X509_check_issued(issuing_cert_, cert.get()) == X509_V_OK && renew_at(cert.get()) > now) {
            responder_renew_at_ = renew_at(cert.get());
            if (store_.shared()) record_responder(cert.get());
            responder_cert_ = std::move(cert);
            responder_key_ = std::move(key);
            return;
        }
    }
    crypto::PKey key = crypto::generate_key(settings_.responder_algorithm);
    crypto::Cert cert(X509_new());
    X509_set_version(cert.get(), 2);
    const std::string serial_bytes = [] {
        std::string b = crypto::random_bytes(16);
        b[0] = static_cast<char>((b[0] & 0x7f) | 0x01);
        return b;
    }();
    BIGNUM* bn =
        BN_bin2bn(reinterpret_cast<const unsigned char*>(serial_bytes.data()), static_cast<int>(serial_bytes.size()), nullptr);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
    BN_free(bn);
    crypto::Name subject = crypto::parse_name("CN=OCSP Responder (" + settings_.ca_name + ")");
    X509_set_subject_name(cert.get(), subject.get());
    X509_set_issuer_name(cert.get(), X509_get_subject_name(issuing_cert_));
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), kValidity);
    X509_set_pubkey(cert.get(), key.get());
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuing_cert_, cert.get(), nullptr, nullptr, 0);
    for (const auto& [nid, value] : std::initializer_list<std::pair<int, const char*>>{
             {NID_basic_constraints, "critical,CA:FALSE"},
             {NID_key_usage, "critical,digitalSignature"},
             {NID_ext_key_usage, "OCSPSigning"},
             {NID_id_pkix_OCSP_noCheck, "ignored"},  // RFC 6960 §4.2.2.2.1: do not check the responder itself
             {NID_subject_key_identifier, "hash"},
             {NID_authority_key_identifier, "keyid"}}) {
        X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
        if (!ext) crypto::throw_openssl(std::string("responder extension ") + OBJ_nid2sn(nid));
        X509_add_ext(cert.get(), ext, -1);
        X509_EXTENSION_free(ext);
    }
    const EVP_MD* md = crypto::key_type_of(issuing_key_) == "p384" || crypto::key_type_of(issuing_key_) == "rsa4096"
                           ? EVP_sha384()
                           : EVP_sha256();
    if (!X509_sign(cert.get(), issuing_key_, md)) crypto::throw_openssl("signing the OCSP responder certificate");
    crypto::write_file_atomic(key_file, crypto::private_key_pem(key.get()), 0600);
    crypto::write_file_atomic(cert_file, crypto::certificate_pem(cert.get()), 0644);
    event(CC_EV_CaOcspResponderIssued, CC_LEVEL_INFO, "issued OCSP responder certificate " + crypto::serial_hex(cert.get()),
          json::serialize(
              json::object{{"ca", settings_.ca_name}, {"not_after", crypto::time_iso8601(X509_get0_notAfter(cert.get()))}}));
    responder_renew_at_ = renew_at(cert.get());
    if (store_.shared()) record_responder(cert.get());
    responder_cert_ = std::move(cert);
    responder_key_ = std::move(key);
}

void RevocationService::record_responder(X509* cert) {
    // Each instance signs OCSP answers with its own delegated responder (its key never leaves
    // the machine); the fleet's record lists them, so an operator sees every one in use.
    try {
        store_.record_responder(crypto::serial_hex(cert), crypto::time_iso8601(X509_get0_notAfter(cert)),
                                crypto::certificate_pem(cert));
    } catch (const std::exception& e) {
        event(CC_EV_CaOcspFailed, CC_LEVEL_WARNING,
              std::string("the OCSP responder certificate could not be recorded in the shared store: ") + e.what());
    }
}

std::string RevocationService::ocsp(std::string_view request_der) {
    const auto* p = reinterpret_cast<const unsigned char*>(request_der.data());
    std::unique_ptr<OCSP_REQUEST, crypto::Deleter<OCSP_REQUEST_free>> request(
        d2i_OCSP_REQUEST(nullptr, &p, static_cast<long>(request_der.size())));
    const int count = request ? OCSP_request_onereq_count(request.get()) : 0;
    if (!request || count < 1 || count > kMaxOcspRequests) {
        ERR_clear_error();
        return ocsp_response_der(OCSP_RESPONSE_STATUS_MALFORMEDREQUEST, nullptr);
    }
    std::unique_ptr<OCSP_BASICRESP, crypto::Deleter<OCSP_BASICRESP_free>> basic(OCSP_BASICRESP_new());
    const time_t now = Clock::to_time_t(Clock::now());
    std::unique_ptr<ASN1_TIME, crypto::Deleter<ASN1_TIME_free>> this_update(ASN1_TIME_set(nullptr, now));
    std::unique_ptr<ASN1_TIME, crypto::Deleter<ASN1_TIME_free>> next_update(
        ASN1_TIME_adj(nullptr, now, 0, static_cast<long>(settings_.ocsp_validity.count())));
    for (int i = 0; i < count; ++i) {
        OCSP_CERTID* id = OCSP_onereq_get0_id(OCSP_request_onereq_get0(request.get(), i));
        ASN1_OBJECT* md_oid = nullptr;
        ASN1_INTEGER* serial = nullptr;
        OCSP_id_get0_info(nullptr, &md_oid, nullptr, &serial, id);
        const EVP_MD* md = md_oid ? EVP_get_digestbyobj(md_oid) : nullptr;
        std::unique_ptr<OCSP_CERTID, crypto::Deleter<OCSP_CERTID_free>> ours(
            md ? OCSP_cert_id_new(md, X509_get_subject_name(issuing_cert_), X509_get0_pubkey_bitstr(issuing_cert_), serial)
               : nullptr);
        if (!ours || OCSP_id_issuer_cmp(ours.get(), id) != 0) {
            // Not a certificate of this CA (or an unknown hash): RFC 6960 §2.3.
            ERR_clear_error();
            return ocsp_response_der(OCSP_RESPONSE_STATUS_UNAUTHORIZED, nullptr);
        }
        BIGNUM* bn = ASN1_INTEGER_to_BN(serial, nullptr);
        char* hex = bn ? BN_bn2hex(bn) : nullptr;
        const std::string serial_hex = hex ? hex : "";
        OPENSSL_free(hex);
        BN_free(bn);
        std::optional<IssuanceStore::Status> record;
        try {
            if (!serial_hex.empty()) record = store_.revocation_status(serial_hex);
        } catch (const std::exception& e) {
            // RFC 6960 §2.3: tryLater, never a guess, while the issuance record is away.
            event(CC_EV_CaOcspFailed, CC_LEVEL_ERROR,
                  "the issuance record (" + store_.where() + ") cannot be read: " + std::string(e.what()));
            return ocsp_response_der(OCSP_RESPONSE_STATUS_TRYLATER, nullptr);
        }
        if (!record) {
            OCSP_basic_add1_status(basic.get(), id, V_OCSP_CERTSTATUS_UNKNOWN, 0, nullptr, this_update.get(), next_update.get());
        } else if (record->status == "revoked") {
            std::unique_ptr<ASN1_TIME, crypto::Deleter<ASN1_TIME_free>> when(asn1_time(record->revoked_at));
            int code = 0;
            try {
                code = reason_code(record->revocation_reason);
            } catch (const std::invalid_argument&) {
            }
            OCSP_basic_add1_status(basic.get(), id, V_OCSP_CERTSTATUS_REVOKED, code, when.get(), this_update.get(),
                                   next_update.get());
        } else {
            OCSP_basic_add1_status(basic.get(), id, V_OCSP_CERTSTATUS_GOOD, 0, nullptr, this_update.get(), next_update.get());
        }
    }
    OCSP_copy_nonce(basic.get(), request.get());  // RFC 8954: echo the client's nonce
    {
        std::lock_guard lock(responder_mutex_);
        try {
            ensure_responder();
        } catch (const std::exception& e) {
            event(CC_EV_CaOcspFailed, CC_LEVEL_ERROR, std::string("no OCSP responder certificate: ") + e.what());
            return ocsp_response_der(OCSP_RESPONSE_STATUS_TRYLATER, nullptr);
        }
        if (!OCSP_basic_sign(basic.get(), responder_cert_.get(), responder_key_.get(), EVP_sha256(), nullptr, 0)) {
            ERR_clear_error();
            event(CC_EV_CaOcspFailed, CC_LEVEL_ERROR, "signing an OCSP response failed");
            return ocsp_response_der(OCSP_RESPONSE_STATUS_INTERNALERROR, nullptr);
        }
    }
    return ocsp_response_der(OCSP_RESPONSE_STATUS_SUCCESSFUL, basic.get());
}

}  // namespace certconn::ca_local
