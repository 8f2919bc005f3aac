#include "cli/KeyCommands.hpp"

#include "daemon/Accounts.hpp"
#include "keys/KeyStore.hpp"

#include <boost/json.hpp>

#include <openssl/err.h>
#include <openssl/rsa.h>

#include <pwd.h>
#include <unistd.h>

#include <iostream>

namespace certconn::host {

namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

/// Root creating keys for a daemon that runs as `account`: hand the store over to it.
void give_to_service_account(const fs::path& dir, const std::string& name, const std::string& account) {
    if (::geteuid() != 0 || account.empty()) return;
    const auto pw = account_named(account);
    if (!pw) throw std::invalid_argument("service_account '" + account + "' does not exist");
    for (const fs::path& p : {dir, dir / (name + ".pem"), dir / (name + ".ref")})
        if (fs::exists(p) && ::chown(p.c_str(), pw->uid, pw->gid) != 0)
            throw std::runtime_error("cannot give " + p.string() + " to " + account);
}

std::string need(const ParsedOptions& o, const char* option, const std::string& command) {
    auto v = o.value(option);
    if (!v) throw std::invalid_argument(command + " needs --" + option);
    return *v;
}

}  // namespace

int keys_create(const ParsedOptions& o, const fs::path& keys_dir, const std::string& service_account) {
    const std::string name = need(o, "name", "keys create");
    int bits = 3072;
    if (auto size = o.value("size")) {
        try {
            bits = std::stoi(*size);
        } catch (const std::exception&) {
            throw std::invalid_argument("--size must be 2048, 3072 or 4096");
        }
    }
    KeyStore store(keys_dir);
    const std::string pem = store.create(name, bits, o.value("pkcs11"));
    give_to_service_account(keys_dir, name, service_account);
    std::cerr << "created RSA-" << bits << " key '" << name << "' "
              << (o.value("pkcs11") ? "on the token" : "in " + keys_dir.string()) << "; its public key follows\n";
    std::cout << pem;
    return 0;
}

int keys_add(const ParsedOptions& o, const fs::path& keys_dir, const std::string& service_account) {
    const std::string name = need(o, "name", "keys add");
    const auto uri = o.value("pkcs11");
    const auto file = o.value("file");
    if (uri.has_value() == file.has_value())
        throw std::invalid_argument("keys add needs exactly one of --pkcs11 URI and --file PATH");
    KeyStore store(keys_dir);
    const std::string pem = store.add(name, uri ? *uri : fs::absolute(*file).string());
    give_to_service_account(keys_dir, name, service_account);
    std::cerr << "key '" << name << "' now refers to " << redact_pin(uri ? *uri : *file) << "; its public key follows\n";
    std::cout << pem;
    return 0;
}

int keys_export_public(const ParsedOptions& o, const fs::path& keys_dir) {
    KeyStore store(keys_dir);
    std::cout << store.public_pem(need(o, "name", "keys export-public"));
    return 0;
}

int keys_list(const ParsedOptions& o, const fs::path& keys_dir) {
    KeyStore store(keys_dir);
    const auto keys = store.list();
    if (o.has("json")) {
        json::array out;
        for (const auto& k : keys)
            out.push_back(json::object{{"name", k.name},
                                       {"location", k.location},
                                       {"key_type", k.key_type},
                                       {"spki_sha256", k.spki_sha256},
                                       {"problem", k.problem}});
        std::cout << json::serialize(out) << "\n";
        return 0;
    }
    if (keys.empty())
        std::cout << "no connector keys in " << keys_dir.string() << " (create one: certconnector keys create --name K)\n";
    for (const auto& k : keys) {
        std::cout << k.name << "  " << (k.key_type.empty() ? "?" : k.key_type) << "  " << k.location;
        if (!k.spki_sha256.empty()) std::cout << "  spki-sha256:" << k.spki_sha256;
        if (!k.problem.empty()) std::cout << "  UNUSABLE: " << k.problem;
        std::cout << "\n";
    }
    return 0;
}

int pfx_encrypt_password(const ParsedOptions& o) {
    const std::string key_file = need(o, "key-public", "pfx encrypt-password");
    const std::string padding = o.value("padding").value_or("oaep-sha512");
    const EVP_MD* md = oaep_digest(padding);
    crypto::PKey key = crypto::load_public_key(crypto::read_file(key_file, "public key"));
    if (EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_RSA) throw std::invalid_argument(key_file + ": a connector key is RSA");
    std::string password;
    if (auto file = o.value("password-file")) {
        password = crypto::read_file(*file, "password file");
    } else {
        std::getline(std::cin, password);
    }
    while (!password.empty() && (password.back() == '\n' || password.back() == '\r'))
        password.pop_back();
    std::unique_ptr<EVP_PKEY_CTX, crypto::Deleter<EVP_PKEY_CTX_free>> ctx(EVP_PKEY_CTX_new(key.get(), nullptr));
    std::size_t len = 0;
    const auto* in = reinterpret_cast<const unsigned char*>(password.data());
    if (!ctx || EVP_PKEY_encrypt_init(ctx.get()) <= 0 || EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_OAEP_PADDING) <= 0 ||
        EVP_PKEY_CTX_set_rsa_oaep_md(ctx.get(), md) <= 0 || EVP_PKEY_CTX_set_rsa_mgf1_md(ctx.get(), md) <= 0 ||
        EVP_PKEY_encrypt(ctx.get(), nullptr, &len, in, password.size()) <= 0)
        crypto::throw_openssl("RSA-OAEP setup");
    std::string out(len, '\0');
    if (EVP_PKEY_encrypt(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &len, in, password.size()) <= 0)
        crypto::throw_openssl("the password is too long for this key and padding");
    out.resize(len);
    std::cout << crypto::base64_encode(out) << "\n";
    return 0;
}

}  // namespace certconn::host
