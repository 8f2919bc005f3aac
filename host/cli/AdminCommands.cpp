#include "cli/AdminCommands.hpp"

#include "cli/CommandLine.hpp"
#include "http/AdminClient.hpp"

#include <certconn/crypto.hpp>

#include <boost/json.hpp>

#include <algorithm>
#include <iostream>
#include <thread>

namespace certconn::host {

namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

std::string str(const json::object& o, const char* key) {
    const auto* v = o.if_contains(key);
    return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

bool flag(const json::object& o, const char* key) {
    const auto* v = o.if_contains(key);
    return v && v->is_bool() && v->as_bool();
}

// Options every admin command takes: where the instance is. Consumed by the CLI, never sent.
const std::vector<OptionSpec> kLocationOptions = {
    {"config", true, "configuration file (default: $CERTCONNECTOR_CONFIG or /etc/certconnector/certconnector.toml)"},
    {"socket", true, "admin socket path (default: <state_dir>/admin.sock)"}};

}  // namespace

json::array discover_commands(const fs::path& socket) {
    const AdminReply reply = admin_request(socket, "GET", "/admin/commands");
    if (reply.status != 200)
        throw std::runtime_error("the connector refused to list its commands (HTTP " + std::to_string(reply.status) +
                                 "): " + reply.body);
    // (the body is the connector's one-line reason)
    std::error_code ec;
    json::value v = json::parse(reply.body, ec);
    if (ec || !v.is_array()) throw std::runtime_error("the connector's command list is not a JSON array");
    return v.as_array();
}

std::optional<std::pair<json::object, std::size_t>> match_command(const json::array& commands,
                                                                  const std::vector<std::string>& words) {
    std::optional<std::pair<json::object, std::size_t>> best;
    for (const auto& c : commands) {
        if (!c.is_object()) continue;
        const std::string name = str(c.as_object(), "name");
        std::string joined;
        for (std::size_t n = 0; n < words.size(); ++n) {
            joined += (n ? " " : "") + words[n];
            if (joined == name && (!best || n + 1 > best->second)) best = std::make_pair(c.as_object(), n + 1);
        }
    }
    return best;
}

void print_admin_command_help(const json::object& command) {
    const std::string name = str(command, "name");
    std::string positional;
    for (const auto& a : command.at("arguments").as_array())
        if (flag(a.as_object(), "positional"))
            positional += " " + [&] {
                std::string n = str(a.as_object(), "name");
                for (auto& ch : n)
                    ch = static_cast<char>(std::toupper(ch));
                return n;
            }();
    std::cout << "usage: certconnector " << name << positional << " [options]\n\n"
              << str(command, "summary") << "\n(from the " << str(command, "plugin") << "; needs scope '" << str(command, "scope")
              << "')\n\noptions:\n";
    for (const auto& a : command.at("arguments").as_array()) {
        const auto& o = a.as_object();
        if (flag(o, "positional")) continue;
        const std::string kind = str(o, "kind");
        std::string text = "--" + str(o, "name") +
                           (kind == "flag"         ? ""
                            : kind == "file"       ? " FILE"
                            : kind == "output_dir" ? " DIR"
                                                   : " VALUE");
        text.resize(std::max<std::size_t>(text.size() + 1, 24), ' ');
        std::cout << "  " << text << str(o, "help") << (kind == "strings" ? " (repeatable)" : "")
                  << (flag(o, "required") ? " (required)" : "") << "\n";
    }
    for (const auto& o : kLocationOptions) {
        std::string text = "--" + o.name + " VALUE";
        text.resize(24, ' ');
        std::cout << "  " << text << o.help << "\n";
    }
}

int run_admin_command(const json::object& command, const std::vector<std::string>& args, const fs::path& socket) {
    const std::string name = str(command, "name");
    std::vector<OptionSpec> specs = kLocationOptions;
    std::vector<json::object> positionals;
    for (const auto& a : command.at("arguments").as_array()) {
        const auto& o = a.as_object();
        if (flag(o, "positional")) {
            positionals.push_back(o);
            continue;
        }
        const std::string kind = str(o, "kind");
        specs.push_back({str(o, "name"), kind != "flag", str(o, "help"), kind == "strings"});
    }
    // Words that are neither an option nor an option's value are the positional arguments, in
    // the order the command declares them.
    std::vector<std::string> rest;
    std::vector<std::string> words;
    for (std::size_t i = 0; i < args.size(); ++i) {
        if (args[i].rfind("--", 0) != 0) {
            words.push_back(args[i]);
            continue;
        }
        rest.push_back(args[i]);
        const std::string opt = args[i].substr(2);
        auto spec = std::find_if(specs.begin(), specs.end(), [&](const OptionSpec& sp) { return sp.name == opt; });
        if (spec != specs.end() && spec->takes_value && i + 1 < args.size()) rest.push_back(args[++i]);
    }
    json::object arguments;
    for (std::size_t i = 0; i < positionals.size(); ++i) {
        if (i < words.size())
            arguments[str(positionals[i], "name")] = words[i];
        else if (flag(positionals[i], "required"))
            throw std::invalid_argument("'" + name + "' needs " + str(positionals[i], "name") + " (see --help)");
    }
    if (words.size() > positionals.size())
        throw std::invalid_argument("unexpected argument '" + words[positionals.size()] + "' for '" + name + "'");
    const ParsedOptions options = parse_options(rest, specs, name);
    std::optional<fs::path> out_dir;
    for (const auto& a : command.at("arguments").as_array()) {
        const auto& o = a.as_object();
        if (flag(o, "positional")) continue;
        const std::string arg = str(o, "name");
        const std::string kind = str(o, "kind");
        if (kind == "flag") {
            if (options.has(arg)) arguments[arg] = true;
        } else if (kind == "strings") {
            json::array list;
            for (const auto& v : options.all(arg))
                list.push_back(json::string(v));
            if (!list.empty()) arguments[arg] = std::move(list);
        } else if (auto v = options.value(arg)) {
            if (kind == "file")
                arguments[arg] = crypto::base64_encode(crypto::read_file(*v, "--" + arg));  // read as the caller
            else if (kind == "output_dir")
                out_dir = fs::path(*v);
            else
                arguments[arg] = *v;
        }
        if (flag(o, "required") && !arguments.contains(arg) && !(kind == "output_dir" && out_dir))
            throw std::invalid_argument("'" + name + "' needs --" + arg + " (see --help)");
    }

    for (;;) {
        const json::object request{{"command", name}, {"arguments", arguments}};
        const AdminReply reply =
            admin_request(socket, "POST", "/admin/command", json::serialize(request), std::chrono::seconds(120));
        if (reply.status != 200) {
            std::cerr << "certconnector " << name << ": the connector refused (HTTP " << reply.status << "): " << reply.body;
            return 1;
        }
        std::error_code ec;
        json::value v = json::parse(reply.body, ec);
        if (ec || !v.is_object()) {
            std::cerr << "certconnector " << name << ": the connector's reply is not a JSON object\n";
            return 1;
        }
        const json::object& r = v.as_object();
        if (const auto* files = r.if_contains("files"); files && files->is_object() && !files->as_object().empty()) {
            if (out_dir) {
                fs::create_directories(*out_dir);
                for (const auto& [file, content] : files->as_object()) {
                    const fs::path target = *out_dir / std::string(file);
                    if (fs::path(std::string(file)).filename() != fs::path(std::string(file)))
                        throw std::runtime_error("the connector named an output file with a directory: " + std::string(file));
                    crypto::write_file_atomic(target, crypto::base64_decode(content.as_string()), 0600);
                }
            }
        }
        std::cout << str(r, "stdout");
        std::cerr << str(r, "stderr");
        if (const auto* next = r.if_contains("next"); next && next->is_object()) {
            const auto& n = next->as_object();
            if (const auto* a = n.if_contains("arguments"); a && a->is_object()) arguments = a->as_object();
            const auto* d = n.if_contains("delay_ms");
            std::this_thread::sleep_for(
                std::chrono::milliseconds(d && d->is_int64() ? std::clamp<std::int64_t>(d->as_int64(), 10, 10000) : 200));
            continue;
        }
        const auto* code = r.if_contains("exit_code");
        return code && code->is_int64() ? static_cast<int>(code->as_int64()) : 0;
    }
}

}  // namespace certconn::host
