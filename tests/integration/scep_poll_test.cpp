// SCEP CertPoll (GetCertInitial) against the real daemon, with a client built from OpenSSL
// (ScepClientMessage): PENDING, approval, then SUCCESS; nonces and transactionID per RFC 8894.
#include "ScepClientMessage.hpp"
#include "support/Daemon.hpp"

#include <catch2/catch.hpp>

#include <openssl/pkcs7.h>

using namespace certconn;
using namespace certconn::test;
namespace fs = std::filesystem;

TEST_CASE("SCEP: a pending request is polled with CertPoll until an administrator approves it") {
    TempDir dir;
    install_plugins(dir / "plugins", {"ca-local", "tenant-local", "scep"});
    const fs::path config = dir / "c.toml";
    write_file(config, "[host]\nlisten = \"127.0.0.1:0\"\nplugin_dir = \"plugins\"\nstate_dir = \"state\"\nlog_dir = \"log\"\n"
                       "[tenant]\nplugin = \"local\"\nscep_challenges = { gate = \"letmein\" }\n"
                       "[ca.local]\nplugin = \"local\"\nalgorithm = \"p256\"\n"
                       "[scep.profiles.gate]\npath = \"/gate\"\nca = \"local\"\nrequire_approval = true\n");
    Daemon daemon(config, dir / "daemon.out");
    const auto status = wait_for_status(daemon, config);
    INFO(daemon.output());
    REQUIRE_FALSE(status.empty());
    const auto port = static_cast<std::uint16_t>(status.at("port").as_int64());

    // The RA certificate: the first certificate of GetCACert.
    const auto cacert = http_request(port, "GET", "/gate?operation=GetCACert");
    REQUIRE(cacert.status == 200);
    const auto* p = reinterpret_cast<const unsigned char*>(cacert.body.data());
    PKCS7* p7 = d2i_PKCS7(nullptr, &p, static_cast<long>(cacert.body.size()));
    REQUIRE(p7);
    crypto::Cert ra(X509_dup(sk_X509_value(p7->d.sign->cert, 0)));
    PKCS7_free(p7);

    crypto::PKey device = crypto::generate_key("rsa2048");
    crypto::Cert self = scep::self_signed(device.get(), "CN=poller");
    crypto::Request csr = crypto::load_csr(crypto::make_csr_pem(device.get(), "CN=poller", {}));
    X509_REQ_add1_attr_by_NID(csr.get(), NID_pkcs9_challengePassword, MBSTRING_UTF8, reinterpret_cast<const unsigned char*>("letmein"), -1);
    X509_REQ_sign(csr.get(), device.get(), EVP_sha256());
    unsigned char* der = nullptr;
    const int len = i2d_X509_REQ(csr.get(), &der);
    const std::string csr_der(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
    OPENSSL_free(der);

    auto send = [&](scep::MessageType type, const std::string& tx, const std::string& content) {
        const std::string nonce = crypto::random_bytes(16);
        const auto message = scep::build_request({type, tx, nonce, content, EVP_aes_128_cbc(), EVP_sha512()}, self.get(), device.get(), ra.get());
        const auto answer = http_request(port, "POST", "/gate?operation=PKIOperation", message);
        REQUIRE(answer.status == 200);
        auto reply = scep::read_reply(answer.body, ra.get());
        CHECK(reply.recipient_nonce == nonce);  // senderNonce copied into recipientNonce
        CHECK(reply.transaction_id == tx);      // transactionID echoed
        return reply;
    };

    const std::string tx = "poll-tx-1";
    CHECK(send(scep::MessageType::PKCSReq, tx, csr_der).status == "3");        // PENDING
    CHECK(send(scep::MessageType::CertPoll, tx, std::string("\x30\x00", 2)).status == "3");  // still PENDING
    auto pending = run_cli({"scep", "pending", "--config", config.string()});
    CHECK_THAT(pending.output, Catch::Contains("poll-tx-1  profile gate  subject CN=poller"));
    REQUIRE(run_cli({"scep", "approve", tx, "--config", config.string()}).exit_code == 0);

    const auto done = send(scep::MessageType::CertPoll, tx, std::string("\x30\x00", 2));
    REQUIRE(done.status == "0");  // SUCCESS
    const std::string degenerate = crypto::cms_decrypt(done.envelope, device.get());  // encrypted to the device, AES-128
    p = reinterpret_cast<const unsigned char*>(degenerate.data());
    p7 = d2i_PKCS7(nullptr, &p, static_cast<long>(degenerate.size()));
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
