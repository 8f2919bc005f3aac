// The CLI side of administrative commands that plugins (and the host) register: discovered from
// the running connector over its admin socket (GET /admin/commands), parsed from the command
// line by their published argument descriptions, and run (POST /admin/command). The CLI knows
// no plugin's routes or documents.
#pragma once

#include <boost/json/array.hpp>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace certconn::host {

/// The commands the instance behind `socket` offers its caller; throws when it cannot be reached.
boost::json::array discover_commands(const std::filesystem::path& socket);

/// The registered command whose name is the longest prefix of `words`, and how many words it takes.
std::optional<std::pair<boost::json::object, std::size_t>> match_command(const boost::json::array& commands,
                                                                         const std::vector<std::string>& words);

/// Runs `command` with the command-line words after its name; returns the exit code.
int run_admin_command(const boost::json::object& command, const std::vector<std::string>& args,
                      const std::filesystem::path& socket);

/// `certconnector NAME --help` for a discovered command.
void print_admin_command_help(const boost::json::object& command);

}  // namespace certconn::host
