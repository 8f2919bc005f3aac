// The host HTTP server: a TCP listener (optionally TLS 1.2+) for devices and tenants, and a
// local admin socket for the CLI. Requests are bounded in header size, body size and read
// time; handlers run on a worker pool so a slow plugin never stalls the I/O threads; stop()
// drains requests in flight before closing.
//
// Floods: at most max_connections TCP connections are served at once (held below the
// process's descriptor limit, so descriptors stay for the admin socket, the event log and
// plugins); at the cap the listener stops accepting until one closes. An accept that fails for
// lack of descriptors or memory pauses the listener (100 ms, doubling to 1 s) instead of
// retrying at once, and writes one event per episode. See docs/security.md.
#pragma once

#include "config/Config.hpp"
#include "eventlog/EventLog.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace certconn::host {

using HttpRequestMessage = boost::beast::http::request<boost::beast::http::string_body>;
using HttpResponseMessage = boost::beast::http::response<boost::beast::http::string_body>;

struct HttpLimits {
    std::size_t max_header_bytes = std::size_t{16} * 1024;
    std::size_t max_body_bytes = std::size_t{2} * 1024 * 1024;
    std::chrono::seconds read_timeout{30};
    std::chrono::seconds drain_timeout{15};
    std::size_t max_connections = 1024;    // TCP connections at once; the admin socket is not counted
    std::size_t max_queued_requests = 64;  // TCP requests waiting for a busy worker; more get 503
};

/// Where a request came from, as the transport saw it. Whether the peer is privileged is decided
/// from this by host/auth (never from the address alone: a loopback peer is anonymous).
struct RequestOrigin {
    std::string remote_address;  // "ip:port", or "local" for the admin socket
    bool admin = false;          // arrived through the admin socket
    bool loopback = false;       // from this machine (admin socket or a loopback address)
    // Admin socket: the peer's credentials (SO_PEERCRED); -1 when unknown.
    long peer_uid = -1;
    long peer_gid = -1;
    long peer_pid = -1;
    // TCP over TLS: a client certificate the peer presented and the handshake verified against
    // [host.tls] client_ca; both empty when none was presented.
    std::string client_cert_sha256;   // lower-case hex SHA-256 of the certificate's DER
    std::string client_cert_subject;  // RFC 2253 subject, for the event log
};

/// Turns a request into a response. Runs on a worker thread; may block.
using HttpDispatcher = std::function<HttpResponseMessage(const HttpRequestMessage&, const RequestOrigin&)>;

/// A plain response with the given status, content type and body.
HttpResponseMessage make_response(unsigned status, const std::string& content_type, std::string body);

class HttpServer {
public:
    HttpServer(HttpLimits limits, int io_threads, int workers, HttpDispatcher dispatcher, EventLog& log);
    ~HttpServer();
    HttpServer(const HttpServer&) = delete;
    HttpServer& operator=(const HttpServer&) = delete;

    /// Binds the TCP listener; throws std::runtime_error with the address and the reason. With
    /// `tls`: TLS 1.2/1.3 with Mozilla's "intermediate" policy; when tls->client_ca is set, a
    /// client certificate is requested (not required) and verified against it.
    void listen_tcp(const std::string& address, const std::optional<TlsSettings>& tls);
    /// Re-reads the TLS certificate, key and client CA bundle and uses them for new handshakes
    /// (connections already open keep theirs). Throws std::runtime_error naming the file and the
    /// reason when they cannot be used; the previous ones then keep serving.
    void reload_tls(const TlsSettings& tls);
    /// Binds the admin socket (mode 0600), replacing a stale socket file.
    void listen_unix(const std::filesystem::path& socket_path);
    /// Starts the I/O threads.
    void start();
    /// Stops accepting, lets requests in flight finish (up to drain_timeout), closes the rest.
    void stop();

    std::uint16_t tcp_port() const { return tcp_port_; }
    std::size_t active_connections() const;
    /// TCP connections served at once: max_connections, or less when the descriptor limit is lower.
    std::size_t tcp_connection_limit() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
    std::uint16_t tcp_port_ = 0;
};

}  // namespace certconn::host
