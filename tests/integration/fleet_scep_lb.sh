#!/usr/bin/env bash
# Integration (issue #13): SCEP and the CRL behind a real load balancer — Debian's nginx, started
# here on loopback as an upstream over three real connector instances on one PostgreSQL 15:
#   - micromdm scepclient enrolls through nginx (GetCACert from one instance and PKIOperation from
#     another must agree: one RA key for the fleet);
#   - an instance is killed (kill -9) while enrollments run through nginx: every client still gets
#     its certificate, one per transaction;
#   - a transaction resent to another instance gets the same certificate;
#   - one one-time challenge raced by 20 parallel scepclient runs through nginx: exactly one wins;
#   - revocations made through each of the three instances; the CRL leader is killed; another
#     instance publishes the CRL within the lease time; CRL numbers strictly increase, and
#     `openssl crl -text` lists every revocation.
# usage: fleet_scep_lb.sh CERTCONNECTOR_BIN PLUGIN_DIR
set -uo pipefail
source "$(dirname "$0")/../interop/lib.sh" fleet-scep-lb "$@"
fleet_ca_algorithm=rsa3072   # micromdm scepclient speaks only RSA
fleet_poll_ms=100
source "$(dirname "$0")/fleet_lib.sh"
command -v nginx >/dev/null || { echo "nginx is not installed (Debian package nginx)"; exit 1; }
command -v scepclient >/dev/null || { echo "scepclient is not installed (Debian package scep)"; exit 1; }

fleet_pg_start || exit 1
lb_port=$(free_port)
lb="http://127.0.0.1:$lb_port"
fleet_public_base=$lb
scep_section='[scep]
shared_key_file = "'"$work"'/shared.key"
[scep.profiles.devices]
path = "/scep"
ca = "corp"
tenant = "local"
allow_single_des = true
min_digest = "sha1"'
names=(s1 s2 s3)
for n in "${names[@]}"; do fleet_config "$n" scep,revoke "$scep_section"; done
for n in "${names[@]}"; do fleet_start "$n" || { fail "instance $n started"; echo "0 passed, 1 failed"; exit 1; }; done
ok "three instances (scep, revoke) run on one PostgreSQL"

# nginx: round robin over the three; a request whose instance fails (refused, reset, 502/503) is
# sent to the next one, POST included (non_idempotent: a SCEP PKIOperation is safe to resend —
# that is what the fleet must guarantee).
mkdir -p "$work/nginx/tmp"
ngx_user=""; [ "$(id -u)" -eq 0 ] && ngx_user="user root root;"
cat >"$work/nginx/nginx.conf" <<NGX
$ngx_user
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 512; }
http {
  log_format up '\$request_method \$uri \$status upstream=\$upstream_addr';
  access_log $work/nginx/access.log up;
  client_body_temp_path $work/nginx/tmp/body;
  proxy_temp_path $work/nginx/tmp/proxy;
  fastcgi_temp_path $work/nginx/tmp/fastcgi;
  uwsgi_temp_path $work/nginx/tmp/uwsgi;
  scgi_temp_path $work/nginx/tmp/scgi;
  upstream fleet {
    server 127.0.0.1:${fleet_port[s1]} max_fails=1 fail_timeout=30s;
    server 127.0.0.1:${fleet_port[s2]} max_fails=1 fail_timeout=30s;
    server 127.0.0.1:${fleet_port[s3]} max_fails=1 fail_timeout=30s;
  }
  server {
    listen 127.0.0.1:$lb_port;
    client_max_body_size 1m;
    location / {
      proxy_pass http://fleet;
      proxy_http_version 1.1;
      proxy_next_upstream error timeout invalid_header http_502 http_503 non_idempotent;
      proxy_next_upstream_tries 3;
      proxy_connect_timeout 2s;
      proxy_read_timeout 30s;
    }
  }
}
NGX
nginx -t -q -c "$work/nginx/nginx.conf" -p "$work/nginx" -e "$work/nginx/error.log" 2>"$work/nginx/t.out" ||
  { cat "$work/nginx/t.out"; exit 1; }
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -e "$work/nginx/error.log" &
nginx_pid=$!
fleet_extra_cleanup() { kill -TERM "$nginx_pid" 2>/dev/null; wait "$nginx_pid" 2>/dev/null; }
wait_until 20 curl -sf "$lb/scep?operation=GetCACaps" || { fail "nginx forwards to the fleet" "$(cat "$work/nginx/error.log")"; }

# The RA certificate must be the same on every instance.
for n in "${names[@]}"; do
  curl -sf "http://127.0.0.1:${fleet_port[$n]}/scep?operation=GetCACert" -o "$work/cacert.$n.p7"
done
check "GetCACert (CA + RA) is byte-identical on the three instances: one RA key for the fleet" bash -c "
  [ -s '$work/cacert.s1.p7' ] && cmp '$work/cacert.s1.p7' '$work/cacert.s2.p7' && cmp '$work/cacert.s1.p7' '$work/cacert.s3.p7'"
openssl pkcs7 -inform DER -in "$work/cacert.s1.p7" -print_certs 2>/dev/null | awk '/BEGIN/{n++} n>=2' >"$work/chain.pem"

# challenge [SUBJECT]: a one-time challenge from tenant-local (asked of s1; stored in PostgreSQL).
challenge() {
  if [ -n "${1:-}" ]; then "$bin" scep challenge --config "$work/s1/c.toml" --profile devices --subject "$1" --ttl 10m 2>/dev/null
  else "$bin" scep challenge --config "$work/s1/c.toml" --profile devices --ttl 10m 2>/dev/null; fi
}
enroll() { # enroll DIR URL CHALLENGE CN
  mkdir -p "$1"
  (cd "$1" && timeout 90 scepclient -server-url "$2" -challenge "$3" -cn "$4" -private-key key.pem -certificate cert.pem >out.txt 2>&1)
}
got_cert() { grep -q 'server returned a certificate' "$1/out.txt" && openssl verify -CAfile "$work/chain.pem" "$1/cert.pem" >/dev/null 2>&1; }
serial_of() { openssl x509 -in "$1" -noout -serial | cut -d= -f2; }

ch=$(challenge)
enroll "$work/e1" "$lb/scep" "$ch" lb-first
check "scepclient enrolls through nginx with a one-time challenge; the certificate verifies" got_cert "$work/e1"
check "nginx spread that enrollment's requests over more than one instance" bash -c "
  [ \$(grep -o 'upstream=[0-9.:]*' '$work/nginx/access.log' | sort -u | wc -l) -ge 2 ] || cat '$work/nginx/access.log'"

# An instance killed (kill -9) while 9 enrollments run through nginx.
for i in $(seq 1 9); do printf '%s\n' "$(challenge)"; done >"$work/kill.challenges"
check "nine one-time challenges made" test "$(grep -c . "$work/kill.challenges")" = 9
i=0; pids=()
while read -r c; do
  i=$((i + 1)); enroll "$work/k$i" "$lb/scep" "$c" "lb-kill-$i" & pids+=($!)
  sleep 0.05
done <"$work/kill.challenges"
sleep 0.3
fleet_kill s1 KILL
for p in "${pids[@]}"; do wait "$p"; done
check "kill -9 of s1 mid-enrollment: all nine clients got a certificate anyway (nginx resent to s2/s3)" bash -c "
  for i in \$(seq 1 9); do grep -q 'server returned a certificate' '$work'/k\$i/out.txt || { echo k\$i:; cat '$work'/k\$i/out.txt; exit 1; }; done"
iss=$(fleet_issuance_table); : "${iss:=ca_local.certificates}"
check "one certificate per enrollment in ca-local's record (subjects lb-kill-1..9 once each)" bash -c "
  source '$(dirname "$0")/../support/servers/postgresql.sh'; PG_DIR='$PG_DIR' PG_PORT='$PG_PORT'
  r=\$(pg_sql \"SELECT count(*)||' '||count(DISTINCT subject) FROM $iss WHERE subject LIKE '%lb-kill-%'\"); echo \"\$r\"; [ \"\$r\" = '9 9' ]"
fleet_start s1 || fail "s1 restarted"

# A transaction resent to another instance: the same key (so the same transactionID and the same
# CSR) and challenge, sent first to s2, then again to s3: the same certificate comes back.
ch=$(challenge)
enroll "$work/r" "http://127.0.0.1:${fleet_port[s2]}/scep" "$ch" lb-resend
check "enrollment at s2 directly" got_cert "$work/r"
cp "$work/r/cert.pem" "$work/r/first.pem"
rm -f "$work/r/cert.pem"
enroll "$work/r" "http://127.0.0.1:${fleet_port[s3]}/scep" "$ch" lb-resend
check "the same transaction resent to s3 gets the same certificate (same serial)" bash -c "
  grep -q 'server returned a certificate' '$work/r/out.txt' || { cat '$work/r/out.txt'; exit 1; }
  [ \"\$(openssl x509 -in '$work/r/cert.pem' -noout -serial)\" = \"\$(openssl x509 -in '$work/r/first.pem' -noout -serial)\" ]"
check "the consumed challenge does not serve a different key (another transaction)" bash -c "
  mkdir -p '$work/r3'; cd '$work/r3' && ! timeout 60 scepclient -server-url '$lb/scep' -challenge '$ch' -cn lb-resend-other \
    -private-key key.pem -certificate cert.pem 2>&1 | grep -q 'server returned a certificate'"

# One challenge, 20 parallel clients through nginx (each its own key and subject): exactly one wins.
ch=$(challenge)
pids=()
for i in $(seq 1 20); do enroll "$work/race$i" "$lb/scep" "$ch" "lb-race-$i" & pids+=($!); done
for p in "${pids[@]}"; do wait "$p"; done
winners=$(for i in $(seq 1 20); do grep -l 'server returned a certificate' "$work/race$i/out.txt" 2>/dev/null; done | wc -l)
check "one challenge raced by 20 scepclient runs through nginx: exactly one certificate ($winners)" test "$winners" = 1
check "the 19 others were refused (failInfo), none hung" bash -c "
  [ \$(grep -l 'failInfo' '$work'/race*/out.txt | wc -l) = 19 ] || tail -n 2 '$work'/race*/out.txt"
check "ca-local issued exactly one certificate to the racers" bash -c "
  source '$(dirname "$0")/../support/servers/postgresql.sh'; PG_DIR='$PG_DIR' PG_PORT='$PG_PORT'
  [ \"\$(pg_sql \"SELECT count(*) FROM $iss WHERE subject LIKE '%lb-race-%'\")\" = 1 ]"

# --- The CRL under a leader lease ---
crl_number() { openssl crl -inform "${2:-DER}" -in "$1" -noout -crlnumber 2>/dev/null | sed 's/.*=//'; }
numbers="$work/crl.numbers"; : >"$numbers"
# fetch_crl URL FILE: fetches, records "crlnumber sha256" (hex number) in $numbers.
fetch_crl() {
  curl -sf --max-time 10 "$1" -o "$2" || return 1
  printf '%s %s\n' "$(crl_number "$2")" "$(sha256sum <"$2" | cut -c1-16)" >>"$numbers"
}
# revoke_through NAME ID SERIAL: a revoke job run by NAME — the other live instances are paused
# (SIGSTOP, a second or two: far shorter than any lease) until its result is in.
revoke_through() {
  local n=$1 o
  for o in "${names[@]}"; do [ "$o" != "$n" ] && fleet_alive "$o" && kill -STOP "${fleet_pid[$o]}"; done
  revoke_job "$2" "$3" | fleet_submit "$n" >/dev/null
  echo "$2" >"$work/$2.ids"
  fleet_wait_final "$n" 30 "$work/$2.ids" >/dev/null
  local rc=$?
  for o in "${names[@]}"; do [ "$o" != "$n" ] && fleet_alive "$o" && kill -CONT "${fleet_pid[$o]}"; done
  return $rc
}
rev_serials=()
for i in 1 2 3; do rev_serials+=("$(serial_of "$work/k$i/cert.pem")"); done
check "a revocation made through s1" revoke_through s1 lb-rev-1 "${rev_serials[0]}"
check "s1 ran it (3050 in s1's log)" bash -c "grep -q '\"request_id\":\"lb-rev-1\"' '$work'/s1/log/*.jsonl && grep '\"request_id\":\"lb-rev-1\"' '$work'/s1/log/*.jsonl | grep -q '\"id\":3050'"
expect_within 30 "the CRL through nginx lists it" "$(sed 's/^0*//' <<<"${rev_serials[0]}")" \
  bash -c "curl -sf '$lb/crl/corp.crl' | openssl crl -inform DER -noout -text | tr -d ' \t' | sed 's/^0*//'"
fetch_crl "$lb/crl/corp.crl" "$work/crl1.der"
n1=$(crl_number "$work/crl1.der")
check "the CRL verifies against the CA" openssl crl -inform DER -in "$work/crl1.der" -CAfile "$work/chain.pem" -noout

lease_sql="SELECT holder||' '||(expires_at - CAST(EXTRACT(EPOCH FROM now()) AS BIGINT)) FROM ca_local.certconn_leases WHERE name='crl:corp'"
leader_row=$(pg_sql "$lease_sql" 2>/dev/null)
leader=${leader_row%% *}; left=${leader_row##* }
check "a CRL leader holds lease crl:corp ($leader_row)" bash -c "[[ ' s1 s2 s3 ' == *' $leader '* ]]"
[[ " s1 s2 s3 " == *" $leader "* ]] || { leader=s1; left=30; }
echo "# CRL leader $leader, lease left ${left}s, CRL number $n1"
fleet_kill "$leader" KILL
killed_at=$SECONDS
survivors=(); for n in "${names[@]}"; do [ "$n" != "$leader" ] && survivors+=("$n"); done
check "a revocation made through ${survivors[0]} after the leader died" revoke_through "${survivors[0]}" lb-rev-2 "${rev_serials[1]}"
check "a revocation made through ${survivors[1]}" revoke_through "${survivors[1]}" lb-rev-3 "${rev_serials[2]}"
want=$(for s in "${rev_serials[@]}"; do sed 's/^0*//' <<<"$s"; done | tr '\n' ' ')
crl_has_all() {
  fetch_crl "$lb/crl/corp.crl" "$work/crl2.der" || return 1
  local text; text=$(openssl crl -inform DER -in "$work/crl2.der" -noout -text | tr -d ' \t' | sed 's/^0*//')
  local s; for s in $want; do grep -qi "^SerialNumber:0*$s\$" <<<"$text" || return 1; done
}
limit=$(( ${left:-30} + 20 ))
if wait_until "$limit" crl_has_all; then
  ok "another instance published the CRL with all three revocations $((SECONDS - killed_at)) s after the leader died (lease had ${left}s left; limit ${limit}s)"
else
  fail "another instance published the CRL with all three revocations within ${limit}s of the leader's death" \
    "$(openssl crl -inform DER -in "$work/crl2.der" -noout -text 2>&1 | head -n 30)"
fi
new_leader=$(pg_sql "$lease_sql" 2>/dev/null); new_leader=${new_leader%% *}
check "the lease passed to a survivor ($new_leader), which logged 820 LeadershipAcquired" bash -c "
  [[ ' ${survivors[*]} ' == *' $new_leader '* ]] && grep '\"id\":820' '$work/$new_leader'/log/*.jsonl | grep -q 'crl:corp'"
n2=$(crl_number "$work/crl2.der")
check "the CRL number grew across the change ($n1 → $n2)" "$py" -c "import sys; assert int(sys.argv[2],16) > int(sys.argv[1],16)" "${n1:-0}" "${n2:-0}"
for n in "${survivors[@]}"; do fetch_crl "http://127.0.0.1:${fleet_port[$n]}/crl/corp.crl" "$work/crl.$n.der"; done
check "CRL numbers strictly increase: never two different CRLs under one number, never a step back" "$py" -c "
import sys
seen={}; last=-1
for l in open(sys.argv[1]):
    num,h=l.split(); n=int(num,16)
    assert n>=last, ('went back', last, n); last=max(last,n)
    assert seen.setdefault(n,h)==h, ('two CRLs share number', n)
" "$numbers"
check "openssl crl -text lists the revocations made through all three instances" bash -c "
  text=\$(openssl crl -inform DER -in '$work/crl2.der' -noout -text | tr -d ' \t')
  for s in $want; do grep -qi \"SerialNumber:0*\$s\$\" <<<\"\$text\" || { echo \"missing \$s\"; exit 1; }; done"
check "the three revocations were run by three different instances (3050 in each one's log)" bash -c "
  grep -l '\"request_id\":\"lb-rev-1\"' '$work'/s1/log/*.jsonl >/dev/null &&
  grep -l '\"request_id\":\"lb-rev-2\"' '$work/${survivors[0]}'/log/*.jsonl >/dev/null &&
  grep -l '\"request_id\":\"lb-rev-3\"' '$work/${survivors[1]}'/log/*.jsonl >/dev/null"

for n in "${survivors[@]}"; do stop_checked "$n"; done
echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
