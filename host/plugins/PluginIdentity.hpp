// What the host knows about a plugin from its side-effect-free query export.
#pragma once

#include "config/ConfigSchema.hpp"

#include <certconn/abi.h>

#include <cstdint>
#include <memory>
#include <string>

namespace certconn::host {

struct PluginIdentity {
    cc_plugin_kind kind = CC_KIND_FEATURE;
    std::string name;
    std::string version;
    std::string release_date;
    std::string description;
    std::uint16_t abi_major = 0;
    std::uint16_t abi_minor = 0;
    std::shared_ptr<const SchemaNode> schema;  // null: the plugin takes no configuration
};

const char* kind_name(cc_plugin_kind kind);

}  // namespace certconn::host
