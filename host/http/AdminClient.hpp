// The CLI's side of the admin socket: one blocking HTTP request to a running instance.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>

namespace certconn::host {

struct AdminReply {
    unsigned status = 0;
    std::string body;
};

/// GET or POST `target` over the admin socket; throws std::runtime_error when the instance
/// cannot be reached, naming the socket.
AdminReply admin_request(const std::filesystem::path& socket_path, const std::string& method, const std::string& target,
                         const std::string& body = {}, std::chrono::seconds timeout = std::chrono::seconds(10));

}  // namespace certconn::host
