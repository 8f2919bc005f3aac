// SCEP CertPoll (GetCertInitial) against the real daemon, with a client built from OpenSSL
// (ScepClientMessage): PENDING, approval, then SUCCESS; nonces and transactionID per RFC 8894.
#include "ScepClientMessage.hpp"
#include "support/Daemon.hpp"

#include <catch2/catch.hpp>

#include <openssl/pkcs7.h>

#include <thread>

using namespace certconn;
using namespace certconn::test;
namespace fs = std::filesystem;

namespace {

/// The RA certificate: the first certificate of GetCACert.
crypto::Cert ra_of(std::uint16_t port, const std::string& path) {
    const auto cacert = http_request(port, "GET", path + "?operation=GetCACert");
    REQUIRE(cacert.status == 200);
    return std::move(scep::getcacert_certificates(cacert.body).front());
}

}  // namespace

TEST_CASE("SCEP: a pending request is polled with CertPoll until an administrator approves it") {
    TempDir dir;
    install_plugins(dir / "plugins", {"ca-local", "tenant-local", "scep"});
    const fs::path config = dir / "c.toml";
    write_file(config,
               "[host]\nlisten = \"127.0.0.1:0\"\nplugin_dir = \"plugins\"\nstate_dir = \"state\"\nlog_dir = \"log\"\n"
               "[tenant]\nplugin = \"local\"\nscep_challenges = { gate = \"letmein\" }\n"
               "[ca.local]\nplugin = \"local\"\nalgorithm = \"p256\"\n"
               "[scep.profiles.gate]\npath = \"/gate\"\nca = \"local\"\nrequire_approval = true\n");
    Daemon daemon(config, dir / "daemon.out");
    const auto status = wait_for_status(daemon, config);
    INFO(daemon.output());
    REQUIRE_FALSE(status.empty());
    const auto port = static_cast<std::uint16_t>(status.at("port").as_int64());

    const crypto::Cert ra = ra_of(port, "/gate");
    crypto::PKey device = crypto::generate_key("rsa2048");
    crypto::Cert self = scep::self_signed(device.get(), "CN=poller");
    const std::string request = scep::csr_with_challenge(device.get(), "poller", "letmein");

    auto send = [&](scep::MessageType type, const std::string& tx, const std::string& content) {
        const std::string nonce = crypto::random_bytes(16);
        const auto message =
            scep::build_request({type, tx, nonce, content, EVP_aes_128_cbc(), EVP_sha512()}, self.get(), device.get(), ra.get());
        const auto answer = http_request(port, "POST", "/gate?operation=PKIOperation", message);
        REQUIRE(answer.status == 200);
        auto reply = scep::read_reply(answer.body, ra.get());
        CHECK(reply.recipient_nonce == nonce);  // senderNonce copied into recipientNonce
        CHECK(reply.transaction_id == tx);      // transactionID echoed
        return reply;
    };

    const std::string tx = "poll-tx-1";
    CHECK(send(scep::MessageType::PKCSReq, tx, request).status == "3");                      // PENDING
    CHECK(send(scep::MessageType::CertPoll, tx, std::string("\x30\x00", 2)).status == "3");  // still PENDING
    auto pending = run_cli({"scep", "pending", "--config", config.string()});
    CHECK_THAT(pending.output, Catch::Contains("poll-tx-1  profile gate  subject CN=poller"));
    REQUIRE(run_cli({"scep", "approve", tx, "--config", config.string()}).exit_code == 0);

    const auto done = send(scep::MessageType::CertPoll, tx, std::string("\x30\x00", 2));
    REQUIRE(done.status == "0");                                                      // SUCCESS
    const std::string degenerate = crypto::cms_decrypt(done.envelope, device.get());  // encrypted to the device, AES-128
    const auto* p = reinterpret_cast<const unsigned char*>(degenerate.data());
    PKCS7* p7 = d2i_PKCS7(nullptr, &p, static_cast<long>(degenerate.size()));
    REQUIRE(p7);
    X509* issued = sk_X509_value(p7->d.sign->cert, 0);
    CHECK(EVP_PKEY_eq(X509_get0_pubkey(issued), device.get()) == 1);
    PKCS7_free(p7);

    CHECK(run_cli({"scep", "approve", tx, "--config", config.string()}).exit_code == 1);  // already decided
    const auto unknown = send(scep::MessageType::CertPoll, "no-such-tx", std::string("\x30\x00", 2));
    CHECK(unknown.status == "2");
    CHECK(unknown.fail_info == "4");  // badCertId

    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
}

TEST_CASE("SCEP: a request the CA holds for approval answers PENDING; CertPoll asks the CA again until it issues or denies") {
    TempDir dir;
    install_plugins(dir / "plugins", {"ca-local", "tenant-local", "scep"});
    install_fixture(dir / "plugins", "good", "fixture-ca");
    const fs::path config = dir / "c.toml", pending = dir / "pending", denied = dir / "denied";
    write_file(config,
               "[host]\nlisten = \"127.0.0.1:0\"\nplugin_dir = \"plugins\"\nstate_dir = \"state\"\nlog_dir = \"log\"\n"
               "[tenant]\nplugin = \"local\"\nscep_challenges = { held = \"letmein\" }\n"
               "[ca.local]\nplugin = \"local\"\nalgorithm = \"p256\"\n"
               "[ca.approving]\nplugin = \"fixture\"\nlabel = \"approving\"\nforward_to = \"local\"\npending_while = \"" +
                   pending.string() + "\"\ndenied_while = \"" + denied.string() +
                   "\"\n"
                   "[scep.profiles.held]\npath = \"/held\"\nca = \"approving\"\n");
    Daemon daemon(config, dir / "daemon.out");
    const auto status = wait_for_status(daemon, config);
    INFO(daemon.output());
    REQUIRE_FALSE(status.empty());
    const auto port = static_cast<std::uint16_t>(status.at("port").as_int64());
    const crypto::Cert ra = ra_of(port, "/held");
    write_file(pending, "held");  // after GetCACert: the profile's RA certificate comes from that CA too
    auto device_send = [&](EVP_PKEY* key, X509* self, scep::MessageType type, const std::string& tx, const std::string& content) {
        const auto message = scep::build_request({type, tx, {}, content, EVP_aes_256_cbc(), EVP_sha256()}, self, key, ra.get());
        const auto answer = http_request(port, "POST", "/held?operation=PKIOperation", message);
        REQUIRE(answer.status == 200);
        return scep::read_reply(answer.body, ra.get());
    };
    const std::string poll_content("\x30\x00", 2);

    crypto::PKey device = crypto::generate_key("rsa2048");
    crypto::Cert self = scep::self_signed(device.get(), "CN=held");
    CHECK(device_send(device.get(), self.get(), scep::MessageType::PKCSReq, "held-1",
                      scep::csr_with_challenge(device.get(), "held", "letmein"))
              .status == "3");  // PENDING
    CHECK(device_send(device.get(), self.get(), scep::MessageType::CertPoll, "held-1", poll_content).status == "3");
    fs::remove(pending);  // approved at the CA
    const auto done = device_send(device.get(), self.get(), scep::MessageType::CertPoll, "held-1", poll_content);
    REQUIRE(done.status == "0");
    const std::string degenerate = crypto::cms_decrypt(done.envelope, device.get());
    const auto* p = reinterpret_cast<const unsigned char*>(degenerate.data());
    std::unique_ptr<PKCS7, crypto::Deleter<PKCS7_free>> p7(d2i_PKCS7(nullptr, &p, static_cast<long>(degenerate.size())));
    REQUIRE(p7);
    CHECK(EVP_PKEY_eq(X509_get0_pubkey(sk_X509_value(p7->d.sign->cert, 0)), device.get()) == 1);

    write_file(pending, "held");
    crypto::PKey second = crypto::generate_key("rsa2048");
    crypto::Cert second_self = scep::self_signed(second.get(), "CN=refused");
    CHECK(device_send(second.get(), second_self.get(), scep::MessageType::PKCSReq, "held-2",
                      scep::csr_with_challenge(second.get(), "refused", "letmein"))
              .status == "3");
    write_file(denied, "no");  // denied at the CA
    const auto refused = device_send(second.get(), second_self.get(), scep::MessageType::CertPoll, "held-2", poll_content);
    CHECK(refused.status == "2");     // FAILURE
    CHECK(refused.fail_info == "2");  // badRequest
    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
}

TEST_CASE("SCEP: GetCert and GetCRL answer from the CA, GetNextCACert serves a configured rollover") {
    TempDir dir;
    install_plugins(dir / "plugins", {"ca-local", "tenant-local", "scep", "revoke"});
    // The rollover CA certificate an administrator prepared.
    crypto::PKey next_key = crypto::generate_key("p256");
    crypto::Cert next_ca = scep::self_signed(next_key.get(), "CN=Next Issuing CA");
    write_file(dir / "next-ca.pem", crypto::certificate_pem(next_ca.get()));
    const fs::path config = dir / "c.toml";
    write_file(config,
               "[host]\nlisten = \"127.0.0.1:0\"\nplugin_dir = \"plugins\"\nstate_dir = \"state\"\nlog_dir = \"log\"\n"
               "[tenant]\nplugin = \"local\"\nscep_challenges = { dev = \"open-sesame\", plain = \"x\" }\n"
               "[ca.local]\nplugin = \"local\"\nalgorithm = \"p256\"\n"
               "[scep.profiles.dev]\npath = \"/dev\"\nca = \"local\"\nnext_ca_certificate = \"" +
                   (dir / "next-ca.pem").string() +
                   "\"\n"
                   "[scep.profiles.plain]\npath = \"/plain\"\nca = \"local\"\n");
    Daemon daemon(config, dir / "daemon.out");
    const auto status = wait_for_status(daemon, config);
    INFO(daemon.output());
    REQUIRE_FALSE(status.empty());
    const auto port = static_cast<std::uint16_t>(status.at("port").as_int64());

    const crypto::Cert ra = ra_of(port, "/dev");
    const auto chain = run_cli({"ca", "export", "--name", "local", "--config", config.string()});
    const crypto::Cert issuing = crypto::load_certificate(chain.output);

    // Enroll once, so there is a certificate to fetch.
    crypto::PKey device = crypto::generate_key("rsa2048");
    crypto::Cert self = scep::self_signed(device.get(), "CN=fetcher");
    auto send = [&](scep::MessageType type, const std::string& tx, const std::string& content) {
        const auto message =
            scep::build_request({type, tx, {}, content, EVP_aes_256_cbc(), EVP_sha256()}, self.get(), device.get(), ra.get());
        const auto answer = http_request(port, "POST", "/dev?operation=PKIOperation", message);
        REQUIRE(answer.status == 200);
        return scep::read_reply(answer.body, ra.get());
    };
    auto open = [&](const scep::ClientReply& reply) {
        const std::string degenerate = crypto::cms_decrypt(reply.envelope, device.get());
        const auto* q = reinterpret_cast<const unsigned char*>(degenerate.data());
        return std::unique_ptr<PKCS7, crypto::Deleter<PKCS7_free>>(d2i_PKCS7(nullptr, &q, static_cast<long>(degenerate.size())));
    };
    const auto enrolled =
        send(scep::MessageType::PKCSReq, "fetch-enroll", scep::csr_with_challenge(device.get(), "fetcher", "open-sesame"));
    REQUIRE(enrolled.status == "0");
    auto issued_p7 = open(enrolled);
    REQUIRE(issued_p7);
    crypto::Cert issued(X509_dup(sk_X509_value(issued_p7->d.sign->cert, 0)));

    SECTION("GetCert returns the certificate named by issuer and serial; an unknown serial is badCertId") {
        const auto got = send(scep::MessageType::GetCert, "fetch-getcert", scep::issuer_and_serial_der(issued.get()));
        REQUIRE(got.status == "0");
        auto got_p7 = open(got);
        REQUIRE(got_p7);
        CHECK(X509_cmp(sk_X509_value(got_p7->d.sign->cert, 0), issued.get()) == 0);

        crypto::Cert other(X509_dup(issued.get()));
        ASN1_INTEGER_set(X509_get_serialNumber(other.get()), 12345);
        const auto unknown = send(scep::MessageType::GetCert, "fetch-unknown", scep::issuer_and_serial_der(other.get()));
        CHECK(unknown.status == "2");
        CHECK(unknown.fail_info == "4");  // badCertId
        const auto foreign = send(scep::MessageType::GetCert, "fetch-foreign", scep::issuer_and_serial_der(next_ca.get()));
        CHECK(foreign.fail_info == "4");  // another issuer
        const auto garbage = send(scep::MessageType::GetCert, "fetch-garbage", "not DER");
        CHECK(garbage.fail_info == "2");  // badRequest
    }

    SECTION("GetCRL returns the CA's signed CRL, which lists a revoked certificate") {
        REQUIRE(run_cli({"submit", "revoke", "--config", config.string(), "--serial", crypto::serial_hex(issued.get()),
                         "--reason", "superseded", "--wait"})
                    .exit_code == 0);
        const auto got = send(scep::MessageType::GetCRL, "fetch-crl", scep::issuer_and_serial_der(issued.get()));
        REQUIRE(got.status == "0");
        auto crl_p7 = open(got);
        REQUIRE(crl_p7);
        REQUIRE(sk_X509_CRL_num(crl_p7->d.sign->crl) == 1);
        X509_CRL* crl = sk_X509_CRL_value(crl_p7->d.sign->crl, 0);
        CHECK(X509_CRL_verify(crl, X509_get0_pubkey(issuing.get())) == 1);
        X509_REVOKED* entry = nullptr;
        CHECK(X509_CRL_get0_by_serial(crl, &entry, X509_get0_serialNumber(issued.get())) == 1);
    }

    SECTION("GetNextCACert: advertised and served where configured, signed by the RA; 404 elsewhere") {
        CHECK_THAT(http_request(port, "GET", "/dev?operation=GetCACaps").body, Catch::Contains("GetNextCACert"));
        CHECK_THAT(http_request(port, "GET", "/plain?operation=GetCACaps").body, !Catch::Contains("GetNextCACert"));
        CHECK(http_request(port, "GET", "/plain?operation=GetNextCACert").status == 404);
        const auto next = http_request(port, "GET", "/dev?operation=GetNextCACert");
        REQUIRE(next.status == 200);
        const auto* q = reinterpret_cast<const unsigned char*>(next.body.data());
        crypto::Cms cms(d2i_CMS_ContentInfo(nullptr, &q, static_cast<long>(next.body.size())));
        REQUIRE(cms);
        STACK_OF(X509)* signer = sk_X509_new_null();
        sk_X509_push(signer, ra.get());
        crypto::Bio content(BIO_new(BIO_s_mem()));
        CHECK(CMS_verify(cms.get(), signer, nullptr, nullptr, content.get(), CMS_NO_SIGNER_CERT_VERIFY | CMS_BINARY) == 1);
        sk_X509_free(signer);
        char* data = nullptr;
        const long n = BIO_get_mem_data(content.get(), &data);
        const auto* r = reinterpret_cast<const unsigned char*>(data);
        std::unique_ptr<PKCS7, crypto::Deleter<PKCS7_free>> inner(d2i_PKCS7(nullptr, &r, n));
        REQUIRE(inner);
        CHECK(X509_cmp(sk_X509_value(inner->d.sign->cert, 0), next_ca.get()) == 0);
    }

    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
}

TEST_CASE("SCEP: over max_concurrent_requests a PKIOperation gets 429 with Retry-After, and the slot comes back") {
    TempDir dir;
    install_plugins(dir / "plugins", {"ca-local", "scep"});
    install_fixture(dir / "plugins", "good", "fixture-tenant");
    const fs::path config = dir / "c.toml";
    write_file(config,
               "[host]\nlisten = \"127.0.0.1:0\"\nplugin_dir = \"plugins\"\nstate_dir = \"state\"\nlog_dir = \"log\"\n"
               "[tenant]\nplugin = \"fixture\"\n[ca.local]\nplugin = \"local\"\nalgorithm = \"p256\"\n"
               "[scep.profiles.one]\npath = \"/one\"\nca = \"local\"\nmax_concurrent_requests = 1\nretry_after_seconds = 7\n");
    Daemon daemon(config, dir / "daemon.out");
    const auto status = wait_for_status(daemon, config);
    INFO(daemon.output());
    REQUIRE_FALSE(status.empty());
    const auto port = static_cast<std::uint16_t>(status.at("port").as_int64());
    const crypto::Cert ra = ra_of(port, "/one");
    auto request = [&](const std::string& cn, const std::string& challenge) {
        crypto::PKey key = crypto::generate_key("rsa2048");
        crypto::Cert self = scep::self_signed(key.get(), "CN=" + cn);
        return scep::build_request(
            {scep::MessageType::PKCSReq, "tx-" + cn, {}, scep::csr_with_challenge(key.get(), cn, challenge), nullptr, nullptr},
            self.get(), key.get(), ra.get());
    };
    const std::string slow = request("slow", "slow:2000");  // the tenant takes 2 s to validate it
    const std::string fast = request("fast", "anything");
    HttpResult first;
    std::thread holder([&] { first = http_request(port, "POST", "/one?operation=PKIOperation", slow); });
    // Wait until the slow request holds the only slot (its validation is logged as received).
    CHECK(eventually([&] { return read_file(dir / "log" / "operational.jsonl").find("tx-slow") != std::string::npos; }));
    const auto refused = http_request(port, "POST", "/one?operation=PKIOperation", fast);
    CHECK(refused.status == 429);
    CHECK(refused.retry_after == "7");
    holder.join();
    CHECK(first.status == 200);
    CHECK(scep::read_reply(first.body, ra.get()).status == "0");
    const auto after = http_request(port, "POST", "/one?operation=PKIOperation", fast);  // the slot is free again
    CHECK(after.status == 200);
    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
}

namespace {

/// A daemon with the fixture tenant (it validates "slow:<ms>" challenges after a pause) and one
/// SCEP profile; `host_extra` and `profile_extra` are appended to [host] and the profile.
struct SlowTenantInstallation {
    TempDir dir;
    fs::path config = dir / "c.toml";
    explicit SlowTenantInstallation(const std::string& host_extra, const std::string& profile_extra) {
        install_plugins(dir / "plugins", {"ca-local", "scep"});
        install_fixture(dir / "plugins", "good", "fixture-tenant");
        write_file(config,
                   "[host]\nlisten = \"127.0.0.1:0\"\nplugin_dir = \"plugins\"\nstate_dir = \"state\"\nlog_dir = \"log\"\n" +
                       host_extra +
                       "[tenant]\nplugin = \"fixture\"\n[ca.local]\nplugin = \"local\"\nalgorithm = \"p256\"\n"
                       "[scep.profiles.one]\npath = \"/one\"\nca = \"local\"\n" +
                       profile_extra);
    }
};

std::string scep_request(const crypto::Cert& ra, const std::string& cn, const std::string& challenge) {
    crypto::PKey key = crypto::generate_key("p256");
    crypto::Cert self = scep::self_signed(key.get(), "CN=" + cn);
    return scep::build_request(
        {scep::MessageType::PKCSReq, "tx-" + cn, {}, scep::csr_with_challenge(key.get(), cn, challenge), nullptr, nullptr},
        self.get(), key.get(), ra.get());
}

}  // namespace

TEST_CASE("SCEP: with the default workers and limit, the per-profile limit is what answers 429") {
    SlowTenantInstallation inst("", "");  // [host] workers and max_concurrent_requests at their defaults
    Daemon daemon(inst.config, inst.dir / "daemon.out");
    const auto status = wait_for_status(daemon, inst.config);
    INFO(daemon.output());
    REQUIRE_FALSE(status.empty());
    const auto port = static_cast<std::uint16_t>(status.at("port").as_int64());
    const crypto::Cert ra = ra_of(port, "/one");
    std::vector<std::thread> holders;
    std::vector<HttpResult> held(6);
    for (int i = 0; i < 6; ++i) {
        const std::string message = scep_request(ra, "slow" + std::to_string(i), "slow:3000");
        holders.emplace_back([&, i, message] {
            held[static_cast<std::size_t>(i)] = http_request(port, "POST", "/one?operation=PKIOperation", message);
        });
    }
    // All six hold a slot once each has been logged as received.
    CHECK(eventually([&] {
        const std::string log = read_file(inst.dir / "log" / "operational.jsonl");
        for (int i = 0; i < 6; ++i)
            if (log.find("tx-slow" + std::to_string(i)) == std::string::npos) return false;
        return true;
    }));
    const auto refused = http_request(port, "POST", "/one?operation=PKIOperation", scep_request(ra, "seventh", "anything"));
    CHECK(refused.status == 429);
    CHECK_FALSE(refused.retry_after.empty());
    for (auto& t : holders)
        t.join();
    for (const auto& r : held)
        CHECK(r.status == 200);
    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
}

TEST_CASE(
    "HTTP: past every worker busy and max_queued_requests waiting, TCP gets 503 with Retry-After and the admin socket still "
    "answers") {
    SlowTenantInstallation inst("workers = 1\nmax_queued_requests = 1\n", "max_concurrent_requests = 100\n");
    Daemon daemon(inst.config, inst.dir / "daemon.out");
    const auto status = wait_for_status(daemon, inst.config);
    INFO(daemon.output());
    REQUIRE_FALSE(status.empty());
    const auto port = static_cast<std::uint16_t>(status.at("port").as_int64());
    const crypto::Cert ra = ra_of(port, "/one");
    const std::string first = scep_request(ra, "running", "slow:4000");
    HttpResult running;
    std::thread a([&] { running = http_request(port, "POST", "/one?operation=PKIOperation", first); });
    CHECK(eventually([&] { return read_file(inst.dir / "log" / "operational.jsonl").find("tx-running") != std::string::npos; }));
    // While the only worker is busy, four more arrive: one can wait, the others must be refused.
    std::vector<HttpResult> more(4);
    std::vector<std::thread> senders;
    for (std::size_t i = 0; i < more.size(); ++i)
        senders.emplace_back([&, i] { more[i] = http_request(port, "GET", "/one?operation=GetCACaps"); });
    for (auto& t : senders)
        t.join();
    std::size_t refused = 0;
    for (const auto& r : more) {
        if (r.status == 503) {
            ++refused;
            CHECK(r.retry_after == "1");
        } else {
            CHECK(r.status == 200);  // the one that waited was served, not dropped
        }
    }
    CHECK(refused >= 2);
    // The administrator is never turned away by the queue bound.
    CHECK(run_cli({"status", "--config", inst.config.string()}).exit_code == 0);
    a.join();
    CHECK(running.status == 200);
    CHECK(http_request(port, "GET", "/one?operation=GetCACaps").status == 200);
    CHECK(read_file(inst.dir / "log" / "operational.jsonl").find("\"id\":209") != std::string::npos);
    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
}
