#!/usr/bin/env bash
# Integration (issue #12): revocation requested by Intune. Certificates issued by ca-local through
# PKCS jobs of tenant-local; the Intune stand-in queues revocation requests (a valid serial, one
# already revoked, a serial the CA never issued, a malformed one, a CA configuration nobody maps);
# the `intune` tenant plugin (signing in with its certificate credential) downloads them, the
# daemon revokes, the host's CRL lists the revoked serial, and Intune receives one result per
# request with errorCodes 0, 4005, 4004, 4002, 4002; events 3002/3020/3000/3001/3100.
# usage: intune_revocation.sh CERTCONNECTOR_BIN PLUGIN_DIR
set -uo pipefail
source "$(dirname "$0")/../interop/lib.sh" intune-revocation "$@"
source "$(dirname "$0")/intune_lib.sh"
cleanup() {
  [ -n "${daemon:-}" ] && kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  stop_extras
  rm -rf "$work"
}
trap cleanup EXIT
start_standin || exit 1

port=$(free_port)
base="http://127.0.0.1:$port"
CACFG='ca01.corp.test\\Issuing CA'   # as Intune sends caConfiguration (TOML-escaped below)
cat >"$work/c.toml" <<TOML
[host]
listen = "127.0.0.1:$port"
plugin_dir = "$plugins"
state_dir = "state"
log_dir = "log"
[jobs]
concurrency = 4
retry_initial_ms = 200
retry_max_ms = 1000
[tenant.local]
plugin = "local"
[tenant.intune]
plugin = "intune"
tenant_id = "$T"
client_id = "$C"
credential_certificate = "$work/cred.crt"
credential_key = "$work/cred.key"
login_url = "$standin_url"
graph_url = "$standin_url"
ca_file = "$work/tls.crt"
connect_timeout_seconds = 3
timeout_seconds = 10
[tenant.intune.revocation]
enabled = true
batch_size = 10
interval_seconds = 1
reason = "cessationOfOperation"
[tenant.intune.revocation.ca_map]
"ca01.corp.test\\\\Issuing CA" = "corp"
[ca.corp]
plugin = "local"
algorithm = "p256"
public_base_url = "$base"
[pkcs]
default_ca = "corp"
[revoke]
default_ca = "corp"
TOML
check "config check accepts tenant-intune with a certificate credential and a CA configuration map" \
  "$bin" config check --config "$work/c.toml"
start_connector "$work/c.toml" || exit 1
trap cleanup EXIT

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/device.key" 2>/dev/null
openssl pkey -in "$work/device.key" -pubout -out "$work/device.pub"
pkcs() {
  "$bin" submit pkcs --config "$work/c.toml" --subject "CN=$1" --key-type p256 --device-key "$work/device.pub" \
    --id "$1" --wait --out "$work/$1" >"$work/$1.out" 2>&1 &&
    "$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['result']['certificate_pem'], end='')" "$work/$1/result.json" >"$work/$1.pem"
}
serial() { openssl x509 -in "$work/$1.pem" -noout -serial | cut -d= -f2; }
check "two certificates issued by ca-local through PKCS jobs of tenant-local" bash -c "
  $(declare -f pkcs); bin='$bin' work='$work' py='$py'; pkcs dev-valid && pkcs dev-revoked"
s_valid=$(serial dev-valid)
s_revoked=$(serial dev-revoked)
expect "one of them is revoked beforehand (locally)" "succeeded" \
  "$bin" submit revoke --config "$work/c.toml" --ca corp --serial "$s_revoked" --reason keyCompromise --wait
s_unknown=$(openssl rand -hex 16 | sed 's/^./7/' | tr a-f A-F)
issuer=$(openssl x509 -in "$work/dev-valid.pem" -noout -issuer -nameopt RFC2253 | sed 's/^issuer=//')
lower_revoked=$(printf '00%s' "$s_revoked" | tr A-F a-f)  # Intune's serials: any case, leading zeros
ctx=$(ctl POST revocations -d "[
  {\"serialNumber\":\"$s_valid\",\"issuerName\":\"$issuer\",\"caConfiguration\":\"$CACFG\"},
  {\"serialNumber\":\"$lower_revoked\",\"issuerName\":\"$issuer\",\"caConfiguration\":\"$CACFG\"},
  {\"serialNumber\":\"$s_unknown\",\"issuerName\":\"$issuer\",\"caConfiguration\":\"$CACFG\"},
  {\"serialNumber\":\"not a serial!\",\"issuerName\":\"$issuer\",\"caConfiguration\":\"$CACFG\"},
  {\"serialNumber\":\"$s_valid\",\"issuerName\":\"$issuer\",\"caConfiguration\":\"nobody.example\\\\\\\\Unmapped CA\"}]")
mapfile -t ctxs < <(jq_py '"\n".join(d)' <<<"$ctx")
check "the stand-in queued five revocation requests" test "${#ctxs[@]}" = 5

results() { ctl GET revocation-results; }
check "Intune receives a result for every request (download, revoke, upload)" wait_until 40 bash -c "
  $(declare -f ctl jq_py results); py='$py' work='$work' standin_url='$standin_url'
  [ \"\$(results | jq_py 'len(set(r[\"requestContext\"] for r in d))')\" = 5 ]"
code_of() { results | "$py" -c "
import json,sys
r=[x for x in json.load(sys.stdin) if x['requestContext']==sys.argv[1]]
print('%s %s %s' % (r[0]['succeeded'], r[0]['errorCode'], len(r)) if r else 'none')" "$1"; }
check "the valid serial: succeeded, errorCode 0 (None)" test "$(code_of "${ctxs[0]}")" = "True 0 1"
check "the serial already revoked: errorCode 4005 (conflict)" test "$(code_of "${ctxs[1]}")" = "False 4005 1"
check "the serial the CA never issued: errorCode 4004 (not found)" test "$(code_of "${ctxs[2]}")" = "False 4004 1"
check "the malformed serial: errorCode 4002 (parameter invalid)" test "$(code_of "${ctxs[3]}")" = "False 4002 1"
check "a caConfiguration no ca_map entry names: errorCode 4002, and nothing revoked for it" test "$(code_of "${ctxs[4]}")" = "False 4002 1"
check "every failed result carries an errorMessage of at most 255 characters" bash -c "
  $(declare -f ctl results); work='$work' standin_url='$standin_url'
  results | '$py' -c '
import json,sys
r=json.load(sys.stdin)
assert all((x[\"succeeded\"] or (x[\"errorMessage\"] and len(x[\"errorMessage\"])<=255)) for x in r), r'"
expect_within 15 "the host's CRL at /crl/corp.crl lists the serial Intune asked to revoke" "Serial Number: $s_valid" bash -c "
  curl -sf '$base/crl/corp.crl' | openssl crl -inform DER -noout -text"
check "with the configured reason (cessationOfOperation), and not the serial the CA never issued" bash -c "
  curl -sf '$base/crl/corp.crl' | openssl crl -inform DER -noout -text >'$work/crl.txt' &&
  grep -A4 'Serial Number: $s_valid' '$work/crl.txt' | grep -q 'Cessation Of Operation' && ! grep -q '$s_unknown' '$work/crl.txt' ||
  { grep -A4 'Serial Number: $s_valid' '$work/crl.txt'; exit 1; }"
check "the CRL verifies against the CA" bash -c "
  '$bin' ca export --config '$work/c.toml' --name corp >'$work/corp-chain.pem' &&
  curl -sf '$base/crl/corp.crl' | openssl crl -inform DER -CAfile '$work/corp-chain.pem' -noout 2>&1 | grep -q 'verify OK'"
check "the plugin signed in with a client assertion of its registered certificate" bash -c "
  ctl() { curl -s --cacert '$work/tls.crt' '$standin_url/_control/'\$1; }
  ctl calls | grep -q '\"authorization\": \"certificate:$(openssl x509 -in "$work/cred.crt" -noout -fingerprint -sha1 | cut -d= -f2 | tr -d :)\"'"
check "download and upload calls carried api-version 5019-05-05 and a client-request-id" bash -c "
  curl -s --cacert '$work/tls.crt' '$standin_url/_control/calls' | '$py' -c '
import json,sys
c=[x for x in json.load(sys.stdin) if x[\"kind\"] in (\"downloadRevocationRequests\",\"uploadRevocationResults\")]
assert c and all(x[\"api-version\"]==\"5019-05-05\" and x[\"client-request-id\"] for x in c), c
assert any(x[\"kind\"]==\"uploadRevocationResults\" and x[\"status\"]==200 for x in c), c'"
check "the plugin polls downloadRevocationRequests repeatedly (interval_seconds = 1)" bash -c "
  curl -s --cacert '$work/tls.crt' '$standin_url/_control/calls' | '$py' -c '
import json,sys
c=[x for x in json.load(sys.stdin) if x[\"kind\"]==\"downloadRevocationRequests\"]
assert len(c) >= 3, len(c)'"
sleep 2
check "no request was revoked twice, no result uploaded twice" test "$(results | jq_py 'len(d)')" = 5

# A second batch after the first: requests queued later are picked up by the next poll.
check "a third certificate, issued now" bash -c "$(declare -f pkcs); bin='$bin' work='$work' py='$py'; pkcs dev-later"
s_later=$(serial dev-later)
later=$(ctl POST revocations -d "[{\"serialNumber\":\"$s_later\",\"issuerName\":\"$issuer\",\"caConfiguration\":\"$CACFG\"}]" | jq_py 'd[0]')
check "a request queued later is revoked at the next poll (errorCode 0)" wait_until 15 bash -c "
  $(declare -f ctl results code_of); py='$py' work='$work' standin_url='$standin_url'; [ \"\$(code_of '$later')\" = 'True 0 1' ]"

stop_connector
check "3002 RevokeDownloadSuccess and 3020 RevokeDownloadedRequest (one per request)" bash -c "
  [ $(count_events 3002 "$work/log/operational.jsonl") -ge 1 ] && [ $(count_events 3020 "$work/log/operational.jsonl") -ge 6 ]"
check "3000 RevokeRequestSuccess for the revocations, 3001 RevokeRequestFailure for the refusals (Admin)" bash -c "
  [ $(count_events 3000 "$work/log/admin.jsonl") -ge 2 ] && [ $(count_events 3001 "$work/log/admin.jsonl") -ge 3 ]"
check "3100 RevokeUploadSuccess after the uploads" test "$(count_events 3100 "$work/log/operational.jsonl")" -ge 1
check "the credential's private key never reaches the logs" bash -c "
  ! grep -rqF \"\$(sed -n 2p '$work/cred.key')\" '$work/log' '$work/daemon.out'"
finish
