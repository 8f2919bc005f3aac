#include "config/ConfigSchema.hpp"

#include <boost/json/parse.hpp>

#include <algorithm>
#include <sstream>
#include <stdexcept>

namespace certconn::host {

namespace json = boost::json;

const SchemaNode* SchemaNode::child(std::string_view key) const {
    if (auto it = keys.find(std::string(key)); it != keys.end()) return &it->second;
    return values.get();
}

namespace {

SchemaNode::Type parse_type(std::string_view name, const std::string& path) {
    using T = SchemaNode::Type;
    static const std::map<std::string_view, T> types = {{"string", T::String},   {"integer", T::Integer}, {"float", T::Float},
                                                        {"boolean", T::Boolean}, {"array", T::Array},     {"table", T::Table},
                                                        {"any", T::Any}};
    if (auto it = types.find(name); it != types.end()) return it->second;
    throw std::invalid_argument(path + ".type: unknown type '" + std::string(name) +
                                "' (expected string, integer, float, boolean, array, table or any)");
}

const char* schema_type_name(SchemaNode::Type t) {
    switch (t) {
        case SchemaNode::Type::String: return "a string";
        case SchemaNode::Type::Integer: return "an integer";
        case SchemaNode::Type::Float: return "a number";
        case SchemaNode::Type::Boolean: return "a boolean";
        case SchemaNode::Type::Array: return "an array";
        case SchemaNode::Type::Table: return "a table";
        case SchemaNode::Type::Any: return "any value";
    }
    return "a value";
}

bool matches(const toml::node& node, SchemaNode::Type t) {
    switch (t) {
        case SchemaNode::Type::String: return node.is_string();
        case SchemaNode::Type::Integer: return node.is_integer();
        case SchemaNode::Type::Float: return node.is_floating_point() || node.is_integer();
        case SchemaNode::Type::Boolean: return node.is_boolean();
        case SchemaNode::Type::Array: return node.is_array();
        case SchemaNode::Type::Table: return node.is_table();
        case SchemaNode::Type::Any: return true;
    }
    return false;
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j)
        row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        std::size_t diag = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            const std::size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
            diag = up;
        }
    }
    return row[b.size()];
}

std::string join_path(const std::string& base, std::string_view key) {
    return base.empty() ? std::string(key) : base + "." + std::string(key);
}

void add(std::vector<ConfigProblem>& problems, const std::string& file, const toml::source_region& where, const std::string& key,
         std::string message) {
    problems.push_back({file, static_cast<int>(where.begin.line), static_cast<int>(where.begin.column), key, std::move(message)});
}

}  // namespace

std::string type_name(const toml::node& node) {
    switch (node.type()) {
        case toml::node_type::string: return "a string";
        case toml::node_type::integer: return "an integer";
        case toml::node_type::floating_point: return "a float";
        case toml::node_type::boolean: return "a boolean";
        case toml::node_type::array: return "an array";
        case toml::node_type::table: return "a table";
        case toml::node_type::date: return "a date";
        case toml::node_type::time: return "a time";
        case toml::node_type::date_time: return "a date-time";
        default: return "nothing";
    }
}

SchemaNode parse_schema(const json::value& doc, const std::string& path) {
    if (!doc.is_object()) throw std::invalid_argument(path + ": expected a JSON object");
    const json::object& o = doc.get_object();
    static const std::vector<std::string> known = {"type", "required", "secret", "description", "enum",      "min",
                                                   "max",  "items",    "keys",   "values",      "additional"};
    SchemaNode node;
    for (const auto& [key, value] : o) {
        const std::string k(key);
        if (std::find(known.begin(), known.end(), k) == known.end())
            throw std::invalid_argument(path + ": unknown schema field '" + k + "'");
        auto need = [&](bool ok, const char* what) {
            if (!ok) throw std::invalid_argument(path + "." + k + ": expected " + what);
        };
        if (k == "type") {
            need(value.is_string(), "a string");
            node.type = parse_type(value.get_string(), path);
        } else if (k == "required" || k == "secret" || k == "additional") {
            need(value.is_bool(), "a boolean");
            (k == "required" ? node.required : k == "secret" ? node.secret : node.additional) = value.get_bool();
        } else if (k == "description") {
            need(value.is_string(), "a string");
            node.description = value.get_string();
        } else if (k == "enum") {
            need(value.is_array(), "an array of strings");
            for (const auto& v : value.get_array()) {
                need(v.is_string(), "an array of strings");
                node.allowed.emplace_back(v.get_string());
            }
        } else if (k == "min" || k == "max") {
            need(value.is_number(), "a number");
            (k == "min" ? node.min : node.max) = value.to_number<double>();
        } else if (k == "items") {
            node.items = std::make_shared<SchemaNode>(parse_schema(value, path + ".items"));
        } else if (k == "values") {
            node.values = std::make_shared<SchemaNode>(parse_schema(value, path + ".values"));
        } else if (k == "keys") {
            need(value.is_object(), "an object");
            for (const auto& [name, sub] : value.get_object())
                node.keys.emplace(std::string(name), parse_schema(sub, path + ".keys." + std::string(name)));
        }
    }
    if (!o.contains("type")) throw std::invalid_argument(path + ": missing 'type'");
    return node;
}

SchemaNode parse_schema(std::string_view text) {
    std::error_code ec;
    json::value doc = json::parse(text, ec);
    if (ec) throw std::invalid_argument("schema: not valid JSON (" + ec.message() + ")");
    return parse_schema(doc);
}

std::string ConfigProblem::to_string() const {
    std::string out = file;
    if (line > 0) out += ":" + std::to_string(line) + ":" + std::to_string(column);
    out += ": ";
    if (!key.empty()) out += key + ": ";
    return out + message;
}

std::string closest_match(std::string_view word, const std::vector<std::string>& candidates) {
    std::string best;
    std::size_t best_distance = std::max<std::size_t>(2, word.size() / 3) + 1;
    for (const auto& c : candidates) {
        const std::size_t d = edit_distance(word, c);
        if (d < best_distance) {
            best_distance = d;
            best = c;
        }
    }
    return best;
}

void validate_node(const toml::node& node, const SchemaNode& schema, const std::string& key_path, const std::string& file,
                   std::vector<ConfigProblem>& problems) {
    if (!matches(node, schema.type)) {
        add(problems, file, node.source(), key_path,
            std::string("expected ") + schema_type_name(schema.type) + ", found " + type_name(node));
        return;
    }
    if (node.is_string() && !schema.allowed.empty()) {
        const std::string value(*node.value<std::string_view>());
        if (std::find(schema.allowed.begin(), schema.allowed.end(), value) == schema.allowed.end()) {
            std::string list;
            for (const auto& a : schema.allowed)
                list += (list.empty() ? "" : ", ") + a;
            std::string msg = "'" + value + "' is not one of: " + list;
            if (auto hint = closest_match(value, schema.allowed); !hint.empty()) msg += " (did you mean '" + hint + "'?)";
            add(problems, file, node.source(), key_path, msg);
        }
    }
    if (node.is_number() && (schema.min || schema.max)) {
        const double v = node.is_integer() ? static_cast<double>(*node.value<int64_t>()) : *node.value<double>();
        if ((schema.min && v < *schema.min) || (schema.max && v > *schema.max)) {
            auto fmt = [](double d) {
                std::string s = std::to_string(d);
                s.erase(s.find_last_not_of('0') + 1);
                if (!s.empty() && s.back() == '.') s.pop_back();
                return s;
            };
            add(problems, file, node.source(), key_path,
                "value out of range (expected " + (schema.min ? fmt(*schema.min) : std::string("-inf")) + " .. " +
                    (schema.max ? fmt(*schema.max) : std::string("inf")) + ")");
        }
    }
    if (const toml::array* arr = node.as_array(); arr && schema.items) {
        for (std::size_t i = 0; i < arr->size(); ++i)
            validate_node((*arr)[i], *schema.items, key_path + "[" + std::to_string(i) + "]", file, problems);
    }
    const toml::table* table = node.as_table();
    if (table == nullptr || (schema.keys.empty() && !schema.values)) return;
    std::vector<std::string> names;
    for (const auto& [name, sub] : schema.keys)
        names.push_back(name);
    for (const auto& [key, value] : *table) {
        const std::string path = join_path(key_path, key.str());
        if (const SchemaNode* sub = schema.child(key.str())) {
            validate_node(value, *sub, path, file, problems);
        } else if (!schema.additional) {
            std::string msg = "unknown key '" + std::string(key.str()) + "'";
            if (auto hint = closest_match(key.str(), names); !hint.empty())
                msg += " (did you mean '" + hint + "'?)";
            else if (!names.empty()) {
                std::string list;
                for (const auto& n : names)
                    list += (list.empty() ? "" : ", ") + n;
                msg += " (expected one of: " + list + ")";
            }
            add(problems, file, key.source(), path, msg);
        }
    }
    for (const auto& [name, sub] : schema.keys) {
        if (sub.required && !table->contains(name))
            add(problems, file, node.source(), join_path(key_path, name),
                "missing required key '" + name + "'" + (sub.description.empty() ? "" : " (" + sub.description + ")"));
    }
}

json::value to_json(const toml::node& node, const SchemaNode* schema, bool redact) {
    if (redact && schema && schema->secret) return "********";
    switch (node.type()) {
        case toml::node_type::string: return json::string(*node.value<std::string_view>());
        case toml::node_type::integer: return *node.value<int64_t>();
        case toml::node_type::floating_point: return *node.value<double>();
        case toml::node_type::boolean: return *node.value<bool>();
        case toml::node_type::array: {
            json::array out;
            for (const auto& item : *node.as_array())
                out.push_back(to_json(item, schema ? schema->items.get() : nullptr, redact));
            return out;
        }
        case toml::node_type::table: {
            json::object out;
            for (const auto& [key, value] : *node.as_table())
                out[key.str()] = to_json(value, schema ? schema->child(key.str()) : nullptr, redact);
            return out;
        }
        default: {
            std::ostringstream text;  // dates and times: their TOML spelling
            if (auto d = node.as_date())
                text << *d;
            else if (auto t = node.as_time())
                text << *t;
            else if (auto dt = node.as_date_time())
                text << *dt;
            return json::string(text.str());
        }
    }
}

}  // namespace certconn::host
