// tenant-local's administrative commands (`certconnector submit pkcs|revoke|import|FEATURE`,
// `job show`, `scep challenge`): the job documents of docs/tenant-protocol.md built from
// command-line arguments, submitted to this tenant's queue, and waited for without holding a
// host worker (the CLI calls again while the job runs).
#pragma once

#include "JobQueue.hpp"
#include "ScepLedger.hpp"

#include <certconn/sdk.hpp>

namespace certconn::tenant_local {

/// Registers every command on `host`; `queue` and `scep` outlive the host's calls.
void register_job_commands(sdk::Host& host, JobQueue& queue, ScepLedger& scep);

/// Checks a submitted job's id and feature; throws sdk::Error INVALID_ARGUMENT naming the field.
void check_job_fields(const std::string& feature, const std::string& id);

}  // namespace certconn::tenant_local
