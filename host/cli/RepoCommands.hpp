// `certconnector repo ...`: builds a signed plugin repository from built plugins, so the
// project publishes its own plugins this way and a third party can too. A repository is a
// directory: N.root.json (+ .minisig), plugins/<kind>-<name>-<version>.so, index.json (+
// .minisig), and index.draft.json, the entries `repo add` collected for the next `repo publish`.
// Signing runs the real `minisign` tool; verification is host/update/'s.
#pragma once

#include "cli/CommandLine.hpp"

namespace certconn::host {

/// `repo init DIR --key PUB... --threshold K [--expires-days 365] [--repository NAME]
/// [--root-version N]`: writes DIR/N.root.json (unsigned), DIR/plugins/ and an empty draft.
int repo_init(const ParsedOptions& options);
/// `repo add DIR FILE.so... [--min-host X] [--rollout P]`: copies each plugin (identity read
/// through its query export) to DIR/plugins/ and records it in DIR/index.draft.json.
int repo_add(const ParsedOptions& options);
/// `repo publish DIR [--expires-days 30]`: writes DIR/index.json from the draft with the next
/// sequence number, issue time and expiry (and removes the now stale index.json.minisig).
int repo_publish(const ParsedOptions& options);
/// `repo sign DIR FILE --secret-key KEY... [--append]`: runs `minisign -S` once per key and
/// writes FILE.minisig as the concatenation (k-of-n); --append keeps the signatures already there.
int repo_sign(const ParsedOptions& options);
/// `repo verify DIR --root ROOT.json [--last-sequence N]`: verifies the root chain from the
/// trusted ROOT.json (+ ROOT.json.minisig), the index and the plugin files present; prints the
/// entries. Exit 1 with the refusal reason when anything is refused.
int repo_verify(const ParsedOptions& options);

}  // namespace certconn::host
