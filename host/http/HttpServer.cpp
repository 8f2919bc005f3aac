#include "http/HttpServer.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <stdexcept>

namespace certconn::host {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using local_stream = asio::local::stream_protocol;

HttpResponseMessage make_response(unsigned status, std::string content_type, std::string body) {
    HttpResponseMessage res{static_cast<http::status>(status), 11};
    res.set(http::field::server, "certconnector/" CERTCONN_VERSION);
    res.set(http::field::content_type, content_type);
    res.body() = std::move(body);
    res.prepare_payload();
    return res;
}

namespace {

HttpResponseMessage error_response(unsigned status, const std::string& text) {
    auto res = make_response(status, "text/plain; charset=utf-8", text + "\n");
    res.keep_alive(false);
    return res;
}

}  // namespace

struct HttpServer::Impl {
    HttpLimits limits;
    HttpDispatcher dispatcher;
    EventLog& log;
    asio::io_context io;
    asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
    asio::thread_pool workers;
    std::vector<std::thread> io_threads;
    int io_thread_count;
    std::optional<tcp::acceptor> tcp_acceptor;
    std::optional<local_stream::acceptor> unix_acceptor;
    std::filesystem::path unix_path;
    std::optional<asio::ssl::context> tls;
    std::atomic<bool> stopping{false};
    bool stopped = false;

    // Live connections: closed at once when idle at stop, else after their response.
    struct Connection {
        asio::any_io_executor executor;
        std::function<void()> close;
        std::atomic<bool> idle{true};
        bool finished = false;  // touched only on the connection's strand
    };
    static void close_on_strand(const std::shared_ptr<Connection>& c) {
        asio::post(c->executor, [c] {
            if (!c->finished) c->close();
        });
    }
    mutable std::mutex connections_mutex;
    std::condition_variable connections_done;
    std::map<std::uint64_t, std::shared_ptr<Connection>> connections;
    std::uint64_t next_connection = 0;

    Impl(HttpLimits l, int io_threads_, int worker_count, HttpDispatcher d, EventLog& lg)
        : limits(l), dispatcher(std::move(d)), log(lg), workers(worker_count), io_thread_count(io_threads_) {}

    std::uint64_t track(std::shared_ptr<Connection> c) {
        std::lock_guard lock(connections_mutex);
        connections.emplace(++next_connection, std::move(c));
        return next_connection;
    }
    void untrack(std::uint64_t id) {
        std::lock_guard lock(connections_mutex);
        connections.erase(id);
        if (connections.empty()) connections_done.notify_all();
    }

    HttpResponseMessage dispatch(const HttpRequestMessage& req, const RequestOrigin& origin) {
        try {
            return dispatcher(req, origin);
        } catch (const std::exception& e) {
            log.emit(CC_EV_HttpHandlerFailed, CC_LEVEL_ERROR,
                     std::string(req.method_string()) + " " + std::string(req.target()) + ": " + e.what());
            return error_response(500, "internal error");
        }
    }

    template <class Stream>
    asio::awaitable<void> serve(Stream& stream, RequestOrigin origin, std::shared_ptr<Connection> conn) {
        beast::flat_buffer buffer;
        for (;;) {
            http::request_parser<http::string_body> parser;
            parser.header_limit(static_cast<std::uint32_t>(limits.max_header_bytes));
            parser.body_limit(limits.max_body_bytes);
            beast::get_lowest_layer(stream).expires_after(limits.read_timeout);
            conn->idle = true;
            if (stopping) co_return;
            beast::error_code ec;
            co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
            conn->idle = false;
            if (ec == http::error::end_of_stream || ec == asio::error::operation_aborted ||
                ec == asio::error::connection_reset || ec == beast::error::timeout || ec == asio::error::eof ||
                ec == asio::ssl::error::stream_truncated)
                co_return;
            HttpResponseMessage res;
            bool keep_alive = false;
            if (ec) {
                unsigned status = 400;
                std::string what = "malformed request: " + ec.message();
                if (ec == http::error::body_limit) {
                    status = 413;
                    what = "request body exceeds " + std::to_string(limits.max_body_bytes) + " bytes";
                } else if (ec == http::error::header_limit) {
                    status = 431;
                    what = "request header exceeds " + std::to_string(limits.max_header_bytes) + " bytes";
                }
                log.emit(CC_EV_HttpRequestRejected, CC_LEVEL_WARNING, origin.remote_address + ": " + what);
                res = error_response(status, what);
            } else {
                HttpRequestMessage req = parser.release();
                keep_alive = req.keep_alive();
                res = co_await asio::co_spawn(
                    workers.get_executor(),
                    [&]() -> asio::awaitable<HttpResponseMessage> { co_return dispatch(req, origin); },
                    asio::use_awaitable);
                res.version(req.version());
            }
            if (stopping) keep_alive = false;
            res.keep_alive(keep_alive && res.keep_alive());
            if (!res.has_content_length() && !res.chunked()) res.prepare_payload();
            keep_alive = res.keep_alive();
            co_await http::async_write(stream, res, asio::redirect_error(asio::use_awaitable, ec));
            if (ec || !keep_alive) co_return;
        }
    }

    template <class Stream>
    asio::awaitable<void> run_session(Stream stream, RequestOrigin origin) {
        auto conn = std::make_shared<Connection>();
        conn->executor = stream.get_executor();
        conn->close = [&stream] {
            beast::error_code ignored;
            beast::get_lowest_layer(stream).socket().close(ignored);
        };
        const auto id = track(conn);
        try {
            co_await serve(stream, origin, conn);
        } catch (const std::exception& e) {
            log.emit(CC_EV_HttpServerError, CC_LEVEL_WARNING, origin.remote_address + ": " + e.what());
        }
        beast::error_code ignored;
        beast::get_lowest_layer(stream).socket().shutdown(asio::socket_base::shutdown_both, ignored);
        conn->finished = true;
        untrack(id);
    }

    asio::awaitable<void> run_tls_session(beast::tcp_stream tcp_stream, RequestOrigin origin) {
        beast::ssl_stream<beast::tcp_stream> stream(std::move(tcp_stream), *tls);
        beast::get_lowest_layer(stream).expires_after(limits.read_timeout);
        beast::error_code ec;
        co_await stream.async_handshake(asio::ssl::stream_base::server, asio::redirect_error(asio::use_awaitable, ec));
        if (ec) {
            log.emit(CC_EV_HttpRequestRejected, CC_LEVEL_DEBUG, origin.remote_address + ": TLS handshake failed: " + ec.message());
            co_return;
        }
        co_await run_session(std::move(stream), std::move(origin));
    }

    asio::awaitable<void> accept_tcp() {
        for (;;) {
            beast::error_code ec;
            tcp::socket socket = co_await tcp_acceptor->async_accept(asio::make_strand(io), asio::redirect_error(asio::use_awaitable, ec));
            if (ec == asio::error::operation_aborted || stopping) co_return;
            if (ec) {
                log.emit(CC_EV_HttpServerError, CC_LEVEL_WARNING, "accept failed: " + ec.message());
                continue;
            }
            beast::error_code ep_ec;
            const auto ep = socket.remote_endpoint(ep_ec);
            RequestOrigin origin{ep_ec ? "unknown" : ep.address().to_string() + ":" + std::to_string(ep.port()), false,
                                 !ep_ec && ep.address().is_loopback()};
            auto ex = socket.get_executor();
            beast::tcp_stream stream(std::move(socket));
            if (tls)
                asio::co_spawn(ex, run_tls_session(std::move(stream), std::move(origin)), asio::detached);
            else
                asio::co_spawn(ex, run_session(std::move(stream), std::move(origin)), asio::detached);
        }
    }

    asio::awaitable<void> accept_unix() {
        for (;;) {
            beast::error_code ec;
            local_stream::socket socket = co_await unix_acceptor->async_accept(asio::make_strand(io), asio::redirect_error(asio::use_awaitable, ec));
            if (ec == asio::error::operation_aborted || stopping) co_return;
            if (ec) continue;
            RequestOrigin origin{"local", true, true};
            ucred cred{};
            socklen_t len = sizeof cred;
            if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && len == sizeof cred) {
                origin.peer_uid = static_cast<long>(cred.uid);
                origin.peer_gid = static_cast<long>(cred.gid);
                origin.peer_pid = static_cast<long>(cred.pid);
            }
            auto ex = socket.get_executor();
            beast::basic_stream<local_stream> stream(std::move(socket));
            asio::co_spawn(ex, run_session(std::move(stream), std::move(origin)), asio::detached);
        }
    }
};

HttpServer::HttpServer(HttpLimits limits, int io_threads, int workers, HttpDispatcher dispatcher, EventLog& log)
    : impl_(std::make_unique<Impl>(limits, std::max(1, io_threads), std::max(1, workers), std::move(dispatcher), log)) {}

HttpServer::~HttpServer() { stop(); }

void HttpServer::listen_tcp(const std::string& address, const std::optional<TlsSettings>& tls) {
    auto [host, port] = split_listen_address(address);
    try {
        if (tls) {
            impl_->tls.emplace(asio::ssl::context::tls_server);
            auto& ctx = *impl_->tls;
            SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
            ctx.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_compression |
                            asio::ssl::context::single_dh_use);
            ctx.use_certificate_chain_file(tls->certificate.string());
            ctx.use_private_key_file(tls->private_key.string(), asio::ssl::context::pem);
        }
        tcp::resolver resolver(impl_->io);
        auto results = resolver.resolve(host, std::to_string(port), tcp::resolver::passive | tcp::resolver::numeric_service);
        const tcp::endpoint endpoint = *results.begin();
        auto& acceptor = impl_->tcp_acceptor.emplace(impl_->io);
        acceptor.open(endpoint.protocol());
        acceptor.set_option(asio::socket_base::reuse_address(true));
        acceptor.bind(endpoint);
        acceptor.listen(asio::socket_base::max_listen_connections);
        tcp_port_ = acceptor.local_endpoint().port();
    } catch (const boost::system::system_error& e) {  // what() would append Boost's source location
        impl_->tcp_acceptor.reset();
        throw std::runtime_error("cannot listen on " + address + ": " + e.code().message());
    } catch (const std::exception& e) {
        impl_->tcp_acceptor.reset();
        throw std::runtime_error("cannot listen on " + address + ": " + e.what());
    }
    asio::co_spawn(impl_->io, impl_->accept_tcp(), asio::detached);
    impl_->log.emit(CC_EV_HttpListening, CC_LEVEL_INFO,
                    std::string(tls ? "HTTPS" : "HTTP") + " listening on " + address + " (port " + std::to_string(tcp_port_) + ")");
}

void HttpServer::listen_unix(const std::filesystem::path& socket_path) {
    std::error_code fs_ec;
    if (std::filesystem::is_socket(socket_path, fs_ec)) std::filesystem::remove(socket_path, fs_ec);
    try {
        auto& acceptor = impl_->unix_acceptor.emplace(impl_->io);
        const mode_t old = ::umask(0177);
        beast::error_code ec;
        acceptor.open(local_stream(), ec);
        if (!ec) acceptor.bind(local_stream::endpoint(socket_path.string()), ec);
        ::umask(old);
        if (ec) throw beast::system_error(ec);
        ::chmod(socket_path.c_str(), 0600);
        acceptor.listen();
    } catch (const std::exception& e) {
        impl_->unix_acceptor.reset();
        throw std::runtime_error("cannot create the admin socket " + socket_path.string() + ": " + e.what());
    }
    impl_->unix_path = socket_path;
    asio::co_spawn(impl_->io, impl_->accept_unix(), asio::detached);
}

void HttpServer::start() {
    for (int i = 0; i < impl_->io_thread_count; ++i) impl_->io_threads.emplace_back([this] { impl_->io.run(); });
}

std::size_t HttpServer::active_connections() const {
    std::lock_guard lock(impl_->connections_mutex);
    return impl_->connections.size();
}

void HttpServer::stop() {
    Impl& s = *impl_;
    if (s.stopped) return;
    s.stopped = true;
    s.stopping = true;
    asio::post(s.io, [&s] {
        beast::error_code ignored;
        if (s.tcp_acceptor) s.tcp_acceptor->close(ignored);
        if (s.unix_acceptor) s.unix_acceptor->close(ignored);
    });
    {
        std::unique_lock lock(s.connections_mutex);
        for (auto& [id, conn] : s.connections)
            if (conn->idle) Impl::close_on_strand(conn);
        s.connections_done.wait_for(lock, s.limits.drain_timeout, [&] { return s.connections.empty(); });
        for (auto& [id, conn] : s.connections) Impl::close_on_strand(conn);
    }
    s.work.reset();
    // Give closed sessions a moment to unwind, then stop the loop for good.
    {
        std::unique_lock lock(s.connections_mutex);
        s.connections_done.wait_for(lock, std::chrono::seconds(2), [&] { return s.connections.empty(); });
    }
    s.io.stop();
    for (auto& t : s.io_threads)
        if (t.joinable()) t.join();
    s.workers.join();
    if (!s.unix_path.empty()) {
        std::error_code ec;
        std::filesystem::remove(s.unix_path, ec);
    }
}

}  // namespace certconn::host
