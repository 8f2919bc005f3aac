// A small schema language for TOML configuration, written as JSON. The host describes its
// own sections with it and every plugin may publish one for its section (cc_plugin_info
// .config_schema), so one validator reports every problem with file:line:column.
//
//   node   := {"type": "string"|"integer"|"float"|"boolean"|"array"|"table"|"any",
//              "required": bool, "secret": bool, "description": "...",
//              "enum": ["a","b"],                 (strings)
//              "min": n, "max": n,                (integers, floats)
//              "items": node,                     (arrays)
//              "keys": {"name": node, ...},       (tables: fixed keys)
//              "values": node,                    (tables: any key, each value matches node)
//              "additional": bool}                (tables: allow keys not listed; default false)
#pragma once

#include <boost/json/value.hpp>
#include <toml++/toml.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace certconn::host {

struct SchemaNode {
    enum class Type { String, Integer, Float, Boolean, Array, Table, Any };
    Type type = Type::Any;
    bool required = false;
    bool secret = false;
    std::string description;
    std::vector<std::string> allowed;  // enum
    std::optional<double> min, max;
    std::shared_ptr<SchemaNode> items;
    std::map<std::string, SchemaNode> keys;
    std::shared_ptr<SchemaNode> values;
    bool additional = false;

    /// The schema of child `key` of this table, or nullptr when unknown.
    const SchemaNode* child(std::string_view key) const;
};

/// Parses a schema document; throws std::invalid_argument naming the bad path.
SchemaNode parse_schema(const boost::json::value& document, const std::string& path = "schema");
SchemaNode parse_schema(std::string_view json_text);

/// One configuration problem, printed as "file:line:column: key.path: message".
struct ConfigProblem {
    std::string file;
    int line = 0;
    int column = 0;
    std::string key;
    std::string message;
    std::string to_string() const;
};

/// Validates `node` against `schema`; appends one problem per violation.
void validate_node(const toml::node& node, const SchemaNode& schema, const std::string& key_path, const std::string& file,
                   std::vector<ConfigProblem>& problems);

/// The candidate closest to `word` when it is a plausible typo, else empty.
std::string closest_match(std::string_view word, const std::vector<std::string>& candidates);

/// TOML value as JSON; values whose schema says "secret" become "********" when `redact`.
boost::json::value to_json(const toml::node& node, const SchemaNode* schema, bool redact);

std::string type_name(const toml::node& node);

}  // namespace certconn::host
