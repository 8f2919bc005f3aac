// certconn::http against a real local server (tests/support/servers/https_test_server.py) over
// TLS, and through a real proxy (tinyproxy) when it is installed.
#include "support/TestFiles.hpp"

#include <certconn/http_client.hpp>
#include <certconn/sdk.hpp>

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <spawn.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

extern char** environ;

using namespace certconn;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

/// A child process killed at the end of the test.
class Child {
public:
    explicit Child(std::vector<std::string> args) {
        std::vector<char*> argv;
        for (auto& a : args)
            argv.push_back(a.data());
        argv.push_back(nullptr);
        if (posix_spawnp(&pid_, argv[0], nullptr, nullptr, argv.data(), environ) != 0) pid_ = -1;
    }
    ~Child() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
    }
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;

private:
    pid_t pid_ = -1;
};

std::string wait_for_file(const fs::path& file) {
    for (int i = 0; i < 200; ++i) {
        if (fs::exists(file)) return test::read_file(file);
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    FAIL("the test server did not start: no " << file);
    return {};
}

/// A CA, and a server certificate for 127.0.0.1 signed by it (openssl CLI), in `dir`.
void make_certificates(const fs::path& dir) {
    const std::string d = dir.string();
    const std::string cmd =
        "cd '" + d +
        "' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem "
        "-subj /CN=test-ca -days 2 2>/dev/null"
        " && openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr "
        "-subj /CN=127.0.0.1 2>/dev/null"
        " && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 "
        "-extfile <(printf 'subjectAltName=IP:127.0.0.1') 2>/dev/null"
        " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout other.key -out other.pem "
        "-subj /CN=other-ca -days 2 2>/dev/null";
    REQUIRE(std::system(("bash -c \"" + cmd + "\"").c_str()) == 0);
}

struct Server {
    explicit Server(const fs::path& dir, bool plain = false)
        : child({"/usr/bin/python3", std::string(SOURCE_DIR) + "/tests/support/servers/https_test_server.py",
                 (dir / "server.pem").string(), (dir / "server.key").string(), (dir / (plain ? "plain.port" : "port")).string(),
                 plain ? "--plain" : "--tls"}),
          port(wait_for_file(dir / (plain ? "plain.port" : "port"))) {}
    Child child;
    std::string port;
};

http::Settings with_ca(const fs::path& dir) {
    http::Settings s;
    s.ca_file = (dir / "ca.pem").string();
    return s;
}

}  // namespace

TEST_CASE("http client: TLS with the configured CA, answers, headers and bounds", "[http]") {
    test::TempDir dir;
    make_certificates(dir.path());
    Server server(dir.path());
    const std::string base = "https://127.0.0.1:" + server.port;

    SECTION("a GET through TLS verified against ca_file") {
        http::Client client(with_ca(dir.path()));
        const auto r = client.perform({"GET", base + "/ok", {}, {}});
        CHECK(r.status == 200);
        CHECK(r.body == "hello");
        CHECK(r.header("x-test") == std::optional<std::string>("1"));
        CHECK_FALSE(r.header("X-Missing"));
    }
    SECTION("a server the configured CA did not certify is refused, retryably, naming the host") {
        http::Settings s;
        s.ca_file = (dir.path() / "other.pem").string();
        http::Client client(std::move(s));
        try {
            client.perform({"GET", base + "/ok", {}, {}});
            FAIL("an unverified server was accepted");
        } catch (const sdk::Error& e) {
            CHECK(e.code() == CC_ERR_UNAVAILABLE);
            CHECK_THAT(std::string(e.what()), Contains("https://127.0.0.1:" + server.port + "/ok"));
        }
    }
    SECTION("an answer larger than max_response_bytes fails instead of growing without bound") {
        auto s = with_ca(dir.path());
        s.max_response_bytes = 50'000;
        http::Client client(std::move(s));
        CHECK(client.perform({"GET", base + "/big?n=40000", {}, {}}).body.size() == 40'000);
        try {
            client.perform({"GET", base + "/big?n=60000", {}, {}});
            FAIL("an oversized answer was accepted");
        } catch (const sdk::Error& e) {
            CHECK(e.code() == CC_ERR_UNAVAILABLE);
            CHECK_THAT(std::string(e.what()), Contains("max_response_bytes"));
        }
    }
    SECTION("a server slower than the timeout is a TIMEOUT") {
        auto s = with_ca(dir.path());
        s.timeout = std::chrono::milliseconds(700);
        http::Client client(std::move(s));
        try {
            client.perform({"GET", base + "/slow?s=3", {}, {}});
            FAIL("no timeout");
        } catch (const sdk::Error& e) {
            CHECK(e.code() == CC_ERR_TIMEOUT);
        }
    }
    SECTION("Basic authentication answers the challenge; a wrong password gets the 401, never echoed") {
        auto s = with_ca(dir.path());
        s.auth = http::Auth::basic;
        s.username = "user";
        s.password = sdk::Secret(std::string_view("secret"));
        http::Client good(std::move(s));
        CHECK(good.perform({"GET", base + "/basic", {}, {}}).body == "welcome");
        auto w = with_ca(dir.path());
        w.auth = http::Auth::basic;
        w.username = "user";
        w.password = sdk::Secret(std::string_view("wrong-pass"));
        http::Client bad(std::move(w));
        const auto r = bad.perform({"GET", base + "/basic", {}, {}});
        CHECK(r.status == 401);
        CHECK(http::status_of_http(r.status) == CC_ERR_DENIED);
    }
    SECTION("429 carries Retry-After; POST and PUT send their bodies") {
        http::Client client(with_ca(dir.path()));
        const auto busy = client.perform({"GET", base + "/busy", {}, {}});
        CHECK(busy.status == 429);
        CHECK(http::status_of_http(busy.status) == CC_ERR_BUSY);
        CHECK(busy.retry_after() == std::chrono::seconds(7));
        const auto post = client.perform({"POST", base + "/echo", {{"Content-Type", "application/json"}}, R"({"a":1})"});
        CHECK(post.body == R"({"a":1})");
        CHECK(post.header("X-Method") == std::optional<std::string>("POST"));
        const auto put = client.perform({"PUT", base + "/echo", {}, "x"});
        CHECK(put.header("X-Method") == std::optional<std::string>("PUT"));
    }
    SECTION("nothing listening is UNAVAILABLE (retryable); a bad scheme is INVALID_ARGUMENT") {
        http::Client client(with_ca(dir.path()));
        try {
            client.perform({"GET", "https://127.0.0.1:1/ok", {}, {}});
            FAIL("connected to port 1");
        } catch (const sdk::Error& e) {
            CHECK(e.retryable());
        }
        try {
            client.perform({"GET", "file:///etc/passwd", {}, {}});
            FAIL("file:// was fetched");
        } catch (const sdk::Error& e) {
            CHECK(e.code() == CC_ERR_INVALID_ARGUMENT);
        }
    }
}

TEST_CASE("http client: requests go through the configured proxy (tinyproxy), and only then", "[http]") {
    if (!fs::exists("/usr/bin/tinyproxy")) {
        WARN("tinyproxy is not installed (scripts/install-deps installs it): the proxy test did not run");
        return;
    }
    test::TempDir dir;
    make_certificates(dir.path());
    Server tls(dir.path());
    Server plain(dir.path(), true);
    // tinyproxy's configuration takes a port number, not 0: ask the kernel for a free one.
    const int proxy_port = [] {
        const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof a;
        ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
        ::close(fd);
        return static_cast<int>(ntohs(a.sin_port));
    }();
    {
        std::ofstream conf(dir.path() / "tinyproxy.conf");
        conf << "Port " << proxy_port << "\nListen 127.0.0.1\nTimeout 30\nMaxClients 10\nAllow 127.0.0.1\n"
             << "ConnectPort " << tls.port << "\nLogFile \"" << (dir.path() / "tinyproxy.log").string()
             << "\"\nLogLevel Connect\n";
        if (::geteuid() == 0) conf << "User nobody\nGroup nogroup\n";
    }
    ::chmod(dir.path().c_str(), 0777);
    Child proxy({"/usr/bin/tinyproxy", "-d", "-c", (dir.path() / "tinyproxy.conf").string()});
    std::this_thread::sleep_for(std::chrono::milliseconds(500));

    auto s = with_ca(dir.path());
    s.proxy = "http://127.0.0.1:" + std::to_string(proxy_port);
    http::Client via_proxy(std::move(s));
    const auto r = via_proxy.perform({"GET", "http://127.0.0.1:" + plain.port + "/ok", {}, {}});
    CHECK(r.status == 200);
    CHECK_THAT(r.header("X-Via").value_or(""), Contains("tinyproxy"));                                   // the proxy carried it
    CHECK(via_proxy.perform({"GET", "https://127.0.0.1:" + tls.port + "/ok", {}, {}}).body == "hello");  // CONNECT

    // Without `proxy`, the environment's proxy is ignored: only configuration decides.
    ::setenv("http_proxy", "http://127.0.0.1:1", 1);
    http::Client direct(with_ca(dir.path()));
    const auto d = direct.perform({"GET", "http://127.0.0.1:" + plain.port + "/ok", {}, {}});
    ::unsetenv("http_proxy");
    CHECK(d.status == 200);
    CHECK(d.header("X-Via").value_or("") == "");
}

TEST_CASE("http client: settings from a configuration section", "[http]") {
    test::TempDir dir;
    const auto pw = dir.path() / "pw";
    test::write_file(pw, "s3cret\n");
    json::object section{{"auth", "ntlm"}, {"username", "CORP\\svc"}, {"password_file", pw.string()}, {"timeout_seconds", 5}};
    const auto s = http::settings_from_config(section, "ca.corp");
    CHECK(s.auth == http::Auth::ntlm);
    CHECK(s.password.reveal() == "s3cret");  // the first line, without its newline
    CHECK(s.timeout == std::chrono::seconds(5));

    auto error_of = [](const json::object& o) {
        try {
            http::settings_from_config(o, "ca.corp");
        } catch (const sdk::Error& e) {
            CHECK(e.code() == CC_ERR_INVALID_ARGUMENT);
            return std::string(e.what());
        }
        return std::string("no error");
    };
    CHECK_THAT(error_of({{"auth", "basic"}, {"username", "u"}}),
               Contains("ca.corp.auth: 'basic' needs username and password_file"));
    CHECK_THAT(error_of({{"password_file", (dir.path() / "missing").string()}}), Contains("ca.corp.password_file: cannot read"));
    CHECK_THAT(error_of({{"ca_file", "relative.pem"}}), Contains("ca.corp.ca_file: expected an absolute path"));
    CHECK_THAT(error_of({{"auth", "kerberos"}}), Contains("not one of none, basic, ntlm, negotiate"));
    test::write_file(pw, "");
    CHECK_THAT(error_of({{"auth", "basic"}, {"username", "u"}, {"password_file", pw.string()}}), Contains("is empty"));
}

TEST_CASE("http client: encodings and status mapping", "[http]") {
    CHECK(http::form_encode({{"Mode", "newreq"}, {"CertAttrib", "CertificateTemplate:User\nsan:a=b&c"}}) ==
          "Mode=newreq&CertAttrib=CertificateTemplate%3AUser%0Asan%3Aa%3Db%26c");
    CHECK(http::status_of_http(201) == CC_OK);
    CHECK(http::status_of_http(503) == CC_ERR_UNAVAILABLE);
    CHECK(http::status_of_http(404) == CC_ERR_NOT_FOUND);
    CHECK(http::status_of_http(400) == CC_ERR_INVALID_ARGUMENT);
}

namespace {

int free_loopback_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(fd);
    return static_cast<int>(ntohs(a.sin_port));
}

/// A tinyproxy on 127.0.0.1:`port` that we can kill and start again on the same port.
class Tinyproxy {
public:
    Tinyproxy(const fs::path& dir, int port, const std::string& connect_port, const std::string& basic_auth = {})
        : conf_(dir / ("tinyproxy-" + std::to_string(port) + ".conf")), port_(port) {
        std::ofstream conf(conf_);
        conf << "Port " << port << "\nListen 127.0.0.1\nTimeout 30\nMaxClients 10\nAllow 127.0.0.1\n"
             << "ConnectPort " << connect_port << "\nLogFile \"" << (dir / "tinyproxy.log").string() << "\"\nLogLevel Connect\n";
        if (!basic_auth.empty()) conf << "BasicAuth " << basic_auth << "\n";
        if (::geteuid() == 0) conf << "User nobody\nGroup nogroup\n";
        conf.close();
        ::chmod(dir.c_str(), 0777);
        start();
    }
    ~Tinyproxy() { kill(); }
    void start() {
        std::string bin = "/usr/bin/tinyproxy", d = "-d", c = "-c", path = conf_.string();
        char* argv[] = {bin.data(), d.data(), c.data(), path.data(), nullptr};
        REQUIRE(posix_spawn(&pid_, argv[0], nullptr, nullptr, argv, environ) == 0);
        // Ready when it accepts connections.
        for (int i = 0; i < 100; ++i) {
            const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
            sockaddr_in a{};
            a.sin_family = AF_INET;
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            a.sin_port = htons(static_cast<uint16_t>(port_));
            const bool up = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
            ::close(fd);
            if (up) return;
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        FAIL("tinyproxy did not start on port " << port_);
    }
    /// SIGKILL (a crash, not a clean shutdown), and wait until the port is free.
    void kill() {
        if (pid_ <= 0) return;
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }

private:
    fs::path conf_;
    int port_;
    pid_t pid_ = -1;
};

}  // namespace

TEST_CASE("http client: the same client works again after the proxy is killed and restarted", "[http][proxy]") {
    if (!fs::exists("/usr/bin/tinyproxy")) {
        WARN("tinyproxy is not installed (scripts/install-deps installs it): the proxy test did not run");
        return;
    }
    test::TempDir dir;
    make_certificates(dir.path());
    Server tls(dir.path());
    Server plain(dir.path(), true);
    const int port = free_loopback_port();
    Tinyproxy proxy(dir.path(), port, tls.port);
    auto s = with_ca(dir.path());
    s.proxy = "http://127.0.0.1:" + std::to_string(port);
    s.connect_timeout = std::chrono::seconds(3);
    const http::Client client(std::move(s));
    const std::string https = "https://127.0.0.1:" + tls.port + "/ok";
    const std::string http_url = "http://127.0.0.1:" + plain.port + "/ok";
    CHECK(client.perform({"GET", https, {}, {}}).body == "hello");
    CHECK_THAT(client.perform({"GET", http_url, {}, {}}).header("X-Via").value_or(""), Contains("tinyproxy"));

    proxy.kill();
    // While the proxy is down: a retryable failure naming the target, not a hang.
    try {
        client.perform({"GET", https, {}, {}});
        FAIL("a request succeeded without its proxy");
    } catch (const sdk::Error& e) {
        CHECK(e.code() == CC_ERR_UNAVAILABLE);
        CHECK_THAT(e.what(), Contains("127.0.0.1:" + tls.port));
    }

    proxy.start();  // the proxy restarts on the same port
    CHECK(client.perform({"GET", https, {}, {}}).body == "hello");
    CHECK_THAT(client.perform({"GET", http_url, {}, {}}).header("X-Via").value_or(""), Contains("tinyproxy"));
    // ... and again with a crash in between requests on several threads of the same client.
    proxy.kill();
    proxy.start();
    std::vector<std::thread> threads;
    std::atomic<int> ok{0};
    for (int i = 0; i < 4; ++i)
        threads.emplace_back([&] {
            try {
                if (client.perform({"GET", https, {}, {}}).body == "hello") ++ok;
            } catch (...) {
            }
        });
    for (auto& t : threads)
        t.join();
    CHECK(ok == 4);
}

TEST_CASE("http client: proxy Basic credentials (proxy_auth) and no_proxy", "[http][proxy]") {
    if (!fs::exists("/usr/bin/tinyproxy")) {
        WARN("tinyproxy is not installed (scripts/install-deps installs it): the proxy test did not run");
        return;
    }
    test::TempDir dir;
    make_certificates(dir.path());
    Server tls(dir.path());
    Server plain(dir.path(), true);
    const int port = free_loopback_port();
    Tinyproxy proxy(dir.path(), port, tls.port, "svc s3cret-proxy");
    const std::string http_url = "http://127.0.0.1:" + plain.port + "/ok";
    const std::string https = "https://127.0.0.1:" + tls.port + "/ok";
    test::write_file(dir.path() / "proxy-pw", "s3cret-proxy\n");
    test::write_file(dir.path() / "wrong-pw", "nope\n");

    SECTION("Basic credentials from the configuration reach the proxy; wrong ones are refused") {
        json::object section{{"ca_file", (dir.path() / "ca.pem").string()},
                             {"proxy", "http://127.0.0.1:" + std::to_string(port)},
                             {"proxy_username", "svc"},
                             {"proxy_password_file", (dir.path() / "proxy-pw").string()},
                             {"proxy_auth", "basic"}};
        const http::Client good(http::settings_from_config(section, "tenant.intune"));
        CHECK(good.perform({"GET", http_url, {}, {}}).status == 200);
        CHECK(good.perform({"GET", https, {}, {}}).body == "hello");
        section["proxy_password_file"] = (dir.path() / "wrong-pw").string();
        const http::Client bad(http::settings_from_config(section, "tenant.intune"));
        // tinyproxy 1.11 refuses a plain-HTTP request with wrong credentials with 401 (not 407).
        const auto refused = bad.perform({"GET", http_url, {}, {}});
        CHECK((refused.status == 407 || refused.status == 401));
        CHECK(refused.body != "hello");
        CHECK_THROWS_AS(bad.perform({"GET", https, {}, {}}), sdk::Error);  // CONNECT refused
        section["proxy_auth"] = "any";                                     // libcurl answers the proxy's Basic challenge
        section["proxy_password_file"] = (dir.path() / "proxy-pw").string();
        const http::Client any(http::settings_from_config(section, "tenant.intune"));
        CHECK(any.perform({"GET", https, {}, {}}).body == "hello");
    }
    SECTION("no_proxy: listed hosts go direct, others through the proxy") {
        // Nothing listens on the proxy's port: only a bypass can succeed.
        auto dead_proxy = [&](const std::string& no_proxy) {
            auto s = with_ca(dir.path());
            s.proxy = "http://127.0.0.1:1";
            s.no_proxy = no_proxy;
            return s;
        };
        const http::Client bypass(dead_proxy("login.example,127.0.0.1"));
        const auto r = bypass.perform({"GET", http_url, {}, {}});
        CHECK(r.status == 200);
        CHECK(r.header("X-Via").value_or("") == "");
        CHECK(bypass.perform({"GET", https, {}, {}}).body == "hello");

        const http::Client through(dead_proxy("login.example,.corp.example"));  // 127.0.0.1 not listed
        CHECK_THROWS_AS(through.perform({"GET", http_url, {}, {}}), sdk::Error);

        // The environment's no_proxy is ignored like its http_proxy: only configuration decides.
        ::setenv("no_proxy", "127.0.0.1", 1);
        const http::Client env(dead_proxy(""));
        CHECK_THROWS_AS(env.perform({"GET", http_url, {}, {}}), sdk::Error);
        ::unsetenv("no_proxy");

        // With a live proxy, a host not in no_proxy really goes through it.
        json::object section{{"ca_file", (dir.path() / "ca.pem").string()},
                             {"proxy", "http://127.0.0.1:" + std::to_string(port)},
                             {"proxy_username", "svc"},
                             {"proxy_password_file", (dir.path() / "proxy-pw").string()},
                             {"no_proxy", "graph.example"}};
        const http::Client live(http::settings_from_config(section, "tenant.intune"));
        CHECK_THAT(live.perform({"GET", http_url, {}, {}}).header("X-Via").value_or(""), Contains("tinyproxy"));
    }
}

TEST_CASE("http client: proxy_auth and no_proxy settings", "[http][proxy]") {
    test::TempDir dir;
    test::write_file(dir.path() / "pw", "pw\n");
    auto error_of = [](const json::object& o) {
        try {
            http::settings_from_config(o, "tenant.intune");
        } catch (const sdk::Error& e) {
            CHECK(e.code() == CC_ERR_INVALID_ARGUMENT);
            return std::string(e.what());
        }
        return std::string("no error");
    };
    const json::object ntlm{{"proxy", "http://proxy:3128"},
                            {"proxy_username", "CORP\\svc"},
                            {"proxy_password_file", (dir.path() / "pw").string()},
                            {"proxy_auth", "ntlm"},
                            {"no_proxy", "localhost,.corp.example"}};
    const auto s = http::settings_from_config(ntlm);
    CHECK(s.proxy_auth == http::ProxyAuth::ntlm);
    CHECK(s.no_proxy == "localhost,.corp.example");
    CHECK(http::settings_from_config(json::object{}).proxy_auth == http::ProxyAuth::basic);
    CHECK_THAT(error_of({{"proxy", "http://p:1"}, {"proxy_auth", "digest"}}),
               Contains("tenant.intune.proxy_auth: 'digest' is not one of basic, ntlm, any"));
    CHECK_THAT(error_of({{"proxy", "http://p:1"}, {"proxy_auth", "ntlm"}}),
               Contains("'ntlm' needs proxy_username and proxy_password_file"));
    CHECK_THAT(error_of({{"no_proxy", 5}}), Contains("tenant.intune.no_proxy: expected a string"));
    CHECK_THAT(error_of({{"no_proxy", "a\nb"}}), Contains("without control characters"));
    // The schema lists both keys, so a plugin that splices kSchemaProperties accepts them.
    const auto schema = json::parse("{" + std::string(http::kSchemaProperties) + "}").as_object();
    CHECK(schema.contains("proxy_auth"));
    CHECK(schema.contains("no_proxy"));
}
