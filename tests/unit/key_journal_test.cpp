// The pkcs key journal opens with PRAGMA secure_delete=ON and truncates its WAL after deleting:
// once a delivered job's entry is flushed, its private key is in neither journal.db nor -wal.
// With a shared store (PostgreSQL) the journal is the fleet's: an instance re-running a job that
// another (dead) instance started reuses its key, stored encrypted under [pkcs] shared_key_file.
#include "KeyJournal.hpp"
#include "support/Postgres.hpp"
#include "support/TestFiles.hpp"

#include <certconn/crypto.hpp>
#include <certconn/sqlite.hpp>

#include <catch2/catch.hpp>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <cstdlib>
#include <random>
#include <thread>

using namespace certconn;
using certconn::test::TempDir;

namespace {

/// A line from the middle of a PEM key body: 64 base64 characters only that key has.
std::string body_line(const std::string& pem) {
    const auto first = pem.find('\n') + 1;
    const auto second = pem.find('\n', first) + 1;
    return pem.substr(second, pem.find('\n', second) - second);
}

using certconn::test::pg_url;

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

TEST_CASE("a journal.db of an earlier version keeps its entries") {
    TempDir dir;
    const auto file = dir / "journal.db";
    {
        // Exactly what the earlier version created and wrote.
        sqlite::Database old(file, sqlite::Database::Options{true, true});
        old.exec(R"(CREATE TABLE IF NOT EXISTS journal (
        job_id TEXT PRIMARY KEY,
        key_pem TEXT NOT NULL,
        csr_pem TEXT NOT NULL,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now'))))");
        old.prepare("INSERT INTO journal (job_id, key_pem, csr_pem) VALUES ('job-old', 'old key', 'old csr')").run();
        old.prepare(
               "INSERT INTO journal (job_id, key_pem, csr_pem, created_at) VALUES ('job-stale', 'k', 'c', "
               "'2020-01-01T00:00:00Z')")
            .run();
    }
    pkcs::KeyJournal journal(file);
    CHECK_FALSE(journal.shared());
    const auto found = journal.find("job-old");
    REQUIRE(found);
    CHECK(found->key_pem.equals(std::string_view("old key")));
    CHECK(found->csr_pem == "old csr");
    CHECK_FALSE(journal.find("job-stale"));  // purged by age, as before
    // put keeps the first writer's entry.
    CHECK(journal.put("job-old", pkcs::JournalEntry{sdk::Secret(std::string_view("new key")), "new csr"})
              .key_pem.equals(std::string_view("old key")));
}

TEST_CASE("pkcs key journal on a shared store: another instance reuses the key, racing puts agree, stored encrypted",
          "[postgresql]") {
    if (pg_url().empty()) {
        WARN("CERTCONN_TEST_PG_URL not set: skipped (ctest runs it under 'store: ...')");
        return;
    }
    std::random_device rd;
    sql::Options options;
    options.url = pg_url();
    options.schema = "pkcs_test_" + std::to_string(rd() % 1000000000);
    const std::string passphrase = "correct horse battery staple";

    // A shared store without a passphrase is refused.
    CHECK_THROWS_WITH(pkcs::KeyJournal(options), Catch::Contains("needs a passphrase"));

    const crypto::PKey key = crypto::generate_key("p256");
    const std::string pem = crypto::private_key_pem(key.get());
    const std::string csr = crypto::make_csr_pem(key.get(), "CN=job-1", {});
    {
        // Instance a runs the job, journals its key, and dies.
        pkcs::KeyJournal a(options, sdk::Secret(std::string_view(passphrase)));
        CHECK(a.shared());
        const auto stored = a.put("job-1", pkcs::JournalEntry{sdk::Secret(std::string_view(pem)), csr});
        CHECK(stored.key_pem.equals(std::string_view(pem)));
    }
    // Instance b re-runs it: it finds a's key and CSR (what the CA issued the certificate for).
    pkcs::KeyJournal b(options, sdk::Secret(std::string_view(passphrase)));
    const auto found = b.find("job-1");
    REQUIRE(found);
    CHECK(found->csr_pem == csr);
    const crypto::PKey loaded = crypto::load_private_key(found->key_pem.reveal());
    CHECK(EVP_PKEY_eq(loaded.get(), key.get()) == 1);
    // b's own put (had it made a key) loses to the stored one.
    const crypto::PKey other = crypto::generate_key("p256");
    const auto kept = b.put("job-1", pkcs::JournalEntry{sdk::Secret(crypto::private_key_pem(other.get())), "other csr"});
    CHECK(EVP_PKEY_eq(crypto::load_private_key(kept.key_pem.reveal()).get(), key.get()) == 1);
    CHECK(kept.csr_pem == csr);

    // Two instances racing the same job (both found nothing): both end up with one key.
    {
        constexpr int kRacers = 4;
        std::vector<std::unique_ptr<pkcs::KeyJournal>> journals;
        std::vector<crypto::PKey> keys;
        for (int i = 0; i < kRacers; ++i) {
            journals.push_back(std::make_unique<pkcs::KeyJournal>(options, sdk::Secret(std::string_view(passphrase))));
            keys.push_back(crypto::generate_key("p256"));
        }
        journals[0]->find("warm-up");  // migrated before the race
        std::vector<std::string> got(kRacers), csrs(kRacers);
        std::vector<std::thread> threads;
        for (int i = 0; i < kRacers; ++i)
            threads.emplace_back([&, i] {
                auto e = journals[i]->put("job-race", pkcs::JournalEntry{sdk::Secret(crypto::private_key_pem(keys[i].get())),
                                                                         "csr-" + std::to_string(i)});
                got[i] = std::string(e.key_pem.reveal());
                csrs[i] = e.csr_pem;
            });
        for (auto& t : threads)
            t.join();
        int winners = 0;
        for (int i = 0; i < kRacers; ++i) {
            CHECK(got[i] == got[0]);
            CHECK(csrs[i] == csrs[0]);
            winners += EVP_PKEY_eq(crypto::load_private_key(got[0]).get(), keys[i].get()) == 1;
        }
        CHECK(winners == 1);
        CHECK(csrs[0] == "csr-" + std::to_string([&] {
                             for (int i = 0; i < kRacers; ++i)
                                 if (EVP_PKEY_eq(crypto::load_private_key(got[0]).get(), keys[i].get()) == 1) return i;
                             return -1;
                         }()));
    }

    // An instance configured with another passphrase: a clear error, never the passphrase.
    {
        const std::string wrong = "incorrect horse battery staple";
        pkcs::KeyJournal c(options, sdk::Secret(std::string_view(wrong)));
        try {
            c.find("job-1");
            FAIL("a wrong passphrase decrypted the journaled key");
        } catch (const crypto::CryptoError& e) {
            const std::string what = e.what();
            CHECK(what.find("the journaled key of job job-1") != std::string::npos);
            CHECK(what.find("does not decrypt with this passphrase") != std::string::npos);
            CHECK(what.find(wrong) == std::string::npos);
            CHECK(what.find(passphrase) == std::string::npos);
        }
    }

    // What PostgreSQL holds: only the encrypted PKCS#8, never the key in the clear.
    {
        sql::Database db = sql::Database::open(options);
        auto s = db.prepare("SELECT key_pem FROM journal ORDER BY job_id");
        int rows = 0;
        const std::string marker = body_line(pem);
        while (s.step()) {
            ++rows;
            const std::string stored = s.text(0);
            CHECK(stored.find("BEGIN PRIVATE KEY") == std::string::npos);
            CHECK(stored.find("BEGIN ENCRYPTED PRIVATE KEY") != std::string::npos);
            CHECK(stored.find(marker) == std::string::npos);
        }
        CHECK(rows == 2);
    }

    // Delivered: removed for every instance.
    b.remove("job-1");
    b.flush();
    pkcs::KeyJournal d(options, sdk::Secret(std::string_view(passphrase)));
    CHECK_FALSE(d.find("job-1"));
    REQUIRE(d.find("job-race"));
    sql::Database::open(options).exec("DROP SCHEMA " + options.schema + " CASCADE");
}

TEST_CASE("passphrase files: trimmed, and refused when empty, short, accessible by others or missing") {
    TempDir dir;
    const auto file = dir / "pass";
    crypto::write_file_atomic(file, "correct horse battery staple\r\n", 0600);
    CHECK(crypto::read_passphrase_file(file, "[pkcs] shared_key_file") == "correct horse battery staple");
    crypto::write_file_atomic(file, "correct horse battery staple\n", 0640);  // a group may read it
    CHECK(crypto::read_passphrase_file(file) == "correct horse battery staple");
    crypto::write_file_atomic(file, "correct horse battery staple\n", 0644);
    CHECK_THROWS_WITH(crypto::read_passphrase_file(file, "[pkcs] shared_key_file"),
                      Catch::Contains("[pkcs] shared_key_file " + file.string()) && Catch::Contains("accessible by others") &&
                          !Catch::Contains("correct horse"));
    crypto::write_file_atomic(file, "short one\n", 0600);
    CHECK_THROWS_WITH(crypto::read_passphrase_file(file),
                      Catch::Contains("at least 16 characters") && !Catch::Contains("short one"));
    crypto::write_file_atomic(file, " \n\n", 0600);
    CHECK_THROWS_WITH(crypto::read_passphrase_file(file), Catch::Contains("is empty"));
    crypto::write_file_atomic(file, std::string(5000, 'x'), 0600);
    CHECK_THROWS_WITH(crypto::read_passphrase_file(file), Catch::Contains("longer than 4096 bytes"));
    CHECK_THROWS_WITH(crypto::read_passphrase_file(dir / "missing"), Catch::Contains("cannot read"));
}

TEST_CASE("encrypted private key PEM: PKCS#8 PBES2 AES-256-CBC, round trip, wrong passphrase and plain PEM refused") {
    const crypto::PKey key = crypto::generate_key("rsa2048");
    const std::string pem = crypto::encrypt_private_key_pem(key.get(), "correct horse battery staple");
    CHECK(pem.find("-----BEGIN ENCRYPTED PRIVATE KEY-----") != std::string::npos);
    const crypto::PKey back = crypto::decrypt_private_key_pem(pem, "correct horse battery staple");
    CHECK(EVP_PKEY_eq(back.get(), key.get()) == 1);
    // The scheme: PBES2 with PBKDF2 and AES-256-CBC (read back with OpenSSL's own parser).
    {
        const std::string b64 = [&] {
            std::string body;
            std::size_t pos = pem.find('\n') + 1;
            while (pos < pem.size() && pem.compare(pos, 5, "-----") != 0) {
                const auto end = pem.find('\n', pos);
                body += pem.substr(pos, end - pos);
                pos = end + 1;
            }
            return body;
        }();
        const std::string der = crypto::base64_decode(b64);
        const auto* p = reinterpret_cast<const unsigned char*>(der.data());
        X509_SIG* sig = d2i_X509_SIG(nullptr, &p, static_cast<long>(der.size()));
        REQUIRE(sig);
        const X509_ALGOR* alg = nullptr;
        X509_SIG_get0(sig, &alg, nullptr);
        CHECK(OBJ_obj2nid(alg->algorithm) == NID_pbes2);
        auto* pbe2 = static_cast<PBE2PARAM*>(ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(PBE2PARAM), alg->parameter));
        REQUIRE(pbe2);
        CHECK(OBJ_obj2nid(pbe2->keyfunc->algorithm) == NID_id_pbkdf2);
        CHECK(OBJ_obj2nid(pbe2->encryption->algorithm) == NID_aes_256_cbc);
        PBE2PARAM_free(pbe2);
        X509_SIG_free(sig);
    }
    CHECK_THROWS_WITH(crypto::decrypt_private_key_pem(pem, "incorrect horse battery staple", "the key of job 7"),
                      Catch::Contains("the key of job 7 does not decrypt with this passphrase") && !Catch::Contains("horse"));
    CHECK_THROWS_WITH(crypto::decrypt_private_key_pem(crypto::private_key_pem(key.get()), "correct horse battery staple"),
                      Catch::Contains("not an encrypted PKCS#8 PEM key"));
    CHECK_THROWS_AS(crypto::encrypt_private_key_pem(key.get(), ""), std::invalid_argument);
}
