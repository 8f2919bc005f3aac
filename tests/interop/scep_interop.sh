#!/usr/bin/env bash
# Interop: real SCEP clients from Debian packages enroll against the connector's SCEP server.
#   micromdm scepclient (single DES + SHA-1, POST) and certmonger (getcert: GET, AES-256, SHA-256);
#   wrong challenges and refused ciphers get signed FAILURE CertReps with the right failInfo;
#   issued certificates verify with openssl against GetCACert's chain; the tenant is notified.
# usage: scep_interop.sh CERTCONNECTOR_BIN PLUGIN_DIR
set -uo pipefail
source "$(dirname "$0")/lib.sh" scep "$@"

# micromdm scepclient encrypts to every certificate GetCACert returns and only speaks RSA:
# this CA is RSA throughout. It signs with SHA-1: its profile sets min_digest = "sha1".
cat >"$work/c.toml" <<TOML
[host]
listen = "127.0.0.1:0"
plugin_dir = "$plugins"
state_dir = "state"
log_dir = "log"
[tenant]
plugin = "local"
scep_challenges = { devices = "s3cret-challenge", strict = "strict-challenge", approval = "appr0ve" }
[ca.corp]
plugin = "local"
algorithm = "rsa3072"
[features]
pkcs = false
[scep.profiles.devices]
path = "/scep"
ca = "corp"
allow_single_des = true
min_digest = "sha1"
[scep.profiles.strict]
path = "/scep-strict"
ca = "corp"
[scep.profiles.approval]
path = "/scep-approval"
ca = "corp"
require_approval = true
TOML
start_connector "$work/c.toml" || exit 1
port=$("$bin" status --config "$work/c.toml" --json | "$py" -c 'import json,sys; print(json.load(sys.stdin)["port"])')
url="http://127.0.0.1:$port"

expect "GetCACaps advertises AES, SHA-256, POSTPKIOperation, SCEPStandard, Renewal" "SCEPStandard" \
  bash -c "curl -sf '$url/scep?operation=GetCACaps' | tr '\n' ' ' | grep 'AES' | grep 'SHA-256' | grep 'POSTPKIOperation' | grep 'Renewal'"
check "GetCACert answers a CA+RA PKCS#7 with RA, issuing and root" bash -c "
  curl -sf -D '$work/h' '$url/scep?operation=GetCACert' -o '$work/cacert.p7' &&
  grep -qi 'content-type: application/x-x509-ca-ra-cert' '$work/h' &&
  [ \$(openssl pkcs7 -inform DER -in '$work/cacert.p7' -print_certs | grep -c 'BEGIN CERTIFICATE') = 3 ]"
openssl pkcs7 -inform DER -in "$work/cacert.p7" -print_certs >"$work/all.pem"
awk '/BEGIN/{n++} n==2' "$work/all.pem" >"$work/issuing.pem"
awk '/BEGIN/{n++} n==3' "$work/all.pem" >"$work/root.pem"
check "the RA certificate allows digitalSignature and keyEncipherment" bash -c "
  awk '/BEGIN/{n++} n==1' '$work/all.pem' | openssl x509 -noout -ext keyUsage | grep -q 'Digital Signature, Key Encipherment'"

# micromdm scepclient: single DES + SHA-1 over POST.
mkdir -p "$work/mm" && cd "$work/mm"
expect "scepclient enrolls (DES, SHA-1, POST)" "server returned a certificate" \
  timeout 60 scepclient -server-url "$url/scep" -challenge s3cret-challenge -cn mm-device -private-key key.pem -certificate cert.pem
check "scepclient's certificate verifies against GetCACert's chain" \
  openssl verify -CAfile "$work/root.pem" -untrusted "$work/issuing.pem" "$work/mm/cert.pem"
cp "$work/mm/cert.pem" "$work/mm/first.pem"
expect "renewal: scepclient's RenewalReq, signed by its certificate, needs no challenge" "server returned a certificate" \
  timeout 60 scepclient -server-url "$url/scep" -cn mm-device -private-key key.pem -certificate cert.pem
check "renewal: a new certificate, same subject, verifies" bash -c "
  [ \"\$(openssl x509 -in cert.pem -noout -serial)\" != \"\$(openssl x509 -in first.pem -noout -serial)\" ] &&
  [ \"\$(openssl x509 -in cert.pem -noout -subject)\" = \"\$(openssl x509 -in first.pem -noout -subject)\" ] &&
  openssl verify -CAfile '$work/root.pem' -untrusted '$work/issuing.pem' cert.pem &&
  grep -q 'message type 17 via POST' '$work/log/operational.jsonl' && grep -q 'renewal authorised by certificate' '$work/log/operational.jsonl'"
mkdir -p "$work/mm2" && cd "$work/mm2"
expect "a wrong challenge gets a signed FAILURE with failInfo badRequest" "failInfo: badRequest" \
  timeout 60 scepclient -server-url "$url/scep" -challenge wrong -cn mm-intruder -private-key key.pem -certificate cert.pem
mkdir -p "$work/mm3" && cd "$work/mm3"
expect "single DES on a profile that refuses it gets failInfo badAlg" "failInfo: badAlg" \
  timeout 60 scepclient -server-url "$url/scep-strict" -challenge strict-challenge -cn mm-des -private-key key.pem -certificate cert.pem

# One-time dynamic challenges (certconnector scep challenge), bound to the expected subject.
dyn=$("$bin" scep challenge --config "$work/c.toml" --profile devices --subject "/C=US/O=scep-client/OU=MDM/CN=mm-dyn" --ttl 10m 2>/dev/null)
mkdir -p "$work/dyn1" && cd "$work/dyn1"
expect "a one-time challenge bound to the subject enrolls" "server returned a certificate" \
  timeout 60 scepclient -server-url "$url/scep" -challenge "$dyn" -cn mm-dyn -private-key key.pem -certificate cert.pem
mkdir -p "$work/dyn2" && cd "$work/dyn2"
expect "the same challenge from another device is refused" "failInfo: badRequest" \
  timeout 60 scepclient -server-url "$url/scep" -challenge "$dyn" -cn mm-dyn -private-key key.pem -certificate cert.pem
bound=$("$bin" scep challenge --config "$work/c.toml" --profile devices --subject "CN=someone-else" 2>/dev/null)
mkdir -p "$work/dyn3" && cd "$work/dyn3"
expect "a challenge bound to another subject is refused" "failInfo: badRequest" \
  timeout 60 scepclient -server-url "$url/scep" -challenge "$bound" -cn mm-thief -private-key key.pem -certificate cert.pem
check "the refusals name their reasons in the log" bash -c "
  grep -q 'already used by another request' '$work/log/operational.jsonl' && grep -q 'SubjectNameMismatch' '$work/log/operational.jsonl'"
expect "a challenge without a profile is refused, naming the field" "'profile'" \
  "$bin" scep challenge --config "$work/c.toml" --profile ""
cd "$work"

# certmonger: GET, AES-256 + SHA-256 from the caps.
mkdir -p "$work/cm"/{config,requests,cas,tmp,local}
export CERTMONGER_CONFIG_DIR="$work/cm/config" CERTMONGER_REQUESTS_DIR="$work/cm/requests" CERTMONGER_CAS_DIR="$work/cm/cas"
export CERTMONGER_TMPDIR="$work/cm/tmp" CERTMONGER_LOCAL_CA_DIR="$work/cm/local"
cat "$work/issuing.pem" "$work/root.pem" >"$work/cabundle.pem"
timeout 120 dbus-run-session -- bash -c "
  certmonger -s -n >'$work/cm/daemon.log' 2>&1 &
  for _ in \$(seq 1 50); do getcert list-cas -s >/dev/null 2>&1 && break; sleep 0.1; done
  getcert add-scep-ca -s -c connector -u '$url/scep-strict' -R '$work/cabundle.pem'
  sleep 1
  getcert request -s -c connector -k '$work/cm/key.pem' -f '$work/cm/cert.pem' -L strict-challenge -N CN=cm-device -w
" >"$work/cm/getcert.out" 2>&1
check "certmonger enrolls (GET, AES-256, SHA-256)" \
  openssl verify -CAfile "$work/root.pem" -untrusted "$work/issuing.pem" "$work/cm/cert.pem"

# certmonger through approval: pending (CA_WORKING) until `scep approve`, then issued; `scep deny` rejects.
timeout 180 dbus-run-session -- bash -c "
  certmonger -s -n >'$work/cm/daemon2.log' 2>&1 &
  for _ in \$(seq 1 50); do getcert list-cas -s >/dev/null 2>&1 && break; sleep 0.1; done
  getcert add-scep-ca -s -c appr -u '$url/scep-approval' -R '$work/cabundle.pem' && sleep 1
  getcert request -s -c appr -k '$work/cm/wait.key' -f '$work/cm/wait.pem' -L appr0ve -N CN=cm-waiting -I waiting
  getcert request -s -c appr -k '$work/cm/deny.key' -f '$work/cm/deny.pem' -L appr0ve -N CN=cm-denied -I denied
  for _ in \$(seq 1 100); do [ \$('$bin' scep pending --config '$work/c.toml' | grep -c profile) = 2 ] && break; sleep 0.1; done
  getcert list -s -i waiting | grep status: > '$work/cm/waiting.state'
  '$bin' scep pending --config '$work/c.toml' > '$work/cm/pending.list'
  '$bin' scep approve \$(grep 'CN=cm-waiting' '$work/cm/pending.list' | awk '{print \$1}') --config '$work/c.toml'
  '$bin' scep deny \$(grep 'CN=cm-denied' '$work/cm/pending.list' | awk '{print \$1}') --config '$work/c.toml'
  getcert resubmit -s -i waiting; getcert resubmit -s -i denied
  for _ in \$(seq 1 100); do getcert list -s -i waiting | grep -q MONITORING && getcert list -s -i denied | grep -q REJECTED && break; sleep 0.2; done
  getcert list -s -i waiting | grep status: > '$work/cm/waiting.final'
  getcert list -s -i denied | grep status: > '$work/cm/denied.final'
" >"$work/cm/approval.out" 2>&1
check "approval: certmonger waits (CA_WORKING) while the request is pending" grep -q CA_WORKING "$work/cm/waiting.state"
check "approval: scep pending listed both transactions with their subjects" bash -c "
  grep -q 'subject CN=cm-waiting' '$work/cm/pending.list' && grep -q 'subject CN=cm-denied' '$work/cm/pending.list'"
check "approval: after scep approve, certmonger gets its certificate" bash -c "
  grep -q MONITORING '$work/cm/waiting.final' && openssl verify -CAfile '$work/root.pem' -untrusted '$work/issuing.pem' '$work/cm/wait.pem'"
check "approval: after scep deny, certmonger's request is rejected" grep -q CA_REJECTED "$work/cm/denied.final"

check "certmonger's request came over GET with AES-256-CBC" bash -c "grep -q 'via GET from .* (AES-256-CBC)' '$work/log/operational.jsonl'"
check "scepclient's request came over POST with DES-CBC" bash -c "grep -q 'via POST from .* (DES-CBC)' '$work/log/operational.jsonl'"

# Garbage never crashes or hangs the server.
expect "a garbage POST is answered 400" "400" \
  curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary 'not a pki message' "$url/scep?operation=PKIOperation"
expect "a GET message that is not base64 is answered 400" "400" \
  curl -s -o /dev/null -w '%{http_code}' "$url/scep?operation=PKIOperation&message=%%%"
expect "an unknown operation is answered 400" "400" curl -s -o /dev/null -w '%{http_code}' "$url/scep?operation=Nope"

# Events and tenant notifications (delivered by the notification outbox's thread: wait, bounded).
for _ in $(seq 1 100); do [ "$(grep -c '"id":4000' "$work/log/admin.jsonl")" -ge 5 ] && break; sleep 0.1; done
# Totals are lower bounds: real clients retry on their own schedule (certmonger may resend a denied
# or an approved request), and each case is checked on its own above.
check "4000 ScepRequestSuccess in Admin for each of the five enrollments" bash -c "[ \$(grep -c '\"id\":4000' '$work/log/admin.jsonl') -ge 5 ]"
check "4001 in Admin for each of the five refusals (one of them the denial)" bash -c "[ \$(grep -c '\"id\":4001' '$work/log/admin.jsonl') -ge 5 ]"
check "the tenant recorded a success notification for each enrollment" "$py" -c "
import sqlite3; c = sqlite3.connect('$work/state/plugins/tenant-local/scep.db')
n = c.execute(\"select count(*) from scep_notifications where kind = 'success'\").fetchone()[0]
assert n >= 5, n"
stop_connector
check "4008 ScepNotifySuccess for each notification" test "$(count_events 4008 "$work/log/operational.jsonl")" -ge 5
check "the challenges never reach the logs" bash -c "! grep -rqF -e s3cret-challenge -e strict-challenge -e '$dyn' '$work/log'"

finish
