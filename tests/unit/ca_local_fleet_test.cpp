// ca-local on a shared store: several instances ("a fleet") on one issuance record. Each case
// that needs PostgreSQL is tagged [postgresql] and runs when CERTCONN_TEST_PG_URL names a server
// (ctest's "store: ..." test starts one); the same properties are checked on SQLite where they
// apply to one machine (two generations of one instance on one file).
#include "IssuanceStore.hpp"
#include "LocalCa.hpp"
#include "Revocation.hpp"
#include "support/Postgres.hpp"
#include "support/TestCa.hpp"
#include "support/TestFiles.hpp"

#include <certconn/abi.h>
#include <certconn/crypto.hpp>
#include <certconn/events.h>
#include <certconn/sdk.hpp>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <openssl/ocsp.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <vector>

using namespace certconn;
using namespace certconn::ca_local;
namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

using certconn::test::pg_url;

std::string unique(const std::string& base) {
    std::random_device rd;
    return base + "_" + std::to_string(rd() % 1000000000);
}

/// A host as a plugin sees it: a state dir, a [store] and an instance id; events recorded.
class FleetHost {
public:
    FleetHost(const fs::path& state_dir, std::string store_config) {
        ctx_.state_dir = state_dir.string();
        ctx_.store_config = std::move(store_config);
        services_.struct_size = sizeof(cc_host_services);
        services_.abi_major = CERTCONN_ABI_MAJOR;
        services_.abi_minor = CERTCONN_ABI_MINOR;
        services_.host_ctx = &ctx_;
        services_.log_event = [](void* ctx, uint32_t id, int, const char*, const char* message, const char*) {
            auto* c = static_cast<Ctx*>(ctx);
            std::lock_guard lock(c->mutex);
            c->events.emplace_back(id, message ? message : "");
        };
        services_.state_dir = [](void* ctx) { return static_cast<Ctx*>(ctx)->state_dir.c_str(); };
        services_.store_config = [](void* ctx, cc_sink* out, cc_error*) {
            const auto& text = static_cast<Ctx*>(ctx)->store_config;
            return out->write(out->ctx, text.data(), text.size());
        };
        host_ = std::make_unique<sdk::Host>(&services_);
    }
    sdk::Host& host() { return *host_; }
    int count(uint32_t id) {
        std::lock_guard lock(ctx_.mutex);
        int n = 0;
        for (const auto& [e, m] : ctx_.events)
            n += e == id;
        return n;
    }

private:
    struct Ctx {
        std::string state_dir, store_config;
        std::mutex mutex;
        std::vector<std::pair<uint32_t, std::string>> events;
    } ctx_;
    cc_host_services services_{};
    std::unique_ptr<sdk::Host> host_;
};

std::string pg_store_config(const std::string& instance, const std::string& url = pg_url()) {
    return json::serialize(json::object{{"backend", "postgresql"}, {"url", url}, {"password", ""}, {"instance_id", instance}});
}

std::string sqlite_store_config(const std::string& instance) {
    return json::serialize(json::object{{"backend", "sqlite"}, {"instance_id", instance}});
}

fs::path write_passphrase(const fs::path& dir, const std::string& name, const std::string& text) {
    const fs::path p = dir / name;
    crypto::write_file_atomic(p, text + "\n", 0600);
    return p;
}

std::string csr_pem(const std::string& cn) {
    const crypto::PKey key = crypto::generate_key("p256");
    return crypto::make_csr_pem(key.get(), "CN=" + cn, {});
}

std::string issue(LocalCa& ca, const std::string& csr, const std::string& request_id) {
    return ca.issue(json::serialize(json::object{{"csr_pem", csr}, {"request_id", request_id}}));
}

// Two instances of one CA issue the same request ids at the same moment: one certificate each.
void same_request_id_at_once(LocalCa& a, LocalCa& b) {
    constexpr int kRequests = 12;
    std::vector<std::string> csrs;
    for (int i = 0; i < kRequests; ++i)
        csrs.push_back(csr_pem("device-" + std::to_string(i)));
    std::vector<std::string> from_a(kRequests), from_b(kRequests);
    const std::string prefix = unique("req");
    std::atomic<int> ready{0};
    auto run = [&](LocalCa& ca, std::vector<std::string>& out) {
        ++ready;
        while (ready.load() < 2) {
        }
        for (int i = 0; i < kRequests; ++i)
            out[i] = issue(ca, csrs[i], prefix + "-" + std::to_string(i));
    };
    std::thread ta([&] { run(a, from_a); });
    std::thread tb([&] { run(b, from_b); });
    ta.join();
    tb.join();
    std::set<std::string> serials;
    for (int i = 0; i < kRequests; ++i) {
        const auto ja = json::parse(from_a[i]).as_object();
        const auto jb = json::parse(from_b[i]).as_object();
        CHECK(ja.at("serial") == jb.at("serial"));
        CHECK(ja.at("certificate_pem") == jb.at("certificate_pem"));
        // Exactly one of the two issued it; the other answered with the winner's certificate.
        CHECK(ja.at("already_issued").as_bool() != jb.at("already_issued").as_bool());
        serials.insert(std::string(ja.at("serial").as_string()));
        CHECK(ja.at("serial").as_string().size() >= 16);  // >= 64 random bits
        // The record holds that one certificate under the request id, whichever instance asks.
        const auto rec = a.store().find_by_request(prefix + "-" + std::to_string(i));
        REQUIRE(rec);
        CHECK(rec->serial == ja.at("serial").as_string());
    }
    CHECK(serials.size() == kRequests);
}

std::string chain_of(LocalCa& ca) {
    return std::string(json::parse(ca.describe()).as_object().at("chain_pem").as_string());
}

std::unique_ptr<X509_CRL, crypto::Deleter<X509_CRL_free>> parse_crl(const std::string& der) {
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    return std::unique_ptr<X509_CRL, crypto::Deleter<X509_CRL_free>>(d2i_X509_CRL(nullptr, &p, static_cast<long>(der.size())));
}

std::int64_t crl_number(const std::string& der) {
    auto crl = parse_crl(der);
    REQUIRE(crl);
    auto* n = static_cast<ASN1_INTEGER*>(X509_CRL_get_ext_d2i(crl.get(), NID_crl_number, nullptr, nullptr));
    REQUIRE(n);
    const std::int64_t out = ASN1_INTEGER_get(n);
    ASN1_INTEGER_free(n);
    return out;
}

std::set<std::string> crl_serials(const std::string& der) {
    auto crl = parse_crl(der);
    REQUIRE(crl);
    std::set<std::string> out;
    STACK_OF(X509_REVOKED)* revoked = X509_CRL_get_REVOKED(crl.get());
    for (int i = 0; i < sk_X509_REVOKED_num(revoked); ++i) {
        BIGNUM* bn = ASN1_INTEGER_to_BN(X509_REVOKED_get0_serialNumber(sk_X509_REVOKED_value(revoked, i)), nullptr);
        char* hex = BN_bn2hex(bn);
        out.insert(hex);
        OPENSSL_free(hex);
        BN_free(bn);
    }
    return out;
}

int ocsp_status(RevocationService& service, X509* issuer, const char* serial_hex) {
    OCSP_REQUEST* req = OCSP_REQUEST_new();
    BIGNUM* bn = nullptr;
    BN_hex2bn(&bn, serial_hex);
    ASN1_INTEGER* serial = BN_to_ASN1_INTEGER(bn, nullptr);
    OCSP_request_add0_id(req,
                         OCSP_cert_id_new(EVP_sha1(), X509_get_subject_name(issuer), X509_get0_pubkey_bitstr(issuer), serial));
    unsigned char* der = nullptr;
    const int len = i2d_OCSP_REQUEST(req, &der);
    const std::string request(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
    OPENSSL_free(der);
    ASN1_INTEGER_free(serial);
    BN_free(bn);
    OCSP_REQUEST_free(req);
    const std::string resp_der = service.ocsp(request);
    const auto* p = reinterpret_cast<const unsigned char*>(resp_der.data());
    std::unique_ptr<OCSP_RESPONSE, crypto::Deleter<OCSP_RESPONSE_free>> resp(
        d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(resp_der.size())));
    REQUIRE(resp);
    REQUIRE(OCSP_response_status(resp.get()) == OCSP_RESPONSE_STATUS_SUCCESSFUL);
    std::unique_ptr<OCSP_BASICRESP, crypto::Deleter<OCSP_BASICRESP_free>> basic(OCSP_response_get1_basic(resp.get()));
    return OCSP_single_get0_status(OCSP_resp_get0(basic.get(), 0), nullptr, nullptr, nullptr, nullptr);
}

IssuedCertificate record(const std::string& serial) {
    return {
        serial, "req-" + serial, "CN=x", "[]", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z", "default", "unit", "valid", "", "",
        "pem"};
}

sql::Options pg_options(const std::string& schema) {
    sql::Options o;
    o.url = pg_url();
    o.schema = schema;
    return o;
}

// A port on 127.0.0.1 where nothing listens.
int closed_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    ::close(fd);
    return ntohs(addr.sin_port);
}

}  // namespace

TEST_CASE("ca-local fleet (SQLite): an issuance record from before the store layer keeps its certificates and CRL number") {
    test::TempDir dir;
    const fs::path file = dir.path() / "issued.db";
    {
        // The schema and rows exactly as the previous release wrote them.
        sql::Options o;
        o.sqlite_file = file;
        auto db = sql::Database::open(o);
        db.exec(R"(CREATE TABLE certificates (serial TEXT PRIMARY KEY, request_id TEXT UNIQUE, subject TEXT NOT NULL,
            sans TEXT NOT NULL, not_before TEXT NOT NULL, not_after TEXT NOT NULL, profile TEXT NOT NULL,
            requester TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'valid', revocation_reason TEXT, revoked_at TEXT,
            issued_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now')), certificate_pem TEXT NOT NULL);
            CREATE TABLE crl_state (id INTEGER PRIMARY KEY CHECK (id = 1), number INTEGER NOT NULL);
            INSERT INTO crl_state VALUES (1, 41);
            INSERT INTO certificates (serial, request_id, subject, sans, not_before, not_after, profile, requester,
              certificate_pem) VALUES ('0B01', 'old-request', 'CN=old', '[]', 'a', 'b', 'default', 'x', 'pem'))");
    }
    IssuanceStore store(file);
    CHECK_FALSE(store.shared());
    const auto old = store.find_by_request("old-request");
    REQUIRE(old);
    CHECK(old->serial == "0B01");
    CHECK(store.next_crl_number() == 42);       // continues where the old file was
    CHECK_FALSE(store.insert(record("0B01")));  // the serial is still unique
    CHECK(store.revoke_many({{"0B01", "superseded"}}, "2026-11-20T10:00:00Z") == std::vector<bool>{true});
    CHECK(store.revoked_count() == 1);
    CHECK(store.revision() == 1);
}

TEST_CASE("ca-local fleet (SQLite): two generations on one record issue one certificate per request id at once") {
    test::TempDir dir;
    FleetHost host_a(dir.path(), sqlite_store_config("one")), host_b(dir.path(), sqlite_store_config("one"));
    const json::object config{{"algorithm", "p256"}};
    LocalCa a("corp", config, dir.path() / "corp", host_a.host());
    LocalCa b("corp", config, dir.path() / "corp", host_b.host());  // loads the hierarchy a created (files)
    CHECK(chain_of(a) == chain_of(b));
    CHECK(host_a.count(CC_EV_CaHierarchyCreated) == 1);
    CHECK(host_b.count(CC_EV_CaHierarchyCreated) == 0);
    CHECK(fs::exists(dir.path() / "corp" / "issued.db"));  // where it always was
    same_request_id_at_once(a, b);
}

TEST_CASE("ca-local fleet: a [store] that cannot be reached is CC_ERR_UNAVAILABLE with the store named, no password") {
    test::TempDir dir;
    const std::string url = "postgresql://certconn@127.0.0.1:" + std::to_string(closed_port()) + "/certconn";
    FleetHost host(dir.path(), json::serialize(json::object{
                                   {"backend", "postgresql"}, {"url", url}, {"password", "s3cret-pw"}, {"instance_id", "i1"}}));
    const fs::path pass = write_passphrase(dir.path(), "pass", "correct horse battery staple");
    try {
        LocalCa ca("corp", json::object{{"shared_key_file", pass.string()}}, dir.path() / "corp", host.host());
        FAIL("opened a CA on an unreachable store");
    } catch (const sdk::Error& e) {
        CHECK(e.code() == CC_ERR_UNAVAILABLE);
        CHECK_THAT(e.what(), Catch::Contains("CA 'corp'") && Catch::Contains("unavailable"));
        CHECK_THAT(e.what(), !Catch::Contains("s3cret-pw"));
    }
}

TEST_CASE("ca-local fleet: two instances issue one certificate per request id even at once", "[postgresql]") {
    if (pg_url().empty()) {
        WARN("CERTCONN_TEST_PG_URL not set: skipped");
        return;
    }
    test::TempDir dir;
    const std::string name = unique("issue");
    const fs::path pass = write_passphrase(dir.path(), "pass", "correct horse battery staple");
    const json::object config{{"shared_key_file", pass.string()}};
    FleetHost host_a(dir.path() / "a", pg_store_config("instance-a")), host_b(dir.path() / "b", pg_store_config("instance-b"));
    LocalCa a(name, config, dir.path() / "a" / name, host_a.host());
    LocalCa b(name, config, dir.path() / "b" / name, host_b.host());
    CHECK(a.store().shared());
    same_request_id_at_once(a, b);
    // A revocation through b is what a's record says, and what a's OCSP answers.
    const std::string serial(json::parse(issue(a, csr_pem("to-revoke"), unique("rv"))).as_object().at("serial").as_string());
    const auto answer = json::parse(b.revoke(json::serialize(json::object{{"serial", serial}, {"reason", "keyCompromise"}})));
    CHECK(answer.as_object().at("already_revoked").as_bool() == false);
    CHECK(a.store().find_by_serial(serial)->status == "revoked");
    const auto again = json::parse(a.revoke(json::serialize(json::object{{"serial", serial}, {"reason", "superseded"}})));
    CHECK(again.as_object().at("already_revoked").as_bool() == true);
    CHECK(again.as_object().at("reason").as_string() == "keyCompromise");  // the first revocation stands
}

TEST_CASE("ca-local fleet: the hierarchy is created once, keys encrypted in the store; the others load it", "[postgresql]") {
    if (pg_url().empty()) {
        WARN("CERTCONN_TEST_PG_URL not set: skipped");
        return;
    }
    test::TempDir dir;
    const std::string name = unique("hier");
    const fs::path pass = write_passphrase(dir.path(), "pass", "correct horse battery staple");
    const json::object config{{"shared_key_file", pass.string()}, {"algorithm", "p256"}};
    constexpr int kInstances = 4;
    std::vector<std::unique_ptr<FleetHost>> hosts;
    for (int i = 0; i < kInstances; ++i)
        hosts.push_back(
            std::make_unique<FleetHost>(dir.path() / std::to_string(i), pg_store_config("inst-" + std::to_string(i))));
    std::vector<std::unique_ptr<LocalCa>> cas(kInstances);
    std::vector<std::thread> threads;
    std::atomic<int> failures{0};
    for (int i = 0; i < kInstances; ++i)  // all start at once: each may create one, one INSERT wins
        threads.emplace_back([&, i] {
            try {
                cas[i] = std::make_unique<LocalCa>(name, config, dir.path() / std::to_string(i) / name, hosts[i]->host());
            } catch (const std::exception& e) {
                ++failures;
                UNSCOPED_INFO(e.what());
            }
        });
    for (auto& t : threads)
        t.join();
    REQUIRE(failures == 0);
    int created = 0;
    for (int i = 0; i < kInstances; ++i) {
        created += hosts[i]->count(CC_EV_CaHierarchyCreated);
        CHECK(chain_of(*cas[i]) == chain_of(*cas[0]));
        CHECK_FALSE(fs::exists(dir.path() / std::to_string(i) / name / "issuing-key.pem"));  // no key on disk
    }
    CHECK(created == 1);
    const auto stored = cas[0]->store().load_hierarchy();
    REQUIRE(stored);
    CHECK(stored->issuing_key_pem.find("-----BEGIN ENCRYPTED PRIVATE KEY-----") == 0);
    CHECK(stored->root_key_pem.find("-----BEGIN ENCRYPTED PRIVATE KEY-----") == 0);
    CHECK_FALSE(stored->root_crl_der.empty());
    // A certificate issued by one verifies against the chain the others publish.
    const std::string cert_pem(
        json::parse(issue(*cas[1], csr_pem("chained"), unique("c"))).as_object().at("certificate_pem").as_string());
    auto cert = crypto::load_certificate(cert_pem);
    auto chain = crypto::load_certificates(chain_of(*cas[3]));
    CHECK(X509_verify(cert.get(), X509_get0_pubkey(chain[0].get())) == 1);
    // A later instance (a restart) loads it too.
    FleetHost late(dir.path() / "late", pg_store_config("inst-late"));
    LocalCa again(name, config, dir.path() / "late" / name, late.host());
    CHECK(chain_of(again) == chain_of(*cas[0]));
    CHECK(late.count(CC_EV_CaHierarchyCreated) == 0);
}

TEST_CASE("ca-local fleet: without shared_key_file, or with the wrong passphrase, init fails naming the key", "[postgresql]") {
    if (pg_url().empty()) {
        WARN("CERTCONN_TEST_PG_URL not set: skipped");
        return;
    }
    test::TempDir dir;
    const std::string name = unique("keys");
    FleetHost host(dir.path() / "a", pg_store_config("instance-a"));
    CHECK_THROWS_WITH(LocalCa(name, json::object{}, dir.path() / "a" / name, host.host()),
                      Catch::Contains("[ca." + name + "] shared_key_file: needed with a shared [store]"));
    const fs::path right = write_passphrase(dir.path(), "right", "correct horse battery staple");
    const fs::path wrong = write_passphrase(dir.path(), "wrong", "incorrect horse battery staple");
    const fs::path short_one = write_passphrase(dir.path(), "short", "tiny");
    LocalCa first(name, json::object{{"shared_key_file", right.string()}}, dir.path() / "a" / name, host.host());
    FleetHost other(dir.path() / "b", pg_store_config("instance-b"));
    try {
        LocalCa second(name, json::object{{"shared_key_file", wrong.string()}}, dir.path() / "b" / name, other.host());
        FAIL("a wrong passphrase opened the shared CA");
    } catch (const sdk::Error& e) {
        CHECK(e.code() == CC_ERR_INVALID_ARGUMENT);
        CHECK_THAT(e.what(), Catch::Contains("shared_key_file") && Catch::Contains("does not decrypt") &&
                                 Catch::Contains("created by instance instance-a"));
        CHECK_THAT(e.what(), !Catch::Contains("incorrect horse"));  // never the passphrase itself
    }
    CHECK_THROWS_WITH(LocalCa(name, json::object{{"shared_key_file", short_one.string()}}, dir.path() / "b" / name, other.host()),
                      Catch::Contains("at least 16 characters"));
    CHECK_THROWS_WITH(LocalCa(name, json::object{{"shared_key_file", "relative/pass"}}, dir.path() / "b" / name, other.host()),
                      Catch::Contains("must be an absolute path"));
    // Keys configured as files: nothing shared, no shared_key_file needed.
    const crypto::PKey key = crypto::generate_key("p256");
    const crypto::Cert ca = test::self_signed_ca(key.get(), "File CA", 30);
    crypto::write_file_atomic(dir.path() / "ca.pem", crypto::certificate_pem(ca.get()), 0644);
    crypto::write_file_atomic(dir.path() / "ca-key.pem", crypto::private_key_pem(key.get()), 0600);
    const std::string file_name = unique("filekeys");
    LocalCa with_files(
        file_name,
        json::object{{"certificate", (dir.path() / "ca.pem").string()}, {"private_key", (dir.path() / "ca-key.pem").string()}},
        dir.path() / "b" / file_name, other.host());
    CHECK_FALSE(with_files.store().load_hierarchy());
}

TEST_CASE("ca-local fleet: a revocation through any instance reaches the CRL of the next leader and every OCSP answer",
          "[postgresql]") {
    if (pg_url().empty()) {
        WARN("CERTCONN_TEST_PG_URL not set: skipped");
        return;
    }
    test::TempDir dir;
    const std::string schema = unique("ca_local_crl");
    const crypto::PKey key = crypto::generate_key("p256");
    const crypto::Cert ca = test::self_signed_ca(key.get(), "Fleet CA");
    IssuanceStore store_a(pg_options(schema), "corp", "instance-a"), store_b(pg_options(schema), "corp", "instance-b");
    FleetHost host_a(dir.path() / "a", "{}"), host_b(dir.path() / "b", "{}");
    RevocationSettings settings{"corp"};
    settings.leader_period = std::chrono::seconds(2);
    fs::create_directories(dir.path() / "a");
    fs::create_directories(dir.path() / "b");
    RevocationService a(settings, ca.get(), key.get(), store_a, dir.path() / "a", &host_a.host(), false);
    RevocationService b(settings, ca.get(), key.get(), store_b, dir.path() / "b", &host_b.host(), false);
    for (const char* serial : {"0C01", "0C02", "0C03"})
        REQUIRE(store_a.insert(record(serial)));

    REQUIRE(a.lead());  // a takes the CRL duty
    CHECK(host_a.count(CC_EV_LeadershipAcquired) == 1);
    CHECK_FALSE(b.lead());  // b cannot while a's lease lives
    CHECK(host_b.count(CC_EV_LeadershipAcquired) == 0);
    const auto first = a.crl();
    CHECK(*b.crl() == *first);  // b serves the CRL a stored: the very same bytes
    const std::int64_t n1 = crl_number(*first);

    // A revocation through b (not the leader): in the leader's next CRL, and in both OCSP answers.
    CHECK(store_b.revoke_many({{"0C01", "keyCompromise"}}, "2026-11-20T10:00:00Z") == std::vector<bool>{true});
    b.changed();
    CHECK(ocsp_status(a, ca.get(), "0C01") == V_OCSP_CERTSTATUS_REVOKED);
    CHECK(ocsp_status(b, ca.get(), "0C01") == V_OCSP_CERTSTATUS_REVOKED);
    CHECK(ocsp_status(b, ca.get(), "0C02") == V_OCSP_CERTSTATUS_GOOD);
    REQUIRE(a.lead());
    const auto second = a.crl();
    const std::int64_t n2 = crl_number(*second);
    CHECK(n2 > n1);
    CHECK(crl_serials(*second) == std::set<std::string>{"0C01"});
    CHECK(*b.crl() == *second);

    // The leader leaves; b takes over with a new epoch; a revocation through a is in b's CRL.
    a.step_down();
    CHECK(host_a.count(CC_EV_LeadershipLost) == 1);
    REQUIRE(b.lead());
    CHECK(host_b.count(CC_EV_LeadershipAcquired) == 1);
    CHECK(store_a.revoke_many({{"0C02", "superseded"}}, "2026-11-21T10:00:00Z") == std::vector<bool>{true});
    a.changed();
    const auto third = b.crl();  // b leads and the record changed: a new CRL
    const std::int64_t n3 = crl_number(*third);
    CHECK(n3 > n2);
    CHECK(crl_serials(*third) == std::set<std::string>{"0C01", "0C02"});
    CHECK(*a.crl() == *third);  // a, no longer leading, serves b's
    auto parsed = parse_crl(*third);
    CHECK(X509_CRL_verify(parsed.get(), key.get()) == 1);
    // Every instance recorded its own OCSP responder certificate in the fleet's record.
    const auto responders = store_a.responders();
    REQUIRE(responders.size() == 2);
    CHECK(responders[0].instance_id == "instance-a");
    CHECK(responders[1].instance_id == "instance-b");
}

TEST_CASE("ca-local fleet: CRL numbers strictly increase across overlapping would-be leaders; the loser's write is refused",
          "[postgresql]") {
    if (pg_url().empty()) {
        WARN("CERTCONN_TEST_PG_URL not set: skipped");
        return;
    }
    const std::string schema = unique("ca_local_lease");
    IssuanceStore a(pg_options(schema), "corp", "instance-a"), b(pg_options(schema), "corp", "instance-b");
    const auto epoch_a = a.acquire_crl_lease(std::chrono::seconds(1));
    REQUIRE(epoch_a);
    CHECK_FALSE(b.acquire_crl_lease(std::chrono::seconds(1)));
    const auto n_a = a.next_crl_number(*epoch_a);
    REQUIRE(n_a);
    // a stalls past its lease (a GC pause, a frozen VM); b takes over meanwhile.
    std::this_thread::sleep_for(std::chrono::milliseconds(2200));
    const auto epoch_b = b.acquire_crl_lease(std::chrono::seconds(30));
    REQUIRE(epoch_b);
    CHECK(*epoch_b > *epoch_a);
    const auto n_b = b.next_crl_number(*epoch_b);
    REQUIRE(n_b);
    CHECK(*n_b > *n_a);
    CHECK(b.store_crl(epoch_b, StoredCrl{*n_b, 1, 2, 0, "crl-of-b"}));
    // a wakes up: its number request and its write are both refused by the lease check.
    CHECK_FALSE(a.next_crl_number(*epoch_a));
    CHECK_FALSE(a.store_crl(epoch_a, StoredCrl{*n_a, 1, 2, 0, "crl-of-a"}));
    // Without a lease (the emergency path) an older number never replaces a newer CRL either.
    CHECK_FALSE(a.store_crl(std::nullopt, StoredCrl{*n_a, 1, 2, 0, "crl-of-a"}));
    const auto latest = a.latest_crl();
    REQUIRE(latest);
    CHECK(latest->number == *n_b);
    CHECK(latest->der == "crl-of-b");
    CHECK(a.latest_crl(*n_b)->der.empty());  // the caller already has it: no bytes sent again

    // Numbers taken at once by both instances: all distinct, strictly increasing per taker.
    std::vector<std::int64_t> got_a, got_b;
    std::thread ta([&] {
        for (int i = 0; i < 40; ++i)
            got_a.push_back(a.next_crl_number());
    });
    std::thread tb([&] {
        for (int i = 0; i < 40; ++i)
            got_b.push_back(b.next_crl_number());
    });
    ta.join();
    tb.join();
    std::set<std::int64_t> all(got_a.begin(), got_a.end());
    all.insert(got_b.begin(), got_b.end());
    CHECK(all.size() == 80);
    CHECK(*all.begin() > *n_b);
    CHECK(std::is_sorted(got_a.begin(), got_a.end()));
    CHECK(std::is_sorted(got_b.begin(), got_b.end()));
}
