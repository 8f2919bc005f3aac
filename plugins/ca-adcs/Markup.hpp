// Reading AD CS answers: the certsrv HTML pages and the SOAP (MS-WSTEP, WS-Management) envelopes.
// Everything here is a bounded scan of a size-limited body (the HTTP client already refused
// anything above max_response_bytes): plain substring searches with fixed maximum lengths for
// what they capture, no backtracking regular expressions.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace certconn::ca_adcs {

/// What certfnsh.asp answered (the page shapes magnuswatn/certsrv reads from real CAs).
struct Disposition {
    enum Kind { issued, pending, denied, unreadable } kind = unreadable;
    std::string request_id;  ///< AD CS request id (issued, pending; denied when shown)
    std::string message;     ///< denied: the disposition message
};

/// Issued: a link `certnew.cer?ReqID=<n>&`; pending: "Your Request Id is <n>."; denied:
/// `The disposition message is "..."`; an error page: its "Disposition message:" entry.
Disposition read_certfnsh(std::string_view page);

/// The "Disposition message:" entry of a certsrv error page (certnew.cer of a request that is
/// not issued), or nullopt when the page has none.
std::optional<std::string> error_page_disposition(std::string_view page);

/// `var nRenewals=<n>;` of certcarc.asp.
std::optional<int> read_renewals(std::string_view page);

/// An XML element found by its local name (any namespace prefix).
struct Element {
    std::string attributes;  ///< the raw text between the name and '>'
    std::string content;     ///< raw inner text (entities not decoded); empty for <x/>
};

/// Every element named `local` (not nested in one of the same name), in document order, at
/// most `max` of them.
std::vector<Element> elements(std::string_view xml, std::string_view local, std::size_t max = 16);
std::optional<Element> element(std::string_view xml, std::string_view local);
/// The value of attribute `name` in an Element's attribute text.
std::optional<std::string> attribute(std::string_view attributes, std::string_view name);
/// Text with the five XML entities and numeric character references decoded, trimmed.
std::string xml_text(std::string_view raw);
/// Escapes text for XML content or attribute values.
std::string xml_escape(std::string_view text);
/// HTML text as shown: entities decoded, tags dropped, whitespace folded, at most `max` chars.
std::string html_text(std::string_view raw, std::size_t max = 512);

}  // namespace certconn::ca_adcs
