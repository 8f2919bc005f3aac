// ca-harness: loads a CA plugin through the plain C ABI (abi.h only), as the host would, opens
// one CA with a configuration section and makes one call, so a vendor can test a CA plugin's
// calls without a running connector (the host's CLI reaches issue and revoke through jobs, but
// not every query).
//
//   ca-harness PLUGIN.so STATE_DIR CA_NAME SECTION_JSON issue|revoke|query|describe [REQUEST_JSON]
//
// Prints the answer (JSON) on stdout and exits 0; on failure prints "error <status> (<code>):
// <message>" on stderr and exits 2. Every event the plugin logs goes to stderr as
// "event <id>: <message> <fields>". The host's section validation does not run here.
#include <certconn/abi.h>

#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <string>

namespace {

std::string g_state_dir;

int append(void* ctx, const char* data, size_t len) {
    static_cast<std::string*>(ctx)->append(data, len);
    return 0;
}

void log_event(void*, uint32_t id, int, const char*, const char* message, const char* fields) {
    std::fprintf(stderr, "event %u: %s %s\n", id, message ? message : "", fields ? fields : "");
}

int config_json(void*, cc_sink* out, cc_error*) {
    return out->write(out->ctx, "{}", 2);
}

const char* state_dir(void*) {
    return g_state_dir.c_str();
}

int not_here(void*, const char*, const char*, cc_sink*, cc_error* error) {
    error->code = CC_ERR_NOT_SUPPORTED;
    std::snprintf(error->message, sizeof error->message, "ca-harness has no other CAs or tenant");
    return CC_ERR_NOT_SUPPORTED;
}

const char* status_name(int s) {
    static const char* names[] = {"ok",          "invalid_argument", "not_found", "conflict", "not_supported", "denied",
                                  "unavailable", "timeout",          "busy",      "internal", "pending"};
    return s >= 0 && s <= 10 ? names[s] : "unknown";
}

int failed(int status, const cc_error& error, const char* what) {
    std::fprintf(stderr, "error %s (%d): %s: %s\n", status_name(status), status, what, error.message);
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 6) {
        std::fprintf(stderr, "usage: %s PLUGIN.so STATE_DIR CA_NAME SECTION_JSON issue|revoke|query|describe [REQUEST_JSON]\n",
                     argv[0]);
        return 1;
    }
    g_state_dir = argv[2];
    const std::string op = argv[5];
    const char* request = argc > 6 ? argv[6] : "{}";

    void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        std::fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    // The exports are Boost.DLL aliases: variables holding the function's address.
    auto* query_alias = static_cast<cc_plugin_query_fn*>(dlsym(lib, CERTCONN_QUERY_EXPORT));
    auto* init_alias = static_cast<cc_plugin_init_fn*>(dlsym(lib, CERTCONN_INIT_EXPORT));
    if (!query_alias || !init_alias) {
        std::fprintf(stderr, "%s does not export %s and %s\n", argv[1], CERTCONN_QUERY_EXPORT, CERTCONN_INIT_EXPORT);
        return 1;
    }
    const cc_plugin_info* info = (*query_alias)();
    if (info->kind != CC_KIND_CA || info->abi_major != CERTCONN_ABI_MAJOR) {
        std::fprintf(stderr, "%s is not a CA plugin of ABI %d.x\n", argv[1], CERTCONN_ABI_MAJOR);
        return 1;
    }

    cc_host_services host{};
    host.struct_size = sizeof host;
    host.abi_major = CERTCONN_ABI_MAJOR;
    host.abi_minor = CERTCONN_ABI_MINOR;
    host.log_event = &log_event;
    host.config_json = &config_json;
    host.state_dir = &state_dir;
    host.ca_issue = &not_here;
    host.ca_revoke = &not_here;
    host.tenant_call = &not_here;
    host.ca_query = &not_here;

    cc_plugin_api api{};
    api.struct_size = sizeof api;
    cc_error error{};
    error.struct_size = sizeof error;
    if (int rc = (*init_alias)(&host, &api, &error); rc != CC_OK) return failed(rc, error, "init");

    void* ca = nullptr;
    int rc = api.ca->open(api.instance, argv[3], argv[4], &ca, &error);
    int exit_code = 0;
    if (rc != CC_OK) {
        exit_code = failed(rc, error, "open");
    } else {
        std::string answer;
        cc_sink sink{&answer, &append};
        if (op == "issue")
            rc = api.ca->issue(api.instance, ca, request, &sink, &error);
        else if (op == "revoke")
            rc = api.ca->revoke(api.instance, ca, request, &sink, &error);
        else if (op == "query")
            rc = api.ca->query(api.instance, ca, request, &sink, &error);
        else if (op == "describe")
            rc = api.ca->describe(api.instance, ca, &sink, &error);
        else {
            std::fprintf(stderr, "unknown operation '%s'\n", op.c_str());
            rc = -1;
            exit_code = 1;
        }
        if (rc == CC_OK)
            std::printf("%s\n", answer.c_str());
        else if (rc > 0)
            exit_code = failed(rc, error, op.c_str());
        api.ca->close(api.instance, ca);
    }
    api.destroy(api.instance);
    dlclose(lib);
    return exit_code;
}
