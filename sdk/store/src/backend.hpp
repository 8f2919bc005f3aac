// The two backends behind certconn/sql.hpp.
#pragma once

#include <certconn/sql.hpp>

#include <memory>
#include <string>
#include <string_view>

namespace certconn::sql {

class Statement::Impl {
public:
    virtual ~Impl() = default;
    virtual void bind_text(int i, std::string_view v) = 0;
    virtual void bind_integer(int i, std::int64_t v) = 0;
    virtual void bind_null(int i) = 0;
    virtual bool step() = 0;
    virtual void reset() = 0;
    virtual std::string text(int col) const = 0;
    virtual std::int64_t integer(int col) const = 0;
    virtual bool is_null(int col) const = 0;
    /// Rows the last execution inserted, updated or deleted.
    virtual std::int64_t changes() const = 0;
};

class Database::Impl {
public:
    virtual ~Impl() = default;
    virtual Backend backend() const = 0;
    virtual std::string describe() const = 0;
    virtual std::unique_ptr<Statement::Impl> prepare(std::string_view sql) = 0;
    virtual void exec(std::string_view sql) = 0;
    virtual std::int64_t changes() const = 0;
    virtual void begin() = 0;
    virtual void commit() = 0;
    virtual void rollback() noexcept = 0;
    virtual void checkpoint() = 0;
    virtual const std::string& schema() const = 0;
};

std::unique_ptr<Database::Impl> open_sqlite(const Options& options);
std::unique_ptr<Database::Impl> open_postgresql(const Options& options);

}  // namespace certconn::sql
