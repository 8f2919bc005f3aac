// bench/crl — what revocation costs at scale, beside a peer in the same run:
//   (a) generating and signing a CRL with 1,000,000 revoked entries (100,000 with --quick):
//       ca-local's RevocationService (reads its SQLite record, builds, signs, writes DER)
//       against `openssl ca -gencrl` over the same entries in an index.txt;
//   (b) revocations per second through the whole job path (HTTP intake, tenant queue,
//       scheduler, revoke feature, host CA routing, ca-local's synchronous=FULL record), with
//       the revoke feature's batches and with batches turned off (batch_size = 1).
// Prints one JSON object per measurement.
#include "IssuanceStore.hpp"
#include "Revocation.hpp"
#include "support/Daemon.hpp"
#include "support/TestCa.hpp"

#include <certconn/crypto.hpp>
#include <certconn/sqlite.hpp>

#include <boost/json.hpp>

#include <openssl/x509v3.h>

#include <fstream>
#include <iostream>

using namespace certconn;
using namespace certconn::test;
namespace json = boost::json;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
}
double round3(double v) {
    return std::round(v * 1000) / 1000;
}

std::string random_serial() {
    std::string b = crypto::random_bytes(16);
    b[0] = static_cast<char>((b[0] & 0x7f) | 0x01);
    return ca_local::IssuanceStore::canonical_serial(crypto::hex_encode(b));
}

const char* reason_for(std::size_t i) {
    return i % 4 == 0 ? "keyCompromise" : i % 4 == 1 ? "superseded" : "unspecified";
}

json::object crl_generation(std::size_t entries, const fs::path& dir) {
    fs::create_directories(dir);
    // The CA, for us in-process and for openssl as files.
    crypto::PKey key = crypto::generate_key("p256");
    const crypto::Cert ca = self_signed_ca(key.get(), "bench CRL CA", 30);
    write_file(dir / "ca.pem", crypto::certificate_pem(ca.get()));
    crypto::write_file_atomic(dir / "ca.key", crypto::private_key_pem(key.get()), 0600);

    // The same revoked entries in our record and in openssl ca's index.txt.
    ca_local::IssuanceStore store(dir / "issued.db");
    std::ofstream index(dir / "index.txt");
    std::vector<ca_local::IssuedCertificate> batch;
    const auto fill_start = Clock::now();
    for (std::size_t i = 0; i < entries; ++i) {
        ca_local::IssuedCertificate c;
        c.serial = random_serial();
        c.subject = "CN=device" + std::to_string(i);
        c.sans = "[]";
        c.not_before = "2026-01-01T00:00:00Z";
        c.not_after = "2027-01-01T00:00:00Z";
        c.profile = "default";
        c.requester = "bench";
        c.certificate_pem = "-";
        c.revocation_reason = reason_for(i);
        c.revoked_at = "2026-06-01T12:00:00Z";
        const std::string reason = c.revocation_reason == "unspecified" ? "" : "," + c.revocation_reason;
        index << "R\t270101000000Z\t260601120000Z" << reason << "\t" << c.serial << "\tunknown\t/CN=device" << i << "\n";
        batch.push_back(std::move(c));
        if (batch.size() == 50000) {
            store.insert_revoked_bulk(batch);
            batch.clear();
        }
    }
    store.insert_revoked_bulk(batch);
    index.close();
    const double fill_s = seconds_since(fill_start);

    ca_local::RevocationSettings settings;
    settings.ca_name = "bench";
    ca_local::RevocationService service(settings, ca.get(), key.get(), store, dir, nullptr, false);
    const auto ours_start = Clock::now();
    const auto der = service.regenerate();
    const double ours_s = seconds_since(ours_start);
    const auto* p = reinterpret_cast<const unsigned char*>(der->data());
    std::unique_ptr<X509_CRL, crypto::Deleter<X509_CRL_free>> crl(d2i_X509_CRL(nullptr, &p, static_cast<long>(der->size())));
    if (!crl || X509_CRL_verify(crl.get(), key.get()) != 1 ||
        static_cast<std::size_t>(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl.get()))) != entries)
        throw std::runtime_error("our CRL does not verify or lacks entries");

    write_file(dir / "ca.cnf", "[ca]\ndefault_ca = bench\n[bench]\ndatabase = " + (dir / "index.txt").string() +
                                   "\ncrlnumber = " + (dir / "crlnumber").string() + "\ncertificate = " +
                                   (dir / "ca.pem").string() + "\nprivate_key = " + (dir / "ca.key").string() +
                                   "\ndefault_md = sha256\ndefault_crl_days = 2\nunique_subject = no\ncrl_extensions = crl_ext\n"
                                   "[crl_ext]\nauthorityKeyIdentifier = keyid:always\n");
    write_file(dir / "crlnumber", "01\n");
    const auto cli_start = Clock::now();
    const CliResult cli =
        run_shell("openssl ca -gencrl -batch -config " + (dir / "ca.cnf").string() + " -out " + (dir / "openssl.pem").string());
    const double cli_s = seconds_since(cli_start);
    if (cli.exit_code != 0) throw std::runtime_error("openssl ca -gencrl failed: " + cli.output);
    run_shell("openssl crl -in " + (dir / "openssl.pem").string() + " -outform DER -out " + (dir / "openssl.der").string());
    const auto cli_bytes = fs::file_size(dir / "openssl.der");

    return {{"bench", "crl"},
            {"measure", "crl_generation"},
            {"entries", entries},
            {"connector_generate_s", round3(ours_s)},
            {"connector_crl_bytes", der->size()},
            {"openssl_ca_gencrl_s", round3(cli_s)},
            {"openssl_crl_bytes", cli_bytes},
            {"vs_openssl_ca", std::round(cli_s / ours_s * 10) / 10},
            {"record_fill_s", round3(fill_s)}};
}

json::object revocation_rate(const fs::path& work, int jobs, bool batches) {
    const fs::path dir = work / (batches ? "revoke-batched" : "revoke-unbatched");
    fs::create_directories(dir / "plugins");
    ::chmod(dir.c_str(), 0755);
    install_plugins(dir / "plugins", {"ca-local", "tenant-local", "revoke"});
    const std::string base =
        "[host]\nlisten = \"127.0.0.1:0\"\nplugin_dir = \"plugins\"\nstate_dir = \"state\"\nlog_dir = \"log\"\n"
        "[jobs]\nconcurrency = 8\n" +
        test_token_config() +
        "[tenant]\nplugin = \"local\"\n[ca.local]\nplugin = \"local\"\nalgorithm = \"p256\"\n"
        "[revoke]\nbatch_size = " +
        std::string(batches ? "100" : "1") + "\n";
    write_file(dir / "c.toml", base + "[features]\nrevoke = false\n");
    // Start once so the CA exists, then give it `jobs` certificates to revoke.
    {
        Daemon daemon(dir / "c.toml", dir / "daemon.out");
        if (wait_for_status(daemon, dir / "c.toml").empty())
            throw std::runtime_error("connector did not start: " + daemon.output());
        daemon.signal(SIGTERM);
        daemon.wait_exit();
    }
    std::vector<std::string> serials;
    {
        sqlite::Database db(dir / "state" / "plugins" / "ca-local" / "local" / "issued.db", false);
        sqlite::Transaction tx(db);
        auto s = db.prepare(
            "INSERT INTO certificates (serial, subject, sans, not_before, not_after, profile, requester, certificate_pem) "
            "VALUES (?, 'CN=x', '[]', '2026-01-01T00:00:00Z', '2027-01-01T00:00:00Z', 'default', 'bench', '-')");
        for (int i = 0; i < jobs; ++i) {
            serials.push_back(random_serial());
            s.bind(1, serials.back()).run();
            s.reset();
        }
        tx.commit();
    }
    Daemon daemon(dir / "c.toml", dir / "daemon.out");
    const json::object status = wait_for_status(daemon, dir / "c.toml");
    if (status.empty()) throw std::runtime_error("connector did not start: " + daemon.output());
    const auto port = static_cast<std::uint16_t>(status.at("port").as_int64());
    for (int i = 0; i < jobs; ++i) {
        const json::object job{
            {"feature", "revoke"},
            {"request", json::object{{"serial", serials[static_cast<std::size_t>(i)]}, {"reason", "superseded"}}}};
        if (http_request(port, "POST", "/tenant/v1/jobs", json::serialize(job), kTestToken).status != 201)
            throw std::runtime_error("submit failed");
    }
    const fs::path jobs_db = dir / "state" / "plugins" / "tenant-local" / "jobs.db";
    auto count = [&](const char* where) {
        sqlite::Database db(jobs_db, false);
        auto s = db.prepare(std::string("SELECT COUNT(*) FROM jobs WHERE ") + where);
        s.step();
        return s.integer(0);
    };
    write_file(dir / "c.toml", base);
    daemon.signal(SIGHUP);
    // The clock starts when the first job leaves the queue: reload latency is not throughput.
    if (!eventually([&] { return count("status != 'queued'") > 0; }, std::chrono::seconds(60)))
        throw std::runtime_error("no job started");
    const auto start = Clock::now();
    while (count("status IN ('succeeded','failed')") < jobs) {
        if (seconds_since(start) > 600) throw std::runtime_error("jobs did not finish");
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    const double rate = jobs / seconds_since(start);
    const auto failed = count("status = 'failed'");
    daemon.signal(SIGTERM);
    daemon.wait_exit();
    if (failed != 0) throw std::runtime_error(std::to_string(failed) + " revoke jobs failed");
    return {{"bench", "crl"},       {"measure", "revocations_through_jobs"},          {"batches", batches}, {"jobs", jobs},
            {"job_concurrency", 8}, {"revocations_per_s", std::round(rate * 10) / 10}};
}

}  // namespace

int main(int argc, char** argv) {
    const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
    TempDir work;
    try {
        std::cout << json::serialize(crl_generation(quick ? 100000 : 1000000, work / "crl")) << std::endl;
        const json::object unbatched = revocation_rate(work.path(), quick ? 200 : 1000, false);
        std::cout << json::serialize(unbatched) << std::endl;
        json::object batched = revocation_rate(work.path(), quick ? 200 : 1000, true);
        batched["vs_unbatched"] =
            std::round(batched["revocations_per_s"].as_double() / unbatched.at("revocations_per_s").as_double() * 10) / 10;
        std::cout << json::serialize(batched) << std::endl;
    } catch (const std::exception& e) {
        std::cerr << "bench-crl: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
