#!/usr/bin/env bash
# Interop: a Java relying party (JDK 17 PKIX, revocation enabled, the JDK fetching CRLs from the
# distribution points and asking OCSP responders itself) validates leaves issued by ca-local
# through the whole chain: the leaf by OCSP (or its CA's CRL), the issuing CA by the root's CRL
# the host publishes at /crl/<ca>-root.crl.
# usage: pkix_interop.sh CERTCONNECTOR_BIN PLUGIN_DIR
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../lib.sh" java-pkix "$@"

if ! command -v java >/dev/null; then
  echo "java is not installed (scripts/install-deps installs default-jdk-headless)"
  exit 1
fi
java_check() {  # java_check ROOT ISSUING LEAF [--no-ocsp]
  java -Dcom.sun.security.enableCRLDP=true -Dcom.sun.security.crl.timeout=10 -Dcom.sun.security.ocsp.timeout=10 \
    "$here/PkixCheck.java" "$@"
}

port=$($py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
cat >"$work/c.toml" <<TOML
[host]
listen = "127.0.0.1:$port"
plugin_dir = "$plugins"
state_dir = "state"
log_dir = "log"
[tenant]
plugin = "local"
[ca.local]
plugin = "local"
algorithm = "p256"
public_base_url = "$base"
[ca.local.profiles.default]
validity_days = 30
key_usage = ["digitalSignature", "keyEncipherment"]
extended_key_usage = ["clientAuth"]
[ca.legacy]
plugin = "local"
certificate = "$work/legacy/issuing.pem"
private_key = "$work/legacy/issuing-key.pem"
chain = "$work/legacy/root.pem"
public_base_url = "$base"
[revoke]
batch_window_ms = 100
TOML
# A hierarchy as it was before the issuing CA carried the root's CRL distribution point (an
# existing installation, docs/operator-guide.md): the control that shows the check matters.
mkdir -p "$work/legacy" && (
  cd "$work/legacy" &&
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout root-key.pem -out root.pem -days 3650 \
    -subj "/CN=Legacy Root" -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" &&
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout issuing-key.pem -out issuing.csr -subj "/CN=Legacy Issuing" &&
  printf '%s\n' "basicConstraints=critical,CA:TRUE,pathlen:0" "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid:always" >ext.cnf &&
  openssl x509 -req -in issuing.csr -CA root.pem -CAkey root-key.pem -CAcreateserial -days 1825 -sha256 \
    -extfile ext.cnf -out issuing.pem
) >"$work/legacy.log" 2>&1 || { cat "$work/legacy.log"; exit 1; }
cd "$work" || exit 1
start_connector "$work/c.toml" || exit 1

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/device.key" 2>/dev/null
openssl pkey -in "$work/device.key" -pubout -out "$work/device.pub"
"$bin" ca export --config "$work/c.toml" --name local >"$work/chain.pem"
openssl x509 -in "$work/chain.pem" -out "$work/issuing.pem"
awk '/BEGIN CERT/{n++} n==2' "$work/chain.pem" >"$work/root.pem"
issue() {  # issue NAME [CA]
  "$bin" submit pkcs --config "$work/c.toml" --subject "CN=$1" --key-type p256 --device-key "$work/device.pub" \
    ${2:+--ca $2} --wait --out "$work/$1" >/dev/null &&
    $py -c "import json,sys; print(json.load(open(sys.argv[1]))['result']['certificate_pem'], end='')" "$work/$1/result.json" >"$work/$1.pem"
}
serial() { openssl x509 -in "$work/$1.pem" -noout -serial | cut -d= -f2; }

check "leaves are issued (two by ca local, one by ca legacy)" bash -c "$(declare -f issue); bin='$bin' work='$work' py='$py';
  issue erin && issue frank && issue gina legacy"
check "the root is self-signed and the issuing CA chains to it" openssl verify -CAfile "$work/root.pem" "$work/issuing.pem"
expect "the issuing CA certificate names the root's CRL" "URI:$base/crl/local-root.crl" \
  openssl x509 -in "$work/issuing.pem" -noout -ext crlDistributionPoints
expect "and where the root certificate is (AIA caIssuers)" "CA Issuers - URI:$base/ca/local-root.crt" \
  openssl x509 -in "$work/issuing.pem" -noout -ext authorityInfoAccess

expect "Java PKIX (OCSP for the leaf, the root's CRL for the issuing CA) accepts a good leaf" "^good$" \
  java_check "$work/root.pem" "$work/issuing.pem" "$work/erin.pem"
expect "Java PKIX with CRLs only accepts it too" "^good$" \
  java_check "$work/root.pem" "$work/issuing.pem" "$work/erin.pem" --no-ocsp

expect "revoke erin (keyCompromise)" "succeeded" \
  "$bin" submit revoke --config "$work/c.toml" --ca local --serial "$(serial erin)" --reason keyCompromise --wait
expect "Java PKIX (OCSP) now says erin is revoked" "^revoked: certificate 0" \
  java_check "$work/root.pem" "$work/issuing.pem" "$work/erin.pem"
expect_within 10 "Java PKIX with CRLs only says revoked too (the issuing CA's CRL)" "^revoked: certificate 0" \
  java_check "$work/root.pem" "$work/issuing.pem" "$work/erin.pem" --no-ocsp
expect "frank, not revoked, still validates" "^good$" \
  java_check "$work/root.pem" "$work/issuing.pem" "$work/frank.pem"

# The control: an issuing CA without a distribution point (made before this version) leaves Java
# unable to tell whether the issuing CA is revoked, though the leaf's own OCSP answer is good.
expect "an issuing CA without the root's CRL fails Java PKIX at the issuing CA (OCSP, then CRL fallback)" \
  "^failed: [A-Z_]* at certificate 1: " \
  java_check "$work/legacy/root.pem" "$work/legacy/issuing.pem" "$work/gina.pem"
expect "and with CRLs only: revocation status undetermined at the issuing CA" \
  "^failed: UNDETERMINED_REVOCATION_STATUS at certificate 1" \
  java_check "$work/legacy/root.pem" "$work/legacy/issuing.pem" "$work/gina.pem" --no-ocsp

# The issuing CA itself revoked in the root's CRL (the ceremony after a compromise): Java finds it
# through the issuing certificate's distribution point, so the check covers the whole chain.
expect "the root CRL ceremony lists the issuing CA as revoked" "lists the issuing CA" \
  "$bin" ca root-crl --config "$work/c.toml" --name local --revoke-issuing --reason cACompromise
expect "Java PKIX now refuses frank's chain: the issuing CA is revoked" "^revoked: certificate 1" \
  java_check "$work/root.pem" "$work/issuing.pem" "$work/frank.pem"

finish
