#!/usr/bin/env bash
# Integration: three CAs of three plugins in one connector — [ca.corp] ca-adcs against the AD CS
# stand-in, [ca.dc] ca-digicert against the DigiCert ONE stand-in, [ca.local] the embedded CA —
# with a PKCS job, a SCEP enrollment (micromdm scepclient) and a revocation through each; the
# host publishes each CA's CRL; `status` shows each CA's health from its probe; and when one CA
# goes down its jobs retry and fail with events while the other CAs keep issuing.
# usage: remote_cas.sh CERTCONNECTOR_BIN PLUGIN_DIR
set -uo pipefail
source "$(dirname "$0")/../interop/lib.sh" remote-cas "$@"
standins="$(cd "$(dirname "$0")/../stand-ins" && pwd)"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/tls.key" -out "$work/tls.crt" \
  -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -days 2 2>/dev/null
printf '%s' 'Enr0ll!pass' >"$work/enroll.pw"
printf '%s' 'M4nage!pass' >"$work/manage.pw"
printf 'remote-cas-%s\n' "$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$work/api.key"
chmod 600 "$work"/*.pw "$work/api.key"
mkdir -p "$work/dc"

pids=()
cleanup() {
  [ -n "${daemon:-}" ] && kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
wait_file() { for _ in $(seq 1 150); do [ -s "$1" ] && return 0; sleep 0.1; done; echo "no $1" >&2; return 1; }

# Both stand-ins with RSA CAs: scepclient encrypts to every certificate GetCACert returns, RSA only.
"$py" "$standins/adcs/adcs.py" --cert "$work/tls.crt" --key "$work/tls.key" --port-file "$work/adcs.port" \
  --ca-dir "$work/adcs-ca" 2>"$work/adcs.log" &
pids+=($!)
"$py" "$standins/digicert/digicert.py" --state "$work/dc" --cert "$work/tls.crt" --key "$work/tls.key" \
  --api-key-file "$work/api.key" --profile prof-instant --ca-key rsa 2>"$work/dc.log" &
dc_pid=$!
pids+=($dc_pid)
wait_file "$work/adcs.port" && wait_file "$work/dc/port" || { cat "$work/adcs.log" "$work/dc.log"; exit 1; }
A=$(cat "$work/adcs.port")
D=$(cat "$work/dc/port")
cat "$work/adcs-ca/issuing.pem" "$work/adcs-ca/root.pem" >"$work/corp-chain.pem"
cp "$work/dc/ca-chain.pem" "$work/dc-chain.pem"

port=$($py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
cat >"$work/c.toml" <<TOML
[host]
listen = "127.0.0.1:$port"
plugin_dir = "$plugins"
state_dir = "state"
log_dir = "log"
ca_health_interval_seconds = 5
[jobs]
concurrency = 4
max_attempts = 3
retry_initial_ms = 200
retry_max_ms = 400
[tenant]
plugin = "local"
scep_challenges = { corp = "c0rp-secret", dc = "d1gi-secret", local = "l0cal-secret" }
[pkcs]
default_ca = "local"
[ca.local]
plugin = "local"
algorithm = "rsa3072"
public_base_url = "$base"
[ca.corp]
plugin = "adcs"
url = "https://127.0.0.1:$A/certsrv"
ca_config = "ca01.corp.test\\\\Stand-in Issuing CA"
ca_file = "$work/tls.crt"
auth = "ntlm"
username = "CORP\\\\svc-enroll"
password_file = "$work/enroll.pw"
timeout_seconds = 5
[ca.corp.revocation]
winrm_url = "https://127.0.0.1:$A/wsman"
username = "CORP\\\\svc-camanager"
password_file = "$work/manage.pw"
auth = "ntlm"
[ca.corp.profiles.default]
template = "User"
[ca.dc]
plugin = "digicert"
url = "https://127.0.0.1:$D"
api_key_file = "$work/api.key"
ca_file = "$work/tls.crt"
connect_timeout_seconds = 2
timeout_seconds = 5
[ca.dc.profiles.default]
profile_id = "prof-instant"
[scep.profiles.corp]
path = "/scep/corp"
ca = "corp"
allow_single_des = true
min_digest = "sha1"
[scep.profiles.dc]
path = "/scep/dc"
ca = "dc"
allow_single_des = true
min_digest = "sha1"
[scep.profiles.local]
path = "/scep/local"
ca = "local"
allow_single_des = true
min_digest = "sha1"
TOML
check "config check accepts three CAs of three plugins" "$bin" config check --config "$work/c.toml"
start_connector "$work/c.toml" || exit 1
trap cleanup EXIT  # start_connector set its own EXIT trap; ours also stops the stand-ins
"$bin" ca export --config "$work/c.toml" --name local >"$work/local-chain.pem"

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/device.key" 2>/dev/null
openssl pkey -in "$work/device.key" -pubout -out "$work/device.pub"
# pkcs NAME CA [--wait]: a PKCS job at CA; the leaf lands in $work/NAME.pem
pkcs() {
  "$bin" submit pkcs --config "$work/c.toml" --subject "CN=$1" --key-type p256 --device-key "$work/device.pub" \
    --ca "$2" --id "$1" --wait --out "$work/$1" >"$work/$1.out" 2>&1 &&
    $py -c "import json,sys; print(json.load(open(sys.argv[1]))['result']['certificate_pem'], end='')" "$work/$1/result.json" >"$work/$1.pem"
}
serial() { openssl x509 -in "$work/$1.pem" -noout -serial | cut -d= -f2; }

for ca in corp dc local; do
  check "PKCS through CA '$ca': issued, and the leaf verifies against that CA's chain" bash -c "
    $(declare -f pkcs); bin='$bin' work='$work' py='$py'
    pkcs pkcs-$ca $ca && openssl verify -CAfile '$work/$ca-chain.pem' '$work/pkcs-$ca.pem'"
done
check "each leaf came from its own CA (three different issuers)" bash -c "
  for ca in corp dc local; do openssl x509 -in '$work/pkcs-'\$ca.pem -noout -issuer; done | sort -u | wc -l | grep -qx 3"

for ca in corp dc local; do
  mkdir -p "$work/scep-$ca"
  (cd "$work/scep-$ca" && timeout 60 scepclient -server-url "$base/scep/$ca" -challenge "$( [ $ca = corp ] && echo c0rp-secret || { [ $ca = dc ] && echo d1gi-secret || echo l0cal-secret; })" \
    -cn "scep-$ca" -private-key key.pem -certificate cert.pem >out.txt 2>&1)
  check "SCEP (micromdm scepclient) through CA '$ca': the certificate verifies against that CA's chain" bash -c "
    grep -q 'server returned a certificate' '$work/scep-$ca/out.txt' || { cat '$work/scep-$ca/out.txt'; exit 1; }
    openssl verify -CAfile '$work/$ca-chain.pem' '$work/scep-$ca/cert.pem'"
done

for ca in corp dc local; do
  s=$(serial "pkcs-$ca")
  expect "revoke through CA '$ca'" "succeeded" \
    "$bin" submit revoke --config "$work/c.toml" --ca "$ca" --serial "$s" --reason keyCompromise --wait
  expect_within 15 "the host publishes CA '$ca''s CRL at /crl/$ca.crl, and it lists the serial" "$s" bash -c "
    curl -sf '$base/crl/$ca.crl' | openssl crl -inform DER -noout -text"
done
check "the host serves each CA's certificate at /ca/<ca>.crt (DER)" bash -c "
  for ca in corp dc local; do
    curl -sf '$base/ca/'\$ca.crt | openssl x509 -inform DER -noout -fingerprint -sha256 >'$work/served' &&
    openssl x509 -in '$work/'\$ca-chain.pem -noout -fingerprint -sha256 >'$work/expected' && cmp -s '$work/served' '$work/expected' || exit 1
  done"

cas_state() {  # cas_state CA: the state `status --json` reports for that CA
  "$bin" status --config "$work/c.toml" --json | $py -c "
import json,sys
for c in json.load(sys.stdin)['cas']:
    if c['name'] == sys.argv[1]: print(c['state'], c.get('health', {}).get('detail', ''))" "$1"
}
for ca in corp dc local; do
  expect_within 15 "status shows CA '$ca' healthy from its probe" "^healthy" cas_state "$ca"
done

# DigiCert goes down: its jobs retry and fail (events), corp and local keep issuing meanwhile.
kill "$dc_pid"
wait "$dc_pid" 2>/dev/null
"$bin" submit pkcs --config "$work/c.toml" --subject "CN=while-down" --key-type p256 --device-key "$work/device.pub" \
  --ca dc --id while-down >/dev/null 2>&1
check "while DigiCert is down, a job at AD CS is issued" bash -c "$(declare -f pkcs); bin='$bin' work='$work' py='$py'; pkcs during-corp corp"
check "and one at the embedded CA too" bash -c "$(declare -f pkcs); bin='$bin' work='$work' py='$py'; pkcs during-local local"
expect_within 30 "the job at the CA that is down fails as unavailable after its retries" '"unavailable"' \
  "$bin" job show while-down --config "$work/c.toml"
check "its attempts logged 1051 (will retry) and the plugin logged 408 (CA unreachable)" bash -c "
  grep '\"id\":1051,' '$work/log/operational.jsonl' | grep -q while-down && grep -q '\"id\":408,' '$work/log/admin.jsonl'"
expect_within 20 "status shows CA 'dc' degraded, naming why" "^degraded" cas_state dc
expect "and CA 'corp' still healthy" "^healthy" cas_state corp
check "the degradation is an event (122) in the Admin log" grep -q '"id":122,' "$work/log/admin.jsonl"

finish
