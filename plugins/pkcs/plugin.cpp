// pkcs: issues a key pair + certificate for a user or device and delivers it as PKCS#12
// encrypted to the device (CMS EnvelopedData), with the password in a second envelope and an
// escrow copy for the connector; "recrypt" jobs re-encrypt an escrow copy to a new device key.
#include "KeyJournal.hpp"

#include <certconn/crypto.hpp>
#include <certconn/job.hpp>
#include <certconn/sdk.hpp>
#include <certconn/secret.hpp>

#include <boost/json.hpp>

#include <sys/stat.h>

#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <mutex>

namespace {

namespace json = boost::json;
namespace crypto = certconn::crypto;
using certconn::pkcs::JournalEntry;
using certconn::sdk::Error;
using certconn::sdk::Secret;
using certconn::sdk::status_name;
using certconn::sdk::string_field;

constexpr const char* kSchema = R"json({"type":"table","keys":{
  "default_ca": {"type":"string","description":"CA used when a job names none"},
  "default_profile": {"type":"string"},
  "default_key_type": {"type":"string","enum":["rsa2048","rsa3072","rsa4096","p256","p384"]},
  "escrow_key": {"type":"string","secret":true,"description":"connector escrow key: absolute PEM path or pkcs11: URI (default: generated in the state directory)"},
  "shared_key_file": {"type":"string","description":"with a shared [store] (a fleet): absolute path of a file (not accessible by others) holding a passphrase of at least 16 characters, the same on every instance; the keys of jobs in progress are kept in the store encrypted under it, so an instance re-running another's job reuses its key"}
}})json";

json::object failure(const char* code, const std::string& message) {
    return {{"status", "failed"}, {"error", json::object{{"code", code}, {"message", message}}}};
}

Secret random_password() {
    Secret raw(crypto::random_bytes(18));
    std::string p = crypto::base64_encode(raw.reveal());  // 24 characters, 144 bits
    for (auto& c : p)
        c = c == '+' ? 'x' : c == '/' ? 'y' : c;
    return Secret(std::move(p));
}

class PkcsFeature final : public certconn::sdk::FeaturePlugin {
public:
    explicit PkcsFeature(certconn::sdk::Host& host) : host_(host) {
        const auto config = json::parse(host.config_json()).as_object();
        journal_ = open_journal(config);
        default_ca_ = string_field(config, {"default_ca"}, "local");
        default_profile_ = string_field(config, {"default_profile"}, "default");
        default_key_type_ = string_field(config, {"default_key_type"}, "rsa2048");
        const std::string escrow = string_field(config, {"escrow_key"}, "");
        escrow_key_ = escrow.empty() ? generated_escrow_key() : crypto::load_private_key_from(escrow);
        escrow_recipient_ = crypto::Recipient::from_pem(crypto::public_key_pem(escrow_key_.get()));
    }

    std::string run_job(const std::string& job_json) override {
        const json::value parsed = json::parse(job_json);
        const json::object& job = parsed.as_object();
        const std::string id = string_field(job, {"id"});
        const auto* req = job.if_contains("request");
        if (!req || !req->is_object()) return json::serialize(failure("invalid_argument", "job has no request object"));
        const auto [attempt, max_attempts] = certconn::sdk::attempt_of(job);
        const std::string type = string_field(req->as_object(), {"type"}, "issue");
        {
            std::lock_guard lock(pending_mutex_);
            pending_[id] = Pending{type, {}, {}};
        }
        if (type == "recrypt") return recrypt(id, req->as_object(), attempt);
        if (type != "issue")
            return json::serialize(
                failure("invalid_argument", "unknown request type '" + type + "' (expected issue or recrypt)"));
        return issue(id, req->as_object(), attempt, max_attempts);
    }

    void jobs_report(const JobsReport& r) override {
        static constexpr certconn::sdk::BatchEvents kIssue{CC_EV_PkcsDownloadSuccess, CC_EV_PkcsDownloadFailure,
                                                           CC_EV_PkcsUploadSuccess, "PKCS requests"};
        static constexpr certconn::sdk::BatchEvents kRecrypt{CC_EV_PkcsRecryptDownloadSuccess, CC_EV_PkcsRecryptDownloadFailure,
                                                             CC_EV_PkcsRecryptUploadSuccess, "re-encrypt requests"};
        if (r.kind == CC_JOBS_DOWNLOAD_FAILED) {  // one failed download is one for both kinds
            kIssue.log(host_, r.kind, r.tenant, 0, r.message);
            kRecrypt.log(host_, r.kind, r.tenant, 0, r.message);
            return;
        }
        std::size_t recrypts = 0;
        for (std::size_t i = 0; i < r.job_ids.size(); ++i) {
            if (r.kind == CC_JOBS_DOWNLOADED) {
                recrypts += i < r.job_documents.size() && is_recrypt(r.job_documents[i]);
            } else {
                std::lock_guard lock(pending_mutex_);
                recrypts += uploaded_recrypts_.erase(r.job_ids[i]);
            }
        }
        if (r.job_ids.size() > recrypts) kIssue.log(host_, r.kind, r.tenant, r.job_ids.size() - recrypts);
        if (recrypts > 0) kRecrypt.log(host_, r.kind, r.tenant, recrypts);
    }

    static bool is_recrypt(const std::string& job_json) {
        std::error_code ec;
        const json::value job = json::parse(job_json, ec);
        if (ec || !job.is_object()) return false;
        const auto* req = job.as_object().if_contains("request");
        return req && req->is_object() && string_field(req->as_object(), {"type"}, "issue") == "recrypt";
    }

    void result_delivered(const std::string& job_id, bool delivered, const std::string& message) override {
        Pending job{"issue", {}, {}};  // after a restart the outbox delivers results of jobs run before it
        {
            std::lock_guard lock(pending_mutex_);
            if (auto it = pending_.find(job_id); it != pending_.end()) {
                job = it->second;
                if (delivered) pending_.erase(it);
            }
            if (delivered && job.type == "recrypt") {  // counted by the batch's "uploaded" event (jobs_report)
                if (uploaded_recrypts_.size() > 100000) uploaded_recrypts_.clear();
                uploaded_recrypts_.insert(job_id);
            }
        }
        const bool recrypt = job.type == "recrypt";
        if (delivered) {
            try {
                journal_->remove(job_id);
            } catch (const std::exception& e) {  // the entry is purged by age; the result is delivered
                host_.log(CC_EV_StoreUnavailable, CC_LEVEL_WARNING,
                          "pkcs: the key journal (" + journal_->where() +
                              ") could not forget a delivered job now; its entry is forgotten at the next flush or "
                              "purged after 7 days: " +
                              e.what(),
                          job_id);
            }
            host_.log(recrypt ? CC_EV_PkcsRecryptUploadedRequest : CC_EV_PkcsUploadedRequest, CC_LEVEL_INFO, "result uploaded",
                      job_id);
            // Admin: one event per request, once it is fulfilled *and* the tenant has it.
            if (!job.success_message.empty())
                host_.log(recrypt ? CC_EV_PkcsRecryptRequestSuccess : CC_EV_PkcsRequestSuccess, CC_LEVEL_INFO,
                          job.success_message, job_id, job.success_fields);
        } else {
            host_.log(recrypt ? CC_EV_PkcsRecryptUploadFailure : CC_EV_PkcsUploadFailure, CC_LEVEL_WARNING,
                      "uploading the result failed (will retry): " + message, job_id);
        }
    }

    std::string health() override { return R"({"healthy":true,"detail":"escrow key loaded"})"; }

private:
    /// The key journal: <state_dir>/journal.db, or with a shared [store] the store's schema
    /// `pkcs`, the keys encrypted under the passphrase of [pkcs] shared_key_file.
    std::unique_ptr<certconn::pkcs::KeyJournal> open_journal(const json::object& config) {
        const auto options = certconn::pkcs::KeyJournal::options_for(host_);
        if (options.url.empty()) return std::make_unique<certconn::pkcs::KeyJournal>(options);
        const std::string file = string_field(config, {"shared_key_file"}, "");
        if (file.empty())
            throw Error(CC_ERR_INVALID_ARGUMENT,
                        "[pkcs] shared_key_file: needed with a shared [store] so an instance re-running another's job "
                        "reuses its key (a file holding a passphrase of at least 16 characters, the same on every "
                        "instance)");
        if (!std::filesystem::path(file).is_absolute())
            throw Error(CC_ERR_INVALID_ARGUMENT, "[pkcs] shared_key_file '" + file + "' must be an absolute path");
        Secret passphrase;
        try {
            passphrase = Secret(crypto::read_passphrase_file(file, "the passphrase file"));
        } catch (const std::exception& e) {
            throw Error(CC_ERR_INVALID_ARGUMENT, std::string("[pkcs] shared_key_file: ") + e.what());
        }
        return std::make_unique<certconn::pkcs::KeyJournal>(options, std::move(passphrase));
    }

    crypto::PKey generated_escrow_key() {
        const auto path = host_.state_dir() / "escrow-key.pem";
        if (std::filesystem::exists(path)) return crypto::load_private_key(crypto::read_file(path, "escrow key"));
        crypto::PKey key = crypto::generate_key("rsa3072");
        crypto::write_file_atomic(path, crypto::private_key_pem(key.get()), 0600);
        return key;
    }

    void remember_success(const std::string& id, std::string message, std::string fields) {
        std::lock_guard lock(pending_mutex_);
        auto& job = pending_[id];
        job.success_message = std::move(message);
        job.success_fields = std::move(fields);
    }

    /// The parsed chain of a CA's answer: the same few chains come back on every job.
    std::shared_ptr<const std::vector<crypto::Cert>> chain_for(const std::string& pem) {
        std::lock_guard lock(chains_mutex_);
        auto it = chains_.find(pem);
        if (it == chains_.end()) {
            if (chains_.size() > 64) chains_.clear();  // CA rollovers: never grow without bound
            it = chains_.emplace(pem, std::make_shared<const std::vector<crypto::Cert>>(crypto::load_certificates(pem))).first;
        }
        return it->second;
    }

    std::string fail(const std::string& id, const char* code, const std::string& message, bool issuance) {
        if (issuance) host_.log(CC_EV_PkcsIssuedFailure, CC_LEVEL_ERROR, "issuance failed: " + message, id);
        host_.log(CC_EV_PkcsRequestFailure, CC_LEVEL_ERROR, "PKCS request failed: " + message, id,
                  json::serialize(json::object{{"code", code}}));
        return json::serialize(failure(code, message));
    }

    std::string issue(const std::string& id, const json::object& req, int attempt, int max_attempts) {
        if (attempt == 1) host_.log(CC_EV_PkcsDownloadedRequest, CC_LEVEL_INFO, "PKCS request received", id);
        // Inputs: every problem here is permanent.
        std::string subject, key_type, ca, profile;
        Secret password;
        std::vector<crypto::SubjectAltName> sans;
        bool legacy = false;
        crypto::Recipient device;
        try {
            subject = string_field(req, {"subject"});
            if (subject.empty()) throw Error(CC_ERR_INVALID_ARGUMENT, "'subject' is required");
            crypto::parse_name(subject);  // validates
            key_type = string_field(req, {"key_type"}, default_key_type_);
            if (!crypto::is_key_type(key_type))
                throw Error(CC_ERR_INVALID_ARGUMENT,
                            "unknown key_type '" + key_type + "' (expected rsa2048, rsa3072, rsa4096, p256 or p384)");
            ca = string_field(req, {"ca"}, default_ca_);
            profile = string_field(req, {"profile"}, default_profile_);
            password = Secret(string_field(req, {"pfx_password"}, ""));
            if (const auto* l = req.if_contains("legacy")) {
                if (!l->is_bool()) throw Error(CC_ERR_INVALID_ARGUMENT, "'legacy' must be true or false");
                legacy = l->as_bool();
            }
            if (const auto* list = req.if_contains("sans")) {
                if (!list->is_array()) throw Error(CC_ERR_INVALID_ARGUMENT, "'sans' must be an array of \"type:value\" strings");
                for (const auto& s : list->as_array()) {
                    if (!s.is_string()) throw Error(CC_ERR_INVALID_ARGUMENT, "'sans' must be an array of \"type:value\" strings");
                    sans.push_back(crypto::parse_san(std::string(s.as_string())));
                }
            }
            const std::string device_pem = string_field(req, {"device_key_pem"});
            if (device_pem.empty())
                throw Error(CC_ERR_INVALID_ARGUMENT, "'device_key_pem' (the device's public key or certificate) is required");
            try {
                device = crypto::Recipient::from_pem(device_pem);
            } catch (const std::exception& e) {
                throw Error(CC_ERR_INVALID_ARGUMENT, std::string("device_key_pem: ") + e.what());
            }
        } catch (const Error& e) {
            return fail(id, status_name(e.code()), e.what(), false);
        } catch (const std::invalid_argument& e) {
            return fail(id, "invalid_argument", e.what(), false);
        }

        // Key and CSR: journaled so a re-run after a crash reuses them.
        // A fresh job keeps its new key in memory; only a re-run decodes the journaled one.
        // With a shared store the journal is the fleet's: a job re-run by another instance (its
        // first instance died) finds the first run's key there.
        crypto::PKey key;
        std::optional<JournalEntry> entry;
        try {
            entry = journal_->find(id);
            if (!entry) {
                key = crypto::generate_key(key_type);
                const JournalEntry fresh{Secret(crypto::private_key_pem(key.get())),
                                         crypto::make_csr_pem(key.get(), subject, sans)};
                entry = journal_->put(id, fresh);
                if (!entry->key_pem.equals(fresh.key_pem)) key.reset();  // a concurrent run journaled first
            }
        } catch (const certconn::sql::Error& e) {
            // Never issue without the journal: a re-run could not reuse the key.
            const std::string message = "the key journal (" + journal_->where() + "): " + e.what();
            if (e.transient() && attempt < max_attempts) {
                host_.log(CC_EV_PkcsIssuedFailedAttempt, CC_LEVEL_WARNING,
                          "attempt " + std::to_string(attempt) + " of " + std::to_string(max_attempts) +
                              " failed (will retry): " + message,
                          id);
                throw Error(CC_ERR_UNAVAILABLE, message);
            }
            return fail(id, e.transient() ? "unavailable" : "internal", message, true);
        } catch (const crypto::CryptoError& e) {
            // Another instance journaled this job's key under another passphrase: a
            // configuration error of the fleet. Another instance (or this one, fixed) may run it.
            const std::string message =
                std::string("[pkcs] shared_key_file: ") + e.what() + ": every instance of the fleet needs the same passphrase";
            if (attempt < max_attempts) {
                host_.log(CC_EV_PkcsIssuedFailedAttempt, CC_LEVEL_ERROR,
                          "attempt " + std::to_string(attempt) + " of " + std::to_string(max_attempts) +
                              " failed (will retry): " + message,
                          id);
                throw Error(CC_ERR_UNAVAILABLE, message);
            }
            return fail(id, "internal", message, true);
        }
        if (!key) key = crypto::load_private_key(entry->key_pem.reveal());

        std::string issued_json;
        try {
            issued_json = host_.ca_issue(
                ca, json::serialize(json::object{
                        {"request_id", id}, {"csr_pem", entry->csr_pem}, {"profile", profile}, {"requester", "pkcs"}}));
        } catch (const Error& e) {
            // The CA holds the request for approval: the key and CSR stay journaled, and the
            // host runs the job again later with the same request id, which polls the CA.
            if (e.code() == CC_ERR_PENDING) throw;
            if (e.retryable() && attempt < max_attempts) {
                host_.log(CC_EV_PkcsIssuedFailedAttempt, CC_LEVEL_WARNING,
                          "issuance attempt " + std::to_string(attempt) + " of " + std::to_string(max_attempts) +
                              " failed (will retry): " + e.what(),
                          id);
                throw;  // the host runs the job again after a backoff
            }
            return fail(id, status_name(e.code()), e.what(), true);
        }
        const json::value issued = json::parse(issued_json);
        const json::object& answer = issued.as_object();
        crypto::Cert cert = crypto::load_certificate(std::string(answer.at("certificate_pem").as_string()));
        if (X509_check_private_key(cert.get(), key.get()) != 1)
            return fail(id, "internal", "CA '" + ca + "' returned a certificate for another key (request id reused?)", true);
        const auto chain = chain_for(std::string(answer.at("chain_pem").as_string()));
        host_.log(CC_EV_PkcsIssuedSuccess, CC_LEVEL_INFO,
                  "certificate " + crypto::serial_hex(cert.get()) + " issued by CA '" + ca + "'", id);

        if (password.empty()) password = random_password();
        const std::string p12 = crypto::pkcs12_der(key.get(), cert.get(), *chain, password, legacy,
                                                   crypto::name_string(X509_get_subject_name(cert.get())));
        // The escrow plaintext holds the password: wiped once sealed. (Boost.JSON's own
        // temporaries are not wiped; the envelope below is what leaves the process.)
        const Secret escrow(
            json::serialize(json::object{{"pkcs12", crypto::base64_encode(p12)}, {"password", password.reveal()}}));
        json::object result{{"status", "succeeded"},
                            {"pfx_cms", crypto::base64_encode(crypto::cms_encrypt(p12, device))},
                            {"password_cms", crypto::base64_encode(crypto::cms_encrypt(password.reveal(), device))},
                            {"escrow_cms", crypto::base64_encode(crypto::cms_encrypt(escrow.reveal(), escrow_recipient_))},
                            {"certificate_pem", crypto::certificate_pem(cert.get())},
                            {"thumbprint", crypto::fingerprint_hex(cert.get(), EVP_sha1())},
                            {"thumbprint_sha256", crypto::fingerprint_hex(cert.get(), EVP_sha256())},
                            {"serial", crypto::serial_hex(cert.get())},
                            {"subject", crypto::name_string(X509_get_subject_name(cert.get()))},
                            {"issuer", crypto::name_string(X509_get_issuer_name(cert.get()))},
                            {"not_before", crypto::time_iso8601(X509_get0_notBefore(cert.get()))},
                            {"not_after", crypto::time_iso8601(X509_get0_notAfter(cert.get()))},
                            {"ca", ca},
                            {"profile", profile},
                            {"key_type", key_type},
                            {"pkcs12_format", legacy ? "legacy-3des-sha1" : "aes256-pbkdf2-sha256"}};
        remember_success(
            id,
            "PKCS request fulfilled and sent: " + std::string(result["subject"].as_string()) + ", serial " +
                std::string(result["serial"].as_string()) + ", CA '" + ca + "'",
            json::serialize(json::object{{"serial", result["serial"]}, {"thumbprint", result["thumbprint"]}, {"ca", ca}}));
        return json::serialize(result);
    }

    std::string recrypt(const std::string& id, const json::object& req, int attempt) {
        if (attempt == 1) host_.log(CC_EV_PkcsRecryptDownloadedRequest, CC_LEVEL_INFO, "re-encrypt request received", id);
        auto refuse = [&](std::uint32_t event, const char* code, const std::string& message) {
            host_.log(event, CC_LEVEL_ERROR, message, id);
            host_.log(CC_EV_PkcsRecryptRequestFailure, CC_LEVEL_ERROR, "re-encrypt request failed: " + message, id);
            return json::serialize(failure(code, message));
        };
        Secret plain;  // the escrow copy: PKCS#12 and its password
        try {
            plain = Secret(crypto::cms_decrypt(crypto::base64_decode(string_field(req, {"escrow_cms"})), escrow_key_.get()));
        } catch (const std::exception& e) {
            return refuse(CC_EV_PkcsRecryptDecryptFailure, "invalid_argument",
                          std::string("the escrow copy cannot be decrypted with this connector's escrow key: ") + e.what());
        }
        host_.log(CC_EV_PkcsRecryptDecryptSuccess, CC_LEVEL_INFO, "escrow copy decrypted", id);
        json::object result{{"status", "succeeded"}};
        try {
            const json::value escrow = json::parse(plain.reveal());
            const crypto::Recipient device = crypto::Recipient::from_pem(string_field(req, {"device_key_pem"}));
            result["pfx_cms"] =
                crypto::base64_encode(crypto::cms_encrypt(crypto::base64_decode(escrow.at("pkcs12").as_string()), device));
            result["password_cms"] =
                crypto::base64_encode(crypto::cms_encrypt(std::string_view(escrow.at("password").as_string()), device));
        } catch (const std::exception& e) {
            return refuse(CC_EV_PkcsRecryptReencryptFailure, "invalid_argument",
                          std::string("re-encryption failed: ") + e.what());
        }
        host_.log(CC_EV_PkcsRecryptReencryptSuccess, CC_LEVEL_INFO, "re-encrypted to the new device key", id);
        remember_success(id, "re-encrypt request processed and sent", "");
        return json::serialize(result);
    }

    certconn::sdk::Host& host_;
    std::unique_ptr<certconn::pkcs::KeyJournal> journal_;
    crypto::PKey escrow_key_;
    crypto::Recipient escrow_recipient_;
    std::string default_ca_, default_profile_, default_key_type_;
    std::mutex chains_mutex_;
    std::map<std::string, std::shared_ptr<const std::vector<crypto::Cert>>> chains_;
    struct Pending {
        std::string type;             // issue | recrypt
        std::string success_message;  // the Admin event written once the tenant has the result
        std::string success_fields;
    };
    std::mutex pending_mutex_;
    std::map<std::string, Pending> pending_;   // jobs run, result not yet delivered
    std::set<std::string> uploaded_recrypts_;  // recrypt results delivered, until their batch is reported
};

}  // namespace

CERTCONN_PLUGIN(PkcsFeature, "pkcs", "0.1.0", "2026-11-24", "PKCS#12 issuance encrypted to the device, and re-encryption",
                kSchema)
