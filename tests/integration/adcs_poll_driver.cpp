// adcs_poll_driver: loads a CA plugin (.so) through the C ABI exactly as the host does, opens one
// CA section and runs CA calls in order, printing each answer. The adcs integration script uses
// it to drive the plugin call by call (issue again with the request id of a pending request,
// queries for certificates, the CRL and health) with a new process each time.
//
// usage: adcs_poll_driver PLUGIN.so STATE_DIR CA_NAME SECTION.json (issue|revoke|query|describe) REQUEST.json ...
// Prints per call "ok <answer json>" or "error <status> <message>"; events as "event <id> <fields>".
#include <certconn/abi.h>
#include <certconn/sdk.hpp>

#include <dlfcn.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

namespace {

std::string g_state_dir;

void log_event(void*, uint32_t id, int, const char* request_id, const char* message, const char* fields) {
    std::cout << "event " << id << " " << (fields ? fields : "{}") << " " << (request_id ? request_id : "-") << " " << message
              << "\n";
}
int config_json(void*, cc_sink* out, cc_error*) {
    return out->write(out->ctx, "{}", 2);
}
const char* state_dir(void*) {
    return g_state_dir.c_str();
}

std::string read(const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 5 || (argc - 5) % 2 != 0) {
        std::cerr << "usage: adcs_poll_driver PLUGIN.so STATE_DIR CA_NAME SECTION.json [OP REQUEST.json]...\n";
        return 2;
    }
    g_state_dir = argv[2];
    void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        std::cerr << dlerror() << "\n";
        return 2;
    }
    auto* init_ptr = static_cast<const void* const*>(dlsym(lib, CERTCONN_INIT_EXPORT));
    if (!init_ptr) {
        std::cerr << "no " << CERTCONN_INIT_EXPORT << "\n";
        return 2;
    }
    const auto init = reinterpret_cast<cc_plugin_init_fn>(const_cast<void*>(*init_ptr));
    cc_host_services host{};
    host.struct_size = sizeof host;
    host.abi_major = CERTCONN_ABI_MAJOR;
    host.abi_minor = CERTCONN_ABI_MINOR;
    host.log_event = &log_event;
    host.config_json = &config_json;
    host.state_dir = &state_dir;
    cc_plugin_api api{};
    api.struct_size = sizeof api;
    cc_error error = certconn::sdk::detail::make_error();
    if (init(&host, &api, &error) != CC_OK || !api.ca) {
        std::cerr << "init failed: " << error.message << "\n";
        return 2;
    }
    void* ca = nullptr;
    const std::string section = read(argv[4]);
    if (const int rc = api.ca->open(api.instance, argv[3], section.c_str(), &ca, &error); rc != CC_OK) {
        std::cout << "error " << certconn::sdk::status_name(static_cast<cc_status>(rc)) << " " << error.message << "\n";
        api.destroy(api.instance);
        return 1;
    }
    int failures = 0;
    for (int i = 5; i + 1 < argc; i += 2) {
        const std::string op = argv[i];
        const std::string request = read(argv[i + 1]);
        std::string out;
        cc_sink sink = certconn::sdk::detail::sink_for(out);
        error = certconn::sdk::detail::make_error();
        int rc = CC_ERR_INVALID_ARGUMENT;
        if (op == "issue")
            rc = api.ca->issue(api.instance, ca, request.c_str(), &sink, &error);
        else if (op == "revoke")
            rc = api.ca->revoke(api.instance, ca, request.c_str(), &sink, &error);
        else if (op == "query")
            rc = api.ca->query(api.instance, ca, request.c_str(), &sink, &error);
        else if (op == "describe")
            rc = api.ca->describe(api.instance, ca, &sink, &error);
        if (rc == CC_OK) {
            std::cout << "ok " << out << "\n";
        } else {
            ++failures;
            std::cout << "error " << certconn::sdk::status_name(static_cast<cc_status>(rc)) << " " << error.message << "\n";
        }
    }
    api.ca->close(api.instance, ca);
    api.destroy(api.instance);
    dlclose(lib);
    return failures == 0 ? 0 : 1;
}
