// A minimal host for one CA plugin call sequence, for digicert_integration.sh: loads the plugin
// file through its two exports (as host/plugins/PluginLoader does), opens one CA with a JSON
// section, and runs each OP REQUEST_JSON pair in order through the plugin's C ABI (cc_ca_api).
// It checks the plugin call by call (pending, pending again, approved, denied with the same request
// id; lookup, CRL, health) without waiting for job leases, and across process restarts.
//
// usage: digicert_abi_driver PLUGIN_FILE STATE_DIR CA_NAME SECTION_JSON OP REQUEST_JSON [OP REQUEST_JSON ...]
//   OP: issue | revoke | query | describe (REQUEST_JSON ignored for describe)
// Each answer is printed on one line: "ok <json>" or "error <status> <message>". Events go to
// STATE_DIR/events.jsonl as {"id","level","request_id","message","fields"}. Exit status: the
// status of the last call.
#include <certconn/abi.h>
#include <certconn/sdk.hpp>

#include <boost/dll/shared_library.hpp>
#include <boost/json.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>
#include <string>

namespace {

std::string g_state;
std::mutex g_mutex;

int append(void* ctx, const char* data, size_t len) {
    static_cast<std::string*>(ctx)->append(data, len);
    return 0;
}

void log_event(void*, uint32_t id, int level, const char* request_id, const char* message, const char* fields) {
    boost::json::object e{{"id", id}, {"level", level}, {"request_id", request_id ? request_id : ""}, {"message", message}};
    if (fields) e["fields"] = boost::json::parse(fields);
    std::lock_guard lock(g_mutex);
    std::ofstream(g_state + "/events.jsonl", std::ios::app) << boost::json::serialize(e) << "\n";
}
int config_json(void*, cc_sink* out, cc_error*) {
    return out->write(out->ctx, "{}", 2);
}
const char* state_dir(void*) {
    return g_state.c_str();
}
int not_supported(cc_error* error) {
    error->code = CC_ERR_NOT_SUPPORTED;
    std::snprintf(error->message, sizeof error->message, "not offered by this test host");
    return CC_ERR_NOT_SUPPORTED;
}
int out_call(void*, const char*, const char*, cc_sink*, cc_error* error) {
    return not_supported(error);
}
int register_route(void*, const char*, const char*, cc_http_handler, void*, cc_error* error) {
    return not_supported(error);
}
int key_decrypt(void*, const char*, const char*, const char*, size_t, cc_sink*, cc_error* error) {
    return not_supported(error);
}
int http_register(void*, const cc_http_route*, cc_error* error) {
    return not_supported(error);
}
int admin_register(void*, const cc_admin_command*, cc_error* error) {
    return not_supported(error);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 7 || (argc - 5) % 2 != 0) {
        std::cerr << "usage: digicert_abi_driver PLUGIN_FILE STATE_DIR CA_NAME SECTION_JSON OP REQUEST_JSON [...]\n";
        return 2;
    }
    g_state = argv[2];
    boost::dll::shared_library library(argv[1]);
    const auto query = library.get_alias<const cc_plugin_info*()>(CERTCONN_QUERY_EXPORT);
    const auto init = library.get_alias<int(const cc_host_services*, cc_plugin_api*, cc_error*)>(CERTCONN_INIT_EXPORT);
    if (query()->kind != CC_KIND_CA) {
        std::cerr << "not a CA plugin\n";
        return 2;
    }
    cc_host_services host{};
    host.struct_size = sizeof host;
    host.abi_major = CERTCONN_ABI_MAJOR;
    host.abi_minor = CERTCONN_ABI_MINOR;
    host.log_event = &log_event;
    host.config_json = &config_json;
    host.state_dir = &state_dir;
    host.ca_issue = &out_call;
    host.ca_revoke = &out_call;
    host.tenant_call = &out_call;
    host.http_register_route = &register_route;
    host.key_decrypt = &key_decrypt;
    host.ca_query = &out_call;
    host.http_register = &http_register;
    host.admin_register_command = &admin_register;
    cc_plugin_api api{};
    api.struct_size = sizeof api;
    cc_error error{};
    error.struct_size = sizeof error;
    if (init(&host, &api, &error) != CC_OK) {
        std::cout << "error init " << error.message << "\n";
        return 2;
    }
    void* ca = nullptr;
    int status = api.ca->open(api.instance, argv[3], argv[4], &ca, &error);
    if (status != CC_OK) {
        std::cout << "error " << certconn::sdk::status_name(static_cast<cc_status>(status)) << " " << error.message << "\n";
        api.destroy(api.instance);
        return status;
    }
    for (int i = 5; i + 1 < argc; i += 2) {
        const std::string op = argv[i];
        std::string answer;
        cc_sink sink{&answer, &append};
        error = cc_error{};
        error.struct_size = sizeof error;
        if (op == "issue")
            status = api.ca->issue(api.instance, ca, argv[i + 1], &sink, &error);
        else if (op == "revoke")
            status = api.ca->revoke(api.instance, ca, argv[i + 1], &sink, &error);
        else if (op == "query")
            status = api.ca->query(api.instance, ca, argv[i + 1], &sink, &error);
        else if (op == "describe")
            status = api.ca->describe(api.instance, ca, &sink, &error);
        else {
            std::cerr << "unknown op " << op << "\n";
            status = 2;
            break;
        }
        if (status == CC_OK)
            std::cout << "ok " << answer << "\n";
        else
            std::cout << "error " << certconn::sdk::status_name(static_cast<cc_status>(status)) << " " << error.message << "\n";
    }
    api.ca->close(api.instance, ca);
    api.destroy(api.instance);
    return status;
}
