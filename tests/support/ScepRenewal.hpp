// Helpers for SCEP renewal tests: a device that enrolls and renews against the real daemon with
// messages built by OpenSSL (ScepClientMessage), and reading event ids from the JSON logs.
#pragma once

#include "ScepClientMessage.hpp"
#include "support/Daemon.hpp"

#include <certconn/events.h>

#include <boost/json.hpp>

#include <openssl/pkcs7.h>

#include <optional>
#include <sstream>

namespace certconn::test {

/// A PKCS#10 (DER) for `subject` with `sans` ("dns:host", "upn:u@d"), a challengePassword when
/// given, signed with `md`.
inline std::string scep_csr(EVP_PKEY* key, const std::string& subject, const std::vector<std::string>& sans,
                            const std::optional<std::string>& challenge, const EVP_MD* md = EVP_sha256()) {
    std::vector<crypto::SubjectAltName> parsed;
    for (const auto& s : sans)
        parsed.push_back(crypto::parse_san(s));
    crypto::Request csr = crypto::load_csr(crypto::make_csr_pem(key, subject, parsed));
    if (challenge)
        X509_REQ_add1_attr_by_NID(csr.get(), NID_pkcs9_challengePassword, MBSTRING_UTF8,
                                  reinterpret_cast<const unsigned char*>(challenge->c_str()), -1);
    X509_REQ_sign(csr.get(), key, md);
    unsigned char* der = nullptr;
    const int len = i2d_X509_REQ(csr.get(), &der);
    std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
    OPENSSL_free(der);
    return out;
}

/// The first certificate of a CertRep SUCCESS, decrypted with the requester's key.
inline crypto::Cert issued_certificate(const scep::ClientReply& reply, EVP_PKEY* key) {
    const std::string degenerate = crypto::cms_decrypt(reply.envelope, key);
    const auto* p = reinterpret_cast<const unsigned char*>(degenerate.data());
    std::unique_ptr<PKCS7, crypto::Deleter<PKCS7_free>> p7(d2i_PKCS7(nullptr, &p, static_cast<long>(degenerate.size())));
    if (!p7 || OBJ_obj2nid(p7->type) != NID_pkcs7_signed || sk_X509_num(p7->d.sign->cert) < 1)
        throw std::runtime_error("the CertRep holds no certificate");
    return crypto::Cert(X509_dup(sk_X509_value(p7->d.sign->cert, 0)));
}

/// A SCEP client of one profile: sends PKIOperations over POST and reads the signed CertRep.
struct ScepEndpoint {
    std::uint16_t port;
    std::string path;
    crypto::Cert ra;

    static ScepEndpoint of(std::uint16_t port, const std::string& path) {
        const auto cacert = http_request(port, "GET", path + "?operation=GetCACert");
        if (cacert.status != 200) throw std::runtime_error("GetCACert on " + path + " answered " + std::to_string(cacert.status));
        return {port, path, std::move(scep::getcacert_certificates(cacert.body).front())};
    }

    /// The CertRep for `content` signed by `signer`/`key`; throws when the answer is not a CertRep.
    scep::ClientReply send(scep::MessageType type, const std::string& tx, const std::string& content, X509* signer, EVP_PKEY* key,
                           const EVP_MD* md = EVP_sha256()) const {
        const auto message = scep::build_request({type, tx, {}, content, EVP_aes_256_cbc(), md}, signer, key, ra.get());
        const auto answer = http_request(port, "POST", path + "?operation=PKIOperation", message);
        if (answer.status != 200)
            throw std::runtime_error("PKIOperation answered HTTP " + std::to_string(answer.status) + ": " + answer.body);
        return scep::read_reply(answer.body, ra.get());
    }
};

/// Whether `log` (a JSON-lines event log) holds event `id` for request (transaction) `tx`;
/// waits a little, as the logs are written asynchronously.
inline bool logged(const std::filesystem::path& log, std::uint32_t id, const std::string& tx) {
    return eventually(
        [&] {
            std::istringstream lines(read_file(log));
            for (std::string line; std::getline(lines, line);) {
                std::error_code ec;
                const auto v = boost::json::parse(line, ec);
                if (ec || !v.is_object()) continue;
                const auto& o = v.as_object();
                const auto* i = o.if_contains("id");
                const auto* r = o.if_contains("request_id");
                if (i && i->is_int64() && i->as_int64() == id && r && r->is_string() && r->as_string() == tx) return true;
            }
            return false;
        },
        std::chrono::seconds(5));
}

/// The message of event `id` for `tx` ("" when absent).
inline std::string logged_message(const std::filesystem::path& log, std::uint32_t id, const std::string& tx) {
    std::istringstream lines(read_file(log));
    for (std::string line; std::getline(lines, line);) {
        std::error_code ec;
        const auto v = boost::json::parse(line, ec);
        if (ec || !v.is_object()) continue;
        const auto& o = v.as_object();
        const auto* i = o.if_contains("id");
        const auto* r = o.if_contains("request_id");
        if (i && i->is_int64() && i->as_int64() == id && r && r->is_string() && r->as_string() == tx)
            return std::string(o.at("message").as_string());
    }
    return {};
}

}  // namespace certconn::test
