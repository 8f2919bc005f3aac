// The pkcs key journal opens with PRAGMA secure_delete=ON and truncates its WAL after deleting:
// once a delivered job's entry is flushed, its private key is in neither journal.db nor -wal.
#include "KeyJournal.hpp"
#include "support/TestFiles.hpp"

#include <certconn/crypto.hpp>

#include <catch2/catch.hpp>

using namespace certconn;
using certconn::test::TempDir;

namespace {

/// A line from the middle of a PEM key body: 64 base64 characters only that key has.
std::string body_line(const std::string& pem) {
    const auto first = pem.find('\n') + 1;
    const auto second = pem.find('\n', first) + 1;
    return pem.substr(second, pem.find('\n', second) - second);
}

bool file_contains(const std::filesystem::path& file, const std::string& needle) {
    return test::read_file(file).find(needle) != std::string::npos;
}

}  // namespace

TEST_CASE("a deleted journal entry's key is gone from journal.db and journal.db-wal") {
    TempDir dir;
    const auto db = dir / "journal.db";
    const crypto::PKey key = crypto::generate_key("rsa2048");
    const std::string pem = crypto::private_key_pem(key.get());
    const std::string marker = body_line(pem);
    REQUIRE(marker.size() == 64);
    {
        pkcs::KeyJournal journal(db);
        journal.put("job-1", pkcs::JournalEntry{sdk::Secret(std::string_view(pem)), "csr-1"});
        journal.put("job-2", pkcs::JournalEntry{sdk::Secret(std::string_view("other key")), "csr-2"});
        const auto found = journal.find("job-1");
        REQUIRE(found);
        CHECK(found->key_pem.equals(std::string_view(pem)));
        // Written: the key is on disk (in the WAL until a checkpoint).
        CHECK((file_contains(db, marker) || file_contains(dir / "journal.db-wal", marker)));

        journal.remove("job-1");
        journal.flush();  // deletes and checkpoints (TRUNCATE)
        CHECK_FALSE(journal.find("job-1"));
        REQUIRE(journal.find("job-2"));  // the rest of the journal is intact
        CHECK_FALSE(file_contains(db, marker));
        CHECK_FALSE(file_contains(dir / "journal.db-wal", marker));
        CHECK_FALSE(file_contains(db, "BEGIN PRIVATE KEY"));
    }
    CHECK_FALSE(file_contains(db, marker));
    CHECK_FALSE(file_contains(dir / "journal.db-wal", marker));
}

TEST_CASE("secure_delete is an option of the SQLite helper - without it a deleted row lingers (the control)") {
    // Debian's SQLite defaults to secure_delete=ON, other builds do not: the journal asks for it.
    TempDir dir;
    auto pragma = [](sqlite::Database& d) {
        auto s = d.prepare("PRAGMA secure_delete");
        s.step();
        return s.integer(0);
    };
    sqlite::Database secure(dir / "secure.db", sqlite::Database::Options{true, true});
    CHECK(pragma(secure) == 1);

    const std::string marker = "SECRET-MARKER-" + crypto::hex_encode(crypto::random_bytes(16));
    {
        sqlite::Database db(dir / "plain.db");
        db.exec("PRAGMA secure_delete=OFF");
        db.exec("CREATE TABLE t (v TEXT)");
        db.exec("CREATE TABLE keep (v TEXT)");
        db.prepare("INSERT INTO t (v) VALUES (?)").bind_all(marker).run();
        db.prepare("INSERT INTO keep (v) VALUES ('x')").run();
        db.exec("DELETE FROM t");
        CHECK(db.checkpoint_truncate());
    }
    // This is what the journal test rules out: the deleted bytes are still in the file.
    CHECK(file_contains(dir / "plain.db", marker));
}
