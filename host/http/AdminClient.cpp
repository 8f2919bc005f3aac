#include "http/AdminClient.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <stdexcept>

namespace certconn::host {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

AdminReply admin_request(const std::filesystem::path& socket_path, const std::string& method, const std::string& target,
                         const std::string& body, std::chrono::seconds timeout) {
    asio::io_context io;
    beast::basic_stream<asio::local::stream_protocol> stream(io);
    beast::error_code ec;
    stream.socket().connect(asio::local::stream_protocol::endpoint(socket_path.string()), ec);
    if (ec)
        throw std::runtime_error("cannot reach the connector at " + socket_path.string() + ": " + ec.message() +
                                 " (is `certconnector run` running with this configuration?)");
    http::request<http::string_body> req{http::string_to_verb(method), target, 11};
    req.set(http::field::host, "localhost");
    req.body() = body;
    req.prepare_payload();
    stream.expires_after(timeout);
    http::write(stream, req, ec);
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    if (!ec) http::read(stream, buffer, res, ec);
    if (ec) throw std::runtime_error("admin request " + target + " to " + socket_path.string() + " failed: " + ec.message());
    return {static_cast<unsigned>(res.result_int()), std::move(res.body())};
}

}  // namespace certconn::host
