// tenant-intune, the parts that need no network: revoke results -> uploadRevocationResults,
// HTTP answers -> sdk::Error statuses (Retry-After phrase the host parses), defensive reading of
// Intune's answers.
#include "Protocol.hpp"

#include <boost/json.hpp>

#include <catch2/catch.hpp>

#include <regex>

namespace json = boost::json;
using namespace certconn::intune;

namespace {
json::object entry(const std::string& result) {
    return upload_entry("ctx-1", json::parse(result));
}
}  // namespace

TEST_CASE("intune: a revoked certificate uploads as succeeded with errorCode 0") {
    const auto e = entry(R"({"status":"succeeded","serial":"1A","already_revoked":false,"error_code":0})");
    CHECK(e.at("requestContext") == "ctx-1");
    CHECK(e.at("succeeded") == true);
    CHECK(e.at("errorCode") == "0");
}

TEST_CASE("intune: an already revoked certificate uploads as conflict 4005, not as success") {
    const auto e = entry(R"({"status":"succeeded","serial":"1A","already_revoked":true,"error_code":0,"note":"already"})");
    CHECK(e.at("succeeded") == false);
    CHECK(e.at("errorCode") == "4005");
    CHECK(e.at("errorMessage") == "already");
}

TEST_CASE("intune: a failed revocation uploads its error_code and message") {
    for (const int code : {4002, 4004, 4005, 4006, 4000, 4100, 4101, 4102}) {
        const auto e = entry(R"({"status":"failed","error_code":)" + std::to_string(code) +
                             R"(,"error":{"code":"not_found","message":"no such certificate"}})");
        CHECK(e.at("succeeded") == false);
        CHECK(e.at("errorCode").as_string() == std::to_string(code));
        CHECK(e.at("errorMessage") == "no such certificate");
    }
    // Without a usable code (absent, 0, unknown): a non-retryable service error, never "None".
    CHECK(entry(R"({"status":"failed","error":{"code":"internal","message":"x"}})").at("errorCode") == "4000");
    CHECK(entry(R"({"status":"failed","error_code":0,"error":{"message":"x"}})").at("errorCode") == "4000");
    CHECK(entry(R"({"status":"failed","error_code":1234})").at("errorCode") == "4000");
    CHECK(entry(R"({"status":"failed","error_code":"CertificateNotFoundError"})").at("errorCode") == "4004");
    // A result that is not even an object is not reported as a success.
    const auto bad = upload_entry("ctx", json::value("garbage"));
    CHECK(bad.at("succeeded") == false);
    CHECK(bad.at("errorCode") == "4000");
}

TEST_CASE("intune: errorMessage is at most 255 bytes and never cuts a UTF-8 character") {
    std::string message(250, 'a');
    message += "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9";  // four two-byte characters: 258 bytes
    json::object result{{"status", "failed"}, {"error_code", 4004}, {"error", json::object{{"message", message}}}};
    const auto e = upload_entry("ctx", result);
    const std::string m(e.at("errorMessage").as_string());
    CHECK(m.size() <= 255);
    CHECK(m.size() == 254);  // 250 + two whole characters
    CHECK(m.substr(250) == "\xc3\xa9\xc3\xa9");
}

TEST_CASE("intune: revocation error codes are read as numbers, decimal strings or the C# client's names") {
    CHECK(revocation_error_code(json::value(4004)) == 4004);
    CHECK(revocation_error_code(json::value("4102")) == 4102);
    CHECK(revocation_error_code(json::value("ConflictError")) == 4005);
    CHECK(revocation_error_code(json::value("None")) == 0);
    CHECK_FALSE(revocation_error_code(json::value(4999)).has_value());
    CHECK_FALSE(revocation_error_code(json::value("9999999999999")).has_value());
    CHECK_FALSE(revocation_error_code(json::value("Bogus")).has_value());
    CHECK_FALSE(revocation_error_code(json::value(true)).has_value());
}

TEST_CASE("intune: HTTP statuses map to sdk statuses the host acts on") {
    using std::chrono::seconds;
    CHECK(http_error("x", 429, "", std::nullopt).code() == CC_ERR_BUSY);
    CHECK(http_error("x", 503, "", std::nullopt).code() == CC_ERR_UNAVAILABLE);
    CHECK(http_error("x", 502, "", std::nullopt).code() == CC_ERR_UNAVAILABLE);
    CHECK(http_error("x", 504, "", std::nullopt).code() == CC_ERR_TIMEOUT);
    CHECK(http_error("x", 400, "", std::nullopt).code() == CC_ERR_INVALID_ARGUMENT);
    CHECK(http_error("x", 401, "", std::nullopt).code() == CC_ERR_DENIED);
    CHECK(http_error("x", 403, "", std::nullopt).code() == CC_ERR_DENIED);
    CHECK(http_error("x", 404, "", std::nullopt).code() == CC_ERR_NOT_FOUND);
    CHECK(http_error("x", 409, "", std::nullopt).code() == CC_ERR_CONFLICT);
    CHECK_FALSE(http_error("x", 400, "", std::nullopt).retryable());
    CHECK(http_error("x", 429, "", std::nullopt).retryable());
}

TEST_CASE("intune: Retry-After ends the message in exactly the phrase the host parses") {
    const auto busy = http_error("Intune validateRequest", 429, "", std::chrono::seconds(7));
    const std::string m = busy.what();
    CHECK(m.size() >= 17);
    CHECK(m.substr(m.size() - 17) == "(retry after 7 s)");
    const auto down =
        http_error("Intune x", 503, R"({"error":{"code":"ServiceUnavailable","message":"later"}})", std::chrono::seconds(120));
    const std::string d = down.what();
    CHECK(d.substr(d.size() - 19) == "(retry after 120 s)");
    // Without Retry-After, no phrase (the host would otherwise wait for a made-up delay).
    CHECK(std::string(http_error("x", 503, "", std::nullopt).what()).find("retry after") == std::string::npos);
    // Retry-After on a 400 means nothing.
    CHECK(std::string(http_error("x", 400, "", std::chrono::seconds(5)).what()).find("retry after") == std::string::npos);
}

TEST_CASE("intune: a 500 with an OData error body is reported with its code, bounded") {
    const std::string body = R"({"error":{"code":"InternalError","message":")" + std::string(5000, 'm') + R"("}})";
    const auto e = http_error("Intune ScepRequestValidationFEService ScepActions/validateRequest", 500, body, std::nullopt);
    CHECK(e.code() == CC_ERR_UNAVAILABLE);
    const std::string m = e.what();
    CHECK(m.find("HTTP 500") != std::string::npos);
    CHECK(m.find("InternalError") != std::string::npos);
    CHECK(m.size() < 600);
    CHECK(odata_error("not json") == "");
    CHECK(odata_error(R"({"error":{"code":"a\nb","message":"c"}})") == "a b: c");
    // Entra ID's token endpoint error: the description's first line only (trace ids follow).
    CHECK(
        odata_error(R"({"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret.\r\nTrace ID: 1"})") ==
        "invalid_client: AADSTS7000215: Invalid client secret.");
}

TEST_CASE("intune: validateRequest answers are read defensively, codes passed through unchanged") {
    const auto ok = scep_reply(json::parse(R"({"code":"Success","errorDescription":null,"@odata.context":"x"})"), "v");
    CHECK(ok.code == "Success");
    const auto refused = scep_reply(json::parse(R"({"code":"BadTenantIdInChallenge","errorDescription":"tenant differs"})"), "v");
    CHECK(refused.code == "BadTenantIdInChallenge");
    CHECK(refused.description == "tenant differs");
    auto fails_naming = [](const std::string& body, const std::string& field) {
        try {
            scep_reply(json::parse(body), "Intune validateRequest");
            FAIL("accepted " << body);
        } catch (const certconn::sdk::Error& e) {
            CHECK(e.code() == CC_ERR_UNAVAILABLE);
            CHECK(std::string(e.what()).find(field) != std::string::npos);
        }
    };
    fails_naming(R"({"errorDescription":"x"})", "'code'");
    fails_naming(R"({"code":42})", "'code'");
    fails_naming(R"({"code":"Success; DROP"})", "'code'");
    fails_naming(R"({"code":"Success","errorDescription":{}})", "'errorDescription'");
    fails_naming(R"([1,2])", "not a JSON object");
}

TEST_CASE("intune: downloadRevocationRequests answers are checked field by field") {
    const auto list = revocation_requests(
        json::parse(
            R"({"value":[{"requestContext":"c1","serialNumber":"0A1B","issuerName":"CN=CA","caConfiguration":"ca01\\CA"}]})"),
        10);
    REQUIRE(list.size() == 1);
    CHECK(list[0].request_context == "c1");
    CHECK(list[0].ca_configuration == "ca01\\CA");
    CHECK_THROWS_WITH(revocation_requests(json::parse(R"({"value":[{"serialNumber":"1"}]})"), 10),
                      Catch::Contains("value[0]: field 'requestContext' is missing"));
    CHECK_THROWS_WITH(revocation_requests(json::parse(R"({"value":[{"requestContext":"c","serialNumber":5}]})"), 10),
                      Catch::Contains("'serialNumber' is not a string"));
    CHECK_THROWS_WITH(revocation_requests(json::parse(R"({"values":[]})"), 10), Catch::Contains("'value'"));
    CHECK_THROWS_WITH(revocation_requests(json::parse(R"({"value":[{"requestContext":"a"},{"requestContext":"b"}]})"), 1),
                      Catch::Contains("more than maxRequests"));
}

TEST_CASE("intune: revoke job ids are stable per requestContext and fit the job id grammar") {
    const std::string a = job_id_for("context-a");
    CHECK(a == job_id_for("context-a"));
    CHECK(a != job_id_for("context-b"));
    CHECK(std::regex_match(a, std::regex("intune-rev-[0-9a-f]{32}")));
    CHECK(job_id_for(std::string(5000, 'x')).size() == 43);
}
