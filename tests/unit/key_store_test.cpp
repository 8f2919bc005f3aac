// Connector keys in the file store: creation, RSA-OAEP decryption with each accepted hash,
// and the errors an import job turns into messages.
#include "keys/KeyStore.hpp"
#include "support/TestFiles.hpp"

#include <catch2/catch.hpp>

#include <openssl/rsa.h>

#include <sys/stat.h>

#include <cstdlib>
#include <functional>

using namespace certconn;
using certconn::host::KeyStore;

namespace {

std::string oaep_encrypt(const std::string& public_pem, const std::string& plain, const EVP_MD* md) {
    crypto::PKey key = crypto::load_public_key(public_pem);
    EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new(key.get(), nullptr);
    EVP_PKEY_encrypt_init(ctx);
    EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING);
    EVP_PKEY_CTX_set_rsa_oaep_md(ctx, md);
    EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, md);
    std::size_t len = 0;
    EVP_PKEY_encrypt(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(plain.data()), plain.size());
    std::string out(len, '\0');
    EVP_PKEY_encrypt(ctx, reinterpret_cast<unsigned char*>(out.data()), &len,
                     reinterpret_cast<const unsigned char*>(plain.data()), plain.size());
    EVP_PKEY_CTX_free(ctx);
    out.resize(len);
    return out;
}

}  // namespace

TEST_CASE("connector keys: a file key decrypts OAEP with SHA-256/384/512 - wrong padding, missing key and bad names are clear") {
    test::TempDir dir;
    KeyStore store(dir.path() / "keys");
    const std::string pub = store.create("mail", 2048, std::nullopt);
    struct stat st {};
    REQUIRE(::stat((dir.path() / "keys" / "mail.pem").c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    CHECK(store.holds("mail"));
    CHECK(store.public_pem("mail") == pub);

    CHECK(store.decrypt("mail", "oaep-sha256", oaep_encrypt(pub, "pw1", EVP_sha256())) == "pw1");
    CHECK(store.decrypt("mail", "oaepSha384", oaep_encrypt(pub, "pw2", EVP_sha384())) == "pw2");  // Graph's spelling
    CHECK(store.decrypt("mail", "OAEP_SHA512", oaep_encrypt(pub, "pw3", EVP_sha512())) == "pw3");
    CHECK_THROWS_AS(store.decrypt("mail", "oaep-sha512", oaep_encrypt(pub, "pw", EVP_sha256())), std::invalid_argument);
    CHECK_THROWS_WITH(store.decrypt("mail", "pkcs1", "x"), Catch::Contains("only RSA-OAEP"));
    CHECK_THROWS_WITH(store.decrypt("mail", "oaep-md5", "x"), Catch::Contains("unknown padding"));
    CHECK_THROWS_AS(store.decrypt("absent", "oaep-sha256", "x"), KeyStore::KeyNotHeld);
    CHECK_THROWS_WITH(store.decrypt("absent", "oaep-sha256", "x"), Catch::Contains("is not held by this connector"));
    CHECK_THROWS_WITH(store.create("mail", 2048, std::nullopt), Catch::Contains("already exists"));
    CHECK_THROWS_WITH(store.create("../etc", 2048, std::nullopt), Catch::Contains("key name"));
    CHECK_THROWS_WITH(store.create("k", 1024, std::nullopt), Catch::Contains("2048, 3072 or 4096"));

    // Shared by reference: the same key under another name.
    store.add("alias", (dir.path() / "keys" / "mail.pem").string());
    CHECK(store.decrypt("alias", "oaep-sha256", oaep_encrypt(pub, "shared", EVP_sha256())) == "shared");
    CHECK_THROWS_WITH(store.add("rel", "relative.pem"), Catch::Contains("absolute path"));
    const auto list = store.list();
    REQUIRE(list.size() == 2);
    CHECK(list[0].name == "alias");
    CHECK(list[1].location == "file");
    CHECK(list[0].spki_sha256 == list[1].spki_sha256);
}

TEST_CASE("a PIN in a pkcs11: URI is redacted wherever it is shown") {
    // p11-kit parses the URI and formats it again without the PIN, wherever the PIN stood.
    CHECK(host::redact_pin("pkcs11:token=t;pin-value=1234;object=k") == "pkcs11:token=t;object=k?pin-value=***");
    CHECK(host::redact_pin("pkcs11:token=t?pin-value=1234") == "pkcs11:token=t?pin-value=***");
    CHECK(host::redact_pin("/path/key.pem") == "/path/key.pem");

    struct Case {
        const char* uri;
        const char* pin;
    };
    for (const Case& c : {
             Case{"pkcs11:pin-value=531246;token=t", "531246"},                                             // first attribute
             Case{"pkcs11:token=t;object=k;type=private?module-name=softhsm2&pin-value=531246", "531246"},  // query, last
             Case{"pkcs11:token=t?pin-value=531246&module-name=softhsm2", "531246"},                        // query, first
             Case{"pkcs11:token=t?pin-value=%35%33%31%32%34%36", "531246"},                                 // percent-encoded
             Case{"pkcs11:token=t?pin-value=%35%33%31%32%34%36", "%35%33"},             // ... nor its encoding
             Case{"pkcs11:token=t;pin-value=1111;pin-value=531246", "531246"},          // twice
             Case{"pkcs11:token=t;vendor-x=1;pin-value=531246", "531246"},              // beside an unknown attribute
             Case{"pkcs11:token=t;pin-value=531246;;", "531246"},                       // empty attributes
             Case{"pkcs11:token=t;object=k?pin-value=s%3Bcr%26t%3Dpin", "s;cr&t=pin"},  // reserved characters
             Case{"pkcs11:token=t;object=k?pin-value=s%3Bcr%26t%3Dpin", "s%3Bcr"},
             Case{"PKCS11:token=t;pin-value=531246", "531246"},             // scheme in upper case
             Case{"pkcs11:token=t;object=%zz;pin-value=531246", "531246"},  // unparseable: not shown
         }) {
        INFO(c.uri);
        const std::string shown = crypto::redact_pkcs11_uri(c.uri);
        INFO(shown);
        CHECK(shown.find(c.pin) == std::string::npos);
        CHECK(shown.rfind("pkcs11:", 0) == 0);
    }
    CHECK(crypto::redact_pkcs11_uri("pkcs11:token=t;object=%zz;pin-value=531246").find("not shown") != std::string::npos);
    // Wherever a URI ends up in a message: a reference that is not an absolute path, a key the
    // engine cannot load (scheme in upper case: still a URI, not a file name).
    test::TempDir dir;
    KeyStore store(dir.path() / "keys");
    CHECK_THROWS_WITH(store.add("k", "PKCS11:token=t;pin-value=531246"), !Catch::Contains("531246"));
    CHECK_THROWS_WITH(crypto::load_private_key_from("PKCS11:token=t;object=k;pin-value=531246"), !Catch::Contains("531246"));
    // pin-source: the path is shown (percent-encoded by p11-kit), the file is not read.
    CHECK(crypto::redact_pkcs11_uri("pkcs11:token=t;object=k?pin-source=file:/etc/certconn/pin") ==
          "pkcs11:token=t;object=k?pin-source=file%3A%2Fetc%2Fcertconn%2Fpin");
}

TEST_CASE("the PIN of a pkcs11: URI comes back as a Secret: pin-value, or the first line of pin-source") {
    test::TempDir dir;
    test::write_file(dir / "pin", "fromfile-8642\nsecond line\n");
    CHECK(crypto::pkcs11_pin("pkcs11:token=t?pin-value=%31%32%33%34").reveal() == "1234");
    CHECK(crypto::pkcs11_pin("pkcs11:token=t?pin-source=file:" + (dir / "pin").string()).reveal() == "fromfile-8642");
    CHECK(crypto::pkcs11_pin("pkcs11:token=t?pin-source=" + (dir / "pin").string()).reveal() == "fromfile-8642");
    CHECK(crypto::pkcs11_pin("pkcs11:token=t").empty());
    CHECK_THROWS_WITH(crypto::pkcs11_pin("pkcs11:token=t?pin-source=file:" + (dir / "absent").string()),
                      Catch::Contains("cannot read the PIN file") && Catch::Contains("absent"));
    CHECK(crypto::scrub_pin("login with 1234 failed", "pkcs11:token=t?pin-value=1234") == "login with *** failed");
    CHECK(crypto::scrub_pin("x fromfile-8642 y", "pkcs11:token=t?pin-source=" + (dir / "pin").string()) == "x *** y");
}

namespace {

/// A SoftHSM token in a private directory (SOFTHSM2_CONF points there for this process), as
/// tests/interop/import_interop.sh makes one.
struct SoftHsmToken {
    explicit SoftHsmToken(const test::TempDir& dir) {
        std::filesystem::create_directories(dir / "tokens");
        test::write_file(dir / "softhsm2.conf", "directories.tokendir = " + (dir / "tokens").string() +
                                                    "\nobjectstore.backend = file\nlog.level = ERROR\n");
        ::setenv("SOFTHSM2_CONF", (dir / "softhsm2.conf").c_str(), 1);
        const std::string init = "softhsm2-util --init-token --free --label hyg-token --pin 97531 --so-pin 86420 >/dev/null 2>&1";
        ok = std::system(init.c_str()) == 0;
    }
    bool ok = false;
};

std::string message_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const std::exception& e) {
        return e.what();
    }
    return "(no exception)";
}

}  // namespace

TEST_CASE("a wrong PIN or an absent token: the message names the token and object, never the PIN or the PIN file's contents",
          "[softhsm]") {
    test::TempDir dir;
    SoftHsmToken token(dir);
    REQUIRE(token.ok);
    // A key on the token, made outside this process: a login that succeeded here would stay in
    // force for the process (CKR_USER_ALREADY_LOGGED_IN), and the wrong PINs below would pass.
    REQUIRE(std::system("pkcs11-tool --module /usr/lib/softhsm/libsofthsm2.so --login --pin 97531 --keypairgen "
                        "--key-type rsa:2048 --label hsm --id 01 >/dev/null 2>&1") == 0);
    KeyStore store(dir.path() / "keys");

    const std::string wrong = "WRONGPIN-4711";
    test::write_file(dir / "pin", "SOURCEPIN-4242\n");
    const std::string pin_file = (dir / "pin").string();
    struct Case {
        std::string what;
        std::string message;
        std::vector<std::string> expected;
        std::vector<std::string> secrets;
    };
    const std::vector<Case> cases = {
        {"create, wrong pin-value",
         message_of([&] { store.create("bad", 2048, "pkcs11:token=hyg-token;pin-value=" + wrong); }),
         {"hyg-token", "wrong PIN"},
         {wrong}},
        {"create, wrong PIN in the pin-source file",
         message_of([&] { store.create("bad", 2048, "pkcs11:token=hyg-token?pin-source=file:" + pin_file); }),
         {"hyg-token", "wrong PIN"},
         {"SOURCEPIN-4242"}},
        {"create, absent token",
         message_of([&] { store.create("bad", 2048, "pkcs11:token=absent-token;pin-value=" + wrong); }),
         {"absent-token", "pin-value=***"},
         {wrong}},
        {"load, wrong pin-value",
         message_of([&] { crypto::load_private_key_from("pkcs11:token=hyg-token;object=hsm;type=private;pin-value=" + wrong); }),
         {"hyg-token", "object=hsm", "pin-value=***"},
         {wrong}},
        {"load, wrong PIN in the pin-source file",
         message_of([&] {
             crypto::load_private_key_from("pkcs11:token=hyg-token;object=hsm;type=private?pin-source=file:" + pin_file);
         }),
         {"hyg-token", "object=hsm"},
         {"SOURCEPIN-4242"}},
        {"load, absent token",
         message_of(
             [&] { crypto::load_private_key_from("pkcs11:token=absent-token;object=hsm;type=private;pin-value=" + wrong); }),
         {"absent-token", "object=hsm"},
         {wrong}},
        {"key store reference with a wrong PIN",
         message_of([&] { store.add("ref", "pkcs11:token=hyg-token;object=hsm;type=private?pin-value=" + wrong); }),
         {"hyg-token", "object=hsm"},
         {wrong}},
    };
    for (const auto& c : cases) {
        INFO(c.what << ": " << c.message);
        CHECK(c.message != "(no exception)");
        for (const auto& e : c.expected)
            CHECK_THAT(c.message, Catch::Contains(e));
        for (const auto& s : c.secrets)
            CHECK_THAT(c.message, !Catch::Contains(s));
    }

    // The right PIN works (the cases above failed for the PIN, not for the setup). Generation
    // with the right PIN is covered by tests/interop/import_interop.sh, in a process of its own:
    // here the engine has already listed the token's objects and would not see a new one.
    CHECK_NOTHROW(crypto::load_private_key_from("pkcs11:token=hyg-token;object=hsm;type=private;pin-value=97531"));
    CHECK_NOTHROW(crypto::load_private_key_from("pkcs11:token=hyg-token;object=hsm;type=private?pin-value=%39%37%35%33%31"));
}
