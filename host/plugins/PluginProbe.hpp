// A plugin file tried in a short-lived child process before the daemon maps it.
//
// The daemon runs `certconnector plugin-probe` (itself, /proc/self/exe) on a file:
//  - identity: the child dlopens the file (running its static constructors), runs the loader's
//    checks and the query export, and prints the identity as JSON;
//  - init (a new version about to replace a serving one, or a file the update manager placed):
//    the child also runs init against a scratch state directory with the section the daemon
//    would pass, opens the CAs of a CA plugin, asks health, and destroys the instance.
// A crash, a hang past the deadline (the child is killed), a failed init or an unhealthy answer
// refuses the file with a message naming what happened; the serving process never ran its code.
#pragma once

#include "plugins/PluginLoader.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace certconn::host {

struct ProbeRequest {
    std::filesystem::path executable;  // the certconnector binary
    std::filesystem::path file;
    std::string service_account;  // trusted owner of the file (LoaderPolicy)
    bool init = false;
    /// For init: {"kind","name","section":{…},"cas":{"<ca>":{…settings}}}; passed on stdin (it
    /// may hold secrets such as a token PIN), never on the command line or in a file.
    std::string init_spec_json;
    std::filesystem::path scratch_dir;  // for init: created and removed by run_probe
    std::chrono::milliseconds timeout{30000};
};

struct ProbeResult {
    bool ok = false;
    std::uint32_t event_id = 0;  // refusal: the loader's event, or PluginProbeFailed
    std::string error;           // what happened, e.g. "crashed (SIGSEGV) during init"
    std::optional<PluginIdentity> identity;
    std::string health_json;  // init probes: what health answered
};

/// Runs the probe child and waits for it (at most `timeout`, then SIGKILL).
ProbeResult run_probe(const ProbeRequest& request);

/// The child's side (`certconnector plugin-probe FILE [--init --scratch DIR]
/// [--service-account NAME]`): prints one JSON object on stdout; returns the exit code.
int probe_child_main(const std::filesystem::path& file, bool init, const std::filesystem::path& scratch_dir,
                     const std::string& service_account);

}  // namespace certconn::host
