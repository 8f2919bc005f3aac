// Renewal of the connector's own Entra ID certificate credential before it expires:
// a new key and self-signed certificate, Graph addKey (proof signed by the current key), a test
// sign-in with the new credential, switch, Graph removeKey of the old one (proof signed by the
// new key). Each step is an event (610-614), a failure is 615 and is retried with backoff
// (5 min doubling to 6 h), and 616 warns once a day from warn_before_days before expiry.
//
// Crash safety: the new key and certificate are written to <state>/credential/pending.pem before
// addKey. A later attempt that finds it asks Graph whether it is registered and then continues
// with it (from addKey or from the sign-in test); it never makes a second key. The thumbprint
// of the key to remove is written to remove-old.json before the switch, so removeKey happens
// even when the process dies right after switching.
#include "Credential.hpp"

#include <certconn/events.h>

#include <boost/json.hpp>

#include <openssl/bn.h>
#include <openssl/x509v3.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/uri.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <ctime>

namespace certconn::intune {
namespace json = boost::json;
namespace fs = std::filesystem;
using Clock = std::chrono::system_clock;

// Credential.cpp
std::shared_ptr<Credential> make_credential(crypto::Cert certificate, crypto::PKey key, std::string key_reference,
                                            const std::string& what);
std::shared_ptr<Credential> load_credential_file(const fs::path& file, const std::string& what);
void write_credential_file(const fs::path& file, const Credential& c);
crypto::PKey load_token_key(const std::string& uri);

namespace {

constexpr std::chrono::minutes kFirstRetry{5};
constexpr std::chrono::hours kMaxRetry{6};
constexpr std::chrono::hours kCheckInterval{1};
constexpr std::chrono::hours kWarningInterval{24};

long int_setting(const json::object& section, std::string_view key, long fallback, long min, long max) {
    const auto* v = section.if_contains(key);
    if (!v) return fallback;
    if (!v->is_int64() || v->as_int64() < min || v->as_int64() > max)
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT,
                         std::string(key) + ": expected an integer from " + std::to_string(min) + " to " + std::to_string(max));
    return static_cast<long>(v->as_int64());
}

std::string iso8601(Clock::time_point t) {
    const std::time_t tt = Clock::to_time_t(t);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    char buf[32];
    if (std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) buf[0] = '\0';
    return buf;
}

std::string upper(std::string s) {
    for (char& c : s)
        c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return s;
}

bool is_hex(std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; });
}

/// Does Graph's customKeyIdentifier name the certificate with SHA-1 `thumbprint` (hex upper-case)?
/// Graph shows it as the hex thumbprint; its type is Edm.Binary, so base64 of the 20 digest bytes
/// (or of the hex text) is accepted too.
bool names_thumbprint(std::string_view identifier, const std::string& thumbprint) {
    if (identifier.size() > 256) return false;
    if (identifier.size() == 40 && is_hex(identifier)) return upper(std::string(identifier)) == thumbprint;
    std::string raw;
    try {
        raw = crypto::base64_decode(identifier);
    } catch (const std::exception&) {
        return false;
    }
    if (raw.size() == 20) return upper(crypto::hex_encode(raw)) == thumbprint;
    if (raw.size() == 40 && is_hex(raw)) return upper(raw) == thumbprint;
    return false;
}

crypto::Cert self_signed(EVP_PKEY* key, const std::string& client_id, long validity_days) {
    crypto::Cert cert(X509_new());
    if (!cert) crypto::throw_openssl("out of memory");
    X509* x = cert.get();
    X509_set_version(x, 2);
    std::string serial = crypto::random_bytes(16);
    serial[0] = static_cast<char>(serial[0] & 0x7f);
    if (serial[0] == 0) serial[0] = 1;
    std::unique_ptr<BIGNUM, decltype(&BN_free)> bn(
        BN_bin2bn(reinterpret_cast<const unsigned char*>(serial.data()), static_cast<int>(serial.size()), nullptr), BN_free);
    if (!bn || !BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(x))) crypto::throw_openssl("cannot set the serial number");
    if (!X509_gmtime_adj(X509_getm_notBefore(x), -300) || !X509_gmtime_adj(X509_getm_notAfter(x), validity_days * 86400L))
        crypto::throw_openssl("cannot set the validity");
    const crypto::Name name = crypto::parse_name("CN=certconnector " + client_id);
    if (!X509_set_subject_name(x, name.get()) || !X509_set_issuer_name(x, name.get()))
        crypto::throw_openssl("cannot set the name");
    if (!X509_set_pubkey(x, key)) crypto::throw_openssl("cannot set the public key");
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, x, x, nullptr, nullptr, 0);
    const std::pair<int, const char*> extensions[] = {{NID_basic_constraints, "critical,CA:FALSE"},
                                                      {NID_key_usage, "critical,digitalSignature"},
                                                      {NID_subject_key_identifier, "hash"}};
    for (const auto& [nid, value] : extensions) {
        X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
        if (!ext) crypto::throw_openssl(std::string("cannot make the extension ") + value);
        const int ok = X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
        if (!ok) crypto::throw_openssl("cannot add an extension");
    }
    if (!X509_sign(x, key, EVP_sha256())) crypto::throw_openssl("cannot sign the credential certificate");
    return cert;
}

/// Generates an RSA 2048 key pair in the token that `current_uri` names (PKCS#11 C_GenerateKeyPair
/// through p11-kit: the URI's module-path, else the modules registered with p11-kit, as the
/// OpenSSL pkcs11 engine finds them), labelled `label`, private key sensitive and not
/// extractable. Returns the new key's URI: the current one with object/id replaced (its PIN
/// source and module attributes kept).
std::string generate_token_key(const std::string& current_uri, const std::string& label) {
    struct UriFree {
        void operator()(P11KitUri* u) const noexcept { p11_kit_uri_free(u); }
    };
    const std::string shown = crypto::redact_pkcs11_uri(current_uri);
    std::unique_ptr<P11KitUri, UriFree> uri(p11_kit_uri_new());
    if (!uri || p11_kit_uri_parse(current_uri.c_str(), P11_KIT_URI_FOR_ANY, uri.get()) != P11_KIT_URI_OK)
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "credential_key: not a valid pkcs11: URI: " + shown);
    sdk::Secret pin;
    try {
        pin = crypto::pkcs11_pin(current_uri);
    } catch (const std::exception& e) {
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, std::string("credential_key: ") + e.what());
    }

    // The modules: the one the URI names by path, or every module registered with p11-kit.
    CK_FUNCTION_LIST** modules = nullptr;
    CK_FUNCTION_LIST* single = nullptr;
    if (const char* path = p11_kit_uri_get_module_path(uri.get())) {
        single = p11_kit_module_load(path, 0);
        if (!single) throw sdk::Error(CC_ERR_UNAVAILABLE, std::string("cannot load the PKCS#11 module ") + path);
        if (p11_kit_module_initialize(single) != CKR_OK) {
            p11_kit_module_release(single);
            throw sdk::Error(CC_ERR_UNAVAILABLE, std::string("cannot initialise the PKCS#11 module ") + path);
        }
    } else {
        modules = p11_kit_modules_load_and_initialize(0);
        if (!modules) throw sdk::Error(CC_ERR_UNAVAILABLE, "p11-kit found no PKCS#11 modules");
    }
    struct Release {
        CK_FUNCTION_LIST** modules;
        CK_FUNCTION_LIST* single;
        ~Release() {
            if (single) {
                p11_kit_module_finalize(single);
                p11_kit_module_release(single);
            }
            if (modules) p11_kit_modules_finalize_and_release(modules);
        }
    } release{modules, single};
    CK_FUNCTION_LIST* one[] = {single, nullptr};
    CK_FUNCTION_LIST** list = single ? one : modules;
    const char* module_name = p11_kit_uri_get_module_name(uri.get());

    CK_FUNCTION_LIST* module = nullptr;
    CK_SLOT_ID slot = 0;
    for (CK_FUNCTION_LIST** m = list; *m && !module; ++m) {
        if (module_name && !single) {
            char* name = p11_kit_module_get_name(*m);
            const bool same = name && std::strcmp(name, module_name) == 0;
            std::free(name);
            if (!same) continue;
        }
        CK_ULONG count = 0;
        if ((*m)->C_GetSlotList(CK_TRUE, nullptr, &count) != CKR_OK || count == 0) continue;
        std::vector<CK_SLOT_ID> slots(count);
        if ((*m)->C_GetSlotList(CK_TRUE, slots.data(), &count) != CKR_OK) continue;
        for (CK_ULONG i = 0; i < count; ++i) {
            CK_TOKEN_INFO info{};
            if ((*m)->C_GetTokenInfo(slots[i], &info) == CKR_OK && p11_kit_uri_match_token_info(uri.get(), &info) == 1) {
                module = *m;
                slot = slots[i];
                break;
            }
        }
    }
    if (!module)
        throw sdk::Error(CC_ERR_UNAVAILABLE, "no PKCS#11 token matches the credential key " + shown + " (is the token present?)");

    CK_SESSION_HANDLE session = 0;
    if (const CK_RV rv = module->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &session);
        rv != CKR_OK)
        throw sdk::Error(CC_ERR_UNAVAILABLE,
                         "cannot open a read-write session on the token of " + shown + " (CKR " + std::to_string(rv) + ")");
    struct Close {
        CK_FUNCTION_LIST* module;
        CK_SESSION_HANDLE session;
        ~Close() { module->C_CloseSession(session); }
    } close{module, session};
    if (!pin.empty()) {
        std::string pin_text(pin.reveal());
        const CK_RV rv = module->C_Login(session, CKU_USER, reinterpret_cast<CK_UTF8CHAR*>(pin_text.data()), pin_text.size());
        sdk::wipe(pin_text.data(), pin_text.size());
        if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
            throw sdk::Error(rv == CKR_PIN_INCORRECT ? CC_ERR_DENIED : CC_ERR_UNAVAILABLE,
                             "the token of " + shown + " refused the login (CKR " + std::to_string(rv) + ")");
    }

    std::string id = crypto::random_bytes(16);
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ULONG bits = 2048;
    CK_BYTE exponent[] = {0x01, 0x00, 0x01};
    std::string label_copy = label;
    CK_ATTRIBUTE pub[] = {{CKA_TOKEN, &yes, sizeof yes},
                          {CKA_PRIVATE, &no, sizeof no},
                          {CKA_VERIFY, &yes, sizeof yes},
                          {CKA_ENCRYPT, &no, sizeof no},
                          {CKA_MODULUS_BITS, &bits, sizeof bits},
                          {CKA_PUBLIC_EXPONENT, exponent, sizeof exponent},
                          {CKA_LABEL, label_copy.data(), label_copy.size()},
                          {CKA_ID, id.data(), id.size()}};
    CK_ATTRIBUTE priv[] = {{CKA_TOKEN, &yes, sizeof yes},
                           {CKA_PRIVATE, &yes, sizeof yes},
                           {CKA_SENSITIVE, &yes, sizeof yes},
                           {CKA_EXTRACTABLE, &no, sizeof no},
                           {CKA_SIGN, &yes, sizeof yes},
                           {CKA_DECRYPT, &no, sizeof no},
                           {CKA_LABEL, label_copy.data(), label_copy.size()},
                           {CKA_ID, id.data(), id.size()}};
    CK_MECHANISM mechanism{CKM_RSA_PKCS_KEY_PAIR_GEN, nullptr, 0};
    CK_OBJECT_HANDLE pub_handle = 0, priv_handle = 0;
    if (const CK_RV rv =
            module->C_GenerateKeyPair(session, &mechanism, pub, std::size(pub), priv, std::size(priv), &pub_handle, &priv_handle);
        rv != CKR_OK)
        throw sdk::Error(CC_ERR_UNAVAILABLE, "the token of " + shown +
                                                 " could not generate an RSA 2048 key pair (C_GenerateKeyPair CKR " +
                                                 std::to_string(rv) + ")");

    // The new key's URI: same token, module and PIN source; this object.
    CK_OBJECT_CLASS klass = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE attributes[] = {
        {CKA_LABEL, label_copy.data(), label_copy.size()}, {CKA_ID, id.data(), id.size()}, {CKA_CLASS, &klass, sizeof klass}};
    for (auto& a : attributes)
        if (p11_kit_uri_set_attribute(uri.get(), &a) != P11_KIT_URI_OK)
            throw sdk::Error(CC_ERR_INTERNAL, "cannot build the new key's URI");
    char* formatted = nullptr;
    if (p11_kit_uri_format(uri.get(), P11_KIT_URI_FOR_ANY, &formatted) != P11_KIT_URI_OK || !formatted)
        throw sdk::Error(CC_ERR_INTERNAL, "cannot format the new key's URI");
    std::string out = formatted;
    std::free(formatted);
    return out;
}

/// An sdk::Error naming the step, keeping a retryable status retryable.
[[noreturn]] void rethrow_step(const std::string& step) {
    try {
        throw;
    } catch (const sdk::Error& e) {
        throw sdk::Error(e.code(), step + ": " + e.what());
    } catch (const std::exception& e) {
        throw sdk::Error(CC_ERR_INTERNAL, step + ": " + e.what());
    }
}

}  // namespace

struct CredentialRenewer::Impl {
    sdk::Host& host;
    CredentialStore& store;
    GraphAccess graph;
    SignInTest sign_in;
    bool enabled = true;
    long renew_before_days = 30;
    long warn_before_days = 14;
    long validity_days = 365;
    std::string client_id;
    fs::path dir;  // <state_dir>/credential

    std::mutex run_mutex;  // one renewal at a time (thread and renew_now)
    mutable std::mutex mutex;
    std::condition_variable cv;
    bool stopping = false;
    std::thread thread;
    std::string status = "idle";
    std::string last_error;
    Clock::time_point next_check{};
    Clock::time_point retry_at{};
    std::chrono::seconds backoff{0};
    Clock::time_point last_warning{};

    Impl(sdk::Host& h, CredentialStore& s, GraphAccess g, SignInTest t)
        : host(h), store(s), graph(std::move(g)), sign_in(std::move(t)) {}

    fs::path pending_file() const { return dir / "pending.pem"; }
    fs::path remove_file() const { return dir / "remove-old.json"; }

    void event(uint32_t id, cc_log_level level, const std::string& message, const json::object& fields = {}) const {
        host.log(id, level, message, {}, fields.empty() ? std::string() : json::serialize(fields));
    }

    void set_status(const std::string& s, const std::string& error = {}) {
        std::lock_guard lock(mutex);
        status = s;
        if (!error.empty() || s == "idle") last_error = error;
    }

    std::string object_id() const {
        std::string id;
        try {
            id = graph.application_object_id();
        } catch (...) {
            rethrow_step("finding the application's object id");
        }
        if (id.empty() || id.size() > 128 ||
            !std::all_of(id.begin(), id.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-'; }))
            throw sdk::Error(CC_ERR_UNAVAILABLE, "the application's object id is not a GUID");
        return id;
    }

    /// The keyId Graph gives the credential with `thumbprint`, if the application has it.
    std::optional<std::string> registered_key_id(const std::string& app, const std::string& thumbprint) const {
        json::value answer;
        try {
            answer = graph.call("GET", "/v1.0/applications/" + app + "?$select=keyCredentials", "");
        } catch (...) {
            rethrow_step("reading the application's key credentials");
        }
        const auto* list = answer.is_object() ? answer.as_object().if_contains("keyCredentials") : nullptr;
        if (!list || !list->is_array())
            throw sdk::Error(CC_ERR_UNAVAILABLE,
                             "reading the application's key credentials: the answer has no keyCredentials array");
        std::size_t seen = 0;
        for (const auto& item : list->as_array()) {
            if (++seen > 1000) break;  // an application holds a handful; bounded anyway
            if (!item.is_object()) continue;
            const auto& o = item.as_object();
            const auto* ident = o.if_contains("customKeyIdentifier");
            const auto* key_id = o.if_contains("keyId");
            if (ident && ident->is_string() && key_id && key_id->is_string() && key_id->as_string().size() <= 128 &&
                names_thumbprint(ident->as_string(), thumbprint))
                return std::string(key_id->as_string());
        }
        return std::nullopt;
    }

    /// A new key where the current one lives (a file key → a key in the state directory; a token
    /// key → a new key object in the same token) and a self-signed certificate for it.
    std::shared_ptr<Credential> new_credential(const Credential& current) const {
        if (crypto::is_pkcs11_uri(current.key_reference)) {
            const std::time_t now = std::time(nullptr);
            std::tm tm{};
            gmtime_r(&now, &tm);
            char date[16];
            if (std::strftime(date, sizeof date, "%Y%m%d", &tm) == 0) date[0] = '\0';
            const std::string label = std::string("certconnector-") + date + "-" + crypto::hex_encode(crypto::random_bytes(4));
            const std::string uri = generate_token_key(current.key_reference, label);
            crypto::PKey key;
            try {
                key = load_token_key(uri);
            } catch (const std::exception& e) {
                throw sdk::Error(CC_ERR_UNAVAILABLE, "the new token key " + crypto::redact_pkcs11_uri(uri) +
                                                         " cannot be used: " + crypto::scrub_pin(e.what(), uri));
            }
            crypto::Cert cert = self_signed(key.get(), client_id, validity_days);  // signed by the token
            return make_credential(std::move(cert), std::move(key), uri, "the new credential");
        }
        crypto::PKey key = crypto::generate_key("rsa2048");
        crypto::Cert cert = self_signed(key.get(), client_id, validity_days);
        return make_credential(std::move(cert), std::move(key), (dir / "credential.pem").string(), "the new credential");
    }

    /// Removes the credential named in remove-old.json from the application (proof by the current key).
    void remove_old(const std::string& app) {
        std::string thumbprint;
        try {
            const json::value v = json::parse(crypto::read_file(remove_file(), "remove-old.json"));
            thumbprint = std::string(v.at("thumbprint").as_string());
        } catch (const std::exception& e) {
            throw sdk::Error(CC_ERR_INTERNAL, remove_file().string() + " is unreadable (" + e.what() +
                                                  "); remove the old key in the Entra portal and delete the file");
        }
        const auto current = store.current();
        if (thumbprint == current->thumbprint) {  // never remove the key we sign in with
            fs::remove(remove_file());
            return;
        }
        const auto key_id = registered_key_id(app, thumbprint);
        if (!key_id) {
            event(CC_EV_TenantCredentialOldKeyRemoved, CC_LEVEL_INFO,
                  "the old credential " + thumbprint + " is no longer on the application; nothing to remove",
                  {{"thumbprint", thumbprint}});
            fs::remove(remove_file());
            return;
        }
        json::object body{{"keyId", *key_id}, {"proof", proof_of_possession(*current, app)}};
        try {
            (void)graph.call("POST", "/v1.0/applications/" + app + "/removeKey", json::serialize(body));
        } catch (...) {
            rethrow_step("removeKey of the old credential " + thumbprint + " (keyId " + *key_id + ")");
        }
        fs::remove(remove_file());
        event(CC_EV_TenantCredentialOldKeyRemoved, CC_LEVEL_INFO,
              "the old credential " + thumbprint + " (keyId " + *key_id + ") was removed from the application",
              {{"thumbprint", thumbprint}, {"key_id", *key_id}});
    }

    /// `force`: renew whatever the expiry (renew_now); otherwise only the steps that are due.
    void renew_once(bool force) {
        std::lock_guard run(run_mutex);
        set_status("renewing");
        std::error_code ec;
        fs::create_directories(dir, ec);
        const bool has_pending = fs::exists(pending_file());
        if (!has_pending && fs::exists(remove_file())) remove_old(object_id());  // the last step of an earlier renewal
        const auto current = store.current();
        if (!has_pending && !force && current->not_after - Clock::now() >= std::chrono::days(renew_before_days)) {
            set_status("idle");
            return;
        }
        event(CC_EV_TenantCredentialRenewalStarted, CC_LEVEL_INFO,
              "renewing the tenant credential " + current->thumbprint + " (expires " + iso8601(current->not_after) + ")",
              {{"thumbprint", current->thumbprint}, {"not_after", iso8601(current->not_after)}});
        const std::string app = object_id();

        std::shared_ptr<Credential> next;
        std::optional<std::string> key_id;
        if (has_pending) {
            try {
                next = load_credential_file(pending_file(), "the pending credential");
            } catch (const sdk::Error& e) {
                if (e.code() != CC_ERR_INVALID_ARGUMENT) throw;  // a token that is absent now: try again later
                // Damaged: set it aside (never deleted: it may hold a key already on the application)
                // so that the next attempt starts over with a new key.
                const fs::path aside = dir / ("pending.pem.unreadable-" + std::to_string(std::time(nullptr)));
                fs::rename(pending_file(), aside, ec);
                throw sdk::Error(CC_ERR_UNAVAILABLE,
                                 std::string(e.what()) + "; moved to " + aside.string() + ", the next attempt makes a new key");
            }
            if (next->thumbprint == current->thumbprint) {  // switched, then died before tidying up
                fs::remove(pending_file());
                if (fs::exists(remove_file())) remove_old(app);
                set_status("idle");
                return;
            }
            key_id = registered_key_id(app, next->thumbprint);
            host.log(CC_EV_TenantCredentialRenewalStarted, CC_LEVEL_INFO,
                     "resuming with the pending credential " + next->thumbprint +
                         (key_id ? " (already on the application)" : " (not yet on the application)"));
        } else {
            try {
                next = new_credential(*current);
                write_credential_file(pending_file(), *next);  // before addKey: a crash must not lose the key
            } catch (...) {
                rethrow_step("making the new credential");
            }
            event(CC_EV_TenantCredentialKeyCreated, CC_LEVEL_INFO,
                  std::string(crypto::is_pkcs11_uri(next->key_reference) ? "new credential key (RSA 2048, in the token)"
                                                                         : "new credential key (RSA 2048)") +
                      " and self-signed certificate " + next->thumbprint + " valid until " + iso8601(next->not_after),
                  {{"thumbprint", next->thumbprint}, {"not_after", iso8601(next->not_after)}});
        }

        if (!key_id) {
            const std::time_t now = std::time(nullptr);
            std::tm tm{};
            gmtime_r(&now, &tm);
            char date[16];
            if (std::strftime(date, sizeof date, "%Y-%m-%d", &tm) == 0) date[0] = '\0';
            json::object key_credential{{"type", "AsymmetricX509Cert"},
                                        {"usage", "Verify"},
                                        {"key", crypto::base64_encode(crypto::certificate_der(next->certificate.get()))},
                                        {"displayName", std::string("certconnector ") + date}};
            json::object body{{"keyCredential", key_credential},
                              {"passwordCredential", nullptr},
                              {"proof", proof_of_possession(*current, app)}};
            json::value answer;
            try {
                answer = graph.call("POST", "/v1.0/applications/" + app + "/addKey", json::serialize(body));
            } catch (...) {
                rethrow_step("addKey of the new credential " + next->thumbprint);
            }
            const auto* id = answer.is_object() ? answer.as_object().if_contains("keyId") : nullptr;
            if (!id || !id->is_string() || id->as_string().empty() || id->as_string().size() > 128)
                throw sdk::Error(CC_ERR_UNAVAILABLE,
                                 "addKey of the new credential " + next->thumbprint + ": the answer has no keyId");
            key_id = std::string(id->as_string());
            event(CC_EV_TenantCredentialKeyAdded, CC_LEVEL_INFO,
                  "the new credential " + next->thumbprint + " was added to the application (keyId " + *key_id + ")",
                  {{"thumbprint", next->thumbprint}, {"key_id", *key_id}});
        }

        try {
            sign_in(*next);
        } catch (...) {
            rethrow_step("the test sign-in with the new credential " + next->thumbprint +
                         " (kept; the next attempt continues from here)");
        }

        try {
            crypto::write_file_atomic(remove_file(), json::serialize(json::object{{"thumbprint", current->thumbprint}}), 0600);
            store.switch_to(next);
        } catch (...) {
            rethrow_step("switching to the new credential");
        }
        fs::remove(pending_file(), ec);
        event(CC_EV_TenantCredentialSwitched, CC_LEVEL_INFO,
              "the connector now signs in with the credential " + next->thumbprint + " (valid until " + iso8601(next->not_after) +
                  ")",
              {{"thumbprint", next->thumbprint}, {"previous", current->thumbprint}, {"not_after", iso8601(next->not_after)}});
        remove_old(app);
        set_status("idle");
    }

    /// One pass of the thread: renew when due (or when an earlier attempt left work), warn when close.
    void check() {
        const auto now = Clock::now();
        const auto current = store.current();
        const auto left = current->not_after - now;
        const bool due = left < std::chrono::days(renew_before_days) || fs::exists(pending_file()) || fs::exists(remove_file());
        if (enabled && due && now >= retry_at) {
            try {
                renew_once(false);
                std::lock_guard lock(mutex);
                backoff = std::chrono::seconds(0);
                retry_at = {};
            } catch (const std::exception& e) {
                failed(e.what());
            }
        }
        const auto after = store.current();
        if (after->not_after - Clock::now() < std::chrono::days(warn_before_days) &&
            Clock::now() - last_warning >= kWarningInterval) {
            last_warning = Clock::now();
            std::string last_error;
            {
                std::lock_guard lock(mutex);
                last_error = this->last_error;
            }
            const auto days = std::chrono::duration_cast<std::chrono::hours>(after->not_after - Clock::now()).count() / 24;
            event(CC_EV_TenantCredentialExpiring, CC_LEVEL_WARNING,
                  "the tenant credential " + after->thumbprint + " expires " + iso8601(after->not_after) + " (in " +
                      std::to_string(days) + " days) and has not been renewed" +
                      (enabled ? "" : " (credential_renewal = false)") + (last_error.empty() ? std::string() : ": " + last_error),
                  {{"thumbprint", after->thumbprint}, {"not_after", iso8601(after->not_after)}});
        }
    }

    void failed(const std::string& why) {
        std::chrono::seconds wait;
        {
            std::lock_guard lock(mutex);
            backoff = backoff.count() == 0 ? std::chrono::seconds(kFirstRetry)
                                           : std::min<std::chrono::seconds>(backoff * 2, std::chrono::seconds(kMaxRetry));
            wait = backoff;
            retry_at = Clock::now() + backoff;
            status = "failed";
            last_error = why;
        }
        event(CC_EV_TenantCredentialRenewalFailed, CC_LEVEL_ERROR,
              "renewing the tenant credential failed: " + why + "; retried in " + std::to_string(wait.count() / 60) +
                  " min; the current credential stays in use",
              {{"error", why}, {"retry_seconds", wait.count()}});
    }

    void run() {
        std::unique_lock lock(mutex);
        while (!stopping) {
            lock.unlock();
            try {
                check();
            } catch (const std::exception& e) {
                failed(e.what());
            }
            lock.lock();
            auto next = Clock::now() + kCheckInterval;
            if (retry_at > Clock::now() && retry_at < next) next = retry_at;
            next_check = next;
            cv.wait_until(lock, next, [&] { return stopping; });
        }
    }
};

CredentialRenewer::CredentialRenewer(sdk::Host& host, const json::object& section, CredentialStore& store, GraphAccess graph,
                                     SignInTest sign_in)
    : impl_(std::make_unique<Impl>(host, store, std::move(graph), std::move(sign_in))) {
    if (const auto* v = section.if_contains("credential_renewal")) {
        if (!v->is_bool()) throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "credential_renewal: expected true or false");
        impl_->enabled = v->as_bool();
    }
    impl_->renew_before_days = int_setting(section, "renew_before_days", 30, 1, 3650);
    impl_->warn_before_days = int_setting(section, "warn_before_days", 14, 0, 3650);
    impl_->validity_days = int_setting(section, "credential_validity_days", 365, 2, 3650);
    if (impl_->validity_days <= impl_->renew_before_days)
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "credential_validity_days (" + std::to_string(impl_->validity_days) +
                                                      ") must be longer than renew_before_days (" +
                                                      std::to_string(impl_->renew_before_days) +
                                                      "), or every renewal is due at once");
    const auto* client_id = section.if_contains("client_id");
    if (!client_id || !client_id->is_string() || client_id->as_string().empty())
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "client_id: required (the application id)");
    impl_->client_id = std::string(client_id->as_string());
    impl_->dir = host.state_dir() / "credential";
    if (!impl_->graph.call || !impl_->graph.application_object_id || !impl_->sign_in)
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "CredentialRenewer: Graph access and a sign-in test are required");
}

CredentialRenewer::~CredentialRenewer() {
    stop();
}

void CredentialRenewer::start() {
    std::lock_guard lock(impl_->mutex);
    if (impl_->thread.joinable()) return;
    impl_->stopping = false;
    impl_->thread = std::thread([this] { impl_->run(); });
}

void CredentialRenewer::stop() {
    {
        std::lock_guard lock(impl_->mutex);
        impl_->stopping = true;
    }
    impl_->cv.notify_all();
    if (impl_->thread.joinable()) impl_->thread.join();
}

void CredentialRenewer::renew_now() {
    try {
        impl_->renew_once(true);
        std::lock_guard lock(impl_->mutex);
        impl_->backoff = std::chrono::seconds(0);
        impl_->retry_at = {};
    } catch (const std::exception& e) {
        impl_->failed(e.what());
        throw;
    }
}

json::object CredentialRenewer::state() const {
    const auto current = impl_->store.current();
    std::lock_guard lock(impl_->mutex);
    json::object out;
    out["renewal"] = impl_->status;
    out["not_after"] = iso8601(current->not_after);
    out["thumbprint"] = current->thumbprint;
    out["last_error"] = impl_->last_error.empty() ? json::value(nullptr) : json::value(impl_->last_error);
    out["next_check"] = impl_->next_check == Clock::time_point{} ? json::value(nullptr) : json::value(iso8601(impl_->next_check));
    out["enabled"] = impl_->enabled;
    return out;
}

}  // namespace certconn::intune
