// CLI commands that talk to a running connector over its admin socket: submit, job show,
// ca export, scep challenge.
#pragma once

#include "cli/CommandLine.hpp"

#include <filesystem>

namespace certconn::host {

/// `submit FEATURE`: builds the job (from options or --json), submits it, optionally waits and
/// writes the result files. Returns the process exit code.
int submit_job(const std::string& feature, const ParsedOptions& options, const std::filesystem::path& admin_socket);
int show_job(const std::string& id, const ParsedOptions& options, const std::filesystem::path& admin_socket);
int export_ca(const std::string& name, const std::filesystem::path& admin_socket);
/// Approves or denies a pending SCEP transaction.
int decide_scep(const std::string& transaction_id, bool approve, const std::filesystem::path& admin_socket);
/// Lists pending SCEP transactions.
int list_pending_scep(const std::filesystem::path& admin_socket);
/// Creates a one-time SCEP challenge; prints it on stdout (its expiry on stderr).
int create_scep_challenge(const ParsedOptions& options, const std::filesystem::path& admin_socket);

}  // namespace certconn::host
