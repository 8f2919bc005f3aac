// The pure parts of speaking to Intune: how an HTTP answer becomes an sdk::Error, how a revoke
// job's result becomes an uploadRevocationResults entry, how answers are read defensively.
// No network and no state, so unit tests cover them directly.
#pragma once

#include <certconn/abi.h>
#include <certconn/sdk.hpp>

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace certconn::intune {

inline constexpr const char* kScepService = "ScepRequestValidationFEService";
inline constexpr const char* kScepApiVersion = "2018-02-20";
inline constexpr const char* kPkiService = "PkiConnectorFEService";
inline constexpr const char* kPkiApiVersion = "5019-05-05";
inline constexpr const char* kIntuneAppId = "0000000a-0000-0000-c000-000000000000";
inline constexpr const char* kCallerInfo = "certconnector";
inline constexpr std::size_t kMaxErrorMessage = 255;

/// Text from a remote answer, safe to put in a message: control characters blanked, at most
/// `max` bytes (cut on a UTF-8 boundary), "..." when cut.
std::string printable(std::string_view text, std::size_t max = 300);

/// At most `max` bytes of `text`, cut on a UTF-8 character boundary.
std::string truncate_utf8(std::string_view text, std::size_t max);

/// The OData error of an answer body: {"error": {"code", "message"}} -> "code: message"
/// (printable, bounded), or empty when the body has none.
std::string odata_error(std::string_view body);

/// The sdk::Error a non-2xx answer of `what` (e.g. "Intune validateRequest") means:
/// 429 -> BUSY, 503 and other 5xx -> UNAVAILABLE, 408/504 -> TIMEOUT, 400 and other 4xx ->
/// INVALID_ARGUMENT, 401/403 -> DENIED, 404 -> NOT_FOUND, 409 -> CONFLICT. The message names the
/// status, the OData error when the body has one, and ends in "(retry after N s)" when the
/// service sent Retry-After with 429/503 (the host parses that phrase).
sdk::Error http_error(const std::string& what, long status, std::string_view body,
                      std::optional<std::chrono::seconds> retry_after);

/// The uploadRevocationResults entry for a revoke job's result (docs/tenant-protocol.md):
/// succeeded -> succeeded true, errorCode "0"; already_revoked -> succeeded false, "4005";
/// failed -> succeeded false, the result's error_code (4000 when absent or unknown). errorCode
/// travels as a decimal string, as Microsoft's Java client sends it; errorMessage <= 255 bytes.
boost::json::object upload_entry(const std::string& request_context, const boost::json::value& result);

/// The numeric revocation error code of `v`: a number, a decimal string ("4004") or the C#
/// client's name ("CertificateNotFoundError"); nullopt when unknown.
std::optional<int> revocation_error_code(const boost::json::value& v);

/// "intune-rev-" + the first 32 hex digits of SHA-256(requestContext).
std::string job_id_for(const std::string& request_context);

/// A validateRequest / notification reply {"code", "errorDescription"} read defensively: code
/// must be a short identifier; errorDescription is optional (printable, <= 255). Throws
/// sdk::Error(UNAVAILABLE) naming the field when the answer is not what Intune sends.
struct ScepReply {
    std::string code;
    std::string description;
};
ScepReply scep_reply(const boost::json::value& answer, const std::string& what);

/// One downloadRevocationRequests entry.
struct RevocationRequest {
    std::string request_context;
    std::string serial_number;
    std::string issuer_name;
    std::string ca_configuration;
};
/// Reads {"value": [{requestContext, serialNumber, issuerName, caConfiguration}]}; throws
/// sdk::Error(UNAVAILABLE) naming the field that is missing or malformed.
std::vector<RevocationRequest> revocation_requests(const boost::json::value& answer, std::size_t max);

}  // namespace certconn::intune
