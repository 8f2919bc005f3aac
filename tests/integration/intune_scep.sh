#!/usr/bin/env bash
# Integration (issue #12): SCEP enrollments validated by Intune — the `intune` tenant plugin against
# the Intune stand-in — with real clients (micromdm scepclient, certmonger), beside the embedded
# tenant in the same daemon:
#   right challenge → certificate, and Intune recorded a success notification whose SHA-1
#   thumbprint, serial and expiry match the certificate; wrong or refused challenge → failInfo, no
#   certificate, no success notification; the CA refusing after validation → a failure
#   notification with an hResult; PKCS jobs from tenant-local and a SCEP profile validated by
#   tenant-local at the same time, each result back at its own tenant.
# usage: intune_scep.sh CERTCONNECTOR_BIN PLUGIN_DIR
set -uo pipefail
source "$(dirname "$0")/../interop/lib.sh" intune-scep "$@"
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
scep_challenges = { home = "h0me-challenge" }
[tenant.intune]
plugin = "intune"
tenant_id = "$T"
client_id = "$C"
client_secret_file = "$work/client.secret"
login_url = "$standin_url"
graph_url = "$standin_url"
ca_file = "$work/tls.crt"
connect_timeout_seconds = 3
timeout_seconds = 10
ca_configuration = "certconnector-tests"
[tenant.intune.revocation]
enabled = false
[ca.corp]
plugin = "local"
algorithm = "rsa3072"
[ca.corp.profiles.default]
validity_days = 30
[ca.corp.profiles.cn-only]
validity_days = 30
subject_attributes = ["CN"]
[pkcs]
default_ca = "corp"
[scep.profiles.intune]
path = "/scep/intune"
ca = "corp"
tenant = "intune"
allow_single_des = true
min_digest = "sha1"
[scep.profiles.intune-cm]
path = "/scep/intune-cm"
ca = "corp"
tenant = "intune"
[scep.profiles.refuse]
path = "/scep/refuse"
ca = "corp"
certificate_profile = "cn-only"
tenant = "intune"
allow_single_des = true
min_digest = "sha1"
[scep.profiles.home]
path = "/scep/home"
ca = "corp"
tenant = "local"
allow_single_des = true
min_digest = "sha1"
TOML
check "config check accepts two tenants (local and intune) and SCEP profiles naming them" \
  "$bin" config check --config "$work/c.toml"
start_connector "$work/c.toml" || exit 1
trap cleanup EXIT
"$bin" ca export --config "$work/c.toml" --name corp >"$work/corp-chain.pem"
# The sign-in step of the product's configuration wizard: each tenant says what works.
expect "tenant check: tenant-intune signs in, discovers both Intune services" "ok    .*ScepRequestValidationFEService" \
  "$bin" tenant check --config "$work/c.toml" --name intune
expect "tenant check covers every tenant without --name" "tenant 'local' \[local\]" "$bin" tenant check --config "$work/c.toml"
check "tenant check of an unknown tenant fails naming it" bash -c "
  ! out=\$('$bin' tenant check --config '$work/c.toml' --name nosuch 2>&1) && grep -q \"no tenant 'nosuch'\" <<<\"\$out\""
ctl POST fault -d '{"match":"/'"$T"'/oauth2","mode":"status","status":503,"count":null}' >/dev/null
ctl POST expire-tokens >/dev/null
check "tenant check fails (exit 1) while Entra ID answers 503, and says so" bash -c "
  ! out=\$('$bin' tenant check --config '$work/c.toml' --name intune 2>&1) && grep -q FAIL <<<\"\$out\""
ctl DELETE fault >/dev/null
thumb() { openssl x509 -in "$1" -noout -fingerprint -sha1 | cut -d= -f2 | tr -d :; }
serial() { openssl x509 -in "$1" -noout -serial | cut -d= -f2; }
success_count() { ctl GET notifications | jq_py 'len([n for n in d if n["kind"]=="success"])'; }

# scepclient's subject is /C=US/O=scep-client/OU=MDM/CN=<cn>; Intune binds each challenge to it.
ctl POST challenges -d '{"challenge":"intune-ch-1","subject":"/C=US/O=scep-client/OU=MDM/CN=mm-intune"}' >/dev/null
ctl POST challenges -d '{"challenge":"intune-ch-expired","code":"ChallengeExpired"}' >/dev/null
ctl POST challenges -d '{"challenge":"intune-ch-other","subject":"CN=someone-else"}' >/dev/null
ctl POST challenges -d '{"challenge":"intune-ch-refuse","subject":"/C=US/O=scep-client/OU=MDM/CN=mm-refused"}' >/dev/null
ctl POST challenges -d '{"challenge":"intune-ch-cm","subject":"CN=cm-intune"}' >/dev/null

scep_enroll "$work/mm1" "$base/scep/intune" intune-ch-1 mm-intune
check "scepclient: the challenge Intune validates gets a certificate that verifies against the CA" bash -c "
  grep -q 'server returned a certificate' '$work/mm1/out.txt' || { cat '$work/mm1/out.txt'; exit 1; }
  openssl verify -CAfile '$work/corp-chain.pem' '$work/mm1/cert.pem'"
s1=$(serial "$work/mm1/cert.pem")
check "Intune recorded a success notification for it (the host's outbox delivered it)" \
  wait_until 20 bash -c "$(declare -f ctl notification_for); py='$py' work='$work' standin_url='$standin_url'; [ -n \"\$(notification_for success $s1)\" ]"
n1=$(notification_for success "$s1")
check "its certificateThumbprint is the certificate's SHA-1 thumbprint (hex)" \
  test "$(jq_py 'd["certificateThumbprint"].upper()' <<<"$n1")" = "$(thumb "$work/mm1/cert.pem")"
check "its certificateSerialNumber is the certificate's serial" \
  "$py" -c "import sys; assert int(sys.argv[1],16)==int(sys.argv[2],16), sys.argv[1:]" "$(jq_py 'd["certificateSerialNumber"]' <<<"$n1")" "$s1"
check "its certificateExpirationDateUtc is the certificate's notAfter (ISO 8601, UTC)" "$py" -c "
import datetime,sys,subprocess
na=subprocess.run(['openssl','x509','-in',sys.argv[2],'-noout','-enddate'],capture_output=True,text=True).stdout.split('=',1)[1].strip()
want=datetime.datetime.strptime(na,'%b %d %H:%M:%S %Y GMT')
got=datetime.datetime.strptime(sys.argv[1][:19],'%Y-%m-%dT%H:%M:%S')
assert sys.argv[1].endswith('Z') and got==want, (sys.argv[1], na)" "$(jq_py 'd["certificateExpirationDateUtc"]' <<<"$n1")" "$work/mm1/cert.pem"
check "its caConfiguration is the configured one" test "$(jq_py 'd.get("caConfiguration")' <<<"$n1")" = certconnector-tests
check "its issuingCertificateAuthority is the certificate's issuer DN" "$py" -c "
import re,subprocess,sys
dn=subprocess.run(['openssl','x509','-in',sys.argv[2],'-noout','-issuer','-nameopt','RFC2253'],capture_output=True,text=True).stdout.split('=',1)[1].strip()
norm=lambda t: sorted(x.strip().replace(' = ','=') for x in re.split(r'(?<!\\\\),', t.strip().lstrip('/').replace('/',',')) if x.strip())
assert norm(sys.argv[1])==norm(dn), (sys.argv[1], dn)" "$(jq_py 'd.get("issuingCertificateAuthority")' <<<"$n1")" "$work/mm1/cert.pem"
check "it names a transaction Intune validated (Success) and carries its CSR (base64 DER)" bash -c "
  curl -s --cacert '$work/tls.crt' '$standin_url/_control/validations' | grep -qF '{\"transactionId\": \"$(jq_py 'd.get("transactionId") or "-"' <<<"$n1")\", \"code\": \"Success\"' &&
  printf '%s' '$(jq_py 'd.get("certificateRequest") or ""' <<<"$n1")' | openssl base64 -d -A | openssl req -inform DER -noout -subject | grep -q mm-intune"
check "Intune's SCEP calls carried api-version 2018-02-20 and a fresh client-request-id each" bash -c "
  ctl() { curl -s --cacert '$work/tls.crt' '$standin_url/_control/'\$1; }
  ctl calls | '$py' -c '
import json,sys
calls=[c for c in json.load(sys.stdin) if c[\"kind\"] in (\"validateRequest\",\"successNotification\")]
assert calls and all(c[\"api-version\"]==\"2018-02-20\" and c[\"client-request-id\"] and c[\"status\"]==200 for c in calls), calls
assert len(set(c[\"client-request-id\"] for c in calls))==len(calls), \"client-request-id reused\"'"
check "the plugin signed in with its client secret and found the service through Graph discovery" bash -c "
  curl -s --cacert '$work/tls.crt' '$standin_url/_control/calls' | '$py' -c '
import json,sys
c=json.load(sys.stdin)
assert any(x[\"kind\"]==\"token\" and x[\"authorization\"]==\"secret\" for x in c), c
assert any(x[\"kind\"]==\"endpoints\" and x[\"status\"]==200 for x in c), c'"

before=$(success_count)
scep_enroll "$work/mm2" "$base/scep/intune" not-an-intune-challenge mm-intune
expect "a challenge Intune does not know: FAILURE with failInfo badRequest" "failInfo: badRequest" cat "$work/mm2/out.txt"
check "and no certificate" test ! -s "$work/mm2/cert.pem"
scep_enroll "$work/mm3" "$base/scep/intune" intune-ch-expired mm-intune
expect "a challenge Intune answers ChallengeExpired for: failInfo badTime (the scep feature's mapping)" "failInfo: badTime" cat "$work/mm3/out.txt"
scep_enroll "$work/mm4" "$base/scep/intune" intune-ch-other mm-intune
expect "a challenge bound to another subject (SubjectNameMismatch): failInfo badRequest" "failInfo: badRequest" cat "$work/mm4/out.txt"
check "no certificate for any of them" bash -c "! test -s '$work/mm3/cert.pem' && ! test -s '$work/mm4/cert.pem'"
check "the daemon's log names Intune's codes for the refusals" bash -c "
  grep -q ChallengeDecryptionError '$work/log/operational.jsonl' && grep -q ChallengeExpired '$work/log/operational.jsonl' &&
  grep -q SubjectNameMismatch '$work/log/operational.jsonl'"
check "4005 ScepVerifyFailure for each refusal" bash -c "[ \$(grep -c '\"id\":4005,' '$work/log/operational.jsonl') -ge 3 ]"
sleep 2
check "no success notification for a refused request" test "$(success_count)" = "$before"

# The CA refuses after Intune validated: profile cn-only takes CN only, scepclient sends C, O, OU too.
scep_enroll "$work/mm5" "$base/scep/refuse" intune-ch-refuse mm-refused
expect "the CA refusing the subject after validation: a FAILURE reaches the device" "failInfo" cat "$work/mm5/out.txt"
check "and no certificate" test ! -s "$work/mm5/cert.pem"
failure_json() { ctl GET notifications | jq_py '[n["notification"] for n in d if n["kind"]=="failure"]'; }
check "Intune recorded a failure notification with an integer hResult and an errorDescription (<= 255)" \
  wait_until 20 bash -c "$(declare -f ctl jq_py failure_json); py='$py' work='$work' standin_url='$standin_url'
  failure_json | '$py' -c '
import json,sys
f=json.load(sys.stdin)
assert len(f)==1 and isinstance(f[0][\"hResult\"],int) and f[0][\"hResult\"]!=0, f
assert 0 < len(f[0][\"errorDescription\"]) <= 255 and f[0][\"transactionId\"] and f[0][\"certificateRequest\"], f'"
check "its transactionId is one Intune validated (Success) before the CA refused" bash -c "
  curl -s --cacert '$work/tls.crt' '$standin_url/_control/notifications' >'$work/n.json'
  curl -s --cacert '$work/tls.crt' '$standin_url/_control/validations' >'$work/v.json'
  '$py' -c '
import json
n=[x[\"notification\"][\"transactionId\"] for x in json.load(open(\"$work/n.json\")) if x[\"kind\"]==\"failure\"]
v={x[\"transactionId\"]:x[\"code\"] for x in json.load(open(\"$work/v.json\"))}
assert n and v.get(n[0])==\"Success\", (n, v)'"

# certmonger (GET, AES-256, SHA-256) through a profile Intune validates.
mkdir -p "$work/cm"/{config,requests,cas,tmp,local}
export CERTMONGER_CONFIG_DIR="$work/cm/config" CERTMONGER_REQUESTS_DIR="$work/cm/requests" CERTMONGER_CAS_DIR="$work/cm/cas"
export CERTMONGER_TMPDIR="$work/cm/tmp" CERTMONGER_LOCAL_CA_DIR="$work/cm/local"
timeout 120 dbus-run-session -- bash -c "
  certmonger -s -n >'$work/cm/daemon.log' 2>&1 &
  for _ in \$(seq 1 50); do getcert list-cas -s >/dev/null 2>&1 && break; sleep 0.1; done
  getcert add-scep-ca -s -c intune -u '$base/scep/intune-cm' -R '$work/corp-chain.pem'
  sleep 1
  getcert request -s -c intune -k '$work/cm/key.pem' -f '$work/cm/cert.pem' -L intune-ch-cm -N CN=cm-intune -w
" >"$work/cm/getcert.out" 2>&1
check "certmonger enrolls through the profile Intune validates (GET, AES-256, SHA-256)" \
  openssl verify -CAfile "$work/corp-chain.pem" "$work/cm/cert.pem"
if [ -s "$work/cm/cert.pem" ]; then
  scm=$(serial "$work/cm/cert.pem")
  check "Intune recorded certmonger's success notification with its thumbprint" wait_until 20 bash -c "
    $(declare -f ctl notification_for); py='$py' work='$work' standin_url='$standin_url'
    notification_for success $scm | grep -qi '\"certificateThumbprint\": \"$(thumb "$work/cm/cert.pem")\"'"
fi

# Two tenants in one daemon: a PKCS job from tenant-local, a SCEP profile validated by tenant-local.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/device.key" 2>/dev/null
openssl pkey -in "$work/device.key" -pubout -out "$work/device.pub"
calls_before=$(ctl GET calls | jq_py 'len(d)')
check "a PKCS job submitted to tenant-local is issued (while tenant-intune serves SCEP)" bash -c "
  '$bin' submit pkcs --config '$work/c.toml' --subject CN=pkcs-local --key-type p256 --device-key '$work/device.pub' \
    --id pkcs-local-1 --wait --out '$work/pkcs1' >'$work/pkcs1.out' 2>&1 &&
  grep -q succeeded '$work/pkcs1/result.json'"
expect "its result is at tenant-local (job show)" "succeeded" "$bin" job show pkcs-local-1 --config "$work/c.toml"
scep_enroll "$work/home" "$base/scep/home" h0me-challenge mm-home
check "a SCEP profile validated by tenant-local enrolls in the same daemon" grep -q 'server returned a certificate' "$work/home/out.txt"
check "tenant-local recorded that enrollment's notification" wait_until 20 "$py" -c "
import sqlite3; c = sqlite3.connect('file:$work/state/plugins/tenant-local/scep.db?mode=ro', uri=True)
assert c.execute(\"select count(*) from scep_notifications where kind = 'success'\").fetchone()[0] >= 1"
if [ -s "$work/home/cert.pem" ]; then
  check "and Intune never heard of it nor of the PKCS job" bash -c "
    [ -z \"\$($(declare -f ctl notification_for); py='$py' work='$work' standin_url='$standin_url'; notification_for success $(serial "$work/home/cert.pem"))\" ] &&
    curl -s --cacert '$work/tls.crt' '$standin_url/_control/calls' | '$py' -c '
import json,sys
c=json.load(sys.stdin)[$calls_before:]
assert not [x for x in c if x[\"kind\"] in (\"validateRequest\",\"successNotification\",\"failureNotification\")], c'"
fi
check "tenant-local has no notification of Intune's enrollments" "$py" -c "
import sqlite3; c = sqlite3.connect('file:$work/state/plugins/tenant-local/scep.db?mode=ro', uri=True)
rows = [r[0] for r in c.execute('select * from scep_notifications')]
assert not any('mm-intune' in str(r) or 'cm-intune' in str(r) for r in rows), rows"

stop_connector
check "4008 ScepNotifySuccess for the notifications delivered" test "$(count_events 4008 "$work/log/operational.jsonl")" -ge 3
check "the client secret and the challenges never reach the daemon's logs" bash -c "
  ! grep -rqF -e \"\$(head -1 '$work/client.secret')\" -e intune-ch-1 -e intune-ch-cm -e h0me-challenge '$work/log' '$work/daemon.out'"
finish
