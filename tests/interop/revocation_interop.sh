#!/usr/bin/env bash
# Interop: revoke jobs through the revoke feature and ca-local; what relying parties see is
# checked with their own tools: `openssl verify -crl_check` and `certtool --verify-crl` on the
# CRL fetched from the CRL distribution point, `openssl ocsp` (POST and GET) against the OCSP
# URL in the certificate's AIA, with nonces, verified against the CA.
# usage: revocation_interop.sh CERTCONNECTOR_BIN PLUGIN_DIR
set -uo pipefail
source "$(dirname "$0")/lib.sh" revocation "$@"

port=$($py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
cat >"$work/c.toml" <<TOML
[host]
listen = "127.0.0.1:$port"
plugin_dir = "$plugins"
state_dir = "state"
log_dir = "log"
[jobs]
concurrency = 8
[tenant]
plugin = "local"
[ca.local]
plugin = "local"
algorithm = "p256"
public_base_url = "$base/"
[ca.local.profiles.default]
validity_days = 30
key_usage = ["digitalSignature", "keyEncipherment"]
extended_key_usage = ["clientAuth"]
[ca.rsa]
plugin = "local"
algorithm = "rsa3072"
public_base_url = "$base"
[revoke]
batch_window_ms = 250
TOML
start_connector "$work/c.toml" || exit 1

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/device.key" 2>/dev/null
openssl pkey -in "$work/device.key" -pubout -out "$work/device.pub"
"$bin" ca export --config "$work/c.toml" --name local >"$work/chain.pem"
openssl x509 -in "$work/chain.pem" -out "$work/issuing.pem"
"$bin" ca export --config "$work/c.toml" --name rsa >"$work/rsa-chain.pem"

# issue NAME [CA]: a PKCS job; the leaf certificate lands in $work/NAME.pem
issue() {
  "$bin" submit pkcs --config "$work/c.toml" --subject "CN=$1" --key-type p256 --device-key "$work/device.pub" \
    ${2:+--ca $2} --wait --out "$work/$1" >/dev/null &&
    $py -c "import json,sys; print(json.load(open(sys.argv[1]))['result']['certificate_pem'], end='')" "$work/$1/result.json" >"$work/$1.pem"
}
serial() { openssl x509 -in "$work/$1.pem" -noout -serial | cut -d= -f2; }
crl_bundle() {  # the CRL from the distribution point, with the chain, for openssl verify
  curl -sf "$base/crl/local.crl" -o "$work/crl.der" && openssl crl -inform DER -in "$work/crl.der" -out "$work/crl.pem" &&
    cat "$work/chain.pem" "$work/crl.pem" >"$work/chain+crl.pem"
}

check "certificates are issued (three for ca local, one for ca rsa)" bash -c "$(declare -f issue); bin='$bin' work='$work' py='$py';
  issue alice && issue bob && issue carol && issue dave rsa"
expect "issued certificates carry the CRL distribution point" "URI:$base/crl/local.crl" \
  openssl x509 -in "$work/alice.pem" -noout -ext crlDistributionPoints
expect "and the AIA: OCSP responder and CA issuers" "OCSP - URI:$base/ocsp/local" \
  openssl x509 -in "$work/alice.pem" -noout -ext authorityInfoAccess
check "the CA issuers URL serves the issuing CA certificate (DER)" bash -c "
  curl -sf '$base/ca/local.crt' | openssl x509 -inform DER -noout -fingerprint -sha256 >'$work/a' &&
  openssl x509 -in '$work/issuing.pem' -noout -fingerprint -sha256 >'$work/b' && cmp '$work/a' '$work/b'"

check "before revocation: openssl verify -crl_check passes" bash -c "$(declare -f crl_bundle); base='$base' work='$work';
  crl_bundle && openssl verify -crl_check -CAfile '$work/chain+crl.pem' '$work/alice.pem'"
expect "before revocation: OCSP (POST) says good, response verified, nonce echoed" "alice.pem: good" \
  openssl ocsp -issuer "$work/issuing.pem" -cert "$work/alice.pem" -url "$base/ocsp/local" -CAfile "$work/chain.pem"

alice=$(serial alice)
expect "revoke alice (keyCompromise)" "succeeded: serial $alice" \
  "$bin" submit revoke --config "$work/c.toml" --ca local --serial "$alice" --reason keyCompromise --wait
expect "revoking again succeeds with a note, and the first reason stands" "already revoked (keyCompromise" \
  "$bin" submit revoke --config "$work/c.toml" --ca local --serial "$alice" --reason superseded --wait
expect "a lower-case serial with leading zeros names the same certificate" "already revoked" \
  "$bin" submit revoke --config "$work/c.toml" --ca local --serial "000$(tr 'A-F' 'a-f' <<<"$alice")" --wait

# A fetch may answer the previous CRL (still valid) while a slow generation makes the next one
# (docs/operator-guide.md): on a loaded machine that can be the case, so CRL checks retry.
expect_within 10 "after revocation: openssl verify -crl_check says revoked" "certificate revoked" bash -c "$(declare -f crl_bundle); base='$base' work='$work';
  crl_bundle && openssl verify -crl_check -CAfile '$work/chain+crl.pem' '$work/alice.pem'"
check "bob, not revoked, still verifies with the new CRL" openssl verify -crl_check -CAfile "$work/chain+crl.pem" "$work/bob.pem"
expect "certtool --verify-crl verifies our CRL's signature" "Verified" \
  certtool --verify-crl --load-ca-certificate "$work/issuing.pem" --infile "$work/crl.pem"
expect "the CRL entry carries the reason code" "Key Compromise" openssl crl -in "$work/crl.pem" -noout -text
expect "the CRL has a CRL number and a nextUpdate" "nextUpdate=" bash -c "openssl crl -in '$work/crl.pem' -noout -text | grep -A1 'CRL Number'; openssl crl -in '$work/crl.pem' -noout -nextupdate"
check "the CRL number increases with each new CRL" bash -c "
  n1=\$(openssl crl -in '$work/crl.pem' -noout -crlnumber | cut -d= -f2)
  '$bin' submit revoke --config '$work/c.toml' --serial '$(serial carol)' --reason cessationOfOperation --wait >/dev/null &&
  for i in \$(seq 20); do
    curl -sf '$base/crl/local.crl' | openssl crl -inform DER -noout -crlnumber >'$work/n2' &&
      n2=\$(cut -d= -f2 '$work/n2') && [ \$((n2)) -gt \$((n1)) ] && exit 0
    sleep 0.5
  done; exit 1"

out=$(openssl ocsp -issuer "$work/issuing.pem" -cert "$work/alice.pem" -url "$base/ocsp/local" -CAfile "$work/chain.pem" -resp_text 2>&1)
expect "OCSP (POST) says revoked, with reason and time" "Reason: keyCompromise" echo "$out"
expect "the OCSP response verifies (delegated responder certified by the CA)" "Response verify OK" echo "$out"
expect "the responder certificate has id-pkix-ocsp-nocheck and OCSPSigning" "OCSP No Check" echo "$out"
expect "the client's nonce is echoed" "OCSP Nonce" echo "$out"
# RFC 6960 appendix A.1: GET with the url-encoded base64 request in the path.
check "OCSP over GET (RFC 6960 A.1) answers too, and verifies" bash -c "
  openssl ocsp -issuer '$work/issuing.pem' -cert '$work/bob.pem' -no_nonce -reqout '$work/req.der' >/dev/null 2>&1
  req=\$($py -c 'import base64,sys,urllib.parse; print(urllib.parse.quote(base64.b64encode(open(sys.argv[1],\"rb\").read()).decode(), safe=\"\"))' '$work/req.der')
  curl -sf '$base/ocsp/local/'\"\$req\" -o '$work/resp.der' &&
  openssl ocsp -respin '$work/resp.der' -issuer '$work/issuing.pem' -cert '$work/bob.pem' -CAfile '$work/chain.pem' 2>&1 | grep -q 'bob.pem: good'"
expect "OCSP for a serial the CA never issued says unknown" "unknown" bash -c "
  openssl ocsp -issuer '$work/issuing.pem' -serial 0x1234567 -url '$base/ocsp/local' -CAfile '$work/chain.pem' 2>&1"
expect "OCSP for another CA's certificate is refused as unauthorized" "unauthorized" bash -c "
  openssl ocsp -issuer '$work/rsa-chain.pem' -cert '$work/dave.pem' -url '$base/ocsp/local' -CAfile '$work/chain.pem' 2>&1"
expect "garbage to the OCSP responder gets malformedRequest, not a crash" "malformedrequest" bash -c "
  head -c 300 /dev/urandom | curl -s --data-binary @- -H 'Content-Type: application/ocsp-request' '$base/ocsp/local' -o '$work/bad.der';
  openssl ocsp -respin '$work/bad.der' -noverify -resp_text 2>&1 | tr 'A-Z' 'a-z'"

# Errors map onto the Intune revocation codes.
expect "an unknown serial fails with not_found / 4004" '"error_code":4004' \
  "$bin" submit revoke --config "$work/c.toml" --ca local --serial 0DEADBEEF --wait
expect "a serial of another issuer fails with not_found / 4004" '"error_code":4004' \
  "$bin" submit revoke --config "$work/c.toml" --ca local --serial "$(serial dave)" --issuer "CN=Someone Else" --wait
expect "an unknown reason fails with invalid_argument / 4002" '"error_code":4002' \
  "$bin" submit revoke --config "$work/c.toml" --ca local --serial "$(serial bob)" --reason sometimes --wait
expect "an unknown CA fails as not found, naming the configured ones" '"error_code":4004' \
  "$bin" submit revoke --config "$work/c.toml" --ca nosuch --serial "$(serial bob)" --wait
expect "revoke at the RSA CA, naming the issuer" "succeeded" \
  "$bin" submit revoke --config "$work/c.toml" --ca rsa --serial "$(serial dave)" \
  --issuer "$(openssl x509 -in "$work/dave.pem" -noout -issuer -nameopt RFC2253 | sed 's/^issuer=//')" --wait
expect_within 10 "the RSA CA's CRL lists it" "$(serial dave)" bash -c "
  curl -sf '$base/crl/rsa.crl' | openssl crl -inform DER -noout -text"

# A batch: 40 jobs at once go to the CA in a few calls; all revoked, all in the CRL.
for i in $(seq 1 40); do
  "$bin" submit pkcs --config "$work/c.toml" --subject "CN=batch$i" --key-type p256 --device-key "$work/device.pub" --wait --out "$work/b$i" >/dev/null
done
pids=()
for i in $(seq 1 40); do
  s=$($py -c "import json,sys; print(json.load(open(sys.argv[1]))['result']['serial'])" "$work/b$i/result.json")
  "$bin" submit revoke --config "$work/c.toml" --serial "$s" --reason superseded --wait >"$work/r$i.out" 2>&1 &
  pids+=($!)
done
wait "${pids[@]}"  # not a bare wait: the connector is a background job too
expect "40 concurrent revocations all succeed" "^40$" bash -c "grep -l succeeded '$work'/r*.out | wc -l"
expect "they went to the CA in batches (a 3050 event from a CA call carrying several)" "yes" bash -c "
  grep '\"id\":3050,' '$work/log/operational.jsonl' | grep -q '\"batch\":[2-9]' && echo yes"
expect_within 10 "the CRL lists all 42 revoked certificates of CA local" "^42$" bash -c "
  curl -sf '$base/crl/local.crl' | openssl crl -inform DER -noout -text | grep -c 'Serial Number'"

expect "events: 3020 received, 3050 revoked, 3000 in Admin, 3051/3001 for failures" "ok" bash -c "
  for id in 3020 3050 3102; do grep -q '\"id\":'\$id',' '$work/log/operational.jsonl' || { echo missing \$id; exit 1; }; done
  for id in 3000 3001; do grep -q '\"id\":'\$id',' '$work/log/admin.jsonl' || { echo missing \$id; exit 1; }; done
  grep -q '\"id\":401,' '$work/log/operational.jsonl' || { echo missing 401; exit 1; }
  echo ok"
expect "/crl for an unknown CA is 404" "404" curl -s -o /dev/null -w '%{http_code}' "$base/crl/nosuch.crl"

finish
