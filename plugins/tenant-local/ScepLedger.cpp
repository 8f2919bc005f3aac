#include "ScepLedger.hpp"

#include <boost/json/serialize.hpp>

#include <openssl/crypto.h>

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
}

json::object ScepLedger::validate(const json::object& request) const {
    const auto* profile = request.if_contains("profile");
    const auto* challenge = request.if_contains("challenge");
    const std::string name = profile && profile->is_string() ? std::string(profile->as_string()) : "";
    auto expected = challenges_.find(name);
    if (expected == challenges_.end())
        return {{"code", "ChallengeInvalid"}, {"errorDescription", "no challenge is configured for SCEP profile '" + name + "'"}};
    if (!challenge || !challenge->is_string() || challenge->as_string().empty())
        return {{"code", "ChallengePasswordMissing"}, {"errorDescription", "the request carries no challengePassword"}};
    const std::string given(challenge->as_string());
    const bool same = given.size() == expected->second.size() &&
                      CRYPTO_memcmp(given.data(), expected->second.data(), given.size()) == 0;
    if (!same) return {{"code", "ChallengeInvalid"}, {"errorDescription", "the challenge does not match"}};
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
