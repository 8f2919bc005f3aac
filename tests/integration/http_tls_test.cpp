// The daemon's TLS listener seen by third-party clients (openssl s_client, gnutls-cli, curl):
// the Mozilla "intermediate" policy, client certificates from [host.tls] client_ca, and
// certificate reload on SIGHUP.
#include "support/Daemon.hpp"

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <sstream>

using namespace certconn::test;
namespace json = boost::json;

namespace {

struct TlsInstallation {
    TempDir dir;
    std::filesystem::path config = dir / "certconnector.toml";
    std::filesystem::path plugins = dir / "plugins";
    std::filesystem::path log = dir / "log";

    explicit TlsInstallation(bool client_ca) {
        std::filesystem::create_directory(plugins);
        ::chmod(plugins.c_str(), 0755);
        for (const char* good : {"fixture-echo", "fixture-ca", "fixture-tenant"})
            install_fixture(plugins, "good", good);
        // An RSA server certificate, so RSA key exchange (AES128-SHA) is possible in principle and
        // only the cipher policy refuses it; two client CAs with one client certificate each.
        const std::string script =
            "set -e; cd " + shell_quote(dir.path().string()) +
            "\n"
            "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1"
            " -keyout key.pem -out cert.pem\n"
            "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1"
            " -keyout key2.pem -out cert2.pem\n"
            "for c in ca other-ca; do openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2"
            " -subj /CN=$c -keyout $c.key -out $c.pem; done\n"
            "printf 'extendedKeyUsage=clientAuth\\n' > client.ext\n"
            "for pair in client:ca stranger:other-ca; do n=${pair%%:*}; ca=${pair##*:};"
            " openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj \"/O=Example/CN=device-$n\""
            " -keyout $n.key -out $n.csr;"
            " openssl x509 -req -in $n.csr -CA $ca.pem -CAkey $ca.key -CAcreateserial -days 2 -extfile client.ext -out $n.pem; "
            "done\n"
            "chmod 600 *.key key.pem key2.pem\n";
        const auto made = run_shell("bash -c " + shell_quote(script));
        INFO(made.output);
        REQUIRE(made.exit_code == 0);
        write_file(config,
                   "[host]\nlisten = \"127.0.0.1:0\"\nplugin_dir = \"plugins\"\nstate_dir = \"state\"\nlog_dir = \"log\"\n"
                   "[host.tls]\ncertificate = \"cert.pem\"\nprivate_key = \"key.pem\"\n" +
                       std::string(client_ca ? "client_ca = \"ca.pem\"\n" : "") +
                       "[ca.test]\nplugin = \"fixture\"\nlabel = \"issuing\"\npassword = \"x\"\n"
                       "[tenant]\nplugin = \"fixture\"\n"
                       "[echo]\nca = \"test\"\ngreeting = \"hello\"\n");
    }
    std::string path(const char* name) const { return (dir / name).string(); }
    std::string operational() const { return read_file(log / "operational.jsonl"); }
    std::string wait_ready(Daemon& daemon) const {
        json::object status = wait_for_status(daemon, config);
        INFO(daemon.output());
        REQUIRE_FALSE(status.empty());
        return std::to_string(status.at("port").as_int64());
    }
};

/// "openssl s_client <args>" against the port with an empty stdin; output and exit code.
CliResult s_client(const std::string& port, const std::string& args, const std::string& input = "") {
    return run_shell("(printf " + shell_quote(input) + "; sleep 1) | timeout 20 openssl s_client -connect 127.0.0.1:" + port +
                     " " + args);
}

CliResult gnutls(const std::string& port, const std::string& priority, const std::string& extra = "") {
    return run_shell("echo | timeout 20 gnutls-cli --insecure --port " + port + " --priority " + shell_quote(priority) + " " +
                     extra + " 127.0.0.1");
}

std::string sha256_fingerprint_of_file(const std::string& pem) {
    return run_shell("openssl x509 -in " + shell_quote(pem) + " -noout -fingerprint -sha256").output;
}

std::string served_fingerprint(const std::string& port) {
    return run_shell("timeout 20 openssl s_client -connect 127.0.0.1:" + port +
                     " </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256")
        .output;
}

}  // namespace

TEST_CASE("http TLS policy: TLS 1.1, ciphers outside Mozilla intermediate and renegotiation are refused") {
    TlsInstallation inst(false);
    Daemon daemon(inst.config, inst.dir / "daemon.out");
    const std::string port = inst.wait_ready(daemon);

    // Baseline ciphers work, with both clients.
    auto gcm = s_client(port, "-tls1_2 -cipher ECDHE-RSA-AES128-GCM-SHA256");
    CHECK_THAT(gcm.output, Catch::Contains("Cipher is ECDHE-RSA-AES128-GCM-SHA256"));
    auto tls13 = s_client(port, "-tls1_3");
    CHECK_THAT(tls13.output, Catch::Contains("TLSv1.3"));
    auto gnutls_ok = gnutls(port, "NORMAL");
    INFO(gnutls_ok.output);
    CHECK(gnutls_ok.exit_code == 0);
    CHECK_THAT(gnutls_ok.output, Catch::Contains("Handshake was completed"));

    // TLS 1.1: refused by both.
    auto old = s_client(port, "-tls1_1 -cipher DEFAULT:@SECLEVEL=0");
    CHECK(old.exit_code != 0);
    CHECK_THAT(old.output, Catch::Contains("Cipher is (NONE)"));
    auto gnutls_old = gnutls(port, "NORMAL:-VERS-ALL:+VERS-TLS1.1");
    CHECK(gnutls_old.exit_code != 0);

    // TLS 1.2 with RSA key exchange, with CBC, or with plain DHE: not in the baseline.
    for (const char* cipher :
         {"AES128-SHA", "AES256-GCM-SHA384", "ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA384", "DHE-RSA-AES128-GCM-SHA256"}) {
        INFO(cipher);
        auto refused = s_client(port, std::string("-tls1_2 -cipher ") + cipher);
        CHECK(refused.exit_code != 0);
        CHECK_THAT(refused.output, Catch::Contains("Cipher is (NONE)"));
    }
    auto gnutls_cbc = gnutls(port, "NORMAL:-VERS-ALL:+VERS-TLS1.2:-CIPHER-ALL:+AES-128-CBC:+AES-256-CBC");
    CHECK(gnutls_cbc.exit_code != 0);
    auto gnutls_rsa_kx = gnutls(port, "NORMAL:-VERS-ALL:+VERS-TLS1.2:-KX-ALL:+RSA");
    CHECK(gnutls_rsa_kx.exit_code != 0);

    // Renegotiation: a TLS 1.2 client asking for it ("R" in s_client, --rehandshake in
    // gnutls-cli) is refused; the connection does not renegotiate.
    auto reneg = s_client(port, "-tls1_2", "R\n");
    INFO(reneg.output);
    CHECK_THAT(reneg.output, Catch::Contains("RENEGOTIATING"));
    CHECK_THAT(reneg.output, Catch::Contains("no renegotiation"));
    auto gnutls_reneg = gnutls(port, "NORMAL:-VERS-ALL:+VERS-TLS1.2", "--rehandshake");
    INFO(gnutls_reneg.output);
    CHECK(gnutls_reneg.exit_code != 0);
    CHECK_THAT(gnutls_reneg.output, Catch::Contains("No renegotiation is allowed") && Catch::Contains("ReHandshake has failed"));

    // No compression.
    CHECK_THAT(gcm.output, Catch::Contains("Compression: NONE"));

    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
}

TEST_CASE("http TLS client_ca: a client certificate from it is accepted, none is accepted, another CA's is refused") {
    TlsInstallation inst(true);
    Daemon daemon(inst.config, inst.dir / "daemon.out");
    const std::string port = inst.wait_ready(daemon);
    const std::string curl = "curl -sS --max-time 20 --cacert " + inst.path("cert.pem") + " ";
    const std::string url = " https://127.0.0.1:" + port + "/healthz";

    auto good = run_shell(curl + "--cert " + inst.path("client.pem") + " --key " + inst.path("client.key") + url);
    INFO(good.output);
    CHECK(good.exit_code == 0);
    CHECK(good.output == R"({"status":"ok","support":"supported"})");

    auto anonymous = run_shell(curl + url);  // e.g. a SCEP device
    CHECK(anonymous.exit_code == 0);
    CHECK(anonymous.output == R"({"status":"ok","support":"supported"})");

    auto stranger = run_shell(curl + "--cert " + inst.path("stranger.pem") + " --key " + inst.path("stranger.key") + url);
    INFO(stranger.output);
    CHECK(stranger.exit_code != 0);
    CHECK(stranger.output.find(R"({"status":"ok")") == std::string::npos);
    for (const char* version : {"-tls1_2", "-tls1_3"}) {  // refused whichever version verifies it
        INFO(version);
        auto s =
            s_client(port, std::string(version) + " -cert " + inst.path("stranger.pem") + " -key " + inst.path("stranger.key"),
                     "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        CHECK(s.output.find(R"({"status":"ok")") == std::string::npos);
        CHECK_THAT(s.output, Catch::Contains("alert"));
    }
    // The server names the CA it accepts.
    auto names = s_client(port, "-tls1_2");
    CHECK_THAT(names.output, Catch::Contains("Acceptable client certificate CA names") && Catch::Contains("CN = ca"));

    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
    CHECK_THAT(inst.operational(), Catch::Contains("\"client_certificates\":true"));
}

TEST_CASE("http TLS reload: SIGHUP serves a renewed certificate, a broken one is refused with an event and the old one stays") {
    TlsInstallation inst(false);
    Daemon daemon(inst.config, inst.dir / "daemon.out");
    const std::string port = inst.wait_ready(daemon);
    const std::string first = sha256_fingerprint_of_file(inst.path("cert.pem"));
    const std::string second = sha256_fingerprint_of_file(inst.path("cert2.pem"));
    REQUIRE(first != second);
    CHECK(served_fingerprint(port) == first);

    // Renewed in place (as certbot or an ACME client does), then SIGHUP.
    std::filesystem::copy_file(inst.dir / "cert2.pem", inst.dir / "cert.pem", std::filesystem::copy_options::overwrite_existing);
    std::filesystem::copy_file(inst.dir / "key2.pem", inst.dir / "key.pem", std::filesystem::copy_options::overwrite_existing);
    daemon.signal(SIGHUP);
    REQUIRE(eventually([&] { return inst.operational().find("\"name\":\"HttpTlsReloaded\"") != std::string::npos; }));
    CHECK(served_fingerprint(port) == second);

    // A broken certificate: the event names the file, and the renewed one keeps serving.
    write_file(inst.dir / "cert.pem", "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n");
    daemon.signal(SIGHUP);
    REQUIRE(eventually([&] { return inst.operational().find("\"name\":\"HttpTlsReloadFailed\"") != std::string::npos; }));
    CHECK_THAT(inst.operational(), Catch::Contains("TLS certificate " + inst.path("cert.pem")));
    CHECK(served_fingerprint(port) == second);
    auto ok = run_shell("curl -sS --max-time 20 --cacert " + inst.path("cert2.pem") + " https://127.0.0.1:" + port + "/healthz");
    CHECK(ok.output == R"({"status":"ok","support":"supported"})");

    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
}
