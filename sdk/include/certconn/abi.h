/*
 * certconnector plugin ABI — plain C, versioned.
 *
 * Rules (see docs/plugin-sdk.md for the full contract):
 *  - Only C types cross this boundary. No C++ object, exception or allocation crosses it.
 *  - Memory is freed by whoever allocated it. Variable-size output goes through a
 *    cc_sink provided by the caller; the callee only writes bytes into it.
 *  - Every struct starts with `struct_size`. Structs only ever grow by appending fields; a
 *    reader checks struct_size before touching a field that a newer minor version added.
 *  - A host speaking ABI M.N loads plugins built for M.0 .. M.N.
 *  - Versioning: appending a field to a struct, a function to a table or a value to an enum
 *    bumps CERTCONN_ABI_MINOR; removing, reordering or changing the meaning of anything bumps
 *    CERTCONN_ABI_MAJOR. Every released version's header hash is recorded in
 *    sdk/abi-versions.txt, and a test fails when this file changes without a new version there.
 *  - Threads: unless an entry says otherwise, the host may call a plugin's functions from any
 *    thread and several calls may overlap (a plugin synchronises its own state); init and
 *    destroy are never concurrent with any other call of the same instance.
 *    Per entry point:
 *      query                      any thread, also in short-lived processes (`config check`);
 *                                 no side effects, may run without init ever following.
 *      init                       once per instance, on the host's control thread.
 *      destroy                    once, on the host's reaper thread, after the last call into
 *                                 the instance has returned (never on a request thread).
 *      quiesce, resume            on the control thread, while calls of the same instance
 *                                 may still run (see cc_plugin_api).
 *      cc_ca_api.open             on the control thread, right after init.
 *      cc_ca_api.close            on the reaper thread, just before destroy.
 *      run_job, run_job_len       scheduler workers; up to [jobs] concurrency calls overlap.
 *      result_delivered           the outbox's delivery thread; overlaps with run_job.
 *      issue, revoke, query       any thread (job workers, HTTP workers); calls overlap.
 *      claim_jobs                 the scheduler's claim thread, one call at a time.
 *      complete_job               the outbox's delivery thread, one call at a time.
 *      jobs_report                the claim thread (downloads) or the delivery thread
 *                                 (uploads) of the tenant named in the report.
 *      cc_tenant_api.call, health any thread; calls overlap.
 *      cc_http_handler,
 *      cc_admin_handler           HTTP workers ([host] workers); calls overlap.
 *    Host services may be called from any of these threads, and from threads the plugin
 *    starts, until destroy returns.
 *  - Fixed-size structs that cannot carry struct_size (cc_sink, cc_http_header) are frozen:
 *    they never change within a major version.
 *
 * History:
 *  1.0  first version.
 *  1.1  cc_host_services: key_decrypt, ca_query (already present in 1.0 builds of this tree,
 *       now counted), http_register (routes with a required scope), admin_register_command;
 *       cc_ca_api.query; cc_feature_api.run_job_len; cc_http_request: origin, principal,
 *       scopes;
 *       cc_http_request.local now means "admin socket" only (loopback TCP is anonymous).
 *  1.2  cc_plugin_api: quiesce, resume (hand-over of the state directory on hot swap).
 *  1.3  cc_ca_api.query: ops "ocsp" and "health", "crl" with "level"; the host publishes every
 *       CA's CRLs, CA certificates and OCSP answers itself (/crl/, /ca/, /ocsp/ are reserved),
 *       and refuses a route that overlaps another plugin's.
 *  1.4  several tenants ([tenant.<name>]): cc_host_services.tenant_call_to (a named tenant) and
 *       tenant_notify (a must-deliver call handed to the host's durable outbox);
 *       cc_feature_api.jobs_report (batches downloaded from / results uploaded to a tenant);
 *       job documents carry "tenant". tenant_call now means "the default tenant".
 *  1.5  a fleet on one shared store: cc_host_services.store_config (the [store] the host was
 *       configured with, and this instance's id), so a plugin keeps its state where the host
 *       keeps its own (SQLite files in state_dir, or one PostgreSQL database for the fleet).
 */
#ifndef CERTCONN_ABI_H
#define CERTCONN_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CERTCONN_ABI_MAJOR 1
#define CERTCONN_ABI_MINOR 5

/* Names of the two exports every plugin provides (as Boost.DLL aliases: exported data
 * pointers to the functions; see CERTCONN_C_EXPORT_PLUGIN below). */
#define CERTCONN_QUERY_EXPORT "certconn_plugin_query"
#define CERTCONN_INIT_EXPORT "certconn_plugin_init"

/* ---------------------------------------------------------------------------------------- */
/* Status codes and errors                                                                  */

typedef enum cc_status {
    CC_OK = 0,
    CC_ERR_INVALID_ARGUMENT = 1, /* the request is malformed; retrying will not help       */
    CC_ERR_NOT_FOUND = 2,        /* the named object (CA, certificate, job) does not exist */
    CC_ERR_CONFLICT = 3,         /* the operation conflicts with the current state         */
    CC_ERR_NOT_SUPPORTED = 4,    /* the plugin or the backend cannot do this               */
    CC_ERR_DENIED = 5,           /* policy or authorisation refused the request            */
    CC_ERR_UNAVAILABLE = 6,      /* transient: backend down or refused, retry later        */
    CC_ERR_TIMEOUT = 7,          /* transient: backend did not answer in time              */
    CC_ERR_BUSY = 8,             /* transient: backend throttled the request               */
    CC_ERR_INTERNAL = 9,         /* a bug or an unexpected state in the plugin or host     */
    CC_ERR_PENDING = 10          /* accepted, the answer comes later (e.g. CA approval)    */
} cc_status;

/* A transient status: the same request may succeed later. */
#define CC_STATUS_IS_RETRYABLE(s) ((s) == CC_ERR_UNAVAILABLE || (s) == CC_ERR_TIMEOUT || (s) == CC_ERR_BUSY)

#define CC_ERROR_MESSAGE_MAX 1024

/* Filled by the callee when a call does not return CC_OK. Fixed size: no allocation crosses
 * the boundary. `message` is NUL-terminated UTF-8, safe to log (no secrets). */
typedef struct cc_error {
    uint32_t struct_size;
    int32_t code; /* a cc_status */
    char message[CC_ERROR_MESSAGE_MAX];
} cc_error;

/* Frozen (no struct_size). Caller-owned output buffer. The callee calls write() any number of times; the bytes are
 * appended. write() returns 0 on success, non-zero when the caller refuses more data (for
 * example because a size limit was reached). */
typedef struct cc_sink {
    void* ctx;
    int (*write)(void* ctx, const char* data, size_t len);
} cc_sink;

/* ---------------------------------------------------------------------------------------- */
/* Plugin identity: returned by the side-effect-free query export                           */

typedef enum cc_plugin_kind {
    CC_KIND_FEATURE = 1, /* does a kind of certificate work (pkcs, import, revoke, scep)  */
    CC_KIND_CA = 2,      /* wraps one CA product; can back several configured CAs         */
    CC_KIND_TENANT = 3   /* speaks to the device-management service                        */
} cc_plugin_kind;

typedef struct cc_plugin_info {
    uint32_t struct_size;     /* sizeof(cc_plugin_info) as the plugin was built           */
    uint16_t abi_major;       /* CERTCONN_ABI_MAJOR the plugin was built against          */
    uint16_t abi_minor;       /* CERTCONN_ABI_MINOR the plugin was built against          */
    uint32_t kind;            /* a cc_plugin_kind                                         */
    const char* name;         /* [a-z][a-z0-9-]{0,62}; unique per kind                    */
    const char* version;      /* semantic version, e.g. "1.4.2"                           */
    const char* release_date; /* "YYYY-MM-DD": drives the support policy                  */
    const char* description;  /* one line for `certconnector plugins`                     */
    /* JSON schema of the plugin's configuration section (see docs/plugin-sdk.md), or NULL
     * when the plugin takes no configuration. Validated by the host before init, so a typo
     * in the plugin's section is reported by `config check` with file:line:column. */
    const char* config_schema;
} cc_plugin_info;

/* ---------------------------------------------------------------------------------------- */
/* Event log                                                                                */

typedef enum cc_log_level { CC_LEVEL_DEBUG = 0, CC_LEVEL_INFO = 1, CC_LEVEL_WARNING = 2, CC_LEVEL_ERROR = 3 } cc_log_level;

/* ---------------------------------------------------------------------------------------- */
/* HTTP routes a plugin serves through the host HTTP server                                 */

/* Frozen (no struct_size). */
typedef struct cc_http_header {
    const char* name;
    const char* value;
} cc_http_header;

/* Who sent a request, as the host authenticated it (since 1.1). Only the administrator is
 * privileged: a TCP peer, loopback included, is anonymous unless it authenticates. */
typedef enum cc_request_origin {
    CC_ORIGIN_ANONYMOUS = 0,          /* TCP peer without credentials (devices, the public)    */
    CC_ORIGIN_TOKEN = 1,              /* TCP peer with a configured bearer token               */
    CC_ORIGIN_CLIENT_CERTIFICATE = 2, /* TCP peer with a TLS client certificate mapped in config */
    CC_ORIGIN_ADMIN_SOCKET = 3        /* the admin socket; peer checked with SO_PEERCRED       */
} cc_request_origin;

/* The scope that an admin-socket peer holds: every scope. */
#define CC_SCOPE_ALL "*"

typedef struct cc_http_request {
    uint32_t struct_size;
    const char* method; /* "GET", "POST", ...                                        */
    const char* path;   /* decoded path, without the query string                    */
    const char* query;  /* raw query string without '?', "" when absent              */
    const char* body;   /* not NUL-terminated; body_len bytes                        */
    size_t body_len;
    const cc_http_header* headers;
    size_t header_count;
    const char* remote_address; /* "ip:port" of the peer, "local" for the admin socket     */
    int local;                  /* non-zero: the admin socket (1.0 hosts: also loopback TCP)  */
    /* since 1.1 */
    uint32_t origin;           /* a cc_request_origin                                      */
    const char* principal;     /* "token:<name>", "certificate:<name>", "uid:<n>"; "" when
                                  anonymous. Safe to log.                                  */
    const char* const* scopes; /* the scopes the principal holds ("*" = all)               */
    size_t scope_count;
} cc_http_request;

/* The host-side response under construction. Valid only during the handler call. */
typedef struct cc_http_response {
    uint32_t struct_size;
    void* ctx;
    void (*set_status)(void* ctx, int status);
    void (*add_header)(void* ctx, const char* name, const char* value);
    cc_sink body; /* append bytes of the body */
} cc_http_response;

/* A route handler. Returns CC_OK after filling `response`; any other status makes the host
 * answer 500 (or 503 for a retryable status) and log the error. Called on a worker thread;
 * several calls may run at once. */
typedef int (*cc_http_handler)(void* handler_ctx, const cc_http_request* request, const cc_http_response* response,
                               cc_error* error);

/* A route a plugin serves (since 1.1). The host answers 401 (no credentials) or 403 (wrong
 * scope) itself, before the handler runs, when the caller lacks `scope`. */
typedef struct cc_http_route {
    uint32_t struct_size;
    const char* method; /* "GET", "POST", ...                                         */
    const char* path;   /* exact, or a prefix when it ends in '/'                     */
    const char* scope;  /* required scope, e.g. "jobs:submit"; NULL or "" = public    */
    cc_http_handler handler;
    void* handler_ctx;
} cc_http_route;

/* ---------------------------------------------------------------------------------------- */
/* Administrative commands (since 1.1), as Kea's hook libraries register control commands: a
 * plugin registers them at init; the CLI lists them (GET /admin/commands on the admin socket)
 * and runs them (POST /admin/command). The host enforces `scope` before the handler runs.
 *
 * `arguments_json` describes the command line, a JSON array of objects:
 *   {"name": "subject", "kind": "string" | "strings" | "flag" | "file" | "output_dir",
 *    "required": bool, "positional": bool, "help": "..."}
 * "file": the CLI reads the file (as the calling user) and sends its bytes base64-encoded;
 * "output_dir": stays in the CLI, which writes the reply's "files" there.
 *
 * The handler receives the arguments as a JSON object and writes a reply JSON object:
 *   {"exit_code": 0, "stdout": "...", "stderr": "...", "files": {"name": "<base64>"},
 *    "next": {"arguments": {...}, "delay_ms": 100}}
 * "next" asks the CLI to call the same command again (waiting without holding a worker). */
typedef int (*cc_admin_handler)(void* handler_ctx, const char* arguments_json, size_t arguments_len, cc_sink* reply_json,
                                cc_error* error);

typedef struct cc_admin_command {
    uint32_t struct_size;
    const char* name;           /* lower-case words separated by one space: "scep approve"     */
    const char* summary;        /* one line for `certconnector help`                            */
    const char* arguments_json; /* see above; NULL = no arguments                               */
    const char* scope;          /* required scope, e.g. "scep:approve"; never empty             */
    cc_admin_handler handler;
    void* handler_ctx;
} cc_admin_command;

/* ---------------------------------------------------------------------------------------- */
/* Tenant calls the host delivers, and job batches it reports (since 1.4)                   */

/* A must-deliver tenant call (tenant_notify, since 1.4). The host writes the events named here
 * as the delivery goes; an event id of 0 writes nothing. */
typedef struct cc_tenant_notification {
    uint32_t struct_size;
    const char* tenant;       /* as for tenant_call_to                                         */
    const char* operation;    /* e.g. "scep.notify_success"                                    */
    const char* key;          /* idempotency key, unique per tenant, e.g. "<tx>/success"        */
    const char* request_json; /* the call's request                                            */
    const char* request_id;   /* for the events (a transaction id); may be NULL                */
    uint32_t event_delivered; /* the tenant took it (e.g. 4008)                                */
    uint32_t event_retry;     /* an attempt failed; it is retried (e.g. 4009)                  */
    uint32_t event_refused;   /* the tenant refused it for good (non-retryable status)         */
    uint32_t event_done;      /* optional second event at delivery, e.g. Admin "request done" */
    const char* done_message; /* its message                                                   */
} cc_tenant_notification;

/* What the host tells a feature about a batch of its jobs (cc_feature_api.jobs_report). */
typedef enum cc_jobs_report_kind {
    CC_JOBS_DOWNLOADED = 1,      /* a claim from `tenant` brought these jobs                        */
    CC_JOBS_DOWNLOAD_FAILED = 2, /* a claim from `tenant` failed (`message`); no job ids            */
    CC_JOBS_UPLOADED = 3         /* one delivery pass gave `tenant` these jobs' results            */
} cc_jobs_report_kind;

typedef struct cc_jobs_report {
    uint32_t struct_size;
    uint32_t kind; /* a cc_jobs_report_kind */
    const char* tenant;
    const char* const* job_ids;
    const char* const* job_documents; /* CC_JOBS_DOWNLOADED: each job's JSON document; else NULL */
    size_t job_count;
    const char* message; /* CC_JOBS_DOWNLOAD_FAILED: why; else "" */
} cc_jobs_report;

/* ---------------------------------------------------------------------------------------- */
/* Services the host offers a plugin. The table and `host_ctx` stay valid until the plugin
 * instance is destroyed. All functions are thread-safe.                                    */

typedef struct cc_host_services {
    uint32_t struct_size;
    uint16_t abi_major;
    uint16_t abi_minor;
    void* host_ctx; /* pass back as the first argument of every call below */

    /* Writes one event to the event log. `event_id` is one of events.h; the host derives the
     * channel (Admin/Operational) and task category from it. request_id and fields_json
     * (a JSON object) may be NULL. */
    void (*log_event)(void* host_ctx, uint32_t event_id, int level, const char* request_id, const char* message,
                      const char* fields_json);

    /* Writes the plugin's configuration section as a JSON object ("{}" when absent). For a
     * CA plugin this is empty: its sections come to cc_ca_api.open one by one. */
    int (*config_json)(void* host_ctx, cc_sink* out, cc_error* error);

    /* Directory (absolute path, NUL-terminated) the plugin may keep state in; created 0700. */
    const char* (*state_dir)(void* host_ctx);

    /* Routes a request to the configured CA named `ca_name` ([ca.<name>]); the host picks the
     * CA plugin behind that name. Request and response are JSON (docs/plugin-sdk.md). */
    int (*ca_issue)(void* host_ctx, const char* ca_name, const char* request_json, cc_sink* response_json, cc_error* error);
    int (*ca_revoke)(void* host_ctx, const char* ca_name, const char* request_json, cc_sink* response_json, cc_error* error);

    /* Calls the active tenant plugin: `operation` names the call (e.g. "scep.validate"). */
    int (*tenant_call)(void* host_ctx, const char* operation, const char* request_json, cc_sink* response_json, cc_error* error);

    /* Serves `method` requests whose path equals `path`, or starts with it when `path` ends
     * in '/'. Only during init. The route lives as long as this plugin instance. The route is
     * public (any caller); use http_register (1.1) for a route that needs a scope. */
    int (*http_register_route)(void* host_ctx, const char* method, const char* path, cc_http_handler handler, void* handler_ctx,
                               cc_error* error);

    /* Decrypts `ciphertext` with the connector key `key_name` (see `certconnector keys`),
     * RSA-OAEP with `padding` "oaep-sha256" | "oaep-sha384" | "oaep-sha512" (hash and MGF1).
     * The key never leaves the host. CC_ERR_NOT_FOUND: this connector does not hold the key;
     * CC_ERR_INVALID_ARGUMENT: wrong key or padding for this ciphertext; CC_ERR_UNAVAILABLE:
     * the key exists but cannot be used now (token absent). Check struct_size first. */
    int (*key_decrypt)(void* host_ctx, const char* key_name, const char* padding, const char* ciphertext, size_t ciphertext_len,
                       cc_sink* plaintext, cc_error* error);

    /* Asks the configured CA `ca_name` a read-only question (cc_ca_api.query): the host
     * answers CC_ERR_NOT_SUPPORTED for a CA plugin without query. Check struct_size first. */
    int (*ca_query)(void* host_ctx, const char* ca_name, const char* request_json, cc_sink* response_json, cc_error* error);

    /* since 1.1 (check struct_size) ------------------------------------------------------ */

    /* Registers a route with the scope it requires. Only during init. Paths the host serves
     * itself (/healthz, /status, /admin/..., and since 1.3 /crl/, /ca/, /ocsp/) are refused with
     * CC_ERR_CONFLICT, and so (since 1.3) is a route overlapping another plugin's (the same
     * path, or a path inside another plugin's prefix route, or a prefix covering its routes):
     * the plugin's init then fails even if it ignores the status (1.0-1.2 plugins: see sdk docs). */
    int (*http_register)(void* host_ctx, const cc_http_route* route, cc_error* error);

    /* Registers an administrative command. Only during init; names are unique per host. */
    int (*admin_register_command)(void* host_ctx, const cc_admin_command* command, cc_error* error);

    /* since 1.4 (check struct_size) ------------------------------------------------------ */

    /* tenant_call to the tenant configured as [tenant.<tenant>]. NULL or "" = the default
     * tenant: the one named "default" (the old [tenant] section), else the only one configured.
     * CC_ERR_NOT_FOUND: no such tenant, or no default among several. */
    int (*tenant_call_to)(void* host_ctx, const char* tenant, const char* operation, const char* request_json,
                          cc_sink* response_json, cc_error* error);

    /* Hands the host a call the tenant must receive (a notification): the host stores it
     * durably and returns; a delivery thread of that tenant makes the call, in the order
     * stored, retrying retryable failures with backoff (and the tenant's Retry-After) until it
     * succeeds. CC_OK means stored; an error means it was not stored (the feature logs it).
     * Storing the same `key` twice stores it once. */
    int (*tenant_notify)(void* host_ctx, const cc_tenant_notification* notification, cc_error* error);

    /* since 1.5 (check struct_size) ------------------------------------------------------ */

    /* Writes where shared state lives, as a JSON object:
     *   {"backend": "sqlite" | "postgresql",
     *    "url": "postgresql://..." (postgresql only; never holds a password),
     *    "password": "..." (postgresql only, when [store] password_file is set; else absent and
     *                 libpq's own PGPASSWORD / ~/.pgpass apply),
     *    "instance_id": "..." (this instance, unique in the fleet)}
     * With "sqlite" a plugin keeps its files in state_dir as before. With "postgresql" every
     * instance of the fleet shares the database: a plugin keeps its tables in a schema of its
     * own and must make every change safe against other instances doing the same at once. */
    int (*store_config)(void* host_ctx, cc_sink* out, cc_error* error);
} cc_host_services;

/* ---------------------------------------------------------------------------------------- */
/* What a plugin gives the host: one table per kind                                         */

/* feature plugins: the host scheduler hands them jobs claimed from the tenant. */
typedef struct cc_feature_api {
    uint32_t struct_size;
    /* Processes one job (JSON document of docs/tenant-protocol.md), writes its result JSON.
     * A retryable status means the host should run the job again later. */
    int (*run_job)(void* instance, const char* job_json, cc_sink* result_json, cc_error* error);
    /* Optional (may be NULL): the host delivered (delivered != 0) or failed to deliver the
     * result of `job_id` to the tenant; `message` says why when it failed. The feature may
     * now drop per-job state it kept to make a re-run idempotent. */
    void (*result_delivered)(void* instance, const char* job_id, int delivered, const char* message);
    /* since 1.1, optional: run_job with the document's length (jobs carrying a PFX are large;
     * the host calls this one instead of run_job when present, so nothing is strlen'ed). The
     * document is still NUL-terminated. */
    int (*run_job_len)(void* instance, const char* job_json, size_t job_len, cc_sink* result_json, cc_error* error);
    /* since 1.4, optional: batches of this feature's jobs downloaded from or uploaded to a
     * tenant, so the feature writes its "downloaded" / "download failed" / "uploaded" events. */
    void (*jobs_report)(void* instance, const cc_jobs_report* report);
} cc_feature_api;

/* CA plugins: one instance serves every [ca.<name>] whose plugin = this plugin. */
typedef struct cc_ca_api {
    uint32_t struct_size;
    /* Opens the CA named `ca_name` with its configuration section (JSON object). */
    int (*open)(void* instance, const char* ca_name, const char* config_json, void** ca_handle, cc_error* error);
    void (*close)(void* instance, void* ca_handle);
    int (*issue)(void* instance, void* ca_handle, const char* request_json, cc_sink* response_json, cc_error* error);
    int (*revoke)(void* instance, void* ca_handle, const char* request_json, cc_sink* response_json, cc_error* error);
    /* Optional (may be NULL): the CA's identity as JSON, at least {"chain_pem": "<PEM, issuing
     * CA first>"}; used by `certconnector ca export`. */
    int (*describe)(void* instance, void* ca_handle, cc_sink* response_json, cc_error* error);
    /* Optional (may be NULL; check struct_size): read-only questions, JSON in and out.
     *   {"op": "certificate", "serial": "HEX"} -> {"serial", "certificate_pem", "status"}
     *   {"op": "crl"} -> {"crl_der": "<base64>"} (the CA's current CRL)
     *   since 1.3:
     *   {"op": "crl", "level": "root"} -> {"crl_der": "<base64>"}: the CRL of the root above
     *       the issuing CA, when this plugin publishes it (CC_ERR_NOT_FOUND when it does not);
     *       "level": "issuing" is the default.
     *   {"op": "ocsp", "request_der": "<base64 OCSPRequest>"} -> {"response_der": "<base64
     *       OCSPResponse>"} (RFC 6960); a malformed request gets a malformedRequest response,
     *       not an error. The host serves it at POST /ocsp/<ca> and GET /ocsp/<ca>/<base64>.
     *   {"op": "health"} -> {"healthy": bool, "detail": "..."}: a real, cheap probe of this CA
     *       (its key or its remote service answers), never a cached flag. The host calls it in
     *       the background every [host] ca_health_interval_seconds, never on a request path.
     * The host publishes /crl/<ca>.crl, /crl/<ca>-root.crl, /ca/<ca>.crt, /ca/<ca>-root.crt
     * (from describe's chain_pem) and /ocsp/<ca> for every configured CA through these ops.
     * CC_ERR_NOT_FOUND for an unknown certificate, CC_ERR_NOT_SUPPORTED for an unknown op. */
    int (*query)(void* instance, void* ca_handle, const char* request_json, cc_sink* response_json, cc_error* error);
} cc_ca_api;

/* tenant plugins: the source of jobs and the place results go. */
typedef struct cc_tenant_api {
    uint32_t struct_size;
    /* Claims up to `max_jobs` jobs for the given features (JSON array of names) with a lease;
     * writes a JSON array of job documents. */
    int (*claim_jobs)(void* instance, const char* features_json, uint32_t max_jobs, uint32_t lease_seconds, cc_sink* jobs_json,
                      cc_error* error);
    /* Reports the single result of a job. Idempotent per job id. */
    int (*complete_job)(void* instance, const char* job_id, const char* result_json, cc_error* error);
    /* Any other call: challenge validation, notifications, heartbeat ... */
    int (*call)(void* instance, const char* operation, const char* request_json, cc_sink* response_json, cc_error* error);
} cc_tenant_api;

/* Filled by init. The host sets struct_size (its own sizeof) before the call; the plugin
 * writes no field beyond it. Exactly the table matching the plugin's kind is non-NULL. */
typedef struct cc_plugin_api {
    uint32_t struct_size;
    void* instance;                  /* opaque, passed back on every call                  */
    void (*destroy)(void* instance); /* last call; the library is unloaded after it        */
    /* Health for status: writes a JSON object {"healthy":bool,"detail":"..."}. May be NULL. */
    int (*health)(void* instance, cc_sink* health_json, cc_error* error);
    const cc_feature_api* feature;
    const cc_ca_api* ca;
    const cc_tenant_api* tenant;
    /* 1.2: hand-over of the state directory to the next generation of the same plugin.
     * quiesce stops background threads, flushes, and releases exclusive files (locks, sockets)
     * before the next generation's init takes the state directory; it returns within
     * `deadline_ms` (the host reports a late return and goes on). After quiesce the instance
     * still answers calls (requests in flight, and new ones until the next generation is
     * published) but does no background work. NULL: the plugin keeps no exclusive state, and
     * old and new generations overlap freely. Called on the control thread. */
    int (*quiesce)(void* instance, uint32_t deadline_ms, cc_error* error);
    /* 1.2: the hand-over was abandoned (the next generation's init failed): restart the
     * background work quiesce stopped; this generation keeps serving. May be NULL. */
    void (*resume)(void* instance);
} cc_plugin_api;

/* The two exports. The query function must not allocate, start threads or touch files. */
typedef const cc_plugin_info* (*cc_plugin_query_fn)(void);
typedef int (*cc_plugin_init_fn)(const cc_host_services* host, cc_plugin_api* api, cc_error* error);

/* Export a plugin written in C (C++ authors use CERTCONN_PLUGIN from sdk.hpp). Defines the
 * two exported Boost.DLL-compatible aliases: data symbols holding the function addresses. */
#define CERTCONN_C_EXPORT_PLUGIN(query_fn, init_fn)                                                       \
    __attribute__((visibility("default"), section("boostdll"), used)) const void* certconn_plugin_query = \
        (const void*)&(query_fn);                                                                         \
    __attribute__((visibility("default"), section("boostdll"), used)) const void* certconn_plugin_init = (const void*)&(init_fn);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* CERTCONN_ABI_H */
