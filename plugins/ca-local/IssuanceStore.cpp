#include "IssuanceStore.hpp"

#include <certconn/crypto.hpp>

#include <openssl/bn.h>

#include <stdexcept>

namespace certconn::ca_local {

namespace {

constexpr const char* kColumns =
    "serial, request_id, subject, sans, not_before, not_after, profile, requester, status, "
    "COALESCE(revocation_reason, ''), COALESCE(revoked_at, ''), certificate_pem";

// The tables beside the certificates, the same on both backends.
constexpr const char* kSharedTables = R"(
CREATE TABLE IF NOT EXISTS crls (
    ca TEXT PRIMARY KEY,
    number BIGINT NOT NULL DEFAULT 0,
    revision BIGINT NOT NULL DEFAULT 0,
    crl_number BIGINT,
    crl_der TEXT,
    this_update BIGINT,
    next_update BIGINT,
    crl_revision BIGINT,
    crl_instance TEXT);
CREATE TABLE IF NOT EXISTS hierarchy (
    ca TEXT PRIMARY KEY,
    root_pem TEXT NOT NULL,
    issuing_pem TEXT NOT NULL,
    root_key TEXT NOT NULL,
    issuing_key TEXT NOT NULL,
    root_crl TEXT,
    created_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ocsp_responders (
    ca TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    serial TEXT NOT NULL,
    not_after TEXT NOT NULL,
    certificate_pem TEXT NOT NULL,
    PRIMARY KEY (ca, instance_id)))";

const std::vector<sql::Migration>& migrations() {
    static const std::vector<sql::Migration> list = [] {
        std::vector<sql::Migration> m;
        // 1: the schema ca-local always had (SQLite files from before keep working as they are).
        m.push_back({1,
                     R"(CREATE TABLE IF NOT EXISTS certificates (
        serial TEXT PRIMARY KEY,
        request_id TEXT UNIQUE,
        subject TEXT NOT NULL,
        sans TEXT NOT NULL,
        not_before TEXT NOT NULL,
        not_after TEXT NOT NULL,
        profile TEXT NOT NULL,
        requester TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'valid',
        revocation_reason TEXT,
        revoked_at TEXT,
        issued_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now')),
        certificate_pem TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS certificates_revoked ON certificates(status) WHERE status = 'revoked';
    CREATE TABLE IF NOT EXISTS crl_state (id INTEGER PRIMARY KEY CHECK (id = 1), number INTEGER NOT NULL))",
                     // PostgreSQL: one schema for every CA, rows keyed by the CA's name.
                     R"(CREATE TABLE IF NOT EXISTS certificates (
        ca TEXT NOT NULL,
        serial TEXT NOT NULL,
        request_id TEXT,
        subject TEXT NOT NULL,
        sans TEXT NOT NULL,
        not_before TEXT NOT NULL,
        not_after TEXT NOT NULL,
        profile TEXT NOT NULL,
        requester TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'valid',
        revocation_reason TEXT,
        revoked_at TEXT,
        issued_at TEXT NOT NULL DEFAULT (to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
        certificate_pem TEXT NOT NULL,
        PRIMARY KEY (ca, serial),
        UNIQUE (ca, request_id));
    CREATE INDEX IF NOT EXISTS certificates_revoked ON certificates(ca) WHERE status = 'revoked')"});
        // 2: the CA's key in every row (always '' in a CA's own SQLite file), the CRL number and
        // the latest CRL per CA, a hierarchy shared by a fleet, OCSP responders per instance.
        m.push_back({2,
                     std::string("ALTER TABLE certificates ADD COLUMN ca TEXT NOT NULL DEFAULT '';") + kSharedTables +
                         ";INSERT INTO crls (ca, number) SELECT '', number FROM crl_state WHERE id = 1",
                     kSharedTables});
        m.push_back(sql::LeaderLease::migration(3));
        return m;
    }();
    return list;
}

}  // namespace

IssuanceStore::IssuanceStore(const std::filesystem::path& file)
    : IssuanceStore(
          [&] {
              sql::Options o;
              o.sqlite_file = file;
              return o;
          }(),
          "", "local") {}

IssuanceStore::IssuanceStore(const sql::Options& options, const std::string& ca_name, std::string instance_id)
    : instance_id_(std::move(instance_id)), db_(sql::Database::open(options)) {
    shared_ = db_.shared();
    where_ = db_.describe();
    key_ = shared_ ? ca_name : std::string();
    db_.migrate(migrations());
    crl_lease_ = std::make_unique<sql::LeaderLease>(db_, "crl:" + ca_name, instance_id_);
    reader_ = std::make_unique<sql::Database>(sql::Database::open(options));
}

std::string IssuanceStore::canonical_serial(std::string_view hex) {
    if (hex.empty() || hex.size() > 64 || hex.find_first_not_of("0123456789abcdefABCDEF") != std::string_view::npos)
        throw std::invalid_argument("serial '" + std::string(hex.substr(0, 80)) + "' is not a hexadecimal number");
    const std::string text(hex);
    BIGNUM* bn = nullptr;
    if (!BN_hex2bn(&bn, text.c_str())) throw std::invalid_argument("serial '" + text + "' is not a hexadecimal number");
    char* out = BN_bn2hex(bn);
    std::string canonical(out);
    OPENSSL_free(out);
    BN_free(bn);
    if (canonical == "0") throw std::invalid_argument("serial 0 is not a certificate serial number");
    return canonical;
}

IssuedCertificate IssuanceStore::row(const sql::Statement& s) {
    return {s.text(0),  s.is_null(1) ? std::string() : s.text(1),
            s.text(2),  s.text(3),
            s.text(4),  s.text(5),
            s.text(6),  s.text(7),
            s.text(8),  s.text(9),
            s.text(10), s.text(11)};
}

std::optional<IssuedCertificate> IssuanceStore::find_by_request(const std::string& request_id) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(std::string("SELECT ") + kColumns + " FROM certificates WHERE ca = $1 AND request_id = $2");
    s.bind_all(key_, request_id);
    if (!s.step()) return std::nullopt;
    return row(s);
}

std::optional<IssuedCertificate> IssuanceStore::find_by_serial(const std::string& serial) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(std::string("SELECT ") + kColumns + " FROM certificates WHERE ca = $1 AND serial = $2");
    s.bind_all(key_, serial);
    if (!s.step()) return std::nullopt;
    return row(s);
}

std::optional<IssuanceStore::Status> IssuanceStore::revocation_status(const std::string& serial) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(
        "SELECT status, COALESCE(revocation_reason, ''), COALESCE(revoked_at, '') FROM certificates WHERE ca = $1 AND serial = "
        "$2");
    s.bind_all(key_, serial);
    if (!s.step()) return std::nullopt;
    return Status{s.text(0), s.text(1), s.text(2)};
}

bool IssuanceStore::insert(const IssuedCertificate& c) {
    std::lock_guard lock(mutex_);
    // Two instances running the same job at once: the unique (ca, request_id) lets one insert
    // win; the other's constraint error sends it to read the winner's certificate.
    auto s = db_.prepare(
        "INSERT INTO certificates (ca, serial, request_id, subject, sans, not_before, not_after, profile, requester, "
        "certificate_pem) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)");
    s.bind_all(key_, c.serial);
    if (c.request_id.empty())
        s.bind_null(3);
    else
        s.bind(3, c.request_id);
    s.bind(4, c.subject).bind(5, c.sans).bind(6, c.not_before).bind(7, c.not_after);
    s.bind(8, c.profile).bind(9, c.requester).bind(10, c.certificate_pem);
    try {
        s.run();
        return true;
    } catch (const sql::Error& e) {
        if (e.constraint()) return false;
        throw;
    }
}

void IssuanceStore::bump_revision() {
    auto s =
        db_.prepare("INSERT INTO crls (ca, revision) VALUES ($1, 1) ON CONFLICT (ca) DO UPDATE SET revision = crls.revision + 1");
    s.bind(1, key_).run();
}

std::vector<bool> IssuanceStore::revoke_many(const std::vector<std::pair<std::string, std::string>>& serial_reason,
                                             const std::string& when) {
    std::vector<bool> changed;
    if (serial_reason.empty()) return changed;
    std::lock_guard lock(mutex_);
    sql::Transaction tx(db_);
    auto s = db_.prepare(
        "UPDATE certificates SET status = 'revoked', revocation_reason = $1, revoked_at = $2 WHERE ca = $3 AND serial = $4 AND "
        "status = 'valid'");
    bool any = false;
    for (const auto& [serial, reason] : serial_reason) {
        s.bind_all(reason, when, key_, serial).run();
        changed.push_back(db_.changes() == 1);
        any = any || changed.back();
        s.reset();
    }
    if (any) bump_revision();
    tx.commit();
    return changed;
}

std::int64_t IssuanceStore::count() {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare("SELECT COUNT(*) FROM certificates WHERE ca = $1");
    s.bind(1, key_);
    s.step();
    return s.integer(0);
}

std::int64_t IssuanceStore::revoked_count() {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare("SELECT COUNT(*) FROM certificates WHERE ca = $1 AND status = 'revoked'");
    s.bind(1, key_);
    s.step();
    return s.integer(0);
}

void IssuanceStore::for_each_revoked(const std::function<void(const std::string&, const std::string&, const std::string&)>& fn) {
    std::lock_guard lock(reader_mutex_);
    auto s = reader_->prepare(
        "SELECT serial, revoked_at, COALESCE(revocation_reason, '') FROM certificates WHERE ca = $1 AND status = 'revoked'");
    s.bind(1, key_);
    while (s.step())
        fn(s.text(0), s.text(1), s.text(2));
}

std::int64_t IssuanceStore::next_crl_number() {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(
        "INSERT INTO crls (ca, number) VALUES ($1, 1) ON CONFLICT (ca) DO UPDATE SET number = crls.number + 1 "
        "RETURNING number");
    s.bind(1, key_);
    if (!s.step()) throw sql::Error(sql::Error::Kind::other, "the CRL number was not returned");
    const std::int64_t n = s.integer(0);
    while (s.step()) {
    }
    return n;
}

std::optional<std::int64_t> IssuanceStore::next_crl_number(std::int64_t epoch) {
    std::lock_guard lock(mutex_);
    sql::Transaction tx(db_);
    // The lease row stays locked (PostgreSQL) until COMMIT: no new leader takes it in between.
    if (!crl_lease_->still_held(epoch)) return std::nullopt;
    auto s = db_.prepare(
        "INSERT INTO crls (ca, number) VALUES ($1, 1) ON CONFLICT (ca) DO UPDATE SET number = crls.number + 1 "
        "RETURNING number");
    s.bind(1, key_);
    if (!s.step()) throw sql::Error(sql::Error::Kind::other, "the CRL number was not returned");
    const std::int64_t n = s.integer(0);
    while (s.step()) {
    }
    tx.commit();
    return n;
}

void IssuanceStore::insert_revoked_bulk(const std::vector<IssuedCertificate>& certs) {
    std::lock_guard lock(mutex_);
    sql::Transaction tx(db_);
    auto s = db_.prepare(
        "INSERT INTO certificates (ca, serial, subject, sans, not_before, not_after, profile, requester, certificate_pem, "
        "status, revocation_reason, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'revoked', $10, $11)");
    for (const auto& c : certs) {
        s.bind_all(key_, c.serial, c.subject, c.sans, c.not_before, c.not_after, c.profile, c.requester, c.certificate_pem,
                   c.revocation_reason, c.revoked_at);
        s.run();
        s.reset();
    }
    if (!certs.empty()) bump_revision();
    tx.commit();
}

std::int64_t IssuanceStore::revision() {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare("SELECT revision FROM crls WHERE ca = $1");
    s.bind(1, key_);
    return s.step() ? s.integer(0) : 0;
}

std::optional<std::int64_t> IssuanceStore::acquire_crl_lease(std::chrono::seconds ttl) {
    std::lock_guard lock(mutex_);
    return crl_lease_->acquire(ttl);
}

void IssuanceStore::release_crl_lease() {
    std::lock_guard lock(mutex_);
    crl_lease_->release();
}

bool IssuanceStore::store_crl(std::optional<std::int64_t> epoch, const StoredCrl& crl) {
    std::lock_guard lock(mutex_);
    sql::Transaction tx(db_);
    if (epoch && !crl_lease_->still_held(*epoch)) return false;
    // Never replace a newer CRL: two would-be leaders overlapping publish in number order.
    auto s = db_.prepare(
        "UPDATE crls SET crl_number = $2, crl_der = $3, this_update = $4, next_update = $5, crl_revision = $6, crl_instance = $7 "
        "WHERE ca = $1 AND (crl_number IS NULL OR crl_number < $2)");
    s.bind_all(key_, crl.number, crypto::base64_encode(crl.der), crl.this_update, crl.next_update, crl.revision, instance_id_);
    s.run();
    const bool stored = db_.changes() == 1;
    tx.commit();
    return stored;
}

std::optional<StoredCrl> IssuanceStore::latest_crl(std::int64_t have_number) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(
        "SELECT crl_number, this_update, next_update, crl_revision, CASE WHEN crl_number = $2 THEN '' ELSE crl_der END FROM crls "
        "WHERE ca = $1 AND crl_number IS NOT NULL");
    s.bind_all(key_, have_number);
    if (!s.step()) return std::nullopt;
    StoredCrl out{s.integer(0), s.integer(1), s.integer(2), s.integer(3), {}};
    const std::string b64 = s.text(4);
    if (!b64.empty()) out.der = crypto::base64_decode(b64);
    return out;
}

std::optional<SharedHierarchy> IssuanceStore::load_hierarchy() {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(
        "SELECT root_pem, issuing_pem, root_key, issuing_key, COALESCE(root_crl, ''), created_by FROM hierarchy WHERE ca = $1");
    s.bind(1, key_);
    if (!s.step()) return std::nullopt;
    SharedHierarchy h{s.text(0), s.text(1), s.text(2), s.text(3), {}, s.text(5)};
    if (const std::string b64 = s.text(4); !b64.empty()) h.root_crl_der = crypto::base64_decode(b64);
    return h;
}

bool IssuanceStore::insert_hierarchy(const SharedHierarchy& h) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(
        "INSERT INTO hierarchy (ca, root_pem, issuing_pem, root_key, issuing_key, root_crl, created_by) VALUES ($1, $2, $3, $4, "
        "$5, $6, $7) ON CONFLICT (ca) DO NOTHING");
    s.bind_all(key_, h.root_pem, h.issuing_pem, h.root_key_pem, h.issuing_key_pem, crypto::base64_encode(h.root_crl_der),
               instance_id_);
    s.run();
    return db_.changes() == 1;
}

void IssuanceStore::store_root_crl(const std::string& der) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare("UPDATE hierarchy SET root_crl = $2 WHERE ca = $1");
    s.bind_all(key_, crypto::base64_encode(der)).run();
}

void IssuanceStore::record_responder(const std::string& serial, const std::string& not_after,
                                     const std::string& certificate_pem) {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare(
        "INSERT INTO ocsp_responders (ca, instance_id, serial, not_after, certificate_pem) VALUES ($1, $2, $3, $4, $5) ON "
        "CONFLICT (ca, instance_id) DO UPDATE SET serial = excluded.serial, not_after = excluded.not_after, certificate_pem = "
        "excluded.certificate_pem");
    s.bind_all(key_, instance_id_, serial, not_after, certificate_pem).run();
}

std::vector<IssuanceStore::Responder> IssuanceStore::responders() {
    std::lock_guard lock(mutex_);
    auto s = db_.prepare("SELECT instance_id, serial, not_after FROM ocsp_responders WHERE ca = $1 ORDER BY instance_id");
    s.bind(1, key_);
    std::vector<Responder> out;
    while (s.step())
        out.push_back({s.text(0), s.text(1), s.text(2)});
    return out;
}

}  // namespace certconn::ca_local
