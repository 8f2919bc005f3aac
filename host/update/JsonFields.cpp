#include "update/JsonFields.hpp"

#include <boost/json/basic_parser_impl.hpp>

#include <set>
#include <vector>

namespace certconn::host::update::json_fields {

namespace {

/// A SAX handler that only looks for an object with the same key twice: Boost.JSON (like jq
/// and Python) keeps the last one silently, so a reviewer and the connector could read
/// different values from one signed file.
struct DuplicateKeyFinder {
    static constexpr std::size_t max_object_size = static_cast<std::size_t>(-1);
    static constexpr std::size_t max_array_size = static_cast<std::size_t>(-1);
    static constexpr std::size_t max_key_size = static_cast<std::size_t>(-1);
    static constexpr std::size_t max_string_size = static_cast<std::size_t>(-1);

    std::vector<std::set<std::string>> objects;
    std::string key;
    bool duplicate = false;

    bool on_document_begin(boost::system::error_code&) { return true; }
    bool on_document_end(boost::system::error_code&) { return true; }
    bool on_array_begin(boost::system::error_code&) { return true; }
    bool on_array_end(std::size_t, boost::system::error_code&) { return true; }
    bool on_object_begin(boost::system::error_code&) {
        objects.emplace_back();
        return true;
    }
    bool on_object_end(std::size_t, boost::system::error_code&) {
        objects.pop_back();
        return true;
    }
    bool on_string_part(boost::json::string_view, std::size_t, boost::system::error_code&) { return true; }
    bool on_string(boost::json::string_view, std::size_t, boost::system::error_code&) { return true; }
    bool on_key_part(boost::json::string_view s, std::size_t, boost::system::error_code&) {
        key.append(s.data(), s.size());
        return true;
    }
    bool on_key(boost::json::string_view s, std::size_t, boost::system::error_code& ec) {
        key.append(s.data(), s.size());
        if (!objects.empty() && !objects.back().insert(key).second) {
            duplicate = true;
            ec = boost::json::error::syntax;  // stop here
        }
        key.clear();
        return !duplicate;
    }
    bool on_number_part(boost::json::string_view, boost::system::error_code&) { return true; }
    bool on_int64(std::int64_t, boost::json::string_view, boost::system::error_code&) { return true; }
    bool on_uint64(std::uint64_t, boost::json::string_view, boost::system::error_code&) { return true; }
    bool on_double(double, boost::json::string_view, boost::system::error_code&) { return true; }
    bool on_bool(bool, boost::system::error_code&) { return true; }
    bool on_null(boost::system::error_code&) { return true; }
    bool on_comment_part(boost::json::string_view, boost::system::error_code&) { return true; }
    bool on_comment(boost::json::string_view, boost::system::error_code&) { return true; }
};

}  // namespace

bool has_duplicate_keys(std::string_view bytes, const boost::json::parse_options& options) {
    boost::json::basic_parser<DuplicateKeyFinder> parser(options);
    boost::system::error_code ec;
    parser.write_some(false, bytes.data(), bytes.size(), ec);
    return parser.handler().duplicate;
}

}  // namespace certconn::host::update::json_fields
