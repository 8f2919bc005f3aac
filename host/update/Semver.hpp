// Semantic versions (https://semver.org, 2.0.0): validation and precedence. The loader uses it
// to pick the highest version of a plugin, the update manager to refuse downgrades and hosts
// too old for a plugin (min_host).
#pragma once

#include <string_view>

namespace certconn::host::update {

/// MAJOR.MINOR.PATCH with an optional -PRERELEASE and +BUILD, no leading zeros in numeric
/// identifiers, no empty identifiers. At most 256 characters.
bool is_semver(std::string_view text);

/// Precedence of two semantic versions: negative when a < b, 0 when equal (build metadata is
/// ignored), positive when a > b. 1.0.0-alpha < 1.0.0-alpha.1 < 1.0.0-beta < 1.0.0 < 1.10.0.
/// Throws std::invalid_argument naming the text when either is not a semantic version.
int compare_versions(std::string_view a, std::string_view b);

}  // namespace certconn::host::update
