// bench/scep — successful SCEP enrollments per second and latency percentiles at concurrency 1, 2, 8 and 32,
// against the connector's SCEP server and, in the same run, micromdm's scepserver (package
// `scep`), plus the OpenSSL bound: the RSA private-key operations one enrollment costs the
// connector (RA decrypt + RA sign of the reply + CA signature of the certificate).
// Runs itself inside a private network namespace (unshare -n; scepserver binds every
// interface), so nothing listens beyond this process tree. Requests are real PKCSReq messages
// built with OpenSSL (plugins/scep/ScepClientMessage) from device keys generated beforehand.
#include "ScepClientMessage.hpp"
#include "support/Daemon.hpp"

#include <boost/json.hpp>

#include <openssl/pkcs7.h>

#include <algorithm>
#include <atomic>
#include <iostream>

using namespace certconn;
using namespace certconn::test;
namespace json = boost::json;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

struct Device {
    crypto::PKey key;
    crypto::Cert self;
};

Device make_device(int i) {
    Device d;
    d.key = crypto::generate_key("rsa2048");
    d.self = scep::self_signed(d.key.get(), "CN=bench-device-" + std::to_string(i));
    return d;
}

/// A PKCS#10 with the challenge, DER. Every enrollment gets its own subject: scepserver refuses a
/// second certificate for a subject that already has a valid one.
std::string csr_der(EVP_PKEY* key, const std::string& cn) {
    return scep::csr_with_challenge(key, cn, "benchpw");
}

/// The certificate requests are encrypted to: ours answers CA+RA PKCS#7 (RA first), scepserver one DER certificate.
crypto::Cert recipient(std::uint16_t port, const std::string& path) {
    const auto r = http_request(port, "GET", path + "?operation=GetCACert");
    if (r.status != 200) throw std::runtime_error("GetCACert failed on port " + std::to_string(port));
    return std::move(scep::getcacert_certificates(r.body).front());
}

struct Result {
    double per_second = 0, p50_ms = 0, p99_ms = 0;
    int failed = 0;
};

Result run(std::uint16_t port, const std::string& path, X509* ra, const std::vector<Device>& devices, int concurrency,
           int requests, int& serial, std::string* a_success = nullptr) {
    std::vector<std::string> messages;
    for (int i = 0; i < requests; ++i) {
        const Device& d = devices[static_cast<std::size_t>(i) % devices.size()];
        const std::string id = "bench-" + std::to_string(++serial);
        const scep::ClientRequest req{scep::MessageType::PKCSReq, id, {}, csr_der(d.key.get(), id), nullptr, nullptr};
        messages.push_back(scep::build_request(req, d.self.get(), d.key.get(), ra));
    }
    std::vector<double> latencies(static_cast<std::size_t>(requests));
    std::atomic<int> next{0}, failed{0};
    const auto start = Clock::now();
    std::vector<std::thread> threads;
    for (int t = 0; t < concurrency; ++t)
        threads.emplace_back([&] {
            for (int i; (i = next.fetch_add(1)) < requests;) {
                const auto t0 = Clock::now();
                bool ok = false;
                try {
                    const auto r =
                        http_request(port, "POST", path + "?operation=PKIOperation", messages[static_cast<std::size_t>(i)]);
                    ok = r.status == 200 && scep::read_reply(r.body, ra).status == "0";
                    if (ok && a_success && i == 0) *a_success = r.body;
                } catch (const std::exception&) {
                }
                latencies[static_cast<std::size_t>(i)] = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
                if (!ok) ++failed;
            }
        });
    for (auto& t : threads)
        t.join();
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    std::sort(latencies.begin(), latencies.end());
    auto pct = [&](double q) {
        return latencies[std::min(latencies.size() - 1, static_cast<std::size_t>(q * static_cast<double>(latencies.size())))];
    };
    // Successful enrollments per second: a server that fails fast must not look faster.
    return {(requests - failed.load()) / seconds, pct(0.50), pct(0.99), failed.load()};
}

/// In-process: the private-key operations of one enrollment on the connector's side, and
/// (`client_reply` non-empty) also what the load generator does with each answer (parse and
/// verify the CertRep), since it runs on the same cores.
double primitive_bound(int threads, int per_thread, const Device& device, const std::string& client_reply = {},
                       X509* reply_ra = nullptr) {
    crypto::PKey ra_key = crypto::generate_key("rsa2048");
    crypto::Cert ra = scep::self_signed(ra_key.get(), "CN=bound RA");
    crypto::PKey ca_key = crypto::generate_key("rsa3072");
    const scep::ClientRequest req{scep::MessageType::PKCSReq, "bound", {}, csr_der(device.key.get(), "bound"), nullptr, nullptr};
    const std::string message = scep::build_request(req, device.self.get(), device.key.get(), ra.get());
    const auto start = Clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([&] {
            for (int i = 0; i < per_thread; ++i) {
                auto parsed = scep::parse_request(message, ra_key.get(), ra.get(), false);        // RA decrypt
                crypto::Cert leaf = scep::self_signed(ca_key.get(), "CN=leaf");                   // CA signature
                scep::failure_reply(parsed, scep::FailInfo::BadRequest, ra.get(), ra_key.get());  // RA signature
                if (!client_reply.empty()) scep::read_reply(client_reply, reply_ra);              // the load generator's part
            }
        });
    for (auto& t : pool)
        t.join();
    return threads * per_thread / std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
    if (!std::getenv("CERTCONN_BENCH_NETNS")) {  // re-run inside a private network namespace
        const std::string self = fs::canonical("/proc/self/exe").string();
        std::string args;
        for (int i = 1; i < argc; ++i)
            args += " " + shell_quote(argv[i]);
        const std::string inner = "ip link set lo up && CERTCONN_BENCH_NETNS=1 exec " + shell_quote(self) + args;
        execlp("unshare", "unshare", "-n", "--", "sh", "-c", inner.c_str(), nullptr);
        std::cerr << "bench-scep: cannot run unshare -n (needs root or CAP_SYS_ADMIN)\n";
        return 2;
    }
    const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
    TempDir work;

    // The connector: ca-local (RSA-3072), a SCEP profile with a static challenge.
    fs::create_directories(work / "connector" / "plugins");
    ::chmod((work / "connector").c_str(), 0755);
    install_plugins(work / "connector" / "plugins", {"ca-local", "tenant-local", "scep"});
    const fs::path config = work / "connector" / "c.toml";
    write_file(
        config,
        "[host]\nlisten = \"127.0.0.1:0\"\nplugin_dir = \"plugins\"\nstate_dir = \"state\"\nlog_dir = \"log\"\nworkers = 32\n"
        "[tenant]\nplugin = \"local\"\nscep_challenges = { bench = \"benchpw\" }\n"
        "[ca.local]\nplugin = \"local\"\nalgorithm = \"rsa3072\"\n"
        "[scep.profiles.bench]\npath = \"/scep\"\nca = \"local\"\nmax_concurrent_requests = 64\n");
    Daemon connector(config, work / "connector" / "daemon.out");
    const auto status = wait_for_status(connector, config);
    if (status.empty()) throw std::runtime_error("connector did not start: " + connector.output());
    const auto port = static_cast<std::uint16_t>(status.at("port").as_int64());

    // micromdm scepserver: its CA (RSA-3072, like ours) is also its RA.
    const fs::path depot = work / "depot";
    if (run_shell("scepserver ca -init -depot " + depot.string() + " -keySize 3072").exit_code != 0)
        throw std::runtime_error("scepserver ca -init failed");
    const std::uint16_t peer_port = 18190;
    const pid_t peer = fork();
    if (peer == 0) {
        const std::string d = depot.string(), p = std::to_string(peer_port);
        freopen((work / "scepserver.out").c_str(), "w", stderr);
        execlp("scepserver", "scepserver", "-depot", d.c_str(), "-port", p.c_str(), "-challenge", "benchpw", nullptr);
        _exit(127);
    }
    if (!eventually([&] {
            try {
                return http_request(peer_port, "GET", "/scep?operation=GetCACaps").status == 200;
            } catch (...) {
                return false;
            }
        }))
        throw std::runtime_error("scepserver did not start");

    std::vector<Device> devices;
    for (int i = 0; i < 8; ++i)
        devices.push_back(make_device(i));
    const crypto::Cert ours_ra = recipient(port, "/scep");
    const crypto::Cert peer_ra = recipient(peer_port, "/scep");
    int serial = 0;
    const int cores = static_cast<int>(std::thread::hardware_concurrency());
    for (int concurrency : {1, 2, 8, 32}) {
        const int requests = quick ? std::max(20, 4 * concurrency) : std::max(100, 10 * concurrency);
        std::string a_reply;
        const Result ours = run(port, "/scep", ours_ra.get(), devices, concurrency, requests, serial, &a_reply);
        const Result theirs = run(peer_port, "/scep", peer_ra.get(), devices, concurrency, requests, serial);
        const double bound = primitive_bound(std::min(concurrency, cores), quick ? 20 : 60, devices[0]);
        // The same machine also runs the load generator: its share lowers what any server can reach here.
        const double shared_bound =
            a_reply.empty() ? 0
                            : primitive_bound(std::min(concurrency, cores), quick ? 20 : 60, devices[0], a_reply, ours_ra.get());
        auto r1 = [](double v) { return std::round(v * 10) / 10; };
        json::object line{{"bench", "scep"},
                          {"concurrency", concurrency},
                          {"requests", requests},
                          {"connector", json::object{{"enrollments_per_s", r1(ours.per_second)},
                                                     {"p50_ms", r1(ours.p50_ms)},
                                                     {"p99_ms", r1(ours.p99_ms)},
                                                     {"failed", ours.failed}}},
                          {"scepserver", json::object{{"enrollments_per_s", r1(theirs.per_second)},
                                                      {"p50_ms", r1(theirs.p50_ms)},
                                                      {"p99_ms", r1(theirs.p99_ms)},
                                                      {"failed", theirs.failed}}},
                          {"vs_scepserver", r1(ours.per_second / theirs.per_second)},
                          {"p99_vs_scepserver", std::round(ours.p99_ms / theirs.p99_ms * 100) / 100},
                          {"primitive_bound_per_s", r1(bound)},
                          {"of_primitive_bound", std::round(ours.per_second / bound * 1000) / 1000},
                          {"bound_with_load_generator_per_s", r1(shared_bound)},
                          {"scepserver_x3_of_that_bound",
                           shared_bound > 0 ? std::round(3 * theirs.per_second / shared_bound * 1000) / 1000 : 0.0},
                          {"target_vs_scepserver", 3},
                          {"target_of_primitive_bound", 0.5}};
        std::cout << json::serialize(line) << std::endl;
    }
    kill(peer, SIGTERM);
    waitpid(peer, nullptr, 0);
    connector.signal(SIGTERM);
    connector.wait_exit();
    return 0;
}
