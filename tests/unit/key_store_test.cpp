// Connector keys in the file store: creation, RSA-OAEP decryption with each accepted hash,
// and the errors an import job turns into messages.
#include "keys/KeyStore.hpp"
#include "support/TestFiles.hpp"

#include <catch2/catch.hpp>

#include <openssl/rsa.h>

#include <sys/stat.h>

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
    EVP_PKEY_encrypt(ctx, reinterpret_cast<unsigned char*>(out.data()), &len, reinterpret_cast<const unsigned char*>(plain.data()), plain.size());
    EVP_PKEY_CTX_free(ctx);
    out.resize(len);
    return out;
}

}  // namespace

TEST_CASE("connector keys: a file key decrypts OAEP with SHA-256/384/512; wrong padding, missing key and bad names are clear") {
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
    CHECK(host::redact_pin("pkcs11:token=t;pin-value=1234;object=k") == "pkcs11:token=t;pin-value=***;object=k");
    CHECK(host::redact_pin("pkcs11:token=t?pin-value=1234") == "pkcs11:token=t?pin-value=***");
    CHECK(host::redact_pin("/path/key.pem") == "/path/key.pem");
}
