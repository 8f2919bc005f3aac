// The PostgreSQL server a test may use: tests/support/with-postgresql.sh sets CERTCONN_TEST_PG_URL.
#pragma once

#include <cstdlib>
#include <random>
#include <string>

namespace certconn::test {

/// The server's URL, or "" when none was started (tests tagged [postgresql] then skip).
inline std::string pg_url() {
    const char* u = std::getenv("CERTCONN_TEST_PG_URL");
    return u ? u : "";
}

/// A schema name no other test run uses: `<base>_<random>`.
inline std::string unique_schema(const std::string& base) {
    std::random_device rd;
    return base + "_" + std::to_string(rd() % 1000000000);
}

}  // namespace certconn::test
