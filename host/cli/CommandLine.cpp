#include "cli/CommandLine.hpp"

#include <algorithm>

namespace certconn::host {

bool ParsedOptions::has(const std::string& flag) const {
    return std::find(flags.begin(), flags.end(), flag) != flags.end();
}

std::vector<std::string> ParsedOptions::all(const std::string& name) const {
    auto it = lists.find(name);
    return it == lists.end() ? std::vector<std::string>{} : it->second;
}

std::optional<std::string> ParsedOptions::value(const std::string& name) const {
    auto it = values.find(name);
    if (it == values.end()) return std::nullopt;
    return it->second;
}

ParsedOptions parse_options(const std::vector<std::string>& args, const std::vector<OptionSpec>& specs,
                            const std::string& command, std::size_t max_positional) {
    ParsedOptions out;
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string& arg = args[i];
        if (arg.rfind("--", 0) != 0) {
            if (out.positional.size() >= max_positional)
                throw std::invalid_argument("unexpected argument '" + arg + "' for '" + command + "'");
            out.positional.push_back(arg);
            continue;
        }
        std::string name = arg.substr(2);
        std::optional<std::string> inline_value;
        if (auto eq = name.find('='); eq != std::string::npos) {
            inline_value = name.substr(eq + 1);
            name = name.substr(0, eq);
        }
        auto spec = std::find_if(specs.begin(), specs.end(), [&](const OptionSpec& s) { return s.name == name; });
        if (spec == specs.end())
            throw std::invalid_argument("unknown option --" + name + " for '" + command + "' (see certconnector " + command +
                                        " --help)");
        if (!spec->takes_value) {
            if (inline_value) throw std::invalid_argument("option --" + name + " takes no value");
            out.flags.push_back(name);
            continue;
        }
        std::string value;
        if (inline_value) {
            value = *inline_value;
        } else {
            if (i + 1 >= args.size()) throw std::invalid_argument("option --" + name + " needs a value");
            value = args[++i];
        }
        if (spec->repeatable)
            out.lists[name].push_back(value);
        else if (out.values.count(name))
            throw std::invalid_argument("option --" + name + " given twice");
        else
            out.values[name] = value;
    }
    return out;
}

}  // namespace certconn::host
