#!/usr/bin/env bash
# Integration: the real daemon with [ca.dc] plugin = "digicert" against the DigiCert ONE stand-in
# (tests/stand-ins/digicert) over TLS. PKCS jobs through the CLI: issued (subject and SANs reach
# DigiCert; the leaf verifies with openssl against the stand-in's CA), held for approval →
# approved / denied, a bad API key, 429 with Retry-After and 5xx (retried), CA down, malformed
# and oversized answers; revoke (the stand-in's CRL lists it); config check errors.
# The plugin's pickup path is also driven through its C ABI by digicert-abi-driver (a minimal
# host), call by call, as are the lookup, CRL and health queries the daemon asks in the
# background.
# usage: digicert_integration.sh CERTCONNECTOR_BIN PLUGIN_DIR ABI_DRIVER
set -uo pipefail
source "$(dirname "$0")/../interop/lib.sh" digicert "$@"
driver=$(realpath "$3")
standin="$(cd "$(dirname "$0")/../stand-ins/digicert" && pwd)/digicert.py"

# ---- the stand-in: TLS certificate made here, API key in a file --------------------------------
mkdir -p "$work/dc"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/dc/tls.key" -out "$work/dc/tls.pem" \
  -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" -days 2 2>/dev/null
api_key="dc-test-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s\n' "$api_key" >"$work/api.key"
printf 'not-the-key\n' >"$work/wrong.key"
chmod 600 "$work/api.key" "$work/wrong.key"
# A client CA and a client certificate, for the clientauth path (no API key)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/dc/client-ca.key" -out "$work/dc/client-ca.pem" \
  -subj "/CN=Client CA" -days 2 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/client.key" -subj "/CN=certconnector RA" 2>/dev/null |
  openssl x509 -req -CA "$work/dc/client-ca.pem" -CAkey "$work/dc/client-ca.key" -CAcreateserial -days 2 \
    -extfile <(printf 'extendedKeyUsage=clientAuth\n') -out "$work/client.pem" 2>/dev/null
chmod 600 "$work/client.key"
$py "$standin" --state "$work/dc" --cert "$work/dc/tls.pem" --key "$work/dc/tls.key" --api-key-file "$work/api.key" \
  --client-ca "$work/dc/client-ca.pem" --profile prof-instant --profile prof-manual:manual 2>"$work/standin.log" &
standin_pid=$!
for _ in $(seq 1 100); do [ -s "$work/dc/port" ] && break; sleep 0.1; done
dcport=$(cat "$work/dc/port")
dc="https://127.0.0.1:$dcport"
down_port=$($py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ctl() { curl -sf --cacert "$work/dc/tls.pem" "$@"; }                       # ctl PATH-AND-OPTIONS
fault() { ctl -X POST -d "$1" "$dc/_standin/fault" >/dev/null; }            # fault JSON
stat() { ctl "$dc/_standin/stats" | $py -c "import json,sys; print(json.load(sys.stdin).get(sys.argv[1],0))" "$1"; }
last() { ctl "$dc/_standin/last-request" | $py -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }

dc_section() {  # dc_section NAME URL KEYFILE
  cat <<TOML
[ca.$1]
plugin = "digicert"
url = "$2"
api_key_file = "$3"
ca_file = "$work/dc/tls.pem"
connect_timeout_seconds = 2
timeout_seconds = 5
max_response_bytes = 1048576
[ca.$1.profiles.default]
profile_id = "prof-instant"
validity_days = 30
[ca.$1.profiles.email]
profile_id = "prof-instant"
seat_field = "email"
[ca.$1.profiles.manual]
profile_id = "prof-manual"
TOML
}
cat >"$work/c.toml" <<TOML
[host]
listen = "127.0.0.1:0"
plugin_dir = "$plugins"
state_dir = "state"
log_dir = "log"
[jobs]
concurrency = 2
max_attempts = 4
retry_initial_ms = 200
retry_max_ms = 1000
lease_seconds = 10                # a job held for approval is asked again when its lease returns it
[tenant]
plugin = "local"
[pkcs]
default_ca = "dc"
$(dc_section dc "$dc/" "$work/api.key")
$(dc_section badkey "$dc" "$work/wrong.key")
$(dc_section down "https://127.0.0.1:$down_port" "$work/api.key")
[ca.certauth]
plugin = "digicert"
url = "$dc"
client_certificate = "$work/client.pem"
client_key = "$work/client.key"
ca_file = "$work/dc/tls.pem"
[ca.certauth.profiles.default]
profile_id = "prof-instant"
TOML
start_connector "$work/c.toml" || { kill $standin_pid; exit 1; }
trap '[ -n "${daemon:-}" ] && kill -TERM $daemon 2>/dev/null && wait $daemon 2>/dev/null; kill $standin_pid 2>/dev/null; rm -rf "$work"' EXIT
cc() { "$bin" "$@" --config "$work/c.toml"; }
ops="$work/log/operational.jsonl"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/device.key" 2>/dev/null
openssl pkey -in "$work/device.key" -pubout -out "$work/device.pub"
leaf() { $py -c "import json,sys; print(json.load(open(sys.argv[1]))['result']['certificate_pem'], end='')" "$work/$1/result.json" >"$work/$1.pem"; }
# events_of ID TEXT: events with that id whose line contains TEXT
events_of() { grep "\"id\":$1," "$ops" | grep -c -- "$2"; }
# Admin-channel events (408 CaUnreachable) go to admin.jsonl
admin="$work/log/admin.jsonl"

# ---- issued ----------------------------------------------------------------------------------
expect "a PKCS job through DigiCert ONE succeeds" "succeeded: serial" \
  cc submit pkcs --subject "CN=Alice Example,O=Example Corp,OU=Sales,OU=EMEA" --san email:alice@example.com \
  --san upn:alice@corp.example --san dns:alice.example.com --key-type p256 --device-key "$work/device.pub" \
  --id alice-1 --wait --out "$work/alice"
leaf alice
check "the leaf verifies with openssl against the stand-in's CA" openssl verify -CAfile "$work/dc/ca-chain.pem" "$work/alice.pem"
expect "the profile id reached DigiCert" "prof-instant" last "d['profile']['id']"
expect "the seat id is the CSR's common name (seat_field default)" "^Alice Example$" last "d['seat']['seat_id']"
expect "subject attributes reached DigiCert" "Alice Example|Example Corp|\['Sales', 'EMEA'\]" \
  last "'|'.join(map(str,[d['attributes']['subject'][k] for k in ('common_name','organization_name','organization_units')]))"
expect "email, DNS and UPN SANs reached DigiCert" "\['alice@example.com'\] \['alice.example.com'\] \['alice@corp.example'\]" \
  last "' '.join(str(d['attributes']['extensions']['san'][k]) for k in ('emails','dns_names','user_principal_names'))"
expect "validity_days went as {unit: days, duration: 30}" "days 30" last "d['validity']['unit']+' '+str(d['validity']['duration'])"
expect "delivery_format x509, the CA chain asked for" "x509 True" last "d['delivery_format']+' '+str(d['include_ca_chain'])"
expect "the certificate carries the SANs DigiCert was asked for" "othername: UPN::alice@corp.example" \
  openssl x509 -in "$work/alice.pem" -noout -ext subjectAltName
check "the PKCS#12 chain has the issuing CA first (result chain from ca_chain)" bash -c "
  openssl x509 -in '$work/alice.pem' -noout -issuer -nameopt RFC2253 | grep -q 'Stand-in DigiCert Issuing CA'"
expect "event 1032 (PkcsDigiCertRequest) names the job" "alice-1" grep '"id":1032,' "$ops"
expect "event 405 (issued) carries the serial" "$(openssl x509 -in "$work/alice.pem" -noout -serial | cut -d= -f2 | sed "s/^0*//")" grep '"id":405,' "$ops"
expect "one job, one enrollment at DigiCert" "^1$" stat issue
check "a second job with the email profile" cc submit pkcs --subject "CN=Bob" --san email:bob@example.com \
  --device-key "$work/device.pub" --profile email --wait
expect "seat_field = email: the seat is the email SAN" "^bob@example.com$" last "d['seat']['seat_id']"
expect "seat_field = email without an email in the CSR: a clear error" "no email address to use as the DigiCert seat id" \
  cc submit pkcs --subject "CN=Carol" --device-key "$work/device.pub" --profile email --wait
expect "an unknown profile names the configured ones" "profiles: default, email, manual" \
  cc submit pkcs --subject "CN=Dave" --device-key "$work/device.pub" --profile nosuch --wait

# ---- held for approval → approved, → denied -------------------------------------------------------
# pending_job ID: submits a job to the manual-approval profile in the background (output in
# $work/ID.out) and prints DigiCert's request id once the stand-in holds it.
pending_job() {
  local before; before=$(ctl "$dc/_standin/pending")
  cc submit pkcs --subject "CN=$1" --device-key "$work/device.pub" --profile manual --id "$1" --wait --timeout 60 \
    --out "$work/$1" >"$work/$1.out" 2>&1 &
  echo $! >"$work/$1.pid"
  for _ in $(seq 1 100); do
    $py -c "import json,sys; new=set(json.loads(sys.argv[2]))-set(json.loads(sys.argv[1])); print(*new) if new else sys.exit(1)" \
      "$before" "$(ctl "$dc/_standin/pending")" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
# wait_job ID: until that background submit has ended (it is not a child of this shell).
wait_job() { local pid; pid=$(cat "$work/$1.pid"); for _ in $(seq 1 700); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done; }
rid=$(pending_job approve-me)
check "the manual-approval profile holds the request at DigiCert" test -n "$rid"
expect_within 10 "event 406 (pending) names DigiCert's request id" "$rid" grep '"id":406,' "$ops"
ctl -X POST "$dc/_standin/approve/$rid" >/dev/null
wait_job approve-me
expect "approved: the job, asked again with the same request id, succeeds" "succeeded" cat "$work/approve-me.out"
leaf approve-me
check "approved: the collected certificate verifies" openssl verify -CAfile "$work/dc/ca-chain.pem" "$work/approve-me.pem"
expect "approved: collected through certificate-pickup, not a second enrollment" "^[1-9]" stat pickup
expect "event 405 names DigiCert's request id" "$rid" grep '"id":405,' "$ops"
expect "the host parked the job while it waited (event 310)" "approve-me" grep '"id":310,' "$ops"
rid=$(pending_job deny-me)
check "a second held request" test -n "$rid"
ctl -X POST -d '{"reason":"not an employee"}' "$dc/_standin/deny/$rid" >/dev/null
wait_job deny-me
expect "denied: the job fails as denied with DigiCert's reason" '"code":"denied".*not an employee' cat "$work/deny-me.out"
expect "event 407 (denied) names DigiCert's request id" "$rid" grep '"id":407,' "$ops"

# ---- the same through the plugin's C ABI: a second issue with the same request id picks up ----------
# section JSON: what the host hands the plugin for [ca.abi] (without `plugin`)
section() {
  $py -c "import json,sys; print(json.dumps({'url': sys.argv[1], 'api_key_file': sys.argv[2], 'ca_file': sys.argv[3],
    'timeout_seconds': 5, 'profiles': {'manual': {'profile_id': 'prof-manual'}, 'default': {'profile_id': 'prof-instant'}}}))" \
    "$dc" "${1:-$work/api.key}" "$work/dc/tls.pem"
}
issue_json() {  # issue_json REQUEST_ID PROFILE CN
  openssl req -new -key "$work/device.key" -subj "/CN=$3" -addext "subjectAltName=email:$3@example.com" 2>/dev/null |
    $py -c "import json,sys; print(json.dumps({'request_id': sys.argv[1], 'profile': sys.argv[2], 'csr_pem': sys.stdin.read(), 'requester': 'pkcs'}))" "$1" "$2"
}
mkdir -p "$work/abi"
abi() { "$driver" "$plugins/ca-digicert.so" "$work/abi" abi "$(section)" "$@" 2>&1; }
issues_before=$(stat issue)
out=$(abi issue "$(issue_json abi-approve manual Pat)")
expect "ABI: a manual-approval profile answers pending with DigiCert's request id" "error pending pending approval at CA 'abi' (DigiCert ONE request id" echo "$out"
rid=$(sed -n "s/.*DigiCert ONE request id \([^)]*\)).*/\1/p" <<<"$out")
pickups_before=$(stat pickup)
expect "ABI: the same request id again, still undecided: pending again" "error pending" abi issue "$(issue_json abi-approve manual Pat)"
check "... polled with certificate-pickup, not a second enrollment" \
  test "$(stat pickup) $(stat issue)" = "$((pickups_before + 1)) $((issues_before + 1))"
ctl -X POST "$dc/_standin/approve/$rid" >/dev/null
out=$(abi issue "$(issue_json abi-approve manual Pat)" issue "$(issue_json abi-approve manual Pat)")
expect "ABI: approved: the same request id collects the certificate" '"already_issued":false' head -1 <<<"$out"
expect "... and once more: the stored certificate, already_issued" '"already_issued":true' tail -1 <<<"$out"
head -1 <<<"$out" | cut -c4- | $py -c 'import json,sys; a=json.load(sys.stdin)
open(sys.argv[1],"w").write(a["certificate_pem"]); open(sys.argv[2],"w").write(a["chain_pem"])' "$work/abi/pat.pem" "$work/abi/chain.pem"
check "... which verifies against the stand-in's CA" openssl verify -CAfile "$work/dc/ca-chain.pem" "$work/abi/pat.pem"
expect "... with the chain from ca_chain, issuing CA first" "Stand-in DigiCert Issuing CA" openssl x509 -in "$work/abi/chain.pem" -noout -subject
expect "... and DigiCert saw one enrollment for it" "^$((issues_before + 1))$" stat issue
expect "ABI: events 406 then 405 name DigiCert's request id" "406 405" bash -c "
  grep -o '\"id\":40[5-7]' '$work/abi/events.jsonl' | cut -d: -f2 | uniq | head -2 | tr '\n' ' ' | sed 's/ \$//'"
out=$(abi issue "$(issue_json abi-deny manual Quinn)")
rid=$(sed -n "s/.*DigiCert ONE request id \([^)]*\)).*/\1/p" <<<"$out")
ctl -X POST -d '{"reason":"not an employee"}' "$dc/_standin/deny/$rid" >/dev/null
out=$(abi issue "$(issue_json abi-deny manual Quinn)" issue "$(issue_json abi-deny manual Quinn)")
expect "ABI: denied: DigiCert's reason, as denied" "error denied .*rejected request $rid: not an employee" head -1 <<<"$out"
expect "... and again from the record" "error denied .*not an employee" tail -1 <<<"$out"
expect "... event 407" "not an employee" grep '"id":407,' "$work/abi/events.jsonl"
pat=$(openssl x509 -in "$work/abi/pat.pem" -noout -serial | cut -d= -f2)
expect "ABI: lookup by serial: valid" '"status":"valid"' abi query "{\"op\":\"certificate\",\"serial\":\"$pat\"}"
expect "ABI: health: a real authenticated call" '"healthy":true' abi query '{"op":"health"}'
expect "ABI: health with a bad key: unhealthy, HTTP 401" '"healthy":false.*401' \
  "$driver" "$plugins/ca-digicert.so" "$work/abi" abi "$(section "$work/wrong.key")" query '{"op":"health"}'
expect "ABI: an unknown query op is not supported" "error not_supported" abi query '{"op":"ocsp"}'
expect "ABI: revoke (certificateHold → certificate_hold)" '"status":"revoked"' \
  abi revoke "{\"serial\":\"$pat\",\"reason\":\"certificateHold\",\"request_id\":\"r1\"}"
expect "ABI: lookup after revoke: revoked, certificateHold" '"revocation_reason":"certificateHold"' \
  abi query "{\"op\":\"certificate\",\"serial\":\"$pat\"}"
expect "ABI: the CRL from the CDP of the issued certificates lists it" "$pat" bash -c "
  '$driver' '$plugins/ca-digicert.so' '$work/abi' abi '$(section)' query '{\"op\":\"crl\"}' |
    $py -c 'import json,sys,base64; sys.stdout.buffer.write(base64.b64decode(json.loads(sys.stdin.read()[3:])[\"crl_der\"]))' |
    openssl crl -inform DER -noout -text"
expect "ABI: the root CRL is not served as if it were the issuing CA's" "error not_found" abi query '{"op":"crl","level":"root"}'
expect "ABI: an unknown reason is refused" "error invalid_argument unknown revocation reason" \
  abi revoke "{\"serial\":\"$pat\",\"reason\":\"sometimes\"}"

# ---- a client certificate instead of an API key -----------------------------------------------------
auth_before=$(stat auth:client_certificate)
expect "a client certificate authenticates instead of an API key" "succeeded" \
  cc submit pkcs --subject "CN=Mallory Cert" --device-key "$work/device.pub" --ca certauth --wait
expect "... DigiCert saw a client-certificate call, no API key" "^$((auth_before + 1))$" stat auth:client_certificate

# ---- bad credentials: denied at once, never retried --------------------------------------------
expect "a bad API key fails clearly, naming the key file" "refused the API key in $work/wrong.key" \
  cc submit pkcs --subject "CN=Eve" --device-key "$work/device.pub" --ca badkey --id badkey-1 --wait
expect "... as denied, after one attempt (not retried)" '"attempts":1' cc job show badkey-1
check "the API key appears in no log or message" bash -c "! grep -rqF -- '$api_key' '$work/log' '$work/daemon.out' '$work/state' 2>/dev/null"

# ---- throttled and failing: retried ----------------------------------------------------------------
fault '{"mode":"429","count":2,"retry_after":1}'
expect "429 twice: the job is retried and succeeds" "succeeded" \
  cc submit pkcs --subject "CN=Frank" --device-key "$work/device.pub" --id throttled-1 --wait
expect "DigiCert saw the two 429s" "^2$" stat "fault:429"
expect "the retry (event 1051) says DigiCert's Retry-After" "retry after 1 s" grep '"id":1051,.*throttled-1' "$ops"
fault '{"mode":"503","count":2}'
expect "503 twice: the job is retried and succeeds" "succeeded" \
  cc submit pkcs --subject "CN=Grace" --device-key "$work/device.pub" --id failing-1 --wait
expect "event 408 (CA unreachable) for the 503" "HTTP 503" grep '"id":408,' "$admin"
expect "... and 1051 for each failed attempt of the job" "^2$" events_of 1051 failing-1

fault '{"mode":"hang","count":1,"seconds":8}'
expect "an answer slower than timeout_seconds: retried, then succeeds" "succeeded" \
  cc submit pkcs --subject "CN=Slow" --device-key "$work/device.pub" --id slow-1 --wait
expect "... after one failed attempt (1051) and a 408 for it" "^1 1$" bash -c "
  echo \$(grep '\"id\":1051,' '$ops' | grep -c slow-1) \$(grep '\"id\":408,' '$admin' | grep -c slow-1)"
fault '{"mode":"none"}'

# ---- CA down, malformed and oversized answers ------------------------------------------------------
expect "CA down: the job fails as unavailable after its retries" '"code":"unavailable"' \
  cc submit pkcs --subject "CN=Heidi" --device-key "$work/device.pub" --ca down --id down-1 --wait
expect "... with event 408 naming the CA" "CA 'down' (DigiCert ONE at 127.0.0.1:$down_port)" grep '"id":408,' "$admin"
expect "... after 4 runs of the job (3 retries, event 1051 each)" "^3$" events_of 1051 down-1
fault '{"mode":"malformed","count":-1}'
expect "a malformed answer: a clear error saying what was expected" "not the expected JSON object" \
  cc submit pkcs --subject "CN=Ivan" --device-key "$work/device.pub" --id malformed-1 --wait
fault '{"mode":"oversized","count":-1}'
out=$(cc submit pkcs --subject "CN=Judy" --device-key "$work/device.pub" --id oversized-1 --wait 2>&1)
expect "an oversized answer (8 MiB > max_response_bytes): the job fails as unavailable" '"code":"unavailable"' echo "$out"
expect "... and event 408 says so" "oversized-1" grep '"id":408,' "$admin"
fault '{"mode":"none"}'

expect "ca export prints the chain DigiCert returned (issuing CA first)" "Stand-in DigiCert Issuing CA" bash -c "
  '$bin' ca export --config '$work/c.toml' --name dc | openssl x509 -noout -subject"

# ---- revoke --------------------------------------------------------------------------------------------
serial=$(openssl x509 -in "$work/alice.pem" -noout -serial | cut -d= -f2 | sed 's/^0*//')  # openssl pads to whole bytes
expect "revoke through DigiCert ONE" "succeeded: serial $serial" \
  cc submit revoke --ca dc --serial "$serial" --reason keyCompromise --wait
expect "event 3032 (RevokeDigicertRequest)" "key_compromise" grep '"id":3032,' "$ops"
expect "the stand-in's CRL (the CDP of the certificate) lists it with the reason" "Key Compromise" bash -c "
  curl -sf --cacert '$work/dc/tls.pem' '$dc/crl/issuing.crl' | openssl crl -inform DER -noout -text | grep -A4 '$serial'"
check "openssl verify -crl_check says revoked" bash -c "
  curl -sf --cacert '$work/dc/tls.pem' '$dc/crl/issuing.crl' | openssl crl -inform DER -out '$work/crl.pem' &&
  cat '$work/dc/ca-chain.pem' '$work/crl.pem' >'$work/chain+crl.pem' &&
  openssl verify -crl_check -CAfile '$work/chain+crl.pem' '$work/alice.pem' 2>&1 | grep -q 'certificate revoked'"
expect "revoking again: already revoked, the first reason stands" "already revoked (keyCompromise" \
  cc submit revoke --ca dc --serial "$serial" --reason superseded --wait
expect "an unknown serial: not found / 4004" '"error_code":4004' cc submit revoke --ca dc --serial 0DEADBEEF --wait

# ---- configuration errors --------------------------------------------------------------------------
bad_config() {  # bad_config SECTION-LINES: a configuration with that [ca.x] section
  printf '[host]\nlisten = "127.0.0.1:0"\nplugin_dir = "%s"\nstate_dir = "s2"\nlog_dir = "l2"\n[tenant]\nplugin = "local"\n%b\n' \
    "$plugins" "$1" >"$work/bad.toml"
  "$bin" config check --config "$work/bad.toml" 2>&1
}
expect "config check: a profile without profile_id" "profile_id" \
  bad_config "[ca.x]\nplugin = \"digicert\"\nurl = \"$dc\"\napi_key_file = \"$work/api.key\"\n[ca.x.profiles.default]\nvalidity_days = 5"
expect "config check: a missing url" "url" \
  bad_config "[ca.x]\nplugin = \"digicert\"\napi_key_file = \"$work/api.key\"\n[ca.x.profiles.default]\nprofile_id = \"p\""
expect "config check: an unknown seat_field" "seat_field" \
  bad_config "[ca.x]\nplugin = \"digicert\"\nurl = \"$dc\"\napi_key_file = \"$work/api.key\"\n[ca.x.profiles.default]\nprofile_id = \"p\"\nseat_field = \"phone\""
expect "config check: a misspelt key" "api_key_fil" \
  bad_config "[ca.x]\nplugin = \"digicert\"\nurl = \"$dc\"\napi_key_fil = \"$work/api.key\"\n[ca.x.profiles.default]\nprofile_id = \"p\""

finish
