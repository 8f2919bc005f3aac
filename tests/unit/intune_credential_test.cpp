// tenant-intune's credential: JWTs verified by python3-cryptography and OpenSSL, the store, and
// the renewal against a fake Graph that checks every proof-of-possession token the way Graph does.
#include "Credential.hpp"
#include "support/TestFiles.hpp"

#include <certconn/events.h>

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/sha.h>

#include <sys/stat.h>

#include <atomic>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

using namespace certconn;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

int run(const std::string& command) {
    return std::system(command.c_str());
}

/// A key and a self-signed certificate made by the openssl command line, valid `days`.
void make_credential_files(const fs::path& dir, const std::string& name, const std::string& algorithm, int days) {
    const std::string newkey = algorithm == "ec" ? "-newkey ec -pkeyopt ec_paramgen_curve:P-256" : "-newkey rsa:2048";
    const std::string cmd = "openssl req -x509 " + newkey + " -nodes -sha256 -days " + std::to_string(days) +
                            " -subj /CN=" + name + " -keyout " + (dir / (name + ".key")).string() + " -out " +
                            (dir / (name + ".crt")).string() + " 2>/dev/null";
    REQUIRE(run(cmd) == 0);
    ::chmod((dir / (name + ".key")).c_str(), 0600);
}

json::object section_for(const fs::path& dir, const std::string& name) {
    return {{"client_id", "11111111-2222-3333-4444-555555555555"},
            {"credential_certificate", (dir / (name + ".crt")).string()},
            {"credential_key", (dir / (name + ".key")).string()}};
}

std::string b64url_decode(std::string s) {
    for (char& c : s) {
        if (c == '-') c = '+';
        if (c == '_') c = '/';
    }
    while (s.size() % 4)
        s += '=';
    return crypto::base64_decode(s);
}

struct Jwt {
    json::object header;
    json::object claims;
};

/// Verifies a compact JWS with the certificate's public key (RS256 or ES256 r||s); throws when it
/// does not verify.
Jwt verify_jwt(const std::string& token, const X509* cert) {
    const auto dot1 = token.find('.');
    const auto dot2 = token.find('.', dot1 + 1);
    if (dot1 == std::string::npos || dot2 == std::string::npos) throw std::runtime_error("not a compact JWS");
    REQUIRE(token.find('=') == std::string::npos);  // base64url without padding
    const std::string input = token.substr(0, dot2);
    Jwt jwt;
    jwt.header = json::parse(b64url_decode(token.substr(0, dot1))).as_object();
    jwt.claims = json::parse(b64url_decode(token.substr(dot1 + 1, dot2 - dot1 - 1))).as_object();
    std::string signature = b64url_decode(token.substr(dot2 + 1));
    EVP_PKEY* pub = X509_get0_pubkey(cert);
    const bool ec = EVP_PKEY_get_base_id(pub) == EVP_PKEY_EC;
    if (std::string(jwt.header.at("alg").as_string()) != (ec ? "ES256" : "RS256")) throw std::runtime_error("wrong alg");
    if (ec) {
        if (signature.size() != 64) throw std::runtime_error("ES256 signature is not 64 bytes");
        ECDSA_SIG* sig = ECDSA_SIG_new();
        ECDSA_SIG_set0(sig, BN_bin2bn(reinterpret_cast<const unsigned char*>(signature.data()), 32, nullptr),
                       BN_bin2bn(reinterpret_cast<const unsigned char*>(signature.data()) + 32, 32, nullptr));
        unsigned char* der = nullptr;
        const int n = i2d_ECDSA_SIG(sig, &der);
        signature.assign(reinterpret_cast<char*>(der), static_cast<size_t>(n));
        OPENSSL_free(der);
        ECDSA_SIG_free(sig);
    }
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    const bool ok = EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, pub) == 1 &&
                    EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                                     reinterpret_cast<const unsigned char*>(input.data()), input.size()) == 1;
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();
    if (!ok) throw std::runtime_error("the JWT signature does not verify");
    return jwt;
}

// ---- a host that records events ------------------------------------------------------------
struct Events {
    std::mutex mutex;
    std::vector<std::pair<uint32_t, std::string>> list;
    std::string state_dir;
    std::vector<uint32_t> ids() {
        std::lock_guard lock(mutex);
        std::vector<uint32_t> out;
        for (const auto& e : list)
            out.push_back(e.first);
        return out;
    }
    std::string text(uint32_t id) {
        std::lock_guard lock(mutex);
        std::string out;
        for (const auto& e : list)
            if (e.first == id) out += e.second + "\n";
        return out;
    }
    bool has(uint32_t id) { return !text(id).empty(); }
    void clear() {
        std::lock_guard lock(mutex);
        list.clear();
    }
};

class FakeHost {
public:
    explicit FakeHost(const fs::path& state_dir) {
        events.state_dir = state_dir.string();
        services_.struct_size = sizeof(cc_host_services);
        services_.abi_major = CERTCONN_ABI_MAJOR;
        services_.abi_minor = CERTCONN_ABI_MINOR;
        services_.host_ctx = &events;
        services_.log_event = [](void* ctx, uint32_t id, int, const char*, const char* message, const char*) {
            auto* e = static_cast<Events*>(ctx);
            std::lock_guard lock(e->mutex);
            e->list.emplace_back(id, message ? message : "");
        };
        services_.state_dir = [](void* ctx) { return static_cast<Events*>(ctx)->state_dir.c_str(); };
        host_ = std::make_unique<sdk::Host>(&services_);
    }
    sdk::Host& host() { return *host_; }
    Events events;

private:
    cc_host_services services_{};
    std::unique_ptr<sdk::Host> host_;
};

// ---- a fake Graph application ----------------------------------------------------------------
/// Holds the application's key credentials and checks proofs as Graph documents it: a JWT signed
/// by a key the application already has, aud 00000002-0000-0000-c000-000000000000, iss = the
/// application object id, a lifetime of at most 10 minutes.
struct FakeGraph {
    std::string object_id = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
    struct Key {
        std::string key_id;
        std::string thumbprint;
        crypto::Cert cert;
    };
    std::vector<Key> keys;
    std::vector<std::string> calls;  // "addKey", "removeKey <keyId>", "GET"
    std::string last_add_body;
    std::vector<std::string> proof_signers;  // thumbprint of the key that signed each proof
    bool fail_add = false;                   // answers addKey with an error before registering
    bool lose_add_answer = false;            // registers, then the answer is lost (connection reset)
    std::mutex mutex;

    void add_existing(const std::string& cert_pem) {
        auto cert = crypto::load_certificate(cert_pem);
        std::string tp = crypto::fingerprint_hex(cert.get(), EVP_sha1());
        for (char& c : tp)
            c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        keys.push_back({crypto::uuid4(), tp, std::move(cert)});
    }

    std::string check_proof(const std::string& proof) {
        const auto dot = proof.find('.');
        const json::object header = json::parse(b64url_decode(proof.substr(0, dot))).as_object();
        const std::string x5t(header.at("x5t").as_string());
        for (const auto& k : keys) {
            const std::string der = crypto::certificate_der(k.cert.get());
            unsigned char sha1[20];
            SHA1(reinterpret_cast<const unsigned char*>(der.data()), der.size(), sha1);
            std::string expected = crypto::base64_encode(std::string(reinterpret_cast<char*>(sha1), 20));
            expected.erase(std::remove(expected.begin(), expected.end(), '\n'), expected.end());
            while (!expected.empty() && expected.back() == '=')
                expected.pop_back();
            for (char& c : expected) {
                if (c == '+') c = '-';
                if (c == '/') c = '_';
            }
            if (expected != x5t) continue;
            const Jwt jwt = verify_jwt(proof, k.cert.get());  // throws when the signature is wrong
            if (jwt.claims.at("aud").as_string() != "00000002-0000-0000-c000-000000000000")
                throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "proof: wrong aud");
            if (jwt.claims.at("iss").as_string() != object_id) throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "proof: wrong iss");
            const auto nbf = jwt.claims.at("nbf").as_int64();
            const auto exp = jwt.claims.at("exp").as_int64();
            const auto now = static_cast<std::int64_t>(std::time(nullptr));
            if (exp - nbf > 600 || nbf > now + 60 || exp < now) throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "proof: bad lifetime");
            proof_signers.push_back(k.thumbprint);
            return k.thumbprint;
        }
        throw sdk::Error(CC_ERR_DENIED, "proof: signed by a key the application does not have");
    }

    json::value call(const std::string& method, const std::string& path, const std::string& body) {
        std::lock_guard lock(mutex);
        const std::string base = "/v1.0/applications/" + object_id;
        if (method == "GET" && path == base + "?$select=keyCredentials") {
            calls.push_back("GET");
            json::array list;
            for (const auto& k : keys)
                list.push_back(json::object{{"keyId", k.key_id},
                                            {"customKeyIdentifier", k.thumbprint},
                                            {"type", "AsymmetricX509Cert"},
                                            {"usage", "Verify"},
                                            {"key", nullptr}});
            return json::object{{"keyCredentials", list}};
        }
        const json::object request = json::parse(body).as_object();
        if (method == "POST" && path == base + "/addKey") {
            calls.push_back("addKey");
            last_add_body = body;
            if (fail_add) throw sdk::Error(CC_ERR_UNAVAILABLE, "POST https://graph/v1.0/.../addKey: HTTP 503");
            check_proof(std::string(request.at("proof").as_string()));
            const auto& kc = request.at("keyCredential").as_object();
            REQUIRE(kc.at("type").as_string() == "AsymmetricX509Cert");
            REQUIRE(kc.at("usage").as_string() == "Verify");
            REQUIRE(request.at("passwordCredential").is_null());
            const std::string der = crypto::base64_decode(kc.at("key").as_string());
            const std::string pem =
                "-----BEGIN CERTIFICATE-----\n" + crypto::base64_encode(der) + "\n-----END CERTIFICATE-----\n";
            add_existing(pem);
            if (lose_add_answer) throw sdk::Error(CC_ERR_UNAVAILABLE, "POST https://graph/v1.0/.../addKey: connection reset");
            return json::object{{"keyId", keys.back().key_id}, {"type", "AsymmetricX509Cert"}, {"usage", "Verify"}};
        }
        if (method == "POST" && path == base + "/removeKey") {
            const std::string key_id(request.at("keyId").as_string());
            calls.push_back("removeKey " + key_id);
            check_proof(std::string(request.at("proof").as_string()));
            const auto it = std::find_if(keys.begin(), keys.end(), [&](const Key& k) { return k.key_id == key_id; });
            if (it == keys.end()) throw sdk::Error(CC_ERR_NOT_FOUND, "no such key");
            keys.erase(it);
            return json::object{};
        }
        throw sdk::Error(CC_ERR_NOT_FOUND, "unexpected Graph call " + method + " " + path);
    }

    intune::GraphAccess access() {
        return {[this](const std::string& m, const std::string& p, const std::string& b) { return call(m, p, b); },
                [this] { return object_id; }};
    }
    int count(const std::string& prefix) {
        std::lock_guard lock(mutex);
        return static_cast<int>(
            std::count_if(calls.begin(), calls.end(), [&](const std::string& c) { return c.starts_with(prefix); }));
    }
    bool registered(const std::string& thumbprint) {
        std::lock_guard lock(mutex);
        return std::any_of(keys.begin(), keys.end(), [&](const Key& k) { return k.thumbprint == thumbprint; });
    }
};

/// The sign-in test the plugin would run: here, a client assertion the fake "token endpoint"
/// accepts only when signed by a key the application has.
intune::CredentialRenewer::SignInTest sign_in_with(FakeGraph& graph, std::atomic<int>& count, std::atomic<bool>& fail) {
    return [&graph, &count, &fail](const intune::Credential& c) {
        ++count;
        if (fail) throw sdk::Error(CC_ERR_DENIED, "AADSTS700027: the client assertion is not valid (test)");
        const std::string assertion = intune::client_assertion(c, "11111111-2222-3333-4444-555555555555", "https://login/token");
        std::lock_guard lock(graph.mutex);
        for (const auto& k : graph.keys)
            if (k.thumbprint == c.thumbprint) {
                (void)verify_jwt(assertion, k.cert.get());
                return;
            }
        throw sdk::Error(CC_ERR_DENIED, "AADSTS700027: key not registered");
    };
}

}  // namespace

TEST_CASE("intune credential: RS256 and ES256 JWTs verify with python3-cryptography, claims as Entra ID expects",
          "[intune][credential]") {
    test::TempDir dir;
    for (const std::string algorithm : {"rsa", "ec"}) {
        make_credential_files(dir.path(), algorithm, algorithm, 30);
        FakeHost host(dir.path() / "state");
        intune::CredentialStore store(section_for(dir.path(), algorithm), dir.path() / "state");
        const auto cred = store.current();
        REQUIRE(cred);
        CHECK(cred->thumbprint.size() == 40);
        CHECK(cred->thumbprint == [&] {
            std::string t = crypto::fingerprint_hex(cred->certificate.get(), EVP_sha1());
            for (char& c : t)
                c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
            return t;
        }());

        const std::string assertion = intune::client_assertion(*cred, "the-client", "https://login.example/t/oauth2/v2.0/token");
        const Jwt a = verify_jwt(assertion, cred->certificate.get());
        CHECK(a.header.at("typ").as_string() == "JWT");
        CHECK(a.header.at("x5t").as_string() == cred->x5t);
        CHECK(a.header.at("x5t#S256").as_string() == cred->x5t_s256);
        CHECK(a.claims.at("aud").as_string() == "https://login.example/t/oauth2/v2.0/token");
        CHECK(a.claims.at("iss").as_string() == "the-client");
        CHECK(a.claims.at("sub").as_string() == "the-client");
        CHECK(a.claims.at("jti").as_string().size() == 36);
        CHECK(a.claims.at("exp").as_int64() - a.claims.at("nbf").as_int64() == 600);
        CHECK(intune::client_assertion(*cred, "c", "aud") != intune::client_assertion(*cred, "c", "aud"));  // a new jti each time

        const std::string proof = intune::proof_of_possession(*cred, "app-object-id");
        const Jwt p = verify_jwt(proof, cred->certificate.get());
        CHECK(p.claims.at("aud").as_string() == "00000002-0000-0000-c000-000000000000");
        CHECK(p.claims.at("iss").as_string() == "app-object-id");
        CHECK(p.claims.at("exp").as_int64() - p.claims.at("nbf").as_int64() <= 600);

        // An independent implementation: python3-cryptography verifies the signature and the x5t.
        test::write_file(dir.path() / "jwt.txt", assertion);
        const std::string script = R"PY(
import base64, hashlib, json, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
def d(s): return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
tok = open(sys.argv[1]).read().strip()
h, c, s = tok.split(".")
cert = x509.load_pem_x509_certificate(open(sys.argv[2], "rb").read())
hdr = json.loads(d(h))
assert hdr["x5t"] == base64.urlsafe_b64encode(hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).digest()).rstrip(b"=").decode()
sig = d(s)
pub = cert.public_key()
if hdr["alg"] == "RS256":
    pub.verify(sig, (h + "." + c).encode(), padding.PKCS1v15(), hashes.SHA256())
else:
    assert hdr["alg"] == "ES256" and len(sig) == 64
    der = utils.encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    pub.verify(der, (h + "." + c).encode(), ec.ECDSA(hashes.SHA256()))
print("ok")
)PY";
        test::write_file(dir.path() / "verify.py", script);
        const std::string verify = "/usr/bin/python3 " + (dir.path() / "verify.py").string() + " " +
                                   (dir.path() / "jwt.txt").string() + " " + (dir.path() / (algorithm + ".crt")).string() +
                                   " >/dev/null";
        CHECK(run(verify) == 0);
        // ... and refuses a token whose claims were altered after signing.
        const auto dot1 = assertion.find('.');
        const auto dot2 = assertion.find('.', dot1 + 1);
        std::string forged_claims = crypto::base64_encode(R"({"aud":"x","iss":"evil"})");
        while (!forged_claims.empty() && forged_claims.back() == '=')
            forged_claims.pop_back();
        test::write_file(dir.path() / "jwt.txt", assertion.substr(0, dot1 + 1) + forged_claims + assertion.substr(dot2));
        CHECK(run(verify + " 2>/dev/null") != 0);
        CHECK_THROWS(verify_jwt(assertion.substr(0, dot1 + 1) + forged_claims + assertion.substr(dot2), cred->certificate.get()));
    }
}

TEST_CASE("intune credential: the store refuses a key that is not the certificate's, and bad configuration",
          "[intune][credential]") {
    test::TempDir dir;
    make_credential_files(dir.path(), "one", "rsa", 30);
    make_credential_files(dir.path(), "two", "rsa", 30);
    auto error_of = [&](const json::object& section) {
        try {
            intune::CredentialStore store(section, dir.path() / "state");
        } catch (const sdk::Error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    auto mixed = section_for(dir.path(), "one");
    mixed["credential_key"] = (dir.path() / "two.key").string();
    CHECK_THAT(error_of(mixed), Contains("does not belong to the certificate"));
    auto missing = section_for(dir.path(), "one");
    missing["credential_certificate"] = (dir.path() / "nope.crt").string();
    CHECK_THAT(error_of(missing), Contains("credential_certificate"));
    auto relative = section_for(dir.path(), "one");
    relative["credential_key"] = "one.key";
    CHECK_THAT(error_of(relative), Contains("credential_key: expected an absolute PEM path or a pkcs11: URI"));
    json::object none{{"client_id", "x"}};
    CHECK_THAT(error_of(none), Contains("needs both credential_certificate and credential_key"));
    auto not_cert = section_for(dir.path(), "one");
    not_cert["credential_certificate"] = (dir.path() / "one.key").string();
    CHECK_THAT(error_of(not_cert), Contains("holds no PEM certificate"));
    // The key never appears in an error.
    CHECK_THAT(error_of(mixed), !Contains("PRIVATE KEY"));
    // A PEM key protected by a passphrase (credential_key_pin_file).
    REQUIRE(run("openssl pkey -in " + (dir.path() / "one.key").string() + " -aes256 -passout pass:hunter22 -out " +
                (dir.path() / "enc.key").string()) == 0);
    test::write_file(dir.path() / "pass", "hunter22\n");
    auto encrypted = section_for(dir.path(), "one");
    encrypted["credential_key"] = (dir.path() / "enc.key").string();
    encrypted["credential_key_pin_file"] = (dir.path() / "pass").string();
    CHECK(error_of(encrypted) == "no error");
    test::write_file(dir.path() / "pass", "wrong\n");
    CHECK_THAT(error_of(encrypted), Contains("wrong passphrase"));
    CHECK_THAT(error_of(encrypted), !Contains("wrong\n"));
}

TEST_CASE("intune credential: a renewed credential in the state directory is preferred only when it lasts longer",
          "[intune][credential]") {
    test::TempDir dir;
    make_credential_files(dir.path(), "old", "rsa", 20);
    make_credential_files(dir.path(), "new", "rsa", 300);
    make_credential_files(dir.path(), "older", "rsa", 5);
    const fs::path state = dir.path() / "state";
    intune::CredentialStore first(section_for(dir.path(), "new"), state);
    const auto newer = first.current();
    {
        intune::CredentialStore store(section_for(dir.path(), "old"), state);
        CHECK(store.current()->thumbprint != newer->thumbprint);
        // switch_to persists before it returns: a new store (a restart) finds it.
        intune::CredentialStore source(section_for(dir.path(), "new"), dir.path() / "other");
        store.switch_to(source.current());
        CHECK(store.current()->thumbprint == newer->thumbprint);
    }
    const fs::path file = state / "credential" / "credential.pem";
    REQUIRE(fs::exists(file));
    struct stat st {};
    REQUIRE(::stat(file.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    intune::CredentialStore restarted(section_for(dir.path(), "old"), state);
    CHECK(restarted.current()->thumbprint == newer->thumbprint);
    // The configured credential wins when it lasts longer (the operator installed a fresher one).
    make_credential_files(dir.path(), "fresh", "rsa", 900);
    intune::CredentialStore operator_choice(section_for(dir.path(), "fresh"), state);
    CHECK(operator_choice.current()->thumbprint != newer->thumbprint);
    // A damaged renewed credential is an error, never a silent fallback.
    test::write_file(file, "garbage");
    CHECK_THROWS_WITH(intune::CredentialStore(section_for(dir.path(), "old"), state), Contains("the renewed credential"));
}

TEST_CASE("intune renewal: addKey with a proof by the old key, sign-in test, switch, removeKey with a proof by the new key",
          "[intune][renewal]") {
    test::TempDir dir;
    make_credential_files(dir.path(), "cred", "rsa", 20);
    const fs::path state = dir.path() / "state";
    FakeHost host(state);
    FakeGraph graph;
    graph.add_existing(test::read_file(dir.path() / "cred.crt"));
    const std::string old_key_id = graph.keys.front().key_id;
    auto section = section_for(dir.path(), "cred");
    intune::CredentialStore store(section, state);
    const auto old = store.current();
    std::atomic<int> sign_ins{0};
    std::atomic<bool> fail_sign_in{false};
    intune::CredentialRenewer renewer(host.host(), section, store, graph.access(), sign_in_with(graph, sign_ins, fail_sign_in));

    renewer.renew_now();
    const auto now_current = store.current();
    CHECK(now_current->thumbprint != old->thumbprint);
    CHECK(graph.count("addKey") == 1);
    CHECK(graph.count("removeKey " + old_key_id) == 1);
    REQUIRE(graph.proof_signers.size() == 2);
    CHECK(graph.proof_signers[0] == old->thumbprint);          // addKey: proof by the current key
    CHECK(graph.proof_signers[1] == now_current->thumbprint);  // removeKey: proof by the new key
    CHECK_FALSE(graph.registered(old->thumbprint));
    CHECK(graph.registered(now_current->thumbprint));
    CHECK(sign_ins == 1);
    const std::vector<uint32_t> expected{CC_EV_TenantCredentialRenewalStarted, CC_EV_TenantCredentialKeyCreated,
                                         CC_EV_TenantCredentialKeyAdded, CC_EV_TenantCredentialSwitched,
                                         CC_EV_TenantCredentialOldKeyRemoved};
    CHECK(host.events.ids() == expected);

    // The new certificate: self-signed, v3, CN=certconnector <client id>, SHA-256, 365 days, RSA 2048.
    X509* c = now_current->certificate.get();
    CHECK(X509_get_version(c) == 2);
    CHECK(crypto::name_string(X509_get_subject_name(c)) == "CN=certconnector 11111111-2222-3333-4444-555555555555");
    CHECK(X509_NAME_cmp(X509_get_subject_name(c), X509_get_issuer_name(c)) == 0);
    CHECK(X509_verify(c, X509_get0_pubkey(c)) == 1);  // self-signed
    CHECK(X509_get_signature_nid(c) == NID_sha256WithRSAEncryption);
    CHECK(crypto::key_type_of(now_current->key.get()) == "rsa2048");
    const auto days =
        std::chrono::duration_cast<std::chrono::hours>(now_current->not_after - std::chrono::system_clock::now()).count() / 24;
    CHECK((days == 364 || days == 365));
    const json::object add = json::parse(graph.last_add_body).as_object();
    CHECK_THAT(std::string(add.at("keyCredential").at("displayName").as_string()), Contains("certconnector 20"));
    CHECK(crypto::base64_decode(add.at("keyCredential").at("key").as_string()) == crypto::certificate_der(c));
    CHECK(add.at("keyCredential").as_object().size() == 4);

    // Durable: the key file is 0600, nothing is pending, and a restart picks the new credential.
    CHECK_FALSE(fs::exists(state / "credential" / "pending.pem"));
    CHECK_FALSE(fs::exists(state / "credential" / "remove-old.json"));
    intune::CredentialStore restarted(section, state);
    CHECK(restarted.current()->thumbprint == now_current->thumbprint);
    CHECK(renewer.state().at("renewal").as_string() == "idle");
    CHECK_THAT(test::read_file(state / "credential" / "credential.pem"), Contains("PRIVATE KEY"));
    // No event names the key.
    for (const auto id : expected)
        CHECK_THAT(host.events.text(id), !Contains("PRIVATE KEY"));
}

TEST_CASE("intune renewal: a failing addKey is event 615, the old credential keeps working, and the retry reuses the pending key",
          "[intune][renewal]") {
    test::TempDir dir;
    make_credential_files(dir.path(), "cred", "ec", 20);  // an EC current key signs the first proof (ES256)
    const fs::path state = dir.path() / "state";
    FakeHost host(state);
    FakeGraph graph;
    graph.add_existing(test::read_file(dir.path() / "cred.crt"));
    auto section = section_for(dir.path(), "cred");
    intune::CredentialStore store(section, state);
    const auto old = store.current();
    std::atomic<int> sign_ins{0};
    std::atomic<bool> fail_sign_in{false};
    intune::CredentialRenewer renewer(host.host(), section, store, graph.access(), sign_in_with(graph, sign_ins, fail_sign_in));

    graph.fail_add = true;
    CHECK_THROWS_WITH(renewer.renew_now(), Contains("addKey"));
    CHECK(store.current()->thumbprint == old->thumbprint);  // still signing in with the old one
    CHECK(host.events.has(CC_EV_TenantCredentialRenewalFailed));
    CHECK_THAT(host.events.text(CC_EV_TenantCredentialRenewalFailed), Contains("retried in 5 min"));
    CHECK_FALSE(host.events.has(CC_EV_TenantCredentialSwitched));
    CHECK(renewer.state().at("renewal").as_string() == "failed");
    CHECK_THAT(std::string(renewer.state().at("last_error").as_string()), Contains("HTTP 503"));
    REQUIRE(fs::exists(state / "credential" / "pending.pem"));
    const auto pending_before = test::read_file(state / "credential" / "pending.pem");
    struct stat st {};
    REQUIRE(::stat((state / "credential" / "pending.pem").c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    // The old credential still makes valid client assertions.
    (void)verify_jwt(intune::client_assertion(*store.current(), "c", "aud"), old->certificate.get());

    // A second failure doubles the backoff.
    CHECK_THROWS(renewer.renew_now());
    CHECK_THAT(host.events.text(CC_EV_TenantCredentialRenewalFailed), Contains("retried in 10 min"));

    graph.fail_add = false;
    host.events.clear();
    renewer.renew_now();
    CHECK(graph.count("addKey") == 3);
    CHECK_FALSE(host.events.has(CC_EV_TenantCredentialKeyCreated));  // no second key was made
    const auto added = crypto::load_certificate(pending_before);
    CHECK(store.current()->thumbprint == [&] {
        std::string t = crypto::fingerprint_hex(added.get(), EVP_sha1());
        for (char& ch : t)
            ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
        return t;
    }());
    CHECK_FALSE(graph.registered(old->thumbprint));
    CHECK(renewer.state().at("last_error").is_null());
}

TEST_CASE("intune renewal: resumes after a crash between addKey and the switch without a second key", "[intune][renewal]") {
    test::TempDir dir;
    make_credential_files(dir.path(), "cred", "rsa", 20);
    const fs::path state = dir.path() / "state";
    FakeGraph graph;
    graph.add_existing(test::read_file(dir.path() / "cred.crt"));
    auto section = section_for(dir.path(), "cred");
    std::string old_thumbprint;
    std::atomic<int> sign_ins{0};
    std::atomic<bool> fail_sign_in{false};
    {
        // Graph registers the key but the answer is lost; then the process "dies".
        FakeHost host(state);
        intune::CredentialStore store(section, state);
        old_thumbprint = store.current()->thumbprint;
        intune::CredentialRenewer renewer(host.host(), section, store, graph.access(),
                                          sign_in_with(graph, sign_ins, fail_sign_in));
        graph.lose_add_answer = true;
        CHECK_THROWS(renewer.renew_now());
        CHECK(store.current()->thumbprint == old_thumbprint);
        CHECK(graph.keys.size() == 2);
    }
    graph.lose_add_answer = false;
    {
        // Restart: the pending key is on the application already: no addKey, straight to the sign-in test.
        FakeHost host(state);
        intune::CredentialStore store(section, state);
        CHECK(store.current()->thumbprint == old_thumbprint);
        intune::CredentialRenewer renewer(host.host(), section, store, graph.access(),
                                          sign_in_with(graph, sign_ins, fail_sign_in));
        fail_sign_in = true;  // Entra has not replicated the new key yet
        CHECK_THROWS_WITH(renewer.renew_now(), Contains("sign-in"));
        CHECK(graph.count("addKey") == 1);
        fail_sign_in = false;
        renewer.renew_now();
        CHECK(graph.count("addKey") == 1);  // still one: the key that was added is the one in use
        CHECK(store.current()->thumbprint != old_thumbprint);
        CHECK(graph.keys.size() == 1);
        CHECK(graph.registered(store.current()->thumbprint));
        CHECK(host.events.has(CC_EV_TenantCredentialSwitched));
        CHECK(host.events.has(CC_EV_TenantCredentialOldKeyRemoved));
    }
}

TEST_CASE("intune renewal: a crash after the switch still removes the old key; the current key is never removed",
          "[intune][renewal]") {
    test::TempDir dir;
    make_credential_files(dir.path(), "cred", "rsa", 20);
    const fs::path state = dir.path() / "state";
    FakeGraph graph;
    graph.add_existing(test::read_file(dir.path() / "cred.crt"));
    auto section = section_for(dir.path(), "cred");
    std::atomic<int> sign_ins{0};
    std::atomic<bool> fail_sign_in{false};
    FakeHost host(state);
    intune::CredentialStore store(section, state);
    const std::string old_thumbprint = store.current()->thumbprint;
    intune::CredentialRenewer renewer(host.host(), section, store, graph.access(), sign_in_with(graph, sign_ins, fail_sign_in));
    // removeKey fails (Graph down after the switch): the switch stands, the removal is retried.
    auto real = graph.access();
    bool graph_down = false;
    intune::GraphAccess flaky{[&](const std::string& m, const std::string& p, const std::string& b) {
                                  if (graph_down && p.ends_with("/removeKey")) throw sdk::Error(CC_ERR_UNAVAILABLE, "HTTP 503");
                                  return real.call(m, p, b);
                              },
                              real.application_object_id};
    intune::CredentialRenewer renewer2(host.host(), section, store, flaky, sign_in_with(graph, sign_ins, fail_sign_in));
    graph_down = true;
    CHECK_THROWS_WITH(renewer2.renew_now(), Contains("removeKey"));
    const std::string new_thumbprint = store.current()->thumbprint;
    CHECK(new_thumbprint != old_thumbprint);
    CHECK(graph.registered(old_thumbprint));
    CHECK(fs::exists(state / "credential" / "remove-old.json"));
    graph_down = false;
    // After a restart, the background pass finishes the removal (the credential is fresh: no new renewal).
    intune::CredentialStore restarted(section, state);
    CHECK(restarted.current()->thumbprint == new_thumbprint);
    intune::CredentialRenewer renewer3(host.host(), section, restarted, graph.access(),
                                       sign_in_with(graph, sign_ins, fail_sign_in));
    renewer3.start();
    for (int i = 0; i < 100 && graph.registered(old_thumbprint); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    renewer3.stop();
    CHECK_FALSE(graph.registered(old_thumbprint));
    CHECK(graph.registered(new_thumbprint));
    CHECK(graph.count("addKey") == 1);
    CHECK_FALSE(fs::exists(state / "credential" / "remove-old.json"));
    (void)renewer;
}

TEST_CASE("intune renewal: the background thread renews at start when less than renew_before_days remain, and warns",
          "[intune][renewal]") {
    test::TempDir dir;
    make_credential_files(dir.path(), "cred", "rsa", 10);
    const fs::path state = dir.path() / "state";
    FakeGraph graph;
    graph.add_existing(test::read_file(dir.path() / "cred.crt"));
    std::atomic<int> sign_ins{0};
    std::atomic<bool> fail_sign_in{false};

    SECTION("renews at start") {
        auto section = section_for(dir.path(), "cred");
        FakeHost host(state);
        intune::CredentialStore store(section, state);
        const auto old = store.current();
        intune::CredentialRenewer renewer(host.host(), section, store, graph.access(),
                                          sign_in_with(graph, sign_ins, fail_sign_in));
        renewer.start();
        for (int i = 0; i < 200 && !host.events.has(CC_EV_TenantCredentialOldKeyRemoved); ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        renewer.stop();
        CHECK(store.current()->thumbprint != old->thumbprint);
        CHECK_FALSE(host.events.has(CC_EV_TenantCredentialExpiring));  // renewed: no warning
        CHECK_FALSE(renewer.state().at("next_check").is_null());
    }
    SECTION("a fresh credential is left alone") {
        auto section = section_for(dir.path(), "cred");
        section["renew_before_days"] = 5;
        section["warn_before_days"] = 3;
        FakeHost host(state);
        intune::CredentialStore store(section, state);
        intune::CredentialRenewer renewer(host.host(), section, store, graph.access(),
                                          sign_in_with(graph, sign_ins, fail_sign_in));
        renewer.start();
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        renewer.stop();
        CHECK(graph.calls.empty());
        CHECK(host.events.ids().empty());
    }
    SECTION("failing renewal within warn_before_days: 615 then 616") {
        auto section = section_for(dir.path(), "cred");
        FakeHost host(state);
        intune::CredentialStore store(section, state);
        graph.fail_add = true;
        intune::CredentialRenewer renewer(host.host(), section, store, graph.access(),
                                          sign_in_with(graph, sign_ins, fail_sign_in));
        renewer.start();
        for (int i = 0; i < 200 && !host.events.has(CC_EV_TenantCredentialExpiring); ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        renewer.stop();
        CHECK(host.events.has(CC_EV_TenantCredentialRenewalFailed));
        CHECK_THAT(host.events.text(CC_EV_TenantCredentialExpiring), Contains("has not been renewed"));
        CHECK(graph.count("addKey") == 1);  // the retry waits 5 minutes
    }
    SECTION("credential_renewal = false: no renewal, still a warning") {
        auto section = section_for(dir.path(), "cred");
        section["credential_renewal"] = false;
        FakeHost host(state);
        intune::CredentialStore store(section, state);
        intune::CredentialRenewer renewer(host.host(), section, store, graph.access(),
                                          sign_in_with(graph, sign_ins, fail_sign_in));
        renewer.start();
        for (int i = 0; i < 100 && !host.events.has(CC_EV_TenantCredentialExpiring); ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        renewer.stop();
        CHECK(graph.calls.empty());
        CHECK_THAT(host.events.text(CC_EV_TenantCredentialExpiring), Contains("credential_renewal = false"));
    }
}

TEST_CASE("intune renewal: configuration errors", "[intune][renewal]") {
    test::TempDir dir;
    make_credential_files(dir.path(), "cred", "rsa", 20);
    FakeHost host(dir.path() / "state");
    FakeGraph graph;
    std::atomic<int> sign_ins{0};
    std::atomic<bool> fail_sign_in{false};
    auto section = section_for(dir.path(), "cred");
    intune::CredentialStore store(section, dir.path() / "state");
    auto error_of = [&](json::object s) {
        try {
            intune::CredentialRenewer r(host.host(), s, store, graph.access(), sign_in_with(graph, sign_ins, fail_sign_in));
        } catch (const sdk::Error& e) {
            CHECK(e.code() == CC_ERR_INVALID_ARGUMENT);
            return std::string(e.what());
        }
        return std::string("no error");
    };
    auto s = section;
    s["renew_before_days"] = 400;
    CHECK_THAT(error_of(s), Contains("credential_validity_days (365) must be longer than renew_before_days (400)"));
    s = section;
    s["renew_before_days"] = "30";
    CHECK_THAT(error_of(s), Contains("renew_before_days: expected an integer"));
    s = section;
    s["credential_renewal"] = "yes";
    CHECK_THAT(error_of(s), Contains("credential_renewal: expected true or false"));
    s = section;
    s.erase("client_id");
    CHECK_THAT(error_of(s), Contains("client_id"));
}
