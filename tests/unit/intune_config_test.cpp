// tenant-intune's configuration: every mistake is reported naming its key, at construction.
#include "Config.hpp"
#include "support/TestFiles.hpp"

#include <certconn/crypto.hpp>
#include <certconn/sdk.hpp>

#include <boost/json.hpp>

#include <catch2/catch.hpp>

namespace json = boost::json;
using certconn::intune::parse_config;
using certconn::test::TempDir;

namespace {

json::object base(const TempDir& dir) {
    certconn::crypto::write_file_atomic(dir / "secret", "s3cr3t-value\nsecond line\n");
    return json::object{{"tenant_id", "contoso.onmicrosoft.com"},
                        {"client_id", "11111111-2222-3333-4444-555555555555"},
                        {"client_secret_file", (dir / "secret").string()}};
}

void fails(const json::object& section, const std::string& key) {
    try {
        parse_config(section);
        FAIL("accepted a section with a bad " << key);
    } catch (const certconn::sdk::Error& e) {
        CHECK(e.code() == CC_ERR_INVALID_ARGUMENT);
        CHECK_THAT(e.what(), Catch::Contains(key));
        CHECK_THAT(e.what(), !Catch::Contains("s3cr3t"));
    }
}

}  // namespace

TEST_CASE("intune config: a minimal secret configuration gets the documented defaults") {
    TempDir dir;
    const auto c = parse_config(base(dir));
    CHECK(c.client_secret.reveal() == "s3cr3t-value");
    CHECK(c.token_endpoint() == "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token");
    CHECK(c.graph_scope() == "https://graph.microsoft.com/.default");
    CHECK(c.intune_scope == "https://api.manage.microsoft.com//.default");
    CHECK_FALSE(c.allow_renewal);
    CHECK(c.revocation.enabled);
    CHECK(c.revocation.batch_size == 100);
    CHECK(c.revocation.interval_seconds == 300);
    CHECK(c.revocation.reason == "unspecified");
    CHECK_FALSE(c.certificate_credential);
}

TEST_CASE("intune config: bad values are refused naming the key") {
    TempDir dir;
    auto s = base(dir);
    s.erase("tenant_id");
    fails(s, "tenant_id");
    s = base(dir);
    s["tenant_id"] = "not a domain";
    fails(s, "tenant_id");
    s = base(dir);
    s["client_id"] = "app";
    fails(s, "client_id");
    s = base(dir);
    s.erase("client_secret_file");
    fails(s, "client_secret_file");  // no credential at all
    s = base(dir);
    s["credential_certificate"] = "/etc/cred.crt";
    s["credential_key"] = "/etc/cred.key";
    fails(s, "client_secret_file");  // two credentials
    s = base(dir);
    s["client_secret_file"] = (dir / "missing").string();
    fails(s, "client_secret_file");
    s = base(dir);
    s["renew_before_days"] = 10;
    fails(s, "renew_before_days");  // a secret has no renewal
    s = base(dir);
    s["login_url"] = "http://login.example";
    fails(s, "login_url");
    s = base(dir);
    s["auth"] = "basic";
    fails(s, "auth");
    s = base(dir);
    s["proxy_password_file"] = (dir / "nope").string();
    fails(s, "proxy_password_file");
    s = base(dir);
    s["revocation"] = json::object{{"batch_size", 501}};
    fails(s, "revocation.batch_size");
    s = base(dir);
    s["revocation"] = json::object{{"interval_seconds", 0}};
    fails(s, "revocation.interval_seconds");
    s = base(dir);
    s["revocation"] = json::object{{"reason", "because"}};
    fails(s, "revocation.reason");
    s = base(dir);
    s["revocation"] = json::object{{"ca_map", json::object{{"ca01\\CA", 3}}}};
    fails(s, "revocation.ca_map.ca01\\CA");
}

TEST_CASE("intune config: certificate credential and revocation mapping") {
    TempDir dir;
    auto s = base(dir);
    s.erase("client_secret_file");
    s["credential_certificate"] = "/etc/certconnector/cred.crt";
    s["credential_key"] = "pkcs11:token=t;object=k";
    s["renew_before_days"] = 20;
    s["warn_before_days"] = 21;
    fails(s, "warn_before_days");
    s["warn_before_days"] = 7;
    s["revocation"] =
        json::object{{"default_ca", "local"}, {"ca_map", json::object{{"ca01\\Issuing", "adcs"}}}, {"issuer_name", "CN=X"}};
    const auto c = parse_config(s);
    CHECK(c.certificate_credential);
    CHECK(c.credential_renewal);
    CHECK(c.revocation.ca_for("ca01\\Issuing") == "adcs");
    CHECK(c.revocation.ca_for("elsewhere") == "local");
    s["revocation"] = json::object{{"ca_map", json::object{{"ca01\\Issuing", "adcs"}}}};
    CHECK(parse_config(s).revocation.ca_for("elsewhere").empty());
    s["credential_key"] = "relative.key";
    fails(s, "credential_key");
}
