#include "RequestStore.hpp"

namespace certconn::ca_adcs {

namespace {
constexpr const char* kColumns =
    "request_id, ca_request_id, via, profile, status, message, serial, certificate_pem, chain_pem, subject, not_before, "
    "not_after, revoked_at, revocation_reason";
}

RequestStore::RequestStore(const std::filesystem::path& file) : db_(file) {
    db_.exec(R"sql(CREATE TABLE IF NOT EXISTS requests (
        request_id TEXT PRIMARY KEY,
        ca_request_id TEXT NOT NULL,
        via TEXT NOT NULL,
        profile TEXT NOT NULL,
        status TEXT NOT NULL,
        message TEXT NOT NULL DEFAULT '',
        serial TEXT,
        certificate_pem TEXT NOT NULL DEFAULT '',
        chain_pem TEXT NOT NULL DEFAULT '',
        subject TEXT NOT NULL DEFAULT '',
        not_before TEXT NOT NULL DEFAULT '',
        not_after TEXT NOT NULL DEFAULT '',
        revoked_at TEXT NOT NULL DEFAULT '',
        revocation_reason TEXT NOT NULL DEFAULT '',
        updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now')))
    )sql");
    db_.exec("CREATE UNIQUE INDEX IF NOT EXISTS requests_by_serial ON requests(serial) WHERE serial IS NOT NULL");
}

RequestRecord RequestStore::row(sqlite::Statement& s) {
    return RequestRecord{s.text(0), s.text(1), s.text(2), s.text(3),  s.text(4),  s.text(5),  s.text(6),
                         s.text(7), s.text(8), s.text(9), s.text(10), s.text(11), s.text(12), s.text(13)};
}

std::optional<RequestRecord> RequestStore::find(const std::string& request_id) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(std::string("SELECT ") + kColumns + " FROM requests WHERE request_id = ?");
    s.bind(1, request_id);
    if (!s.step()) return std::nullopt;
    return row(s);
}

std::optional<RequestRecord> RequestStore::find_by_serial(const std::string& serial) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(std::string("SELECT ") + kColumns + " FROM requests WHERE serial = ?");
    s.bind(1, serial);
    if (!s.step()) return std::nullopt;
    return row(s);
}

std::optional<RequestRecord> RequestStore::newest_issued() {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(std::string("SELECT ") + kColumns +
                         " FROM requests WHERE status = 'issued' ORDER BY updated_at DESC, rowid DESC LIMIT 1");
    if (!s.step()) return std::nullopt;
    return row(s);
}

void RequestStore::put(const RequestRecord& r) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(std::string("INSERT OR REPLACE INTO requests (") + kColumns +
                         ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    s.bind_all(r.request_id, r.ca_request_id, r.via, r.profile, r.status, r.message);
    if (r.serial.empty())
        s.bind_null(7);
    else
        s.bind(7, r.serial);
    s.bind(8, r.certificate_pem).bind(9, r.chain_pem).bind(10, r.subject).bind(11, r.not_before).bind(12, r.not_after);
    s.bind(13, r.revoked_at).bind(14, r.revocation_reason);
    s.run();
}

bool RequestStore::mark_revoked(const std::string& serial, const std::string& when, const std::string& reason) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare("UPDATE requests SET revoked_at = ?, revocation_reason = ? WHERE serial = ? AND revoked_at = ''");
    s.bind_all(when, reason, serial).run();
    return db_.changes() > 0;
}

std::int64_t RequestStore::issued_count() {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare("SELECT count(*) FROM requests WHERE status = 'issued'");
    s.step();
    return s.integer(0);
}

}  // namespace certconn::ca_adcs
