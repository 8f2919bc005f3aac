// Which version of a plugin may serve, beyond "the highest that passes every check": versions
// an operator pinned ([update] pin) and versions the update manager marked bad after a
// rollback. The loader applies it when several files of one plugin are present.
#pragma once

#include <map>
#include <set>
#include <string>

namespace certconn::host {

struct VersionSelection {
    std::map<std::string, std::string> pins;  // plugin name -> the only version that may serve
    std::set<std::string> bad;                // "name@version": never chosen while another exists

    static std::string key(const std::string& name, const std::string& version) { return name + "@" + version; }
};

}  // namespace certconn::host
