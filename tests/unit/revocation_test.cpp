// ca-local's revocation: RFC 5280 reasons, serial forms, the CRL and OCSP answers it signs,
// each checked by OpenSSL's own parsers and verifiers.
#include "IssuanceStore.hpp"
#include "Revocation.hpp"
#include "support/TestCa.hpp"
#include "support/TestFiles.hpp"

#include <certconn/crypto.hpp>

#include <catch2/catch.hpp>

#include <openssl/ocsp.h>
#include <openssl/x509v3.h>

#include <thread>

using namespace certconn;
using namespace certconn::ca_local;

namespace {

// A self-signed CA and a store with three certificates: good, revoked (keyCompromise), revoked (unspecified).
struct Fixture {
    test::TempDir dir;
    crypto::PKey key = crypto::generate_key("p256");
    crypto::Cert ca = test::self_signed_ca(key.get(), "Unit CA");
    IssuanceStore store{dir.path() / "issued.db"};

    Fixture() {
        for (const char* serial : {"0A01", "0A02", "0A03"})
            REQUIRE(store.insert({serial, serial, "CN=x", "[]", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z", "default", "unit",
                                  "valid", "", "", "pem"}));
        const auto changed = store.revoke_many({{"0A02", "keyCompromise"}, {"0A03", "unspecified"}, {"0A02", "superseded"}},
                                               "2026-11-20T10:00:00Z");
        CHECK(changed == std::vector<bool>{true, true, false});  // the duplicate counts once
    }
};

std::string ocsp_request(X509* issuer, const char* serial_hex, bool nonce) {
    OCSP_REQUEST* req = OCSP_REQUEST_new();
    BIGNUM* bn = nullptr;
    BN_hex2bn(&bn, serial_hex);
    ASN1_INTEGER* serial = BN_to_ASN1_INTEGER(bn, nullptr);
    OCSP_request_add0_id(req,
                         OCSP_cert_id_new(EVP_sha1(), X509_get_subject_name(issuer), X509_get0_pubkey_bitstr(issuer), serial));
    if (nonce) OCSP_request_add1_nonce(req, nullptr, 16);
    unsigned char* der = nullptr;
    const int len = i2d_OCSP_REQUEST(req, &der);
    std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
    OPENSSL_free(der);
    ASN1_INTEGER_free(serial);
    BN_free(bn);
    OCSP_REQUEST_free(req);
    return out;
}

}  // namespace

TEST_CASE("revocation reasons: RFC 5280 names in any common spelling - anything else is refused with the list") {
    CHECK(reason_code("keyCompromise") == 1);
    CHECK(reason_code("key_compromise") == 1);  // DigiCert's spelling
    CHECK(reason_code("CessationOfOperation") == 5);
    CHECK(reason_code("aACompromise") == 10);
    CHECK(std::string(reason_name(6)) == "certificateHold");
    CHECK_THROWS_WITH(reason_code("sometimes"), Catch::Contains("expected one of: unspecified, keyCompromise"));
    CHECK_THROWS(reason_code(""));
}

TEST_CASE("serials: one canonical form whatever the case and leading zeros") {
    CHECK(IssuanceStore::canonical_serial("0a01") == "0A01");
    CHECK(IssuanceStore::canonical_serial("000A01") == "0A01");
    CHECK(IssuanceStore::canonical_serial("7F") == "7F");
    CHECK_THROWS_WITH(IssuanceStore::canonical_serial("xyz"), Catch::Contains("not a hexadecimal number"));
    CHECK_THROWS(IssuanceStore::canonical_serial("0"));
    CHECK_THROWS(IssuanceStore::canonical_serial(""));
}

TEST_CASE("the CRL: signed by the CA, v2, numbered, with the revoked entries and their reasons") {
    Fixture f;
    RevocationService service({"unit"}, f.ca.get(), f.key.get(), f.store, f.dir.path(), nullptr, false);
    const auto der = service.crl();
    const auto* p = reinterpret_cast<const unsigned char*>(der->data());
    std::unique_ptr<X509_CRL, crypto::Deleter<X509_CRL_free>> crl(d2i_X509_CRL(nullptr, &p, static_cast<long>(der->size())));
    REQUIRE(crl);
    CHECK(X509_CRL_verify(crl.get(), f.key.get()) == 1);
    CHECK(X509_CRL_get_version(crl.get()) == X509_CRL_VERSION_2);
    CHECK(X509_NAME_cmp(X509_CRL_get_issuer(crl.get()), X509_get_subject_name(f.ca.get())) == 0);
    CHECK(X509_cmp_current_time(X509_CRL_get0_nextUpdate(crl.get())) > 0);
    STACK_OF(X509_REVOKED)* revoked = X509_CRL_get_REVOKED(crl.get());
    REQUIRE(sk_X509_REVOKED_num(revoked) == 2);
    int with_reason = 0;
    for (int i = 0; i < 2; ++i) {
        int crit = 0;
        auto* reason = static_cast<ASN1_ENUMERATED*>(
            X509_REVOKED_get_ext_d2i(sk_X509_REVOKED_value(revoked, i), NID_crl_reason, &crit, nullptr));
        if (reason) {
            CHECK(ASN1_ENUMERATED_get(reason) == 1);  // keyCompromise; unspecified is left out (RFC 5280 §5.3.1)
            ++with_reason;
            ASN1_ENUMERATED_free(reason);
        }
    }
    CHECK(with_reason == 1);
    auto* number = static_cast<ASN1_INTEGER*>(X509_CRL_get_ext_d2i(crl.get(), NID_crl_number, nullptr, nullptr));
    REQUIRE(number);
    CHECK(ASN1_INTEGER_get(number) == 1);
    ASN1_INTEGER_free(number);
    CHECK(service.crl() == der);  // unchanged: served from the cache
    f.store.revoke_many({{"0A01", "superseded"}}, "2026-11-21T10:00:00Z");
    service.changed();
    const auto next = service.crl();
    CHECK(next != der);
    p = reinterpret_cast<const unsigned char*>(next->data());
    std::unique_ptr<X509_CRL, crypto::Deleter<X509_CRL_free>> crl2(d2i_X509_CRL(nullptr, &p, static_cast<long>(next->size())));
    CHECK(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl2.get())) == 3);
    CHECK(std::filesystem::exists(f.dir.path() / "crl.der"));
}

TEST_CASE(
    "OCSP: good, revoked and unknown answers, signed by a delegated responder, nonce echoed - garbage is malformedRequest") {
    Fixture f;
    RevocationService service({"unit"}, f.ca.get(), f.key.get(), f.store, f.dir.path(), nullptr, false);
    auto status_of = [&](const char* serial, bool nonce) {
        const std::string req_der = ocsp_request(f.ca.get(), serial, nonce);
        const std::string resp_der = service.ocsp(req_der);
        const auto* p = reinterpret_cast<const unsigned char*>(resp_der.data());
        std::unique_ptr<OCSP_RESPONSE, crypto::Deleter<OCSP_RESPONSE_free>> resp(
            d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(resp_der.size())));
        REQUIRE(resp);
        REQUIRE(OCSP_response_status(resp.get()) == OCSP_RESPONSE_STATUS_SUCCESSFUL);
        std::unique_ptr<OCSP_BASICRESP, crypto::Deleter<OCSP_BASICRESP_free>> basic(OCSP_response_get1_basic(resp.get()));
        X509_STORE* trust = X509_STORE_new();
        X509_STORE_add_cert(trust, f.ca.get());
        CHECK(OCSP_basic_verify(basic.get(), nullptr, trust, 0) == 1);  // responder chains to the CA, has OCSPSigning
        X509_STORE_free(trust);
        const auto* q = reinterpret_cast<const unsigned char*>(req_der.data());
        std::unique_ptr<OCSP_REQUEST, crypto::Deleter<OCSP_REQUEST_free>> req(
            d2i_OCSP_REQUEST(nullptr, &q, static_cast<long>(req_der.size())));
        CHECK(OCSP_check_nonce(req.get(), basic.get()) == (nonce ? 1 : 2));
        OCSP_SINGLERESP* single = OCSP_resp_get0(basic.get(), 0);
        int reason = -1;
        return std::pair{OCSP_single_get0_status(single, &reason, nullptr, nullptr, nullptr), reason};
    };
    CHECK(status_of("0A01", true).first == V_OCSP_CERTSTATUS_GOOD);
    CHECK(status_of("0A02", true) == std::pair{V_OCSP_CERTSTATUS_REVOKED, 1});
    CHECK(status_of("0A03", false).first == V_OCSP_CERTSTATUS_REVOKED);
    CHECK(status_of("0BEEF", true).first == V_OCSP_CERTSTATUS_UNKNOWN);
    CHECK(std::filesystem::exists(f.dir.path() / "ocsp-responder.pem"));

    auto response_status = [&](const std::string& der) {
        const std::string resp_der = service.ocsp(der);
        const auto* p = reinterpret_cast<const unsigned char*>(resp_der.data());
        OCSP_RESPONSE* resp = d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(resp_der.size()));
        const int status = resp ? OCSP_response_status(resp) : -1;
        OCSP_RESPONSE_free(resp);
        return status;
    };
    CHECK(response_status("garbage") == OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
    CHECK(response_status("") == OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
    // A certificate of another issuer: this responder is not authoritative for it.
    crypto::Cert other(X509_dup(f.ca.get()));
    crypto::Name other_name = crypto::parse_name("CN=Other CA");
    X509_set_subject_name(other.get(), other_name.get());
    CHECK(response_status(ocsp_request(other.get(), "0A01", false)) == OCSP_RESPONSE_STATUS_UNAUTHORIZED);
}

// Hidden (timing-dependent, ~10 s): run with `unit-tests "[.big-crl]"`.
TEST_CASE("a big CRL: while the next one is made, fetches get the previous one at once", "[.big-crl]") {
    Fixture f;
    std::vector<IssuedCertificate> many;
    for (int i = 0; i < 300000; ++i) {
        char serial[32];
        std::snprintf(serial, sizeof serial, "7%015X", i + 0x1000);
        many.push_back({serial, "", "CN=x", "[]", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z", "default", "unit", "",
                        "superseded", "2026-11-20T10:00:00Z", "-"});
    }
    f.store.insert_revoked_bulk(many);
    RevocationService service({"unit"}, f.ca.get(), f.key.get(), f.store, f.dir.path(), nullptr, true);
    const auto first = service.crl();  // made now (nothing before it), over a second
    f.store.revoke_many({{"0A01", "superseded"}}, "2026-11-21T10:00:00Z");
    service.changed();
    const auto t0 = std::chrono::steady_clock::now();
    const auto meanwhile = service.crl();
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(100));
    CHECK(meanwhile == first);  // the previous CRL, served at once
    bool renewed = false;       // the refresher makes the new one
    for (int i = 0; i < 300 && !renewed; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        renewed = service.crl() != first;
    }
    CHECK(renewed);
}
