#!/usr/bin/env bash
# Integration: the real daemon issues PKCS jobs through ca-adcs against the stand-in AD CS
# (tests/stand-ins/adcs) over TLS, and relying parties check the results with openssl.
# Covers: Web Enrollment with NTLM and Basic, issued / pending -> approved / pending -> denied /
# denied by policy / unknown template, wrong password (names the account, no retry), CA down
# (retryable, event 408), malformed, oversized and slow answers, CES (MS-WSTEP) issued and
# pending, revocation through WinRM (certutil -revoke) seen in the CA's CRL, the NOT_SUPPORTED
# answer without WinRM (event 409), the CRL and certificate queries, and config check errors.
# usage: adcs_integration.sh CERTCONNECTOR_BIN PLUGIN_DIR ADCS_POLL_DRIVER
set -uo pipefail
source "$(dirname "$0")/../interop/lib.sh" adcs "$@"
driver=$(realpath "$3")
standin="$(cd "$(dirname "$0")/../stand-ins/adcs" && pwd)/adcs.py"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/tls.key" -out "$work/tls.crt" \
  -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -days 2 2>/dev/null
printf '%s' 'Enr0ll!pass' >"$work/enroll.pw"
printf '%s' 'M4nage!pass' >"$work/manage.pw"
printf '%s' 'not-the-password' >"$work/wrong.pw"
chmod 600 "$work"/*.pw

standins=()
cleanup() {
  [ -n "${daemon:-}" ] && kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  for p in "${standins[@]}"; do kill "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

# start_standin NAME [ARGS...]: runs the stand-in AD CS; its port goes to $work/NAME.port.
start_standin() {
  local name=$1; shift
  "$py" "$standin" --cert "$work/tls.crt" --key "$work/tls.key" --port-file "$work/$name.port" \
    --ca-dir "$work/$name-ca" "$@" 2>"$work/$name.log" &
  standins+=($!)
  for _ in $(seq 1 100); do [ -s "$work/$name.port" ] && return 0; sleep 0.1; done
  echo "the stand-in $name did not start:" >&2; cat "$work/$name.log" >&2; return 1
}
start_standin main --template Approval=pending --template Refused=denied || exit 1
start_standin flaky || exit 1
start_standin basiconly --auth basic || exit 1
P=$(cat "$work/main.port"); F=$(cat "$work/flaky.port"); B=$(cat "$work/basiconly.port")
down=$($py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ctl() { curl -sf --cacert "$work/tls.crt" -X POST "https://127.0.0.1:$1/_control/$2"; }
cat "$work/main-ca/issuing.pem" "$work/main-ca/root.pem" >"$work/main-chain.pem"

common() {  # common PORT PASSWORD_FILE AUTH
  cat <<TOML
ca_config = "ca01.corp.test\\\\Stand-in Issuing CA"
ca_file = "$work/tls.crt"
auth = "$3"
username = "CORP\\\\svc-enroll"
password_file = "$2"
timeout_seconds = 3
TOML
}
profiles() {  # profiles CA
  cat <<TOML
[ca.$1.profiles.user]
template = "User"
[ca.$1.profiles.approval]
template = "Approval"
[ca.$1.profiles.refused]
template = "Refused"
[ca.$1.profiles.unknown]
template = "NoSuchTemplate"
[ca.$1.profiles.sanattr]
template = "User"
attributes = ["ccm:device01.corp.test"]
san_attribute = true
TOML
}

cat >"$work/c.toml" <<TOML
[host]
listen = "127.0.0.1:0"
plugin_dir = "$plugins"
state_dir = "state"
log_dir = "log"
# The host's background CA health probe logs on too (also with the wrong password of ca.badpw):
# only at start here, so the logon counts below see the jobs' logons alone.
ca_health_interval_seconds = 86400
[jobs]
concurrency = 4
max_attempts = 2
lease_seconds = 10
retry_initial_ms = 200
retry_max_ms = 400
[tenant]
plugin = "local"
[pkcs]
default_ca = "corp"
default_profile = "user"
[ca.corp]
plugin = "adcs"
url = "https://127.0.0.1:$P/certsrv"
$(common "$P" "$work/enroll.pw" ntlm)
[ca.corp.revocation]
winrm_url = "https://127.0.0.1:$P/wsman"
username = "CORP\\\\svc-camanager"
password_file = "$work/manage.pw"
auth = "ntlm"
$(profiles corp)
[ca.basic]
plugin = "adcs"
url = "https://127.0.0.1:$B/certsrv/"
$(common "$B" "$work/enroll.pw" basic)
$(profiles basic)
[ca.badpw]
plugin = "adcs"
url = "https://127.0.0.1:$P/certsrv"
$(common "$P" "$work/wrong.pw" ntlm)
$(profiles badpw)
[ca.down]
plugin = "adcs"
url = "https://127.0.0.1:$down/certsrv"
$(common "$down" "$work/enroll.pw" ntlm)
$(profiles down)
[ca.flaky]
plugin = "adcs"
url = "https://127.0.0.1:$F/certsrv"
max_response_bytes = 1048576
$(common "$F" "$work/enroll.pw" ntlm)
$(profiles flaky)
[ca.ces]
plugin = "adcs"
ces_url = "https://127.0.0.1:$P/Stand-in%20Issuing%20CA_CES_UsernamePassword/service.svc/CES"
ca_chain_file = "$work/main-chain.pem"
$(common "$P" "$work/enroll.pw" basic)
$(profiles ces)
TOML

check "config check accepts the [ca.*] sections of plugin adcs" "$bin" config check --config "$work/c.toml"
start_connector "$work/c.toml" || exit 1
trap cleanup EXIT
cc() { "$bin" "$@" --config "$work/c.toml"; }

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/device.key" 2>/dev/null
openssl pkey -in "$work/device.key" -pubout -out "$work/device.pub"
# pkcs NAME CA PROFILE [ID]: a PKCS job through CA; output in $work/NAME.out, leaf in $work/NAME.pem
pkcs() {
  cc submit pkcs --subject "CN=$1" --key-type p256 --device-key "$work/device.pub" --ca "$2" --profile "$3" \
    ${4:+--id $4} --wait --timeout 60 --out "$work/$1" >"$work/$1.out" 2>&1
  local rc=$?
  [ -f "$work/$1/result.json" ] &&
    $py -c "import json,sys; r=json.load(open(sys.argv[1])).get('result') or {}; print(r.get('certificate_pem',''), end='')" \
      "$work/$1/result.json" >"$work/$1.pem"
  return $rc
}
events() { cat "$work/log/operational.jsonl" "$work/log/admin.jsonl" 2>/dev/null; }

# ---- Web Enrollment, NTLM ------------------------------------------------------------------
check "issued through certsrv with NTLM" pkcs alice corp user
check "the certificate verifies against the stand-in's CA (openssl verify)" \
  openssl verify -CAfile "$work/main-chain.pem" "$work/alice.pem"
expect "AD CS serials are 19 bytes" "^38$" bash -c "openssl x509 -in '$work/alice.pem' -noout -serial | cut -d= -f2 | tr -d '\n' | wc -c"
expect "it was issued from the User template (szOID_ENROLL_CERTTYPE)" "U.s.e.r" bash -c \
  "openssl x509 -in '$work/alice.pem' -noout -text | grep -A1 '1.3.6.1.4.1.311.20.2'"
check "the chain came from certcarc.asp + certnew.p7b (ca export prints issuing then root)" bash -c "
  cc() { '$bin' \"\$@\" --config '$work/c.toml'; }
  cc ca export --name corp >'$work/exported.pem' && diff <(openssl x509 -in '$work/exported.pem' -noout -subject) \
    <(openssl x509 -in '$work/main-ca/issuing.pem' -noout -subject) && grep -c BEGIN '$work/exported.pem' | grep -qx 2"
expect "event 405 names the AD CS request id" '"ca_request_id":"' bash -c "grep '\"id\":405,' '$work/log/operational.jsonl'"
expect "the enrollment account logged on with NTLMv2 (verified by the stand-in)" 'ntlmv2 logon CORP.svc-enroll' \
  curl -sf --cacert "$work/tls.crt" "https://127.0.0.1:$P/_control/log"
expect "certsrv saw a browser User-Agent" "UA=Mozilla/5.0" curl -sf --cacert "$work/tls.crt" "https://127.0.0.1:$P/_control/log"
serial_alice=$(openssl x509 -in "$work/alice.pem" -noout -serial | cut -d= -f2 | sed 's/^0*//')

# ---- Basic -----------------------------------------------------------------------------------
check "issued through certsrv with Basic (a CA offering only Basic)" pkcs bob basic user
expect "... logged on with Basic" 'basic logon CORP.svc-enroll' curl -sf --cacert "$work/tls.crt" "https://127.0.0.1:$B/_control/log"
check "bob verifies against that stand-in's CA" bash -c \
  "cat '$work/basiconly-ca/issuing.pem' '$work/basiconly-ca/root.pem' >'$work/b-chain.pem' && openssl verify -CAfile '$work/b-chain.pem' '$work/bob.pem'"

# ---- request attributes: extra ones, and the CSR's SANs as san: (EDITF_ATTRIBUTESUBJECTALTNAME2) ------
check "a profile with attributes and san_attribute issues" cc submit pkcs --subject CN=dave --san dns:dave.corp.test \
  --san email:dave@corp.test --key-type p256 --device-key "$work/device.pub" --ca corp --profile sanattr --wait
expect "AD CS received CertAttrib with the extra attribute and san:dns=..&email=.." '"san": "dns=dave.corp.test&email=dave@corp.test"' bash -c \
  "curl -sf --cacert '$work/tls.crt' 'https://127.0.0.1:$P/_control/requests' | $py -c 'import json,sys; [print(json.dumps(r[\"attributes\"], sort_keys=True)) for r in json.load(sys.stdin)]' | grep '\"ccm\": \"device01.corp.test\"'"

# ---- dispositions ------------------------------------------------------------------------------
pkcs refused corp refused
expect "a template the account may not enroll: denied with AD CS's disposition message" "0x80094012" cat "$work/refused.out"
pkcs unknowntpl corp unknown
expect "an unknown template: AD CS's 0x80094800 message" "not supported by the Active Directory Certificate Services policy: NoSuchTemplate" \
  cat "$work/unknowntpl.out"
expect "denials are event 407 with the message" "0x80094800" bash -c "grep '\"id\":407,' '$work/log/operational.jsonl'"
expect "an unknown profile names the configured ones" "profiles: approval, refused, sanattr, unknown, user" \
  "$bin" submit pkcs --subject CN=x --key-type p256 --device-key "$work/device.pub" --ca corp --profile nosuch --wait --config "$work/c.toml"

# Pending: the request waits for a CA manager. The job fails as pending (event 406 with the AD CS
# request id); the manager then approves or denies at the CA.
# Through the daemon: the job meets PENDING, frees its worker, and runs again when its lease returns
# it (lease_seconds = 10) with the same request id: the plugin asks AD CS with the stored request id.
cc submit pkcs --subject CN=waiting --key-type p256 --device-key "$work/device.pub" --ca corp --profile approval \
  --id job-waiting >/dev/null 2>&1
expect_within 20 "a template needing approval: event 406 for the job, with the AD CS request id" '"ca_request_id":"[0-9]' bash -c \
  "grep '\"id\":406,' '$work/log/operational.jsonl' | grep job-waiting"
rid=$(grep '"id":406,' "$work/log/operational.jsonl" | grep job-waiting | head -1 | grep -o '"ca_request_id":"[0-9]*' | grep -o '[0-9]*$')
expect "the stand-in holds that request as pending" '"status": "pending"' bash -c \
  "curl -sf --cacert '$work/tls.crt' 'https://127.0.0.1:$P/_control/requests' | $py -c 'import json,sys; print([json.dumps(r) for r in json.load(sys.stdin) if r[\"id\"]==int(sys.argv[1])])' '$rid'"
check "the CA manager approves it" ctl "$P" "approve?ReqID=$rid"
expect_within 60 "the job's next run (its lease returned it) polls AD CS and gets the approved certificate" '"status":"succeeded"' \
  cc job show job-waiting
check "... which verifies against the CA" bash -c "
  '$bin' job show job-waiting --config '$work/c.toml' | $py -c 'import json,sys; print(json.load(sys.stdin)[\"result\"][\"certificate_pem\"], end=\"\")' >'$work/waiting.pem' &&
  openssl verify -CAfile '$work/main-chain.pem' '$work/waiting.pem'"
expect "... and AD CS got one submission for it, not one per run" "^1$" bash -c \
  "curl -sf --cacert '$work/tls.crt' 'https://127.0.0.1:$P/_control/requests' | $py -c 'import json,sys; print(sum(1 for r in json.load(sys.stdin) if r[\"template\"]==\"Approval\"))'"
cc submit pkcs --subject CN=refusedlater --key-type p256 --device-key "$work/device.pub" --ca corp --profile approval \
  --id job-refusedlater >/dev/null 2>&1
expect_within 20 "another approval request waits (event 406)" '"ca_request_id":"[0-9]' bash -c \
  "grep '\"id\":406,' '$work/log/operational.jsonl' | grep job-refusedlater"
rid=$(grep '"id":406,' "$work/log/operational.jsonl" | grep job-refusedlater | head -1 | grep -o '"ca_request_id":"[0-9]*' | grep -o '[0-9]*$')
check "the CA manager denies it" ctl "$P" "deny?ReqID=$rid&message=Denied%20by%20CORP%5Cca-manager%3A%20not%20this%20device"
expect_within 60 "the job's next run ends it denied, with the manager's disposition message" 'not this device' cc job show job-refusedlater

# The same through the C ABI, call by call (adcs_poll_driver, as the host makes them, a new process
# each time: the request table survives restarts): pending, approved or denied, Web Enrollment
# (certnew.cer?ReqID=) and CES (QueryTokenStatus), never a second submission.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/poll.key" -subj /CN=polled \
  -out "$work/poll.csr" 2>/dev/null
section() {  # section URL-KEY URL AUTH -> a [ca.*] section as the host passes it (JSON)
  $py -c 'import json,sys
print(json.dumps({sys.argv[1]: sys.argv[2], "ca_config": "ca01.corp.test\\Stand-in Issuing CA", "ca_file": sys.argv[4],
  "auth": sys.argv[3], "username": "CORP\\svc-enroll", "password_file": sys.argv[5], "timeout_seconds": 3,
  "ca_chain_file": sys.argv[6], "profiles": {"approval": {"template": "Approval"}, "user": {"template": "User"}}}))' \
    "$1" "$2" "$3" "$work/tls.crt" "$work/enroll.pw" "$work/main-chain.pem"
}
section url "https://127.0.0.1:$P/certsrv" ntlm >"$work/sec-certsrv.json"
section ces_url "https://127.0.0.1:$P/Stand-in%20Issuing%20CA_CES_UsernamePassword/service.svc/CES" basic >"$work/sec-ces.json"
request() { $py -c 'import json,sys; print(json.dumps({"request_id": sys.argv[1], "csr_pem": open(sys.argv[2]).read(), "profile": "approval", "requester": "test"}))' "$1" "$work/poll.csr" >"$work/$1.json"; }
drive() { "$driver" "$plugins/ca-adcs.so" "$work/driver-state" "$1" "$work/sec-$1.json" issue "$work/$2.json" 2>&1; }
ids() { grep -o 'AD CS request id [0-9]*' | head -1 | grep -o '[0-9]*$'; }
requests_at_ca() { curl -sf --cacert "$work/tls.crt" "https://127.0.0.1:$P/_control/requests" | $py -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
first_pem() { sed -n 's/^ok //p' | $py -c 'import json,sys; print(json.loads(sys.stdin.readline())["certificate_pem"], end="")'; }

for via in certsrv ces; do
  request "approve-$via"; request "deny-$via"
  out=$(drive $via "approve-$via")
  expect "$via: a template needing approval answers pending (event 406)" "error pending pending approval at CA '$via'" echo "$out"
  n=$(ids <<<"$out")
  expect "$via: event 406 names the AD CS request id" "\"ca_request_id\":\"$n\"" echo "$out"
  check "$via: the CA manager approves request $n" ctl "$P" "approve?ReqID=$n"
  before=$(requests_at_ca)
  out=$(drive $via "approve-$via")
  expect "$via: issuing again with the same request id gives the approved certificate" '"already_issued":false' echo "$out"
  first_pem <<<"$out" >"$work/polled-$via.pem"
  check "$via: ... which verifies against the CA" openssl verify -CAfile "$work/main-chain.pem" "$work/polled-$via.pem"
  expect "$via: ... and it is the request AD CS approved (event 405 with its id)" "\"ca_request_id\":\"$n\"" grep '^event 405' <<<"$out"
  expect "$via: ... fetched by its AD CS request id, not submitted again (AD CS holds no new request)" "^$before$" requests_at_ca
  expect "$via: a third call answers from the table (already_issued)" '"already_issued":true' drive $via "approve-$via"
  out=$(drive $via "deny-$via")
  n=$(ids <<<"$out")
  check "$via: the CA manager denies request $n" ctl "$P" "deny?ReqID=$n&message=Denied%20by%20CORP%5Cca-manager"
  expect "$via: issuing again answers denied with AD CS's message (event 407)" "error denied .*Denied by CORP.ca-manager" drive $via "deny-$via"
  expect "$via: and stays denied" "error denied" drive $via "deny-$via"
done

# ---- wrong password, CA down, malformed / oversized / slow answers ------------------------------
logon_failures() {
  curl -sf --cacert "$work/tls.crt" "https://127.0.0.1:$P/_control/log" | grep -c 'logon failure for CORP.svc-enroll'
}
failures_before=$(logon_failures)
pkcs wrongpw badpw user
expect "a wrong password: denied, naming the account (never the password)" "refused the account 'CORP.*svc-enroll'" cat "$work/wrongpw.out"
check "... and the password is not in any message or log" bash -c "! grep -rq 'not-the-password\|Enr0ll!pass' '$work/wrongpw.out' '$work/log'"
expect "... and it was not retried (one logon attempt at the CA)" "^1$" \
  bash -c "echo \$(( \$($(declare -f logon_failures); work='$work' P='$P' logon_failures) - $failures_before ))"

pkcs downca down user
expect "CA down: the job fails as unavailable after its retries" '"code":"unavailable"' cat "$work/downca.out"
expect "... with event 408 naming the CA" '"ca":"down"' bash -c "grep '\"id\":408,' '$work/log/admin.jsonl' '$work/log/operational.jsonl'"
expect "... and the retries (pkcs 'will retry')" "will retry" bash -c "cat '$work/log/operational.jsonl'"

ctl "$F" "mode?set=malformed" >/dev/null
pkcs malformed flaky user
expect "a malformed certfnsh.asp answer: a clear error saying what was expected" "without a disposition" cat "$work/malformed.out"
ctl "$F" "mode?set=oversized" >/dev/null
pkcs oversized flaky user
expect "an oversized answer is refused (max_response_bytes)" '"code":"unavailable"' cat "$work/oversized.out"
ctl "$F" "mode?set=slow&seconds=5" >/dev/null
pkcs slow flaky user
expect "a slow CA times out (timeout_seconds = 3)" '"code":"timeout"' cat "$work/slow.out"
ctl "$F" "mode?set=error500" >/dev/null
pkcs err500 flaky user
expect "HTTP 500 from certsrv is unavailable (retryable)" "answered HTTP 500" cat "$work/err500.out"
ctl "$F" "mode?set=normal" >/dev/null
check "the same CA works again once it answers normally" pkcs recovered flaky user

# ---- CES (MS-WSTEP) ------------------------------------------------------------------------------
check "issued through CES (RequestSecurityToken with the PKCS#10)" pkcs carol ces user
check "carol verifies against the CA" openssl verify -CAfile "$work/main-chain.pem" "$work/carol.pem"
pkcs cesdenied ces refused
expect "CES denial: the CertificateEnrollmentWSDetail fault's message and error code" "0x80094012" cat "$work/cesdenied.out"
cc submit pkcs --subject CN=cespending --key-type p256 --device-key "$work/device.pub" --ca ces --profile approval \
  --id job-cespending >/dev/null 2>&1
expect_within 20 "CES pending: event 406 with the RequestID from the response" '"ca_request_id":"[0-9]' bash -c \
  "grep '\"id\":406,' '$work/log/operational.jsonl' | grep job-cespending"
cesrid=$(grep '"id":406,' "$work/log/operational.jsonl" | grep job-cespending | head -1 | grep -o '"ca_request_id":"[0-9]*' | grep -o '[0-9]*$')
check "the CA manager approves CES request $cesrid" ctl "$P" "approve?ReqID=$cesrid"
expect_within 60 "CES: the job's next run asks QueryTokenStatus and gets the approved certificate" '"status":"succeeded"' cc job show job-cespending

# ---- revocation through WinRM ------------------------------------------------------------------------
ctl "$P" "winrm?receive_timeouts=2" >/dev/null  # certutil slow to answer: two Receives time out first
expect "revoke alice through WinRM (certutil -revoke on the CA; Receive retried after w:TimedOut)" "succeeded" \
  cc submit revoke --ca corp --serial "$serial_alice" --reason keyCompromise --wait
expect "WinRM logged on as the revocation account (NTLMv2)" 'ntlmv2 logon CORP.svc-camanager' \
  curl -sf --cacert "$work/tls.crt" "https://127.0.0.1:$P/_control/log"
expect "WinRM ran certutil with the CA config string" 'certutil -config "ca01.corp.test\\Stand-in Issuing CA" -revoke '"$serial_alice"' 1' \
  curl -sf --cacert "$work/tls.crt" "https://127.0.0.1:$P/_control/log"
check "the CA's CRL (its CDP) lists alice: openssl verify -crl_check says revoked" bash -c "
  curl -sf --cacert '$work/tls.crt' 'https://127.0.0.1:$P/CertEnroll/Stand-in-Issuing-CA.crl' | openssl crl -inform DER -out '$work/crl.pem' &&
  cat '$work/main-chain.pem' '$work/crl.pem' >'$work/chain+crl.pem' &&
  openssl verify -crl_check -CAfile '$work/chain+crl.pem' '$work/alice.pem' 2>&1 | grep -q 'certificate revoked'"
expect "revoking again answers already revoked" "already revoked" \
  cc submit revoke --ca corp --serial "$serial_alice" --reason superseded --wait
expect "a serial AD CS never issued: not found (certutil's CRYPT_E_NOT_FOUND)" '"error_code":4004' \
  cc submit revoke --ca corp --serial 61000000AA --wait
expect "a reason AD CS cannot express is refused" "AD CS revokes only with reasons" \
  cc submit revoke --ca corp --serial "$(openssl x509 -in "$work/carol.pem" -noout -serial | cut -d= -f2)" --reason privilegeWithdrawn --wait
expect "without WinRM configured, revoke says exactly what to run (and no fake success)" 'certutil -config' \
  cc submit revoke --ca basic --serial "$(openssl x509 -in "$work/bob.pem" -noout -serial | cut -d= -f2)" --wait
expect "... with event 409" '"id":409,' bash -c "cat '$work/log/admin.jsonl' '$work/log/operational.jsonl'"

# ---- queries (SCEP GetCert/GetCRL, publication, status): through the C ABI as the host asks -----------
q() { printf '%s' "$2" >"$work/q.json"; "$driver" "$plugins/ca-adcs.so" "$work/driver-state" "$1" "$work/sec-$1.json" query "$work/q.json" 2>&1; }
polled_serial=$(openssl x509 -in "$work/polled-certsrv.pem" -noout -serial | cut -d= -f2)
expect "query certificate: one this connector obtained, by serial" '"status":"valid"' q certsrv "{\"op\":\"certificate\",\"serial\":\"$polled_serial\"}"
expect "query certificate: any other serial is not found (Web Enrollment cannot look up serials)" "error not_found .*cannot look up by serial" \
  q certsrv '{"op":"certificate","serial":"0DEADBEEF"}'
check "query crl: the CRL from the issued certificate's CDP, signed by the issuing CA, listing alice" bash -c "
  q() { $(declare -f q | tail -n +2); }
  $(declare -p work driver plugins); q certsrv '{\"op\":\"crl\"}' | sed -n 's/^ok //p' |
    $py -c 'import json,sys,base64; sys.stdout.buffer.write(base64.b64decode(json.load(sys.stdin)[\"crl_der\"]))' >'$work/q.crl' &&
  openssl crl -inform DER -in '$work/q.crl' -CAfile '$work/main-chain.pem' -noout 2>&1 | grep -q 'verify OK' &&
  openssl crl -inform DER -in '$work/q.crl' -noout -text | grep -q '$serial_alice'"
expect "query health: healthy (GET /certsrv/ with NTLM answered 200)" '"healthy":true' q certsrv '{"op":"health"}'
$py -c 'import json,sys; d=json.load(open(sys.argv[1])); d["password_file"]=sys.argv[2]; print(json.dumps(d))' "$work/sec-certsrv.json" "$work/wrong.pw" >"$work/sec-wrongpw.json"
expect "query health: a refused account is unhealthy, named" '"healthy":false,"detail":"127.0.0.1:[0-9]* refused the account .CORP' q wrongpw '{"op":"health"}'
$py -c 'import json,sys; d=json.load(open(sys.argv[1])); d["url"]="https://127.0.0.1:%s/certsrv" % sys.argv[2]; print(json.dumps(d))' "$work/sec-certsrv.json" "$down" >"$work/sec-down.json"
expect "query health: a CA that is down is unhealthy" '"healthy":false' q down '{"op":"health"}'
expect "an unknown query op is not supported" "error not_supported" q certsrv '{"op":"nonsense"}'

stop_connector
# ---- config check errors ---------------------------------------------------------------------------
bad() {  # bad NAME EXPECTED TOML-LINES...
  local name=$1 text=$2; shift 2
  { sed -n '1,/^\[ca.corp\]$/p' "$work/c.toml" | sed '$d'; printf '%s\n' "$@"; } >"$work/bad.toml"
  expect "config check: $name" "$text" "$bin" config check --config "$work/bad.toml"
}
bad "a misspelt key is named, with a suggestion" "ca_confg" '[ca.corp]' 'plugin = "adcs"' 'url = "https://x/certsrv"' \
  'ca_confg = "a\\\\b"' '[ca.corp.profiles.user]' 'template = "User"'
bad "a profile without a template" "template" '[ca.corp]' 'plugin = "adcs"' 'url = "https://x/certsrv"' \
  'ca_config = "a\\\\b"' '[ca.corp.profiles.user]' 'attributes = ["a:b"]'
bad "a wrong type" "san_attribute" '[ca.corp]' 'plugin = "adcs"' 'url = "https://x/certsrv"' \
  'ca_config = "a\\\\b"' '[ca.corp.profiles.user]' 'template = "User"' 'san_attribute = "yes"'

finish
