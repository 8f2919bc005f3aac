// bench/pkcs — PKCS jobs per second through the whole connector (HTTP intake, tenant queue,
// scheduler, pkcs plugin, ca-local, durable outbox), beside, in the same run:
//   (a) the same pipeline with the openssl command line (genpkey, req, x509 -req,
//       pkcs12 -export, cms -encrypt for the PKCS#12 and the password), and
//   (b) the OpenSSL primitives alone, in-process: key generation, CSR and certificate
//       signatures, PKCS#12 (PBKDF2 + AES + MAC) and the three CMS encryptions of a job.
// Prints one JSON object per (key type, concurrency) and the ratios. Device key: RSA-2048.
// Then the same pipeline with a remote CA behind the pkcs feature: ca-adcs against the AD CS
// stand-in (certsrv over TLS with NTLM) and ca-digicert against the DigiCert ONE stand-in
// (tests/stand-ins/), beside ca-local in the same run, so the per-job cost of a remote CA
// (HTTP, TLS, authentication, the CA's own work) is printed as the difference. The stand-ins
// are Python: their own issuance time is part of that difference, as a real CA's would be.
#include "support/Daemon.hpp"
#include "support/TestCa.hpp"

#include <certconn/crypto.hpp>
#include <certconn/sqlite.hpp>

#include <boost/json.hpp>

#include <openssl/x509v3.h>

#include <atomic>
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

/// Runs `jobs` calls of `fn` spread over `threads` threads; returns jobs per second.
double run_parallel(int jobs, int threads, const std::function<void()>& fn) {
    std::atomic<int> next{0};
    const auto start = Clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([&] {
            while (next.fetch_add(1) < jobs)
                fn();
        });
    for (auto& t : pool)
        t.join();
    return jobs / seconds_since(start);
}

struct Ca {
    crypto::PKey key = crypto::generate_key("p256");
    crypto::Cert cert = self_signed_ca(key.get(), "bench CA");
};

/// The CA's part of a job: verify the CSR, sign a leaf with a random 128-bit serial.
crypto::Cert sign_leaf(const Ca& ca, X509_REQ* csr) {
    X509_REQ_verify(csr, X509_REQ_get0_pubkey(csr));
    crypto::Cert leaf(X509_new());
    X509_set_version(leaf.get(), 2);
    const std::string serial = crypto::random_bytes(16);
    BIGNUM* bn = BN_bin2bn(reinterpret_cast<const unsigned char*>(serial.data()), 16, nullptr);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(leaf.get()));
    BN_free(bn);
    X509_set_subject_name(leaf.get(), X509_REQ_get_subject_name(csr));
    X509_set_issuer_name(leaf.get(), X509_get_subject_name(ca.cert.get()));
    X509_gmtime_adj(X509_getm_notBefore(leaf.get()), 0);
    X509_gmtime_adj(X509_getm_notAfter(leaf.get()), 86400 * 365);
    X509_set_pubkey(leaf.get(), X509_REQ_get0_pubkey(csr));
    X509_sign(leaf.get(), ca.key.get(), EVP_sha256());
    return leaf;
}

/// The crypto of one PKCS job, nothing else: the bound the connector is measured against.
void primitive_job(const std::string& key_type, const Ca& ca, const crypto::Recipient& device, const crypto::Recipient& escrow) {
    crypto::PKey key = crypto::generate_key(key_type);
    const std::string csr_pem = crypto::make_csr_pem(key.get(), "CN=bench,O=Example", {{"email", "bench@example.com"}});
    crypto::Request csr = crypto::load_csr(csr_pem);
    crypto::Cert leaf = sign_leaf(ca, csr.get());
    std::vector<crypto::Cert> chain;
    chain.emplace_back(X509_dup(ca.cert.get()));
    const std::string p12 = crypto::pkcs12_der(key.get(), leaf.get(), chain, "bench-password-123456789", false);
    crypto::cms_encrypt(p12, device);
    crypto::cms_encrypt("bench-password-123456789", device);
    crypto::cms_encrypt(p12, escrow);
}

/// The primitives plus the decodes a job cannot avoid: the device's public key arrives as PEM
/// with each job, the CA parses the CSR, and the issued certificate is parsed to be packed.
/// On OpenSSL 3.0 each decode builds a decoder context; this bound shows what that costs.
void primitive_job_with_decodes(const std::string& key_type, const Ca& ca, const std::string& device_pem,
                                const crypto::Recipient& escrow) {
    const crypto::Recipient device = crypto::Recipient::from_pem(device_pem);
    crypto::PKey key = crypto::generate_key(key_type);
    const std::string csr_pem = crypto::make_csr_pem(key.get(), "CN=bench,O=Example", {{"email", "bench@example.com"}});
    crypto::Request csr = crypto::load_csr(csr_pem);
    crypto::Cert leaf = sign_leaf(ca, csr.get());
    crypto::Cert parsed = crypto::load_certificate(crypto::certificate_pem(leaf.get()));
    std::vector<crypto::Cert> chain;
    chain.emplace_back(X509_dup(ca.cert.get()));
    const std::string p12 = crypto::pkcs12_der(key.get(), parsed.get(), chain, "bench-password-123456789", false);
    crypto::cms_encrypt(p12, device);
    crypto::cms_encrypt("bench-password-123456789", device);
    crypto::cms_encrypt(p12, escrow);
}

/// The same pipeline with the openssl command line, one job in `dir`.
void cli_job(const std::string& key_type, const fs::path& dir, const fs::path& ca_dir) {
    const std::string alg =
        key_type == "p256" ? "-algorithm EC -pkeyopt ec_paramgen_curve:P-256" : "-algorithm RSA -pkeyopt rsa_keygen_bits:2048";
    const std::string d = dir.string(), c = ca_dir.string();
    const std::string script =
        "set -e; cd " + d + "; openssl genpkey " + alg +
        " -out k.pem 2>/dev/null;"
        " openssl req -new -key k.pem -subj '/CN=bench/O=Example' -addext subjectAltName=email:bench@example.com -out r.pem;"
        " openssl x509 -req -in r.pem -CA " +
        c + "/ca.pem -CAkey " + c +
        "/ca.key -set_serial 0x$(openssl rand -hex 16) -days 365 -out c.pem 2>/dev/null;"
        " openssl pkcs12 -export -inkey k.pem -in c.pem -certfile " +
        c +
        "/ca.pem -passout pass:bench-password-123456789 -out p.p12;"
        " openssl cms -encrypt -binary -aes256 -in p.p12 -outform DER -out p.cms -recip " +
        c +
        "/device.crt -keyopt rsa_padding_mode:oaep;"
        " printf bench-password-123456789 > pw; openssl cms -encrypt -binary -aes256 -in pw -outform DER -out pw.cms -recip " +
        c + "/device.crt -keyopt rsa_padding_mode:oaep";
    if (run_shell("bash -c " + shell_quote(script)).exit_code != 0) throw std::runtime_error("openssl pipeline failed in " + d);
}

struct ConnectorRates {
    double intake;      // jobs accepted per second by POST /tenant/v1/jobs (one connection each)
    double processing;  // jobs completed per second once the feature is enabled
};

/// Fills the queue with the pkcs feature disabled, then enables it (SIGHUP) and times the
/// processing alone: claim, key, CSR, issuance, PKCS#12, CMS, outbox, report.
ConnectorRates connector_rate(const std::string& key_type, int concurrency, int jobs, const fs::path& work,
                              const std::string& device_pem, const std::string& backend = "local",
                              const std::string& remote_ca_toml = "") {
    static int runs = 0;  // each run its own directory: a reused job queue would hold earlier jobs
    const fs::path dir =
        work / ("connector-" + backend + "-" + key_type + "-" + std::to_string(concurrency) + "-" + std::to_string(++runs));
    fs::create_directories(dir / "plugins");
    ::chmod(dir.c_str(), 0755);
    install_plugins(dir / "plugins", {"ca-local", "tenant-local", "pkcs", "ca-adcs", "ca-digicert"});
    write_file(dir / "c.toml",
               "[host]\nlisten = \"127.0.0.1:0\"\nplugin_dir = \"plugins\"\nstate_dir = \"state\"\nlog_dir = \"log\"\n"
               "[jobs]\nconcurrency = " +
                   std::to_string(concurrency) + "\n" + test_token_config() +
                   "[tenant]\nplugin = \"local\"\n"
                   "[ca.local]\nplugin = \"local\"\nalgorithm = \"p256\"\n" +
                   remote_ca_toml + "[pkcs]\ndefault_ca = \"" + backend + "\"\nescrow_key = \"" +
                   (work / "ca" / "escrow.key").string() + "\"\n");
    const std::string enabled = read_file(dir / "c.toml");
    write_file(dir / "c.toml", enabled + "[features]\npkcs = false\n");
    Daemon daemon(dir / "c.toml", dir / "daemon.out");
    const json::object status = wait_for_status(daemon, dir / "c.toml");
    if (status.empty()) throw std::runtime_error("connector did not start: " + daemon.output());
    const auto port = static_cast<std::uint16_t>(status.at("port").as_int64());
    const fs::path jobs_db = dir / "state" / "plugins" / "tenant-local" / "jobs.db";
    auto finished = [&]() -> std::int64_t {
        sqlite::Database db(jobs_db, false);
        auto s = db.prepare("SELECT COUNT(*) FROM jobs WHERE status IN ('succeeded','failed')");
        s.step();
        return s.integer(0);
    };
    const auto intake_start = Clock::now();
    for (int i = 0; i < jobs; ++i) {
        const json::object job{{"feature", "pkcs"},
                               {"request", json::object{{"subject", "CN=bench" + std::to_string(i) + ",O=Example"},
                                                        {"sans", json::array{"email:bench@example.com"}},
                                                        {"key_type", key_type},
                                                        {"device_key_pem", device_pem}}}};
        if (http_request(port, "POST", "/tenant/v1/jobs", json::serialize(job), kTestToken).status != 201)
            throw std::runtime_error("submit failed");
    }
    const double intake = jobs / seconds_since(intake_start);
    write_file(dir / "c.toml", enabled);
    daemon.signal(SIGHUP);
    // The clock starts when the first job leaves the queue: reload latency is not throughput.
    auto started = [&] {
        sqlite::Database db(jobs_db, false);
        auto s = db.prepare("SELECT COUNT(*) FROM jobs WHERE status != 'queued'");
        s.step();
        return s.integer(0) > 0;
    };
    if (!eventually(started, std::chrono::seconds(60))) throw std::runtime_error("no job started");
    const auto start = Clock::now();
    auto all_done = [&] { return finished() == jobs; };
    while (!all_done()) {
        if (seconds_since(start) > 600) throw std::runtime_error("jobs did not finish");
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    const double rate = jobs / seconds_since(start);
    sqlite::Database db(jobs_db, false);
    auto failed = db.prepare("SELECT COUNT(*) FROM jobs WHERE status = 'failed'");
    failed.step();
    if (failed.integer(0) != 0) throw std::runtime_error(std::to_string(failed.integer(0)) + " jobs failed");
    daemon.signal(SIGTERM);
    daemon.wait_exit();
    return {intake, rate};
}

/// A stand-in CA (tests/stand-ins/NAME) as a child process, killed at the end.
class StandIn {
public:
    StandIn(const std::vector<std::string>& args, const fs::path& port_file) {
        std::vector<std::string> a = args;
        std::vector<char*> argv;
        for (auto& x : a)
            argv.push_back(x.data());
        argv.push_back(nullptr);
        if (posix_spawnp(&pid_, argv[0], nullptr, nullptr, argv.data(), environ) != 0)
            throw std::runtime_error("cannot start " + args[1]);
        if (!eventually([&] { return fs::exists(port_file) && fs::file_size(port_file) > 0; }, std::chrono::seconds(30)))
            throw std::runtime_error(args[1] + " did not start");
        port = read_file(port_file);
        while (!port.empty() && (port.back() == '\n' || port.back() == ' '))
            port.pop_back();
    }
    ~StandIn() {
        ::kill(pid_, SIGTERM);
        ::waitpid(pid_, nullptr, 0);
    }
    StandIn(const StandIn&) = delete;
    StandIn& operator=(const StandIn&) = delete;
    std::string port;

private:
    pid_t pid_ = -1;
};

/// ca-local, ca-adcs and ca-digicert behind the pkcs feature, in the same run.
void remote_ca_rates(int jobs, const fs::path& work, const std::string& device_pem) {
    const fs::path dir = work / "stand-ins";
    fs::create_directories(dir / "dc");
    const std::string d = dir.string();
    run_shell("cd " + d +
              " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls.key -out tls.pem "
              "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -days 2 2>/dev/null"
              " && printf 'Enr0ll!pass' > enroll.pw && printf 'bench-api-key\n' > api.key && chmod 600 enroll.pw api.key");
    const std::string standins = std::string(SOURCE_DIR) + "/tests/stand-ins/";
    StandIn adcs({"/usr/bin/python3", standins + "adcs/adcs.py", "--cert", d + "/tls.pem", "--key", d + "/tls.key", "--port-file",
                  d + "/adcs.port", "--ca-dir", d + "/adcs-ca"},
                 dir / "adcs.port");
    StandIn digicert({"/usr/bin/python3", standins + "digicert/digicert.py", "--state", d + "/dc", "--cert", d + "/tls.pem",
                      "--key", d + "/tls.key", "--api-key-file", d + "/api.key", "--profile", "prof-instant"},
                     dir / "dc" / "port");
    const std::string adcs_toml = "[ca.adcs]\nplugin = \"adcs\"\nurl = \"https://127.0.0.1:" + adcs.port +
                                  "/certsrv\"\nca_config = \"ca01.corp.test\\\\Stand-in Issuing CA\"\nca_file = \"" + d +
                                  "/tls.pem\"\nauth = \"ntlm\"\nusername = \"CORP\\\\svc-enroll\"\npassword_file = \"" + d +
                                  "/enroll.pw\"\n[ca.adcs.profiles.default]\ntemplate = \"User\"\n";
    const std::string dc_toml = "[ca.digicert]\nplugin = \"digicert\"\nurl = \"https://127.0.0.1:" + digicert.port +
                                "\"\napi_key_file = \"" + d + "/api.key\"\nca_file = \"" + d +
                                "/tls.pem\"\n[ca.digicert.profiles.default]\nprofile_id = \"prof-instant\"\n";
    for (int concurrency : {1, 2}) {
        const double local = connector_rate("p256", concurrency, jobs, work, device_pem).processing;
        for (const auto& [backend, toml] :
             {std::pair{std::string("adcs"), adcs_toml}, std::pair{std::string("digicert"), dc_toml}}) {
            const double remote = connector_rate("p256", concurrency, jobs, work, device_pem, backend, toml).processing;
            const json::object r{{"bench", "pkcs-remote-ca"},
                                 {"backend", backend == "adcs" ? "ca-adcs + AD CS stand-in (certsrv, NTLM, TLS)"
                                                               : "ca-digicert + DigiCert ONE stand-in (REST, API key, TLS)"},
                                 {"issued_key", "p256"},
                                 {"concurrency", concurrency},
                                 {"jobs", jobs},
                                 {"connector_jobs_per_s", std::round(remote * 10) / 10},
                                 {"ca_local_jobs_per_s", std::round(local * 10) / 10},
                                 {"per_job_ms", std::round(1000.0 / remote * 10) / 10},
                                 {"ca_local_per_job_ms", std::round(1000.0 / local * 10) / 10},
                                 {"remote_ca_overhead_ms", std::round((1000.0 / remote - 1000.0 / local) * 10) / 10}};
            std::cout << json::serialize(r) << std::endl;
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
    TempDir work;
    // The device (recipient) key and certificate, the CA for the command-line pipeline, the escrow key.
    const fs::path ca_dir = work / "ca";
    fs::create_directories(ca_dir);
    run_shell("cd " + ca_dir.string() +
              "; openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null"
              "; openssl req -new -x509 -key ca.key -subj /CN=bench-CA -days 2 -out ca.pem"
              "; openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out device.key 2>/dev/null"
              "; openssl req -new -x509 -key device.key -subj /CN=device -days 2 -out device.crt"
              "; openssl pkey -in device.key -pubout -out device.pub"
              "; openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out escrow.key 2>/dev/null");
    const std::string device_pem = read_file(ca_dir / "device.pub");
    const Ca ca;
    const crypto::Recipient device = crypto::Recipient::from_pem(device_pem);
    const crypto::PKey escrow_key = crypto::generate_key("rsa3072");
    const crypto::Recipient escrow = crypto::Recipient::from_pem(crypto::public_key_pem(escrow_key.get()));

    json::array results;
    for (const std::string key_type : {"rsa2048", "p256"}) {
        const bool rsa = key_type == "rsa2048";
        const int connector_jobs = quick ? (rsa ? 20 : 60) : (rsa ? 80 : 600);
        const int primitive_jobs = quick ? (rsa ? 20 : 200) : (rsa ? 80 : 2000);
        const int cli_jobs = quick ? 4 : (rsa ? 12 : 24);
        for (int concurrency : {1, 2}) {
            const double primitive =
                run_parallel(primitive_jobs, concurrency, [&] { primitive_job(key_type, ca, device, escrow); });
            const double with_decodes =
                run_parallel(primitive_jobs, concurrency, [&] { primitive_job_with_decodes(key_type, ca, device_pem, escrow); });
            std::atomic<int> slot{0};
            const double cli = run_parallel(cli_jobs, concurrency, [&] {
                const fs::path d = work / ("cli-" + std::to_string(slot.fetch_add(1)));
                fs::create_directories(d);
                cli_job(key_type, d, ca_dir);
            });
            const ConnectorRates rates = connector_rate(key_type, concurrency, connector_jobs, work.path(), device_pem);
            const double connector = rates.processing;
            json::object r{{"bench", "pkcs"},
                           {"issued_key", key_type},
                           {"concurrency", concurrency},
                           {"connector_jobs_per_s", std::round(connector * 10) / 10},
                           {"intake_jobs_per_s", std::round(rates.intake * 10) / 10},
                           {"openssl_cli_jobs_per_s", std::round(cli * 10) / 10},
                           {"primitive_bound_jobs_per_s", std::round(primitive * 10) / 10},
                           {"vs_openssl_cli", std::round(connector / cli * 10) / 10},
                           {"of_primitive_bound", std::round(connector / primitive * 1000) / 1000},
                           {"bound_with_inherent_decodes_jobs_per_s", std::round(with_decodes * 10) / 10},
                           {"of_bound_with_inherent_decodes", std::round(connector / with_decodes * 1000) / 1000},
                           {"target_vs_openssl_cli", 50},
                           {"target_of_primitive_bound", 0.6}};
            std::cout << json::serialize(r) << std::endl;
            results.push_back(r);
        }
    }
    remote_ca_rates(quick ? 10 : 60, work.path(), device_pem);
    return 0;
}
