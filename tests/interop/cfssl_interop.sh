#!/usr/bin/env bash
# Interop: a third-party CA plugin, built the way a vendor builds one, against a real CA.
#   1. the SDK is installed from the build tree to a temporary prefix (component "sdk");
#   2. examples/ca-cfssl is copied out of the source tree and built from that prefix only
#      (find_package(CertconnSDK 1.2), certconn_add_plugin), in its own build directory;
#   3. a real `cfssl serve` (Debian golang-cfssl, cfssl 1.2) runs on loopback with a CA made by
#      `cfssl gencert -initca` and a SQLite certdb whose schema this script creates;
#   4. the connector loads the tree's plugins plus the example and: issues a PKCS job (authsign)
#      and a SCEP enrollment (micromdm scepclient) through cfssl, both verifying with
#      `openssl verify`; revokes through cfssl so the serial is in cfssl's CRL; refuses bad
#      [ca.<name>] sections; and retries while cfssl is down.
# usage: cfssl_interop.sh BUILD_DIR CERTCONNECTOR_BIN PLUGIN_DIR
set -uo pipefail
build=$(realpath "$1")
src=$(realpath "$(dirname "$0")/../..")
source "$(dirname "$0")/lib.sh" cfssl "$2" "$3"
for tool in cfssl cfssljson scepclient cmake; do
  command -v "$tool" >/dev/null || { echo "FAIL - $tool is not installed (scripts/install-deps installs it)"; exit 1; }
done
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  [ -n "${daemon:-}" ] && kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# --- 1. the SDK, installed --------------------------------------------------------------------
prefix="$work/sdk-prefix"
check "cmake --install --component sdk installs the SDK to a fresh prefix" \
  cmake --install "$build" --component sdk --prefix "$prefix"
check "the prefix holds the headers, the static libraries, the CMake package and certconn-sdk.pc" bash -c "
  for f in include/certconn/abi.h include/certconn/sdk.hpp include/certconn/events.h include/certconn/crypto.hpp \
           include/certconn/http_client.hpp lib/libcertconn_crypto.a lib/libcertconn_http.a \
           lib/cmake/CertconnSDK/CertconnSDKConfig.cmake lib/cmake/CertconnSDK/CertconnSDKConfigVersion.cmake \
           lib/cmake/CertconnSDK/CertconnSDKTargets.cmake lib/cmake/CertconnSDK/CertconnSDKPlugin.cmake \
           lib/pkgconfig/certconn-sdk.pc; do
    [ -f '$prefix/'\$f ] || { echo missing \$f; exit 1; }
  done"
check "only the SDK: no daemon, no plugin, no host header in the prefix" bash -c "
  ! find '$prefix' -name certconnector -o -name '*.so' -o -name 'Connector.hpp' | grep -q ."
abi=$(sed -n 's/^#define CERTCONN_ABI_MAJOR \([0-9]*\)$/\1/p' "$src/sdk/include/certconn/abi.h").$(sed -n 's/^#define CERTCONN_ABI_MINOR \([0-9]*\)$/\1/p' "$src/sdk/include/certconn/abi.h")
expect "pkg-config reports the ABI version of abi.h ($abi)" "^$abi\$" \
  env PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --modversion certconn-sdk
check "pkg-config's include path is the prefix's" bash -c "
  PKG_CONFIG_PATH='$prefix/lib/pkgconfig' pkg-config --cflags certconn-sdk | grep -qF -- '-I$prefix/include'"

# find_package's version check: SameMajorVersion, never newer than installed.
version_probe() {  # version_probe VERSION -> configures a project asking for it
  local d="$work/probe-$1"; mkdir -p "$d"
  printf 'cmake_minimum_required(VERSION 3.25)\nproject(p LANGUAGES CXX)\nfind_package(CertconnSDK %s REQUIRED)\nmessage(STATUS "found SDK ${CertconnSDK_VERSION}")\n' "$1" >"$d/CMakeLists.txt"
  cmake -S "$d" -B "$d/b" -DCMAKE_PREFIX_PATH="$prefix" 2>&1
}
expect "find_package(CertconnSDK 1.0) accepts the installed $abi" "found SDK $abi" version_probe 1.0
expect "find_package(CertconnSDK 1.9) refuses it (newer minor)" "not compatible\|could not be found\|Could not find" version_probe 1.9
expect "find_package(CertconnSDK 2.0) refuses it (other major)" "not compatible\|could not be found\|Could not find" version_probe 2.0

# Header-only use: abi.h + sdk.hpp, flags from pkg-config, no SDK library linked.
mkdir -m 0755 "$work/header-only"
cat >"$work/header-only.cpp" <<'CPP'
#include <certconn/sdk.hpp>
class Echo final : public certconn::sdk::FeaturePlugin {
public:
    explicit Echo(certconn::sdk::Host&) {}
    std::string run_job(const std::string& job) override { return job; }
};
CERTCONN_PLUGIN(Echo, "header-only-echo", "1.0.0", "2026-12-07", "built from pkg-config's flags alone", nullptr)
CPP
check "a header-only plugin builds with pkg-config --cflags certconn-sdk alone" bash -c "
  g++ -std=c++20 -O1 -fPIC -shared -fvisibility=hidden -fvisibility-inlines-hidden -fno-gnu-unique -Wl,--no-undefined \
    \$(PKG_CONFIG_PATH='$prefix/lib/pkgconfig' pkg-config --cflags certconn-sdk) '$work/header-only.cpp' -o '$work/header-only/header-only-echo.so' &&
  chmod 0644 '$work/header-only/header-only-echo.so'"
expect "certconnector plugins --dir accepts it" '"header-only-echo"' "$bin" plugins --dir "$work/header-only" --json

# --- 2. the example, out of tree ---------------------------------------------------------------
# A copy outside the source tree: a relative path into ../../sdk could not resolve.
cp -r "$src/examples/ca-cfssl" "$work/ca-cfssl-src"
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
check "examples/ca-cfssl configures against the installed SDK only" \
  cmake -S "$work/ca-cfssl-src" -B "$work/ca-cfssl-build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_PREFIX_PATH="$prefix" "${launcher[@]}"
check "examples/ca-cfssl builds without warnings" bash -c "
  CCACHE_BASEDIR='$work' nice -n 10 cmake --build '$work/ca-cfssl-build' >'$work/ca-cfssl-build.log' 2>&1 || { cat '$work/ca-cfssl-build.log'; exit 1; }
  ! grep -q 'warning:' '$work/ca-cfssl-build.log' || { cat '$work/ca-cfssl-build.log'; exit 1; }"
check "its build never refers to the connector's source or build tree" bash -c "
  ! grep -rlF -e '$src/sdk' -e '$src/host' -e '$build' '$work/ca-cfssl-build' --include='*.ninja' --include=CMakeCache.txt"
check "the plugin exports its two entry points, none of its own or the SDK's code, and no STB_GNU_UNIQUE symbol" bash -c "
  so='$work/ca-cfssl-build/ca-cfssl.so'
  nm -D --defined-only \"\$so\" | grep -q ' certconn_plugin_query\$' && nm -D --defined-only \"\$so\" | grep -q ' certconn_plugin_init\$' &&
  ! nm -DC --defined-only \"\$so\" | grep -E 'cfssl_plugin::|certconn::' &&
  ! readelf -sW \"\$so\" | grep -q UNIQUE"

# The plugin directory the daemon loads: the tree's plugins plus the example, owned by us, 0755/0644.
mkdir -m 0755 "$work/plugins"
cp "$plugins"/*.so "$work/ca-cfssl-build/ca-cfssl.so" "$work/plugins/"
chmod 0644 "$work/plugins"/*.so
expect "certconnector plugins --dir accepts the example as CA plugin 'cfssl'" '"cfssl"' \
  "$bin" plugins --dir "$work/plugins" --json

# --- 3. a real cfssl ---------------------------------------------------------------------------
mkdir -p "$work/cfssl" "$work/www"
cd "$work/cfssl"
# RSA: micromdm scepclient encrypts to the certificates of GetCACert and speaks only RSA.
echo '{"CN":"cfssl Interop CA","key":{"algo":"rsa","size":2048},"names":[{"O":"certconnector interop"}]}' >ca-csr.json
cfssl gencert -initca ca-csr.json 2>/dev/null | cfssljson -bare ca
chmod 600 ca-key.pem
check "cfssl gencert -initca made a CA" openssl x509 -in ca.pem -noout
auth_key=$(openssl rand -hex 16)
printf '%s\n' "$auth_key" >auth.key && chmod 600 auth.key
openssl rand -hex 16 >wrong.key && chmod 600 wrong.key
# Profiles: "authed" requires authsign (auth_key k1); "plain" does not. Their usages differ, so a
# certificate shows which profile signed it.
cat >config.json <<JSON
{"signing": {
   "default": {"expiry": "168h", "usages": ["digital signature", "key encipherment", "client auth"]},
   "profiles": {
     "authed": {"expiry": "72h", "usages": ["digital signature", "key encipherment", "client auth", "email protection"], "auth_key": "k1"},
     "plain":  {"expiry": "48h", "usages": ["digital signature", "key encipherment", "server auth"]}}},
 "auth_keys": {"k1": {"type": "standard", "key": "$auth_key"}}}
JSON
# cfssl's certdb (certdb/sqlite/migrations/001_CreateCertificates.sql) with text/blob columns.
"$py" - <<'PY'
import sqlite3
c = sqlite3.connect("certs.db")
c.executescript("""
CREATE TABLE certificates (serial_number text NOT NULL, authority_key_identifier text NOT NULL, ca_label text,
  status text NOT NULL, reason int, expiry timestamp, revoked_at timestamp, pem text NOT NULL,
  PRIMARY KEY(serial_number, authority_key_identifier));
CREATE TABLE ocsp_responses (serial_number text NOT NULL, authority_key_identifier text NOT NULL, body text NOT NULL,
  expiry timestamp, PRIMARY KEY(serial_number, authority_key_identifier));
""")
c.commit()
PY
echo "{\"driver\":\"sqlite3\",\"data_source\":\"$work/cfssl/certs.db\"}" >db.json
cfport=$(free_port)
start_cfssl() {
  cfssl serve -address 127.0.0.1 -port "$cfport" -ca "$work/cfssl/ca.pem" -ca-key "$work/cfssl/ca-key.pem" \
    -config "$work/cfssl/config.json" -db-config "$work/cfssl/db.json" >>"$work/cfssl/serve.log" 2>&1 &
  cfssl_pid=$!
  pids+=("$cfssl_pid")
  for _ in $(seq 1 100); do curl -sf -d '{}' "http://127.0.0.1:$cfport/api/v1/cfssl/info" >/dev/null && return 0; sleep 0.1; done
  return 1
}
# Not through check (a subshell): the pid must reach cleanup.
if start_cfssl; then ok "cfssl serve answers on loopback"; else fail "cfssl serve answers on loopback" "$(cat serve.log)"; fi

# cfssl 1.2 has no CRL endpoint: its CRL is `cfssl gencrl` over the certdb's revoked serials,
# published over HTTP (what an operator's cron job does; the plugin's crl_url points at it).
publish_crl() {
  "$py" -c "
import sqlite3
for (s,) in sqlite3.connect('$work/cfssl/certs.db').execute(\"select serial_number from certificates where status = 'revoked'\"):
    print(s)" >"$work/cfssl/revoked.txt"
  cfssl gencrl "$work/cfssl/revoked.txt" "$work/cfssl/ca.pem" "$work/cfssl/ca-key.pem" >"$work/www/cfssl.crl.tmp" &&
    mv "$work/www/cfssl.crl.tmp" "$work/www/cfssl.crl"
}
publish_crl
wwwport=$(free_port)
"$py" -m http.server --bind 127.0.0.1 --directory "$work/www" "$wwwport" >"$work/www.log" 2>&1 &
pids+=($!)
deadport=$(free_port)
cd "$work"

# --- 4. the connector --------------------------------------------------------------------------
cat >"$work/c.toml" <<TOML
[host]
listen = "127.0.0.1:0"
plugin_dir = "$work/plugins"
state_dir = "state"
log_dir = "log"
[jobs]
max_attempts = 100
retry_initial_ms = 300
retry_max_ms = 1500
[tenant]
plugin = "local"
scep_challenges = { devices = "cf-challenge" }
[ca.cf]
plugin = "cfssl"
url = "http://127.0.0.1:$cfport"
auth_key_file = "$work/cfssl/auth.key"
crl_url = "http://127.0.0.1:$wwwport/cfssl.crl"
crl_cache_seconds = 0
[ca.cf.profiles.default]
cfssl_profile = "authed"
[ca.cfplain]
plugin = "cfssl"
url = "http://127.0.0.1:$cfport/"
[ca.cfplain.profiles.default]
cfssl_profile = "plain"
[ca.cfplain.profiles.needs-auth]
cfssl_profile = "authed"
[ca.cfwrongkey]
plugin = "cfssl"
url = "http://127.0.0.1:$cfport"
auth_key_file = "$work/cfssl/wrong.key"
[ca.cfwrongkey.profiles.default]
cfssl_profile = "authed"
[ca.cfdown]
plugin = "cfssl"
url = "http://127.0.0.1:$deadport"
connect_timeout_seconds = 2
[ca.cfbadurl]
plugin = "cfssl"
url = "ftp://127.0.0.1:$cfport"
[pkcs]
default_ca = "cf"
[scep.profiles.devices]
path = "/scep"
ca = "cf"
allow_single_des = true
min_digest = "sha1"
TOML
# start_connector sets its own EXIT trap; ours also stops cfssl and the CRL server.
if ! start_connector "$work/c.toml"; then trap cleanup EXIT; exit 1; fi
trap cleanup EXIT
cc() { "$bin" "$@" --config "$work/c.toml"; }

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/device.key" 2>/dev/null
openssl pkey -in "$work/device.key" -pubout -out "$work/device.pub"
leaf_of() {  # leaf_of DIR: the certificate of a PKCS result, opened with the device key
  openssl cms -decrypt -inform DER -binary -in "$1/password.cms" -inkey "$work/device.key" -out "$1/pw" &&
    openssl cms -decrypt -inform DER -binary -in "$1/pfx.cms" -inkey "$work/device.key" |
    openssl pkcs12 -passin "file:$1/pw" -nokeys -clcerts | openssl x509 -out "$1/leaf.pem"
}

expect "PKCS: a job for CA 'cf' is issued by cfssl" "succeeded: serial" \
  cc submit pkcs --ca cf --subject "CN=cf-pkcs,O=Interop" --san email:cf-pkcs@example.com --device-key "$work/device.pub" --wait --out "$work/pkcs1"
check "PKCS: the leaf verifies with openssl verify -CAfile against cfssl's CA" bash -c "
  $(declare -f leaf_of); work='$work'; leaf_of '$work/pkcs1' && openssl verify -CAfile '$work/cfssl/ca.pem' '$work/pkcs1/leaf.pem'"
check "PKCS: signed through authsign under cfssl profile 'authed' (its E-mail Protection usage, its SAN)" bash -c "
  openssl x509 -in '$work/pkcs1/leaf.pem' -noout -ext extendedKeyUsage,subjectAltName | grep -q 'E-mail Protection' &&
  openssl x509 -in '$work/pkcs1/leaf.pem' -noout -ext subjectAltName | grep -q 'cf-pkcs@example.com'"
serial1=$(openssl x509 -in "$work/pkcs1/leaf.pem" -noout -serial | cut -d= -f2)
check "PKCS: cfssl recorded the certificate in its certdb (decimal serial, empty AKI)" "$py" -c "
import sqlite3
rows = sqlite3.connect('$work/cfssl/certs.db').execute('select authority_key_identifier, status from certificates where serial_number = ?', (str(int('$serial1', 16)),)).fetchall()
assert rows == [('', 'good')], rows"
check "PKCS: event 405 names the CA and cfssl's serial" bash -c "grep '\"id\":405' '$work/log/operational.jsonl' | grep -q '\"ca\":\"cf\"'"
expect "PKCS: CA 'cfplain' signs through sign (no auth key) under profile 'plain'" "succeeded: serial" \
  cc submit pkcs --ca cfplain --subject "CN=cf-plain" --device-key "$work/device.pub" --wait --out "$work/pkcs2"
check "PKCS: that leaf has the 'plain' profile's TLS Web Server usage" bash -c "
  $(declare -f leaf_of); work='$work'; leaf_of '$work/pkcs2' && openssl verify -CAfile '$work/cfssl/ca.pem' '$work/pkcs2/leaf.pem' &&
  openssl x509 -in '$work/pkcs2/leaf.pem' -noout -ext extendedKeyUsage | grep -q 'TLS Web Server Authentication'"

check "ca export --name cf prints cfssl's signer (describe, from cfssl's info)" bash -c "
  '$bin' ca export --name cf --config '$work/c.toml' | openssl x509 -noout -fingerprint -sha256 >'$work/export.fp' &&
  openssl x509 -in '$work/cfssl/ca.pem' -noout -fingerprint -sha256 | cmp - '$work/export.fp'"

# Refusals: not retryable, with cfssl's reason.
expect "a profile needing authsign, without auth_key_file, is denied naming the fix" "auth_key_file" \
  cc submit pkcs --ca cfplain --profile needs-auth --subject "CN=cf-noauth" --device-key "$work/device.pub" --wait
expect "a wrong auth key is denied (invalid token), not retried" "invalid token" \
  cc submit pkcs --ca cfwrongkey --subject "CN=cf-wrongkey" --device-key "$work/device.pub" --wait
check "the denials logged event 407, and the auth key never reached the logs" bash -c "
  grep -q '\"id\":407' '$work/log/operational.jsonl' && ! grep -rqF -e '$auth_key' -e \"\$(cat '$work/cfssl/wrong.key')\" '$work/log'"
expect "an unknown profile is not found, naming the configured ones" "profiles: default, needs-auth" \
  cc submit pkcs --ca cfplain --profile gold --subject "CN=cf-gold" --device-key "$work/device.pub" --wait

# --- SCEP through cfssl (micromdm scepclient) ---
port=$("$bin" status --config "$work/c.toml" --json | "$py" -c 'import json,sys; print(json.load(sys.stdin)["port"])')
mkdir -p "$work/scep" && cd "$work/scep"
expect "SCEP: scepclient enrolls against a profile whose CA is cfssl" "server returned a certificate" \
  timeout 60 scepclient -server-url "http://127.0.0.1:$port/scep" -challenge cf-challenge -cn cf-scep-device -private-key key.pem -certificate cert.pem
check "SCEP: the certificate verifies with openssl verify -CAfile against cfssl's CA" \
  openssl verify -CAfile "$work/cfssl/ca.pem" "$work/scep/cert.pem"
check "SCEP: cfssl's issuer and the device's subject" bash -c "
  openssl x509 -in cert.pem -noout -issuer | grep -q 'cfssl Interop CA' && openssl x509 -in cert.pem -noout -subject | grep -q cf-scep-device"
cd "$work"

# --- Revocation through cfssl, seen in cfssl's CRL ---
expect "revoke: submit revoke --ca cf succeeds" "succeeded" \
  cc submit revoke --ca cf --serial "$serial1" --reason keyCompromise --wait
check "revoke: cfssl's certdb holds it as revoked, reason keyCompromise (1)" "$py" -c "
import sqlite3
rows = sqlite3.connect('$work/cfssl/certs.db').execute('select status, reason from certificates where serial_number = ?', (str(int('$serial1', 16)),)).fetchall()
assert rows == [('revoked', 1)], rows"
publish_crl
check "revoke: the serial is in cfssl's CRL (openssl crl -text), which cfssl's CA signed" bash -c "
  base64 -d '$work/www/cfssl.crl' >'$work/cfssl.crl.der' &&
  openssl crl -inform DER -in '$work/cfssl.crl.der' -noout -text | grep -q 'Serial Number: $serial1' &&
  openssl crl -inform DER -in '$work/cfssl.crl.der' -CAfile '$work/cfssl/ca.pem' -noout 2>&1 | grep -q 'verify OK'"
check "revoke: openssl verify -crl_check refuses the revoked leaf" bash -c "
  openssl crl -inform DER -in '$work/cfssl.crl.der' -out '$work/cfssl.crl.pem' &&
  ! openssl verify -crl_check -CAfile '$work/cfssl/ca.pem' -CRLfile '$work/cfssl.crl.pem' '$work/pkcs1/leaf.pem' &&
  openssl verify -crl_check -CAfile '$work/cfssl/ca.pem' -CRLfile '$work/cfssl.crl.pem' '$work/pkcs2/leaf.pem'"
expect_within 15 "the connector publishes the out-of-tree plugin's CRL at /crl/cf.crl (host publication), listing it" \
  "Serial Number: $serial1" bash -c "curl -sf 'http://127.0.0.1:$port/crl/cf.crl' | openssl crl -inform DER -noout -text"
expect "revoke: again is a success with the first reason" "already revoked (keyCompromise" \
  cc submit revoke --ca cf --serial "$serial1" --reason superseded --wait
expect "revoke: a serial cfssl never issued is not found / 4004" '"error_code":4004' \
  cc submit revoke --ca cf --serial 0DEADBEEF --wait
expect "revoke: an unknown reason is invalid_argument / 4002" '"error_code":4002' \
  cc submit revoke --ca cf --serial "$serial1" --reason sometimes --wait

# --- The plugin's calls through ca-harness (examples/ca-cfssl/test): the C ABI, no connector ---
harness="$work/ca-cfssl-build/ca-harness"
so="$work/ca-cfssl-build/ca-cfssl.so"
mkdir -p "$work/h-state"
cf_section="{\"url\":\"http://127.0.0.1:$cfport\",\"crl_url\":\"http://127.0.0.1:$wwwport/cfssl.crl\",\"crl_cache_seconds\":0}"
h() { "$harness" "$so" "$work/h-state" hcf "$@"; }
expect "query crl: the CRL from crl_url, with the revoked serial" "Serial Number: $serial1" bash -c "
  '$harness' '$so' '$work/h-state' hcf '$cf_section' query '{\"op\":\"crl\"}' |
  '$py' -c 'import json,sys,base64; sys.stdout.buffer.write(base64.b64decode(json.load(sys.stdin)[\"crl_der\"]))' |
  openssl crl -inform DER -noout -text"
# A CRL of another CA, an expired one (signed by the right key), garbage: all refused.
cd "$work/cfssl"
echo '{"CN":"Another CA","key":{"algo":"ecdsa","size":256}}' >other-csr.json
cfssl gencert -initca other-csr.json 2>/dev/null | cfssljson -bare other
cfssl gencrl revoked.txt other.pem other-key.pem >"$work/www/other.crl"
"$py" - "$work/cfssl/ca.pem" "$work/cfssl/ca-key.pem" "$work/www/expired.crl" <<'PY'
import sys, datetime
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
ca = x509.load_pem_x509_certificate(open(sys.argv[1], "rb").read())
key = serialization.load_pem_private_key(open(sys.argv[2], "rb").read(), None)
now = datetime.datetime.utcnow()
crl = (x509.CertificateRevocationListBuilder().issuer_name(ca.subject)
       .last_update(now - datetime.timedelta(days=2)).next_update(now - datetime.timedelta(days=1))
       .sign(key, hashes.SHA256()))
open(sys.argv[3], "wb").write(crl.public_bytes(serialization.Encoding.DER))
PY
echo "not a CRL" >"$work/www/garbage.crl"
cd "$work"
with_crl() { echo "{\"url\":\"http://127.0.0.1:$cfport\",\"crl_url\":\"http://127.0.0.1:$wwwport/$1\"}"; }
expect "query crl: a CRL signed by another CA is refused (unavailable)" "unavailable.*not signed by cfssl's signer" \
  h "$(with_crl other.crl)" query '{"op":"crl"}'
expect "query crl: an expired CRL is refused (unavailable)" "unavailable.*expired at" h "$(with_crl expired.crl)" query '{"op":"crl"}'
expect "query crl: a body that is no CRL is refused (unavailable)" "unavailable.*is not a CRL" h "$(with_crl garbage.crl)" query '{"op":"crl"}'
expect "query crl: a missing CRL file (404) is unavailable" "unavailable.*HTTP 404" h "$(with_crl missing.crl)" query '{"op":"crl"}'
expect "query crl: without crl_url, cfssl 1.2 has no CRL endpoint: not_supported, naming crl_url" "not_supported.*set crl_url" \
  h "{\"url\":\"http://127.0.0.1:$cfport\"}" query '{"op":"crl"}'
expect "query health: cfssl up" '"healthy":true' h "$cf_section" query '{"op":"health"}'
expect "query health: cfssl down is unhealthy, saying why" '"healthy":false.*127.0.0.1:'"$deadport" \
  h "{\"url\":\"http://127.0.0.1:$deadport\"}" query '{"op":"health"}'
expect "query: an unknown op is not_supported" "not_supported" h "$cf_section" query '{"op":"ocsp"}'
expect "describe: cfssl's signer is the chain" "cfssl Interop CA" h "$cf_section" describe
# Idempotency by request id, then certificate lookup and revocation as the table records them.
openssl req -new -newkey rsa:2048 -nodes -keyout "$work/h.key" -subj "/CN=harness-leaf" -out "$work/h.csr" 2>/dev/null
issue_req=$("$py" -c "import json; print(json.dumps({'request_id':'req-1','csr_pem':open('$work/h.csr').read(),'profile':'default'}))")
h "$cf_section" issue "$issue_req" >"$work/h-issue1.json" 2>/dev/null
h "$cf_section" issue "$issue_req" >"$work/h-issue2.json" 2>/dev/null
check "issue: the same request id twice signs once (already_issued, same serial, one certdb row)" "$py" -c "
import json, sqlite3
a, b = json.load(open('$work/h-issue1.json')), json.load(open('$work/h-issue2.json'))
assert not a['already_issued'] and b['already_issued'] and a['serial'] == b['serial'], (a, b)
assert a['chain_pem'].count('BEGIN CERTIFICATE') == 1 and a['not_after'].endswith('Z'), a
db = sqlite3.connect('$work/cfssl/certs.db')
assert db.execute('select count(*) from certificates where serial_number = ?', (str(int(a['serial'], 16)),)).fetchone()[0] == 1
from cryptography import x509
subjects = [x509.load_pem_x509_certificate(p.encode() if isinstance(p, str) else p).subject.rfc4514_string() for (p,) in db.execute('select pem from certificates')]
assert subjects.count('CN=harness-leaf') == 1, subjects"
hserial=$("$py" -c "import json; print(json.load(open('$work/h-issue1.json'))['serial'])")
expect "query certificate: valid" '"status":"valid"' h "$cf_section" query "{\"op\":\"certificate\",\"serial\":\"$hserial\"}"
expect "revoke with the issuer of another CA is not_found" "not_found.*not the issuer" \
  h "$cf_section" revoke "{\"serial\":\"$hserial\",\"reason\":\"superseded\",\"issuer\":\"CN=Someone Else\"}"
expect "revoke: revoked at cfssl" '"already_revoked":false' h "$cf_section" revoke "{\"serial\":\"$hserial\",\"reason\":\"superseded\"}"
expect "query certificate: now revoked, with the reason" '"status":"revoked".*"revocation_reason":"superseded"' \
  h "$cf_section" query "{\"op\":\"certificate\",\"serial\":\"$hserial\"}"
expect "query certificate: an unknown serial is not_found" "not_found" h "$cf_section" query '{"op":"certificate","serial":"ABCDEF"}'
expect "issue: a CSR whose signature does not verify is invalid_argument" "invalid_argument" \
  h "$cf_section" issue "$("$py" -c "
import json; pem = open('$work/h.csr').read(); lines = pem.splitlines(); body = ''.join(lines[1:-1]); i = len(body) - 10
body = body[:i] + ('A' if body[i] != 'A' else 'B') + body[i+1:]
print(json.dumps({'request_id':'req-bad','csr_pem':lines[0] + '\n' + '\n'.join(body[j:j+64] for j in range(0, len(body), 64)) + '\n' + lines[-1] + '\n'}))")"

# A server that is not cfssl: a 200 that is not its envelope, and an endless answer.
fakeport=$(free_port)
"$py" - "$fakeport" <<'PY' >"$work/fake.log" 2>&1 &
import sys, http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b"{" + b" " * (64 << 20) if self.path.startswith("/huge/") else b"<html>a proxy's error page</html>"
        self.send_response(200); self.send_header("Content-Type", "text/html"); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
pids+=($!)
for _ in $(seq 1 50); do curl -s -o /dev/null -X POST "http://127.0.0.1:$fakeport/x" && break; sleep 0.1; done
expect "a 200 answer that is not cfssl's envelope is unavailable (retryable), saying what was expected" \
  "unavailable.*without cfssl's JSON envelope" h "{\"url\":\"http://127.0.0.1:$fakeport\"}" describe
h "{\"url\":\"http://127.0.0.1:$fakeport/huge\",\"max_response_bytes\":1048576}" describe >/dev/null 2>"$work/h-huge.err"
check "a 64 MiB answer is cut off: unavailable (bounded by max_response_bytes), never parsed" bash -c "
  grep -q '^error unavailable' '$work/h-huge.err' && ! grep -q envelope '$work/h-huge.err'" 
h "{\"url\":\"http://127.0.0.1:$fakeport\"}" issue "${issue_req/req-1/req-2}" >/dev/null 2>"$work/h-408.err"
check "the unreadable answer logged event 408 (CA unreachable / unreadable)" grep -q '^event 408:' "$work/h-408.err"

# --- Bad [ca.<name>] sections ---
bad() {  # bad NAME TOML-LINES: a configuration whose [ca.x] section is wrong; prints config check's output
  printf '[host]\nlisten = "127.0.0.1:0"\nplugin_dir = "%s"\nstate_dir = "%s"\n[tenant]\nplugin = "local"\n[ca.x]\nplugin = "cfssl"\n%s\n' \
    "$work/plugins" "$work/bad-state" "$2" >"$work/bad-$1.toml"
  "$bin" config check --config "$work/bad-$1.toml" 2>&1
}
expect "config check: a missing url is reported" "ca.x.url" bad nourl 'label = ""'
expect "config check: a misspelt key gets a suggestion" "did you mean 'crl_url'" bad typo "url = \"http://127.0.0.1:1\"
crl_ulr = \"http://x/\""
expect "config check: crl_cache_seconds out of range is reported" "ca.x.crl_cache_seconds" bad range "url = \"http://127.0.0.1:1\"
crl_cache_seconds = -5"
expect "config check: a profile without cfssl_profile is reported" "cfssl_profile" bad profile "url = \"http://127.0.0.1:1\"
[ca.x.profiles.default]
template = \"x\""
check "config check: a correct section passes" bash -c "
  printf '[host]\nlisten = \"127.0.0.1:0\"\nplugin_dir = \"$work/plugins\"\nstate_dir = \"$work/bad-state\"\n[tenant]\nplugin = \"local\"\n[ca.x]\nplugin = \"cfssl\"\nurl = \"http://127.0.0.1:1\"\n' >'$work/good.toml' &&
  '$bin' config check --config '$work/good.toml'"
check "open: url = ftp://... makes CA 'cfbadurl' unavailable, naming the key (event 114)" bash -c "
  grep '\"id\":114' '$work/log/'*.jsonl | grep -q 'ca.cfbadurl.url'"

# --- cfssl down: retryable, and the job completes once cfssl is back ---
expect "cfssl unreachable: the job is not failed but retried (still pending after 3 s)" "is still" \
  cc submit pkcs --ca cfdown --subject "CN=cf-down" --device-key "$work/device.pub" --wait --timeout 3
check "cfssl unreachable: event 408 names the CA" bash -c "grep '\"id\":408' '$work/log/'*.jsonl | grep -q '\"ca\":\"cfdown\"'"
kill "$cfssl_pid" && wait "$cfssl_pid" 2>/dev/null
job=$(cc submit pkcs --ca cf --subject "CN=cf-later" --device-key "$work/device.pub" 2>/dev/null | tr -d '[:space:]')
sleep 2
check "cfssl stopped: a job for CA 'cf' is still running (retried), with event 408 for 'cf'" bash -c "
  '$bin' job show '$job' --config '$work/c.toml' | grep -q '\"status\":\"running\"' &&
  grep '\"id\":408' '$work/log/'*.jsonl | grep -q '\"ca\":\"cf\"'"
if start_cfssl; then ok "cfssl restarted on the same port"; else fail "cfssl restarted on the same port" "$(tail -5 "$work/cfssl/serve.log")"; fi
for _ in $(seq 1 60); do cc job show "$job" 2>/dev/null | grep -q '"status":"succeeded"' && break; sleep 0.5; done
expect "cfssl back: the retried job succeeds" '"status":"succeeded"' cc job show "$job"

finish
