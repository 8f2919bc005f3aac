// Publication belongs to the host (issue #11): /crl/, /ca/, /ocsp/ for every configured CA,
// through the CA plugin's query ops, with caching headers; each CA's health from a background
// probe in `status`; the root CRL ceremony of ca-local.
#include "support/Daemon.hpp"

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <map>
#include <memory>

using namespace certconn::test;
namespace json = boost::json;

namespace {

struct Fetched {
    unsigned status = 0;
    std::map<std::string, std::string> headers;  // lower-case names
    std::string body;
    std::string header(const std::string& name) const {
        auto it = headers.find(name);
        return it == headers.end() ? std::string() : it->second;
    }
};

Fetched fetch(std::uint16_t port, const std::string& method, const std::string& target,
              const std::vector<std::pair<std::string, std::string>>& headers = {}, const std::string& body = {}) {
    namespace beast = boost::beast;
    namespace http = beast::http;
    boost::asio::io_context io;
    beast::tcp_stream stream(io);
    stream.connect(boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), port));
    stream.expires_after(std::chrono::seconds(30));
    http::request<http::string_body> req{http::string_to_verb(method), target, 11};
    req.set(http::field::host, "127.0.0.1");
    for (const auto& [n, v] : headers)
        req.set(n, v);
    req.body() = body;
    req.prepare_payload();
    http::write(stream, req);
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.skip(method == "HEAD");
    parser.body_limit(64 * 1024 * 1024);
    http::read(stream, buffer, parser);
    auto res = parser.release();
    Fetched out{static_cast<unsigned>(res.result_int()), {}, res.body()};
    for (const auto& f : res) {
        std::string name(f.name_string());
        for (auto& c : name)
            c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        out.headers[name] = std::string(f.value());
    }
    return out;
}

using CrlPtr = std::unique_ptr<X509_CRL, decltype(&X509_CRL_free)>;
using CertPtr = std::unique_ptr<X509, decltype(&X509_free)>;

CrlPtr crl_of(const std::string& der) {
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    return CrlPtr(d2i_X509_CRL(nullptr, &p, static_cast<long>(der.size())), &X509_CRL_free);
}
CertPtr cert_of(const std::string& der) {
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    return CertPtr(d2i_X509(nullptr, &p, static_cast<long>(der.size())), &X509_free);
}
long crl_number(X509_CRL* crl) {
    auto* n = static_cast<ASN1_INTEGER*>(X509_CRL_get_ext_d2i(crl, NID_crl_number, nullptr, nullptr));
    const long v = n ? ASN1_INTEGER_get(n) : -1;
    ASN1_INTEGER_free(n);
    return v;
}
std::string extension_text(X509* cert, int nid) {
    const int at = X509_get_ext_by_NID(cert, nid, -1);
    if (at < 0) return {};
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), &BIO_free);
    X509V3_EXT_print(bio.get(), X509_get_ext(cert, at), 0, 0);
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(n));
}
long max_age(const std::string& cache_control) {
    const auto at = cache_control.find("max-age=");
    return at == std::string::npos ? -1 : std::stol(cache_control.substr(at + 8));
}

struct Installation {
    TempDir dir;
    std::filesystem::path config = dir / "certconnector.toml";
    std::filesystem::path plugins = dir / "plugins";
    std::filesystem::path marker = dir / "flaky-down";

    Installation() {
        install_plugins(plugins, {"ca-local"});
        install_fixture(plugins, "good", "fixture-ca");
        write_file(config,
                   "[host]\nlisten = \"127.0.0.1:0\"\nplugin_dir = \"plugins\"\nstate_dir = \"state\"\n"
                   "log_dir = \"log\"\npublication_cache_seconds = 120\nca_health_interval_seconds = 5\n"
                   "[ca.local]\nplugin = \"local\"\nalgorithm = \"p256\"\n"
                   "public_base_url = \"http://pki.example.test/\"\n"
                   "[ca.plain]\nplugin = \"fixture\"\nlabel = \"no queries\"\n"
                   "[ca.flaky]\nplugin = \"fixture\"\nlabel = \"health on demand\"\nunavailable_while = \"" +
                       marker.string() + "\"\n");
    }
    json::object status(Daemon& daemon) const {
        json::object s = wait_for_status(daemon, config);
        INFO(daemon.output());
        REQUIRE_FALSE(s.empty());
        return s;
    }
    std::filesystem::path ca_dir() const { return dir / "state" / "plugins" / "ca-local" / "local"; }
};

const json::object* ca_status(const json::object& status, const std::string& name) {
    for (const auto& c : status.at("cas").as_array())
        if (c.as_object().at("name").as_string() == name) return &c.as_object();
    return nullptr;
}

}  // namespace

TEST_CASE("the host publishes each CA's CRLs and certificates with ETag and max-age, OCSP through the query op") {
    Installation inst;
    Daemon daemon(inst.config, inst.dir / "daemon.out");
    const auto port = static_cast<std::uint16_t>(inst.status(daemon).at("port").as_int64());

    // The issuing CA certificate, and the root above it.
    const Fetched issuing = fetch(port, "GET", "/ca/local.crt");
    REQUIRE(issuing.status == 200);
    CHECK(issuing.header("content-type") == "application/pkix-cert");
    CertPtr issuing_cert = cert_of(issuing.body);
    REQUIRE(issuing_cert);
    const Fetched root = fetch(port, "GET", "/ca/local-root.crt");
    REQUIRE(root.status == 200);
    CertPtr root_cert = cert_of(root.body);
    REQUIRE(root_cert);
    CHECK(X509_check_issued(root_cert.get(), root_cert.get()) == X509_V_OK);
    CHECK(X509_check_issued(root_cert.get(), issuing_cert.get()) == X509_V_OK);
    // Whole-chain revocation: the issuing CA names the root's CRL and certificate.
    CHECK_THAT(extension_text(issuing_cert.get(), NID_crl_distribution_points),
               Catch::Contains("http://pki.example.test/crl/local-root.crl"));
    CHECK_THAT(extension_text(issuing_cert.get(), NID_info_access),
               Catch::Contains("CA Issuers - URI:http://pki.example.test/ca/local-root.crt"));

    // The issuing CA's CRL: signed by it, cached with an ETag; If-None-Match gets 304.
    const Fetched crl = fetch(port, "GET", "/crl/local.crl");
    REQUIRE(crl.status == 200);
    CHECK(crl.header("content-type") == "application/pkix-crl");
    CrlPtr parsed = crl_of(crl.body);
    REQUIRE(parsed);
    CHECK(X509_CRL_verify(parsed.get(), X509_get0_pubkey(issuing_cert.get())) == 1);
    const std::string etag = crl.header("etag");
    CHECK(etag.size() > 2);
    CHECK(max_age(crl.header("cache-control")) > 0);
    CHECK(max_age(crl.header("cache-control")) <= 120);
    const Fetched again = fetch(port, "GET", "/crl/local.crl", {{"If-None-Match", etag}});
    CHECK(again.status == 304);
    CHECK(again.body.empty());
    CHECK(again.header("etag") == etag);
    CHECK(fetch(port, "GET", "/crl/local.crl", {{"If-None-Match", "\"something-else\""}}).status == 200);

    // The root's CRL: signed by the root, long-lived.
    const Fetched root_crl = fetch(port, "GET", "/crl/local-root.crl");
    REQUIRE(root_crl.status == 200);
    CrlPtr root_parsed = crl_of(root_crl.body);
    REQUIRE(root_parsed);
    CHECK(X509_CRL_verify(root_parsed.get(), X509_get0_pubkey(root_cert.get())) == 1);
    int days = 0, secs = 0;
    REQUIRE(ASN1_TIME_diff(&days, &secs, nullptr, X509_CRL_get0_nextUpdate(root_parsed.get())));
    CHECK(days >= 179);

    // OCSP through the CA's query op: garbage gets a malformedRequest response, not an error.
    const Fetched bad = fetch(port, "POST", "/ocsp/local", {{"Content-Type", "application/ocsp-request"}}, "not DER");
    REQUIRE(bad.status == 200);
    CHECK(bad.header("content-type") == "application/ocsp-response");
    const auto* p = reinterpret_cast<const unsigned char*>(bad.body.data());
    std::unique_ptr<OCSP_RESPONSE, decltype(&OCSP_RESPONSE_free)> resp(
        d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(bad.body.size())), &OCSP_RESPONSE_free);
    REQUIRE(resp);
    CHECK(OCSP_response_status(resp.get()) == OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
    CHECK(fetch(port, "GET", "/ocsp/local/!!!!").status == 400);

    // A CA whose plugin has no query op: 404 for its CRL and OCSP, never a 500.
    const Fetched plain_crl = fetch(port, "GET", "/crl/plain.crl");
    CHECK(plain_crl.status == 404);
    CHECK_THAT(plain_crl.body, Catch::Contains("CA 'plain' publishes no CRL"));
    const Fetched plain_ocsp = fetch(port, "POST", "/ocsp/plain", {}, "x");
    CHECK(plain_ocsp.status == 404);
    CHECK_THAT(plain_ocsp.body, Catch::Contains("has no OCSP responder"));
    CHECK(fetch(port, "GET", "/ca/plain.crt").status == 404);
    // Unknown names, wrong methods, malformed paths.
    CHECK(fetch(port, "GET", "/crl/nosuch.crl").status == 404);
    CHECK(fetch(port, "GET", "/crl/nosuch-root.crl").status == 404);
    CHECK(fetch(port, "GET", "/crl/local").status == 404);
    CHECK(fetch(port, "GET", "/crl/../status.crl").status == 404);
    CHECK(fetch(port, "POST", "/crl/local.crl").status == 405);
    CHECK(fetch(port, "DELETE", "/ocsp/local").status == 405);
}

TEST_CASE("status shows each CA's health from the background probe, and a failing probe as degraded with event 122") {
    Installation inst;
    Daemon daemon(inst.config, inst.dir / "daemon.out");
    const auto port = static_cast<std::uint16_t>(inst.status(daemon).at("port").as_int64());

    json::object status;
    auto state_of = [&](const std::string& ca) {
        status = inst.status(daemon);
        const auto* c = ca_status(status, ca);
        return c && c->contains("state") ? std::string(c->at("state").as_string()) : std::string();
    };
    REQUIRE(eventually([&] { return state_of("local") == "healthy"; }, std::chrono::seconds(20)));
    CHECK_THAT(std::string(ca_status(status, "local")->at("health").at("detail").as_string()),
               Catch::Contains("key signs, record readable, root CRL valid for"));
    CHECK(ca_status(status, "local")->contains("checked_at"));
    CHECK(state_of("plain") == "open, no health probe");
    CHECK(state_of("flaky") == "healthy");
    CHECK(fetch(port, "GET", "/healthz").body == R"({"status":"ok","support":"supported"})");

    write_file(inst.marker, "down");
    REQUIRE(eventually([&] { return state_of("flaky") == "degraded"; }, std::chrono::seconds(20)));
    CHECK(ca_status(status, "flaky")->at("health").at("detail").as_string() == "fixture backend refuses connections");
    CHECK_THAT(fetch(port, "GET", "/healthz").body, Catch::Contains("\"cas\":\"degraded\""));
    // The human-readable status says so too.
    const CliResult text = run_cli({"status", "--config", inst.config.string()});
    CHECK_THAT(text.output, Catch::Contains("flaky [fixture]: degraded - fixture backend refuses connections"));
    CHECK_THAT(text.output, Catch::Contains("plain [fixture]: open, no health probe"));

    std::filesystem::remove(inst.marker);
    REQUIRE(eventually([&] { return state_of("flaky") == "healthy"; }, std::chrono::seconds(20)));
    const std::string admin = read_file(inst.dir / "log" / "admin.jsonl");
    CHECK_THAT(admin, Catch::Contains("CA 'flaky' (plugin 'fixture') is degraded: fixture backend refuses connections"));
    CHECK_THAT(admin, Catch::Contains("CA 'flaky' (plugin 'fixture') is healthy again"));
    CHECK_THAT(admin, Catch::Contains("\"id\":122,"));
}

TEST_CASE("the root CRL ceremony signs with an offline root key and can list the issuing CA as revoked") {
    Installation inst;
    Daemon daemon(inst.config, inst.dir / "daemon.out");
    const auto port = static_cast<std::uint16_t>(inst.status(daemon).at("port").as_int64());
    const std::string cfg = inst.config.string();
    CrlPtr first = crl_of(fetch(port, "GET", "/crl/local-root.crl").body);
    REQUIRE(first);
    CHECK(crl_number(first.get()) == 1);

    // The root key goes offline (removable media): the ceremony needs it given.
    const auto offline = inst.dir / "offline-root-key.pem";
    std::filesystem::rename(inst.ca_dir() / "root-key.pem", offline);
    CliResult r = run_cli({"ca", "root-crl", "--config", cfg, "--name", "local"});
    CHECK(r.exit_code != 0);
    CHECK_THAT(r.output, Catch::Contains("no root key here (offline?)"));

    // A key that is not the root's is refused, and nothing is published.
    const auto wrong = inst.dir / "wrong.pem";
    REQUIRE(run_shell("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out " + shell_quote(wrong.string()))
                .exit_code == 0);
    r = run_cli({"ca", "root-crl", "--config", cfg, "--name", "local", "--root-key", wrong.string()});
    CHECK(r.exit_code != 0);
    CHECK_THAT(r.output, Catch::Contains("does not belong to the root certificate"));
    r = run_cli({"ca", "root-crl", "--config", cfg, "--name", "nosuch", "--root-key", offline.string()});
    CHECK(r.exit_code != 0);
    CHECK_THAT(r.output, Catch::Contains("no open local CA named 'nosuch'"));

    r = run_cli({"ca", "root-crl", "--config", cfg, "--name", "local", "--root-key", offline.string()});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.output, Catch::Contains("root CRL 2 signed"));
    // Served at once: the host's cache is dropped after an administrative command.
    CrlPtr second = crl_of(fetch(port, "GET", "/crl/local-root.crl").body);
    REQUIRE(second);
    CHECK(crl_number(second.get()) == 2);
    CHECK(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(second.get())) <= 0);  // none (-1: no list at all)

    // After a compromise: the root CRL lists the issuing CA.
    CertPtr issuing = cert_of(fetch(port, "GET", "/ca/local.crt").body);
    REQUIRE(issuing);
    r = run_cli({"ca", "root-crl", "--config", cfg, "--name", "local", "--root-key", offline.string(), "--revoke-issuing"});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    CrlPtr third = crl_of(fetch(port, "GET", "/crl/local-root.crl").body);
    REQUIRE(third);
    CHECK(crl_number(third.get()) == 3);
    X509_REVOKED* entry = nullptr;
    CHECK(X509_CRL_get0_by_cert(third.get(), &entry, issuing.get()) == 1);
}
