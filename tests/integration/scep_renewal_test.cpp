// SCEP renewal is not a back door: a request authorised by a certificate instead of a challenge
// needs a valid, unrevoked certificate this profile issued, the same identity, a renewal window
// and budget, and the tenant's consent; a challenge makes it an enrollment. Also SCEP digest and
// decryption hygiene. All against the real daemon; privileged steps through the CLI.
#include "support/ScepRenewal.hpp"

#include <catch2/catch.hpp>

using namespace certconn;
using namespace certconn::test;
namespace fs = std::filesystem;

namespace {

struct Device {
    crypto::PKey key;
    crypto::Cert cert;
};

const std::string kHost =
    "[host]\nlisten = \"127.0.0.1:0\"\nplugin_dir = \"plugins\"\nstate_dir = \"state\"\nlog_dir = \"log\"\n";

/// Enrolls with a challenge; the device signs with a self-signed certificate, as on first contact.
Device enroll(const ScepEndpoint& ep, const std::string& subject, const std::vector<std::string>& sans,
              const std::string& challenge, const std::string& tx) {
    Device d{crypto::generate_key("rsa2048"), {}};
    crypto::Cert self = scep::self_signed(d.key.get(), subject);
    const auto reply =
        ep.send(scep::MessageType::PKCSReq, tx, scep_csr(d.key.get(), subject, sans, challenge), self.get(), d.key.get());
    REQUIRE(reply.status == "0");
    d.cert = issued_certificate(reply, d.key.get());
    return d;
}

/// A renewal of `old` for `subject`/`sans` with a new key (no challenge), signed by the old certificate.
scep::ClientReply renew(const ScepEndpoint& ep, const Device& old, const std::string& subject,
                        const std::vector<std::string>& sans, const std::string& tx, Device* renewed = nullptr,
                        scep::MessageType type = scep::MessageType::RenewalReq) {
    Device next{crypto::generate_key("rsa2048"), {}};
    auto reply = ep.send(type, tx, scep_csr(next.key.get(), subject, sans, std::nullopt), old.cert.get(), old.key.get());
    if (renewed && reply.status == "0") {
        next.cert = issued_certificate(reply, old.key.get());  // the CertRep is encrypted to the signer
        *renewed = std::move(next);
    }
    return reply;
}

}  // namespace

TEST_CASE(
    "SCEP renewal: only an unrevoked certificate of the same profile renews, to the same identity, within window and budget") {
    TempDir dir;
    install_plugins(dir / "plugins", {"ca-local", "tenant-local", "scep", "revoke"});
    const fs::path config = dir / "c.toml";
    write_file(config,
               kHost +
                   "[tenant]\nplugin = \"local\"\nscep_challenges = { devices = \"dev-secret\", other = \"other-secret\", "
                   "tight = \"tight-secret\", limited = \"lim-secret\", subset = \"sub-secret\" }\n"
                   "[ca.local]\nplugin = \"local\"\nalgorithm = \"p256\"\n"
                   "[scep.profiles.devices]\npath = \"/devices\"\nca = \"local\"\n"
                   "[scep.profiles.other]\npath = \"/other\"\nca = \"local\"\n"
                   "[scep.profiles.tight]\npath = \"/tight\"\nca = \"local\"\nrenewal_window_days = 30\n"
                   "[scep.profiles.limited]\npath = \"/limited\"\nca = \"local\"\nmax_renewals = 2\n"
                   "[scep.profiles.subset]\npath = \"/subset\"\nca = \"local\"\nrenewal_allow_san_subset = true\n");
    Daemon daemon(config, dir / "daemon.out");
    const auto status = wait_for_status(daemon, config);
    INFO(daemon.output());
    REQUIRE_FALSE(status.empty());
    const auto port = static_cast<std::uint16_t>(status.at("port").as_int64());
    const fs::path ops = dir / "log" / "operational.jsonl";
    const fs::path admin = dir / "log" / "admin.jsonl";
    const auto devices = ScepEndpoint::of(port, "/devices");

    const std::vector<std::string> alice_sans = {"dns:alice.example.com", "upn:alice@example.com"};
    const Device alice = enroll(devices, "CN=alice", alice_sans, "dev-secret", "alice-enroll");

    SECTION("a good renewal succeeds (same subject and SANs in any order, new key, RenewalReq or PKCSReq without challenge)") {
        Device renewed;
        const auto r =
            renew(devices, alice, "CN=alice", {"upn:alice@example.com", "dns:alice.example.com"}, "alice-renew", &renewed);
        REQUIRE(r.status == "0");
        CHECK(crypto::serial_hex(renewed.cert.get()) != crypto::serial_hex(alice.cert.get()));
        CHECK(EVP_PKEY_eq(X509_get0_pubkey(renewed.cert.get()), renewed.key.get()) == 1);
        CHECK(logged(ops, CC_EV_ScepRenewalAuthorized, "alice-renew"));
        // macOS renews with a PKCSReq signed by the old certificate and no challenge.
        const auto mac =
            renew(devices, renewed, "CN=alice", alice_sans, "alice-renew-pkcsreq", nullptr, scep::MessageType::PKCSReq);
        CHECK(mac.status == "0");
        CHECK(logged(ops, CC_EV_ScepRenewalAuthorized, "alice-renew-pkcsreq"));
    }

    SECTION("a renewal adding a SAN (another user's UPN) is refused with badRequest, naming the SAN") {
        const auto r = renew(devices, alice, "CN=alice",
                             {"dns:alice.example.com", "upn:alice@example.com", "upn:admin@example.com"}, "alice-extra-san");
        CHECK(r.status == "2");
        CHECK(r.fail_info == "2");  // badRequest
        REQUIRE(logged(ops, CC_EV_ScepRenewalIdentityMismatch, "alice-extra-san"));
        CHECK_THAT(logged_message(ops, CC_EV_ScepRenewalIdentityMismatch, "alice-extra-san"),
                   Catch::Contains("admin@example.com"));
        CHECK(logged(admin, CC_EV_ScepRequestIssuedFailure, "alice-extra-san"));
        CHECK(logged_message(ops, CC_EV_ScepIssuedSuccess, "alice-extra-san").empty());  // nothing issued
        // Dropping a SAN needs renewal_allow_san_subset; changing the subject is never allowed.
        const auto fewer = renew(devices, alice, "CN=alice", {"dns:alice.example.com"}, "alice-fewer-sans");
        CHECK(fewer.fail_info == "2");
        CHECK(logged(ops, CC_EV_ScepRenewalIdentityMismatch, "alice-fewer-sans"));
        const auto other_subject = renew(devices, alice, "CN=admin", alice_sans, "alice-other-subject");
        CHECK(other_subject.fail_info == "2");
        CHECK(logged(ops, CC_EV_ScepRenewalIdentityMismatch, "alice-other-subject"));
    }

    SECTION("with renewal_allow_san_subset fewer SANs renew, an extra one still does not") {
        const auto subset = ScepEndpoint::of(port, "/subset");
        const Device sam = enroll(subset, "CN=sam", {"dns:sam.example.com", "dns:sam2.example.com"}, "sub-secret", "sam-enroll");
        CHECK(renew(subset, sam, "CN=sam", {"dns:sam.example.com"}, "sam-fewer").status == "0");
        const auto extra = renew(subset, sam, "CN=sam", {"dns:sam.example.com", "dns:admin.example.com"}, "sam-extra");
        CHECK(extra.fail_info == "2");
        CHECK(logged(ops, CC_EV_ScepRenewalIdentityMismatch, "sam-extra"));
    }

    SECTION("a certificate revoked for keyCompromise cannot renew itself (badCertId, naming the reason)") {
        REQUIRE(run_cli({"submit", "revoke", "--config", config.string(), "--serial", crypto::serial_hex(alice.cert.get()),
                         "--reason", "keyCompromise", "--wait"})
                    .exit_code == 0);
        const auto r = renew(devices, alice, "CN=alice", alice_sans, "alice-revoked");
        CHECK(r.status == "2");
        CHECK(r.fail_info == "4");  // badCertId
        REQUIRE(logged(ops, CC_EV_ScepRenewalSignerRevoked, "alice-revoked"));
        CHECK_THAT(logged_message(ops, CC_EV_ScepRenewalSignerRevoked, "alice-revoked"), Catch::Contains("keyCompromise"));
        CHECK(logged(admin, CC_EV_ScepRequestIssuedFailure, "alice-revoked"));
    }

    SECTION("a certificate issued for another SCEP profile of the same CA does not renew here (badCertId)") {
        const auto other = ScepEndpoint::of(port, "/other");
        const Device bob = enroll(other, "CN=bob", {}, "other-secret", "bob-enroll");
        const auto r = renew(devices, bob, "CN=bob", {}, "bob-wrong-profile");
        CHECK(r.status == "2");
        CHECK(r.fail_info == "4");
        REQUIRE(logged(ops, CC_EV_ScepRenewalWrongProfile, "bob-wrong-profile"));
        CHECK_THAT(logged_message(ops, CC_EV_ScepRenewalWrongProfile, "bob-wrong-profile"), Catch::Contains("'other'"));
        CHECK(renew(other, bob, "CN=bob", {}, "bob-right-profile").status == "0");  // its own profile renews it
    }

    SECTION("a renewal before renewal_window_days of expiry is refused (badRequest)") {
        const auto tight = ScepEndpoint::of(port, "/tight");
        const Device dave = enroll(tight, "CN=dave", {}, "tight-secret", "dave-enroll");  // valid 365 days, window 30
        const auto r = renew(tight, dave, "CN=dave", {}, "dave-early");
        CHECK(r.status == "2");
        CHECK(r.fail_info == "2");
        CHECK(logged(ops, CC_EV_ScepRenewalOutsideWindow, "dave-early"));
    }

    SECTION("max_renewals bounds the renewals of one enrollment, along a chain and from its first certificate") {
        const auto limited = ScepEndpoint::of(port, "/limited");
        const Device erin = enroll(limited, "CN=erin", {"dns:erin.example.com"}, "lim-secret", "erin-enroll");
        Device r1, r2;
        REQUIRE(renew(limited, erin, "CN=erin", {"dns:erin.example.com"}, "erin-r1", &r1).status == "0");
        REQUIRE(renew(limited, r1, "CN=erin", {"dns:erin.example.com"}, "erin-r2", &r2).status == "0");
        const auto third = renew(limited, r2, "CN=erin", {"dns:erin.example.com"}, "erin-r3");
        CHECK(third.status == "2");
        CHECK(third.fail_info == "2");
        REQUIRE(logged(ops, CC_EV_ScepRenewalLimitReached, "erin-r3"));
        CHECK_THAT(logged_message(ops, CC_EV_ScepRenewalLimitReached, "erin-r3"), Catch::Contains("max_renewals = 2"));
        const auto fork = renew(limited, erin, "CN=erin", {"dns:erin.example.com"}, "erin-fork");  // the first certificate again
        CHECK(fork.fail_info == "2");
        CHECK(logged(ops, CC_EV_ScepRenewalLimitReached, "erin-fork"));
    }

    SECTION("a PKCSReq signed by an existing certificate but carrying a challenge is an enrollment, the challenge decides") {
        Device next{crypto::generate_key("rsa2048"), {}};
        const auto wrong = devices.send(scep::MessageType::PKCSReq, "alice-wrong-challenge",
                                        scep_csr(next.key.get(), "CN=alice", alice_sans, std::string("not-the-secret")),
                                        alice.cert.get(), alice.key.get());
        CHECK(wrong.status == "2");
        CHECK(wrong.fail_info == "2");  // badRequest, as any enrollment with a wrong challenge
        CHECK(logged(ops, CC_EV_ScepVerifyFailure, "alice-wrong-challenge"));
        CHECK(logged_message(ops, CC_EV_ScepRenewalAuthorized, "alice-wrong-challenge").empty());
        // With the right challenge it enrolls, even for another subject: it is not a renewal.
        const auto right = devices.send(scep::MessageType::PKCSReq, "alice-right-challenge",
                                        scep_csr(next.key.get(), "CN=alice-laptop", {}, std::string("dev-secret")),
                                        alice.cert.get(), alice.key.get());
        CHECK(right.status == "0");
        CHECK(logged(ops, CC_EV_ScepVerifySuccess, "alice-right-challenge"));
        CHECK(logged_message(ops, CC_EV_ScepRenewalAuthorized, "alice-right-challenge").empty());
    }

    SECTION("a RenewalReq signed by a self-signed certificate is refused (badMessageCheck)") {
        crypto::PKey key = crypto::generate_key("rsa2048");
        Device stranger{std::move(key), {}};
        stranger.cert = scep::self_signed(stranger.key.get(), "CN=alice");
        const auto r = renew(devices, stranger, "CN=alice", alice_sans, "stranger-renewal");
        CHECK(r.status == "2");
        CHECK(r.fail_info == "1");
        CHECK(logged(ops, CC_EV_ScepRenewalSignerNotTrusted, "stranger-renewal"));
    }

    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
}

TEST_CASE("SCEP renewal: the tenant can veto every renewal (tenant-local allow_renewal = false)") {
    TempDir dir;
    install_plugins(dir / "plugins", {"ca-local", "tenant-local", "scep"});
    const fs::path config = dir / "c.toml";
    write_file(config, kHost +
                           "[tenant]\nplugin = \"local\"\nallow_renewal = false\nscep_challenges = { devices = \"dev-secret\" }\n"
                           "[ca.local]\nplugin = \"local\"\nalgorithm = \"p256\"\n"
                           "[scep.profiles.devices]\npath = \"/devices\"\nca = \"local\"\n");
    Daemon daemon(config, dir / "daemon.out");
    const auto status = wait_for_status(daemon, config);
    INFO(daemon.output());
    REQUIRE_FALSE(status.empty());
    const auto port = static_cast<std::uint16_t>(status.at("port").as_int64());
    const fs::path ops = dir / "log" / "operational.jsonl";
    const auto devices = ScepEndpoint::of(port, "/devices");

    const Device frank =
        enroll(devices, "CN=frank", {"dns:frank.example.com"}, "dev-secret", "frank-enroll");  // enrollment still works
    const auto r = renew(devices, frank, "CN=frank", {"dns:frank.example.com"}, "frank-renew");
    CHECK(r.status == "2");
    CHECK(r.fail_info == "2");
    REQUIRE(logged(ops, CC_EV_ScepRenewalTenantVeto, "frank-renew"));
    CHECK_THAT(logged_message(ops, CC_EV_ScepRenewalTenantVeto, "frank-renew"), Catch::Contains("RenewalNotAllowed"));
    CHECK(logged(dir / "log" / "admin.jsonl", CC_EV_ScepRequestIssuedFailure, "frank-renew"));

    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
}

TEST_CASE("SCEP renewal: a CA that cannot say whether the signer is revoked refuses the renewal (fail closed)") {
    TempDir dir;
    install_plugins(dir / "plugins", {"ca-local", "tenant-local", "scep"});
    install_fixture(dir / "plugins", "good", "fixture-ca");  // forwards issuance to ca-local, answers no query
    const fs::path config = dir / "c.toml";
    write_file(config, kHost +
                           "[tenant]\nplugin = \"local\"\nscep_challenges = { front = \"f\" }\n"
                           "[ca.local]\nplugin = \"local\"\nalgorithm = \"p256\"\n"
                           "[ca.front]\nplugin = \"fixture\"\nlabel = \"no queries\"\nforward_to = \"local\"\n"
                           "[scep.profiles.front]\npath = \"/front\"\nca = \"front\"\n");
    Daemon daemon(config, dir / "daemon.out");
    const auto status = wait_for_status(daemon, config);
    INFO(daemon.output());
    REQUIRE_FALSE(status.empty());
    const auto port = static_cast<std::uint16_t>(status.at("port").as_int64());
    const fs::path ops = dir / "log" / "operational.jsonl";
    const auto front = ScepEndpoint::of(port, "/front");

    const Device gina = enroll(front, "CN=gina", {}, "f", "gina-enroll");
    const auto r = renew(front, gina, "CN=gina", {}, "gina-renew");
    CHECK(r.status == "2");
    CHECK(r.fail_info == "4");  // badCertId
    REQUIRE(logged(ops, CC_EV_ScepRenewalStatusUnknown, "gina-renew"));
    CHECK_THAT(logged_message(ops, CC_EV_ScepRenewalStatusUnknown, "gina-renew"),
               Catch::Contains("cannot tell whether it is revoked"));

    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
}

namespace {

/// The digest algorithm the CertRep's signer used.
int reply_digest_nid(const std::string& der) {
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    crypto::Cms cms(d2i_CMS_ContentInfo(nullptr, &p, static_cast<long>(der.size())));
    if (!cms) return NID_undef;
    CMS_SignerInfo* si = sk_CMS_SignerInfo_value(CMS_get0_SignerInfos(cms.get()), 0);
    X509_ALGOR* alg = nullptr;
    CMS_SignerInfo_get0_algs(si, nullptr, nullptr, &alg, nullptr);
    const ASN1_OBJECT* oid = nullptr;
    X509_ALGOR_get0(&oid, nullptr, nullptr, alg);
    return OBJ_obj2nid(oid);
}

}  // namespace

// (No ';' or '"' in test names: catch_discover_tests would split or mangle them for ctest.)
TEST_CASE(
    "SCEP digests: MD5 refused everywhere, SHA-1 only with min_digest sha1, replies never signed with MD5, "
    "decryption failures answer alike") {
    TempDir dir;
    install_plugins(dir / "plugins", {"ca-local", "tenant-local", "scep"});
    const fs::path config = dir / "c.toml";
    write_file(config, kHost +
                           "[tenant]\nplugin = \"local\"\nscep_challenges = { strict = \"s\", legacy = \"l\" }\n"
                           "[ca.local]\nplugin = \"local\"\nalgorithm = \"p256\"\n"
                           "[scep.profiles.strict]\npath = \"/strict\"\nca = \"local\"\n"
                           "[scep.profiles.legacy]\npath = \"/legacy\"\nca = \"local\"\nmin_digest = \"sha1\"\n");
    Daemon daemon(config, dir / "daemon.out");
    const auto status = wait_for_status(daemon, config);
    INFO(daemon.output());
    REQUIRE_FALSE(status.empty());
    const auto port = static_cast<std::uint16_t>(status.at("port").as_int64());
    const fs::path ops = dir / "log" / "operational.jsonl";
    const auto strict = ScepEndpoint::of(port, "/strict");
    const auto legacy = ScepEndpoint::of(port, "/legacy");

    // GetCACaps advertises only what the profile accepts.
    CHECK_THAT(http_request(port, "GET", "/strict?operation=GetCACaps").body, !Catch::Contains("SHA-1"));
    CHECK_THAT(http_request(port, "GET", "/legacy?operation=GetCACaps").body, Catch::Contains("SHA-1"));

    crypto::PKey key = crypto::generate_key("rsa2048");
    crypto::Cert self = scep::self_signed(key.get(), "CN=old-client");
    auto raw = [&](const ScepEndpoint& ep, const std::string& tx, const std::string& content, const EVP_MD* md,
                   X509* recipient = nullptr) {
        const auto message = scep::build_request({scep::MessageType::PKCSReq, tx, {}, content, EVP_aes_256_cbc(), md}, self.get(),
                                                 key.get(), recipient ? recipient : ep.ra.get());
        const auto answer = http_request(port, "POST", ep.path + "?operation=PKIOperation", message);
        REQUIRE(answer.status == 200);
        return answer.body;
    };

    SECTION("SHA-1 is refused by default (badAlg, signed with SHA-256) and accepted with min_digest = sha1") {
        const std::string refused =
            raw(strict, "sha1-strict", scep_csr(key.get(), "CN=old-client", {}, std::string("s")), EVP_sha1());
        const auto r = scep::read_reply(refused, strict.ra.get());
        CHECK(r.status == "2");
        CHECK(r.fail_info == "0");  // badAlg
        CHECK(reply_digest_nid(refused) == NID_sha256);
        CHECK(logged(ops, CC_EV_ScepAlgorithmRefused, "sha1-strict"));

        const std::string accepted =
            raw(legacy, "sha1-legacy", scep_csr(key.get(), "CN=old-client", {}, std::string("l")), EVP_sha1());
        CHECK(scep::read_reply(accepted, legacy.ra.get()).status == "0");
        CHECK(reply_digest_nid(accepted) == NID_sha1);  // answered with the client's digest
    }

    SECTION("MD5 is refused even where SHA-1 is allowed, and the refusal is not signed with MD5") {
        for (const auto* ep : {&strict, &legacy}) {
            const std::string tx = "md5" + ep->path;
            const std::string body = raw(*ep, tx, scep_csr(key.get(), "CN=old-client", {}, std::string("l")), EVP_md5());
            const auto r = scep::read_reply(body, ep->ra.get());
            CHECK(r.status == "2");
            CHECK(r.fail_info == "0");
            CHECK(reply_digest_nid(body) == NID_sha256);
            CHECK(logged(ops, CC_EV_ScepAlgorithmRefused, tx));
        }
    }

    SECTION("a CSR signed with SHA-1 inside a SHA-256 message is refused by default") {
        const std::string body =
            raw(strict, "sha1-csr", scep_csr(key.get(), "CN=old-client", {}, std::string("s"), EVP_sha1()), EVP_sha256());
        const auto r = scep::read_reply(body, strict.ra.get());
        CHECK(r.fail_info == "0");
        CHECK(logged(ops, CC_EV_ScepAlgorithmRefused, "sha1-csr"));
    }

    SECTION("an envelope for another recipient and one that holds no CSR get the same badMessageCheck CertRep") {
        crypto::PKey other_key = crypto::generate_key("rsa2048");
        crypto::Cert other = scep::self_signed(other_key.get(), "CN=not the RA");
        const auto wrong_recipient = scep::read_reply(
            raw(strict, "wrong-recipient", scep_csr(key.get(), "CN=old-client", {}, std::string("s")), EVP_sha256(), other.get()),
            strict.ra.get());
        const auto not_a_csr = scep::read_reply(raw(strict, "not-a-csr", std::string(200, 'x'), EVP_sha256()), strict.ra.get());
        CHECK(wrong_recipient.status == "2");
        CHECK(wrong_recipient.fail_info == "1");
        CHECK(not_a_csr.status == wrong_recipient.status);
        CHECK(not_a_csr.fail_info == wrong_recipient.fail_info);
        CHECK(not_a_csr.envelope == wrong_recipient.envelope);  // both empty
        CHECK(logged(ops, CC_EV_ScepVerifyFailure, "wrong-recipient"));
        CHECK(logged(ops, CC_EV_ScepVerifyFailure, "not-a-csr"));
    }

    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit() == 0);
}
