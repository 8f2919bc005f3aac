#include "certconn/crypto.hpp"

#include <certconn/errno_message.hpp>
#include <certconn/time.hpp>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>

#include <p11-kit/uri.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <mutex>
#include <optional>

namespace certconn::crypto {

namespace {

using Ext = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION_free>>;
using GeneralNames = std::unique_ptr<GENERAL_NAMES, Deleter<GENERAL_NAMES_free>>;
using PKeyCtx = std::unique_ptr<EVP_PKEY_CTX, Deleter<EVP_PKEY_CTX_free>>;

Bio mem_bio(std::string_view data) {
    Bio bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
    if (!bio) throw_openssl("BIO_new_mem_buf");
    return bio;
}

std::string bio_string(BIO* bio) {
    char* data = nullptr;
    const long len = BIO_get_mem_data(bio, &data);
    return std::string(data, static_cast<std::size_t>(len));
}

Bio new_mem_bio() {
    Bio bio(BIO_new(BIO_s_mem()));
    if (!bio) throw_openssl("BIO_new");
    return bio;
}

template <class T, class Fn>
std::string to_der(const T* obj, Fn i2d) {
    const int len = i2d(obj, nullptr);
    if (len <= 0) throw_openssl("DER encoding");
    std::string out(static_cast<std::size_t>(len), '\0');
    auto* p = reinterpret_cast<unsigned char*>(out.data());
    i2d(obj, &p);
    return out;
}

constexpr const char* kUpnOid = "1.3.6.1.4.1.311.20.2.3";

}  // namespace

void throw_openssl(const std::string& what) {
    std::string detail;
    unsigned long code;
    while ((code = ERR_get_error()) != 0) {
        char buf[256];
        ERR_error_string_n(code, buf, sizeof buf);
        if (!detail.empty()) detail += "; ";
        detail += buf;
    }
    throw CryptoError(what + (detail.empty() ? "" : ": " + detail));
}

// ---- keys ------------------------------------------------------------------------------

bool is_key_type(std::string_view t) {
    return t == "rsa2048" || t == "rsa3072" || t == "rsa4096" || t == "p256" || t == "p384";
}

PKey generate_key(std::string_view t) {
    EVP_PKEY* key = nullptr;
    if (t == "rsa2048")
        key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(2048));
    else if (t == "rsa3072")
        key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(3072));
    else if (t == "rsa4096")
        key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(4096));
    else if (t == "p256")
        key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
    else if (t == "p384")
        key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384");
    else
        throw std::invalid_argument("unknown key type '" + std::string(t) +
                                    "' (expected rsa2048, rsa3072, rsa4096, p256 or p384)");
    if (key == nullptr) throw_openssl("generating a " + std::string(t) + " key");
    return PKey(key);
}

std::string key_type_of(const EVP_PKEY* key) {
    if (EVP_PKEY_is_a(key, "RSA")) return "rsa" + std::to_string(EVP_PKEY_get_bits(key));
    if (EVP_PKEY_is_a(key, "EC")) {
        char curve[64] = {0};
        size_t len = 0;
        EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, curve, sizeof curve, &len);
        const std::string c(curve);
        if (c == "prime256v1" || c == "P-256") return "p256";
        if (c == "secp384r1" || c == "P-384") return "p384";
        return "ec-" + c;
    }
    return EVP_PKEY_get0_type_name(key) ? EVP_PKEY_get0_type_name(key) : "unknown";
}

PKey load_private_key(std::string_view pem) {
    auto bio = mem_bio(pem);
    EVP_PKEY* key = PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr);
    if (!key) throw_openssl("not a PEM private key");
    return PKey(key);
}

PKey load_public_key(std::string_view pem) {
    if (pem.find("-----BEGIN CERTIFICATE-----") != std::string_view::npos) {
        Cert cert = load_certificate(pem);
        EVP_PKEY* key = X509_get_pubkey(cert.get());
        if (!key) throw_openssl("certificate has no usable public key");
        return PKey(key);
    }
    auto bio = mem_bio(pem);
    EVP_PKEY* key = PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr);
    if (!key) {
        ERR_clear_error();
        bio = mem_bio(pem);
        if (RSA* rsa = PEM_read_bio_RSAPublicKey(bio.get(), nullptr, nullptr, nullptr)) {
            key = EVP_PKEY_new();
            EVP_PKEY_assign_RSA(key, rsa);
        }
    }
    if (!key) throw_openssl("not a PEM public key or certificate");
    return PKey(key);
}

std::string private_key_pem(const EVP_PKEY* key) {
    auto bio = new_mem_bio();
    if (!PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr))
        throw_openssl("PEM_write_bio_PrivateKey");
    return bio_string(bio.get());
}

std::string encrypt_private_key_pem(EVP_PKEY* key, std::string_view passphrase) {
    if (passphrase.empty()) throw std::invalid_argument("encrypting a private key needs a passphrase (got an empty one)");
    if (passphrase.size() > static_cast<std::size_t>(INT_MAX)) throw std::invalid_argument("passphrase too long");
    auto bio = new_mem_bio();
    // PKCS#8 with a cipher: PBES2, AES-256-CBC, key from PBKDF2 (HMAC-SHA256, random salt).
    if (PEM_write_bio_PKCS8PrivateKey(bio.get(), key, EVP_aes_256_cbc(), passphrase.data(), static_cast<int>(passphrase.size()),
                                      nullptr, nullptr) != 1)
        throw_openssl("encrypting a private key (PKCS#8, AES-256-CBC)");
    return bio_string(bio.get());
}

namespace {
// Hands OpenSSL the passphrase (not NUL-terminated, any length up to its buffer); never prompts.
int passphrase_callback(char* buf, int size, int /*rwflag*/, void* u) {
    const auto* pass = static_cast<const std::string_view*>(u);
    if (size < 0 || pass->size() > static_cast<std::size_t>(size)) return -1;
    std::memcpy(buf, pass->data(), pass->size());
    return static_cast<int>(pass->size());
}
}  // namespace

PKey decrypt_private_key_pem(std::string_view pem, std::string_view passphrase, std::string_view what) {
    if (pem.find("-----BEGIN ENCRYPTED PRIVATE KEY-----") == std::string_view::npos)
        throw CryptoError(std::string(what) + " is not an encrypted PKCS#8 PEM key");
    auto bio = mem_bio(pem);
    EVP_PKEY* key = PEM_read_bio_PrivateKey(bio.get(), nullptr, passphrase_callback, &passphrase);
    if (!key) {
        ERR_clear_error();  // OpenSSL's queue says only "bad decrypt": nothing worth more
        throw CryptoError(std::string(what) +
                          " does not decrypt with this passphrase (not the one it was encrypted with, or a damaged PEM)");
    }
    return PKey(key);
}

std::string public_key_pem(const EVP_PKEY* key) {
    auto bio = new_mem_bio();
    if (!PEM_write_bio_PUBKEY(bio.get(), key)) throw_openssl("PEM_write_bio_PUBKEY");
    return bio_string(bio.get());
}

namespace {
/// The URI without its pin-value, for the engine; nullopt when it carries none.
std::optional<std::string> without_pin_value(std::string_view text);
/// Why p11-kit cannot parse `text` as a URI; empty when it can.
std::string pkcs11_uri_problem(std::string_view text);
}  // namespace

PKey load_private_key_from(const std::string& path_or_uri) {
    if (is_pkcs11_uri(path_or_uri)) {  // any case: "PKCS11:...;pin-value=" must not end up in a file-name message
        // The engine would take anything it cannot parse for a label and echo it, PIN and all.
        if (const std::string why = pkcs11_uri_problem(path_or_uri); !why.empty())
            throw CryptoError("not a valid pkcs11: URI (" + why + "): " + redact_pkcs11_uri(path_or_uri));
        static std::mutex engine_mutex;
        std::lock_guard lock(engine_mutex);
        ENGINE_load_builtin_engines();
        ENGINE* engine = ENGINE_by_id("pkcs11");
        if (!engine) throw_openssl("the OpenSSL pkcs11 engine is not available (install libengine-pkcs11-openssl)");
        if (!ENGINE_init(engine)) {
            ENGINE_free(engine);
            throw_openssl("cannot initialise the pkcs11 engine");
        }
        // libp11 prints the URI it was given to stderr when it finds no key there, so the PIN
        // goes to the engine through its "PIN" control command, never inside the URI.
        std::string engine_uri = path_or_uri;
        if (auto stripped = without_pin_value(path_or_uri)) {
            const sdk::Secret pin = pkcs11_pin(path_or_uri);
            if (!ENGINE_ctrl_cmd_string(engine, "PIN", pin.reveal_c_str(), 0)) {
                ENGINE_finish(engine);
                ENGINE_free(engine);
                throw_openssl("the pkcs11 engine refused the PIN for " + redact_pkcs11_uri(path_or_uri));
            }
            engine_uri = std::move(*stripped);
        }
        EVP_PKEY* key = ENGINE_load_private_key(engine, engine_uri.c_str(), nullptr, nullptr);
        ENGINE_finish(engine);
        ENGINE_free(engine);
        if (!key) {
            try {
                throw_openssl("cannot load the private key " + redact_pkcs11_uri(path_or_uri) + " from the token");
            } catch (const CryptoError& e) {
                throw CryptoError(scrub_pin(e.what(), path_or_uri));  // the engine's errors, in case they echo the PIN
            }
        }
        return PKey(key);
    }
    return load_private_key(read_file(path_or_uri, "private key file"));
}

// ---- PKCS#11 URIs ------------------------------------------------------------------------

namespace {

struct UriFree {
    void operator()(P11KitUri* u) const noexcept { p11_kit_uri_free(u); }
};
using Uri = std::unique_ptr<P11KitUri, UriFree>;

/// Parses `text` with p11-kit; null (and `why` set) when it cannot.
Uri parse_pkcs11(std::string_view text, std::string& why) {
    Uri uri(p11_kit_uri_new());
    if (!uri) throw std::bad_alloc();
    const std::string copy(text);
    if (const int rc = p11_kit_uri_parse(copy.c_str(), P11_KIT_URI_FOR_ANY, uri.get()); rc != P11_KIT_URI_OK) {
        why = p11_kit_uri_message(rc);
        return nullptr;
    }
    return uri;
}

std::string pkcs11_uri_problem(std::string_view text) {
    std::string why;
    return parse_pkcs11(text, why) ? std::string() : (why.empty() ? std::string("unparsable") : why);
}

std::optional<std::string> without_pin_value(std::string_view text) {
    std::string why;
    const Uri uri = parse_pkcs11(text, why);
    if (!uri || p11_kit_uri_get_pin_value(uri.get()) == nullptr) return std::nullopt;
    p11_kit_uri_set_pin_value(uri.get(), nullptr);
    char* formatted = nullptr;
    if (p11_kit_uri_format(uri.get(), P11_KIT_URI_FOR_ANY, &formatted) != P11_KIT_URI_OK || !formatted) return std::nullopt;
    std::string out = formatted;
    std::free(formatted);
    return out;
}

std::string pin_file_path(const char* source) {
    std::string path = source;
    if (path.rfind("file:", 0) == 0) path = path.substr(5);
    return path;
}

}  // namespace

bool is_pkcs11_uri(std::string_view text) {
    static constexpr std::string_view scheme = "pkcs11:";
    if (text.size() < scheme.size()) return false;
    for (std::size_t i = 0; i < scheme.size(); ++i)
        if (std::tolower(static_cast<unsigned char>(text[i])) != scheme[i]) return false;
    return true;
}

std::string redact_pkcs11_uri(std::string_view text) {
    if (!is_pkcs11_uri(text)) return std::string(text);
    std::string why;
    const Uri uri = parse_pkcs11(text, why);
    if (!uri) return "pkcs11:(not shown: " + why + ")";
    const bool had_pin = p11_kit_uri_get_pin_value(uri.get()) != nullptr;
    p11_kit_uri_set_pin_value(uri.get(), nullptr);  // p11-kit wipes nothing; the parsed copy dies with `uri`
    char* formatted = nullptr;
    if (p11_kit_uri_format(uri.get(), P11_KIT_URI_FOR_ANY, &formatted) != P11_KIT_URI_OK || !formatted)
        return "pkcs11:(not shown: cannot format)";
    std::string out = formatted;
    std::free(formatted);
    if (had_pin) out += (out.find('?') == std::string::npos ? "?" : "&") + std::string("pin-value=***");
    return out;
}

sdk::Secret pkcs11_pin(std::string_view text) {
    std::string why;
    const Uri uri = parse_pkcs11(text, why);
    if (!uri) throw std::invalid_argument("pkcs11: URI " + redact_pkcs11_uri(text) + ": " + why);
    if (const char* value = p11_kit_uri_get_pin_value(uri.get())) return sdk::Secret(std::string_view(value));
    if (const char* source = p11_kit_uri_get_pin_source(uri.get())) {
        const std::string path = pin_file_path(source);
        std::ifstream in(path, std::ios::binary);
        if (!in)
            throw std::invalid_argument("cannot read the PIN file " + path + " (pin-source of " + redact_pkcs11_uri(text) + ")");
        std::string pin((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        // A PIN file holds one line; everything from the first line break on is not the PIN.
        if (const auto end = pin.find_first_of("\r\n"); end != std::string::npos) {
            sdk::wipe(pin.data() + end, pin.size() - end);
            pin.resize(end);
        }
        return sdk::Secret(std::move(pin));
    }
    return {};
}

std::string scrub_pin(std::string message, std::string_view uri) noexcept {
    try {
        const sdk::Secret pin = pkcs11_pin(uri);
        if (pin.size() < 4) return message;
        for (auto at = message.find(pin.reveal()); at != std::string::npos; at = message.find(pin.reveal(), at + 3))
            message.replace(at, pin.size(), "***");
        return message;
    } catch (...) {
        return message;  // no readable PIN, nothing to scrub
    }
}

// ---- certificates ----------------------------------------------------------------------

Cert load_certificate(std::string_view pem) {
    auto bio = mem_bio(pem);
    X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr);
    if (!cert) throw_openssl("not a PEM certificate");
    return Cert(cert);
}

std::vector<Cert> load_certificates(std::string_view pem) {
    std::vector<Cert> out;
    auto bio = mem_bio(pem);
    while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr))
        out.emplace_back(cert);
    ERR_clear_error();  // the end of the bundle reads as an error
    return out;
}

std::string certificate_pem(const X509* cert) {
    auto bio = new_mem_bio();
    if (!PEM_write_bio_X509(bio.get(), cert)) throw_openssl("PEM_write_bio_X509");
    return bio_string(bio.get());
}

std::string certificate_der(const X509* cert) {
    return to_der(cert, i2d_X509);
}

std::string fingerprint_hex(const X509* cert, const EVP_MD* md) {
    unsigned char buf[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!X509_digest(cert, md, buf, &len)) throw_openssl("X509_digest");
    return hex_encode(std::string_view(reinterpret_cast<char*>(buf), len));
}

std::string serial_hex(const X509* cert) {
    BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr);
    char* hex = BN_bn2hex(bn);
    std::string out(hex);
    OPENSSL_free(hex);
    BN_free(bn);
    return out;
}

std::string name_string(const X509_NAME* name) {
    auto bio = new_mem_bio();
    X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
    return bio_string(bio.get());
}

std::string time_iso8601(const ASN1_TIME* time) {
    struct tm tm {};
    if (!ASN1_TIME_to_tm(time, &tm)) throw_openssl("ASN1_TIME_to_tm");
    // ASN1_TIME_to_tm gives UTC fields; timegm turns them back into a time_t without a time zone.
    return sdk::utc_iso8601(std::chrono::system_clock::from_time_t(timegm(&tm)));
}

// ---- names and CSRs --------------------------------------------------------------------

Name parse_name(std::string_view dn) {
    Name name(X509_NAME_new());
    const bool slash_form = !dn.empty() && dn.front() == '/';
    const char separator = slash_form ? '/' : ',';
    std::string_view rest = slash_form ? dn.substr(1) : dn;
    std::vector<std::string> parts;
    std::string current;
    for (std::size_t i = 0; i < rest.size(); ++i) {
        if (rest[i] == '\\' && i + 1 < rest.size()) {
            current += rest[++i];
        } else if (rest[i] == separator) {
            parts.push_back(current);
            current.clear();
        } else {
            current += rest[i];
        }
    }
    parts.push_back(current);
    for (std::string part : parts) {
        const auto trim = [](std::string s) {
            s.erase(0, s.find_first_not_of(' '));
            s.erase(s.find_last_not_of(' ') + 1);
            return s;
        };
        part = trim(part);
        if (part.empty()) continue;
        const auto eq = part.find('=');
        if (eq == std::string::npos || eq == 0)
            throw std::invalid_argument("subject '" + std::string(dn) + "': '" + part + "' is not ATTRIBUTE=value");
        const std::string attr = trim(part.substr(0, eq));
        const std::string value = trim(part.substr(eq + 1));
        if (value.empty()) throw std::invalid_argument("subject '" + std::string(dn) + "': " + attr + " has an empty value");
        if (!X509_NAME_add_entry_by_txt(name.get(), attr.c_str(), MBSTRING_UTF8,
                                        reinterpret_cast<const unsigned char*>(value.c_str()), -1, -1, 0)) {
            ERR_clear_error();
            throw std::invalid_argument("subject '" + std::string(dn) + "': unknown attribute '" + attr + "' or bad value");
        }
    }
    if (X509_NAME_entry_count(name.get()) == 0) throw std::invalid_argument("subject is empty");
    return name;
}

SubjectAltName parse_san(std::string_view s) {
    const auto colon = s.find(':');
    if (colon == std::string_view::npos || colon + 1 >= s.size())
        throw std::invalid_argument("SAN '" + std::string(s) + "': expected TYPE:VALUE (email, upn, dns, uri, ip)");
    SubjectAltName san{std::string(s.substr(0, colon)), std::string(s.substr(colon + 1))};
    for (auto& c : san.type)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (san.type != "email" && san.type != "upn" && san.type != "dns" && san.type != "uri" && san.type != "ip")
        throw std::invalid_argument("SAN '" + std::string(s) + "': unknown type '" + san.type +
                                    "' (expected email, upn, dns, uri or ip)");
    return san;
}

void add_san_extension(STACK_OF(X509_EXTENSION) * exts, const std::vector<SubjectAltName>& sans) {
    if (sans.empty()) return;
    GeneralNames names(GENERAL_NAMES_new());
    for (const auto& san : sans) {
        GENERAL_NAME* gn = nullptr;
        if (san.type == "upn") {
            gn = GENERAL_NAME_new();
            ASN1_TYPE* value = ASN1_TYPE_new();
            ASN1_UTF8STRING* utf8 = ASN1_UTF8STRING_new();
            ASN1_STRING_set(utf8, san.value.data(), static_cast<int>(san.value.size()));
            ASN1_TYPE_set(value, V_ASN1_UTF8STRING, utf8);
            GENERAL_NAME_set0_othername(gn, OBJ_txt2obj(kUpnOid, 1), value);
        } else {
            const int type = san.type == "email" ? GEN_EMAIL
                             : san.type == "dns" ? GEN_DNS
                             : san.type == "uri" ? GEN_URI
                                                 : GEN_IPADD;
            gn = a2i_GENERAL_NAME(nullptr, nullptr, nullptr, type, san.value.c_str(), 0);
            if (!gn) {
                ERR_clear_error();
                throw std::invalid_argument("SAN " + san.type + ":" + san.value + " is not a valid value");
            }
        }
        sk_GENERAL_NAME_push(names.get(), gn);
    }
    X509_EXTENSION* ext = X509V3_EXT_i2d(NID_subject_alt_name, 0, names.get());
    if (!ext) throw_openssl("encoding subjectAltName");
    sk_X509_EXTENSION_push(exts, ext);
}

std::vector<SubjectAltName> read_sans(const STACK_OF(X509_EXTENSION) * exts) {
    std::vector<SubjectAltName> out;
    auto* names = static_cast<GENERAL_NAMES*>(X509V3_get_d2i(exts, NID_subject_alt_name, nullptr, nullptr));
    if (!names) return out;
    GeneralNames owner(names);
    for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
        const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names, i);
        auto text = [](const ASN1_STRING* s) {
            return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                               static_cast<std::size_t>(ASN1_STRING_length(s)));
        };
        switch (gn->type) {
            case GEN_EMAIL: out.push_back({"email", text(gn->d.rfc822Name)}); break;
            case GEN_DNS: out.push_back({"dns", text(gn->d.dNSName)}); break;
            case GEN_URI: out.push_back({"uri", text(gn->d.uniformResourceIdentifier)}); break;
            case GEN_IPADD: {
                const ASN1_OCTET_STRING* raw = gn->d.iPAddress;
                std::string ip = "(ipv6)";
                if (raw->length == 4)
                    ip = std::to_string(raw->data[0]) + "." + std::to_string(raw->data[1]) + "." + std::to_string(raw->data[2]) +
                         "." + std::to_string(raw->data[3]);
                out.push_back({"ip", ip});
                break;
            }
            case GEN_OTHERNAME: {
                char oid[80];
                OBJ_obj2txt(oid, sizeof oid, gn->d.otherName->type_id, 1);
                if (std::string(oid) == kUpnOid && gn->d.otherName->value->type == V_ASN1_UTF8STRING)
                    out.push_back({"upn", text(gn->d.otherName->value->value.utf8string)});
                else
                    out.push_back({"othername", oid});
                break;
            }
            default: out.push_back({"other", ""}); break;
        }
    }
    return out;
}

std::string make_csr_pem(EVP_PKEY* key, std::string_view subject_dn, const std::vector<SubjectAltName>& sans) {
    Request req(X509_REQ_new());
    X509_REQ_set_version(req.get(), 0);
    Name name = parse_name(subject_dn);
    X509_REQ_set_subject_name(req.get(), name.get());
    X509_REQ_set_pubkey(req.get(), key);
    if (!sans.empty()) {
        STACK_OF(X509_EXTENSION)* exts = sk_X509_EXTENSION_new_null();
        add_san_extension(exts, sans);
        X509_REQ_add_extensions(req.get(), exts);
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    }
    if (!X509_REQ_sign(req.get(), key, EVP_sha256())) throw_openssl("signing the CSR");
    auto bio = new_mem_bio();
    PEM_write_bio_X509_REQ(bio.get(), req.get());
    return bio_string(bio.get());
}

Request load_csr(std::string_view pem) {
    auto bio = mem_bio(pem);
    X509_REQ* req = PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr);
    if (!req) throw_openssl("not a PEM certificate request");
    return Request(req);
}

// ---- PKCS#12 ---------------------------------------------------------------------------

namespace {

// `password` is NUL-terminated (std::string and sdk::Secret both are).
std::string pkcs12_der_with(EVP_PKEY* key, X509* leaf, const std::vector<Cert>& chain, std::string_view password, bool legacy,
                            std::string_view friendly_name) {
    STACK_OF(X509)* ca = sk_X509_new_null();
    for (const auto& c : chain)
        sk_X509_push(ca, c.get());
    const int pbe = legacy ? NID_pbe_WithSHA1And3_Key_TripleDES_CBC : NID_aes_256_cbc;
    const std::string name(friendly_name);
    PKCS12* p12 = PKCS12_create_ex(password.data(), name.empty() ? nullptr : name.c_str(), key, leaf, ca, pbe, pbe,
                                   PKCS12_DEFAULT_ITER, -1, 0, nullptr, nullptr);
    sk_X509_free(ca);  // the certificates belong to `chain`
    if (!p12) throw_openssl("building the PKCS#12");
    Pkcs12 owner(p12);
    if (!PKCS12_set_mac(p12, password.data(), -1, nullptr, 0, PKCS12_DEFAULT_ITER, legacy ? EVP_sha1() : EVP_sha256()))
        throw_openssl("PKCS#12 MAC");
    return to_der(p12, i2d_PKCS12);
}

Pkcs12Contents pkcs12_open_with(std::string_view der, std::string_view password) {
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    Pkcs12 p12(d2i_PKCS12(nullptr, &p, static_cast<long>(der.size())));
    if (!p12) {
        ERR_clear_error();
        throw std::invalid_argument("not a PKCS#12 (PFX) file");
    }
    // An empty password is tried both as "" and as absent, as Windows exports use either.
    if (PKCS12_mac_present(p12.get()) && !PKCS12_verify_mac(p12.get(), password.data(), -1) &&
        !(password.empty() && PKCS12_verify_mac(p12.get(), nullptr, 0))) {
        ERR_clear_error();
        throw std::invalid_argument("the PFX password is wrong (its MAC does not verify)");
    }
    EVP_PKEY* key = nullptr;
    X509* cert = nullptr;
    STACK_OF(X509)* ca = nullptr;
    if (!PKCS12_parse(p12.get(), password.data(), &key, &cert, &ca)) {
        const unsigned long err = ERR_peek_last_error();
        const bool unsupported = ERR_GET_REASON(err) == ERR_R_UNSUPPORTED || ERR_GET_LIB(err) == ERR_LIB_EVP;
        ERR_clear_error();
        throw std::invalid_argument(
            unsupported ? "the PFX uses an encryption this connector does not accept (RC2/RC4 need the legacy provider)"
                        : "the PFX cannot be opened with this password");
    }
    Pkcs12Contents out;
    out.key.reset(key);
    out.certificate.reset(cert);
    for (int i = 0; ca && i < sk_X509_num(ca); ++i)
        out.chain.emplace_back(sk_X509_value(ca, i));
    sk_X509_free(ca);
    if (!out.key) throw std::invalid_argument("the PFX holds no private key");
    if (!out.certificate) throw std::invalid_argument("the PFX holds no certificate for its private key");
    return out;
}

}  // namespace

std::string pkcs12_der(EVP_PKEY* key, X509* leaf, const std::vector<Cert>& chain, const std::string& password, bool legacy,
                       std::string_view friendly_name) {
    return pkcs12_der_with(key, leaf, chain, password, legacy, friendly_name);
}

std::string pkcs12_der(EVP_PKEY* key, X509* leaf, const std::vector<Cert>& chain, const sdk::Secret& password, bool legacy,
                       std::string_view friendly_name) {
    return pkcs12_der_with(key, leaf, chain, password.reveal(), legacy, friendly_name);
}

Pkcs12Contents pkcs12_open(std::string_view der, const std::string& password) {
    return pkcs12_open_with(der, password);
}

Pkcs12Contents pkcs12_open(std::string_view der, const sdk::Secret& password) {
    return pkcs12_open_with(der, password.reveal());
}

LegacyProviders::LegacyProviders() {
    default_ = OSSL_PROVIDER_load(nullptr, "default");
    legacy_ = OSSL_PROVIDER_load(nullptr, "legacy");
    if (!legacy_) throw_openssl("cannot load OpenSSL's legacy provider");
}

LegacyProviders::~LegacyProviders() {
    if (legacy_) OSSL_PROVIDER_unload(legacy_);
    if (default_) OSSL_PROVIDER_unload(default_);
}

// ---- CMS -------------------------------------------------------------------------------

Recipient Recipient::from_pem(std::string_view pem) {
    Recipient r;
    if (pem.find("-----BEGIN CERTIFICATE-----") != std::string_view::npos) {
        r.certificate = load_certificate(pem);
        return r;
    }
    // A bare public key travels in a certificate-shaped container that is never encoded:
    // OpenSSL's CMS API takes recipients as X509. The recipient is named by its key id.
    PKey key = load_public_key(pem);
    r.key_only = true;
    r.certificate.reset(X509_new());
    X509_set_pubkey(r.certificate.get(), key.get());
    unsigned char id[SHA_DIGEST_LENGTH];
    unsigned int id_len = 0;
    if (!X509_pubkey_digest(r.certificate.get(), EVP_sha1(), id, &id_len)) throw_openssl("key identifier");
    ASN1_OCTET_STRING* ski = ASN1_OCTET_STRING_new();
    ASN1_OCTET_STRING_set(ski, id, static_cast<int>(id_len));
    X509_add1_ext_i2d(r.certificate.get(), NID_subject_key_identifier, ski, 0, X509V3_ADD_DEFAULT);
    ASN1_OCTET_STRING_free(ski);
    X509_check_purpose(r.certificate.get(), -1, 0);  // caches the extensions for CMS
    return r;
}

std::string cms_encrypt(std::string_view content, const Recipient& recipient) {
    const unsigned flags = CMS_BINARY | CMS_PARTIAL;
    Cms cms(CMS_encrypt_ex(nullptr, nullptr, EVP_aes_256_cbc(), flags, nullptr, nullptr));
    if (!cms) throw_openssl("CMS_encrypt");
    EVP_PKEY* pub = X509_get0_pubkey(recipient.certificate.get());
    if (!pub) throw std::invalid_argument("recipient has no public key");
    const unsigned ri_flags = CMS_KEY_PARAM | (recipient.key_only ? CMS_USE_KEYID : 0);
    CMS_RecipientInfo* ri = CMS_add1_recipient_cert(cms.get(), recipient.certificate.get(), ri_flags);
    if (!ri) throw_openssl("adding the CMS recipient (" + key_type_of(pub) + ")");
    EVP_PKEY_CTX* pctx = CMS_RecipientInfo_get0_pkey_ctx(ri);
    if (EVP_PKEY_is_a(pub, "RSA")) {
        if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_OAEP_PADDING) <= 0 ||
            EVP_PKEY_CTX_set_rsa_oaep_md(pctx, EVP_sha256()) <= 0 || EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) <= 0)
            throw_openssl("RSA-OAEP parameters");
    } else if (EVP_PKEY_is_a(pub, "EC")) {
        if (EVP_PKEY_CTX_set_ecdh_kdf_md(pctx, EVP_sha256()) <= 0) throw_openssl("ECDH KDF parameters");
    } else {
        throw std::invalid_argument("recipient key " + key_type_of(pub) + " is neither RSA nor EC");
    }
    auto in = mem_bio(content);
    if (!CMS_final(cms.get(), in.get(), nullptr, flags)) throw_openssl("encrypting the CMS content");
    return to_der(cms.get(), i2d_CMS_ContentInfo);
}

std::string cms_decrypt(std::string_view der, EVP_PKEY* key) {
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    Cms cms(d2i_CMS_ContentInfo(nullptr, &p, static_cast<long>(der.size())));
    if (!cms) throw_openssl("not a DER CMS structure");
    auto out = new_mem_bio();
    if (!CMS_decrypt(cms.get(), key, nullptr, nullptr, out.get(), CMS_BINARY)) throw_openssl("decrypting the CMS envelope");
    return bio_string(out.get());
}

// ---- files holding key material ---------------------------------------------------------

std::string read_file(const std::filesystem::path& path, std::string_view what) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::invalid_argument("cannot read " + std::string(what) + " " + path.string());
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string read_passphrase_file(const std::filesystem::path& path, std::string_view what) {
    const std::string where = std::string(what) + " " + path.string();
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) throw std::invalid_argument("cannot read " + where + ": " + sdk::errno_message(errno));
    struct Close {
        int fd;
        ~Close() { ::close(fd); }
    } close_fd{fd};
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw std::invalid_argument("cannot read " + where + ": " + sdk::errno_message(errno));
    if (!S_ISREG(st.st_mode)) throw std::invalid_argument(where + ": not a regular file; expected a file holding a passphrase");
    if ((st.st_mode & S_IRWXO) != 0) {
        char mode[8];
        (void)std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
        throw std::invalid_argument(where + " is accessible by others (mode " + mode +
                                    "): a passphrase file must not be (chmod 600 or 640)");
    }
    if (st.st_size > 4096) throw std::invalid_argument(where + " is longer than 4096 bytes; expected one passphrase");
    std::string text(4097, '\0');
    std::size_t got = 0;
    while (got < text.size()) {
        const ssize_t n = ::read(fd, text.data() + got, text.size() - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            sdk::wipe(text.data(), got);
            throw std::invalid_argument("cannot read " + where + ": " + sdk::errno_message(errno));
        }
        if (n == 0) break;
        got += static_cast<std::size_t>(n);
    }
    if (got > 4096) {
        sdk::wipe(text.data(), got);
        throw std::invalid_argument(where + " is longer than 4096 bytes; expected one passphrase");
    }
    while (got > 0 && (text[got - 1] == '\n' || text[got - 1] == '\r' || text[got - 1] == ' ' || text[got - 1] == '\t'))
        --got;
    sdk::wipe(text.data() + got, text.size() - got);
    text.resize(got);
    if (text.empty()) throw std::invalid_argument(where + " is empty; expected a passphrase");
    if (text.size() < 16) {
        sdk::wipe(text.data(), text.size());
        throw std::invalid_argument(where + " must hold a passphrase of at least 16 characters");
    }
    return text;
}

void write_file_atomic(const std::filesystem::path& path, std::string_view data, mode_t mode) {
    const std::string tmp = path.string() + ".tmp";
    // A temporary file left by a crash may be read-only (0400 modules): start from none. Never
    // follow a link planted in its place.
    ::unlink(tmp.c_str());
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) throw std::runtime_error("cannot write " + tmp + ": " + sdk::errno_message(errno));
    ::fchmod(fd, mode);  // the umask may have narrowed it; never widened beyond `mode`
    std::size_t done = 0;
    while (done < data.size()) {
        const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            const int err = errno;
            ::close(fd);
            ::unlink(tmp.c_str());
            throw std::runtime_error("cannot write " + tmp + ": " + sdk::errno_message(err));
        }
        done += static_cast<std::size_t>(n);
    }
    const bool synced = ::fsync(fd) == 0;
    ::close(fd);
    if (!synced || ::rename(tmp.c_str(), path.c_str()) != 0) {
        ::unlink(tmp.c_str());
        throw std::runtime_error("cannot store " + path.string() + ": " + sdk::errno_message(errno));
    }
    // The rename is durable once the directory is: without this a crash can lose the new name.
    const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) throw std::runtime_error("cannot open " + dir.string() + ": " + sdk::errno_message(errno));
    const bool dir_synced = ::fsync(dfd) == 0;
    const int err = errno;
    ::close(dfd);
    if (!dir_synced) throw std::runtime_error("cannot sync " + dir.string() + ": " + sdk::errno_message(err));
}

// ---- encodings and randomness ----------------------------------------------------------

std::string base64_encode(std::string_view data) {
    std::string out(4 * ((data.size() + 2) / 3), '\0');
    const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(data.data()), static_cast<int>(data.size()));
    out.resize(static_cast<std::size_t>(n));
    return out;
}

std::string base64_decode(std::string_view text) {
    std::string clean;
    clean.reserve(text.size());
    for (char c : text)
        if (c != '\n' && c != '\r' && c != ' ' && c != '\t') clean += c;
    if (clean.size() % 4 != 0) throw std::invalid_argument("base64 text length is not a multiple of 4");
    std::string out(clean.size() / 4 * 3, '\0');
    const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(clean.data()), static_cast<int>(clean.size()));
    if (n < 0) throw std::invalid_argument("invalid base64");
    std::size_t pad = 0;
    if (!clean.empty() && clean.back() == '=') ++pad;
    if (clean.size() > 1 && clean[clean.size() - 2] == '=') ++pad;
    out.resize(static_cast<std::size_t>(n) - pad);
    return out;
}

std::string hex_encode(std::string_view data) {
    static const char* digits = "0123456789abcdef";
    std::string out;
    out.reserve(data.size() * 2);
    for (unsigned char c : data) {
        out += digits[c >> 4];
        out += digits[c & 15];
    }
    return out;
}

std::string random_bytes(std::size_t n) {
    std::string out(n, '\0');
    if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) throw_openssl("RAND_bytes");
    return out;
}

std::string uuid4() {
    std::string b = random_bytes(16);
    b[6] = static_cast<char>((b[6] & 0x0f) | 0x40);
    b[8] = static_cast<char>((b[8] & 0x3f) | 0x80);
    const std::string h = hex_encode(b);
    return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + h.substr(16, 4) + "-" + h.substr(20);
}

}  // namespace certconn::crypto
