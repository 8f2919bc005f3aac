// Becoming the service account before any plugin code runs. Started as root with
// [host] service_account set, `certconnector run` prepares the state and log directories for
// that account and switches to it before it scans the plugin directory (a plugin's query export
// is plugin code), keeping only CAP_NET_BIND_SERVICE when the listener needs a port below 1024.
#pragma once

#include "config/Config.hpp"

namespace certconn::host {

/// No-op unless running as root with a service account in `document`. Throws std::runtime_error
/// naming what failed (unknown account, a directory it cannot be given, setuid refused).
void become_service_account(const ConfigDocument& document);

}  // namespace certconn::host
