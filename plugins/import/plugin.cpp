// import: delivers a PFX an administrator uploaded (typically an S/MIME encryption certificate
// with its key, so every device of the user can read old mail). The PFX password arrives
// RSA-OAEP encrypted to a connector key; the host decrypts it (the key never reaches the
// plugin), the plugin opens and checks the PFX, and re-encrypts PFX and password to the
// device's key as CMS EnvelopedData, the same delivery as the pkcs feature.
#include <certconn/crypto.hpp>
#include <certconn/job.hpp>
#include <certconn/sdk.hpp>
#include <certconn/secret.hpp>

#include <boost/json.hpp>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

namespace {

namespace json = boost::json;
namespace crypto = certconn::crypto;
using certconn::sdk::Error;
using certconn::sdk::status_name;
using certconn::sdk::string_field;

/// Refuses a certificate that cannot serve `purpose` (Graph's intendedPurpose). Absent KU or
/// EKU extensions allow everything, as RFC 5280 says.
void check_purpose(X509* cert, EVP_PKEY* key, const std::string& purpose) {
    const uint32_t ku = X509_get_key_usage(cert);            // UINT32_MAX when absent
    const uint32_t eku = X509_get_extended_key_usage(cert);  // UINT32_MAX when absent
    const bool rsa = EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA;
    auto need_eku = [&](uint32_t bit, const char* name) {
        if (!(eku & (bit | XKU_ANYEKU)))
            throw Error(CC_ERR_INVALID_ARGUMENT,
                        "the certificate does not suit " + purpose + ": its extended key usage lacks " + name);
    };
    if (purpose == "smimeEncryption") {
        need_eku(XKU_SMIME, "emailProtection");
        if (!(ku & (rsa ? KU_KEY_ENCIPHERMENT : KU_KEY_AGREEMENT)))
            throw Error(CC_ERR_INVALID_ARGUMENT,
                        std::string("the certificate does not suit smimeEncryption: its key usage lacks ") +
                            (rsa ? "keyEncipherment" : "keyAgreement"));
    } else if (purpose == "smimeSigning") {
        need_eku(XKU_SMIME, "emailProtection");
        if (!(ku & (KU_DIGITAL_SIGNATURE | KU_NON_REPUDIATION)))
            throw Error(CC_ERR_INVALID_ARGUMENT,
                        "the certificate does not suit smimeSigning: its key usage lacks digitalSignature");
    } else if (purpose == "vpn" || purpose == "wifi") {
        need_eku(XKU_SSL_CLIENT, "clientAuth");
    } else if (purpose != "unassigned") {
        throw Error(CC_ERR_INVALID_ARGUMENT,
                    "unknown purpose '" + purpose + "' (expected unassigned, smimeEncryption, smimeSigning, vpn or wifi)");
    }
}

class ImportFeature final : public certconn::sdk::FeaturePlugin {
public:
    explicit ImportFeature(certconn::sdk::Host& host)
        : host_(host),
          deliveries_(host, CC_EV_PkcsImportUploadedRequest, CC_EV_PkcsImportUploadFailure, CC_EV_PkcsImportRequestSuccess) {}

    std::string run_job(const std::string& job_json) override {
        const json::value parsed = json::parse(job_json);
        const json::object& job = parsed.as_object();
        const std::string id = string_field(job, {"id"});
        const auto [attempt, max_attempts] = certconn::sdk::attempt_of(job);
        if (attempt == 1) host_.log(CC_EV_PkcsImportDownloadedRequest, CC_LEVEL_INFO, "import request received", id);

        std::string pfx, encrypted_password, key_name, padding, purpose, upn;
        crypto::Recipient device;
        try {
            const auto* req = job.if_contains("request");
            if (!req || !req->is_object()) throw Error(CC_ERR_INVALID_ARGUMENT, "job has no request object");
            const json::object& r = req->as_object();
            // Our names, then the Graph userPFXCertificate names.
            const std::string pfx_b64 = string_field(r, {"pfx", "encryptedPfxBlob"});
            const std::string password_b64 = string_field(r, {"encrypted_password", "encryptedPfxPassword"});
            key_name = string_field(r, {"key_name", "keyName"});
            padding = string_field(r, {"padding", "paddingScheme"}, "oaep-sha512");
            purpose = string_field(r, {"purpose", "intendedPurpose"}, "unassigned");
            upn = string_field(r, {"upn", "userPrincipalName"});
            if (pfx_b64.empty()) throw Error(CC_ERR_INVALID_ARGUMENT, "'pfx' (the PFX file, base64) is required");
            if (password_b64.empty()) throw Error(CC_ERR_INVALID_ARGUMENT, "'encrypted_password' (base64) is required");
            if (key_name.empty())
                throw Error(CC_ERR_INVALID_ARGUMENT, "'key_name' (the connector key the password is encrypted to) is required");
            try {
                pfx = crypto::base64_decode(pfx_b64);
                encrypted_password = crypto::base64_decode(password_b64);
            } catch (const std::invalid_argument& e) {
                throw Error(CC_ERR_INVALID_ARGUMENT, std::string("'pfx' or 'encrypted_password' is not base64: ") + e.what());
            }
            const std::string device_pem = string_field(r, {"device_key_pem"});
            if (device_pem.empty())
                throw Error(CC_ERR_INVALID_ARGUMENT, "'device_key_pem' (the device's public key or certificate) is required");
            try {
                device = crypto::Recipient::from_pem(device_pem);
            } catch (const std::exception& e) {
                throw Error(CC_ERR_INVALID_ARGUMENT, std::string("device_key_pem: ") + e.what());
            }
        } catch (const Error& e) {
            return fail(id, e.code(), e.what());
        }

        certconn::sdk::Secret password;  // wiped when the job is done
        try {
            password = certconn::sdk::Secret(host_.key_decrypt(key_name, padding, encrypted_password));
        } catch (const Error& e) {
            if (e.retryable() && attempt < max_attempts) {
                host_.log(CC_EV_PkcsImportReencryptFailedAttempt, CC_LEVEL_WARNING,
                          "attempt " + std::to_string(attempt) + " of " + std::to_string(max_attempts) +
                              " failed (will retry): " + e.what(),
                          id);
                throw;
            }
            return fail(id, e.code(), e.what());
        }

        json::object result{{"status", "succeeded"}};
        try {
            crypto::Pkcs12Contents contents;
            try {
                contents = crypto::pkcs12_open(pfx, password);
            } catch (const std::invalid_argument& e) {
                throw Error(CC_ERR_INVALID_ARGUMENT, e.what());
            }
            X509* cert = contents.certificate.get();
            if (X509_check_private_key(cert, contents.key.get()) != 1) {
                ERR_clear_error();
                throw Error(CC_ERR_INVALID_ARGUMENT, "the PFX's private key does not match its certificate");
            }
            if (X509_cmp_current_time(X509_get0_notBefore(cert)) > 0)
                throw Error(CC_ERR_INVALID_ARGUMENT,
                            "the certificate is not valid yet (from " + crypto::time_iso8601(X509_get0_notBefore(cert)) + ")");
            if (X509_cmp_current_time(X509_get0_notAfter(cert)) < 0)
                throw Error(CC_ERR_INVALID_ARGUMENT,
                            "the certificate expired on " + crypto::time_iso8601(X509_get0_notAfter(cert)));
            check_purpose(cert, contents.key.get(), purpose);
            result["pfx_cms"] = crypto::base64_encode(crypto::cms_encrypt(pfx, device));
            result["password_cms"] = crypto::base64_encode(crypto::cms_encrypt(password.reveal(), device));
            result["thumbprint"] = crypto::fingerprint_hex(cert, EVP_sha1());  // lower case, as Graph has it
            result["thumbprint_sha256"] = crypto::fingerprint_hex(cert, EVP_sha256());
            result["serial"] = crypto::serial_hex(cert);
            result["subject"] = crypto::name_string(X509_get_subject_name(cert));
            result["issuer"] = crypto::name_string(X509_get_issuer_name(cert));
            result["not_before"] = crypto::time_iso8601(X509_get0_notBefore(cert));
            result["not_after"] = crypto::time_iso8601(X509_get0_notAfter(cert));
            result["certificate_pem"] = crypto::certificate_pem(cert);
            result["purpose"] = purpose;
            result["upn"] = upn;
            result["key_name"] = key_name;
        } catch (const Error& e) {
            return fail(id, e.code(), e.what());
        } catch (const std::exception& e) {
            return fail(id, CC_ERR_INTERNAL, std::string("re-encryption failed: ") + e.what());
        }
        const std::string what = "imported PFX " + std::string(result["thumbprint"].as_string()) + " (" +
                                 std::string(result["subject"].as_string()) + ") re-encrypted for the device" +
                                 (upn.empty() ? "" : " of " + upn);
        host_.log(CC_EV_PkcsImportReencryptSuccess, CC_LEVEL_INFO, what, id);
        deliveries_.succeeded(
            id, what, json::serialize(json::object{{"thumbprint", result["thumbprint"]}, {"purpose", purpose}, {"upn", upn}}));
        return json::serialize(result);
    }

    void jobs_report(const JobsReport& r) override {
        static constexpr certconn::sdk::BatchEvents kBatch{CC_EV_PkcsImportDownloadSuccess, CC_EV_PkcsImportDownloadFailure,
                                                           CC_EV_PkcsImportUploadSuccess, "import requests"};
        kBatch.log(host_, r.kind, r.tenant, r.job_ids.size(), r.message);
    }

    void result_delivered(const std::string& job_id, bool delivered, const std::string& message) override {
        deliveries_.delivered(job_id, delivered, message);
    }

private:
    std::string fail(const std::string& id, cc_status status, const std::string& message) {
        host_.log(CC_EV_PkcsImportReencryptFailure, CC_LEVEL_ERROR, "import failed: " + message, id);
        host_.log(CC_EV_PkcsImportRequestFailure, CC_LEVEL_ERROR, "imported PFX could not be delivered: " + message, id,
                  json::serialize(json::object{{"code", status_name(status)}}));
        return json::serialize(
            json::object{{"status", "failed"}, {"error", json::object{{"code", status_name(status)}, {"message", message}}}});
    }

    certconn::sdk::Host& host_;
    crypto::LegacyProviders legacy_;  // PFX files exported with RC2-40 (older Windows) open too
    certconn::sdk::DeliveryEvents deliveries_;
};

}  // namespace

CERTCONN_PLUGIN(ImportFeature, "import", "0.1.0", "2026-11-25", "Delivers imported PFX files (S/MIME) re-encrypted to the device",
                nullptr)
