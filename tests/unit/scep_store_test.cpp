// The SCEP feature's state on certconn::store: the transaction ledger, pending approvals, the
// renewal ledger and the RA shared by a fleet. Two "instances" are two connections on one store:
// one SQLite file (always) and one PostgreSQL schema (with CERTCONN_TEST_PG_URL, under the ctest
// test "store: ..."), so every behaviour a fleet needs is checked on both backends.
#include "IssuedCertificates.hpp"
#include "PendingRequests.hpp"
#include "SharedRa.hpp"
#include "Store.hpp"
#include "TransactionLedger.hpp"

#include "support/Postgres.hpp"
#include "support/TestFiles.hpp"

#include <certconn/crypto.hpp>
#include <certconn/sqlite.hpp>

#include <catch2/catch.hpp>

#include <openssl/x509.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <random>
#include <set>
#include <thread>
#include <vector>

using namespace certconn;

namespace {

using certconn::test::pg_url;

/// Where two instances meet: a SQLite directory, or a fresh PostgreSQL schema.
struct Place {
    bool postgresql = false;
    std::filesystem::path dir;
    std::string schema;

    sql::Options options(const char* file) const {
        sql::Options o;
        if (postgresql) {
            o.url = pg_url();
            o.schema = schema;
        } else {
            o.sqlite_file = dir / file;
        }
        return o;
    }
    /// One instance's connections (each call: new connections, as another process would have).
    scep::Connections instance() const { return scep::open_stores(options("pending.db"), options("issued.db")); }
};

std::vector<Place> places(const certconn::test::TempDir& dir) {
    std::vector<Place> out{{false, dir.path(), {}}};
    if (!pg_url().empty()) {
        std::random_device rd;
        out.push_back({true, {}, "scep_test_" + std::to_string(rd() % 1000000000)});
    } else {
        WARN("CERTCONN_TEST_PG_URL not set: the PostgreSQL half skipped (ctest runs it under 'store: ...')");
    }
    return out;
}

std::string certificate_for(const std::string& cn) {
    crypto::PKey key = crypto::generate_key("p256");
    crypto::Cert cert(X509_new());
    X509_set_version(cert.get(), 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 7);
    X509_NAME* name = X509_get_subject_name(cert.get());
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
    X509_set_issuer_name(cert.get(), name);
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), 0);
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600);
    X509_set_pubkey(cert.get(), key.get());
    X509_sign(cert.get(), key.get(), EVP_sha256());
    return crypto::certificate_pem(cert.get());
}

}  // namespace

TEST_CASE(
    "scep store: one SCEP transaction sent to several instances at once is issued by one; the others answer with its certificate",
    "[scep][postgresql]") {
    certconn::test::TempDir dir;
    for (const Place& place : places(dir)) {
        INFO((place.postgresql ? "postgresql" : "sqlite"));
        constexpr int kInstances = 6;
        std::vector<scep::Connections> instances;
        for (int i = 0; i < kInstances; ++i)
            instances.push_back(place.instance());
        std::vector<std::unique_ptr<scep::TransactionLedger>> ledgers;
        for (auto& c : instances)
            ledgers.push_back(std::make_unique<scep::TransactionLedger>(c.pending));

        // All at once: exactly one claim, the others see it in progress under the winner's name.
        std::atomic<int> go{0};
        std::vector<scep::Claim> claims(kInstances);
        std::vector<std::thread> threads;
        for (int i = 0; i < kInstances; ++i)
            threads.emplace_back([&, i] {
                ++go;
                while (go.load() < kInstances)
                    std::this_thread::yield();
                claims[static_cast<std::size_t>(i)] = ledgers[static_cast<std::size_t>(i)]->claim(
                    "corp", "TX-1", "scep:corp:enroll:TX-1:aa", "instance-" + std::to_string(i));
            });
        for (auto& t : threads)
            t.join();
        int winners = 0;
        std::string winner;
        for (int i = 0; i < kInstances; ++i)
            if (claims[static_cast<std::size_t>(i)].outcome == scep::Claim::Outcome::claimed) {
                ++winners;
                winner = "instance-" + std::to_string(i);
            }
        REQUIRE(winners == 1);
        for (const auto& c : claims)
            if (c.outcome != scep::Claim::Outcome::claimed) {
                CHECK(c.outcome == scep::Claim::Outcome::in_progress);
                CHECK(c.entry.owner == winner);
                CHECK(c.entry.age_seconds < 60);
            }

        // Another CSR under the same transaction is refused, from any instance, before and after.
        CHECK(ledgers[3]->claim("corp", "TX-1", "scep:corp:enroll:TX-1:bb", "instance-3").outcome ==
              scep::Claim::Outcome::other_request);

        // The winner completes; a resend to any instance gets the winner's certificate.
        const std::string cert = certificate_for("device-1");
        const int w = std::stoi(winner.substr(9));
        ledgers[static_cast<std::size_t>(w)]->complete("corp", "TX-1", "scep:corp:enroll:TX-1:aa", cert, "07");
        for (int i = 0; i < kInstances; ++i) {
            const auto again = ledgers[static_cast<std::size_t>(i)]->claim("corp", "TX-1", "scep:corp:enroll:TX-1:aa",
                                                                           "instance-" + std::to_string(i));
            REQUIRE(again.outcome == scep::Claim::Outcome::issued);
            CHECK(again.entry.certificate_pem == cert);
            CHECK(again.entry.owner == winner);
        }
        CHECK(ledgers[0]->claim("corp", "TX-1", "scep:corp:enroll:TX-1:bb", "instance-0").outcome ==
              scep::Claim::Outcome::other_request);
        // A completed transaction cannot be taken over or released.
        CHECK(ledgers[1]->take_over("corp", "TX-1", 1, "instance-1") == 0);
        // The same transaction id in another profile is another transaction.
        CHECK(ledgers[1]->claim("other", "TX-1", "scep:other:enroll:TX-1:aa", "instance-1").outcome ==
              scep::Claim::Outcome::claimed);
    }
}

TEST_CASE("scep store: a claim whose instance died is taken over by one instance; a released claim is claimed again",
          "[scep][postgresql]") {
    certconn::test::TempDir dir;
    for (const Place& place : places(dir)) {
        INFO((place.postgresql ? "postgresql" : "sqlite"));
        auto a = place.instance(), b = place.instance(), c = place.instance();
        scep::TransactionLedger la(a.pending), lb(b.pending), lc(c.pending);
        const auto first = la.claim("corp", "TX-2", "r2", "a");
        REQUIRE(first.outcome == scep::Claim::Outcome::claimed);
        const auto seen = lb.claim("corp", "TX-2", "r2", "b");
        REQUIRE(seen.outcome == scep::Claim::Outcome::in_progress);
        // b and c both try to take over the claim they saw: one gets it.
        const std::int64_t tb = lb.take_over("corp", "TX-2", seen.entry.attempt, "b");
        const std::int64_t tc = lc.take_over("corp", "TX-2", seen.entry.attempt, "c");
        CHECK(((tb == 2 && tc == 0) || (tb == 0 && tc == 2)));
        // The dead instance's release no longer touches the claim it lost.
        la.release("corp", "TX-2", first.entry.attempt, "a");
        const auto now = lc.claim("corp", "TX-2", "r2", "c");
        REQUIRE(now.outcome == scep::Claim::Outcome::in_progress);
        CHECK(now.entry.attempt == 2);
        // The new owner releases (the CA refused): the next request claims it afresh.
        lb.release("corp", "TX-2", 2, tb == 2 ? "b" : "c");
        lc.release("corp", "TX-2", 2, tb == 2 ? "b" : "c");
        CHECK(la.claim("corp", "TX-2", "r2-other-csr", "a").outcome == scep::Claim::Outcome::claimed);
    }
}

TEST_CASE("scep store: a pending approval recorded by one instance is seen, decided once and polled from another",
          "[scep][postgresql]") {
    certconn::test::TempDir dir;
    for (const Place& place : places(dir)) {
        INFO((place.postgresql ? "postgresql" : "sqlite"));
        auto a = place.instance(), b = place.instance();
        scep::PendingRequests pa(a.pending), pb(b.pending);
        const auto row = pa.add("TX-P", "corp", "not a csr");
        CHECK(row.status == "pending");
        // The same transaction again from the other instance: the first row, unchanged.
        CHECK(pb.add("TX-P", "corp", "another csr").csr_pem == "not a csr");
        const auto listed = pb.list("pending");
        REQUIRE(listed.size() == 1);
        CHECK(listed[0].as_object().at("transaction_id").as_string() == "TX-P");
        CHECK(listed[0].as_object().at("subject").as_string() == "(unreadable request)");
        // Two administrators on two instances: one decision wins.
        CHECK(pb.decide("TX-P", true));
        CHECK_FALSE(pa.decide("TX-P", false));
        CHECK(pa.find("TX-P")->status == "approved");
        CHECK_FALSE(pa.find("TX-unknown"));
        // The CA holds it: at-ca, seen everywhere.
        pa.hold_at_ca("TX-P", "corp", "not a csr");
        CHECK(pb.find("TX-P")->status == "at-ca");
        CHECK(pb.list("pending").empty());

        // The renewal ledger too: recorded on one instance, counted on another.
        scep::IssuedCertificates ia(a.issued), ib(b.issued);
        ia.record({"ca1", "0A", "corp", "0A", 0, "TX-E", "req-e", "2027-01-01T00:00:00Z"});
        ia.record({"ca1", "0B", "corp", "0A", 1, "TX-R1", "req-r1", "2027-01-01T00:00:00Z"});
        ib.record({"ca1", "0B", "corp", "0A", 1, "TX-R1", "req-r1", "2027-01-01T00:00:00Z"});  // resent: no-op
        CHECK(ib.renewals_of("ca1", "0A") == 1);
        CHECK(ib.find("ca1", "0A")->profile == "corp");
        CHECK(ib.find_by_request("ca1", "req-r1")->serial == "0B");
    }
}

TEST_CASE("scep store: two instances creating the RA at once end up with the same RA; a wrong passphrase is a clear error",
          "[scep][postgresql]") {
    certconn::test::TempDir dir;
    const std::string passphrase = "correct horse battery staple";
    for (const Place& place : places(dir)) {
        INFO((place.postgresql ? "postgresql" : "sqlite"));
        auto a = place.instance(), b = place.instance();
        scep::SharedRa ra_a(a.pending), ra_b(b.pending);
        // Each instance makes its own key and offers it, at once.
        scep::RaRecord got_a, got_b;
        crypto::PKey key_a = crypto::generate_key("rsa2048"), key_b = crypto::generate_key("rsa2048");
        std::thread ta([&] {
            got_a = ra_a.offer("corp", {scep::encrypt_private_key(key_a.get(), passphrase),
                                        crypto::make_csr_pem(key_a.get(), "CN=RA", {}), "", "", "instance-a"});
        });
        std::thread tb([&] {
            got_b = ra_b.offer("corp", {scep::encrypt_private_key(key_b.get(), passphrase),
                                        crypto::make_csr_pem(key_b.get(), "CN=RA", {}), "", "", "instance-b"});
        });
        ta.join();
        tb.join();
        REQUIRE(got_a.key_pem == got_b.key_pem);
        CHECK(got_a.created_by == got_b.created_by);
        CHECK(got_a.key_pem.find("-----BEGIN ENCRYPTED PRIVATE KEY-----") != std::string::npos);
        // Both decrypt the stored key to the winner's key.
        crypto::PKey loaded_a = scep::decrypt_private_key(got_a.key_pem, passphrase, "RA key");
        crypto::PKey loaded_b = scep::decrypt_private_key(got_b.key_pem, passphrase, "RA key");
        CHECK(EVP_PKEY_eq(loaded_a.get(), loaded_b.get()) == 1);
        CHECK(EVP_PKEY_eq(loaded_a.get(), (got_a.created_by == "instance-a" ? key_a : key_b).get()) == 1);
        // The certificate: the first to record it wins, the other gets the same one.
        const std::string cert_a = certificate_for("RA a"), cert_b = certificate_for("RA b");
        CHECK(ra_a.set_certificate("corp", cert_a, "chain").certificate_pem == cert_a);
        CHECK(ra_b.set_certificate("corp", cert_b, "chain").certificate_pem == cert_a);
        CHECK(ra_b.find("corp")->certificate_pem == cert_a);
        CHECK(ra_a.profiles() == std::vector<std::string>{"corp"});
        CHECK_FALSE(ra_a.find("other"));

        // Another instance with a different passphrase: refused, naming what, never the passphrase.
        try {
            scep::decrypt_private_key(got_a.key_pem, "wrong passphrase", "the shared RA key of profile 'corp'");
            FAIL("a wrong passphrase decrypted the RA key");
        } catch (const std::runtime_error& e) {
            const std::string what = e.what();
            CHECK(what.find("the shared RA key of profile 'corp' does not decrypt") != std::string::npos);
            CHECK(what.find("wrong passphrase") == std::string::npos);
            CHECK(what.find(passphrase) == std::string::npos);
        }
        CHECK_THROWS_WITH(scep::decrypt_private_key(crypto::private_key_pem(key_a.get()), passphrase, "RA key"),
                          Catch::Contains("not an encrypted PKCS#8"));
    }
}

TEST_CASE("scep store: a passphrase file is read without its newline; an empty, short, open or missing one is a clear error",
          "[scep]") {
    certconn::test::TempDir dir;
    const auto file = dir.path() / "ra.pass";
    crypto::write_file_atomic(file, "s3cret passphrase of the RA\n", 0600);
    CHECK(scep::read_passphrase_file(file.string()) == "s3cret passphrase of the RA");
    crypto::write_file_atomic(file, "\n", 0600);
    CHECK_THROWS_WITH(scep::read_passphrase_file(file.string()), Catch::Contains("is empty"));
    crypto::write_file_atomic(file, "s3cret\n", 0600);
    CHECK_THROWS_WITH(scep::read_passphrase_file(file.string()),
                      Catch::Contains("at least 16 characters") && !Catch::Contains("s3cret"));
    crypto::write_file_atomic(file, "s3cret passphrase of the RA\n", 0644);  // others may read it
    CHECK_THROWS_WITH(scep::read_passphrase_file(file.string()),
                      Catch::Contains("accessible by others") && Catch::Contains("0644"));
    CHECK_THROWS_WITH(scep::read_passphrase_file((dir.path() / "missing").string()), Catch::Contains("cannot read"));
}

TEST_CASE("scep store: pending.db and issued.db of an earlier version keep their rows and gain the ledger", "[scep]") {
    certconn::test::TempDir dir;
    {
        // Exactly what the earlier version created and wrote.
        sqlite::Database old(dir.path() / "pending.db", true);
        old.exec(R"(CREATE TABLE IF NOT EXISTS pending (
        transaction_id TEXT PRIMARY KEY,
        profile TEXT NOT NULL,
        csr_pem TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now')),
        decided_at TEXT))");
        old.exec("INSERT INTO pending (transaction_id, profile, csr_pem) VALUES ('TX-OLD', 'corp', 'csr')");
        sqlite::Database issued(dir.path() / "issued.db", true);
        issued.exec(R"(CREATE TABLE IF NOT EXISTS issued (
        ca TEXT NOT NULL, serial TEXT NOT NULL, profile TEXT NOT NULL, original_serial TEXT NOT NULL,
        renewal_count INTEGER NOT NULL, transaction_id TEXT NOT NULL, request_id TEXT NOT NULL, not_after TEXT NOT NULL,
        issued_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now')), PRIMARY KEY (ca, serial)))");
        issued.exec(
            "INSERT INTO issued VALUES ('ca1', '01', 'corp', '01', 0, 'TX-OLD', 'req', '2027-01-01T00:00:00Z', "
            "'2026-01-01T00:00:00Z')");
    }
    Place place{false, dir.path(), {}};
    auto c = place.instance();
    scep::PendingRequests pending(c.pending);
    CHECK(pending.find("TX-OLD")->status == "pending");
    scep::IssuedCertificates issued(c.issued);
    CHECK(issued.find("ca1", "01")->transaction_id == "TX-OLD");
    scep::TransactionLedger ledger(c.pending);
    CHECK(ledger.claim("corp", "TX-NEW", "r", "me").outcome == scep::Claim::Outcome::claimed);
    CHECK(c.pending->db.schema_version() == 2);
    CHECK(c.issued->db.schema_version() == 1);
    // The files stay where they were.
    CHECK(std::filesystem::exists(dir.path() / "pending.db"));
    CHECK(std::filesystem::exists(dir.path() / "issued.db"));
}
