// CLI commands for connector keys (`keys ...`) and for preparing imports (`pfx
// encrypt-password`). They work on the key store directly, daemon running or not.
#pragma once

#include "cli/CommandLine.hpp"

#include <filesystem>
#include <string>

namespace certconn::host {

/// `keys_dir` is the configuration's key store; `service_account` (may be empty) owns what
/// root creates there, so the daemon can read it after dropping privileges.
int keys_create(const ParsedOptions& options, const std::filesystem::path& keys_dir, const std::string& service_account);
int keys_add(const ParsedOptions& options, const std::filesystem::path& keys_dir, const std::string& service_account);
int keys_export_public(const ParsedOptions& options, const std::filesystem::path& keys_dir);
int keys_list(const ParsedOptions& options, const std::filesystem::path& keys_dir);
/// Encrypts a PFX password (from --password-file or the first line of stdin) to a public key,
/// RSA-OAEP, and prints it base64: what an import job's encrypted_password carries.
int pfx_encrypt_password(const ParsedOptions& options);

}  // namespace certconn::host
