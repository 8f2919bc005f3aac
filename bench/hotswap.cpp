// bench/hotswap — what a hot swap costs the requests running through it. The real daemon serves
// SCEP enrollments (concurrency 8, as bench-scep) and PKCS jobs (submitted and awaited
// continuously, as bench-pkcs) for the whole run. After a steady-state phase, the bench swaps
// scep, pkcs and ca-local in turn, 20 rounds: each time it installs a different build of the
// plugin by rename over the same file name, sends SIGHUP and waits until the operational log
// shows PluginSwapped (event 120) for that build before the next.
//
// A "different build" is the shipped file's bytes plus a trailing unique nonce: the ELF loader
// ignores bytes after the last section, so the code is the same, but the SHA-256 differs, so the
// host treats it as a new build (its own module path, its own dlopen image) and runs the whole
// path: copy into the module store, probe child with init, quiesce, init, publish, drain, unload.
//
// Prints JSON lines: per workload and phase (steady, swapping) the successful and failed
// requests with p50/p99 latency, then a summary: failed requests (target 0), the p99 ratio
// swapping/steady (target <= 2), publish-to-unload time of the old generations (from the event
// timestamps: PluginSwapped to the PluginUnloaded of the module it replaced), PluginStillMapped
// (117) events, and how many module files the daemon still maps at the end.
#include "ScepClientMessage.hpp"
#include "support/Daemon.hpp"
#include "support/ScepRenewal.hpp"

#include <certconn/crypto.hpp>

#include <boost/json.hpp>

#include <openssl/evp.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <ctime>
#include <iostream>
#include <map>
#include <mutex>
#include <set>

using namespace certconn;
using namespace certconn::test;
namespace json = boost::json;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kScepConcurrency = 8;
constexpr int kPkcsInFlight = 2;  // PKCS jobs submitted and awaited at once (one per submitter thread)
constexpr auto kPkcsPoll = std::chrono::milliseconds(10);
constexpr double kTargetP99Ratio = 2.0;

double ms_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}

double round_to(double v, double unit) {
    return std::round(v / unit) * unit;
}

std::string sha256_hex(const std::string& bytes) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(bytes.data(), bytes.size(), md, &len, EVP_sha256(), nullptr) != 1) throw std::runtime_error("SHA-256 failed");
    return crypto::hex_encode(std::string_view(reinterpret_cast<const char*>(md), len));
}

/// One request of a load generator: when it started (since the bench's t0), how long it took,
/// and why it failed.
struct Sample {
    double start_ms = 0;
    double latency_ms = 0;
    bool ok = false;
    std::string error;
};

/// Samples of one load thread; merged after the run.
struct Recorder {
    std::mutex mutex;
    std::vector<Sample> samples;
    void add(Sample s) {
        std::lock_guard lock(mutex);
        samples.push_back(std::move(s));
    }
};

/// An operational event: its timestamp (ms since the epoch, from the "time" field), id, level
/// and fields.
struct Event {
    std::int64_t time_ms = 0;
    std::int64_t id = 0;
    std::string name, level;
    json::object fields;
    std::string field(const char* key) const {
        const auto* v = fields.if_contains(key);
        return v && v->is_string() ? std::string(v->as_string()) : std::string();
    }
};

/// "2026-11-24T22:30:01.123Z" -> ms since the epoch (the event log's format: UTC, milliseconds).
std::int64_t parse_time_ms(std::string_view t) {
    auto field = [&](std::size_t at, std::size_t len) {
        int v = -1;
        const char* end = t.data() + at + len;
        if (t.size() < at + len || std::from_chars(t.data() + at, end, v).ptr != end)
            throw std::runtime_error("unexpected event time '" + std::string(t) + "'");
        return v;
    };
    if (t.size() != 24 || t[4] != '-' || t[10] != 'T' || t[19] != '.' || t[23] != 'Z')
        throw std::runtime_error("unexpected event time '" + std::string(t) + "'");
    std::tm tm{};
    tm.tm_year = field(0, 4) - 1900;
    tm.tm_mon = field(5, 2) - 1;
    tm.tm_mday = field(8, 2);
    tm.tm_hour = field(11, 2);
    tm.tm_min = field(14, 2);
    tm.tm_sec = field(17, 2);
    return static_cast<std::int64_t>(timegm(&tm)) * 1000 + field(20, 3);
}

/// Reads <log_dir>/operational.jsonl as it grows (whole lines only).
class OperationalLog {
public:
    explicit OperationalLog(fs::path file) : file_(std::move(file)) {}

    /// Appends the events written since the last call to `events()`; returns how many.
    std::size_t poll() {
        std::error_code ec;
        const auto size = fs::file_size(file_, ec);
        if (ec || size <= offset_) return 0;
        std::ifstream in(file_, std::ios::binary);
        in.seekg(static_cast<std::streamoff>(offset_));
        std::string chunk(static_cast<std::size_t>(size - offset_), '\0');
        in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
        chunk.resize(static_cast<std::size_t>(in.gcount()));
        const auto last_newline = chunk.rfind('\n');
        if (last_newline == std::string::npos) return 0;
        offset_ += last_newline + 1;
        std::size_t added = 0;
        std::size_t begin = 0;
        while (begin <= last_newline) {
            const std::size_t end = chunk.find('\n', begin);
            const std::string_view line(chunk.data() + begin, end - begin);
            begin = end + 1;
            if (line.empty()) continue;
            const json::object o = json::parse(line).as_object();
            Event e;
            e.time_ms = parse_time_ms(o.at("time").as_string());
            e.id = o.at("id").to_number<std::int64_t>();
            e.name = std::string(o.at("name").as_string());
            e.level = std::string(o.at("level").as_string());
            if (const auto* f = o.if_contains("fields"); f && f->is_object()) e.fields = f->as_object();
            events_.push_back(std::move(e));
            ++added;
        }
        return added;
    }
    const std::vector<Event>& events() const { return events_; }

private:
    fs::path file_;
    std::uintmax_t offset_ = 0;
    std::vector<Event> events_;
};

/// The module store's directory of a module path: ".../modules/feature-scep/0.3.0-0123456789ab.so"
/// -> "feature-scep" (kind and name: tenant-local and ca-local are both named "local").
std::string module_key(const std::string& module) {
    return fs::path(module).parent_path().filename().string();
}

struct Percentiles {
    int ok = 0, failed = 0;
    double p50 = 0, p99 = 0, max = 0;
    std::map<std::string, int> errors;
};

/// Latency percentiles of the successful requests that started in [from, to) ms; failures counted.
Percentiles summarize(const std::vector<Sample>& samples, double from, double to) {
    Percentiles p;
    std::vector<double> latencies;
    for (const auto& s : samples) {
        if (s.start_ms < from || s.start_ms >= to) continue;
        if (s.ok) {
            latencies.push_back(s.latency_ms);
        } else {
            ++p.failed;
            ++p.errors[s.error];
        }
    }
    p.ok = static_cast<int>(latencies.size());
    if (latencies.empty()) return p;
    std::sort(latencies.begin(), latencies.end());
    auto pct = [&](double q) {
        return latencies[std::min(latencies.size() - 1, static_cast<std::size_t>(q * static_cast<double>(latencies.size())))];
    };
    p.p50 = pct(0.50);
    p.p99 = pct(0.99);
    p.max = latencies.back();
    return p;
}

/// One JSON line; numbers in plain decimal (Boost.JSON 1.81 writes doubles as 7.34E1).
std::string line_of(const json::value& v) {
    switch (v.kind()) {
        case json::kind::object: {
            std::string out = "{";
            for (const auto& [k, x] : v.get_object())
                out += (out.size() > 1 ? "," : "") + json::serialize(json::string(k)) + ":" + line_of(x);
            return out + "}";
        }
        case json::kind::array: {
            std::string out = "[";
            for (const auto& x : v.get_array())
                out += (out.size() > 1 ? "," : "") + line_of(x);
            return out + "]";
        }
        case json::kind::double_: {
            char buf[64];
            const auto r = std::to_chars(buf, buf + sizeof buf, v.get_double(), std::chars_format::fixed, 3);
            std::string text(buf, r.ptr);
            while (text.back() == '0')
                text.pop_back();
            if (text.back() == '.') text.pop_back();
            return text;
        }
        default: return json::serialize(v);
    }
}

struct Swap {
    std::string plugin;  // file name without .so
    std::string sha12;
    Clock::time_point signalled;
    Clock::time_point seen;  // when the bench read PluginSwapped (or gave up)
    bool swapped = false;
    std::string problem;
};

int run(int argc, char** argv) {
    bool quick = false;
    fs::path keep_log;  // --keep-log FILE: a copy of the daemon's operational.jsonl, to study a run
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--quick") {
            quick = true;
        } else if (arg == "--keep-log" && i + 1 < argc) {
            keep_log = argv[++i];
        } else {
            std::cerr << "usage: bench-hotswap [--quick] [--keep-log FILE]\n";
            return 2;
        }
    }
    const int rounds = 20;  // even --quick swaps 60 times: the swaps are what is measured
    const auto warmup = std::chrono::seconds(quick ? 2 : 3);
    const auto steady = std::chrono::seconds(quick ? 5 : 15);
    TempDir work;

    // The connector: ca-local (RSA-3072, as bench-scep), tenant-local, pkcs and scep, from a
    // private copy of the plugin directory the bench rewrites.
    const fs::path home = work / "connector";
    const fs::path plugins = home / "plugins";
    fs::create_directories(plugins);
    ::chmod(home.c_str(), 0755);
    install_plugins(plugins, {"ca-local", "tenant-local", "pkcs", "scep"});
    const crypto::PKey escrow = crypto::generate_key("rsa3072");
    crypto::write_file_atomic(home / "escrow.key", crypto::private_key_pem(escrow.get()), 0600);
    const crypto::PKey device_key = crypto::generate_key("rsa2048");
    const std::string device_pem = crypto::public_key_pem(device_key.get());
    const fs::path config = home / "c.toml";
    write_file(
        config,
        "[host]\nlisten = \"127.0.0.1:0\"\nplugin_dir = \"plugins\"\nstate_dir = \"state\"\nlog_dir = \"log\"\nworkers = 32\n"
        "[jobs]\npoll_interval_ms = 10\n" +
            test_token_config() +
            "[tenant]\nplugin = \"local\"\nscep_challenges = { bench = \"benchpw\" }\n"
            "[ca.local]\nplugin = \"local\"\nalgorithm = \"rsa3072\"\n"
            "[scep.profiles.bench]\npath = \"/scep\"\nca = \"local\"\nmax_concurrent_requests = 64\n"
            "[pkcs]\nescrow_key = \"" +
            (home / "escrow.key").string() + "\"\n");
    Daemon daemon(config, home / "daemon.out");
    const json::object status = wait_for_status(daemon, config);
    if (status.empty()) throw std::runtime_error("connector did not start: " + daemon.output());
    const auto port = static_cast<std::uint16_t>(status.at("port").as_int64());
    OperationalLog oplog(home / "log" / "operational.jsonl");

    const auto cacert = http_request(port, "GET", "/scep?operation=GetCACert");
    if (cacert.status != 200) throw std::runtime_error("GetCACert answered " + std::to_string(cacert.status));
    const crypto::Cert ra = std::move(scep::getcacert_certificates(cacert.body).front());

    std::vector<crypto::PKey> scep_keys;
    std::vector<crypto::Cert> scep_selves;
    scep_keys.reserve(kScepConcurrency);
    scep_selves.reserve(kScepConcurrency);
    for (int i = 0; i < kScepConcurrency; ++i) {
        scep_keys.push_back(crypto::generate_key("rsa2048"));
        scep_selves.push_back(scep::self_signed(scep_keys.back().get(), "CN=hotswap-device-" + std::to_string(i)));
    }

    const auto t0 = Clock::now();
    std::atomic<bool> stop{false};
    Recorder scep_samples, pkcs_samples;
    std::vector<std::thread> load;
    load.reserve(kScepConcurrency + kPkcsInFlight);
    // SCEP: each thread builds a PKCSReq (not timed), posts it and times the answer; a success
    // is a CertRep SUCCESS whose envelope decrypts to the certificate for this request's subject.
    for (int t = 0; t < kScepConcurrency; ++t)
        load.emplace_back([&, t] {
            EVP_PKEY* key = scep_keys[static_cast<std::size_t>(t)].get();
            X509* self = scep_selves[static_cast<std::size_t>(t)].get();
            for (int n = 0; !stop.load(); ++n) {
                const std::string cn = "hotswap-" + std::to_string(t) + "-" + std::to_string(n);
                std::string message;
                try {
                    const scep::ClientRequest req{
                        scep::MessageType::PKCSReq, cn, {}, scep::csr_with_challenge(key, cn, "benchpw"), nullptr, nullptr};
                    message = scep::build_request(req, self, key, ra.get());
                } catch (const std::exception& e) {
                    std::cerr << "bench-hotswap: cannot build a SCEP request: " << e.what() << "\n";
                    return;
                }
                Sample s;
                const auto start = Clock::now();
                s.start_ms = ms_between(t0, start);
                try {
                    const auto r = http_request(port, "POST", "/scep?operation=PKIOperation", message);
                    s.latency_ms = ms_between(start, Clock::now());
                    if (r.status != 200) {
                        s.error = "HTTP " + std::to_string(r.status);
                    } else {
                        const scep::ClientReply reply = scep::read_reply(r.body, ra.get());
                        if (reply.status != "0") {
                            s.error = "pkiStatus " + reply.status + " failInfo " + reply.fail_info;
                        } else {
                            const crypto::Cert cert = issued_certificate(reply, key);
                            s.ok = crypto::name_string(X509_get_subject_name(cert.get())).find("CN=" + cn) != std::string::npos;
                            if (!s.ok) s.error = "certificate for another subject";
                        }
                    }
                } catch (const std::exception& e) {
                    s.latency_ms = ms_between(start, Clock::now());
                    s.error = e.what();
                }
                scep_samples.add(std::move(s));
            }
        });
    // PKCS: each thread submits a job (issued key P-256, encrypted to an RSA-2048 device key)
    // and polls it until it is no longer queued or running; a success is status "succeeded".
    for (int t = 0; t < kPkcsInFlight; ++t)
        load.emplace_back([&, t] {
            for (int n = 0; !stop.load(); ++n) {
                const std::string id = "hotswap-" + std::to_string(t) + "-" + std::to_string(n);
                const json::object job{{"id", id},
                                       {"feature", "pkcs"},
                                       {"request", json::object{{"subject", "CN=" + id + ",O=Example"},
                                                                {"sans", json::array{"email:bench@example.com"}},
                                                                {"key_type", "p256"},
                                                                {"device_key_pem", device_pem}}}};
                Sample s;
                const auto start = Clock::now();
                s.start_ms = ms_between(t0, start);
                try {
                    const auto submitted = http_request(port, "POST", "/tenant/v1/jobs", json::serialize(job), kTestToken);
                    if (submitted.status != 201) {
                        s.error = "submit answered HTTP " + std::to_string(submitted.status);
                    } else {
                        for (;;) {
                            const auto r = http_request(port, "GET", "/tenant/v1/jobs/" + id, {}, kTestToken);
                            if (r.status != 200) {
                                s.error = "job status answered HTTP " + std::to_string(r.status);
                                break;
                            }
                            const json::object o = json::parse(r.body).as_object();
                            const std::string state(o.at("status").as_string());
                            if (state == "succeeded") {
                                s.ok = true;
                                break;
                            }
                            if (state == "failed") {
                                s.error = "job failed";
                                if (const auto* res = o.if_contains("result"); res && res->is_object())
                                    if (const auto* err = res->as_object().if_contains("error"); err && err->is_object())
                                        if (const auto* code = err->as_object().if_contains("code"); code && code->is_string())
                                            s.error += ": " + std::string(code->as_string());
                                break;
                            }
                            if (ms_between(start, Clock::now()) > 120000) {
                                s.error = "job not finished after 120 s (" + state + ")";
                                break;
                            }
                            std::this_thread::sleep_for(kPkcsPoll);
                        }
                    }
                } catch (const std::exception& e) {
                    s.error = e.what();
                }
                s.latency_ms = ms_between(start, Clock::now());
                pkcs_samples.add(std::move(s));
            }
        });

    // Phase 1: warm-up (not measured), then steady state.
    std::this_thread::sleep_for(warmup);
    const double steady_from = ms_between(t0, Clock::now());
    std::this_thread::sleep_for(steady);
    const double swaps_from = ms_between(t0, Clock::now());

    // Phase 2: swaps.
    oplog.poll();
    std::map<std::string, std::string> shipped;
    for (const char* p : {"scep", "pkcs", "ca-local"})
        shipped[p] = read_file(plugins / (std::string(p) + ".so"));
    std::vector<Swap> swaps;
    std::size_t seen_events = oplog.events().size();
    for (int round = 0; round < rounds; ++round) {
        for (const char* p : {"scep", "pkcs", "ca-local"}) {
            Swap sw;
            sw.plugin = p;
            const std::string bytes = shipped[p] + "\ncertconn-bench-hotswap nonce " + std::to_string(round) + " " +
                                      crypto::hex_encode(crypto::random_bytes(16)) + "\n";
            sw.sha12 = sha256_hex(bytes).substr(0, 12);
            const fs::path tmp = plugins / ("." + std::string(p) + ".so.tmp");
            write_file(tmp, bytes);
            ::chmod(tmp.c_str(), 0755);
            fs::rename(tmp, plugins / (std::string(p) + ".so"));
            sw.signalled = Clock::now();
            daemon.signal(SIGHUP);
            // Until PluginSwapped names this build's module, or a plugin or reload problem is logged.
            const std::string module_suffix = "-" + sw.sha12 + ".so";
            std::optional<Clock::time_point> problem_at;
            while (!sw.swapped) {
                oplog.poll();
                for (; seen_events < oplog.events().size(); ++seen_events) {
                    const Event& e = oplog.events()[seen_events];
                    if (e.name == "PluginSwapped" && e.field("module").ends_with(module_suffix)) sw.swapped = true;
                    // A refusal of this build (not 117 or 119, which belong to other generations or let the hand-over go on).
                    const bool plugin_problem = e.id == 22 || (e.id >= 103 && e.id <= 109) || e.id == 118 || e.id == 121;
                    if (plugin_problem && !sw.swapped) {
                        sw.problem += (sw.problem.empty() ? "" : "; ") + e.name;
                        if (!problem_at) problem_at = Clock::now();
                    }
                }
                const auto now = Clock::now();
                if (!sw.swapped && (now - sw.signalled > std::chrono::seconds(120) ||
                                    (problem_at && now - *problem_at > std::chrono::seconds(2)))) {
                    if (sw.problem.empty()) sw.problem = "no PluginSwapped within 120 s";
                    break;
                }
                if (!sw.swapped) std::this_thread::sleep_for(std::chrono::milliseconds(5));
            }
            sw.seen = Clock::now();
            swaps.push_back(std::move(sw));
        }
    }
    // The swapping phase lasts until the last replaced generation is released (bounded).
    auto unloads = [&] {
        oplog.poll();
        return std::count_if(oplog.events().begin(), oplog.events().end(),
                             [](const Event& e) { return e.name == "PluginUnloaded"; });
    };
    const auto swapped_count = std::count_if(swaps.begin(), swaps.end(), [](const Swap& s) { return s.swapped; });
    eventually([&] { return unloads() >= swapped_count; }, std::chrono::seconds(30));
    const double swaps_to = ms_between(t0, Clock::now());
    stop = true;
    for (auto& t : load)
        t.join();
    // The last generations' libraries are closed right after their PluginUnloaded event.
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    oplog.poll();

    // Module files the daemon still maps, per plugin.
    std::map<std::string, std::set<std::string>> mapped;
    {
        std::ifstream maps("/proc/" + std::to_string(daemon.pid()) + "/maps");
        const std::string store = (home / "state" / "modules").string() + "/";
        for (std::string line; std::getline(maps, line);) {
            const auto at = line.find(store);
            if (at == std::string::npos) continue;
            const std::string path = line.substr(at);
            mapped[module_key(path)].insert(path);
        }
    }
    // Files in the module store the daemon does not map (collected at a later reload).
    json::array stored_unmapped;
    std::size_t stored = 0;
    for (const auto& entry : fs::recursive_directory_iterator(home / "state" / "modules")) {
        if (!entry.is_regular_file()) continue;
        ++stored;
        if (!mapped[module_key(entry.path().string())].count(entry.path().string()))
            stored_unmapped.emplace_back(fs::relative(entry.path(), home / "state" / "modules").string());
    }

    // Publish (PluginSwapped) to unload (the replaced module's PluginUnloaded), from event times.
    std::map<std::string, std::string> serving;  // module key -> module path: first PluginLoaded, then each PluginSwapped
    std::vector<double> publish_to_unload;
    int unmatched = 0;
    int still_mapped = 0;
    std::map<std::string, int> problems;  // warning and error events, by name
    for (std::size_t i = 0; i < oplog.events().size(); ++i) {
        const Event& e = oplog.events()[i];
        if (e.id == 117) ++still_mapped;
        if (e.level == "warning" || e.level == "error") ++problems[e.name];
        if (e.name == "PluginLoaded" && !serving.count(module_key(e.field("file"))))
            serving[module_key(e.field("file"))] = e.field("file");
        if (e.name != "PluginSwapped") continue;
        const std::string key = module_key(e.field("module"));
        const std::string old = serving[key];
        serving[key] = e.field("module");
        bool matched = false;
        for (std::size_t j = i + 1; j < oplog.events().size() && !matched; ++j) {
            const Event& u = oplog.events()[j];
            if (u.name == "PluginUnloaded" && u.field("file") == old) {
                publish_to_unload.push_back(static_cast<double>(u.time_ms - e.time_ms));
                matched = true;
            }
        }
        unmatched += matched ? 0 : 1;
    }
    std::sort(publish_to_unload.begin(), publish_to_unload.end());
    // SIGHUP to PluginSwapped read by the bench (5 ms polling), per plugin.
    std::map<std::string, std::vector<double>> signal_to_swapped;
    for (const auto& s : swaps)
        if (s.swapped) signal_to_swapped[s.plugin].push_back(ms_between(s.signalled, s.seen));

    // Output.
    int failed_total = 0;
    double ratio_scep = 0, ratio_pkcs = 0;
    for (const auto& [workload, recorder] : {std::pair<const char*, Recorder*>{"scep", &scep_samples}, {"pkcs", &pkcs_samples}}) {
        const Percentiles before = summarize(recorder->samples, steady_from, swaps_from);
        const Percentiles during = summarize(recorder->samples, swaps_from, swaps_to);
        for (const auto& s : recorder->samples)
            failed_total += s.ok ? 0 : 1;
        for (const auto& [phase, p] : {std::pair<const char*, const Percentiles*>{"steady", &before}, {"swapping", &during}}) {
            json::object line{{"bench", "hotswap"},
                              {"workload", workload},
                              {"phase", phase},
                              {"ok", p->ok},
                              {"failed", p->failed},
                              {"p50_ms", round_to(p->p50, 0.1)},
                              {"p99_ms", round_to(p->p99, 0.1)},
                              {"max_ms", round_to(p->max, 0.1)}};
            if (!p->errors.empty()) {
                json::object errors;
                for (const auto& [why, n] : p->errors)
                    errors[why] = n;
                line["errors"] = errors;
            }
            std::cout << line_of(line) << std::endl;
        }
        const double ratio = before.p99 > 0 ? round_to(during.p99 / before.p99, 0.01) : 0;
        (std::string(workload) == "scep" ? ratio_scep : ratio_pkcs) = ratio;
    }
    auto pct = [](const std::vector<double>& v, double q) {
        return v.empty() ? 0.0 : v[std::min(v.size() - 1, static_cast<std::size_t>(q * static_cast<double>(v.size())))];
    };
    json::object sighup_json;
    for (auto& [plugin, times] : signal_to_swapped) {
        std::sort(times.begin(), times.end());
        sighup_json[plugin] = json::object{{"p50", round_to(pct(times, 0.5), 1)}, {"max", round_to(times.back(), 1)}};
    }
    json::object mapped_json;
    for (const auto& [key, files] : mapped)
        mapped_json[key] = files.size();
    json::object problems_json;
    for (const auto& [name, n] : problems)
        problems_json[name] = n;
    json::array swap_problems;
    for (const auto& s : swaps)
        if (!s.swapped) swap_problems.push_back(json::object{{"plugin", s.plugin}, {"problem", s.problem}});
    json::object summary{
        {"bench", "hotswap"},
        {"swap_build", "same code, appended nonce"},
        {"swaps", swapped_count},
        {"swaps_attempted", swaps.size()},
        {"swap_phase_s", round_to((swaps_to - swaps_from) / 1000, 0.1)},
        {"requests_failed", failed_total},
        {"target_failed", 0},
        {"p99_ratio_scep", ratio_scep},
        {"p99_ratio_pkcs", ratio_pkcs},
        {"target_p99_ratio", kTargetP99Ratio},
        {"publish_to_unload_ms", json::object{{"p50", pct(publish_to_unload, 0.5)},
                                              {"max", publish_to_unload.empty() ? 0.0 : publish_to_unload.back()},
                                              {"unmatched", unmatched}}},
        {"sighup_to_swapped_ms", sighup_json},
        {"still_mapped", still_mapped},
        {"modules_mapped_after", mapped_json},
        {"module_files_stored", stored},
        {"module_files_unmapped", stored_unmapped},
        {"warning_and_error_events", problems_json},
        {"load", json::object{{"scep_concurrency", kScepConcurrency},
                              {"pkcs_in_flight", kPkcsInFlight},
                              {"pkcs_poll_ms", kPkcsPoll.count()},
                              {"ca", "ca-local rsa3072"},
                              {"pkcs_issued_key", "p256"}}}};
    if (!swap_problems.empty()) summary["swaps_not_served"] = swap_problems;
    std::cout << line_of(summary) << std::endl;

    if (!keep_log.empty()) fs::copy_file(home / "log" / "operational.jsonl", keep_log, fs::copy_options::overwrite_existing);
    daemon.signal(SIGTERM);
    const auto exit_code = daemon.wait_exit();
    if (exit_code != 0) std::cerr << "bench-hotswap: the daemon exited with " << (exit_code ? *exit_code : -1) << "\n";
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        std::cerr << "bench-hotswap: " << e.what() << "\n";
        return 1;
    }
}
