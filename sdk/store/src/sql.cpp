// certconn/sql.hpp: what both backends share — options, migrations, transactions, leases.
#include "backend.hpp"

#include <certconn/sdk.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <algorithm>

namespace certconn::sql {

// --- Options ------------------------------------------------------------------------------

Options Options::from_store_config(std::string_view store_config_json, const std::filesystem::path& state_dir,
                                   std::string_view schema, std::string_view sqlite_file_name) {
    Options o;
    o.schema = std::string(schema);
    o.sqlite_file = state_dir / std::string(sqlite_file_name);
    boost::system::error_code ec;
    const boost::json::value doc = boost::json::parse(store_config_json, ec);
    if (ec || !doc.is_object()) throw Error(Error::Kind::other, "store configuration is not a JSON object");
    const auto& obj = doc.as_object();
    auto str = [&](const char* key) -> std::string {
        const auto* v = obj.if_contains(key);
        return v && v->is_string() ? std::string(v->as_string()) : std::string();
    };
    if (str("backend") == "postgresql") {
        o.url = str("url");
        o.password = str("password");
        if (o.url.empty()) throw Error(Error::Kind::other, "store configuration names postgresql without a url");
        const std::string instance = str("instance_id");
        o.application_name = "certconnector " + (instance.empty() ? std::string("?") : instance).substr(0, 40);
    }
    return o;
}

Options Options::for_plugin(const sdk::Host& host, std::string_view schema, std::string_view sqlite_file_name) {
    return from_store_config(host.store_config_json(), host.state_dir(), schema, sqlite_file_name);
}

// --- Statement ------------------------------------------------------------------------------

Statement::Statement(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Statement::Statement(Statement&&) noexcept = default;
Statement& Statement::operator=(Statement&&) noexcept = default;
Statement::~Statement() = default;
Statement& Statement::bind(int i, std::string_view v) {
    impl_->bind_text(i, v);
    return *this;
}
Statement& Statement::bind(int i, std::int64_t v) {
    impl_->bind_integer(i, v);
    return *this;
}
Statement& Statement::bind_null(int i) {
    impl_->bind_null(i);
    return *this;
}
bool Statement::step() {
    return impl_->step();
}
std::int64_t Statement::run() {
    while (impl_->step()) {
    }
    return impl_->changes();
}
void Statement::reset() {
    impl_->reset();
}
std::string Statement::text(int col) const {
    return impl_->text(col);
}
std::optional<std::string> Statement::optional_text(int col) const {
    if (impl_->is_null(col)) return std::nullopt;
    return impl_->text(col);
}
std::int64_t Statement::integer(int col) const {
    return impl_->integer(col);
}
bool Statement::is_null(int col) const {
    return impl_->is_null(col);
}

// --- Database -------------------------------------------------------------------------------

Database Database::open(const Options& options) {
    if (options.url.empty()) return Database(open_sqlite(options));
    return Database(open_postgresql(options));
}
Database::Database(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Database::Database(Database&&) noexcept = default;
Database& Database::operator=(Database&&) noexcept = default;
Database::~Database() = default;

Backend Database::backend() const {
    return impl_->backend();
}
std::string Database::describe() const {
    return impl_->describe();
}
Statement Database::prepare(std::string_view sql) {
    return Statement(impl_->prepare(sql));
}
void Database::exec(std::string_view sql) {
    impl_->exec(sql);
}
std::int64_t Database::changes() const {
    return impl_->changes();
}
void Database::checkpoint() {
    impl_->checkpoint();
}

std::string Database::now_sql() const {
    return backend() == Backend::postgresql ? "CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp())) AS BIGINT)"
                                            : "CAST(strftime('%s','now') AS INTEGER)";
}
std::string Database::now_ms_sql() const {
    return backend() == Backend::postgresql ? "CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 1000) AS BIGINT)"
                                            : "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";
}

int Database::schema_version() {
    auto exists = prepare(backend() == Backend::postgresql
                              ? "SELECT CASE WHEN to_regclass('certconn_schema') IS NULL THEN 0 ELSE 1 END"
                              : "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'certconn_schema'");
    if (!exists.step() || exists.integer(0) == 0) return 0;
    auto s = prepare("SELECT version FROM certconn_schema WHERE id = 1");
    return s.step() ? static_cast<int>(s.integer(0)) : 0;
}

void Database::migrate(std::span<const Migration> migrations) {
    if (migrations.empty()) return;
    const int newest = std::max_element(migrations.begin(), migrations.end(), [](const Migration& a, const Migration& b) {
                           return a.version < b.version;
                       })->version;
    Transaction tx(*this);
    if (backend() == Backend::postgresql) {
        // One instance of the fleet migrates; the others wait here, then find it done.
        auto lock = prepare("SELECT pg_advisory_xact_lock(hashtext($1))");
        lock.bind(1, "certconn.schema." + impl_->schema()).run();
        if (!impl_->schema().empty()) exec("CREATE SCHEMA IF NOT EXISTS \"" + impl_->schema() + "\"");
    }
    exec("CREATE TABLE IF NOT EXISTS certconn_schema (id INTEGER PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL)");
    const int current = schema_version();
    if (current > newest)
        throw Error(Error::Kind::schema, describe() + " has schema version " + std::to_string(current) +
                                             ", newer than this build knows (" + std::to_string(newest) +
                                             "): upgrade this instance to the version the rest of the fleet runs");
    int reached = current;
    for (const Migration& m : migrations) {
        if (m.version <= current) continue;
        exec(backend() == Backend::postgresql && !m.postgresql_sql.empty() ? m.postgresql_sql : m.sql);
        reached = std::max(reached, m.version);
    }
    if (reached != current) {
        auto s = prepare(
            "INSERT INTO certconn_schema (id, version) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET version = excluded.version");
        s.bind(1, static_cast<std::int64_t>(reached)).run();
    }
    tx.commit();
}

// --- Transaction ------------------------------------------------------------------------------

Transaction::Transaction(Database& db) : db_(db) {
    db_.impl_->begin();
}
Transaction::~Transaction() {
    if (!done_) db_.impl_->rollback();
}
void Transaction::commit() {
    done_ = true;
    try {
        db_.impl_->commit();
    } catch (...) {
        // SQLite keeps the transaction open when COMMIT fails (busy, disk full): roll it back, or
        // every later statement of this connection would run inside it and never be committed.
        // PostgreSQL: nothing is open any more; rollback() is a no-op there.
        db_.impl_->rollback();
        throw;
    }
}

// --- LeaderLease ------------------------------------------------------------------------------

Migration LeaderLease::migration(int version) {
    return {version,
            "CREATE TABLE IF NOT EXISTS certconn_leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, epoch BIGINT NOT NULL, "
            "expires_at BIGINT NOT NULL)"};
}

LeaderLease::LeaderLease(Database& db, std::string name, std::string holder)
    : db_(db), name_(std::move(name)), holder_(std::move(holder)) {}

std::optional<std::int64_t> LeaderLease::acquire(std::chrono::seconds ttl) {
    const std::string now = db_.now_sql();
    // One statement: take a free or expired lease (epoch + 1) or extend our own live one.
    auto s = db_.prepare("INSERT INTO certconn_leases (name, holder, epoch, expires_at) VALUES ($1, $2, 1, " + now +
                         " + $3) ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, epoch = certconn_leases.epoch + "
                         "CASE WHEN certconn_leases.holder = excluded.holder AND certconn_leases.expires_at >= " +
                         now +
                         " THEN 0 ELSE 1 END, expires_at = excluded.expires_at WHERE certconn_leases.holder = "
                         "excluded.holder OR certconn_leases.expires_at < " +
                         now + " RETURNING epoch");
    s.bind_all(name_, holder_, static_cast<std::int64_t>(ttl.count()));
    if (!s.step()) return std::nullopt;
    return s.integer(0);
}

void LeaderLease::release() {
    auto s = db_.prepare("UPDATE certconn_leases SET expires_at = 0 WHERE name = $1 AND holder = $2");
    s.bind_all(name_, holder_).run();
}

bool LeaderLease::still_held(std::int64_t epoch) {
    const bool pg = db_.backend() == Backend::postgresql;
    auto s = db_.prepare("SELECT 1 FROM certconn_leases WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > " +
                         db_.now_sql() + (pg ? " FOR UPDATE" : ""));
    s.bind_all(name_, holder_, epoch);
    return s.step();
}

std::optional<LeaderLease::Holder> LeaderLease::current() {
    auto s = db_.prepare("SELECT holder, epoch, expires_at - " + db_.now_sql() + " FROM certconn_leases WHERE name = $1");
    s.bind(1, name_);
    if (!s.step()) return std::nullopt;
    return Holder{s.text(0), s.integer(1), s.integer(2)};
}

}  // namespace certconn::sql
