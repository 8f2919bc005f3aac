/*
 * Every event id the connector and its plugins write, in one place.
 * Ranges: 0001-0999 general (host; 800-899 fleet), 1000 PKCS, 2000 PKCS import, 3000 revoke, 4000 SCEP,
 * 5000 health. Ids are stable: never renumber, only add. docs/event-ids.md is generated
 * from this list (`certconnector events --markdown`).
 *
 * X(id, Name, channel, category, meaning)
 */
#ifndef CERTCONN_EVENTS_H
#define CERTCONN_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cc_channel { CC_CHANNEL_ADMIN = 0, CC_CHANNEL_OPERATIONAL = 1 } cc_channel;

#define CERTCONN_EVENTS(X)                                                                                                       \
    /* general: service lifecycle and configuration */                                                                           \
    X(1, ServiceStarted, OPERATIONAL, "Service", "the connector started and serves requests")                                    \
    X(2, ServiceStopping, OPERATIONAL, "Service", "a stop was requested; draining requests")                                     \
    X(3, ServiceStopped, OPERATIONAL, "Service", "the connector stopped")                                                        \
    X(4, ServiceAccountMismatch, OPERATIONAL, "Service", "running as another user than the configured service account")          \
    X(20, ConfigurationLoaded, OPERATIONAL, "Configuration", "effective configuration at start (secrets redacted)")              \
    X(21, ConfigurationChanged, OPERATIONAL, "Configuration", "a reload changed a setting")                                      \
    X(22, ConfigurationReloadFailed, OPERATIONAL, "Configuration", "a reload found errors; the previous configuration stays")    \
    X(23, ConfigurationNeedsRestart, OPERATIONAL, "Configuration", "a changed setting takes effect after a restart")             \
    /* general: plugins */                                                                                                       \
    X(100, PluginLoaded, OPERATIONAL, "Plugins", "a plugin was loaded and initialised")                                          \
    X(101, PluginUnloaded, OPERATIONAL, "Plugins", "a plugin generation was released")                                           \
    X(102, PluginDirectoryUnsafe, OPERATIONAL, "Plugins",                                                                        \
      "the plugin directory is missing, or it or a directory above it is writable by others or foreign-owned; nothing loaded "   \
      "from it")                                                                                                                 \
    X(103, PluginFileUnsafe, OPERATIONAL, "Plugins",                                                                             \
      "a plugin file, or a directory above its real path, is writable by others or has a foreign owner; refused")                \
    X(104, PluginLoadFailed, OPERATIONAL, "Plugins", "the dynamic loader could not load a plugin file")                          \
    X(105, PluginExportMissing, OPERATIONAL, "Plugins", "a plugin lacks a required export")                                      \
    X(106, PluginAbiMismatch, OPERATIONAL, "Plugins", "a plugin was built for an SDK version this host does not speak")          \
    X(107, PluginInfoInvalid, OPERATIONAL, "Plugins", "a plugin's info (size, kind, name, version, date, schema) is invalid")    \
    X(108, PluginDuplicate, OPERATIONAL, "Plugins", "a second plugin of the same kind and name; refused")                        \
    X(109, PluginInitFailed, OPERATIONAL, "Plugins", "a plugin's init failed or threw")                                          \
    X(110, PluginCallFailed, OPERATIONAL, "Plugins", "a call into a plugin failed")                                              \
    X(111, PluginSupportWarning, OPERATIONAL, "Plugins", "a plugin is past its 6-month support period")                          \
    X(112, PluginUnsupported, OPERATIONAL, "Plugins", "a plugin is past its 18-month working period")                            \
    X(113, PluginDisabled, OPERATIONAL, "Plugins", "a feature plugin is present but disabled in [features]")                     \
    X(114, CaOpenFailed, OPERATIONAL, "Plugins", "a configured CA could not be opened by its plugin")                            \
    X(115, PluginSuperseded, OPERATIONAL, "Plugins",                                                                             \
      "a plugin file is not served: a higher version of the same plugin passed every check (or a pin chose another)")            \
    X(116, PluginCannotUnload, OPERATIONAL, "Plugins",                                                                           \
      "a plugin file has STB_GNU_UNIQUE symbols or thread_local destructors: its library stays mapped after a swap")             \
    X(117, PluginStillMapped, OPERATIONAL, "Plugins",                                                                            \
      "a released plugin generation's library is still mapped after its last call (a leak)")                                     \
    X(118, PluginProbeFailed, OPERATIONAL, "Plugins",                                                                            \
      "a new plugin version crashed, hung or failed init or health in the probe process; not loaded")                            \
    X(119, PluginQuiesceFailed, OPERATIONAL, "Plugins",                                                                          \
      "the serving generation's quiesce failed or missed its deadline; the hand-over went on")                                   \
    X(120, PluginSwapped, OPERATIONAL, "Plugins", "a new generation of a plugin serves; the previous one drains and unloads")    \
    X(121, PluginModuleStoreFailed, OPERATIONAL, "Plugins",                                                                      \
      "a plugin file could not be copied into the content-addressed module store")                                               \
    X(122, CaHealthChanged, ADMIN, "Plugins",                                                                                    \
      "a configured CA's background health probe changed state: degraded (the probe failed) or healthy again")                   \
    /* general: HTTP */                                                                                                          \
    X(200, HttpListening, OPERATIONAL, "Http", "the HTTP server listens")                                                        \
    X(201, HttpServerError, OPERATIONAL, "Http", "the HTTP server could not start or accept")                                    \
    X(202, HttpRouteRegistered, OPERATIONAL, "Http", "a plugin registered an HTTP route")                                        \
    X(203, HttpRequestRejected, OPERATIONAL, "Http", "a request was refused before routing (size, timeout, syntax)")             \
    X(204, HttpHandlerFailed, OPERATIONAL, "Http", "a plugin's route handler failed")                                            \
    X(205, HttpConnectionLimitReached, OPERATIONAL, "Http",                                                                      \
      "TCP connections reached [host] max_connections; accepting paused until one closes")                                       \
    X(206, HttpAcceptResumed, OPERATIONAL, "Http",                                                                               \
      "a listener (TCP or admin socket) accepts again after a pause (descriptor or memory shortage)")                            \
    X(207, HttpTlsReloaded, OPERATIONAL, "Http", "the TLS certificate and key were re-read; new handshakes use them")            \
    X(208, HttpTlsReloadFailed, OPERATIONAL, "Http",                                                                             \
      "re-reading the TLS certificate or key failed; the previous ones keep serving")                                            \
    X(209, HttpOverloaded, OPERATIONAL, "Http",                                                                                  \
      "every worker busy and the request queue full: a TCP request got 503 with Retry-After")                                    \
    /* general: jobs and the durable outbox */                                                                                   \
    X(300, JobClaimFailed, OPERATIONAL, "Jobs", "claiming jobs from the tenant failed; will retry")                              \
    X(301, JobRetryScheduled, OPERATIONAL, "Jobs", "a job failed transiently; it runs again after a backoff")                    \
    X(302, JobResultStored, OPERATIONAL, "Jobs", "a job's result is in the durable outbox")                                      \
    X(303, JobResultDelivered, OPERATIONAL, "Jobs", "the tenant acknowledged a job's result")                                    \
    X(304, JobResultDeliveryFailed, OPERATIONAL, "Jobs", "reporting a result to the tenant failed; will retry")                  \
    X(305, JobAbandoned, OPERATIONAL, "Jobs", "a job was left unfinished at stop; its lease returns it to the queue")            \
    X(306, JobFeatureUnavailable, OPERATIONAL, "Jobs", "a claimed job's feature is not loaded; its lease returns it")            \
    X(307, OutboxWriteFailed, OPERATIONAL, "Jobs",                                                                               \
      "a result could not be persisted; the job is not reported and will run again")                                             \
    X(308, JobLeaseLost, OPERATIONAL, "Jobs",                                                                                    \
      "a job's lease could not be kept (lost, or not renewable for the wait); the host abandons it and the tenant's lease "      \
      "decides")                                                                                                                 \
    X(309, JobResultDeliverySlow, OPERATIONAL, "Jobs",                                                                           \
      "the tenant took longer than the delivery deadline to acknowledge a result")                                               \
    X(310, JobPendingAtCa, OPERATIONAL, "Jobs",                                                                                  \
      "a job's CA holds its request for approval; the job runs again when its lease returns it")                                 \
    /* certificate authorities (CA plugins; relying-party services) */                                                           \
    X(400, CaHierarchyCreated, ADMIN, "CA", "a CA created its key pair and certificate")                                         \
    X(401, CaCrlPublished, OPERATIONAL, "CA", "a CRL was generated")                                                             \
    X(402, CaCrlFailed, ADMIN, "CA", "a CRL could not be generated; the previous one is served")                                 \
    X(403, CaOcspResponderIssued, OPERATIONAL, "CA", "a delegated OCSP responder certificate was issued")                        \
    X(404, CaOcspFailed, OPERATIONAL, "CA", "an OCSP request could not be answered")                                             \
    X(405, CaRequestIssued, OPERATIONAL, "CA", "a remote CA issued a certificate (its own request id in the fields)")            \
    X(406, CaRequestPending, OPERATIONAL, "CA", "a remote CA holds a request for approval; it is polled later")                  \
    X(407, CaRequestDenied, OPERATIONAL, "CA", "a remote CA denied a request (its disposition message)")                         \
    X(408, CaUnreachable, ADMIN, "CA", "a remote CA could not be reached or answered unreadably; its jobs retry")                \
    X(409, CaRevokeUnsupported, ADMIN, "CA", "a CA plugin cannot revoke through any configured mechanism")                       \
    X(410, ConnectorKeyMissing, ADMIN, "Keys", "a job needs a connector key this connector does not hold")                       \
    X(411, ConnectorKeyFailed, OPERATIONAL, "Keys", "a connector key could not be used (token or file unavailable)")             \
    /* general: the plugin update manager (docs/updates.md) */                                                                   \
    X(500, UpdateChecked, OPERATIONAL, "Update", "a repository's index was fetched and verified")                                \
    X(501, UpdateAvailable, OPERATIONAL, "Update", "a repository offers a newer plugin version than the one serving")            \
    X(502, UpdateDownloaded, OPERATIONAL, "Update", "a plugin file was downloaded")                                              \
    X(503, UpdateVerified, OPERATIONAL, "Update", "a downloaded plugin file matches the signed index (size and SHA-256)")        \
    X(504, UpdateRefused, ADMIN, "Update",                                                                                       \
      "an index, root or plugin file was refused (reason field); the serving version is untouched")                              \
    X(505, UpdateInstalled, ADMIN, "Update", "an updated plugin version serves")                                                 \
    X(506, UpdateRolledBack, ADMIN, "Update",                                                                                    \
      "an updated version failed its health or error-rate watch (or an operator asked); the previous version serves again")      \
    X(507, UpdateIndexExpired, OPERATIONAL, "Update",                                                                            \
      "a repository's index has expired: updates frozen, the serving versions keep running")                                     \
    X(508, UpdateCheckFailed, OPERATIONAL, "Update", "a repository could not be reached or read; will retry")                    \
    X(509, UpdateResumed, OPERATIONAL, "Update", "an update interrupted by a stop or crash was resumed or rolled back at start") \
    X(510, UpdateRootRotated, ADMIN, "Update", "a repository's trust root was rotated to a new version")                         \
    X(511, UpdateDeferred, OPERATIONAL, "Update",                                                                                \
      "an available update waits: mode notify, outside the maintenance window, pinned, or outside the rollout share")            \
    X(512, SupportStateChanged, ADMIN, "Update", "a serving plugin's support state changed (supported, outdated, unsupported)")  \
    /* general: the tenant (device-management service) and its credential */                                                     \
    X(600, TenantSignedIn, OPERATIONAL, "Tenant", "a token was obtained from the tenant's identity provider")                    \
    X(601, TenantSignInFailed, ADMIN, "Tenant",                                                                                  \
      "signing in to the tenant failed: the credential was refused or the identity provider did not answer")                     \
    X(602, TenantDiscovered, OPERATIONAL, "Tenant", "the tenant's service endpoints were discovered (or refreshed)")             \
    X(603, TenantDiscoveryFailed, OPERATIONAL, "Tenant", "discovering the tenant's service endpoints failed; will retry")        \
    X(604, TenantCallFailed, OPERATIONAL, "Tenant",                                                                              \
      "a call to the tenant failed (service, HTTP status, client-request-id in the fields)")                                     \
    X(610, TenantCredentialRenewalStarted, OPERATIONAL, "Tenant", "the tenant credential nears expiry; its renewal started")     \
    X(611, TenantCredentialKeyCreated, OPERATIONAL, "Tenant", "a new credential key and certificate were made")                  \
    X(612, TenantCredentialKeyAdded, ADMIN, "Tenant", "the new credential was added to the application (addKey)")                \
    X(613, TenantCredentialSwitched, ADMIN, "Tenant", "the connector signs in with the new credential")                          \
    X(614, TenantCredentialOldKeyRemoved, ADMIN, "Tenant",                                                                       \
      "the previous credential was removed from the application (removeKey)")                                                    \
    X(615, TenantCredentialRenewalFailed, ADMIN, "Tenant", "renewing the tenant credential failed; it is retried")               \
    X(616, TenantCredentialExpiring, ADMIN, "Tenant", "the tenant credential expires soon and has not been renewed")             \
    X(620, TenantOutboxDeadLetter, ADMIN, "Tenant",                                                                              \
      "the tenant refused a notification or result for good; kept in the outbox for inspection, not retried")                    \
    X(621, TenantOutboxBacklog, OPERATIONAL, "Tenant", "a tenant's outbox holds undelivered entries older than a minute")        \
    /* general: who may do what (docs/security.md) */                                                                            \
    X(700, AccessDenied, OPERATIONAL, "Access", "a request lacked the scope its route or command needs (401/403)")               \
    X(701, AdminSocketPeerRefused, ADMIN, "Access",                                                                              \
      "a local user outside root, the service account and [auth] admin_group used the admin socket")                             \
    X(702, CredentialRefused, OPERATIONAL, "Access",                                                                             \
      "a TCP caller presented a bearer token that matches no [auth.tokens] entry")                                               \
    X(703, AdminCommandRun, ADMIN, "Access", "an administrative command ran: who, which command, exit code")                     \
    /* general: a fleet of instances on a shared store (PostgreSQL) */                                                           \
    X(800, StoreConnected, OPERATIONAL, "Fleet", "the shared store answers: backend, database, schema versions")                 \
    X(801, StoreUnavailable, OPERATIONAL, "Fleet", "the shared store cannot be reached; work that needs it waits and retries")   \
    X(802, StoreRecovered, OPERATIONAL, "Fleet", "the shared store answers again after an outage")                               \
    X(803, StoreSchemaTooNew, OPERATIONAL, "Fleet",                                                                              \
      "the shared store has a schema newer than this build; upgrade this instance")                                              \
    X(810, FleetInstanceJoined, OPERATIONAL, "Fleet", "an instance registered in the fleet")                                     \
    X(811, FleetInstanceLeft, OPERATIONAL, "Fleet", "an instance stopped and left the fleet")                                    \
    X(812, FleetInstanceLost, OPERATIONAL, "Fleet", "an instance stopped heartbeating without leaving; its leases are reaped")   \
    X(813, FleetVersionSkew, OPERATIONAL, "Fleet", "instances of the fleet run different versions")                              \
    X(814, FleetFeatureUnserved, OPERATIONAL, "Fleet", "no live instance serves a feature that has queued jobs")                 \
    X(820, LeadershipAcquired, OPERATIONAL, "Fleet",                                                                             \
      "this instance took a singleton duty (e.g. the CRL of a CA) with a new epoch")                                             \
    X(821, LeadershipLost, OPERATIONAL, "Fleet", "this instance lost or gave up a singleton duty")                               \
    X(822, ResultFenced, OPERATIONAL, "Fleet", "a late result was refused: the job's lease had passed to another instance")      \
    /* PKCS */                                                                                                                   \
    X(1000, PkcsRequestSuccess, ADMIN, "PKCS", "PKCS request fulfilled and sent to the tenant")                                  \
    X(1001, PkcsRequestFailure, ADMIN, "PKCS", "PKCS request could not be fulfilled or sent")                                    \
    X(1002, PkcsDownloadSuccess, OPERATIONAL, "PKCS", "downloaded PKCS requests")                                                \
    X(1003, PkcsDownloadFailure, OPERATIONAL, "PKCS", "downloading PKCS requests failed")                                        \
    X(1020, PkcsDownloadedRequest, OPERATIONAL, "PKCS", "one PKCS request downloaded")                                           \
    X(1032, PkcsDigiCertRequest, OPERATIONAL, "PKCS", "PKCS request for a DigiCert CA downloaded")                               \
    X(1050, PkcsIssuedSuccess, OPERATIONAL, "PKCS", "certificate issued")                                                        \
    X(1051, PkcsIssuedFailedAttempt, OPERATIONAL, "PKCS", "issuance failed; will retry")                                         \
    X(1052, PkcsIssuedFailure, OPERATIONAL, "PKCS", "issuance failed")                                                           \
    X(1100, PkcsUploadSuccess, OPERATIONAL, "PKCS", "result uploaded")                                                           \
    X(1101, PkcsUploadFailure, OPERATIONAL, "PKCS", "uploading a result failed")                                                 \
    X(1102, PkcsUploadedRequest, OPERATIONAL, "PKCS", "one result uploaded")                                                     \
    X(1200, PkcsRecryptRequestSuccess, ADMIN, "PKCS", "re-encrypt request processed")                                            \
    X(1201, PkcsRecryptRequestFailure, ADMIN, "PKCS", "re-encrypt request failed")                                               \
    X(1202, PkcsRecryptDownloadSuccess, OPERATIONAL, "PKCS", "downloaded re-encrypt requests")                                   \
    X(1203, PkcsRecryptDownloadFailure, OPERATIONAL, "PKCS", "downloading re-encrypt requests failed")                           \
    X(1220, PkcsRecryptDownloadedRequest, OPERATIONAL, "PKCS", "one re-encrypt request downloaded")                              \
    X(1250, PkcsRecryptReencryptSuccess, OPERATIONAL, "PKCS", "payload re-encrypted")                                            \
    X(1251, PkcsRecryptDecryptSuccess, OPERATIONAL, "PKCS", "escrowed payload decrypted")                                        \
    X(1252, PkcsRecryptDecryptFailure, OPERATIONAL, "PKCS", "escrowed payload could not be decrypted")                           \
    X(1253, PkcsRecryptReencryptFailure, OPERATIONAL, "PKCS", "payload could not be re-encrypted")                               \
    X(1300, PkcsRecryptUploadSuccess, OPERATIONAL, "PKCS", "re-encrypt result uploaded")                                         \
    X(1301, PkcsRecryptUploadFailure, OPERATIONAL, "PKCS", "uploading a re-encrypt result failed")                               \
    X(1302, PkcsRecryptUploadedRequest, OPERATIONAL, "PKCS", "one re-encrypt result uploaded")                                   \
    /* PKCS import */                                                                                                            \
    X(2000, PkcsImportRequestSuccess, ADMIN, "PKCS Import", "imported PFX delivered")                                            \
    X(2001, PkcsImportRequestFailure, ADMIN, "PKCS Import", "imported PFX could not be delivered")                               \
    X(2020, PkcsImportDownloadedRequest, OPERATIONAL, "PKCS Import", "one import request downloaded")                            \
    X(2050, PkcsImportReencryptSuccess, OPERATIONAL, "PKCS Import", "PFX re-encrypted for the device")                           \
    X(2051, PkcsImportReencryptFailedAttempt, OPERATIONAL, "PKCS Import", "re-encryption failed; will retry")                    \
    X(2052, PkcsImportReencryptFailure, OPERATIONAL, "PKCS Import", "re-encryption failed")                                      \
    X(2100, PkcsImportUploadSuccess, OPERATIONAL, "PKCS Import", "import result uploaded")                                       \
    X(2101, PkcsImportUploadFailure, OPERATIONAL, "PKCS Import", "uploading an import result failed")                            \
    X(2102, PkcsImportUploadedRequest, OPERATIONAL, "PKCS Import", "one import result uploaded")                                 \
    X(2202, PkcsImportDownloadSuccess, OPERATIONAL, "PKCS Import", "downloaded import requests")                                 \
    X(2203, PkcsImportDownloadFailure, OPERATIONAL, "PKCS Import", "downloading import requests failed")                         \
    /* revoke */                                                                                                                 \
    X(3000, RevokeRequestSuccess, ADMIN, "Revoke", "certificate revoked and reported")                                           \
    X(3001, RevokeRequestFailure, ADMIN, "Revoke", "revocation failed")                                                          \
    X(3002, RevokeDownloadSuccess, OPERATIONAL, "Revoke", "downloaded revocation requests")                                      \
    X(3003, RevokeDownloadFailure, OPERATIONAL, "Revoke", "downloading revocation requests failed")                              \
    X(3020, RevokeDownloadedRequest, OPERATIONAL, "Revoke", "one revocation request downloaded")                                 \
    X(3032, RevokeDigicertRequest, OPERATIONAL, "Revoke", "revocation forwarded to DigiCert")                                    \
    X(3050, RevokeSuccess, OPERATIONAL, "Revoke", "the CA revoked the certificate")                                              \
    X(3051, RevokeFailure, OPERATIONAL, "Revoke", "the CA did not revoke the certificate")                                       \
    X(3052, RevokeFailedAttempt, OPERATIONAL, "Revoke", "revocation failed; will retry")                                         \
    X(3100, RevokeUploadSuccess, OPERATIONAL, "Revoke", "revocation results uploaded")                                           \
    X(3101, RevokeUploadFailure, OPERATIONAL, "Revoke", "uploading revocation results failed")                                   \
    X(3102, RevokeUploadedRequest, OPERATIONAL, "Revoke", "one revocation result uploaded")                                      \
    /* SCEP */                                                                                                                   \
    X(4000, ScepRequestSuccess, ADMIN, "SCEP", "SCEP certificate issued and the tenant notified")                                \
    X(4001, ScepRequestIssuedFailure, ADMIN, "SCEP", "SCEP request could not be issued")                                         \
    X(4002, ScepRequestUploadFailure, ADMIN, "SCEP", "issued, but the tenant was not notified")                                  \
    X(4003, ScepRequestReceived, OPERATIONAL, "SCEP", "SCEP request received from a device")                                     \
    X(4004, ScepVerifySuccess, OPERATIONAL, "SCEP", "challenge validated with the tenant")                                       \
    X(4005, ScepVerifyFailure, OPERATIONAL, "SCEP", "challenge refused by the tenant")                                           \
    X(4006, ScepIssuedSuccess, OPERATIONAL, "SCEP", "certificate issued")                                                        \
    X(4007, ScepIssuedFailure, OPERATIONAL, "SCEP", "issuance failed")                                                           \
    X(4008, ScepNotifySuccess, OPERATIONAL, "SCEP", "tenant notified")                                                           \
    X(4009, ScepNotifyAttemptFailed, OPERATIONAL, "SCEP", "notifying the tenant failed; will retry")                             \
    X(4010, ScepNotifySaveToDiskFailed, OPERATIONAL, "SCEP", "could not persist the notification: the tenant cannot be told")    \
    /* SCEP renewal (a request authorised by a certificate instead of a challenge) */                                            \
    X(4100, ScepRenewalAuthorized, OPERATIONAL, "SCEP",                                                                          \
      "renewal authorised: signer valid, unrevoked, issued for this profile, same identity, tenant agreed")                      \
    X(4101, ScepRenewalSignerNotTrusted, OPERATIONAL, "SCEP",                                                                    \
      "renewal refused: the signer is self-signed, expired or not from this profile's CA")                                       \
    X(4102, ScepRenewalSignerRevoked, OPERATIONAL, "SCEP", "renewal refused: the CA reports the signer revoked")                 \
    X(4103, ScepRenewalStatusUnknown, OPERATIONAL, "SCEP",                                                                       \
      "renewal refused: the CA could not say whether the signer is revoked (fail closed)")                                       \
    X(4104, ScepRenewalWrongProfile, OPERATIONAL, "SCEP",                                                                        \
      "renewal refused: the signer was not issued by this SCEP server for this profile")                                         \
    X(4105, ScepRenewalIdentityMismatch, OPERATIONAL, "SCEP",                                                                    \
      "renewal refused: the new request's subject or SANs differ from the certificate it renews")                                \
    X(4106, ScepRenewalOutsideWindow, OPERATIONAL, "SCEP",                                                                       \
      "renewal refused: the certificate is not yet within renewal_window_days of expiry")                                        \
    X(4107, ScepRenewalLimitReached, OPERATIONAL, "SCEP", "renewal refused: the enrollment was renewed max_renewals times")      \
    X(4108, ScepRenewalTenantVeto, OPERATIONAL, "SCEP", "renewal refused by the tenant")                                         \
    /* SCEP message algorithms */                                                                                                \
    X(4120, ScepAlgorithmRefused, OPERATIONAL, "SCEP",                                                                           \
      "a request used a digest weaker than the profile's min_digest, or a refused cipher")                                       \
    /* health */                                                                                                                 \
    X(5000, HealthMessageUploadSuccess, OPERATIONAL, "Health", "heartbeat sent to the tenant")                                   \
    X(5001, HealthMessageUploadFailedAttempt, OPERATIONAL, "Health", "heartbeat failed; will retry")                             \
    X(5002, HealthMessageUploadFailure, OPERATIONAL, "Health", "heartbeat failed")

/* CC_EV_<Name> = id */
#define CERTCONN_EVENT_ENUM_ITEM(id, name, channel, category, meaning) CC_EV_##name = (id),
typedef enum cc_event_id { CERTCONN_EVENTS(CERTCONN_EVENT_ENUM_ITEM) } cc_event_id;
#undef CERTCONN_EVENT_ENUM_ITEM

typedef struct cc_event_def {
    uint32_t id;
    const char* name;
    cc_channel channel;
    const char* category;
    const char* meaning;
} cc_event_def;

#define CERTCONN_EVENT_DEF_ITEM(id, name, channel, category, meaning) {id, #name, CC_CHANNEL_##channel, category, meaning},
static const cc_event_def cc_event_defs[] = {CERTCONN_EVENTS(CERTCONN_EVENT_DEF_ITEM)};
#undef CERTCONN_EVENT_DEF_ITEM

static const size_t cc_event_def_count = sizeof(cc_event_defs) / sizeof(cc_event_defs[0]);

/* The definition of `id`, or NULL when unknown. */
static inline const cc_event_def* cc_event_find(uint32_t id) {
    for (size_t i = 0; i < cc_event_def_count; ++i)
        if (cc_event_defs[i].id == id) return &cc_event_defs[i];
    return NULL;
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* CERTCONN_EVENTS_H */
