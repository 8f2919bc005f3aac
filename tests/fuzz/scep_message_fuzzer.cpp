// libFuzzer target: the SCEP PKIOperation parser (signed + enveloped CMS from the network).
// Build and run: scripts/fuzz scep [seconds]. Any crash, leak, hang or sanitizer report is a bug.
#include "ScepClientMessage.hpp"
#include "ScepMessage.hpp"

#include <openssl/x509.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace {

namespace crypto = certconn::crypto;
namespace scep = certconn::scep;

// The RA key persists in the working directory (build/fuzz), so a saved corpus stays decryptable.
struct Ra {
    crypto::PKey key;
    crypto::Cert cert;
    Ra() {
        if (std::filesystem::exists("fuzz-ra-key.pem")) {
            std::ifstream in("fuzz-ra-key.pem");
            key = crypto::load_private_key(std::string(std::istreambuf_iterator<char>(in), {}));
        } else {
            key = crypto::generate_key("rsa2048");
            std::ofstream("fuzz-ra-key.pem") << crypto::private_key_pem(key.get());
        }
        cert = scep::self_signed(key.get(), "CN=fuzz RA");
    }
};

const Ra& ra() {
    static const Ra instance;
    return instance;
}

void write_seed(const std::string& dir, const std::string& name, const std::string& der) {
    std::ofstream(dir + "/" + name, std::ios::binary) << der;
}

}  // namespace

// Seeds the corpus with real requests (PKCSReq with a challenge, CertPoll; AES and 3DES) so
// mutation starts from messages that reach the decryption and the CSR.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
    const std::string dir = "corpus-scep";
    if (!std::filesystem::is_directory(dir)) return 0;
    crypto::PKey device = crypto::generate_key("rsa2048");
    crypto::Cert self = scep::self_signed(device.get(), "CN=fuzz device");
    const std::string csr_pem = crypto::make_csr_pem(device.get(), "CN=fuzz device", {{"email", "d@example.com"}});
    crypto::Request csr = crypto::load_csr(csr_pem);
    X509_REQ_add1_attr_by_NID(csr.get(), NID_pkcs9_challengePassword, MBSTRING_UTF8,
                              reinterpret_cast<const unsigned char*>("challenge"), -1);
    X509_REQ_sign(csr.get(), device.get(), EVP_sha256());
    unsigned char* der = nullptr;
    const int len = i2d_X509_REQ(csr.get(), &der);
    const std::string csr_der(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
    OPENSSL_free(der);
    scep::ClientRequest pkcsreq{scep::MessageType::PKCSReq, "seed-tx-1", {}, csr_der, nullptr, nullptr};
    write_seed(dir, "seed-pkcsreq-aes", scep::build_request(pkcsreq, self.get(), device.get(), ra().cert.get()));
    pkcsreq.cipher = EVP_des_ede3_cbc();
    pkcsreq.digest = EVP_sha1();
    write_seed(dir, "seed-pkcsreq-3des", scep::build_request(pkcsreq, self.get(), device.get(), ra().cert.get()));
    scep::ClientRequest poll{scep::MessageType::CertPoll, "seed-tx-1", {}, std::string("\x30\x00", 2), nullptr, nullptr};
    write_seed(dir, "seed-certpoll", scep::build_request(poll, self.get(), device.get(), ra().cert.get()));
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const Ra& ra = ::ra();
    try {
        const auto req = certconn::scep::parse_request(std::string_view(reinterpret_cast<const char*>(data), size), ra.key.get(),
                                                       ra.cert.get(), true);
        // A message that parsed is answered: building the reply must not fail on its fields.
        certconn::scep::failure_reply(req, certconn::scep::FailInfo::BadRequest, ra.cert.get(), ra.key.get());
    } catch (const certconn::scep::MalformedMessage&) {
    } catch (const certconn::crypto::CryptoError&) {
    }
    return 0;
}
