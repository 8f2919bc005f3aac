// certconn/admin.hpp — helpers for a plugin's administrative commands (Host::admin_command;
// the protocol is in abi.h). Header-only; needs Boost.JSON, which sdk.hpp itself does not.
//
//     host.admin_command("scep approve", "issue a request that waits for approval", "scep:approve",
//         R"([{"name":"transaction","kind":"string","positional":true,"required":true,"help":"TXID"}])",
//         [this](std::string_view args) {
//             const auto a = sdk::AdminArguments(args);
//             approve(a.required("transaction"));
//             return sdk::AdminReply::ok("approved\n");
//         });
#pragma once

#include <certconn/sdk.hpp>

#include <boost/json.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace certconn::sdk {

/// The arguments of one command call. Errors are INVALID_ARGUMENT (the CLI exits 2).
class AdminArguments {
public:
    explicit AdminArguments(std::string_view json_text) {
        std::error_code ec;
        boost::json::value v = boost::json::parse(json_text, ec);
        if (ec || !v.is_object()) throw Error(CC_ERR_INVALID_ARGUMENT, "the command's arguments are not a JSON object");
        o_ = std::move(v.as_object());
    }
    std::optional<std::string> value(const char* name) const {
        const auto* v = o_.if_contains(name);
        if (!v || !v->is_string()) return std::nullopt;
        return std::string(v->as_string());
    }
    std::string required(const char* name) const {
        auto v = value(name);
        if (!v) throw Error(CC_ERR_INVALID_ARGUMENT, std::string("needs --") + name);
        return *v;
    }
    std::vector<std::string> values(const char* name) const {
        std::vector<std::string> out;
        if (const auto* v = o_.if_contains(name); v && v->is_array())
            for (const auto& s : v->as_array())
                if (s.is_string()) out.emplace_back(s.as_string());
        return out;
    }
    bool flag(const char* name) const {
        const auto* v = o_.if_contains(name);
        return v && v->is_bool() && v->as_bool();
    }
    const boost::json::object& json() const { return o_; }

private:
    boost::json::object o_;
};

/// What the CLI prints and writes for one call; `next` makes the CLI call again (to wait).
struct AdminReply {
    int exit_code = 0;
    std::string out;
    std::string err;
    boost::json::object files;  // file name -> base64 content, written into the output_dir argument
    std::optional<boost::json::object> next_arguments;
    int delay_ms = 200;

    static AdminReply ok(std::string out) {
        AdminReply r;
        r.out = std::move(out);
        return r;
    }
    static AdminReply failed(std::string err, int exit_code = 1) {
        AdminReply r;
        r.exit_code = exit_code;
        r.err = std::move(err);
        return r;
    }
    static AdminReply again(boost::json::object arguments, int delay_ms = 200) {
        AdminReply r;
        r.next_arguments = std::move(arguments);
        r.delay_ms = delay_ms;
        return r;
    }
    std::string json() const {
        boost::json::object o{{"exit_code", exit_code}, {"stdout", out}, {"stderr", err}};
        if (!files.empty()) o["files"] = files;
        if (next_arguments) o["next"] = boost::json::object{{"arguments", *next_arguments}, {"delay_ms", delay_ms}};
        return boost::json::serialize(o);
    }
};

}  // namespace certconn::sdk
