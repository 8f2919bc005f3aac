// Integration-test helpers: the real certconnector binary as a child process, its CLI, and
// a small HTTP client.
#pragma once

#include "support/TestFiles.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/write.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <signal.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace certconn::test {

struct CliResult {
    int exit_code = -1;
    std::string output;  // stdout and stderr
};

inline std::string shell_quote(const std::string& s) {
    std::string out = "'";
    for (char c : s)
        out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

/// Runs a shell command to completion, capturing stdout and stderr.
inline CliResult run_shell(const std::string& command) {
    CliResult r;
    FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
    if (!pipe) return r;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, pipe)) > 0)
        r.output.append(buf, n);
    const int status = ::pclose(pipe);
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}

/// Runs `certconnector <args>` to completion.
inline CliResult run_cli(const std::vector<std::string>& args) {
    std::string cmd = shell_quote(CERTCONNECTOR_BIN);
    for (const auto& a : args)
        cmd += " " + shell_quote(a);
    return run_shell(cmd);
}

/// Polls `condition` every 50 ms for up to `limit`; a bound on waiting, not a timing assertion.
inline bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds limit = std::chrono::seconds(20)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
        if (condition()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return condition();
}

/// `certconnector run --config F` as a child process; SIGKILLed if a test forgets to stop it.
/// With `nofile_limit`, the daemon runs with RLIMIT_NOFILE soft and hard set to it (through
/// util-linux `prlimit`, which sets the limit and then execs the daemon: pid() stays the daemon's).
class Daemon {
public:
    explicit Daemon(const std::filesystem::path& config, const std::filesystem::path& output,
                    std::optional<unsigned> nofile_limit = std::nullopt)
        : output_(output) {
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 1, output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        posix_spawn_file_actions_adddup2(&actions, 1, 2);
        std::vector<std::string> args = {CERTCONNECTOR_BIN, "run", "--config", config.string()};
        if (nofile_limit)
            args.insert(args.begin(),
                        {"prlimit", "--nofile=" + std::to_string(*nofile_limit) + ":" + std::to_string(*nofile_limit), "--"});
        std::vector<char*> argv;
        for (auto& a : args)
            argv.push_back(a.data());
        argv.push_back(nullptr);
        if (posix_spawnp(&pid_, argv[0], &actions, nullptr, argv.data(), environ) != 0) pid_ = -1;
        posix_spawn_file_actions_destroy(&actions);
    }
    ~Daemon() {
        if (pid_ > 0 && !exit_code_) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
    }
    pid_t pid() const { return pid_; }
    void signal(int sig) const { ::kill(pid_, sig); }
    std::string output() const { return read_file(output_); }

    /// Waits for the process to exit (bounded); returns its exit code.
    std::optional<int> wait_exit(std::chrono::seconds limit = std::chrono::seconds(30)) {
        eventually(
            [&] {
                int status = 0;
                if (::waitpid(pid_, &status, WNOHANG) == pid_)
                    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
                return exit_code_.has_value();
            },
            limit);
        return exit_code_;
    }
    bool running() {
        int status = 0;
        if (!exit_code_ && ::waitpid(pid_, &status, WNOHANG) == pid_) exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        return !exit_code_;
    }

private:
    std::filesystem::path output_;
    pid_t pid_ = -1;
    std::optional<int> exit_code_;
};

/// Waits (bounded) until the daemon answers `status` on its admin socket; returns that status,
/// or an empty object when the daemon exited or never answered (its output says why).
inline boost::json::object wait_for_status(Daemon& daemon, const std::filesystem::path& config) {
    boost::json::object status;
    eventually([&] {
        if (!daemon.running()) return true;
        auto r = run_cli({"status", "--config", config.string(), "--json"});
        if (r.exit_code != 0) return false;
        status = boost::json::parse(r.output).as_object();
        return true;
    });
    return status;
}

struct HttpResult {
    unsigned status = 0;
    std::string body;
    std::string content_type;
    std::string retry_after;
};

/// A bearer token tests and benches configure for their TCP job intake ([auth.tokens.test]),
/// since loopback callers are anonymous; its SHA-256 is what the configuration holds.
inline constexpr const char* kTestToken = "cct_test-intake-token";
inline std::string test_token_config(const std::string& scopes = R"(["jobs:submit", "jobs:read"])") {
    return "[auth.tokens.test]\nsha256 = \"249fbea89a7bd994a422a178b22bbb971cbecfea6c3bf57cc8734d78caa6f386\"\nscopes = " +
           scopes + "\n";
}

inline HttpResult http_request(std::uint16_t port, const std::string& method, const std::string& target,
                               const std::string& body = {}, const std::string& bearer = {}) {
    namespace beast = boost::beast;
    namespace http = beast::http;
    boost::asio::io_context io;
    beast::tcp_stream stream(io);
    stream.connect(boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), port));
    stream.expires_after(std::chrono::seconds(30));
    http::request<http::string_body> req{http::string_to_verb(method), target, 11};
    req.set(http::field::host, "127.0.0.1");
    req.set(http::field::user_agent, "certconn-test");
    if (!bearer.empty()) req.set(http::field::authorization, "Bearer " + bearer);
    req.body() = body;
    req.prepare_payload();
    http::write(stream, req);
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 * 1024 * 1024);
    http::read(stream, buffer, parser);
    auto res = parser.release();
    return {static_cast<unsigned>(res.result_int()), res.body(), std::string(res[http::field::content_type]),
            std::string(res[http::field::retry_after])};
}

/// Sends raw bytes, then reads until the server closes the connection or `limit` passes.
/// Returns what was read and whether the server closed the connection.
inline std::pair<std::string, bool> raw_exchange(std::uint16_t port, const std::string& bytes,
                                                 std::chrono::seconds limit = std::chrono::seconds(15)) {
    boost::asio::io_context io;
    boost::asio::ip::tcp::socket socket(io);
    socket.connect(boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), port));
    timeval tv{static_cast<time_t>(limit.count()), 0};
    ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    boost::asio::write(socket, boost::asio::buffer(bytes));
    std::string received;
    char buf[4096];
    for (;;) {
        const ssize_t n = ::recv(socket.native_handle(), buf, sizeof buf, 0);
        if (n == 0) return {received, true};
        if (n < 0) return {received, false};
        received.append(buf, static_cast<std::size_t>(n));
    }
}

}  // namespace certconn::test
