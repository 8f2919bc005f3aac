// host/auth: who is privileged. The admin socket by SO_PEERCRED uid; TCP by scoped token or
// mapped client certificate; loopback alone is nothing.
#include "auth/AccessPolicy.hpp"

#include <catch2/catch.hpp>

using namespace certconn::host;

namespace {

AuthSettings settings(std::string admin_group = "") {
    AuthSettings s;
    s.admin_group = std::move(admin_group);
    s.tokens.push_back({"intake", sha256_hex("cct_intake"), {"jobs:submit", "jobs:read"}});
    s.tokens.push_back({"probe", sha256_hex("cct_probe"), {"status"}});
    s.certificates.push_back({"mdm", std::string(64, 'a'), {"jobs:submit"}});
    return s;
}

RequestOrigin tcp(bool loopback = true) {
    return RequestOrigin{"127.0.0.1:5000", false, loopback};
}

RequestOrigin socket_peer(long uid) {
    RequestOrigin o{"local", true, true};
    o.peer_uid = uid;
    return o;
}

}  // namespace

TEST_CASE("a loopback TCP caller without credentials is anonymous and holds no scope") {
    const AccessPolicy policy(settings(), "");
    const Principal p = policy.authenticate(tcp(), "");
    CHECK(p.origin == CC_ORIGIN_ANONYMOUS);
    CHECK_FALSE(p.authenticated());
    CHECK_FALSE(p.refused);
    CHECK(p.holds(""));  // public routes
    CHECK_FALSE(p.holds("jobs:submit"));
    CHECK_FALSE(p.holds("status"));
}

TEST_CASE("bearer tokens map to their own scopes - a wrong one is refused, not downgraded") {
    const AccessPolicy policy(settings(), "");
    const Principal intake = policy.authenticate(tcp(false), "Bearer cct_intake");
    CHECK(intake.origin == CC_ORIGIN_TOKEN);
    CHECK(intake.name == "token:intake");
    CHECK(intake.holds("jobs:submit"));
    CHECK_FALSE(intake.holds("scep:approve"));
    const Principal probe = policy.authenticate(tcp(), "Bearer cct_probe");
    CHECK(probe.holds("status"));
    CHECK_FALSE(probe.holds("jobs:submit"));
    for (const char* bad : {"Bearer cct_intakeX", "Bearer ", "Basic dXNlcjpwYXNz", "cct_intake", "Bearer cct_Intake"}) {
        const Principal p = policy.authenticate(tcp(), bad);
        CHECK(p.refused);
        CHECK_FALSE(p.holds(""));
        CHECK(p.refusal.find("cct_") == std::string::npos);  // the token is never echoed
    }
}

TEST_CASE("a verified client certificate maps to scopes only when configured") {
    const AccessPolicy policy(settings(), "");
    RequestOrigin o = tcp(false);
    o.client_cert_sha256 = std::string(64, 'a');
    const Principal mapped = policy.authenticate(o, "");
    CHECK(mapped.origin == CC_ORIGIN_CLIENT_CERTIFICATE);
    CHECK(mapped.name == "certificate:mdm");
    CHECK(mapped.holds("jobs:submit"));
    o.client_cert_sha256 = std::string(64, 'b');  // e.g. a device's certificate
    CHECK(policy.authenticate(o, "").origin == CC_ORIGIN_ANONYMOUS);
}

TEST_CASE("the admin socket admits root and the daemon's user, refuses others unless in admin_group") {
    const AccessPolicy policy(settings(), "");
    const Principal root = policy.authenticate(socket_peer(0), "");
    CHECK(root.origin == CC_ORIGIN_ADMIN_SOCKET);
    CHECK(root.holds("scep:approve"));
    CHECK(root.name == "uid:0");
    const Principal nobody = policy.authenticate(socket_peer(65534), "");
    CHECK(nobody.refused);
    CHECK_FALSE(nobody.holds(""));
    CHECK_THAT(nobody.refusal, Catch::Contains("uid 65534"));
    CHECK(policy.authenticate(socket_peer(-1), "").refused);  // unknown credentials: refused
    // A bearer token on the admin socket changes nothing.
    CHECK(policy.authenticate(socket_peer(65534), "Bearer cct_intake").refused);

    const AccessPolicy with_group(settings("nogroup"), "");  // nobody's primary group on Debian
    CHECK_FALSE(with_group.authenticate(socket_peer(65534), "").refused);
    CHECK(with_group.authenticate(socket_peer(65534), "").holds("scep:approve"));
}

TEST_CASE("new bearer tokens are long, URL-safe and different each time") {
    const std::string a = new_bearer_token();
    const std::string b = new_bearer_token();
    CHECK(a != b);
    CHECK(a.size() == 4 + 43);
    CHECK(a.rfind("cct_", 0) == 0);
    CHECK(a.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", 4) == std::string::npos);
}
