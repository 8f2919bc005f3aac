#include "ScepLedger.hpp"
#include "JobQueue.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <certconn/crypto.hpp>
#include <certconn/sdk.hpp>
#include <certconn/time.hpp>

#include <openssl/crypto.h>

#include <algorithm>
#include <chrono>

namespace certconn::tenant_local {

namespace json = boost::json;

namespace {

sql::Options sqlite_options(const std::filesystem::path& file) {
    sql::Options o;
    o.sqlite_file = file;
    o.synchronous_full = false;
    return o;
}

std::string challenge_hash(const std::string& challenge) {
    unsigned char md[32];
    unsigned int len = 0;
    EVP_Digest(challenge.data(), challenge.size(), md, &len, EVP_sha256(), nullptr);
    return crypto::hex_encode(std::string_view(reinterpret_cast<char*>(md), len));
}

/// "type:value" strings, normalised and sorted, so bound and requested SANs compare as sets.
std::vector<std::string> normalised(std::vector<std::string> sans) {
    for (auto& s : sans) {
        const auto san = crypto::parse_san(s);
        s = san.type + ":" + san.value;
    }
    std::sort(sans.begin(), sans.end());
    return sans;
}

}  // namespace

ScepLedger::ScepLedger(const sql::Options& options, std::map<std::string, std::string> static_challenges)
    : challenges_(std::move(static_challenges)), db_(sql::Database::open(options)) {
    std::lock_guard lock(mutex_);
    try {
        db_.migrate(migrations(db_.backend(), false));
        migrated_ = true;
    } catch (const sql::Error& e) {
        // A newer schema is final; an unreachable server is not: the first call tries again.
        if (!e.transient()) throw sdk::Error(CC_ERR_INTERNAL, "SCEP ledger (" + db_.describe() + "): " + e.what());
    }
}

ScepLedger::ScepLedger(const std::filesystem::path& file, std::map<std::string, std::string> static_challenges)
    : ScepLedger(sqlite_options(file), std::move(static_challenges)) {}

// The store's errors become the plugin's: transient ones UNAVAILABLE (the caller retries).
template <class Fn>
auto ScepLedger::guarded(const char* what, Fn&& fn) {
    std::lock_guard lock(mutex_);
    try {
        if (!migrated_) {
            db_.migrate(migrations(db_.backend(), false));
            migrated_ = true;
        }
        return fn();
    } catch (const sql::Error& e) {
        const std::string message = std::string("SCEP ledger ") + what + " (" + db_.describe() + "): " + e.what();
        if (e.transient()) throw sdk::Error(CC_ERR_UNAVAILABLE, message + "; try again later");
        if (e.constraint()) throw sdk::Error(CC_ERR_CONFLICT, message);
        throw sdk::Error(CC_ERR_INTERNAL, message);
    }
}

json::object ScepLedger::create_challenge(const std::string& profile, const std::string& subject,
                                          const std::vector<std::string>& sans, std::int64_t ttl_seconds) {
    const std::string challenge = crypto::base64_encode(crypto::random_bytes(18));  // 144 bits, 24 characters
    json::array san_list;
    for (const auto& s : normalised(sans))
        san_list.push_back(json::string(s));
    const std::string canonical_subject = subject.empty() ? "" : crypto::name_string(crypto::parse_name(subject).get());
    const std::string hash = challenge_hash(challenge);
    const std::int64_t expires = guarded("challenge creation", [&] {
        auto s =
            db_.prepare("INSERT INTO scep_challenges (hash, profile, subject, sans, expires_at_ms) VALUES ($1, $2, $3, $4, " +
                        db_.now_ms_sql() + " + $5) RETURNING expires_at_ms");
        s.bind(1, hash).bind(2, profile);
        if (canonical_subject.empty())
            s.bind_null(3);
        else
            s.bind(3, canonical_subject);
        if (sans.empty())
            s.bind_null(4);
        else
            s.bind(4, json::serialize(san_list));
        s.bind(5, ttl_seconds * 1000);
        if (!s.step()) throw sdk::Error(CC_ERR_INTERNAL, "the new challenge was not stored");
        const std::int64_t at = s.integer(0);
        s.reset();
        return at;
    });
    const std::string when =
        certconn::sdk::utc_iso8601(std::chrono::system_clock::time_point(std::chrono::milliseconds(expires)));
    return {{"challenge", challenge}, {"profile", profile}, {"expires_at", when}};
}

json::object ScepLedger::validate(const json::object& request) {
    auto text = [&](const char* key) {
        const auto* v = request.if_contains(key);
        return v && v->is_string() ? std::string(v->as_string()) : std::string();
    };
    const std::string name = text("profile"), given = text("challenge"), tx = text("transaction_id");
    if (given.empty())
        return {{"code", "ChallengePasswordMissing"}, {"errorDescription", "the request carries no challengePassword"}};

    if (auto expected = challenges_.find(name); expected != challenges_.end() && given.size() == expected->second.size() &&
                                                CRYPTO_memcmp(given.data(), expected->second.data(), given.size()) == 0)
        return {{"code", "Success"}};

    const std::string hash = challenge_hash(given);
    return guarded("challenge check", [&]() -> json::object {
        json::object used_by_another{{"code", "ChallengeInvalid"},
                                           {"errorDescription", "the challenge was already used by another request"}};
        auto s = db_.prepare("SELECT c.profile, c.subject, c.sans, CASE WHEN c.expires_at_ms < " + db_.now_ms_sql() +
                             " THEN 1 ELSE 0 END, u.transaction_id FROM scep_challenges c LEFT JOIN scep_challenge_uses u ON "
                             "u.hash = c.hash WHERE c.hash = $1");
        s.bind(1, hash);
        if (!s.step()) return {{"code", "ChallengeInvalid"}, {"errorDescription", "the challenge does not match"}};
        if (s.text(0) != name)
            return {{"code", "ChallengeInvalid"}, {"errorDescription", "the challenge belongs to another SCEP profile"}};
        if (s.integer(3) != 0) return {{"code", "ChallengeExpired"}, {"errorDescription", "the challenge has expired"}};
        if (auto used = s.optional_text(4); used && *used != tx) return used_by_another;
        const auto bound_subject = s.optional_text(1);
        const auto bound_sans = s.optional_text(2);
        s.reset();
        if (bound_subject || bound_sans) {
            crypto::Request csr;
            try {
                csr = crypto::load_csr(text("csr_pem"));
            } catch (const std::exception&) {
                return {{"code", "SignatureValidationFailed"}, {"errorDescription", "the certificate request cannot be read"}};
            }
            if (bound_subject && crypto::name_string(X509_REQ_get_subject_name(csr.get())) != *bound_subject)
                return {{"code", "SubjectNameMismatch"},
                        {"errorDescription", "the subject is not the one this challenge was issued for"}};
            if (bound_sans) {
                STACK_OF(X509_EXTENSION)* exts = X509_REQ_get_extensions(csr.get());
                std::vector<std::string> requested;
                for (const auto& san : crypto::read_sans(exts))
                    requested.push_back(san.type + ":" + san.value);
                sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
                std::sort(requested.begin(), requested.end());
                std::vector<std::string> expected;
                const json::value bound = json::parse(*bound_sans);
                for (const auto& v : bound.as_array())
                    expected.emplace_back(v.as_string());
                if (requested != expected)
                    return {{"code", "SubjectAltNameMismatch"},
                            {"errorDescription", "the SANs are not the ones this challenge was issued for"}};
            }
        }
        // Consume: exactly one transaction's INSERT creates the row, whichever instance runs it; a
        // client resending that same transaction finds its own id there and may retry.
        auto consume = db_.prepare(
            "INSERT INTO scep_challenge_uses (hash, transaction_id) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING RETURNING "
            "hash");
        consume.bind_all(hash, tx);
        if (consume.step()) return {{"code", "Success"}};
        consume.reset();
        auto winner = db_.prepare("SELECT transaction_id FROM scep_challenge_uses WHERE hash = $1");
        winner.bind(1, hash);
        if (winner.step() && winner.text(0) == tx) return {{"code", "Success"}};
        return used_by_another;
    });
}

json::object ScepLedger::validate_renewal(const json::object&, bool allowed) {
    if (!allowed)
        return {{"code", "RenewalNotAllowed"},
                {"errorDescription", "this tenant does not allow SCEP renewals (allow_renewal = false)"}};
    return {{"code", "Success"}};
}

void ScepLedger::record(const std::string& kind, const json::object& notification) {
    const auto* tx = notification.if_contains("transaction_id");
    guarded("notification", [&] {
        db_.prepare("INSERT INTO scep_notifications (kind, transaction_id, body) VALUES ($1, $2, $3)")
            .bind_all(kind, tx && tx->is_string() ? std::string(tx->as_string()) : std::string(), json::serialize(notification))
            .run();
    });
}

std::int64_t ScepLedger::count(const std::string& kind) {
    return guarded("count", [&] {
        auto s = db_.prepare("SELECT COUNT(*) FROM scep_notifications WHERE kind = $1");
        s.bind(1, kind);
        s.step();
        return s.integer(0);
    });
}

}  // namespace certconn::tenant_local
