#include "JobCommands.hpp"

#include <certconn/admin.hpp>
#include <certconn/crypto.hpp>

#include <chrono>
#include <regex>

namespace certconn::tenant_local {

namespace json = boost::json;
using sdk::AdminArguments;
using sdk::AdminReply;
using sdk::Error;

namespace {

constexpr const char* kWaitArguments = R"j(
  {"name":"id","kind":"string","help":"client-chosen job id (makes resubmission idempotent)"},
  {"name":"wait","kind":"flag","help":"wait for the result"},
  {"name":"timeout","kind":"string","help":"seconds to wait (default 300)"},
  {"name":"out","kind":"output_dir","help":"directory for result.json and the *.cms result files"})j";

std::string file_text(const AdminArguments& a, const char* name) {
    return crypto::base64_decode(a.required(name));  // the CLI sends files base64-encoded
}

json::object pkcs_request(const AdminArguments& a) {
    json::object r{{"type", "issue"}, {"subject", a.required("subject")}, {"device_key_pem", file_text(a, "device-key")}};
    json::array sans;
    for (const auto& s : a.values("san"))
        sans.push_back(json::string(s));
    if (!sans.empty()) r["sans"] = sans;
    for (const auto& [option, field] : std::vector<std::pair<const char*, const char*>>{
             {"key-type", "key_type"}, {"ca", "ca"}, {"profile", "profile"}, {"pfx-password", "pfx_password"}})
        if (auto v = a.value(option)) r[field] = *v;
    if (a.flag("legacy")) r["legacy"] = true;
    return r;
}

json::object revoke_request(const AdminArguments& a) {
    json::object r{{"serial", a.required("serial")}, {"reason", a.value("reason").value_or("unspecified")}};
    if (auto ca = a.value("ca")) r["ca"] = *ca;
    if (auto issuer = a.value("issuer")) r["issuer"] = *issuer;
    return r;
}

json::object import_request(const AdminArguments& a) {
    json::object r{{"pfx", a.required("pfx")},  // already base64, as the job document wants it
                   {"encrypted_password", a.required("encrypted-password")},
                   {"key_name", a.required("key-name")},
                   {"padding", a.value("padding").value_or("oaep-sha512")},
                   {"purpose", a.value("purpose").value_or("unassigned")},
                   {"device_key_pem", file_text(a, "device-key")}};
    if (auto upn = a.value("upn")) r["upn"] = *upn;
    return r;
}

/// The reply for a job that ended (or the next poll while it runs).
AdminReply job_reply(JobQueue& queue, const std::string& id, const AdminArguments& a) {
    auto job = queue.find(id);
    if (!job) return AdminReply::failed("certconnector submit: job " + id + " disappeared\n");
    if (job->status != "succeeded" && job->status != "failed") {
        const auto deadline = a.json().if_contains("wait_until_ms");
        const auto now =
            std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
        if (deadline && deadline->is_int64() && now > deadline->as_int64())
            return AdminReply::failed("certconnector submit: job " + id + " is still " + job->status +
                                      "; see `certconnector job show " + id + "`\n");
        json::object again{{"poll_job", id}};
        if (deadline) again["wait_until_ms"] = *deadline;
        return AdminReply::again(std::move(again), 100);
    }
    const json::object state = job->to_json(true);
    const json::object result = job->result ? json::parse(*job->result).as_object() : json::object{};
    AdminReply reply;
    reply.files["result.json"] = crypto::base64_encode(json::serialize(state));
    for (const auto& [key, value] : result) {
        const std::string k(key);
        if (k.size() > 4 && k.substr(k.size() - 4) == "_cms" && value.is_string())
            reply.files[k.substr(0, k.size() - 4) + ".cms"] = value;
    }
    if (job->status == "failed") {
        reply.exit_code = 1;
        reply.err = "certconnector submit: job " + id +
                    " failed: " + json::serialize(result.contains("error") ? result.at("error") : json::value()) + "\n";
        return reply;
    }
    reply.out = "job " + id + " succeeded";
    if (const auto* s = result.if_contains("serial"); s && s->is_string()) reply.out += ": serial " + std::string(s->as_string());
    if (const auto* n = result.if_contains("note"); n && n->is_string()) reply.out += " (" + std::string(n->as_string()) + ")";
    reply.out += "\n";
    return reply;
}

AdminReply submit(JobQueue& queue, const std::string& feature, const json::object& request, const AdminArguments& a) {
    std::string id = a.value("id").value_or(crypto::uuid4());
    check_job_fields(feature, id);
    queue.submit(feature, json::serialize(request), id);
    if (!a.flag("wait")) return AdminReply::ok(id + "\n");
    long timeout = 300;
    if (auto t = a.value("timeout")) {
        try {
            timeout = std::stol(*t);
        } catch (const std::exception&) {
            throw Error(CC_ERR_INVALID_ARGUMENT, "--timeout '" + *t + "': expected seconds");
        }
    }
    json::object again{{"poll_job", id}};
    again["wait_until_ms"] =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count() +
        timeout * 1000;
    return job_reply(queue, id, AdminArguments(json::serialize(again)));
}

/// A raw job document from --json: {"request": {...}, "id"?} or the request itself.
json::object document_request(const AdminArguments& a, json::object& args) {
    std::error_code ec;
    json::value doc = json::parse(crypto::base64_decode(a.required("json")), ec);
    if (ec || !doc.is_object()) throw Error(CC_ERR_INVALID_ARGUMENT, "--json: not a JSON object");
    json::object& d = doc.as_object();
    if (!d.contains("request")) return d;
    if (!d.at("request").is_object()) throw Error(CC_ERR_INVALID_ARGUMENT, "--json: 'request' must be a JSON object");
    if (const auto* id = d.if_contains("id"); id && id->is_string() && !args.contains("id")) args["id"] = *id;
    return d.at("request").as_object();
}

std::int64_t ttl_seconds(const std::string& ttl) {
    std::size_t used = 0;
    long long n = 0;
    try {
        n = std::stoll(ttl, &used);
    } catch (const std::exception&) {
        throw Error(CC_ERR_INVALID_ARGUMENT, "--ttl '" + ttl + "': expected a number with s, m, h or d");
    }
    const std::string unit = ttl.substr(used);
    const long long factor = unit.empty() || unit == "s" ? 1 : unit == "m" ? 60 : unit == "h" ? 3600 : unit == "d" ? 86400 : 0;
    if (factor == 0) throw Error(CC_ERR_INVALID_ARGUMENT, "--ttl '" + ttl + "': expected a number with s, m, h or d");
    return n * factor;
}

/// The handler of `submit FEATURE`: the request from the options (or --json), then submit and wait.
sdk::Host::AdminHandler submit_with(JobQueue& queue, const char* feature, json::object (*from_options)(const AdminArguments&)) {
    return [&queue, feature, from_options](std::string_view text) {
        AdminArguments a(text);
        if (auto polled = a.value("poll_job")) return job_reply(queue, *polled, a).json();
        json::object args = a.json();
        json::object request = a.value("json") ? document_request(a, args) : from_options(a);
        return submit(queue, feature, request, AdminArguments(json::serialize(args))).json();
    };
}

}  // namespace

void check_job_fields(const std::string& feature, const std::string& id) {
    static const std::regex feature_re("[a-z][a-z0-9-]{0,62}");
    static const std::regex id_re("[A-Za-z0-9._:-]{1,128}");
    if (!std::regex_match(feature, feature_re))
        throw Error(CC_ERR_INVALID_ARGUMENT, "'feature' must name a feature, e.g. \"pkcs\"");
    if (!std::regex_match(id, id_re)) throw Error(CC_ERR_INVALID_ARGUMENT, "'id' must match [A-Za-z0-9._:-]{1,128}");
}

void register_job_commands(sdk::Host& host, JobQueue& queue, ScepLedger& scep) {
    const std::string json_arg = R"j({"name":"json","kind":"file","help":"the raw job document instead of the options above"},)j";
    host.admin_command("submit pkcs", "submit a PKCS job: generate a key, issue it, deliver PKCS#12 encrypted to the device",
                       "jobs:submit",
                       "["
                       R"j({"name":"subject","kind":"string","help":"subject DN, e.g. \"CN=Alice,O=Example\""},
        {"name":"san","kind":"strings","help":"subject alternative name TYPE:VALUE (email, upn, dns, uri, ip)"},
        {"name":"device-key","kind":"file","help":"PEM file: the device's public key or certificate (RSA or EC)"},
        {"name":"key-type","kind":"string","help":"rsa2048 | rsa3072 | rsa4096 | p256 | p384 (default: the feature's default_key_type)"},
        {"name":"ca","kind":"string","help":"configured CA name (default: the feature's default_ca)"},
        {"name":"profile","kind":"string","help":"certificate profile of that CA"},
        {"name":"pfx-password","kind":"string","help":"PKCS#12 password (default: a random one, delivered encrypted)"},
        {"name":"legacy","kind":"flag","help":"3DES/SHA-1 PKCS#12 for old clients"},)j" +
                           json_arg + kWaitArguments + "]",
                       submit_with(queue, "pkcs", pkcs_request));
    host.admin_command("submit revoke", "submit a revoke job: revoke a certificate at its CA (CRL and OCSP show it at once)",
                       "jobs:submit",
                       "["
                       R"j({"name":"ca","kind":"string","help":"configured CA name (default: the feature's default_ca)"},
        {"name":"serial","kind":"string","help":"the certificate's serial number, hex"},
        {"name":"issuer","kind":"string","help":"the issuer DN; the CA refuses a serial of another issuer"},
        {"name":"reason","kind":"string","help":"RFC 5280 reason: unspecified | keyCompromise | cACompromise | affiliationChanged | superseded | cessationOfOperation | certificateHold | privilegeWithdrawn | aACompromise"},)j" +
                           json_arg + kWaitArguments + "]",
                       submit_with(queue, "revoke", revoke_request));
    host.admin_command("submit import",
                       "submit an import job: open an administrator's PFX and deliver it encrypted to the device", "jobs:submit",
                       "["
                       R"j({"name":"pfx","kind":"file","help":"the PFX (PKCS#12) file"},
        {"name":"encrypted-password","kind":"string","help":"its password, RSA-OAEP encrypted to a connector key, base64 (see `pfx encrypt-password`)"},
        {"name":"key-name","kind":"string","help":"the connector key the password is encrypted to (see `keys list`)"},
        {"name":"padding","kind":"string","help":"oaep-sha256 | oaep-sha384 | oaep-sha512 (default oaep-sha512)"},
        {"name":"purpose","kind":"string","help":"unassigned | smimeEncryption | smimeSigning | vpn | wifi (default unassigned)"},
        {"name":"upn","kind":"string","help":"user principal name the PFX belongs to"},
        {"name":"device-key","kind":"file","help":"PEM file: the device's public key or certificate (RSA or EC)"},)j" +
                           json_arg + kWaitArguments + "]",
                       submit_with(queue, "import", import_request));
    host.admin_command("submit", "submit FEATURE --json JOB.json [--wait --out DIR]: any feature's raw job document",
                       "jobs:submit",
                       "["
                       R"j({"name":"feature","kind":"string","positional":true,"required":true,"help":"the feature, e.g. pkcs"},
        {"name":"json","kind":"file","required":true,"help":"the job document ({\"request\": {...}} or the request itself)"},)j" +
                           std::string(kWaitArguments) + "]",
                       [&queue](std::string_view text) {
                           AdminArguments a(text);
                           if (auto polled = a.value("poll_job")) return job_reply(queue, *polled, a).json();
                           json::object args = a.json();
                           json::object request = document_request(a, args);
                           return submit(queue, a.required("feature"), request, AdminArguments(json::serialize(args))).json();
                       });
    host.admin_command("job show", "job show ID: a job's state and result", "jobs:read",
                       R"j([{"name":"id","kind":"string","positional":true,"required":true,"help":"the job id"}])j",
                       [&queue](std::string_view text) {
                           const std::string id = AdminArguments(text).required("id");
                           auto job = queue.find(id);
                           if (!job) return AdminReply::failed("certconnector job show: no job '" + id + "'\n").json();
                           return AdminReply::ok(json::serialize(job->to_json(true)) + "\n").json();
                       });
    host.admin_command(
        "scep challenge", "create a one-time SCEP challenge, optionally bound to a subject and SANs", "scep:challenge",
        R"j([{"name":"profile","kind":"string","required":true,"help":"the SCEP profile ([scep.profiles.<name>])"},
            {"name":"subject","kind":"string","help":"the subject DN the CSR must carry"},
            {"name":"san","kind":"strings","help":"a SAN TYPE:VALUE the CSR must carry (then exactly these)"},
            {"name":"ttl","kind":"string","help":"validity: 90s, 30m, 1h (default), 7d"}])j",
        [&scep](std::string_view text) {
            AdminArguments a(text);
            if (a.value("profile").value_or("").empty())
                throw Error(CC_ERR_INVALID_ARGUMENT, "'profile' (the SCEP profile) is required");
            const std::int64_t ttl = a.value("ttl") ? ttl_seconds(*a.value("ttl")) : 3600;
            if (ttl < 60 || ttl > std::int64_t{7} * 86400) throw Error(CC_ERR_INVALID_ARGUMENT, "--ttl must be 60 s .. 7 d");
            json::object answer;
            try {
                answer = scep.create_challenge(a.required("profile"), a.value("subject").value_or(""), a.values("san"), ttl);
            } catch (const std::invalid_argument& e) {
                throw Error(CC_ERR_INVALID_ARGUMENT, e.what());
            }
            AdminReply r = AdminReply::ok(std::string(answer.at("challenge").as_string()) + "\n");
            r.err = "one-time challenge for SCEP profile '" + a.required("profile") + "', valid until " +
                    std::string(answer.at("expires_at").as_string()) + "\n";
            return r.json();
        });
}

}  // namespace certconn::tenant_local
