// What relying parties fetch, published by the host for every configured CA of any plugin
// (issue #11): CRLs, CA certificates and OCSP answers, asked of the CA plugin through
// cc_ca_api.query / describe (abi.h 1.3). Public: relying parties have no credentials.
//
//   GET  /crl/<ca>.crl        {"op":"crl"}                  application/pkix-crl
//   GET  /crl/<ca>-root.crl   {"op":"crl","level":"root"}   application/pkix-crl
//   GET  /ca/<ca>.crt         describe: chain_pem, first    application/pkix-cert
//   GET  /ca/<ca>-root.crt    describe: chain_pem, the self-signed root
//   POST /ocsp/<ca>           {"op":"ocsp","request_der"}   application/ocsp-response
//   GET  /ocsp/<ca>/<base64>  (RFC 6960 A.1)
//
// CRLs and certificates are cached for [host] publication_cache_seconds at most, and a CRL
// never past shortly before its nextUpdate; a revocation through the host drops the CA's CRL,
// and a CRL made before that revocation is then not cached again (the CA may still be making
// the next). Answers carry Cache-Control: max-age and an ETag; If-None-Match gets 304. OCSP
// answers are not cached (nonces).
#pragma once

#include "eventlog/EventLog.hpp"
#include "http/HttpServer.hpp"

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace certconn::host {

class PluginRuntime;

class Publication {
public:
    Publication(PluginRuntime& runtime, EventLog& log, std::chrono::seconds cache_limit);

    /// The answer for a request under /crl/, /ca/ or /ocsp/ (`path` decoded, without the query);
    /// nullopt for any other path.
    std::optional<HttpResponseMessage> handle(const HttpRequestMessage& request, const std::string& path,
                                              const std::string& method);

    /// A revocation reached CA `ca` through the host at `started`: its CRL is fetched anew.
    void revoked(const std::string& ca, std::chrono::system_clock::time_point started);
    /// Drops every cached answer (a reload, an administrative command that may have signed a CRL).
    void invalidate_all();

private:
    struct Entry {
        std::shared_ptr<const std::string> body;
        std::string content_type;
        std::string etag;                               // quoted
        std::chrono::system_clock::time_point expires;  // served from the cache until then
        long long crl_number = -1;                      // CRLs: their cRLNumber, when present
    };
    struct Revocation {
        std::chrono::system_clock::time_point started;  // the last revocation's start
        long long crl_number = -1;                      // the CRL cached when it happened (-1: none)
    };
    enum class Level { issuing, root };

    HttpResponseMessage crl(const HttpRequestMessage& request, const std::string& ca, Level level);
    HttpResponseMessage certificate(const HttpRequestMessage& request, const std::string& ca, Level level);
    HttpResponseMessage ocsp(const std::string& ca, const std::string& request_der);
    /// The cached entry for `key` if still fresh.
    std::optional<Entry> cached(const std::string& key);
    HttpResponseMessage answer(const HttpRequestMessage& request, const Entry& entry);
    /// A plugin error as an HTTP answer: 404 unknown/unsupported, 503 transient, 500 else.
    HttpResponseMessage failure(const std::string& ca, const std::string& what, int status, const std::string& message);
    /// Resolves "<name>" or "<name>-root" to a configured CA and the level; false when none.
    bool resolve(const std::string& name, std::string& ca, Level& level) const;

    PluginRuntime& runtime_;
    EventLog& log_;
    std::chrono::seconds cache_limit_;
    std::mutex mutex_;
    std::map<std::string, Entry> cache_;         // "crl:<ca>:<level>", "crt:<ca>:<level>"
    std::map<std::string, Revocation> revoked_;  // CA -> its last revocation
};

}  // namespace certconn::host
