#!/usr/bin/env bash
# Integration (issue #12): tenant-intune through a proxy and across outages. Every call to the
# Intune stand-in goes through tinyproxy with Basic auth. Then: the proxy is killed and restarted
# (the plugin reconnects; a revocation queued meanwhile is done after); Intune is down for a
# minute while devices enroll and revocations are queued (nothing lost: every notification and
# result is delivered after, with 4009 before 4008 and 3101 before 3100/3102); every token expires
# mid-run (calls still succeed: one refresh on 401); the credential certificate is renewed while
# requests flow (the application shows the new key and not the old, which can no longer sign in).
# usage: intune_outages.sh CERTCONNECTOR_BIN PLUGIN_DIR
set -uo pipefail
source "$(dirname "$0")/../interop/lib.sh" intune-outages "$@"
source "$(dirname "$0")/intune_lib.sh"
cleanup() {
  [ -n "${daemon:-}" ] && kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  [ -n "${proxy_pid:-}" ] && kill "$proxy_pid" 2>/dev/null
  stop_extras
  rm -rf "$work"
}
trap cleanup EXIT
start_standin || exit 1

# tinyproxy: CONNECT to the stand-in's port only, Basic auth, its log for the checks below.
pp=$(free_port)
proxy_pass="pr0xy-$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s\n' "$proxy_pass" >"$work/proxy.pass"
chmod 600 "$work/proxy.pass"
cat >"$work/tinyproxy.conf" <<CONF
Port $pp
Listen 127.0.0.1
Timeout 60
MaxClients 50
LogFile "$work/tinyproxy.log"
LogLevel Info
Allow 127.0.0.1
BasicAuth certconn $proxy_pass
ConnectPort $standin_port
CONF
start_proxy() {
  tinyproxy -d -c "$work/tinyproxy.conf" >>"$work/tinyproxy.out" 2>&1 &
  proxy_pid=$!
  wait_until 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$pp" || { echo "tinyproxy did not start" >&2; cat "$work/tinyproxy.out" >&2; }
}
stop_proxy() { kill "$proxy_pid" 2>/dev/null; wait "$proxy_pid" 2>/dev/null; proxy_pid=""; }
start_proxy
expect "tinyproxy refuses a CONNECT without credentials (407)" "407" \
  curl -s -o /dev/null -w '%{http_connect}' --cacert "$work/tls.crt" -x "http://127.0.0.1:$pp" "$standin_url/v1.0/x"
expect "and tunnels one with them" "404" curl -s -o /dev/null -w '%{http_code}' --cacert "$work/tls.crt" \
  -x "http://127.0.0.1:$pp" -U "certconn:$proxy_pass" "$standin_url/v1.0/x"

port=$(free_port)
base="http://127.0.0.1:$port"
CACFG='ca01.corp.test\\Issuing CA'
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
credential_renewal = true
renew_before_days = 30
credential_validity_days = 90
login_url = "$standin_url"
graph_url = "$standin_url"
ca_file = "$work/tls.crt"
proxy = "http://127.0.0.1:$pp"
proxy_auth = "basic"
proxy_username = "certconn"
proxy_password_file = "$work/proxy.pass"
connect_timeout_seconds = 2
timeout_seconds = 5
[tenant.intune.revocation]
interval_seconds = 1
batch_size = 50
[tenant.intune.revocation.ca_map]
"ca01.corp.test\\\\Issuing CA" = "corp"
[ca.corp]
plugin = "local"
algorithm = "rsa3072"
public_base_url = "$base"
[pkcs]
default_ca = "corp"
[scep.profiles.intune]
path = "/scep/intune"
ca = "corp"
tenant = "intune"
allow_single_des = true
min_digest = "sha1"
TOML
check "config check accepts the proxy with Basic auth" "$bin" config check --config "$work/c.toml"
start_connector "$work/c.toml" || exit 1
trap cleanup EXIT
"$bin" ca export --config "$work/c.toml" --name corp >"$work/corp-chain.pem"

SUBJ=/C=US/O=scep-client/OU=MDM/CN
n=0
# enroll NAME: registers a challenge for CN=NAME at Intune and enrolls with scepclient; 0 = a certificate.
enroll() {
  ctl POST challenges -d "{\"challenge\":\"ch-$1\",\"subject\":\"$SUBJ=$1\"}" >/dev/null
  scep_enroll "$work/$1" "$base/scep/intune" "ch-$1" "$1" && grep -q 'server returned a certificate' "$work/$1/out.txt"
}
serial_of() { openssl x509 -in "$work/$1/cert.pem" -noout -serial | cut -d= -f2; }
delivered() { [ -n "$(notification_for success "$(serial_of "$1")")" ]; }
# revoke_request NAME: queues at Intune the revocation of NAME's certificate; prints the requestContext.
revoke_request() {
  local issuer; issuer=$(openssl x509 -in "$work/$1/cert.pem" -noout -issuer -nameopt RFC2253 | sed 's/^issuer=//')
  ctl POST revocations -d "[{\"serialNumber\":\"$(serial_of "$1")\",\"issuerName\":\"$issuer\",\"caConfiguration\":\"$CACFG\"}]" | jq_py 'd[0]'
}
result_code() { ctl GET revocation-results | "$py" -c "
import json,sys
r=[x for x in json.load(sys.stdin) if x['requestContext']==sys.argv[1]]
print(','.join(str(x['errorCode']) for x in r) or 'none')" "$1"; }
crl_has() { curl -sf "$base/crl/corp.crl" | openssl crl -inform DER -noout -text | grep -q "Serial Number: $(serial_of "$1")"; }

check "an enrollment through the proxy: certificate" enroll e-proxy
check "its success notification reaches Intune through the proxy" wait_until 20 delivered e-proxy
check "tinyproxy's log shows the plugin's CONNECTs to the stand-in" grep -q "CONNECT 127.0.0.1:$standin_port" "$work/tinyproxy.log"

# The proxy dies and comes back on the same port.
stop_proxy
r_proxy=$(revoke_request e-proxy)
enroll e-noproxy
check "while the proxy is down an enrollment fails without a certificate (the plugin never goes around the proxy)" test ! -s "$work/e-noproxy/cert.pem"
sleep 3
start_proxy
check "after the proxy restarts the plugin reconnects: the revocation queued meanwhile is done (errorCode 0)" \
  wait_until 30 bash -c "$(declare -f ctl result_code); py='$py' work='$work' standin_url='$standin_url'; [ \"\$(result_code $r_proxy)\" = 0 ]"
check "and enrollments work again" enroll e-afterproxy

# Intune down for a minute. First the writes are lost in flight (validation and downloads still
# answer), then the whole service drops every connection.
down_start=$SECONDS
ctl POST fault -d '{"match":"/ScepRequestValidationFEService/ScepActions/successNotification","mode":"down"}' >/dev/null
ctl POST fault -d '{"match":"/PkiConnectorFEService/CertificateAuthorityRequests/uploadRevocationResults","mode":"down"}' >/dev/null
check "during the outage: enrollment 1 is validated and issued (its notification cannot be delivered)" enroll e-out1
check "during the outage: enrollment 2 too" enroll e-out2
r_out1=$(revoke_request e-afterproxy)
check "during the outage: a downloaded revocation is carried out (the CRL lists it) though its result cannot be uploaded" \
  wait_until 20 crl_has e-afterproxy
ctl POST fault -d '{"match":"/","mode":"down"}' >/dev/null
r_out2=$(revoke_request e-out1)
enroll e-out3
check "with Intune wholly down an enrollment gets no certificate (nothing issued unvalidated)" test ! -s "$work/e-out3/cert.pem"
check "nothing of the outage reached Intune yet" bash -c "
  $(declare -f ctl notification_for serial_of delivered result_code); py='$py' work='$work' standin_url='$standin_url'
  ! delivered e-out1 && ! delivered e-out2 && [ \"\$(result_code $r_out1)\" = none ] && [ \"\$(result_code $r_out2)\" = none ]"
sleep $((60 - (SECONDS - down_start) > 0 ? 60 - (SECONDS - down_start) : 0))
ctl DELETE fault >/dev/null
check "after a minute down: both notifications are delivered" wait_until 60 bash -c "
  $(declare -f ctl notification_for serial_of delivered); py='$py' work='$work' standin_url='$standin_url'; delivered e-out1 && delivered e-out2"
check "after a minute down: both revocation results are uploaded (errorCode 0, once each)" wait_until 60 bash -c "
  $(declare -f ctl result_code); py='$py' work='$work' standin_url='$standin_url'
  [ \"\$(result_code $r_out1)\" = 0 ] && [ \"\$(result_code $r_out2)\" = 0 ]"
check "no notification was delivered twice" bash -c "
  curl -s --cacert '$work/tls.crt' '$standin_url/_control/notifications' | '$py' -c '
import json,sys
t=[n[\"notification\"][\"transactionId\"] for n in json.load(sys.stdin) if n[\"kind\"]==\"success\"]
assert len(t)==len(set(t)), t'"
# first_then FILE A B...: an event A was logged, and later one of B.
first_then() { "$py" -c "
import json,sys
ids=[json.loads(l)['id'] for l in open(sys.argv[1])]
a=int(sys.argv[2]); bs={int(x) for x in sys.argv[3:]}
assert a in ids, 'no %d' % a
i=ids.index(a)
assert any(x in bs for x in ids[i+1:]), 'nothing of %s after %d' % (bs, a)" "$@"; }
check "events: 4009 (notification attempt failed, will retry), then 4008 (delivered)" first_then "$work/log/operational.jsonl" 4009 4008

# The host delivers a tenant's results and notifications in order: while the notification at the
# head of the lane was retried, the results behind it waited (never attempted, so no 3101). A
# short outage of the upload alone: the result at the head fails (3101), then goes through.
ctl POST fault -d '{"match":"/PkiConnectorFEService/CertificateAuthorityRequests/uploadRevocationResults","mode":"down"}' >/dev/null
r_up=$(revoke_request e-out2)
check "an upload that fails is logged 3101 (will retry)" wait_until 20 grep -q '"id":3101,' "$work/log/operational.jsonl"
check "and Intune has no result yet" test "$(result_code "$r_up")" = none
ctl DELETE fault >/dev/null
check "once the upload works again the result arrives once (errorCode 0)" wait_until 30 bash -c "
  $(declare -f ctl result_code); py='$py' work='$work' standin_url='$standin_url'; [ \"\$(result_code $r_up)\" = 0 ]"
check "events: 3101 (upload failed), then 3102/3100 (uploaded)" first_then "$work/log/operational.jsonl" 3101 3102 3100

# Every token expires mid-run: the plugin refreshes once on 401 and the calls succeed.
mark=$(ctl GET calls | jq_py 'len(d)')
ctl POST expire-tokens >/dev/null
check "after every token expired an enrollment still succeeds" enroll e-expired
r_exp=$(revoke_request e-expired)
check "and a revocation still completes" wait_until 30 bash -c "
  $(declare -f ctl result_code); py='$py' work='$work' standin_url='$standin_url'; [ \"\$(result_code $r_exp)\" = 0 ]"
check "the stand-in refused the old token (401) and the plugin signed in again, once per resource" bash -c "
  curl -s --cacert '$work/tls.crt' '$standin_url/_control/calls' | '$py' -c '
import json,sys
c=json.load(sys.stdin)[$mark:]
assert any(x[\"authorization\"]==\"bearer:refused\" and x[\"status\"]==401 for x in c), c
tokens=[x for x in c if x[\"kind\"]==\"token\" and x[\"status\"]==200]
assert 1 <= len(tokens) <= 3, tokens'"

# Renewal of the credential certificate while enrollments flow. The credential (valid 400 days)
# enters its renewal window when renew_before_days grows to 401: the reload (SIGHUP) re-initialises
# the tenant, whose renewer finds the renewal due and runs it (610-614) while devices enroll.
old_thumb=$(openssl x509 -in "$work/cred.crt" -noout -fingerprint -sha1 | cut -d= -f2 | tr -d :)
( for i in 1 2 3 4; do enroll "e-renew$i" || echo "e-renew$i failed"; done >"$work/renew-flow.out" 2>&1 ) &
flow=$!
sleep 1
sed -i 's/^renew_before_days = 30$/renew_before_days = 401/; s/^credential_validity_days = 90$/credential_validity_days = 450/' "$work/c.toml"
kill -HUP "$daemon"
new_key() { ctl GET app | "$py" -c "
import json,sys
k=[x['thumbprint'] for x in json.load(sys.stdin)['keyCredentials']]
assert len(k)==1 and k[0]!=sys.argv[1], k" "$old_thumb"; }
check "the credential is renewed: the application has one key credential, a new one, and not the old one" wait_until 60 new_key
wait "$flow"
check "the enrollments during the renewal all succeeded" bash -c "! grep -q failed '$work/renew-flow.out'"
check "events 610 (started), 611 (key made), 612 (addKey), 613 (switched), 614 (old key removed)" "$py" -c "
import json,sys
ids=[json.loads(l)['id'] for f in ('admin','operational') for l in open('$work/log/%s.jsonl' % f)]
assert all(i in ids for i in (610,611,612,613,614)), sorted(set(i for i in ids if 600<=i<700))"
keys=$(ctl GET app | jq_py '[k["thumbprint"] for k in d["keyCredentials"]]')
check "a sign-in with the old key is refused now (AADSTS700027: key not registered)" bash -c "
  $(declare -f b64u client_assertion token_with); work='$work' standin_url='$standin_url' T='$T' C='$C'
  token_with '$work/cred.key' '$work/cred.crt' | grep -q 700027"
check "the renewed key lives in the state directory, mode 0600" bash -c "
  f=\$(find '$work/state' -path '*credential*' -name '*.pem' | head -1); [ -n \"\$f\" ] && [ \$(stat -c %a \"\$f\") = 600 ]"
mark=$(ctl GET calls | jq_py 'len(d)')
ctl POST expire-tokens >/dev/null
check "after the renewal the plugin signs in with the new key" enroll e-newkey
check "its sign-in used the new certificate" bash -c "
  curl -s --cacert '$work/tls.crt' '$standin_url/_control/calls' | '$py' -c '
import json,sys
c=[x for x in json.load(sys.stdin)[$mark:] if x[\"kind\"]==\"token\" and x[\"status\"]==200]
assert c and all(x[\"authorization\"]==\"certificate:\"+sys.argv[1] for x in c), c' $(jq_py 'd[0]' <<<"$keys")"
# On demand: the same steps through the admin command, whatever the expiry.
second_thumb=$(jq_py 'd[0]' <<<"$keys")
expect "certconnector intune renew-credential renews now and names the new certificate" "renewed: the connector signs in with certificate" \
  "$bin" intune renew-credential --config "$work/c.toml"
third_key() { ctl GET app | "$py" -c "
import json,sys
k=[x['thumbprint'] for x in json.load(sys.stdin)['keyCredentials']]
assert len(k)==1 and k[0] not in sys.argv[1:], k" "$old_thumb" "$second_thumb"; }
check "after renew-credential the application has one key, neither of the two before" third_key
check "and the plugin still enrolls devices with it" enroll e-third

stop_connector
check "the proxy password, the credential key and the challenges never reach the logs" bash -c "
  ! grep -rqF -e '$proxy_pass' -e \"\$(sed -n 2p '$work/cred.key')\" -e ch-e-out1 '$work/log' '$work/daemon.out'"
finish
