// The trust boundary (docs/security.md), tried as the users it keeps out: an unprivileged local
// user over loopback TCP, the same user on the admin socket, and TCP callers with a wrong or
// under-scoped token. Every refusal must leave no trace (no job, no challenge, no approval).
#include "ScepClientMessage.hpp"
#include "support/Daemon.hpp"

#include <certconn/sqlite.hpp>

#include <catch2/catch.hpp>

#include <sys/stat.h>

using namespace certconn;
using namespace certconn::test;
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

/// Runs curl as the unprivileged user `nobody`; returns the HTTP status it got (0: no answer).
int curl_as_nobody(const std::string& args) {
    const std::string cmd = "runuser -u nobody -- curl -s -o /dev/null -w '%{http_code}' --max-time 20 " + args + " 2>/dev/null";
    FILE* p = ::popen(cmd.c_str(), "r");
    if (!p) return 0;
    char buf[16] = {};
    const std::size_t n = std::fread(buf, 1, sizeof buf - 1, p);
    ::pclose(p);
    return std::atoi(std::string(buf, n).c_str());
}

std::int64_t count(const fs::path& db_file, const std::string& sql) {
    sqlite::Database db(db_file, false);
    auto s = db.prepare(sql);
    s.step();
    return s.integer(0);
}

std::size_t events_with_id(const fs::path& log_dir, int id) {
    std::size_t n = 0;
    for (const char* f : {"operational.jsonl", "admin.jsonl"}) {
        const std::string text = read_file(log_dir / f);
        for (std::size_t pos = 0; (pos = text.find("\"id\":" + std::to_string(id) + ",", pos)) != std::string::npos; ++pos)
            ++n;
    }
    return n;
}

}  // namespace

TEST_CASE("trust boundary: loopback TCP is anonymous, the admin socket admits only the administrator, tokens are scoped") {
    TempDir dir;
    ::chmod(dir.path().c_str(), 0755);  // nobody must reach the admin socket's directory to be refused by the daemon itself
    install_plugins(dir / "plugins", {"ca-local", "tenant-local", "scep", "pkcs"});
    const fs::path config = dir / "c.toml";
    const std::string base =
        "[host]\nlisten = \"127.0.0.1:0\"\nplugin_dir = \"plugins\"\nstate_dir = \"state\"\nlog_dir = \"log\"\n" +
        test_token_config(R"(["jobs:read"])") +
        "[tenant]\nplugin = \"local\"\nscep_challenges = { gate = \"letmein\" }\n"
        "[ca.local]\nplugin = \"local\"\nalgorithm = \"p256\"\n"
        "[scep.profiles.gate]\npath = \"/gate\"\nca = \"local\"\nrequire_approval = true\n";
    write_file(config, base);
    Daemon daemon(config, dir / "daemon.out");
    const auto status = wait_for_status(daemon, config);
    INFO(daemon.output());
    REQUIRE_FALSE(status.empty());
    const auto port = static_cast<std::uint16_t>(status.at("port").as_int64());
    const std::string url = "http://127.0.0.1:" + std::to_string(port);
    const fs::path state = dir / "state";
    const fs::path jobs_db = state / "plugins" / "tenant-local" / "jobs.db";
    const fs::path scep_db = state / "plugins" / "tenant-local" / "scep.db";
    const fs::path pending_db = state / "plugins" / "feature-scep" / "pending.db";

    // A device's request that waits for an administrator's approval.
    const auto cacert = http_request(port, "GET", "/gate?operation=GetCACert");
    REQUIRE(cacert.status == 200);
    const crypto::Cert ra = std::move(scep::getcacert_certificates(cacert.body).front());
    crypto::PKey device = crypto::generate_key("p256");
    crypto::Cert self = scep::self_signed(device.get(), "CN=waiting");
    const auto message =
        scep::build_request({scep::MessageType::PKCSReq, "tx-waiting", crypto::random_bytes(16),
                             scep::csr_with_challenge(device.get(), "waiting", "letmein"), EVP_aes_128_cbc(), EVP_sha256()},
                            self.get(), device.get(), ra.get());
    REQUIRE(scep::read_reply(http_request(port, "POST", "/gate?operation=PKIOperation", message).body, ra.get()).status == "3");
    auto still_pending = [&] { return count(pending_db, "SELECT COUNT(*) FROM pending WHERE status = 'pending'") == 1; };
    REQUIRE(still_pending());
    const auto challenges_before = count(scep_db, "SELECT COUNT(*) FROM scep_challenges");

    SECTION("an unprivileged local user over loopback TCP gets 401 for every privileged action and leaves no trace") {
        const std::string job = R"('{"feature":"pkcs","request":{"subject":"CN=intruder","device_key_pem":"x"}}')";
        CHECK(curl_as_nobody("-X POST -d " + job + " " + url + "/tenant/v1/jobs") == 401);
        CHECK(curl_as_nobody("-X POST -H 'X-Forwarded-For: 127.0.0.1' -d " + job + " " + url + "/tenant/v1/jobs") == 401);
        CHECK(curl_as_nobody(url + "/tenant/v1/jobs/any") == 401);
        CHECK(curl_as_nobody("-X POST -d '{\"profile\":\"gate\"}' " + url + "/tenant/v1/scep/challenges") == 401);
        CHECK(curl_as_nobody(url + "/scep/v1/pending") == 401);
        CHECK(curl_as_nobody("-X POST -d '{\"transaction_id\":\"tx-waiting\",\"decision\":\"approve\"}' " + url +
                             "/scep/v1/pending/decide") == 401);
        CHECK(curl_as_nobody(url + "/status") == 401);
        CHECK(curl_as_nobody(url + "/admin/commands") == 401);
        CHECK(curl_as_nobody("-X POST -d '{\"command\":\"scep approve\",\"arguments\":{\"transaction\":\"tx-waiting\"}}' " + url +
                             "/admin/command") == 401);
        CHECK(curl_as_nobody(url + "/healthz") == 200);  // public
        CHECK(count(jobs_db, "SELECT COUNT(*) FROM jobs") == 0);
        CHECK(count(scep_db, "SELECT COUNT(*) FROM scep_challenges") == challenges_before);
        CHECK(still_pending());
        CHECK(events_with_id(dir / "log", 700) >= 1);  // AccessDenied (identical ones may be summarised)
    }

    SECTION("a token is held to its scopes; a wrong token is refused; neither leaves a job") {
        const std::string job =
            json::serialize(json::object{{"feature", "pkcs"}, {"request", json::object{{"subject", "CN=x"}}}});
        const auto under_scoped = http_request(port, "POST", "/tenant/v1/jobs", job, kTestToken);
        CHECK(under_scoped.status == 403);
        CHECK_THAT(under_scoped.body, Catch::Contains("jobs:submit") && Catch::Contains("token:test"));
        CHECK(http_request(port, "GET", "/tenant/v1/jobs/none", {}, kTestToken).status == 404);  // jobs:read suffices
        CHECK(http_request(port, "GET", "/scep/v1/pending", {}, kTestToken).status == 403);
        CHECK(http_request(port, "POST", "/tenant/v1/jobs", job, "cct_guessed").status == 401);
        CHECK(http_request(port, "POST", "/tenant/v1/jobs", job, std::string(kTestToken) + "x").status == 401);
        CHECK(count(jobs_db, "SELECT COUNT(*) FROM jobs") == 0);
        CHECK(events_with_id(dir / "log", 702) >= 1);  // CredentialRefused
        const std::string log = read_file(dir / "log" / "operational.jsonl");
        CHECK(log.find(kTestToken) == std::string::npos);  // a token never reaches the log
        CHECK(log.find("cct_guessed") == std::string::npos);
    }

    SECTION("the admin socket refuses a local user outside root, the service account and [auth] admin_group") {
        const fs::path socket = state / "admin.sock";
        ::chmod(state.c_str(), 0711);
        ::chmod(socket.c_str(), 0666);  // only the daemon's SO_PEERCRED check stands between nobody and the CA now
        const std::string unix = "--unix-socket " + shell_quote(socket.string()) + " ";
        CHECK(curl_as_nobody(unix + "http://localhost/status") == 403);
        CHECK(curl_as_nobody(unix + "-X POST -d '{\"command\":\"scep approve\",\"arguments\":{\"transaction\":\"tx-waiting\"}}' "
                                    "http://localhost/admin/command") == 403);
        CHECK(curl_as_nobody(unix + "-X POST -d '{\"transaction_id\":\"tx-waiting\",\"decision\":\"approve\"}' "
                                    "http://localhost/scep/v1/pending/decide") == 403);
        CHECK(still_pending());
        CHECK(events_with_id(dir / "log", 701) >= 1);  // AdminSocketPeerRefused
        const std::string cli = "runuser -u nobody -- " + shell_quote(CERTCONNECTOR_BIN) + " scep pending --socket " +
                                shell_quote(socket.string()) + " 2>&1";
        CHECK(std::system((cli + " >/dev/null").c_str()) != 0);

        // nobody's group becomes the admin group: the same user is now an administrator.
        write_file(config, base + "[auth]\nadmin_group = \"nogroup\"\n");
        daemon.signal(SIGHUP);
        REQUIRE(eventually([&] { return curl_as_nobody(unix + "http://localhost/status") == 200; }));
        CHECK(std::system((cli + " | grep -q tx-waiting").c_str()) == 0);
        // The admin socket holds every scope; audit event 703 names the user.
        const std::string approve = "runuser -u nobody -- " + shell_quote(CERTCONNECTOR_BIN) +
                                    " scep approve tx-waiting --socket " + shell_quote(socket.string()) + " >/dev/null 2>&1";
        CHECK(std::system(approve.c_str()) == 0);
        CHECK_FALSE(still_pending());
        CHECK(events_with_id(dir / "log", 703) >= 1);
    }

    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
}

TEST_CASE(
    "trust boundary: a TLS client certificate mapped in [auth.certificates] holds its scopes and an unmapped one stays "
    "anonymous") {
    TempDir dir;
    install_plugins(dir / "plugins", {"ca-local", "tenant-local"});
    const std::string script = "set -e; cd " + shell_quote(dir.path().string()) +
                               "\n"
                               "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1"
                               " -addext subjectAltName=IP:127.0.0.1 -keyout key.pem -out cert.pem 2>/dev/null\n"
                               "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=clients "
                               "-keyout ca.key -out ca.pem 2>/dev/null\n"
                               "printf 'extendedKeyUsage=clientAuth\\n' > client.ext\n"
                               "for n in mdm device; do openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "
                               "/CN=$n -keyout $n.key -out $n.csr 2>/dev/null;"
                               " openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile "
                               "client.ext -out $n.pem 2>/dev/null; done\n"
                               "chmod 600 *.key key.pem\n"
                               "openssl x509 -in mdm.pem -outform DER | sha256sum | cut -d' ' -f1 > mdm.sha256\n";
    const auto made = run_shell("bash -c " + shell_quote(script));
    INFO(made.output);
    REQUIRE(made.exit_code == 0);
    std::string digest = read_file(dir / "mdm.sha256");
    digest.erase(digest.find_last_not_of("\n ") + 1);
    const fs::path config = dir / "c.toml";
    write_file(config,
               "[host]\nlisten = \"127.0.0.1:0\"\nplugin_dir = \"plugins\"\nstate_dir = \"state\"\nlog_dir = \"log\"\n"
               "[host.tls]\ncertificate = \"cert.pem\"\nprivate_key = \"key.pem\"\nclient_ca = \"ca.pem\"\n"
               "[auth.certificates.mdm]\nsha256 = \"" +
                   digest +
                   "\"\nscopes = [\"jobs:submit\"]\n"
                   "[tenant]\nplugin = \"local\"\n[ca.local]\nplugin = \"local\"\nalgorithm = \"p256\"\n");
    Daemon daemon(config, dir / "daemon.out");
    const auto status = wait_for_status(daemon, config);
    INFO(daemon.output());
    REQUIRE_FALSE(status.empty());
    const std::string url = "https://127.0.0.1:" + std::to_string(status.at("port").as_int64());
    auto curl = [&](const std::string& client, const std::string& method, const std::string& path) {
        const std::string cert = client.empty() ? ""
                                                : " --cert " + shell_quote((dir / (client + ".pem")).string()) + " --key " +
                                                      shell_quote((dir / (client + ".key")).string());
        const auto r =
            run_shell("curl -s -o /dev/null -w '%{http_code}' --cacert " + shell_quote((dir / "cert.pem").string()) + cert +
                      " -X " + method + " -d '{\"feature\":\"pkcs\",\"request\":{\"subject\":\"CN=x\"}}' " + url + path);
        return r.output;
    };
    CHECK(curl("mdm", "POST", "/tenant/v1/jobs") == "201");
    CHECK(curl("mdm", "GET", "/status") == "403");              // mapped, but without the scope
    CHECK(curl("device", "POST", "/tenant/v1/jobs") == "401");  // verified by the same CA, not mapped: anonymous
    CHECK(curl("", "POST", "/tenant/v1/jobs") == "401");
    CHECK_THAT(read_file(dir / "log" / "operational.jsonl"), Catch::Contains("certificate:mdm"));
    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
}
