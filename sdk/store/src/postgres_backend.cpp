// PostgreSQL backend of certconn/sql.hpp over libpq (C API: no C++ ABI or exception of a client
// library can cross the plugin boundary). Only unnamed statements (PQexecParams) and no session
// state besides the startup options, so a pooler in transaction mode can sit in between.
#include "backend.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <optional>
#include <vector>

namespace certconn::sql {
namespace {

using Clock = std::chrono::steady_clock;

constexpr unsigned kInt8Oid = 20;
constexpr unsigned kTextOid = 25;

struct ResultDeleter {
    void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

bool starts_with_word(std::string_view sql, std::string_view word) {
    const auto at = sql.find_first_not_of(" \t\r\n(");
    if (at == std::string_view::npos || sql.size() - at < word.size()) return false;
    for (std::size_t i = 0; i < word.size(); ++i)
        if (std::toupper(static_cast<unsigned char>(sql[at + i])) != word[i]) return false;
    return true;
}

Error::Kind kind_of_sqlstate(std::string_view state) {
    if (state.substr(0, 2) == "23") return Error::Kind::constraint;
    if (state == "40001" || state == "40P01" || state == "55P03" || state == "57014") return Error::Kind::busy;
    if (state.substr(0, 2) == "08" || state == "57P01" || state == "57P02" || state == "57P03" || state == "53300")
        return Error::Kind::connection;
    return Error::Kind::other;
}

std::string trimmed(const char* message) {
    std::string s = message ? message : "";
    while (!s.empty() && (s.back() == '\n' || s.back() == ' '))
        s.pop_back();
    for (auto& c : s)
        if (c == '\n') c = ' ';
    return s;
}

class PostgresDatabase;

class PostgresStatement final : public Statement::Impl {
public:
    PostgresStatement(PostgresDatabase& db, std::string_view sql) : db_(db), sql_(sql) {}
    void bind_text(int i, std::string_view v) override { set(i, std::string(v), kTextOid); }
    void bind_integer(int i, std::int64_t v) override { set(i, std::to_string(v), kInt8Oid); }
    void bind_null(int i) override { set(i, std::nullopt, 0); }
    bool step() override;
    std::int64_t changes() const override {
        const char* n = result_ ? PQcmdTuples(result_.get()) : nullptr;
        return (n && *n) ? std::stoll(n) : 0;
    }
    void reset() override {
        result_.reset();
        row_ = -1;
        values_.clear();
        types_.clear();
    }
    std::string text(int col) const override {
        check_row(col);
        return std::string(PQgetvalue(result_.get(), row_, col), static_cast<std::size_t>(PQgetlength(result_.get(), row_, col)));
    }
    std::int64_t integer(int col) const override {
        check_row(col);
        if (PQgetisnull(result_.get(), row_, col)) return 0;
        const char* p = PQgetvalue(result_.get(), row_, col);
        const auto n = static_cast<std::size_t>(PQgetlength(result_.get(), row_, col));
        std::int64_t v = 0;
        const auto [end, ec] = std::from_chars(p, p + n, v);
        if (ec == std::errc{} && end != p) return v;                       // "123", or numeric "123.0" read up to the point
        if (n == 1 && (*p == 't' || *p == 'f')) return *p == 't' ? 1 : 0;  // boolean
        throw Error(Error::Kind::other, "column " + std::to_string(col) + " is not an integer");
    }
    bool is_null(int col) const override {
        check_row(col);
        return PQgetisnull(result_.get(), row_, col) != 0;
    }

private:
    void set(int i, std::optional<std::string> v, unsigned oid) {
        if (i < 1 || i > 1000) throw Error(Error::Kind::other, "SQL parameter $" + std::to_string(i) + " out of range");
        const auto at = static_cast<std::size_t>(i - 1);
        if (values_.size() <= at) {
            values_.resize(at + 1);
            types_.resize(at + 1, 0);
        }
        values_[at] = std::move(v);
        types_[at] = oid;
    }
    void check_row(int col) const {
        if (!result_ || row_ < 0 || row_ >= PQntuples(result_.get()) || col < 0 || col >= PQnfields(result_.get()))
            throw Error(Error::Kind::other, "no such row or column " + std::to_string(col));
    }
    PostgresDatabase& db_;
    std::string sql_;
    std::vector<std::optional<std::string>> values_;
    std::vector<unsigned> types_;
    Result result_;
    int row_ = -1;
};

class PostgresDatabase final : public Database::Impl {
public:
    explicit PostgresDatabase(const Options& options) : options_(options) {
        char* err = nullptr;
        PQconninfoOption* parsed = PQconninfoParse(options.url.c_str(), &err);
        if (parsed == nullptr) {
            const std::string why = trimmed(err);
            PQfreemem(err);
            throw Error(Error::Kind::other, "store url is not a PostgreSQL connection string: " + why);
        }
        std::string where;
        for (const PQconninfoOption* o = parsed; o->keyword != nullptr; ++o) {
            const std::string_view k = o->keyword;
            if (o->val == nullptr || *o->val == '\0') continue;
            if (k == "host" || k == "hostaddr" || k == "port" || k == "dbname" || k == "user" || k == "sslmode" ||
                k == "target_session_attrs")
                where += " " + std::string(k) + "=" + o->val;
        }
        PQconninfoFree(parsed);
        describe_ = "postgresql" + where + " schema=" + options.schema;
    }
    ~PostgresDatabase() override {
        if (conn_) PQfinish(conn_);
    }
    PostgresDatabase(const PostgresDatabase&) = delete;
    PostgresDatabase& operator=(const PostgresDatabase&) = delete;

    Backend backend() const override { return Backend::postgresql; }
    std::string describe() const override { return describe_; }
    std::unique_ptr<Statement::Impl> prepare(std::string_view sql) override {
        return std::make_unique<PostgresStatement>(*this, sql);
    }
    void exec(std::string_view sql) override {
        PGconn* c = connection();
        const std::string s(sql);
        Result r(PQexec(c, s.c_str()));
        finish(r, sql, false);
    }
    std::int64_t changes() const override { return changes_; }
    void begin() override {
        exec("BEGIN");
        in_transaction_ = true;
    }
    void commit() override {
        PGconn* c = connection();
        Result r(PQexec(c, "COMMIT"));
        in_transaction_ = false;
        finish(r, "COMMIT", true);
        // COMMIT of a transaction that failed earlier answers ROLLBACK, not an error.
        if (std::string_view(PQcmdStatus(r.get())) != "COMMIT")
            throw Error(Error::Kind::other, "transaction was rolled back by the database (an earlier statement failed)");
    }
    void rollback() noexcept override {
        in_transaction_ = false;
        broken_in_transaction_ = false;
        if (conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK) return;
        Result r(PQexec(conn_, "ROLLBACK"));
    }
    void checkpoint() override {}
    const std::string& schema() const override { return options_.schema; }

    PGresult* execute(const std::string& sql, const std::vector<std::optional<std::string>>& values,
                      const std::vector<unsigned>& types) {
        PGconn* c = connection();
        std::vector<const char*> ptrs(values.size());
        for (std::size_t i = 0; i < values.size(); ++i)
            ptrs[i] = values[i] ? values[i]->c_str() : nullptr;
        Result r(PQexecParams(c, sql.c_str(), static_cast<int>(values.size()), types.empty() ? nullptr : types.data(),
                              ptrs.data(), nullptr, nullptr, 0));
        finish(r, sql, false);
        return r.release();
    }

private:
    // Connects (or reconnects after a failure, no sooner than the backoff allows).
    PGconn* connection() {
        if (conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK) return conn_;
        if (in_transaction_ || broken_in_transaction_)
            throw Error(Error::Kind::connection, "lost the connection to " + describe_ + " inside a transaction");
        const auto now = Clock::now();
        if (now < next_attempt_)
            throw Error(Error::Kind::connection,
                        "cannot reach " + describe_ + " (" + last_error_ + "); next attempt in " +
                            std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(next_attempt_ - now).count()) +
                            " ms");
        if (conn_) {
            PQfinish(conn_);
            conn_ = nullptr;
        }
        // Only the store's own schema: a table can never land in (or be read from) public by mistake.
        std::string startup = "-c search_path=" + (options_.schema.empty() ? std::string("public") : options_.schema);
        if (options_.statement_timeout.count() > 0)
            startup += " -c statement_timeout=" + std::to_string(options_.statement_timeout.count());
        const std::string timeout = std::to_string(std::max<std::int64_t>(1, options_.connect_timeout.count()));
        std::vector<const char*> keys{"dbname",          "application_name", "connect_timeout",     "options",
                                      "keepalives",      "keepalives_idle",  "keepalives_interval", "keepalives_count",
                                      "tcp_user_timeout"};
        std::vector<const char*> vals{options_.url.c_str(),
                                      options_.application_name.c_str(),
                                      timeout.c_str(),
                                      startup.c_str(),
                                      "1",
                                      "10",
                                      "5",
                                      "3",
                                      "15000"};
        if (!options_.password.empty()) {
            keys.push_back("password");
            vals.push_back(options_.password.c_str());
        }
        keys.push_back(nullptr);
        vals.push_back(nullptr);
        conn_ = PQconnectdbParams(keys.data(), vals.data(), 1);
        if (conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK) {
            last_error_ = conn_ ? trimmed(PQerrorMessage(conn_)) : std::string("out of memory");
            backoff_ =
                backoff_.count() == 0 ? std::chrono::milliseconds(250) : std::min(backoff_ * 2, std::chrono::milliseconds(10000));
            next_attempt_ = Clock::now() + backoff_;
            throw Error(Error::Kind::connection, "cannot reach " + describe_ + ": " + last_error_);
        }
        backoff_ = std::chrono::milliseconds(0);
        PQsetNoticeProcessor(
            conn_, [](void*, const char*) {}, nullptr);
        return conn_;
    }

    void finish(const Result& r, std::string_view sql, bool is_commit) {
        const ExecStatusType st = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            const char* n = PQcmdTuples(r.get());
            changes_ = (n && *n) ? std::stoll(n) : 0;
            return;
        }
        changes_ = 0;
        const std::string state = r ? [&] {
            const char* s = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE);
            return std::string(s ? s : "");
        }()
                                    : std::string();
        const std::string message = trimmed(r ? PQresultErrorMessage(r.get()) : PQerrorMessage(conn_));
        const bool broken = conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK;
        if (broken) {
            const bool was_in_transaction = in_transaction_;
            in_transaction_ = false;
            // Until rollback(): the rest of this transaction must not run on a new connection.
            broken_in_transaction_ = was_in_transaction && !is_commit;
            last_error_ = message;
            const bool read = starts_with_word(sql, "SELECT");
            const Error::Kind kind =
                is_commit || (!was_in_transaction && !read) ? Error::Kind::outcome_unknown : Error::Kind::connection;
            throw Error(kind,
                        std::string(kind == Error::Kind::outcome_unknown ? "the outcome of a write is unknown: " : "") +
                            "lost the connection to " + describe_ + ": " + message,
                        state);
        }
        Error::Kind kind = kind_of_sqlstate(state);
        if (state == "25P02") kind = Error::Kind::busy;  // an earlier statement of this transaction failed
        throw Error(kind, "SQL failed: " + message + " [" + state + "] (" + std::string(sql.substr(0, 200)) + ")", state);
    }

    Options options_;
    std::string describe_;
    PGconn* conn_ = nullptr;
    bool in_transaction_ = false;
    bool broken_in_transaction_ = false;
    std::int64_t changes_ = 0;
    std::chrono::milliseconds backoff_{0};
    Clock::time_point next_attempt_{};
    std::string last_error_;
};

bool PostgresStatement::step() {
    if (!result_) {
        result_.reset(db_.execute(sql_, values_, types_));
        row_ = -1;
    }
    ++row_;
    return row_ < PQntuples(result_.get());
}

}  // namespace

std::unique_ptr<Database::Impl> open_postgresql(const Options& options) {
    return std::make_unique<PostgresDatabase>(options);
}

}  // namespace certconn::sql
