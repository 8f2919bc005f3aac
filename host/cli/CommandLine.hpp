// A small command-line parser: `certconnector <command> [subcommand] [--option value] [--flag]`.
// Each command declares its options; anything else is an error naming the option.
#pragma once

#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace certconn::host {

struct OptionSpec {
    std::string name;  // without "--"
    bool takes_value;
    std::string help;
    bool repeatable = false;
};

struct ParsedOptions {
    std::map<std::string, std::string> values;
    std::vector<std::string> flags;
    std::map<std::string, std::vector<std::string>> lists;  // repeatable options, in order
    std::vector<std::string> positional;                    // arguments that are not options, in order
    bool has(const std::string& flag) const;
    std::vector<std::string> all(const std::string& name) const;
    std::optional<std::string> value(const std::string& name) const;
};

/// Parses args (after the command words); throws std::invalid_argument with a clear message.
/// Up to `max_positional` arguments that do not start with "--" are kept in `positional`
/// (`repo add DIR FILE...`); any more are an error.
ParsedOptions parse_options(const std::vector<std::string>& args, const std::vector<OptionSpec>& specs,
                            const std::string& command, std::size_t max_positional = 0);

}  // namespace certconn::host
