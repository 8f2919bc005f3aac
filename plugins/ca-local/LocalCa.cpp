#include "LocalCa.hpp"

#include <certconn/secret.hpp>
#include <certconn/time.hpp>

#include <boost/json.hpp>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <fstream>
#include <iterator>

namespace certconn::ca_local {

namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

std::string read_text(const fs::path& p) {
    try {
        return crypto::read_file(p);
    } catch (const std::invalid_argument& e) {
        throw sdk::Error(CC_ERR_UNAVAILABLE, e.what());
    }
}

std::string str(const json::object& o, const char* key, std::string fallback) {
    const auto* v = o.if_contains(key);
    return v ? std::string(v->as_string()) : std::move(fallback);
}

std::int64_t num(const json::object& o, const char* key, std::int64_t fallback) {
    const auto* v = o.if_contains(key);
    return v ? v->as_int64() : fallback;
}

const EVP_MD* digest_for(const EVP_PKEY* key) {
    return crypto::key_type_of(key) == "p384" || crypto::key_type_of(key) == "rsa4096" ? EVP_sha384() : EVP_sha256();
}

void add_ext(X509* cert, X509V3_CTX* ctx, int nid, const std::string& value) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, ctx, nid, value.c_str());
    if (!ext) crypto::throw_openssl(std::string("extension ") + OBJ_nid2sn(nid) + " = " + value);
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
}

std::string join(const std::vector<std::string>& list, const char* sep = ",") {
    std::string out;
    for (const auto& s : list)
        out += (out.empty() ? "" : sep) + s;
    return out;
}

// Signs a certificate. `issuer` null: self-signed. `extensions`: (nid, OpenSSL config value).
crypto::Cert sign_certificate(const X509_NAME* subject, EVP_PKEY* public_key, X509* issuer, EVP_PKEY* issuer_key,
                              const std::string& serial_hex, long not_before_offset_s, long validity_s,
                              const std::vector<std::pair<int, std::string>>& extensions,
                              const std::vector<X509_EXTENSION*>& copied = {}) {
    crypto::Cert cert(X509_new());
    X509_set_version(cert.get(), 2);
    BIGNUM* bn = nullptr;
    BN_hex2bn(&bn, serial_hex.c_str());
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
    BN_free(bn);
    X509_set_subject_name(cert.get(), subject);
    X509_set_issuer_name(cert.get(), issuer ? X509_get_subject_name(issuer) : subject);
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), not_before_offset_s);
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), validity_s);
    if (issuer && ASN1_TIME_compare(X509_get0_notAfter(cert.get()), X509_get0_notAfter(issuer)) > 0)
        X509_set1_notAfter(cert.get(), X509_get0_notAfter(issuer));  // never outlive the issuer
    X509_set_pubkey(cert.get(), public_key);
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer ? issuer : cert.get(), cert.get(), nullptr, nullptr, 0);
    for (const auto& [nid, value] : extensions)
        add_ext(cert.get(), &ctx, nid, value);
    for (X509_EXTENSION* ext : copied)
        X509_add_ext(cert.get(), ext, -1);
    if (!X509_sign(cert.get(), issuer_key, digest_for(issuer_key))) crypto::throw_openssl("signing the certificate");
    return cert;
}

}  // namespace

LocalCa::LocalCa(std::string name, const json::object& config, const fs::path& directory, sdk::Host& host)
    : name_(std::move(name)), host_(host), directory_(directory) {
    fs::create_directories(directory);
    ::chmod(directory.c_str(), 0700);
    public_base_url_ = str(config, "public_base_url", "");
    while (!public_base_url_.empty() && public_base_url_.back() == '/')
        public_base_url_.pop_back();
    if (!public_base_url_.empty() && public_base_url_.rfind("http://", 0) != 0 && public_base_url_.rfind("https://", 0) != 0)
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT,
                         "public_base_url '" + public_base_url_ + "' must start with http:// or https://");
    root_crl_validity_ = std::chrono::hours(24 * num(config, "root_crl_validity_days", 180));
    root_key_source_ = str(config, "root_private_key", "");
    if (!root_key_source_.empty() && root_key_source_.rfind("pkcs11:", 0) != 0 && !fs::path(root_key_source_).is_absolute())
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT,
                         "root_private_key '" + root_key_source_ + "' must be an absolute path or a pkcs11: URI");
    shared_key_file_ = str(config, "shared_key_file", "");
    if (!shared_key_file_.empty() && !fs::path(shared_key_file_).is_absolute())
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT,
                         "[ca." + name_ + "] shared_key_file '" + shared_key_file_ + "' must be an absolute path");
    // The issuance record: <directory>/issued.db as always, or the fleet's PostgreSQL schema ca_local.
    store_guard([&] {
        const std::string store_config = host.store_config_json();
        std::string instance_id;
        std::error_code jec;
        if (const auto doc = json::parse(store_config, jec); !jec && doc.is_object())
            if (const auto* v = doc.as_object().if_contains("instance_id"); v && v->is_string()) instance_id = v->as_string();
        if (instance_id.empty()) instance_id = "local";
        store_ = std::make_unique<IssuanceStore>(
            sql::Options::from_store_config(store_config, directory, "ca_local", "issued.db"), name_, instance_id);
    });
    try {
        if (config.contains("certificate") || config.contains("private_key")) {
            if (!config.contains("certificate") || !config.contains("private_key"))
                throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "'certificate' and 'private_key' go together");
            for (const char* key : {"certificate", "private_key", "chain"}) {
                const std::string v = str(config, key, "");
                if (!v.empty() && v.rfind("pkcs11:", 0) != 0 && !fs::path(v).is_absolute())
                    throw sdk::Error(CC_ERR_INVALID_ARGUMENT,
                                     std::string(key) + " '" + v + "' must be an absolute path or a pkcs11: URI");
            }
            issuing_cert_ = crypto::load_certificate(read_text(str(config, "certificate", "")));
            issuing_key_ = crypto::load_private_key_from(str(config, "private_key", ""));
            chain_.push_back(crypto::Cert(X509_dup(issuing_cert_.get())));
            if (const std::string chain = str(config, "chain", ""); !chain.empty())
                for (auto& c : crypto::load_certificates(read_text(chain)))
                    chain_.push_back(std::move(c));
        } else if (store_->shared()) {
            load_shared_hierarchy(config);
        } else {
            if (!fs::exists(directory / "issuing.pem")) create_hierarchy(config, directory);
            issuing_cert_ = crypto::load_certificate(read_text(directory / "issuing.pem"));
            issuing_key_ = crypto::load_private_key(read_text(directory / "issuing-key.pem"));
            chain_.push_back(crypto::Cert(X509_dup(issuing_cert_.get())));
            chain_.push_back(crypto::load_certificate(read_text(directory / "root.pem")));
        }
    } catch (const crypto::CryptoError& e) {
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, std::string("CA key material: ") + e.what());
    }
    if (X509_check_private_key(issuing_cert_.get(), issuing_key_.get()) != 1) {
        ERR_clear_error();
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "the issuing CA's private key does not match its certificate");
    }
    for (const auto& c : chain_)
        chain_pem_ += crypto::certificate_pem(c.get());

    if (const auto* profiles = config.if_contains("profiles"))
        for (const auto& [pname, settings] : profiles->as_object())
            profiles_.emplace(std::string(pname), CertificateProfile::from_json(std::string(pname), settings.as_object()));
    if (profiles_.empty()) profiles_.emplace("default", CertificateProfile::from_json("default", {}));
    // Every profile's extensions must be encodable now, not at the first request.
    for (const auto& [pname, p] : profiles_) {
        crypto::Cert probe(X509_new());
        X509V3_CTX ctx;
        X509V3_set_ctx(&ctx, issuing_cert_.get(), probe.get(), nullptr, nullptr, 0);
        try {
            if (!p.key_usage.empty()) add_ext(probe.get(), &ctx, NID_key_usage, "critical," + join(p.key_usage));
            if (!p.extended_key_usage.empty()) add_ext(probe.get(), &ctx, NID_ext_key_usage, join(p.extended_key_usage));
        } catch (const crypto::CryptoError& e) {
            throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "profile '" + pname + "': " + e.what());
        }
    }
    issuing_der_ = crypto::certificate_der(issuing_cert_.get());
    if (!shared_hierarchy_ && fs::exists(directory / "root-crl.der")) {
        try {
            root_crl_ = std::make_shared<const std::string>(crypto::read_file(directory / "root-crl.der"));
        } catch (const std::exception& e) {
            throw sdk::Error(CC_ERR_UNAVAILABLE, std::string("the root CRL: ") + e.what());
        }
    }
    RevocationSettings rs;
    rs.ca_name = name_;
    rs.crl_validity = std::chrono::hours(num(config, "crl_validity_hours", 48));
    rs.crl_refresh = std::chrono::hours(num(config, "crl_refresh_hours", 24));
    rs.ocsp_validity = std::chrono::minutes(num(config, "ocsp_validity_minutes", 60));
    rs.responder_algorithm = str(config, "ocsp_responder_algorithm", "p256");
    rs.leader_period = std::chrono::seconds(num(config, "crl_leader_seconds", 30));
    if (rs.crl_refresh >= rs.crl_validity)
        throw sdk::Error(
            CC_ERR_INVALID_ARGUMENT,
            "crl_refresh_hours must be less than crl_validity_hours, so a fresh CRL is out before the old one expires");
    revocation_ = std::make_unique<RevocationService>(rs, issuing_cert_.get(), issuing_key_.get(), *store_, directory, &host_);
}

LocalCa::NewHierarchy LocalCa::make_hierarchy(const json::object& config) {
    const std::string algorithm = str(config, "algorithm", "p256");
    const long day = 24L * 3600;
    crypto::PKey root_key = crypto::generate_key(algorithm);
    crypto::Name root_name = crypto::parse_name(str(config, "root_subject", "CN=certconnector Root CA (" + name_ + ")"));
    crypto::Cert root = sign_certificate(root_name.get(), root_key.get(), nullptr, root_key.get(), new_serial(), -3600,
                                         num(config, "root_validity_days", 7300) * day,
                                         {{NID_basic_constraints, "critical,CA:TRUE"},
                                          {NID_key_usage, "critical,keyCertSign,cRLSign"},
                                          {NID_subject_key_identifier, "hash"},
                                          {NID_authority_key_identifier, "keyid:always"}});
    crypto::PKey issuing_key = crypto::generate_key(algorithm);
    crypto::Name issuing_name = crypto::parse_name(str(config, "issuing_subject", "CN=certconnector Issuing CA (" + name_ + ")"));
    std::vector<std::pair<int, std::string>> issuing_extensions = {
        {NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
        {NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature"},
        {NID_subject_key_identifier, "hash"},
        {NID_authority_key_identifier, "keyid:always"}};
    if (!public_base_url_.empty()) {
        // Relying parties that check the whole chain (Java PKIX, Windows) need the issuing CA's
        // own revocation status: the root's CRL, and where the root certificate is.
        issuing_extensions.emplace_back(NID_crl_distribution_points, "URI:" + public_base_url_ + "/crl/" + name_ + "-root.crl");
        issuing_extensions.emplace_back(NID_info_access, "caIssuers;URI:" + public_base_url_ + "/ca/" + name_ + "-root.crt");
    }
    crypto::Cert issuing = sign_certificate(issuing_name.get(), issuing_key.get(), root.get(), root_key.get(), new_serial(),
                                            -3600, num(config, "issuing_validity_days", 3650) * day, issuing_extensions);
    return {algorithm, std::move(root), std::move(root_key), std::move(issuing), std::move(issuing_key)};
}

void LocalCa::create_hierarchy(const json::object& config, const fs::path& dir) {
    auto [algorithm, root, root_key, issuing, issuing_key] = make_hierarchy(config);
    {
        std::error_code ec;
        fs::remove(dir / "root-revoked.json", ec);  // a new root has revoked nothing
        std::lock_guard lock(root_mutex_);
        publish_root_crl(root.get(), root_key.get());  // before issuing.pem: a hierarchy is complete with its root CRL
    }
    crypto::write_file_atomic(dir / "root-key.pem", crypto::private_key_pem(root_key.get()), 0600);
    crypto::write_file_atomic(dir / "issuing-key.pem", crypto::private_key_pem(issuing_key.get()), 0600);
    crypto::write_file_atomic(dir / "root.pem", crypto::certificate_pem(root.get()), 0644);
    crypto::write_file_atomic(dir / "issuing.pem", crypto::certificate_pem(issuing.get()), 0644);  // last: marks completion
    host_.log(CC_EV_CaHierarchyCreated, CC_LEVEL_INFO,
              "CA '" + name_ + "': created a " + algorithm + " root and issuing CA in " + dir.string(), {},
              json::serialize(json::object{{"ca", name_},
                                           {"root_sha256", crypto::fingerprint_hex(root.get(), EVP_sha256())},
                                           {"issuing_sha256", crypto::fingerprint_hex(issuing.get(), EVP_sha256())}}));
}

namespace {

// PKCS#8 PEM encrypted under `passphrase` (PBES2: AES-256-CBC, PBKDF2).
std::string encrypted_key_pem(EVP_PKEY* key, const std::string& passphrase) {
    return crypto::encrypt_private_key_pem(key, passphrase);
}

// nullptr when the passphrase does not decrypt it.
crypto::PKey decrypted_key(const std::string& pem, const std::string& passphrase) {
    try {
        return crypto::decrypt_private_key_pem(pem, passphrase, "a CA key");
    } catch (const crypto::CryptoError&) {
        return nullptr;
    }
}

}  // namespace

std::string LocalCa::shared_passphrase() const {
    try {
        return crypto::read_passphrase_file(shared_key_file_, "the passphrase file");
    } catch (const std::exception& e) {
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "[ca." + name_ + "] shared_key_file: " + e.what());
    }
}

void LocalCa::load_shared_hierarchy(const json::object& config) {
    if (shared_key_file_.empty())
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT,
                         "[ca." + name_ +
                             "] shared_key_file: needed with a shared [store] so every instance holds the CA key (or configure "
                             "certificate and private_key as files or pkcs11: URIs on every instance)");
    std::string passphrase = shared_passphrase();
    struct Wipe {
        std::string& s;
        ~Wipe() { sdk::wipe(s.data(), s.size()); }
    } wipe{passphrase};
    auto stored = store_guard([&] { return store_->load_hierarchy(); });
    if (!stored) {
        // The first instance creates the hierarchy; one INSERT wins, the others load the winner's.
        auto made = make_hierarchy(config);
        {
            std::lock_guard lock(root_mutex_);
            publish_root_crl(made.root.get(), made.root_key.get(), false);
        }
        SharedHierarchy h{crypto::certificate_pem(made.root.get()),
                          crypto::certificate_pem(made.issuing.get()),
                          encrypted_key_pem(made.root_key.get(), passphrase),
                          encrypted_key_pem(made.issuing_key.get(), passphrase),
                          root_crl_ ? *root_crl_ : std::string(),
                          {}};
        if (store_guard([&] { return store_->insert_hierarchy(h); }))
            host_.log(
                CC_EV_CaHierarchyCreated, CC_LEVEL_INFO,
                "CA '" + name_ + "': created a " + made.algorithm + " root and issuing CA in the shared store (" +
                    store_->where() + ") for every instance",
                {},
                json::serialize(json::object{{"ca", name_},
                                             {"shared", true},
                                             {"root_sha256", crypto::fingerprint_hex(made.root.get(), EVP_sha256())},
                                             {"issuing_sha256", crypto::fingerprint_hex(made.issuing.get(), EVP_sha256())}}));
        stored = store_guard([&] { return store_->load_hierarchy(); });
        if (!stored)
            throw sdk::Error(CC_ERR_UNAVAILABLE, "CA '" + name_ + "': the hierarchy stored in " + store_->where() + " vanished");
    }
    issuing_key_ = decrypted_key(stored->issuing_key_pem, passphrase);
    if (!issuing_key_ || !decrypted_key(stored->root_key_pem, passphrase))
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "[ca." + name_ + "] shared_key_file: the passphrase in " + shared_key_file_ +
                                                      " does not decrypt the CA keys in the shared store (" + store_->where() +
                                                      "; created by instance " + stored->created_by +
                                                      "): every instance of the fleet needs the same passphrase");
    issuing_cert_ = crypto::load_certificate(stored->issuing_pem);
    chain_.push_back(crypto::Cert(X509_dup(issuing_cert_.get())));
    chain_.push_back(crypto::load_certificate(stored->root_pem));
    std::lock_guard lock(root_mutex_);
    root_crl_ = stored->root_crl_der.empty() ? nullptr : std::make_shared<const std::string>(stored->root_crl_der);
    shared_hierarchy_ = true;
}

std::string LocalCa::new_serial() {
    // 127 random bits: positive, and far beyond the 64 bits of entropy RFC 5280 practice asks for.
    std::string bytes = crypto::random_bytes(16);
    bytes[0] = static_cast<char>((bytes[0] & 0x7f) | 0x01);
    std::string hex = crypto::hex_encode(bytes);
    for (auto& c : hex)
        c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return hex;
}

std::string LocalCa::answer(const IssuedCertificate& c, bool already_issued) const {
    return json::serialize(json::object{{"serial", c.serial},
                                        {"certificate_pem", c.certificate_pem},
                                        {"chain_pem", chain_pem_},
                                        {"subject", c.subject},
                                        {"not_before", c.not_before},
                                        {"not_after", c.not_after},
                                        {"profile", c.profile},
                                        {"already_issued", already_issued}});
}

std::string LocalCa::issue(const std::string& request_json) {
    return store_guard([&] { return issue_unguarded(request_json); });
}

std::string LocalCa::issue_unguarded(const std::string& request_json) {
    std::error_code ec;
    const json::value parsed = json::parse(request_json, ec);
    if (ec || !parsed.is_object()) throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "issue request is not a JSON object");
    const json::object& req = parsed.get_object();
    const std::string csr_pem = str(req, "csr_pem", "");
    const std::string request_id = str(req, "request_id", "");
    const std::string profile_name = str(req, "profile", "default");
    if (csr_pem.empty()) throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "issue request has no csr_pem");

    if (!request_id.empty())
        if (auto existing = store_->find_by_request(request_id)) return answer(*existing, true);

    auto profile = profiles_.find(profile_name);
    if (profile == profiles_.end()) {
        std::string names;
        for (const auto& [n, p] : profiles_)
            names += (names.empty() ? "" : ", ") + n;
        throw sdk::Error(CC_ERR_NOT_FOUND, "CA '" + name_ + "' has no profile '" + profile_name + "' (profiles: " + names + ")");
    }
    crypto::Request csr;
    try {
        csr = crypto::load_csr(csr_pem);
    } catch (const crypto::CryptoError& e) {
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, e.what());
    }
    EVP_PKEY* public_key = X509_REQ_get0_pubkey(csr.get());
    if (!public_key || X509_REQ_verify(csr.get(), public_key) != 1) {
        ERR_clear_error();
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "the CSR's signature does not verify");
    }
    const CertificateProfile& p = profile->second;
    p.enforce(csr.get());

    std::vector<std::pair<int, std::string>> extensions = {{NID_basic_constraints, "critical,CA:FALSE"},
                                                           {NID_subject_key_identifier, "hash"},
                                                           {NID_authority_key_identifier, "keyid"}};
    if (!p.key_usage.empty()) extensions.emplace_back(NID_key_usage, "critical," + join(p.key_usage));
    if (!p.extended_key_usage.empty()) extensions.emplace_back(NID_ext_key_usage, join(p.extended_key_usage));
    if (!public_base_url_.empty()) {
        extensions.emplace_back(NID_crl_distribution_points, "URI:" + public_base_url_ + "/crl/" + name_ + ".crl");
        extensions.emplace_back(NID_info_access, "OCSP;URI:" + public_base_url_ + "/ocsp/" + name_ +
                                                     ",caIssuers;URI:" + public_base_url_ + "/ca/" + name_ + ".crt");
    }
    STACK_OF(X509_EXTENSION)* requested = X509_REQ_get_extensions(csr.get());
    std::vector<X509_EXTENSION*> copied;  // of what the client asked for, only its (checked) subjectAltName
    for (int i = 0; requested && i < sk_X509_EXTENSION_num(requested); ++i)
        if (OBJ_obj2nid(X509_EXTENSION_get_object(sk_X509_EXTENSION_value(requested, i))) == NID_subject_alt_name)
            copied.push_back(sk_X509_EXTENSION_value(requested, i));
    const auto sans = crypto::read_sans(requested);

    IssuedCertificate record;
    for (int attempt = 0;; ++attempt) {
        std::string serial = new_serial();
        crypto::Cert cert;
        try {
            cert = sign_certificate(X509_REQ_get_subject_name(csr.get()), public_key, issuing_cert_.get(), issuing_key_.get(),
                                    serial, -static_cast<long>(p.backdate.count()) * 60,
                                    static_cast<long>(p.validity_days) * 24 * 3600, extensions, copied);
        } catch (const crypto::CryptoError& e) {
            sk_X509_EXTENSION_pop_free(requested, X509_EXTENSION_free);
            throw sdk::Error(CC_ERR_INTERNAL, e.what());
        }
        json::array san_list;
        for (const auto& s : sans)
            san_list.push_back(json::string(s.type + ":" + s.value));
        record = IssuedCertificate{crypto::serial_hex(cert.get()),
                                   request_id,
                                   crypto::name_string(X509_get_subject_name(cert.get())),
                                   json::serialize(san_list),
                                   crypto::time_iso8601(X509_get0_notBefore(cert.get())),
                                   crypto::time_iso8601(X509_get0_notAfter(cert.get())),
                                   p.name,
                                   str(req, "requester", ""),
                                   "valid",
                                   "",
                                   "",
                                   crypto::certificate_pem(cert.get())};
        if (store_->insert(record)) break;
        // A constraint: this request id was issued concurrently, or (astronomically rarely) the serial exists.
        if (!request_id.empty())
            if (auto existing = store_->find_by_request(request_id)) {
                sk_X509_EXTENSION_pop_free(requested, X509_EXTENSION_free);
                return answer(*existing, true);
            }
        if (attempt > 3) {
            sk_X509_EXTENSION_pop_free(requested, X509_EXTENSION_free);
            throw sdk::Error(CC_ERR_INTERNAL, "could not allocate a unique serial number");
        }
    }
    sk_X509_EXTENSION_pop_free(requested, X509_EXTENSION_free);
    return answer(record, false);
}

IssuedCertificate LocalCa::prepare_revocation(const json::object& req, std::string& reason) const {
    std::string serial;
    try {
        serial = IssuanceStore::canonical_serial(str(req, "serial", ""));
        reason = reason_name(reason_code(str(req, "reason", "unspecified")));
    } catch (const std::invalid_argument& e) {
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, e.what());
    }
    if (reason == "removeFromCRL")
        throw sdk::Error(CC_ERR_NOT_SUPPORTED, "removeFromCRL is for delta CRLs; CA '" + name_ + "' publishes full CRLs only");
    // An issuer named in the request must be this CA: a serial is only unique per issuer.
    if (const std::string issuer = str(req, "issuer", ""); !issuer.empty()) {
        bool same = false;
        try {
            same = X509_NAME_cmp(crypto::parse_name(issuer).get(), X509_get_subject_name(issuing_cert_.get())) == 0;
        } catch (const std::exception& e) {
            throw sdk::Error(CC_ERR_INVALID_ARGUMENT, std::string("issuer: ") + e.what());
        }
        if (!same)
            throw sdk::Error(CC_ERR_NOT_FOUND, "CA '" + name_ + "' is '" +
                                                   crypto::name_string(X509_get_subject_name(issuing_cert_.get())) +
                                                   "', not the issuer '" + issuer + "' named in the request");
    }
    auto cert = store_->find_by_serial(serial);
    if (!cert) throw sdk::Error(CC_ERR_NOT_FOUND, "CA '" + name_ + "' issued no certificate with serial " + serial);
    return *cert;
}

json::object LocalCa::revocation_answer(const IssuedCertificate& cert, bool changed, const std::string& reason,
                                        const std::string& when) const {
    // When it was already revoked, the first revocation's time and reason stand.
    return {{"serial", cert.serial},
            {"status", "revoked"},
            {"reason", changed ? reason : cert.revocation_reason},
            {"revoked_at", changed ? when : cert.revoked_at},
            {"already_revoked", !changed},
            {"subject", cert.subject},
            {"issuer", crypto::name_string(X509_get_subject_name(issuing_cert_.get()))}};
}

std::string LocalCa::revoke(const std::string& request_json) {
    return store_guard([&] { return revoke_unguarded(request_json); });
}

std::string LocalCa::revoke_unguarded(const std::string& request_json) {
    std::error_code ec;
    const json::value parsed = json::parse(request_json, ec);
    if (ec || !parsed.is_object()) throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "revoke request is not a JSON object");
    const std::string when = sdk::utc_iso8601(std::chrono::system_clock::now());

    const json::value* batch = parsed.get_object().if_contains("batch");
    if (!batch) {
        std::string reason;
        const IssuedCertificate cert = prepare_revocation(parsed.get_object(), reason);
        const bool changed = store_->revoke_many({{cert.serial, reason}}, when)[0];
        if (changed) revocation_->changed();
        const auto current = changed ? cert : *store_->find_by_serial(cert.serial);
        return json::serialize(revocation_answer(current, changed, reason, when));
    }

    // A batch: every valid request is committed in one transaction.
    if (!batch->is_array() || batch->as_array().size() > 1000)
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "'batch' must be an array of at most 1000 revoke requests");
    struct Entry {
        std::optional<IssuedCertificate> cert;
        std::string reason;
        json::object error;
    };
    std::vector<Entry> entries;
    std::vector<std::pair<std::string, std::string>> to_revoke;
    for (const auto& item : batch->as_array()) {
        Entry e;
        try {
            if (!item.is_object()) throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "a batch entry is not a JSON object");
            e.cert = prepare_revocation(item.as_object(), e.reason);
            to_revoke.emplace_back(e.cert->serial, e.reason);
        } catch (const sdk::Error& err) {
            e.error = {{"code", static_cast<int>(err.code())}, {"message", err.what()}};
        }
        entries.push_back(std::move(e));
    }
    const std::vector<bool> changed = store_->revoke_many(to_revoke, when);
    json::array results;
    std::size_t k = 0;
    bool any = false;
    for (auto& e : entries) {
        if (!e.cert) {
            results.push_back(json::object{{"error", e.error}});
            continue;
        }
        const bool c = changed[k++];
        any = any || c;
        results.push_back(revocation_answer(c ? *e.cert : *store_->find_by_serial(e.cert->serial), c, e.reason, when));
    }
    if (any) revocation_->changed();
    return json::serialize(json::object{{"results", std::move(results)}});
}

std::string LocalCa::query(const std::string& request_json) {
    return store_guard([&] { return query_unguarded(request_json); });
}

std::string LocalCa::query_unguarded(const std::string& request_json) {
    std::error_code ec;
    const json::value parsed = json::parse(request_json, ec);
    if (ec || !parsed.is_object()) throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "query is not a JSON object");
    const json::object& req = parsed.get_object();
    const std::string op = str(req, "op", "");
    if (op == "crl") {
        const std::string level = str(req, "level", "issuing");
        if (level == "root") {
            std::shared_ptr<const std::string> root_crl;
            if (shared_hierarchy_) {  // a ceremony on any instance is served by every one
                const auto stored = store_->load_hierarchy();
                std::lock_guard lock(root_mutex_);
                if (stored && !stored->root_crl_der.empty() && (!root_crl_ || *root_crl_ != stored->root_crl_der))
                    root_crl_ = std::make_shared<const std::string>(stored->root_crl_der);
            }
            {
                std::lock_guard lock(root_mutex_);
                root_crl = root_crl_;
            }
            if (!root_crl)
                throw sdk::Error(
                    CC_ERR_NOT_FOUND,
                    "CA '" + name_ + "' publishes no root CRL (sign one: `certconnector ca root-crl --name " + name_ + "`)");
            return json::serialize(json::object{{"crl_der", crypto::base64_encode(*root_crl)}});
        }
        if (level != "issuing")
            throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "crl level '" + level + "' is neither \"issuing\" nor \"root\"");
        return json::serialize(json::object{{"crl_der", crypto::base64_encode(*revocation_->crl())}});
    }
    if (op == "ocsp") {
        std::string der;
        try {
            der = crypto::base64_decode(str(req, "request_der", ""));
        } catch (const std::invalid_argument&) {
            throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "request_der is not base64");
        }
        return json::serialize(json::object{{"response_der", crypto::base64_encode(revocation_->ocsp(der))}});
    }
    if (op == "health") return health();
    if (op == "certificate") {
        std::string serial;
        try {
            serial = IssuanceStore::canonical_serial(str(req, "serial", ""));
        } catch (const std::invalid_argument& e) {
            throw sdk::Error(CC_ERR_INVALID_ARGUMENT, e.what());
        }
        const auto cert = store_->find_by_serial(serial);
        if (!cert) throw sdk::Error(CC_ERR_NOT_FOUND, "CA '" + name_ + "' issued no certificate with serial " + serial);
        json::object answer{{"serial", cert->serial}, {"certificate_pem", cert->certificate_pem}, {"status", cert->status}};
        if (cert->status == "revoked") {  // the reason lets a feature say why it refuses (scep renewal)
            answer["revocation_reason"] = cert->revocation_reason;
            answer["revoked_at"] = cert->revoked_at;
        }
        return json::serialize(answer);
    }
    throw sdk::Error(CC_ERR_NOT_SUPPORTED,
                     "CA '" + name_ + "' answers no query '" + op + "' (known: certificate, crl, ocsp, health)");
}

X509* LocalCa::root_certificate() const {
    if (chain_.size() < 2) return nullptr;
    X509* last = chain_.back().get();
    return X509_check_issued(last, last) == X509_V_OK ? last : nullptr;
}

namespace {

// "2026-12-07T15:00:00Z" -> an ASN1_TIME (caller frees).
ASN1_TIME* iso_to_asn1(const std::string& iso) {
    std::string compact;
    for (char c : iso)
        if (std::isdigit(static_cast<unsigned char>(c)) || c == 'Z') compact += c;
    ASN1_TIME* t = ASN1_TIME_new();
    if (!t || ASN1_TIME_set_string_X509(t, compact.c_str()) != 1) {
        ASN1_TIME_free(t);
        crypto::throw_openssl("revocation time '" + iso + "'");
    }
    return t;
}

// The CRL number of a DER CRL, or 0.
std::int64_t crl_number_of(const std::string& der) {
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    std::unique_ptr<X509_CRL, crypto::Deleter<X509_CRL_free>> crl(d2i_X509_CRL(nullptr, &p, static_cast<long>(der.size())));
    if (!crl) {
        ERR_clear_error();
        return 0;
    }
    std::unique_ptr<ASN1_INTEGER, crypto::Deleter<ASN1_INTEGER_free>> n(
        static_cast<ASN1_INTEGER*>(X509_CRL_get_ext_d2i(crl.get(), NID_crl_number, nullptr, nullptr)));
    std::int64_t out = 0;
    if (!n || ASN1_INTEGER_get_int64(&out, n.get()) != 1) out = 0;
    ERR_clear_error();
    return out;
}

// nextUpdate of a DER CRL as seconds from now (negative: expired); nullopt when unreadable.
std::optional<long> crl_seconds_left(const std::string& der) {
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    std::unique_ptr<X509_CRL, crypto::Deleter<X509_CRL_free>> crl(d2i_X509_CRL(nullptr, &p, static_cast<long>(der.size())));
    if (!crl || !X509_CRL_get0_nextUpdate(crl.get())) {
        ERR_clear_error();
        return std::nullopt;
    }
    int days = 0, secs = 0;
    if (!ASN1_TIME_diff(&days, &secs, nullptr, X509_CRL_get0_nextUpdate(crl.get()))) return std::nullopt;
    return static_cast<long>(days) * 86400 + secs;
}

}  // namespace

void LocalCa::publish_root_crl(X509* root, EVP_PKEY* root_key, bool persist) {
    if (X509_check_private_key(root, root_key) != 1) {
        ERR_clear_error();
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "the root key given does not belong to the root certificate of CA '" + name_ +
                                                      "' (" + crypto::name_string(X509_get_subject_name(root)) + ")");
    }
    json::array revoked;
    if (fs::exists(directory_ / "root-revoked.json")) {
        std::error_code ec;
        const json::value v = json::parse(read_text(directory_ / "root-revoked.json"), ec);
        if (ec || !v.is_array())
            throw sdk::Error(CC_ERR_INTERNAL, (directory_ / "root-revoked.json").string() + " is not a JSON array");
        revoked = v.get_array();
    }
    const std::int64_t number = (root_crl_ ? crl_number_of(*root_crl_) : 0) + 1;
    const time_t now = std::time(nullptr);
    std::unique_ptr<X509_CRL, crypto::Deleter<X509_CRL_free>> crl(X509_CRL_new());
    X509_CRL_set_version(crl.get(), X509_CRL_VERSION_2);
    X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(root));
    {
        std::unique_ptr<ASN1_TIME, crypto::Deleter<ASN1_TIME_free>> this_update(ASN1_TIME_set(nullptr, now));
        std::unique_ptr<ASN1_TIME, crypto::Deleter<ASN1_TIME_free>> next_update(
            ASN1_TIME_adj(nullptr, now, 0, static_cast<long>(root_crl_validity_.count())));
        X509_CRL_set1_lastUpdate(crl.get(), this_update.get());
        X509_CRL_set1_nextUpdate(crl.get(), next_update.get());
    }
    for (const auto& r : revoked) {
        const auto& o = r.as_object();
        X509_REVOKED* entry = X509_REVOKED_new();
        BIGNUM* bn = nullptr;
        BN_hex2bn(&bn, std::string(o.at("serial").as_string()).c_str());
        ASN1_INTEGER* sn = BN_to_ASN1_INTEGER(bn, nullptr);
        BN_free(bn);
        X509_REVOKED_set_serialNumber(entry, sn);
        ASN1_INTEGER_free(sn);
        std::unique_ptr<ASN1_TIME, crypto::Deleter<ASN1_TIME_free>> when(
            iso_to_asn1(std::string(o.at("revoked_at").as_string())));
        X509_REVOKED_set_revocationDate(entry, when.get());
        const int code = reason_code(std::string(o.at("reason").as_string()));
        if (code != 0) {
            ASN1_ENUMERATED* e = ASN1_ENUMERATED_new();
            ASN1_ENUMERATED_set(e, code);
            X509_REVOKED_add1_ext_i2d(entry, NID_crl_reason, e, 0, 0);
            ASN1_ENUMERATED_free(e);
        }
        X509_CRL_add0_revoked(crl.get(), entry);
    }
    X509_CRL_sort(crl.get());
    {
        ASN1_INTEGER* n = ASN1_INTEGER_new();
        ASN1_INTEGER_set_int64(n, number);
        X509_CRL_add1_ext_i2d(crl.get(), NID_crl_number, n, 0, 0);
        ASN1_INTEGER_free(n);
        X509V3_CTX ctx;
        X509V3_set_ctx(&ctx, root, nullptr, nullptr, crl.get(), 0);
        X509_EXTENSION* aki = X509V3_EXT_conf_nid(nullptr, &ctx, NID_authority_key_identifier, "keyid:always");
        if (!aki) crypto::throw_openssl("root CRL authorityKeyIdentifier");
        X509_CRL_add_ext(crl.get(), aki, -1);
        X509_EXTENSION_free(aki);
    }
    if (!X509_CRL_sign(crl.get(), root_key, digest_for(root_key))) crypto::throw_openssl("signing the root CRL");
    unsigned char* der = nullptr;
    const int len = i2d_X509_CRL(crl.get(), &der);
    if (len <= 0) crypto::throw_openssl("encoding the root CRL");
    auto out = std::make_shared<const std::string>(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
    OPENSSL_free(der);
    if (persist && shared_hierarchy_)
        store_guard([&] { store_->store_root_crl(*out); });  // every instance serves it
    else if (persist)
        crypto::write_file_atomic(directory_ / "root-crl.der", *out, 0644);
    root_crl_ = out;
    host_.log(
        CC_EV_CaCrlPublished, CC_LEVEL_INFO,
        "CA '" + name_ + "': root CRL " + std::to_string(number) + " with " + std::to_string(revoked.size()) +
            " entries signed, valid for " + std::to_string(root_crl_validity_.count() / 86400) + " days",
        {},
        json::serialize(json::object{
            {"ca", name_}, {"level", "root"}, {"crl_number", number}, {"entries", revoked.size()}, {"bytes", out->size()}}));
}

std::string LocalCa::sign_root_crl(const std::string& root_key_pem, bool revoke_issuing, const std::string& reason) {
    X509* root = root_certificate();
    if (!root)
        throw sdk::Error(CC_ERR_NOT_SUPPORTED, "CA '" + name_ +
                                                   "' has no root certificate in its chain (configure 'chain' with the "
                                                   "self-signed root to publish its CRL here)");
    crypto::PKey key;
    try {
        if (!root_key_pem.empty())
            key = crypto::load_private_key(root_key_pem);
        else if (!root_key_source_.empty())
            key = crypto::load_private_key_from(root_key_source_);
        else if (shared_hierarchy_) {
            auto stored = store_guard([&] { return store_->load_hierarchy(); });
            std::string passphrase = shared_passphrase();
            if (stored) key = decrypted_key(stored->root_key_pem, passphrase);
            sdk::wipe(passphrase.data(), passphrase.size());
            if (!key)
                throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "[ca." + name_ + "] shared_key_file: the passphrase in " +
                                                              shared_key_file_ +
                                                              " does not decrypt the root key in the shared store");
        } else if (fs::exists(directory_ / "root-key.pem"))
            key = crypto::load_private_key(read_text(directory_ / "root-key.pem"));
        else
            throw sdk::Error(CC_ERR_NOT_FOUND, "CA '" + name_ +
                                                   "': no root key here (offline?): pass --root-key FILE, or set "
                                                   "root_private_key in [ca." +
                                                   name_ + "]");
    } catch (const crypto::CryptoError& e) {
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, std::string("the root key: ") + e.what());
    }
    std::lock_guard lock(root_mutex_);
    if (X509_check_private_key(root, key.get()) != 1) {
        ERR_clear_error();
        throw sdk::Error(CC_ERR_INVALID_ARGUMENT, "the root key given does not belong to the root certificate of CA '" + name_ +
                                                      "' (" + crypto::name_string(X509_get_subject_name(root)) + ")");
    }
    if (revoke_issuing) {
        std::string reason_text;
        try {
            reason_text = reason_name(reason_code(reason.empty() ? "cACompromise" : reason));
        } catch (const std::invalid_argument& e) {
            throw sdk::Error(CC_ERR_INVALID_ARGUMENT, e.what());
        }
        json::array revoked;
        if (fs::exists(directory_ / "root-revoked.json"))
            revoked = json::parse(read_text(directory_ / "root-revoked.json")).as_array();
        const std::string serial = crypto::serial_hex(issuing_cert_.get());
        bool listed = false;
        for (const auto& r : revoked)
            listed |= r.as_object().at("serial").as_string() == serial;
        if (!listed) {
            revoked.push_back(json::object{{"serial", serial},
                                           {"revoked_at", sdk::utc_iso8601(std::chrono::system_clock::now())},
                                           {"reason", reason_text},
                                           {"subject", crypto::name_string(X509_get_subject_name(issuing_cert_.get()))}});
            crypto::write_file_atomic(directory_ / "root-revoked.json", json::serialize(revoked), 0644);
        }
    }
    publish_root_crl(root, key.get());
    const auto left = crl_seconds_left(*root_crl_).value_or(0);
    return "CA '" + name_ + "': root CRL " + std::to_string(crl_number_of(*root_crl_)) + " signed by " +
           crypto::name_string(X509_get_subject_name(root)) + ", next update in " + std::to_string(left / 86400) + " days" +
           (revoke_issuing ? "; it lists the issuing CA " + crypto::serial_hex(issuing_cert_.get()) + " as revoked" : "") +
           "; served at /crl/" + name_ + "-root.crl\n";
}

std::string LocalCa::health() {
    auto answer = [](bool healthy, const std::string& detail) {
        return json::serialize(json::object{{"healthy", healthy}, {"detail", detail}});
    };
    // The issuing key signs (a token that went away fails here) and its signature verifies.
    {
        const std::string probe = crypto::random_bytes(32);
        std::unique_ptr<EVP_MD_CTX, crypto::Deleter<EVP_MD_CTX_free>> md(EVP_MD_CTX_new());
        std::size_t sig_len = 0;
        std::string sig;
        bool ok =
            md && EVP_DigestSignInit(md.get(), nullptr, EVP_sha256(), nullptr, issuing_key_.get()) == 1 &&
            EVP_DigestSign(md.get(), nullptr, &sig_len, reinterpret_cast<const unsigned char*>(probe.data()), probe.size()) == 1;
        if (ok) {
            sig.resize(sig_len);
            ok = EVP_DigestSign(md.get(), reinterpret_cast<unsigned char*>(sig.data()), &sig_len,
                                reinterpret_cast<const unsigned char*>(probe.data()), probe.size()) == 1;
            sig.resize(sig_len);
        }
        std::unique_ptr<EVP_MD_CTX, crypto::Deleter<EVP_MD_CTX_free>> vd(EVP_MD_CTX_new());
        ok = ok && vd &&
             EVP_DigestVerifyInit(vd.get(), nullptr, EVP_sha256(), nullptr, X509_get0_pubkey(issuing_cert_.get())) == 1 &&
             EVP_DigestVerify(vd.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                              reinterpret_cast<const unsigned char*>(probe.data()), probe.size()) == 1;
        if (!ok) {
            ERR_clear_error();
            return answer(false, "the issuing CA's key cannot sign (token or key file unusable)");
        }
    }
    // The record answers a read.
    try {
        (void)store_->revocation_status("01");
    } catch (const std::exception& e) {
        return answer(false, std::string("the issuance record cannot be read: ") + e.what());
    }
    int days = 0, secs = 0;
    if (ASN1_TIME_diff(&days, &secs, nullptr, X509_get0_notAfter(issuing_cert_.get())) && (days < 0 || secs < 0))
        return answer(false, "the issuing CA certificate has expired");
    std::string detail = "key signs, record readable";
    std::shared_ptr<const std::string> root_crl;
    {
        std::lock_guard lock(root_mutex_);
        root_crl = root_crl_;
    }
    if (root_crl) {
        const auto left = crl_seconds_left(*root_crl);
        if (!left) return answer(false, "the root CRL cannot be read");
        if (*left <= 0)
            return answer(false,
                          "the root CRL has expired: relying parties checking the whole chain fail; run "
                          "`certconnector ca root-crl --name " +
                              name_ + "`");
        detail += ", root CRL valid for " + std::to_string(*left / 86400) + " more days";
        if (*left < 14L * 86400) detail += " (sign a new one soon: `certconnector ca root-crl --name " + name_ + "`)";
    }
    return answer(true, detail);
}

std::string LocalCa::describe() {
    return store_guard([&] { return describe_unguarded(); });
}

std::string LocalCa::describe_unguarded() {
    return json::serialize(json::object{{"name", name_},
                                        {"chain_pem", chain_pem_},
                                        {"subject", crypto::name_string(X509_get_subject_name(issuing_cert_.get()))},
                                        {"key_type", crypto::key_type_of(issuing_key_.get())},
                                        {"issued", store_->count()},
                                        {"revoked", store_->revoked_count()},
                                        {"crl_url", public_base_url_.empty() ? "" : public_base_url_ + "/crl/" + name_ + ".crl"},
                                        {"ocsp_url", public_base_url_.empty() ? "" : public_base_url_ + "/ocsp/" + name_}});
}

}  // namespace certconn::ca_local
