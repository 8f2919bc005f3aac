#include "http/HttpServer.hpp"

#include <certconn/backoff.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <stdexcept>

namespace certconn::host {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using local_stream = asio::local::stream_protocol;

HttpResponseMessage make_response(unsigned status, const std::string& content_type, std::string body) {
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

// --- TLS policy -----------------------------------------------------------------------------
// Mozilla Server Side TLS guideline 6.0, "intermediate" configuration
// (https://ssl-config.mozilla.org/guidelines/6.0.json): TLS 1.2 and 1.3; for TLS 1.2 only
// ECDHE key exchange with AEAD ciphers (no RSA key exchange, no CBC, no DHE); the TLS 1.3
// defaults; curves X25519, P-256, P-384 (the guideline also lists X25519MLKEM768, which needs
// OpenSSL 3.5); the client's cipher preference (server_preferred_order: false, since every
// cipher offered is strong). Renegotiation and compression are off.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
constexpr const char* kTls13Ciphersuites = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
constexpr const char* kTlsGroups = "X25519:prime256v1:secp384r1";

/// The OpenSSL error queue as text (and emptied).
std::string openssl_errors() {
    std::string out;
    while (const unsigned long e = ERR_get_error()) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        if (!out.empty()) out += "; ";
        out += buf;
    }
    return out.empty() ? "no detail from OpenSSL" : out;
}

[[noreturn]] void tls_failure(const std::string& what) {
    throw std::runtime_error(what + ": " + openssl_errors());
}

std::string hex_lower(const unsigned char* data, std::size_t size) {
    static const char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(size * 2);
    for (std::size_t i = 0; i < size; ++i) {
        out += digits[data[i] >> 4];
        out += digits[data[i] & 0xf];
    }
    return out;
}

/// Lower-case hex SHA-256 of the certificate's DER; empty when it cannot be computed.
std::string certificate_sha256(const X509* cert) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    if (cert == nullptr || X509_digest(cert, EVP_sha256(), md, &size) != 1) {
        ERR_clear_error();
        return {};
    }
    return hex_lower(md, size);
}

/// The subject in RFC 2253 form; empty when it cannot be printed.
std::string subject_rfc2253(const X509* cert) {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), &BIO_free);
    if (!bio || X509_NAME_print_ex(bio.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) < 0) {
        ERR_clear_error();
        return {};
    }
    char* data = nullptr;
    const long size = BIO_get_mem_data(bio.get(), &data);
    return size > 0 ? std::string(data, static_cast<std::size_t>(size)) : std::string();
}

/// A server context with the policy above and the files in `settings`; throws
/// std::runtime_error naming the file and OpenSSL's reason.
std::shared_ptr<asio::ssl::context> make_tls_context(const TlsSettings& settings) {
    ERR_clear_error();
    std::shared_ptr<asio::ssl::context> holder;
    try {
        holder = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
    } catch (const boost::system::system_error& e) {
        throw std::runtime_error("TLS: cannot create a server context: " + e.code().message());
    }
    SSL_CTX* ctx = holder->native_handle();
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) tls_failure("TLS: cannot make TLS 1.2 the minimum version");
    constexpr std::uint64_t wanted = SSL_OP_ALL | SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION;
    if ((SSL_CTX_set_options(ctx, wanted) & wanted) != wanted) tls_failure("TLS: cannot turn off compression and renegotiation");
    if ((SSL_CTX_clear_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE) & SSL_OP_CIPHER_SERVER_PREFERENCE) != 0)
        tls_failure("TLS: cannot leave the cipher choice to the client");
    if (SSL_CTX_set_cipher_list(ctx, kTls12Ciphers) != 1) tls_failure("TLS: cannot set the TLS 1.2 cipher list");
    if (SSL_CTX_set_ciphersuites(ctx, kTls13Ciphersuites) != 1) tls_failure("TLS: cannot set the TLS 1.3 cipher suites");
    if (SSL_CTX_set1_groups_list(ctx, kTlsGroups) != 1) tls_failure("TLS: cannot set the key exchange groups");
    static constexpr unsigned char kSessionContext[] = "certconnector";
    if (SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof kSessionContext - 1) != 1)
        tls_failure("TLS: cannot set the session id context");

    const std::string cert = settings.certificate.string();
    const std::string key = settings.private_key.string();
    if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1)
        tls_failure("TLS certificate " + cert + ": cannot load the PEM certificate chain");
    if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1)
        tls_failure("TLS private key " + key + ": cannot load the PEM private key");
    if (SSL_CTX_check_private_key(ctx) != 1)
        tls_failure("TLS private key " + key + " does not belong to the certificate " + cert);

    if (!settings.client_ca.empty()) {
        const std::string ca = settings.client_ca.string();
        if (SSL_CTX_load_verify_locations(ctx, ca.c_str(), nullptr) != 1)
            tls_failure("TLS client CA bundle " + ca + ": cannot load");
        STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(ca.c_str());
        if (names == nullptr) tls_failure("TLS client CA bundle " + ca + ": no CA certificate names in it");
        SSL_CTX_set_client_CA_list(ctx, names);  // takes ownership; tells clients which CAs to use
        // Ask for a certificate but do not require one (SCEP devices and tenants connect without);
        // one that is presented and fails verification fails the handshake.
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE, nullptr);
    }
    return holder;
}

/// After a handshake: the verified client certificate's fingerprint and subject, if any.
void fill_client_certificate(SSL* ssl, RequestOrigin& origin) {
    if ((SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER) == 0) return;  // none was asked for
    const X509* cert = SSL_get0_peer_certificate(ssl);
    if (cert == nullptr || SSL_get_verify_result(ssl) != X509_V_OK) return;  // never report an unverified one
    origin.client_cert_sha256 = certificate_sha256(cert);
    origin.client_cert_subject = origin.client_cert_sha256.empty() ? std::string() : subject_rfc2253(cert);
}

// --- accept failures and descriptor budget ------------------------------------------------------
constexpr std::chrono::milliseconds kAcceptBackoffFirst{100};
constexpr std::chrono::milliseconds kAcceptBackoffMax{1000};

/// The peer went away between connect and accept: nothing is wrong with the listener.
bool peer_went_away(const beast::error_code& ec) {
    return ec == asio::error::connection_aborted || ec == asio::error::try_again || ec == asio::error::would_block ||
           ec == asio::error::interrupted ||
           (ec.category() == boost::system::system_category() && (ec.value() == EPROTO || ec.value() == EPERM));
}

/// A listener whose accept keeps failing pauses with a growing delay and reports the episode
/// once, instead of retrying at once (which spins a core and floods the event log).
struct AcceptPause {
    static constexpr sdk::Backoff kPolicy{kAcceptBackoffFirst, kAcceptBackoffMax, 0.0};
    int attempt = 0;  // delays taken in this episode
    bool paused = false;
    std::uint64_t failures = 0;
    std::chrono::steady_clock::time_point since;

    /// Records a failure; returns true when it starts an episode (write the event then).
    bool failed() {
        ++failures;
        if (paused) return false;
        paused = true;
        since = std::chrono::steady_clock::now();
        return true;
    }
    std::chrono::milliseconds delay() {
        if (attempt < 64) ++attempt;  // past the cap already; keeps the counter from overflowing
        return kPolicy.delay(attempt);
    }
    /// An accept succeeded; returns the failures of the episode that ended (0: none).
    std::uint64_t succeeded() {
        const auto n = paused ? failures : 0;
        paused = false;
        failures = 0;
        attempt = 0;
        return n;
    }
};

/// Descriptors kept free of TCP connections for the admin socket, the event log, databases
/// and plugins: 64, or a quarter of a smaller limit.
rlim_t descriptor_reserve(rlim_t limit) {
    return std::min<rlim_t>(64, limit / 4);
}

/// TCP connections the process can hold: `wanted`, lowered to fit the descriptor limit after
/// raising the soft limit as far as the hard limit allows. `limit` receives the soft limit.
std::size_t connection_budget(std::size_t wanted, rlim_t& limit) {
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        limit = RLIM_INFINITY;
        return wanted;
    }
    const rlim_t needed = static_cast<rlim_t>(wanted) + 64;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < needed) {
        rlimit raised = rl;
        raised.rlim_cur = rl.rlim_max == RLIM_INFINITY ? needed : std::min(rl.rlim_max, needed);
        if (raised.rlim_cur > rl.rlim_cur && ::setrlimit(RLIMIT_NOFILE, &raised) == 0) rl = raised;
    }
    limit = rl.rlim_cur;
    if (rl.rlim_cur == RLIM_INFINITY) return wanted;
    const rlim_t usable = rl.rlim_cur - descriptor_reserve(rl.rlim_cur);
    return static_cast<std::size_t>(std::max<rlim_t>(1, std::min<rlim_t>(usable, wanted)));
}

}  // namespace

struct HttpServer::Impl {
    HttpLimits limits;
    HttpDispatcher dispatcher;
    EventLog& log;
    // Declared before io: a session frame destroyed with io releases its TCP slot here.
    std::atomic<std::size_t> tcp_open{0};  // TCP connections accepted and not yet closed
    std::size_t tcp_cap = 1;               // connection_budget(limits.max_connections)
    rlim_t descriptor_limit = RLIM_INFINITY;
    std::atomic<bool> torn_down{false};  // io threads are gone: post nothing any more
    asio::io_context io;
    asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
    asio::thread_pool workers;
    std::size_t worker_count;
    std::atomic<std::size_t> dispatched{0};  // requests handed to the workers, running or waiting
    std::vector<std::thread> io_threads;
    int io_thread_count;
    std::optional<tcp::acceptor> tcp_acceptor;
    std::optional<local_stream::acceptor> unix_acceptor;
    std::filesystem::path unix_path;
    // Both accept loops, their timers and the acceptors' closing live on this strand.
    asio::strand<asio::io_context::executor_type> accept_strand{asio::make_strand(io)};
    asio::steady_timer tcp_wakeup{accept_strand};  // waits below the cap; cancelled when one closes
    asio::steady_timer tcp_backoff{accept_strand};
    asio::steady_timer unix_backoff{accept_strand};
    bool tls_enabled = false;
    mutable std::mutex tls_mutex;
    std::shared_ptr<asio::ssl::context> tls_context;  // swapped by reload_tls; sessions hold theirs
    std::atomic<bool> stopping{false};
    bool stopped = false;

    /// One TCP connection counted against tcp_cap, released when the session's frame ends.
    class TcpSlot {
    public:
        explicit TcpSlot(Impl* impl) : impl_(impl) { impl_->tcp_open.fetch_add(1); }
        TcpSlot(TcpSlot&& other) noexcept : impl_(std::exchange(other.impl_, nullptr)) {}
        TcpSlot(const TcpSlot&) = delete;
        TcpSlot& operator=(const TcpSlot&) = delete;
        TcpSlot& operator=(TcpSlot&&) = delete;
        ~TcpSlot() {
            try {
                if (impl_ != nullptr) impl_->release_tcp();
            } catch (...) {  // posting to a stopped loop: nothing is waiting for the slot any more
            }
        }

    private:
        Impl* impl_;
    };
    void release_tcp() {
        const std::size_t before = tcp_open.fetch_sub(1);
        // The accept loop waits only at the cap; wake it when this one makes room.
        if (before >= tcp_cap && !torn_down) asio::post(accept_strand, [this] { tcp_wakeup.cancel(); });
    }

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
        : limits(l),
          dispatcher(std::move(d)),
          log(lg),
          workers(worker_count),
          worker_count(static_cast<std::size_t>(worker_count)),
          io_thread_count(io_threads_) {}

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
            if (ec == http::error::end_of_stream || ec == asio::error::operation_aborted || ec == asio::error::connection_reset ||
                ec == beast::error::timeout || ec == asio::error::eof || ec == asio::ssl::error::stream_truncated)
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
                // The worker pool's queue is bounded: past every worker busy and
                // max_queued_requests waiting, a TCP request is answered at once instead of
                // waiting without bound. The administrator (admin socket) is never turned away.
                if (!origin.admin && dispatched.load() >= worker_count + limits.max_queued_requests) {
                    log.emit(CC_EV_HttpOverloaded, CC_LEVEL_WARNING,
                             "all " + std::to_string(worker_count) + " workers busy and " +
                                 std::to_string(limits.max_queued_requests) + " requests waiting: answered 503 with Retry-After");
                    res = error_response(503, "the connector is overloaded; retry later");
                    res.set(http::field::retry_after, "1");
                } else {
                    ++dispatched;
                    res = co_await asio::co_spawn(
                        workers.get_executor(),
                        [&]() -> asio::awaitable<HttpResponseMessage> {
                            struct Done {
                                std::atomic<std::size_t>& n;
                                ~Done() { --n; }
                            } done{dispatched};
                            co_return dispatch(req, origin);
                        },
                        asio::use_awaitable);
                }
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

    asio::awaitable<void> run_tls_session(beast::tcp_stream tcp_stream, RequestOrigin origin,
                                          std::shared_ptr<asio::ssl::context> context) {
        beast::ssl_stream<beast::tcp_stream> stream(std::move(tcp_stream), *context);
        beast::get_lowest_layer(stream).expires_after(limits.read_timeout);
        beast::error_code ec;
        co_await stream.async_handshake(asio::ssl::stream_base::server, asio::redirect_error(asio::use_awaitable, ec));
        if (ec) {
            log.emit(CC_EV_HttpRequestRejected, CC_LEVEL_DEBUG,
                     origin.remote_address + ": TLS handshake failed: " + ec.message());
            co_return;
        }
        fill_client_certificate(stream.native_handle(), origin);
        co_await run_session(std::move(stream), std::move(origin));
    }

    /// One accepted TCP connection, holding its slot until the session ends.
    asio::awaitable<void> run_tcp_connection(beast::tcp_stream stream, RequestOrigin origin, TcpSlot slot,
                                             std::shared_ptr<asio::ssl::context> context) {
        if (context)
            co_await run_tls_session(std::move(stream), std::move(origin), std::move(context));
        else
            co_await run_session(std::move(stream), std::move(origin));
    }

    std::shared_ptr<asio::ssl::context> current_tls_context() const {
        std::lock_guard lock(tls_mutex);
        return tls_context;
    }

    asio::awaitable<void> accept_tcp() {
        AcceptPause pause;
        for (;;) {
            if (stopping) co_return;
            if (tcp_open.load() >= tcp_cap) {
                // At the cap: accept nothing (pending connections wait in the kernel's backlog)
                // until a connection closes and release_tcp() cancels the wait.
                log.emit(CC_EV_HttpConnectionLimitReached, CC_LEVEL_WARNING,
                         std::to_string(tcp_cap) + " TCP connections open; not accepting until one closes", {},
                         {{"max_connections", limits.max_connections}, {"limit", tcp_cap}});
                while (tcp_open.load() >= tcp_cap && !stopping) {
                    beast::error_code ignored;
                    tcp_wakeup.expires_at(asio::steady_timer::time_point::max());
                    co_await tcp_wakeup.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
                }
                continue;
            }
            beast::error_code ec;
            tcp::socket socket =
                co_await tcp_acceptor->async_accept(asio::make_strand(io), asio::redirect_error(asio::use_awaitable, ec));
            if (ec == asio::error::operation_aborted || stopping) co_return;
            if (ec && peer_went_away(ec)) continue;
            if (ec) {
                // Out of descriptors (EMFILE/ENFILE), buffers or memory, or something unknown:
                // retrying at once would fail again and spin. Pause, and say so once.
                if (pause.failed())
                    log.emit(CC_EV_HttpServerError, CC_LEVEL_WARNING,
                             "accept failed: " + ec.message() + " (" + std::to_string(tcp_open.load()) +
                                 " TCP connections open); pausing the listener, retrying after " +
                                 std::to_string(kAcceptBackoffFirst.count()) + " ms and backing off to " +
                                 std::to_string(kAcceptBackoffMax.count()) + " ms",
                             {}, {{"error", ec.message()}, {"errno", ec.value()}, {"open_connections", tcp_open.load()}});
                beast::error_code ignored;
                tcp_backoff.expires_after(pause.delay());
                co_await tcp_backoff.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
                continue;
            }
            const auto since = pause.since;
            if (const auto failures = pause.succeeded(); failures > 0) {
                const auto paused_ms =
                    std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - since).count();
                log.emit(CC_EV_HttpAcceptResumed, CC_LEVEL_INFO,
                         "accepting TCP connections again after " + std::to_string(failures) + " failed attempt(s) over " +
                             std::to_string(paused_ms) + " ms",
                         {}, {{"failed_attempts", failures}, {"paused_ms", paused_ms}});
            }
            TcpSlot slot(this);
            beast::error_code ep_ec;
            const auto ep = socket.remote_endpoint(ep_ec);
            RequestOrigin origin;
            origin.remote_address = ep_ec ? "unknown" : ep.address().to_string() + ":" + std::to_string(ep.port());
            origin.loopback = !ep_ec && ep.address().is_loopback();
            auto ex = socket.get_executor();
            beast::tcp_stream stream(std::move(socket));
            asio::co_spawn(ex,
                           run_tcp_connection(std::move(stream), std::move(origin), std::move(slot),
                                              tls_enabled ? current_tls_context() : nullptr),
                           asio::detached);
        }
    }

    asio::awaitable<void> accept_unix() {
        AcceptPause pause;
        for (;;) {
            beast::error_code ec;
            local_stream::socket socket =
                co_await unix_acceptor->async_accept(asio::make_strand(io), asio::redirect_error(asio::use_awaitable, ec));
            if (ec == asio::error::operation_aborted || stopping) co_return;
            if (ec && peer_went_away(ec)) continue;
            if (ec) {
                if (pause.failed())
                    log.emit(CC_EV_HttpServerError, CC_LEVEL_WARNING,
                             "admin socket: accept failed: " + ec.message() + "; pausing it, backing off to " +
                                 std::to_string(kAcceptBackoffMax.count()) + " ms");
                beast::error_code ignored;
                unix_backoff.expires_after(pause.delay());
                co_await unix_backoff.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
                if (stopping) co_return;
                continue;
            }
            if (pause.succeeded() > 0)
                log.emit(CC_EV_HttpAcceptResumed, CC_LEVEL_INFO, "admin socket: accepting connections again");
            // Who is on the other end, as the kernel saw it at connect time (host/auth decides).
            RequestOrigin origin;
            origin.remote_address = "local";
            origin.admin = true;
            origin.loopback = true;
            ucred cred{};
            socklen_t size = sizeof cred;
            if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &size) == 0 && size == sizeof cred) {
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

HttpServer::~HttpServer() {
    try {
        stop();
    } catch (const std::exception& e) {  // a destructor must not throw; stop() already ran its course
        impl_->log.emit(CC_EV_HttpServerError, CC_LEVEL_ERROR, std::string("stopping the HTTP server: ") + e.what());
    } catch (...) {
    }
}

void HttpServer::listen_tcp(const std::string& address, const std::optional<TlsSettings>& tls) {
    auto [host, port] = split_listen_address(address);
    try {
        if (tls) {
            impl_->tls_context = make_tls_context(*tls);
            impl_->tls_enabled = true;
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
    impl_->tcp_cap = connection_budget(impl_->limits.max_connections, impl_->descriptor_limit);
    asio::co_spawn(impl_->accept_strand, impl_->accept_tcp(), asio::detached);
    std::string limit = "at most " + std::to_string(impl_->tcp_cap) + " connections";
    if (impl_->tcp_cap < impl_->limits.max_connections)
        limit += ": max_connections " + std::to_string(impl_->limits.max_connections) + " lowered to fit the descriptor limit " +
                 std::to_string(impl_->descriptor_limit);
    boost::json::object fields{
        {"port", tcp_port_}, {"max_connections", impl_->limits.max_connections}, {"connection_limit", impl_->tcp_cap}};
    if (tls) {
        fields["certificate_sha256"] = certificate_sha256(SSL_CTX_get0_certificate(impl_->tls_context->native_handle()));
        fields["client_certificates"] = !tls->client_ca.empty();
    }
    impl_->log.emit(CC_EV_HttpListening, CC_LEVEL_INFO,
                    std::string(tls ? "HTTPS" : "HTTP") + " listening on " + address + " (port " + std::to_string(tcp_port_) +
                        "; " + limit + ")",
                    {}, fields);
}

void HttpServer::reload_tls(const TlsSettings& tls) {
    if (!impl_->tls_enabled)
        throw std::runtime_error("the HTTP listener was started without TLS; [host.tls] takes effect after a restart");
    auto next = make_tls_context(tls);  // throws: the current context keeps serving
    const std::string sha256 = certificate_sha256(SSL_CTX_get0_certificate(next->native_handle()));
    {
        std::lock_guard lock(impl_->tls_mutex);
        impl_->tls_context = std::move(next);
    }
    boost::json::object fields{{"certificate", tls.certificate.string()}, {"certificate_sha256", sha256}};
    if (!tls.client_ca.empty()) fields["client_ca"] = tls.client_ca.string();
    impl_->log.emit(CC_EV_HttpTlsReloaded, CC_LEVEL_INFO,
                    "TLS certificate " + tls.certificate.string() + " (SHA-256 " + sha256 + ") and key " +
                        tls.private_key.string() + " re-read; new handshakes use them",
                    {}, fields);
}

std::size_t HttpServer::tcp_connection_limit() const {
    return impl_->tcp_cap;
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
    asio::co_spawn(impl_->accept_strand, impl_->accept_unix(), asio::detached);
}

void HttpServer::start() {
    for (int i = 0; i < impl_->io_thread_count; ++i)
        impl_->io_threads.emplace_back([this] { impl_->io.run(); });
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
    asio::post(s.accept_strand, [&s] {  // an accept loop waiting at the cap or in a pause ends too
        beast::error_code ignored;
        if (s.tcp_acceptor) s.tcp_acceptor->close(ignored);
        if (s.unix_acceptor) s.unix_acceptor->close(ignored);
        s.tcp_wakeup.cancel();
        s.tcp_backoff.cancel();
        s.unix_backoff.cancel();
    });
    {
        std::unique_lock lock(s.connections_mutex);
        for (auto& [id, conn] : s.connections)
            if (conn->idle) Impl::close_on_strand(conn);
        s.connections_done.wait_for(lock, s.limits.drain_timeout, [&] { return s.connections.empty(); });
        for (auto& [id, conn] : s.connections)
            Impl::close_on_strand(conn);
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
    s.torn_down = true;
    s.workers.join();
    if (!s.unix_path.empty()) {
        std::error_code ec;
        std::filesystem::remove(s.unix_path, ec);
    }
}

}  // namespace certconn::host
