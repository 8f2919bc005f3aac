#include "keys/KeyStore.hpp"

#include <openssl/err.h>
#include <openssl/rsa.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/uri.h>

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <fstream>

namespace certconn::host {

namespace fs = std::filesystem;

const EVP_MD* oaep_digest(const std::string& padding) {
    std::string p;
    for (char c : padding)
        if (c != '-' && c != '_') p += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (p == "oaepsha256") return EVP_sha256();
    if (p == "oaepsha384") return EVP_sha384();
    if (p == "oaepsha512") return EVP_sha512();
    if (p == "pkcs1" || p == "oaepsha1" || p == "none")
        throw std::invalid_argument("padding '" + padding +
                                    "' is refused: only RSA-OAEP with SHA-256, SHA-384 or SHA-512 is accepted");
    throw std::invalid_argument("unknown padding '" + padding + "' (expected oaep-sha256, oaep-sha384 or oaep-sha512)");
}

std::string redact_pin(const std::string& uri) {
    return crypto::redact_pkcs11_uri(uri);
}

namespace {

struct UriFree {
    void operator()(P11KitUri* u) const noexcept { p11_kit_uri_free(u); }
};
struct ModulesRelease {
    void operator()(CK_FUNCTION_LIST** m) const noexcept { p11_kit_modules_finalize_and_release(m); }
};

std::string trim_padded(const unsigned char* text, std::size_t n) {
    std::string s(reinterpret_cast<const char*>(text), n);
    while (!s.empty() && s.back() == ' ')
        s.pop_back();
    return s;
}

void check_rv(CK_RV rv, const std::string& what) {
    if (rv != CKR_OK) {
        char buf[32];
        const std::string hex =
            std::snprintf(buf, sizeof buf, "0x%08lX", static_cast<unsigned long>(rv)) > 0 ? std::string(buf) : std::string("0x?");
        std::string why = rv == CKR_PIN_INCORRECT ? " (wrong PIN)" : rv == CKR_PIN_LOCKED ? " (PIN locked)" : "";
        throw std::runtime_error(what + " failed: PKCS#11 error " + hex + why);
    }
}

sdk::Secret pin_of(const std::string& uri) {
    sdk::Secret pin = crypto::pkcs11_pin(uri);
    if (pin.empty())
        throw std::invalid_argument(
            "the pkcs11: URI carries no pin-value or pin-source; the token needs a login to create a key");
    return pin;
}

// "pkcs11:token=T;object=x?pin-value=1" -> path attributes without object/id/type, then ours.
std::string object_uri(const std::string& uri, const std::string& label) {
    std::string body = uri.substr(7), query;
    if (auto q = body.find('?'); q != std::string::npos) {
        query = body.substr(q);
        body.resize(q);
    }
    std::string out = "pkcs11:";
    std::size_t start = 0;
    while (start <= body.size()) {
        std::size_t end = body.find(';', start);
        if (end == std::string::npos) end = body.size();
        const std::string attr = body.substr(start, end - start);
        if (!attr.empty() && attr.rfind("object=", 0) != 0 && attr.rfind("id=", 0) != 0 && attr.rfind("type=", 0) != 0)
            out += attr + ";";
        start = end + 1;
    }
    return out + "object=" + label + ";type=private" + query;
}

}  // namespace

std::string pkcs11_generate_rsa(const std::string& text, const std::string& label, int bits) {
    if (text.rfind("pkcs11:", 0) != 0) throw std::invalid_argument("'" + redact_pin(text) + "' is not a pkcs11: URI");
    std::unique_ptr<P11KitUri, UriFree> uri(p11_kit_uri_new());
    if (const int rc = p11_kit_uri_parse(text.c_str(), P11_KIT_URI_FOR_ANY, uri.get()); rc != P11_KIT_URI_OK)
        throw std::invalid_argument("pkcs11: URI '" + redact_pin(text) + "': " + p11_kit_uri_message(rc));
    const sdk::Secret pin = pin_of(text);
    std::unique_ptr<CK_FUNCTION_LIST*, ModulesRelease> modules(p11_kit_modules_load_and_initialize(0));
    if (!modules) throw std::runtime_error(std::string("cannot load the PKCS#11 modules: ") + p11_kit_message());

    for (CK_FUNCTION_LIST** m = modules.get(); *m; ++m) {
        CK_FUNCTION_LIST* f = *m;
        CK_ULONG count = 0;
        if (f->C_GetSlotList(CK_TRUE, nullptr, &count) != CKR_OK || count == 0) continue;
        std::vector<CK_SLOT_ID> slots(count);
        if (f->C_GetSlotList(CK_TRUE, slots.data(), &count) != CKR_OK) continue;
        for (CK_ULONG i = 0; i < count; ++i) {
            CK_TOKEN_INFO info{};
            if (f->C_GetTokenInfo(slots[i], &info) != CKR_OK || p11_kit_uri_match_token_info(uri.get(), &info) != 1) continue;
            const std::string token = trim_padded(info.label, sizeof info.label);
            CK_SESSION_HANDLE session = 0;
            check_rv(f->C_OpenSession(slots[i], CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &session),
                     "opening a session on token '" + token + "'");
            struct Close {
                CK_FUNCTION_LIST* f;
                CK_SESSION_HANDLE s;
                ~Close() {
                    f->C_Logout(s);
                    f->C_CloseSession(s);
                }
            } close{f, session};
            CK_RV rv =
                f->C_Login(session, CKU_USER, reinterpret_cast<CK_UTF8CHAR*>(const_cast<char*>(pin.reveal_c_str())), pin.size());
            if (rv != CKR_USER_ALREADY_LOGGED_IN) check_rv(rv, "logging in to token '" + token + "'");

            // A label names one key: refuse to create a second object with it.
            CK_OBJECT_CLASS priv_class = CKO_PRIVATE_KEY;
            CK_ATTRIBUTE find[] = {{CKA_CLASS, &priv_class, sizeof priv_class},
                                   {CKA_LABEL, const_cast<char*>(label.data()), label.size()}};
            check_rv(f->C_FindObjectsInit(session, find, 2), "searching the token");
            CK_OBJECT_HANDLE found = 0;
            CK_ULONG n = 0;
            f->C_FindObjects(session, &found, 1, &n);
            f->C_FindObjectsFinal(session);
            if (n > 0)
                throw std::invalid_argument("token '" + token + "' already holds a private key labelled '" + label +
                                            "'; reference it with `keys add` instead");

            const std::string id = crypto::random_bytes(16);
            CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
            CK_ULONG modulus_bits = static_cast<CK_ULONG>(bits);
            CK_BYTE exponent[] = {0x01, 0x00, 0x01};
            CK_ATTRIBUTE pub[] = {{CKA_TOKEN, &yes, sizeof yes},
                                  {CKA_ENCRYPT, &yes, sizeof yes},
                                  {CKA_VERIFY, &yes, sizeof yes},
                                  {CKA_MODULUS_BITS, &modulus_bits, sizeof modulus_bits},
                                  {CKA_PUBLIC_EXPONENT, exponent, sizeof exponent},
                                  {CKA_LABEL, const_cast<char*>(label.data()), label.size()},
                                  {CKA_ID, const_cast<char*>(id.data()), id.size()}};
            CK_ATTRIBUTE priv[] = {{CKA_TOKEN, &yes, sizeof yes},
                                   {CKA_PRIVATE, &yes, sizeof yes},
                                   {CKA_SENSITIVE, &yes, sizeof yes},
                                   {CKA_EXTRACTABLE, &no, sizeof no},
                                   {CKA_DECRYPT, &yes, sizeof yes},
                                   {CKA_SIGN, &yes, sizeof yes},
                                   {CKA_LABEL, const_cast<char*>(label.data()), label.size()},
                                   {CKA_ID, const_cast<char*>(id.data()), id.size()}};
            CK_MECHANISM mechanism{CKM_RSA_PKCS_KEY_PAIR_GEN, nullptr, 0};
            CK_OBJECT_HANDLE pub_handle = 0, priv_handle = 0;
            check_rv(f->C_GenerateKeyPair(session, &mechanism, pub, sizeof pub / sizeof *pub, priv, sizeof priv / sizeof *priv,
                                          &pub_handle, &priv_handle),
                     "generating an RSA-" + std::to_string(bits) + " key pair on token '" + token + "'");
            return object_uri(text, label);
        }
    }
    throw std::invalid_argument("no PKCS#11 token matches '" + redact_pin(text) + "' (see `p11tool --list-tokens`)");
}

KeyStore::KeyStore(fs::path directory) : directory_(std::move(directory)) {}

void KeyStore::check_name(const std::string& name) {
    const bool ok = !name.empty() && name.size() <= 64 && std::isalnum(static_cast<unsigned char>(name[0])) &&
                    std::all_of(name.begin(), name.end(), [](char c) {
                        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
                    });
    if (!ok)
        throw std::invalid_argument("key name '" + name.substr(0, 80) +
                                    "': expected 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit");
}

bool KeyStore::holds(const std::string& name) const {
    return fs::exists(directory_ / (name + ".pem")) || fs::exists(directory_ / (name + ".ref"));
}

std::string KeyStore::create(const std::string& name, int bits, const std::optional<std::string>& pkcs11_uri) {
    check_name(name);
    if (bits != 2048 && bits != 3072 && bits != 4096) throw std::invalid_argument("--size must be 2048, 3072 or 4096");
    if (holds(name)) throw std::invalid_argument("key '" + name + "' already exists in " + directory_.string());
    fs::create_directories(directory_);
    ::chmod(directory_.c_str(), 0700);
    if (pkcs11_uri) return add(name, pkcs11_generate_rsa(*pkcs11_uri, name, bits));
    crypto::PKey key = crypto::generate_key("rsa" + std::to_string(bits));
    crypto::write_file_atomic(directory_ / (name + ".pem"), crypto::private_key_pem(key.get()), 0600);
    return crypto::public_key_pem(key.get());
}

std::string KeyStore::add(const std::string& name, const std::string& path_or_uri) {
    check_name(name);
    if (path_or_uri.rfind("pkcs11:", 0) != 0 && !fs::path(path_or_uri).is_absolute())
        throw std::invalid_argument("'" + redact_pin(path_or_uri) + "' must be a pkcs11: URI or an absolute path");
    if (fs::exists(directory_ / (name + ".pem")))
        throw std::invalid_argument("key '" + name + "' already exists in " + directory_.string());
    crypto::PKey key;
    try {
        key = crypto::load_private_key_from(path_or_uri);
    } catch (const std::exception& e) {
        throw std::invalid_argument("cannot load the key " + redact_pin(path_or_uri) + ": " + e.what());
    }
    if (EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_RSA || EVP_PKEY_get_bits(key.get()) < 2048)
        throw std::invalid_argument("a connector key must be RSA with at least 2048 bits");
    fs::create_directories(directory_);
    ::chmod(directory_.c_str(), 0700);
    crypto::write_file_atomic(directory_ / (name + ".ref"), path_or_uri + "\n", 0600);  // may hold a PIN
    std::lock_guard lock(mutex_);
    cache_.erase(name);
    return crypto::public_key_pem(key.get());
}

std::shared_ptr<crypto::PKey> KeyStore::load(const std::string& name) {
    check_name(name);
    {
        std::lock_guard lock(mutex_);
        if (auto it = cache_.find(name); it != cache_.end()) return it->second;
    }
    std::shared_ptr<crypto::PKey> key;
    if (fs::exists(directory_ / (name + ".pem"))) {
        key = std::make_shared<crypto::PKey>(crypto::load_private_key(crypto::read_file(directory_ / (name + ".pem"), "key")));
    } else if (fs::exists(directory_ / (name + ".ref"))) {
        std::string target = crypto::read_file(directory_ / (name + ".ref"), "key reference");
        while (!target.empty() && (target.back() == '\n' || target.back() == '\r' || target.back() == ' '))
            target.pop_back();
        try {
            key = std::make_shared<crypto::PKey>(crypto::load_private_key_from(target));
        } catch (const std::exception& e) {
            throw std::runtime_error("key '" + name + "' (" + redact_pin(target) + ") cannot be loaded: " + e.what());
        }
    } else {
        throw KeyNotHeld("key '" + name + "' is not held by this connector (no " + name + ".pem or " + name + ".ref in " +
                         directory_.string() + ")");
    }
    std::lock_guard lock(mutex_);
    return cache_.emplace(name, key).first->second;
}

std::string KeyStore::public_pem(const std::string& name) {
    return crypto::public_key_pem(load(name)->get());
}

std::vector<KeyInfo> KeyStore::list() {
    std::vector<KeyInfo> out;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(directory_, ec)) {
        const std::string ext = entry.path().extension().string();
        if (ext != ".pem" && ext != ".ref") continue;
        KeyInfo info;
        info.name = entry.path().stem().string();
        if (ext == ".pem") {
            info.location = "file";
        } else {
            std::string target = crypto::read_file(entry.path(), "key reference");
            while (!target.empty() && (target.back() == '\n' || target.back() == ' '))
                target.pop_back();
            info.location = redact_pin(target);
        }
        try {
            const auto key = load(info.name);
            info.key_type = crypto::key_type_of(key->get());
            unsigned char* der = nullptr;
            const int len = i2d_PUBKEY(key->get(), &der);
            unsigned char digest[EVP_MAX_MD_SIZE];
            unsigned int n = 0;
            EVP_Digest(der, static_cast<std::size_t>(len), digest, &n, EVP_sha256(), nullptr);
            OPENSSL_free(der);
            info.spki_sha256 = crypto::hex_encode(std::string_view(reinterpret_cast<char*>(digest), n));
        } catch (const std::exception& e) {
            info.problem = e.what();
        }
        out.push_back(std::move(info));
    }
    std::sort(out.begin(), out.end(), [](const KeyInfo& a, const KeyInfo& b) { return a.name < b.name; });
    return out;
}

std::string KeyStore::decrypt(const std::string& name, const std::string& padding, std::string_view ciphertext) {
    const EVP_MD* md = oaep_digest(padding);
    const auto key = load(name);
    std::unique_ptr<EVP_PKEY_CTX, crypto::Deleter<EVP_PKEY_CTX_free>> ctx(EVP_PKEY_CTX_new(key->get(), nullptr));
    std::string out;
    std::size_t len = 0;
    const auto* in = reinterpret_cast<const unsigned char*>(ciphertext.data());
    if (!ctx || EVP_PKEY_decrypt_init(ctx.get()) <= 0 || EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_OAEP_PADDING) <= 0 ||
        EVP_PKEY_CTX_set_rsa_oaep_md(ctx.get(), md) <= 0 || EVP_PKEY_CTX_set_rsa_mgf1_md(ctx.get(), md) <= 0 ||
        EVP_PKEY_decrypt(ctx.get(), nullptr, &len, in, ciphertext.size()) <= 0) {
        ERR_clear_error();
        throw std::runtime_error("key '" + name + "' cannot decrypt now (RSA-OAEP setup failed)");
    }
    out.resize(len);
    if (EVP_PKEY_decrypt(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &len, in, ciphertext.size()) <= 0) {
        ERR_clear_error();
        // The usual causes: another key, or another OAEP hash than the job says.
        throw std::invalid_argument("the password does not decrypt with key '" + name + "' and " + padding +
                                    " (encrypted to another key, or with another padding)");
    }
    out.resize(len);
    return out;
}

}  // namespace certconn::host
