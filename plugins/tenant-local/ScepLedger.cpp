#include "ScepLedger.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <certconn/crypto.hpp>
#include <certconn/time.hpp>

#include <openssl/crypto.h>

#include <algorithm>
#include <chrono>

namespace certconn::tenant_local {

namespace json = boost::json;

ScepLedger::ScepLedger(const std::filesystem::path& file, std::map<std::string, std::string> static_challenges)
    : challenges_(std::move(static_challenges)), db_(file, false) {
    db_.exec(R"(CREATE TABLE IF NOT EXISTS scep_notifications (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        transaction_id TEXT NOT NULL,
        body TEXT NOT NULL,
        received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))))");
    db_.exec(R"(CREATE TABLE IF NOT EXISTS scep_challenges (
        hash TEXT PRIMARY KEY,
        profile TEXT NOT NULL,
        subject TEXT,
        sans TEXT,
        expires_at_ms INTEGER NOT NULL,
        used_by_transaction TEXT))");
}

namespace {

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
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

json::object ScepLedger::create_challenge(const std::string& profile, const std::string& subject,
                                          const std::vector<std::string>& sans, std::int64_t ttl_seconds) {
    const std::string challenge = crypto::base64_encode(crypto::random_bytes(18));  // 144 bits, 24 characters
    json::array san_list;
    for (const auto& s : normalised(sans))
        san_list.push_back(json::string(s));
    const std::string canonical_subject = subject.empty() ? "" : crypto::name_string(crypto::parse_name(subject).get());
    const std::int64_t expires = now_ms() + ttl_seconds * 1000;
    std::lock_guard lock(mutex_);
    auto s = db_.prepare("INSERT INTO scep_challenges (hash, profile, subject, sans, expires_at_ms) VALUES (?, ?, ?, ?, ?)");
    s.bind(1, challenge_hash(challenge)).bind(2, profile);
    if (canonical_subject.empty())
        s.bind_null(3);
    else
        s.bind(3, canonical_subject);
    if (sans.empty())
        s.bind_null(4);
    else
        s.bind(4, json::serialize(san_list));
    s.bind(5, expires).run();
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

    std::lock_guard lock(mutex_);
    auto s = db_.prepare("SELECT profile, subject, sans, expires_at_ms, used_by_transaction FROM scep_challenges WHERE hash = ?");
    const std::string hash = challenge_hash(given);
    s.bind(1, hash);
    if (!s.step()) return {{"code", "ChallengeInvalid"}, {"errorDescription", "the challenge does not match"}};
    if (s.text(0) != name)
        return {{"code", "ChallengeInvalid"}, {"errorDescription", "the challenge belongs to another SCEP profile"}};
    if (s.integer(3) < now_ms()) return {{"code", "ChallengeExpired"}, {"errorDescription", "the challenge has expired"}};
    if (auto used = s.optional_text(4); used && *used != tx)
        return {{"code", "ChallengeInvalid"}, {"errorDescription", "the challenge was already used by another request"}};
    const auto bound_subject = s.optional_text(1);
    const auto bound_sans = s.optional_text(2);
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
    db_.prepare("UPDATE scep_challenges SET used_by_transaction = ? WHERE hash = ? AND used_by_transaction IS NULL")
        .bind_all(tx, hash)
        .run();
    return {{"code", "Success"}};
}

json::object ScepLedger::validate_renewal(const json::object&, bool allowed) {
    if (!allowed)
        return {{"code", "RenewalNotAllowed"},
                {"errorDescription", "this tenant does not allow SCEP renewals (allow_renewal = false)"}};
    return {{"code", "Success"}};
}

void ScepLedger::record(const std::string& kind, const json::object& notification) {
    std::lock_guard lock(mutex_);
    const auto* tx = notification.if_contains("transaction_id");
    db_.prepare("INSERT INTO scep_notifications (kind, transaction_id, body) VALUES (?, ?, ?)")
        .bind_all(kind, tx && tx->is_string() ? std::string(tx->as_string()) : std::string(), json::serialize(notification))
        .run();
}

std::int64_t ScepLedger::count(const std::string& kind) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare("SELECT COUNT(*) FROM scep_notifications WHERE kind = ?");
    s.bind(1, kind);
    s.step();
    return s.integer(0);
}

}  // namespace certconn::tenant_local
