// certconn::crypto: the helpers plugins share, against OpenSSL itself.
#include <certconn/crypto.hpp>

#include <catch2/catch.hpp>

#include "support/TestFiles.hpp"

#include <openssl/x509.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>

using namespace certconn::crypto;

TEST_CASE("subject names: comma and slash forms, escapes, and clear errors") {
    Name a = parse_name("CN=Alice\\, Jr.,O=Example");
    CHECK(name_string(a.get()) == "O=Example,CN=Alice\\, Jr.");
    Name b = parse_name("/CN=Bob/O=Example/C=CZ");
    CHECK(X509_NAME_entry_count(b.get()) == 3);
    CHECK_THROWS_WITH(parse_name("CN"), Catch::Contains("'CN' is not ATTRIBUTE=value"));
    CHECK_THROWS_WITH(parse_name("XX=1"), Catch::Contains("unknown attribute 'XX'"));
    CHECK_THROWS_WITH(parse_name(""), Catch::Contains("subject is empty"));
}

TEST_CASE("SANs round-trip through a CSR, UPN as the Microsoft otherName") {
    PKey key = generate_key("p256");
    const std::vector<SubjectAltName> sans = {parse_san("email:a@example.com"), parse_san("UPN:a@corp.example"),
                                              parse_san("dns:host.example"), parse_san("uri:https://example.com/x"),
                                              parse_san("ip:192.0.2.7")};
    Request csr = load_csr(make_csr_pem(key.get(), "CN=a", sans));
    CHECK(X509_REQ_verify(csr.get(), X509_REQ_get0_pubkey(csr.get())) == 1);
    STACK_OF(X509_EXTENSION)* exts = X509_REQ_get_extensions(csr.get());
    const auto back = read_sans(exts);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    REQUIRE(back.size() == 5);
    CHECK(back[1].type == "upn");
    CHECK(back[1].value == "a@corp.example");
    CHECK(back[4].value == "192.0.2.7");
    CHECK_THROWS_WITH(parse_san("phone:1"), Catch::Contains("unknown type 'phone'"));
    CHECK_THROWS_WITH(parse_san("email"), Catch::Contains("expected TYPE:VALUE"));
}

TEST_CASE("key types are generated and recognised") {
    for (const char* type : {"rsa2048", "p256", "p384"})
        CHECK(key_type_of(generate_key(type).get()) == type);
    CHECK_THROWS_WITH(generate_key("rsa1024"), Catch::Contains("unknown key type 'rsa1024'"));
    PKey key = generate_key("p256");
    CHECK(key_type_of(load_private_key(private_key_pem(key.get())).get()) == "p256");
    CHECK(key_type_of(load_public_key(public_key_pem(key.get())).get()) == "p256");
    CHECK_THROWS_WITH(load_public_key("garbage"), Catch::Contains("not a PEM public key or certificate"));
}

TEST_CASE("CMS envelopes open with the recipient's key: RSA-OAEP and ECDH, key or certificate") {
    for (const char* type : {"rsa2048", "p256"}) {
        INFO(type);
        PKey device = generate_key(type);
        const std::string content = random_bytes(5000);
        const auto envelope = cms_encrypt(content, Recipient::from_pem(public_key_pem(device.get())));
        CHECK(cms_decrypt(envelope, device.get()) == content);
        PKey other = generate_key(type);
        CHECK_THROWS_AS(cms_decrypt(envelope, other.get()), CryptoError);
    }
    CHECK_THROWS_WITH(cms_decrypt("not der", generate_key("p256").get()), Catch::Contains("not a DER CMS structure"));
}

TEST_CASE("PKCS#12 round-trips with its password, modern and legacy") {
    PKey key = generate_key("p256");
    Cert cert(X509_new());
    Name n = parse_name("CN=leaf");
    X509_set_subject_name(cert.get(), n.get());
    X509_set_issuer_name(cert.get(), n.get());
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), 0);
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600);
    X509_set_pubkey(cert.get(), key.get());
    X509_sign(cert.get(), key.get(), EVP_sha256());
    for (bool legacy : {false, true}) {
        const std::string der = pkcs12_der(key.get(), cert.get(), {}, "pässword", legacy);
        const auto* p = reinterpret_cast<const unsigned char*>(der.data());
        Pkcs12 p12(d2i_PKCS12(nullptr, &p, static_cast<long>(der.size())));
        REQUIRE(p12);
        CHECK(PKCS12_verify_mac(p12.get(), "pässword", -1) == 1);
        CHECK(PKCS12_verify_mac(p12.get(), "wrong", -1) == 0);
        EVP_PKEY* k = nullptr;
        X509* c = nullptr;
        REQUIRE(PKCS12_parse(p12.get(), "pässword", &k, &c, nullptr) == 1);
        CHECK(X509_cmp(c, cert.get()) == 0);
        EVP_PKEY_free(k);
        X509_free(c);
    }
}

TEST_CASE("encodings") {
    for (std::string s : {std::string(), std::string("a"), std::string("ab"), std::string("abc"), random_bytes(257)})
        CHECK(base64_decode(base64_encode(s)) == s);
    CHECK_THROWS_WITH(base64_decode("abc"), Catch::Contains("multiple of 4"));
    CHECK(hex_encode("\x01\xab") == "01ab");
    const std::string u = uuid4();
    CHECK(u.size() == 36);
    CHECK(u[14] == '4');
    CHECK(uuid4() != u);
}

TEST_CASE("the pkcs11 engine never sees a PIN inside the URI, so what it prints to stderr holds none") {
    // libp11 prints "The private key was not found at: <uri>" to stderr, which the daemon's
    // journal keeps; the PIN therefore goes to the engine through its PIN control command.
    certconn::test::TempDir dir;
    const std::string captured = (dir / "stderr").string();
    std::fflush(stderr);
    const int saved = ::dup(2);
    const int fd = ::open(captured.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    REQUIRE(fd >= 0);
    ::dup2(fd, 2);
    std::string message;
    for (const char* uri :
         {"pkcs11:token=absent-token;object=k;type=private;pin-value=S3cretPin42",
          "pkcs11:token=absent-token;object=k?pin-value=S3cretPin42", "PKCS11:token=t;object=k;pin-value=S3cretPin42"}) {
        try {
            certconn::crypto::load_private_key_from(uri);
        } catch (const std::exception& e) {
            message += e.what();
        }
    }
    std::fflush(stderr);
    ::dup2(saved, 2);
    ::close(saved);
    ::close(fd);
    CHECK_FALSE(message.empty());
    CHECK(message.find("S3cretPin42") == std::string::npos);
    CHECK(certconn::test::read_file(captured).find("S3cretPin42") == std::string::npos);
}
