// The plugin update manager against a real HTTPS repository on loopback (Debian's nginx with a
// test CA), signed by the real minisign tool: every refusal leaves the serving version
// untouched and writes event 504 with its reason; root rotation; a successful update; kill -9
// at every journal step; an update whose health fails after publish is rolled back.
#include "support/Daemon.hpp"
#include "support/SignedRepository.hpp"

#include <certconn/abi.h>
#include <certconn/crypto.hpp>
#include <certconn/events.h>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <netinet/in.h>
#include <openssl/evp.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cstdlib>
#include <sstream>

using namespace certconn::test;
namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

std::uint16_t free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    ::close(fd);
    return ntohs(addr.sin_port);
}

/// A spawned server process, killed at the end.
class Process {
public:
    Process(const std::vector<std::string>& args, const fs::path& output) {
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 1, output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        posix_spawn_file_actions_adddup2(&actions, 1, 2);
        std::vector<std::string> copy = args;
        std::vector<char*> argv;
        for (auto& a : copy)
            argv.push_back(a.data());
        argv.push_back(nullptr);
        if (posix_spawnp(&pid_, argv[0], &actions, nullptr, argv.data(), environ) != 0) pid_ = -1;
        posix_spawn_file_actions_destroy(&actions);
    }
    ~Process() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
    }
    Process(const Process&) = delete;
    Process& operator=(const Process&) = delete;

private:
    pid_t pid_ = -1;
};

bool accepts(std::uint16_t port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    return ok;
}

/// A test CA and a server certificate for 127.0.0.1.
struct TestPki {
    fs::path ca, cert, key;
    explicit TestPki(const fs::path& dir) : ca(dir / "ca.pem"), cert(dir / "server.pem"), key(dir / "server.key") {
        const std::string d = shell_quote(dir.string());
        must("cd " + d +
             " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2"
             " -subj /CN=update-test-ca 2>/dev/null"
             " && openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr"
             " -subj /CN=127.0.0.1 2>/dev/null"
             " && printf 'subjectAltName=IP:127.0.0.1\\n' > ext.cnf"
             " && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2"
             " -extfile ext.cnf 2>/dev/null");
    }
};

/// Debian's nginx serving `root` over HTTPS on a free loopback port.
class Nginx {
public:
    Nginx(const fs::path& work, const fs::path& root, const TestPki& pki) : port_(free_port()) {
        fs::create_directories(work / "nginx");
        const fs::path conf = work / "nginx" / "nginx.conf";
        const std::string w = (work / "nginx").string();
        write_file(conf, "daemon off;\nmaster_process off;\nworker_processes 1;\npid " + w + "/nginx.pid;\nerror_log " + w +
                             "/error.log;\nevents { worker_connections 64; }\nhttp {\n access_log off;\n client_body_temp_path " +
                             w + ";\n proxy_temp_path " + w + ";\n fastcgi_temp_path " + w + ";\n uwsgi_temp_path " + w +
                             ";\n scgi_temp_path " + w +
                             ";\n types { application/octet-stream so; application/json json; }\n"
                             " server {\n  listen 127.0.0.1:" +
                             std::to_string(port_) + " ssl;\n  ssl_certificate " + pki.cert.string() +
                             ";\n  ssl_certificate_key " + pki.key.string() + ";\n  root " + root.string() + ";\n }\n}\n");
        process_ =
            std::make_unique<Process>(std::vector<std::string>{"nginx", "-p", w, "-c", conf.string()}, work / "nginx" / "out");
        eventually([&] { return accepts(port_); }, std::chrono::seconds(10));
    }
    std::string url() const { return "https://127.0.0.1:" + std::to_string(port_) + "/"; }

private:
    std::uint16_t port_;
    std::unique_ptr<Process> process_;
};

/// A misbehaving HTTPS server (python3): serves `root`, but sends plugin files (*.so) with
/// `extra` bytes more than they have ("oversize"), or stops after the first 1000 bytes ("stall").
class BadServer {
public:
    BadServer(const fs::path& work, const fs::path& root, const TestPki& pki, const std::string& mode) : port_(free_port()) {
        const fs::path script = work / "bad_server.py";
        write_file(script, R"PY(
import http.server, os, ssl, sys, time
port, root, cert, key, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args): pass
    def do_GET(self):
        path = os.path.join(root, self.path.lstrip('/'))
        if not os.path.isfile(path):
            self.send_response(404); self.send_header('Content-Length', '0'); self.end_headers(); return
        data = open(path, 'rb').read()
        self.send_response(200)
        if path.endswith('.so') and mode == 'oversize':
            self.send_header('Connection', 'close'); self.end_headers()
            self.wfile.write(data + b'\0' * 65536); return
        self.send_header('Content-Length', str(len(data))); self.end_headers()
        if path.endswith('.so') and mode == 'stall':
            self.wfile.write(data[:1000]); self.wfile.flush(); time.sleep(60); return
        self.wfile.write(data)
server = http.server.ThreadingHTTPServer(('127.0.0.1', port), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
)PY");
        process_ = std::make_unique<Process>(std::vector<std::string>{"python3", script.string(), std::to_string(port_),
                                                                      root.string(), pki.cert.string(), pki.key.string(), mode},
                                             work / "bad_server.out");
        eventually([&] { return accepts(port_); }, std::chrono::seconds(10));
    }
    std::string url() const { return "https://127.0.0.1:" + std::to_string(port_) + "/"; }

private:
    std::uint16_t port_;
    std::unique_ptr<Process> process_;
};

/// One connector installation with updemo 0.1.0 in its plugin directory and a repository.
struct Installation {
    TempDir dir;
    fs::path config = dir / "certconnector.toml";
    fs::path plugins = dir / "plugins";
    fs::path state = dir / "state";
    TestPki pki{dir.path()};
    Signer k1{dir.path(), "k1"}, k2{dir.path(), "k2"}, k3{dir.path(), "k3"};
    Repository repo{dir / "repo"};

    explicit Installation(const std::string& serving_fixture = "update-echo-v1") {
        fs::create_directories(plugins);
        ::chmod(plugins.c_str(), 0755);
        install_fixture(plugins, "update", serving_fixture, "updemo.so");
        fs::create_directories(dir / "trust");
        // The operator's initial root: version 1, k1 alone.
        const std::string root1 = root_json(1, 1, {&k1});
        write_file(dir / "trust" / "test.root.json", root1);
        write_file(dir / "trust" / "test.root.json.minisig", sign(dir / "trust" / "test.root.json", {&k1}));
        repo.publish_root(1, root1, {&k1});
    }

    void write_config(const std::string& url, const std::string& update_settings) const {
        write_file(config,
                   "[host]\nlisten = \"127.0.0.1:0\"\nplugin_dir = \"plugins\"\nstate_dir = \"state\"\nlog_dir = \"log\"\n"
                   "[update]\n" +
                       update_settings + "\n[update.repositories.test]\nurl = \"" + url +
                       "\"\nroot = \"trust/test.root.json\"\nplugins = [\"updemo\"]\nca_bundle = \"ca.pem\"\n");
    }

    json::object wait_ready(Daemon& daemon) const {
        json::object status = wait_for_status(daemon, config);
        INFO(daemon.output());
        REQUIRE_FALSE(status.empty());
        return status;
    }

    CliResult update(const std::vector<std::string>& words) const {
        std::vector<std::string> args = {"update"};
        args.insert(args.end(), words.begin(), words.end());
        args.push_back("--config");
        args.push_back(config.string());
        return run_cli(args);
    }

    /// The version answering GET /fixture/updemo.
    std::string serving(Daemon& daemon) const {
        const auto status = wait_for_status(daemon, config);
        if (status.empty()) return "(daemon down)";
        const auto port = static_cast<std::uint16_t>(status.at("port").as_int64());
        const HttpResult r = http_request(port, "GET", "/fixture/updemo");
        return r.status == 200 ? r.body : "(HTTP " + std::to_string(r.status) + ")";
    }

    /// Events `id` in the event log, as JSON objects.
    std::vector<json::object> events(std::uint32_t id) const {
        std::vector<json::object> out;
        for (const char* channel : {"admin.jsonl", "operational.jsonl"}) {
            std::istringstream lines(read_file(dir / "log" / channel));
            std::string line;
            while (std::getline(lines, line)) {
                std::error_code ec;
                json::value v = json::parse(line, ec);
                if (!ec && v.is_object() && v.as_object().at("id").to_number<std::int64_t>() == id) out.push_back(v.as_object());
            }
        }
        return out;
    }

    /// Whether event 504 with `reason` was written.
    bool refused(const std::string& reason) const {
        for (const auto& e : events(CC_EV_UpdateRefused))
            if (const auto* f = e.if_contains("fields");
                f && f->as_object().contains("reason") && f->at("reason").as_string() == reason)
                return true;
        return false;
    }

    std::string log_text() const { return read_file(dir / "log" / "admin.jsonl") + read_file(dir / "log" / "operational.jsonl"); }

    std::vector<std::string> update_files() const {
        std::vector<std::string> out;
        std::error_code ec;
        for (const auto& f : fs::directory_iterator(state / "updates", ec))
            out.push_back(f.path().filename().string());
        std::sort(out.begin(), out.end());
        return out;
    }
};

const std::string kOff = "mode = \"off\"\nstall_seconds = 2\nwatch_seconds = 2\n";

/// Runs `update apply` and checks that the refusal `reason` was reported and nothing changed.
void expect_refusal(Installation& inst, Daemon& daemon, const std::string& reason) {
    const CliResult r = inst.update({"apply"});
    INFO(r.output << "\n" << inst.log_text() << "\n" << daemon.output());
    CHECK(inst.refused(reason));
    CHECK(inst.serving(daemon) == "0.1.0");
    CHECK(inst.update_files().empty());
}

}  // namespace

TEST_CASE("update refusals over HTTPS: tampered file, wrong size, unknown key, below threshold") {
    Installation inst;
    Nginx server(inst.dir.path(), inst.repo.dir, inst.pki);
    inst.write_config(server.url(), kOff);
    Daemon daemon(inst.config, inst.dir / "daemon.out");
    inst.wait_ready(daemon);
    REQUIRE(inst.serving(daemon) == "0.1.0");

    SECTION("a file whose SHA-256 differs from the index") {
        inst.repo.publish_index(1, {{"update-echo-v2", "0.2.0", "", "", std::string(64, 'a')}}, {&inst.k1});
        expect_refusal(inst, daemon, "tampered_hash");
    }
    SECTION("a file shorter than the index says") {
        inst.repo.publish_index(1, {{"update-echo-v2", "0.2.0"}}, {&inst.k1});
        // The server's copy loses its tail after signing.
        const fs::path file = inst.repo.dir / "plugins" / "updemo-0.2.0.so";
        const std::string bytes = read_file(file);
        write_file(file, bytes.substr(0, bytes.size() - 100));
        expect_refusal(inst, daemon, "tampered_size");
    }
    SECTION("an index signed by a key the root does not name") {
        inst.repo.publish_index(1, {{"update-echo-v2", "0.2.0"}}, {&inst.k2});
        expect_refusal(inst, daemon, "unknown_key");
    }
    SECTION("2-of-3 root, index signed by one key") {
        // Rotate to a root of k1, k2, k3 with threshold 2 (signed by the old k1 and two new keys).
        inst.repo.publish_root(2, root_json(2, 2, {&inst.k1, &inst.k2, &inst.k3}), {&inst.k1, &inst.k2});
        inst.repo.publish_index(1, {{"update-echo-v2", "0.2.0"}}, {&inst.k3});
        expect_refusal(inst, daemon, "below_threshold");
    }
}

TEST_CASE("update refusals: rollback, expired index, downgrade, incompatible host") {
    SECTION("a sequence lower than the last seen") {
        Installation inst;
        Nginx server(inst.dir.path(), inst.repo.dir, inst.pki);
        inst.write_config(server.url(), kOff);
        Daemon daemon(inst.config, inst.dir / "daemon.out");
        inst.wait_ready(daemon);
        inst.repo.publish_index(5, {{"update-echo-v1", "0.1.0"}}, {&inst.k1});
        inst.update({"apply"});
        CHECK(inst.events(CC_EV_UpdateChecked).size() == 1);
        inst.repo.publish_index(4, {{"update-echo-v2", "0.2.0"}}, {&inst.k1});
        expect_refusal(inst, daemon, "rollback");
    }
    SECTION("an expired index freezes updates and warns with 507") {
        Installation inst;
        Nginx server(inst.dir.path(), inst.repo.dir, inst.pki);
        inst.write_config(server.url(), kOff);
        Daemon daemon(inst.config, inst.dir / "daemon.out");
        inst.wait_ready(daemon);
        inst.repo.publish_index(1, {{"update-echo-v2", "0.2.0"}}, {&inst.k1}, kPast);
        const CliResult r = inst.update({"apply"});
        INFO(r.output << inst.log_text());
        CHECK(inst.events(CC_EV_UpdateIndexExpired).size() == 1);
        CHECK(inst.serving(daemon) == "0.1.0");
        CHECK(inst.update_files().empty());
        CHECK_THAT(inst.update({"status"}).output, Catch::Contains("frozen: index expired"));
    }
    SECTION("a lower version without allow_downgrade") {
        Installation inst("update-echo-v2");
        Nginx server(inst.dir.path(), inst.repo.dir, inst.pki);
        inst.write_config(server.url(), kOff);
        Daemon daemon(inst.config, inst.dir / "daemon.out");
        inst.wait_ready(daemon);
        inst.repo.publish_index(1, {{"update-echo-v1", "0.1.0"}}, {&inst.k1});
        inst.update({"apply"});
        INFO(inst.log_text());
        CHECK(inst.refused("downgrade"));
        CHECK(inst.serving(daemon) == "0.2.0");
        CHECK(inst.update_files().empty());
    }
    SECTION("a plugin needing a newer host") {
        Installation inst;
        Nginx server(inst.dir.path(), inst.repo.dir, inst.pki);
        inst.write_config(server.url(), kOff);
        Daemon daemon(inst.config, inst.dir / "daemon.out");
        inst.wait_ready(daemon);
        inst.repo.publish_index(1, {{"update-echo-v2", "0.2.0", "99.0.0"}}, {&inst.k1});
        expect_refusal(inst, daemon, "incompatible_host");
        CHECK_THAT(inst.log_text(), Catch::Contains("needs certconnector 99.0.0 or newer"));
        CHECK_THAT(inst.update({"status"}).output, Catch::Contains("needs certconnector 99.0.0 or newer"));
    }
}

TEST_CASE("update refusals: a download larger than announced stops, a stalled one is abandoned") {
    for (const std::string mode : {"oversize", "stall"}) {
        DYNAMIC_SECTION(mode) {
            Installation inst;
            BadServer server(inst.dir.path(), inst.repo.dir, inst.pki, mode);
            inst.write_config(server.url(), kOff);
            Daemon daemon(inst.config, inst.dir / "daemon.out");
            inst.wait_ready(daemon);
            inst.repo.publish_index(1, {{"update-echo-v2", "0.2.0"}}, {&inst.k1});
            const auto started = std::chrono::steady_clock::now();
            expect_refusal(inst, daemon, mode == "oversize" ? "oversize" : "stalled");
            CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(30));
        }
    }
}

TEST_CASE("trust roots rotate 1 -> 2 -> 3; a root signed only by the old or only by the new keys is refused") {
    Installation inst;
    Nginx server(inst.dir.path(), inst.repo.dir, inst.pki);
    inst.write_config(server.url(), kOff);
    Daemon daemon(inst.config, inst.dir / "daemon.out");
    inst.wait_ready(daemon);
    const fs::path stored = inst.state / "update" / "roots" / "test.root.json";

    SECTION("a proper chain") {
        inst.repo.publish_root(2, root_json(2, 1, {&inst.k2}), {&inst.k1, &inst.k2});
        inst.repo.publish_root(3, root_json(3, 1, {&inst.k3}), {&inst.k2, &inst.k3});
        inst.repo.publish_index(1, {{"update-echo-v1", "0.1.0"}}, {&inst.k3});  // only the newest root's key
        const CliResult r = inst.update({"check"});
        INFO(r.output << inst.log_text());
        CHECK(inst.events(CC_EV_UpdateRootRotated).size() == 1);
        CHECK(inst.events(CC_EV_UpdateChecked).size() == 1);
        CHECK_THAT(read_file(stored), Catch::Contains("\"version\":3"));
        CHECK(inst.events(CC_EV_UpdateRefused).empty());
    }
    SECTION("2.root.json signed only by the old key") {
        inst.repo.publish_root(2, root_json(2, 1, {&inst.k2}), {&inst.k1});
        inst.repo.publish_index(1, {{"update-echo-v1", "0.1.0"}}, {&inst.k2});
        const CliResult r = inst.update({"check"});
        INFO(r.output << inst.log_text());
        CHECK(inst.events(CC_EV_UpdateRefused).size() == 1);
        CHECK(inst.events(CC_EV_UpdateChecked).empty());
        CHECK_FALSE(fs::exists(stored));
    }
    SECTION("2.root.json signed only by the new key") {
        inst.repo.publish_root(2, root_json(2, 1, {&inst.k2}), {&inst.k2});
        inst.repo.publish_index(1, {{"update-echo-v1", "0.1.0"}}, {&inst.k2});
        const CliResult r = inst.update({"check"});
        INFO(r.output << inst.log_text());
        CHECK(inst.refused("unknown_key"));
        CHECK(inst.events(CC_EV_UpdateChecked).empty());
        CHECK_FALSE(fs::exists(stored));
    }
}

TEST_CASE("mode auto installs a newer version from the repository, watches it and retires nothing from plugin_dir") {
    Installation inst;
    Nginx server(inst.dir.path(), inst.repo.dir, inst.pki);
    inst.repo.publish_index(1, {{"update-echo-v1", "0.1.0"}, {"update-echo-v2", "0.2.0"}}, {&inst.k1});
    inst.write_config(server.url(), "mode = \"auto\"\ncheck_interval = \"2s\"\nwatch_seconds = 2\n");
    Daemon daemon(inst.config, inst.dir / "daemon.out");
    inst.wait_ready(daemon);
    INFO(inst.log_text() << daemon.output());
    CHECK(eventually([&] { return inst.serving(daemon) == "0.2.0"; }, std::chrono::seconds(30)));
    // 0.2.0 serves as soon as the reload publishes it; the manager writes "installed" just after.
    for (auto id : {CC_EV_UpdateAvailable, CC_EV_UpdateDownloaded, CC_EV_UpdateVerified, CC_EV_UpdateInstalled}) {
        INFO("event " << id);
        CHECK(eventually([&] { return !inst.events(id).empty(); }, std::chrono::seconds(10)));
    }
    // The watch passes; the journal is gone, the update stays, the plugin_dir file is untouched.
    CHECK(eventually(
        [&] { return !fs::exists(inst.state / "update" / "journal.json") && inst.events(CC_EV_UpdateInstalled).size() >= 2; },
        std::chrono::seconds(20)));
    CHECK(inst.update_files() == std::vector<std::string>{"feature-updemo-0.2.0.so"});
    CHECK(fs::exists(inst.plugins / "updemo.so"));
    CHECK_THAT(inst.update({"status"}).output, Catch::Contains("'updemo' 0.2.0"));
}

TEST_CASE("kill -9 at each journal step, then a clean restart: resumed or rolled back, never half-installed") {
    for (const std::string step :
         {"checking", "index-verified", "downloading", "downloaded", "verified", "placed", "published", "watching", "retiring"}) {
        DYNAMIC_SECTION(step) {
            Installation inst;
            Nginx server(inst.dir.path(), inst.repo.dir, inst.pki);
            inst.repo.publish_index(1, {{"update-echo-v2", "0.2.0"}}, {&inst.k1});
            inst.write_config(server.url(), "mode = \"auto\"\ncheck_interval = \"2s\"\nwatch_seconds = 2\n");
            const fs::path paused = inst.state / "update" / ("paused-at-" + step);
            {
                ::setenv("CERTCONN_UPDATE_PAUSE_AT", step.c_str(), 1);
                Daemon daemon(inst.config, inst.dir / "daemon1.out");
                ::unsetenv("CERTCONN_UPDATE_PAUSE_AT");
                INFO(daemon.output() << inst.log_text());
                REQUIRE(eventually([&] { return fs::exists(paused); }, std::chrono::seconds(40)));
                daemon.signal(SIGKILL);
                daemon.wait_exit();
            }
            // Whatever the step, the disk is consistent: either no placed file, or the whole verified file.
            for (const auto& f : inst.update_files()) {
                CHECK(f == "feature-updemo-0.2.0.so");
                CHECK(read_file(inst.state / "updates" / f) == read_file(fixture("update", "update-echo-v2")));
            }
            Daemon daemon(inst.config, inst.dir / "daemon2.out");
            inst.wait_ready(daemon);
            INFO(daemon.output() << inst.log_text());
            const std::string first = inst.serving(daemon);
            CHECK((first == "0.1.0" || first == "0.2.0"));
            CHECK(inst.events(CC_EV_UpdateResumed).size() == 1);
            // It then completes: 0.2.0 serves, watched, journal gone, no temporary file left.
            CHECK(eventually([&] { return inst.serving(daemon) == "0.2.0"; }, std::chrono::seconds(30)));
            CHECK(eventually([&] { return !fs::exists(inst.state / "update" / "journal.json"); }, std::chrono::seconds(20)));
            CHECK(inst.update_files() == std::vector<std::string>{"feature-updemo-0.2.0.so"});
        }
    }
}

TEST_CASE("an update whose health fails after publish is rolled back and marked bad") {
    Installation inst;
    Nginx server(inst.dir.path(), inst.repo.dir, inst.pki);
    inst.repo.publish_index(1, {{"update-echo-v3-unhealthy", "0.3.0"}}, {&inst.k1});
    inst.write_config(server.url(), "mode = \"auto\"\ncheck_interval = \"2s\"\nwatch_seconds = 30\n");
    Daemon daemon(inst.config, inst.dir / "daemon.out");
    inst.wait_ready(daemon);
    INFO(daemon.output() << inst.log_text());
    REQUIRE(eventually([&] { return !inst.events(CC_EV_UpdateInstalled).empty(); }, std::chrono::seconds(30)));
    REQUIRE(eventually([&] { return !inst.events(CC_EV_UpdateRolledBack).empty(); }, std::chrono::seconds(30)));
    CHECK(inst.serving(daemon) == "0.1.0");
    CHECK(inst.update_files().empty());
    const json::object status = json::parse(inst.update({"status", "--json"}).output).as_object();
    CHECK(status.at("bad").as_object().contains("updemo@0.3.0"));
    // Later checks do not install it again.
    std::this_thread::sleep_for(std::chrono::seconds(5));
    CHECK(inst.events(CC_EV_UpdateInstalled).size() == 1);
    CHECK(inst.serving(daemon) == "0.1.0");
}

TEST_CASE("an offline bundle (.tar) installs like a repository, verified by the configured root") {
    Installation inst;
    inst.repo.publish_index(1, {{"update-echo-v2", "0.2.0"}}, {&inst.k1});
    const fs::path bundle = inst.dir / "bundle.tar";
    must("tar -cf " + shell_quote(bundle.string()) + " -C " + shell_quote(inst.repo.dir.string()) + " .");
    inst.write_config("https://127.0.0.1:9/", kOff);  // unreachable: the bundle is all there is
    Daemon daemon(inst.config, inst.dir / "daemon.out");
    inst.wait_ready(daemon);
    const CliResult relative = inst.update({"apply", "--bundle", "bundle.tar"});
    CHECK(relative.exit_code == 2);
    CHECK_THAT(relative.output, Catch::Contains("absolute path"));
    const CliResult r = inst.update({"apply", "--bundle", bundle.string()});
    INFO(r.output << inst.log_text() << daemon.output());
    CHECK(r.exit_code == 0);
    CHECK(inst.serving(daemon) == "0.2.0");
    CHECK(inst.update_files() == std::vector<std::string>{"feature-updemo-0.2.0.so"});
    // The unpacked copy is gone.
    for (const auto& f : fs::directory_iterator(inst.state / "update"))
        CHECK(f.path().filename().string().rfind("bundle-", 0) != 0);

    SECTION("a bundle signed by another key is refused") {
        inst.repo.publish_index(2, {{"update-echo-v2", "0.2.0"}}, {&inst.k2});
        must("tar -cf " + shell_quote(bundle.string()) + " -C " + shell_quote(inst.repo.dir.string()) + " .");
        inst.update({"apply", "--bundle", bundle.string()});
        CHECK(inst.refused("unknown_key"));
    }
}
