#include "cli/AdminSocketCommands.hpp"

#include "http/AdminClient.hpp"

#include <certconn/crypto.hpp>

#include <boost/json.hpp>

#include <sys/stat.h>

#include <fstream>
#include <iostream>
#include <iterator>
#include <thread>

namespace certconn::host {

namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

json::object pkcs_request(const ParsedOptions& o) {
    json::object r{{"type", "issue"}};
    const auto subject = o.value("subject");
    if (!subject) throw std::invalid_argument("submit pkcs needs --subject DN (or --json JOB.json)");
    r["subject"] = *subject;
    const auto device = o.value("device-key");
    if (!device) throw std::invalid_argument("submit pkcs needs --device-key PEM (the device's public key or certificate)");
    r["device_key_pem"] = crypto::read_file(*device, "device key");
    json::array sans;
    for (const auto& s : o.all("san")) sans.push_back(json::string(s));
    if (!sans.empty()) r["sans"] = sans;
    for (const auto& [option, field] : std::vector<std::pair<const char*, const char*>>{
             {"key-type", "key_type"}, {"ca", "ca"}, {"profile", "profile"}, {"pfx-password", "pfx_password"}})
        if (auto v = o.value(option)) r[field] = *v;
    if (o.has("legacy")) r["legacy"] = true;
    return r;
}

json::object revoke_request(const ParsedOptions& o) {
    const auto serial = o.value("serial");
    if (!serial) throw std::invalid_argument("submit revoke needs --serial HEX (or --json JOB.json)");
    json::object r{{"serial", *serial}, {"reason", o.value("reason").value_or("unspecified")}};
    if (auto ca = o.value("ca")) r["ca"] = *ca;
    if (auto issuer = o.value("issuer")) r["issuer"] = *issuer;
    return r;
}

json::object import_request(const ParsedOptions& o) {
    auto need = [&](const char* option, const char* what) {
        auto v = o.value(option);
        if (!v) throw std::invalid_argument(std::string("submit import needs --") + option + " " + what + " (or --json JOB.json)");
        return *v;
    };
    json::object r{{"pfx", crypto::base64_encode(crypto::read_file(need("pfx", "FILE"), "PFX"))},
                   {"encrypted_password", need("encrypted-password", "BASE64")},
                   {"key_name", need("key-name", "K")},
                   {"padding", o.value("padding").value_or("oaep-sha512")},
                   {"purpose", o.value("purpose").value_or("unassigned")},
                   {"device_key_pem", crypto::read_file(need("device-key", "PEM"), "device key")}};
    if (auto upn = o.value("upn")) r["upn"] = *upn;
    return r;
}

}  // namespace

int submit_job(const std::string& feature, const ParsedOptions& o, const fs::path& socket) {
    json::object job{{"feature", feature}};
    if (auto file = o.value("json")) {
        std::error_code ec;
        json::value doc = json::parse(crypto::read_file(*file, "job document"), ec);
        if (ec || !doc.is_object()) throw std::invalid_argument(*file + ": not a JSON object");
        json::object& d = doc.as_object();
        if (d.contains("request")) {
            job["request"] = d["request"];
            if (d.contains("id")) job["id"] = d["id"];
        } else {
            job["request"] = d;  // the document is the request itself
        }
    } else if (feature == "pkcs") {
        job["request"] = pkcs_request(o);
    } else if (feature == "revoke") {
        job["request"] = revoke_request(o);
    } else if (feature == "import") {
        job["request"] = import_request(o);
    } else {
        throw std::invalid_argument("submit " + feature + " needs --json JOB.json");
    }
    if (auto id = o.value("id")) job["id"] = *id;

    AdminReply reply = admin_request(socket, "POST", "/tenant/v1/jobs", json::serialize(job));
    if (reply.status != 200 && reply.status != 201) {
        std::cerr << "certconnector submit: the connector refused the job (HTTP " << reply.status << "): " << reply.body << "\n";
        return 1;
    }
    const json::value submitted = json::parse(reply.body);
    const std::string id(submitted.at("id").as_string());
    if (!o.has("wait")) {
        std::cout << id << "\n";
        return 0;
    }
    const int timeout = std::stoi(o.value("timeout").value_or("300"));
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout);
    json::value state;
    for (;;) {
        reply = admin_request(socket, "GET", "/tenant/v1/jobs/" + id);
        state = json::parse(reply.body);
        const std::string status(state.at("status").as_string());
        if (status == "succeeded" || status == "failed") break;
        if (std::chrono::steady_clock::now() > deadline) {
            std::cerr << "certconnector submit: job " << id << " is still " << status << " after " << timeout
                      << " s; see `certconnector job show " << id << "`\n";
            return 1;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    const json::object& result = state.at("result").as_object();
    if (auto out = o.value("out")) {
        fs::create_directories(*out);
        crypto::write_file_atomic(fs::path(*out) / "result.json", json::serialize(state), 0600);
        for (const auto& [key, value] : result) {
            const std::string k(key);
            if (k.size() > 4 && k.substr(k.size() - 4) == "_cms" && value.is_string())
                crypto::write_file_atomic(fs::path(*out) / (k.substr(0, k.size() - 4) + ".cms"), crypto::base64_decode(value.as_string()), 0600);
        }
    }
    if (state.at("status").as_string() == "failed") {
        std::cerr << "certconnector submit: job " << id << " failed: " << json::serialize(result.at("error")) << "\n";
        return 1;
    }
    std::cout << "job " << id << " succeeded";
    if (result.contains("serial")) std::cout << ": serial " << result.at("serial").as_string().c_str();
    if (result.contains("note")) std::cout << " (" << result.at("note").as_string().c_str() << ")";
    if (auto out = o.value("out")) std::cout << "; files in " << *out;
    std::cout << "\n";
    return 0;
}

int show_job(const std::string& id, const ParsedOptions& o, const fs::path& socket) {
    AdminReply reply = admin_request(socket, "GET", "/tenant/v1/jobs/" + id);
    if (reply.status != 200) {
        std::cerr << "certconnector job show: " << reply.body << "\n";
        return 1;
    }
    std::cout << reply.body << "\n";
    return 0;
}

int create_scep_challenge(const ParsedOptions& o, const fs::path& socket) {
    const auto profile = o.value("profile");
    if (!profile) throw std::invalid_argument("scep challenge needs --profile P (the SCEP profile)");
    json::object request{{"profile", *profile}};
    if (auto subject = o.value("subject")) request["subject"] = *subject;
    json::array sans;
    for (const auto& s : o.all("san")) sans.push_back(json::string(s));
    if (!sans.empty()) request["sans"] = sans;
    if (auto ttl = o.value("ttl")) {
        // 90, 90s, 30m, 1h, 7d
        std::size_t used = 0;
        long long n = 0;
        try {
            n = std::stoll(*ttl, &used);
        } catch (const std::exception&) {
            throw std::invalid_argument("--ttl '" + *ttl + "': expected a number with s, m, h or d");
        }
        const std::string unit = ttl->substr(used);
        const long long factor = unit.empty() || unit == "s" ? 1 : unit == "m" ? 60 : unit == "h" ? 3600 : unit == "d" ? 86400 : 0;
        if (factor == 0) throw std::invalid_argument("--ttl '" + *ttl + "': expected a number with s, m, h or d");
        request["ttl_seconds"] = n * factor;
    }
    AdminReply reply = admin_request(socket, "POST", "/tenant/v1/scep/challenges", json::serialize(request));
    if (reply.status != 201) {
        std::cerr << "certconnector scep challenge: " << reply.body << "\n";
        return 1;
    }
    const json::value answer = json::parse(reply.body);
    std::cout << answer.at("challenge").as_string().c_str() << "\n";
    std::cerr << "one-time challenge for SCEP profile '" << *profile << "', valid until " << answer.at("expires_at").as_string().c_str()
              << "\n";
    return 0;
}

int decide_scep(const std::string& transaction_id, bool approve, const fs::path& socket) {
    const json::object body{{"transaction_id", transaction_id}, {"decision", approve ? "approve" : "deny"}};
    AdminReply reply = admin_request(socket, "POST", "/scep/v1/pending/decide", json::serialize(body));
    if (reply.status != 200) {
        std::cerr << "certconnector scep " << (approve ? "approve" : "deny") << ": " << reply.body;
        return 1;
    }
    std::cout << "transaction " << transaction_id << (approve ? " approved" : " denied")
              << "; the client gets its answer at its next poll\n";
    return 0;
}

int list_pending_scep(const fs::path& socket) {
    AdminReply reply = admin_request(socket, "GET", "/scep/v1/pending");
    if (reply.status != 200) {
        std::cerr << "certconnector scep pending: " << reply.body;
        return 1;
    }
    const json::value rows = json::parse(reply.body);
    if (rows.as_array().empty()) std::cout << "no pending SCEP requests\n";
    for (const auto& r : rows.as_array())
        std::cout << r.at("transaction_id").as_string().c_str() << "  profile " << r.at("profile").as_string().c_str() << "  subject "
                  << r.at("subject").as_string().c_str() << "  since " << r.at("received_at").as_string().c_str() << "\n";
    return 0;
}

int export_ca(const std::string& name, const fs::path& socket) {
    AdminReply reply = admin_request(socket, "GET", "/admin/ca/" + name);
    if (reply.status != 200) {
        std::cerr << "certconnector ca export: " << reply.body;
        return 1;
    }
    std::cout << json::parse(reply.body).at("chain_pem").as_string().c_str();
    return 0;
}

}  // namespace certconn::host
