// Connection floods against the real daemon: a descriptor limit of 256 and 400 idle
// connections must neither stop the admin socket nor erase the event history, and
// [host] max_connections caps what is served at once.
#include "support/Daemon.hpp"

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <netinet/in.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <sstream>

using namespace certconn::test;
namespace json = boost::json;

namespace {

struct FloodInstallation {
    TempDir dir;
    std::filesystem::path config = dir / "certconnector.toml";
    std::filesystem::path plugins = dir / "plugins";
    std::filesystem::path log = dir / "log";

    explicit FloodInstallation(const std::string& host_extra, const std::string& log_section) {
        std::filesystem::create_directory(plugins);
        ::chmod(plugins.c_str(), 0755);
        for (const char* good : {"fixture-echo", "fixture-ca", "fixture-tenant"})
            install_fixture(plugins, "good", good);
        write_file(config,
                   "[host]\nlisten = \"127.0.0.1:0\"\nplugin_dir = \"plugins\"\nstate_dir = \"state\"\n"
                   "log_dir = \"log\"\n" +
                       host_extra + "[log]\n" + log_section +
                       "[ca.test]\nplugin = \"fixture\"\nlabel = \"issuing\"\npassword = \"x\"\n"
                       "[tenant]\nplugin = \"fixture\"\n"
                       "[echo]\nca = \"test\"\ngreeting = \"hello\"\n");
    }
    std::filesystem::path admin_socket() const { return dir / "state" / "admin.sock"; }
    std::vector<json::object> operational() const {
        std::vector<json::object> out;
        std::istringstream in(read_file(log / "operational.jsonl"));
        for (std::string line; std::getline(in, line);)
            if (!line.empty()) out.push_back(json::parse(line).as_object());
        return out;
    }
    std::uint16_t wait_ready(Daemon& daemon) const {
        json::object status = wait_for_status(daemon, config);
        INFO(daemon.output());
        REQUIRE_FALSE(status.empty());
        return static_cast<std::uint16_t>(status.at("port").as_int64());
    }
};

std::size_t count_events(const std::vector<json::object>& records, const std::string& name, const std::string& text = {}) {
    std::size_t n = 0;
    for (const auto& r : records)
        n += r.at("name").as_string() == name &&
             (text.empty() || std::string(r.at("message").as_string()).find(text) != std::string::npos);
    return n;
}

/// A TCP connection to 127.0.0.1:port made without blocking longer than 10 s; -1 on failure.
int open_idle_connection(std::uint16_t port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 && errno != EINPROGRESS) {
        ::close(fd);
        return -1;
    }
    pollfd p{fd, POLLOUT, 0};
    int err = 0;
    socklen_t len = sizeof err;
    if (::poll(&p, 1, 10000) != 1 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

/// Sends `request` on `fd` and reads until the peer closes or `limit` passes without data.
std::string exchange(int fd, const std::string& request, std::chrono::seconds limit) {
    const int flags = ::fcntl(fd, F_GETFL);
    ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) return {};
    timeval tv{static_cast<time_t>(limit.count()), 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string received;
    char buf[4096];
    for (;;) {
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) return received;
        received.append(buf, static_cast<std::size_t>(n));
    }
}

/// GET /healthz over the admin socket; the raw response, empty when nothing answered.
std::string admin_healthz(const std::filesystem::path& socket_path) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return {};
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", socket_path.c_str());
    std::string answer;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0)
        answer = exchange(fd, "GET /healthz HTTP/1.1\r\nHost: local\r\nConnection: close\r\n\r\n", std::chrono::seconds(20));
    ::close(fd);
    return answer;
}

/// utime + stime of a process, in clock ticks.
long cpu_ticks(pid_t pid) {
    const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
    std::istringstream in(stat.substr(stat.rfind(')') + 2));
    std::string field;
    long utime = 0, stime = 0;
    for (int i = 3; i <= 15 && in >> field; ++i) {
        if (i == 14) utime = std::stol(field);
        if (i == 15) stime = std::stol(field);
    }
    return utime + stime;
}

}  // namespace

TEST_CASE("http flood: 400 idle connections with 256 descriptors keep the admin socket, the event history and a calm CPU") {
    // Small log files: an event written per failed accept would rotate ServiceStarted away within
    // a second, which is exactly what happened before the listener learnt to pause.
    FloodInstallation inst("", "max_file_mb = 1\narchives = 1\n");
    Daemon daemon(inst.config, inst.dir / "daemon.out", 256u);
    const auto port = inst.wait_ready(daemon);
    const std::string limits = read_file("/proc/" + std::to_string(daemon.pid()) + "/limits");
    const auto line = limits.find("Max open files");
    REQUIRE(line != std::string::npos);
    std::istringstream fields(limits.substr(line + std::string("Max open files").size()));
    std::string soft, hard;
    fields >> soft >> hard;
    REQUIRE(soft == "256");
    REQUIRE(hard == "256");

    std::vector<int> flood;
    for (int i = 0; i < 400; ++i) {
        const int fd = open_idle_connection(port);
        if (fd >= 0) flood.push_back(fd);
    }
    CHECK(flood.size() == 400);  // the kernel completes them; the daemon accepts what it can hold

    const long ticks_before = cpu_ticks(daemon.pid());
    std::this_thread::sleep_for(std::chrono::seconds(3));  // the flood stays connected
    const long ticks_after = cpu_ticks(daemon.pid());

    // The admin socket answers during the flood: descriptors were kept for it.
    CHECK_THAT(admin_healthz(inst.admin_socket()),
               Catch::StartsWith("HTTP/1.1 200") && Catch::EndsWith(R"({"status":"ok","support":"supported"})"));
    auto status = run_cli({"status", "--config", inst.config.string(), "--json"});
    CHECK(status.exit_code == 0);

    // CPU time, not wall time: 3 s of a spinning accept loop is >= 1 s of CPU even on a loaded
    // machine; a paused listener uses a few ticks. A slow machine only makes this smaller.
    const long ticks_per_second = ::sysconf(_SC_CLK_TCK);
    INFO("daemon CPU ticks during 3 s of flood: " << ticks_after - ticks_before << " (" << ticks_per_second << "/s)");
    CHECK(ticks_after - ticks_before < ticks_per_second);

    for (int fd : flood)
        ::close(fd);
    // Once the flood is gone, TCP is served again.
    CHECK(eventually(
        [&] {
            try {
                return http_request(port, "GET", "/healthz").status == 200;
            } catch (const std::exception&) {
                return false;
            }
        },
        std::chrono::seconds(60)));

    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
    const auto records = inst.operational();
    INFO(daemon.output());
    // History intact: nothing rotated, the start of this run is still in the live file.
    CHECK_FALSE(std::filesystem::exists(inst.log / "operational.1.jsonl"));
    CHECK(count_events(records, "ServiceStarted") == 1);
    CHECK(count_events(records, "HttpListening", "lowered to fit the descriptor limit 256") == 1);
    // Accept failures (if descriptors ran out at all) are reported per episode, not per attempt.
    CHECK(count_events(records, "HttpServerError", "accept failed") <= 2);
    CHECK(records.size() < 200);
}

TEST_CASE("http max_connections: the 9th connection is served only when one of 8 closes, the admin socket is not counted") {
    FloodInstallation inst("max_connections = 8\n", "");
    Daemon daemon(inst.config, inst.dir / "daemon.out");
    const auto port = inst.wait_ready(daemon);

    std::vector<int> eight;
    for (int i = 0; i < 8; ++i)
        eight.push_back(open_idle_connection(port));
    for (int fd : eight)
        REQUIRE(fd >= 0);
    REQUIRE(eventually([&] { return count_events(inst.operational(), "HttpConnectionLimitReached") >= 1; }));

    const int ninth = open_idle_connection(port);  // completes in the kernel's backlog
    REQUIRE(ninth >= 0);
    const std::string request = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    CHECK(exchange(ninth, request, std::chrono::seconds(2)).empty());  // not accepted, so not answered
    CHECK_THAT(admin_healthz(inst.admin_socket()), Catch::StartsWith("HTTP/1.1 200"));

    ::close(eight.back());
    eight.pop_back();
    // The request already sent is read as soon as the 9th is accepted.
    std::string answer;
    CHECK(eventually(
        [&] {
            char buf[4096];
            const ssize_t n = ::recv(ninth, buf, sizeof buf, 0);
            if (n > 0) answer.append(buf, static_cast<std::size_t>(n));
            return answer.find(R"({"status":"ok")") != std::string::npos || n == 0;
        },
        std::chrono::seconds(30)));
    CHECK_THAT(answer, Catch::StartsWith("HTTP/1.1 200"));
    ::close(ninth);
    for (int fd : eight)
        ::close(fd);

    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
    const auto records = inst.operational();
    for (const auto& r : records)
        if (r.at("name").as_string() == "ConfigurationLoaded")
            CHECK(r.at("fields").at("configuration").at("host").at("max_connections").to_number<long>() == 8);
}
