#!/usr/bin/env bash
# Interop: ca-local signs with an issuing key held in a PKCS#11 token (SoftHSM), reached
# through OpenSSL's pkcs11 engine by a pkcs11: URI; the issued leaf verifies with openssl, the
# key never lands on disk, and the URI's PIN never reaches the logs.
# usage: ca_local_pkcs11.sh CERTCONNECTOR_BIN PLUGIN_DIR
set -uo pipefail
source "$(dirname "$0")/lib.sh" pkcs11 "$@"

mkdir -p "$work/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$work/tokens" >"$work/softhsm2.conf"
export SOFTHSM2_CONF="$work/softhsm2.conf"
softhsm2-util --init-token --free --label certconn-ca --pin 24680 --so-pin 13579 >/dev/null
pkcs11-tool --module /usr/lib/softhsm/libsofthsm2.so --login --pin 24680 --keypairgen --key-type EC:prime256v1 \
  --label issuing --id 01 >/dev/null 2>&1
uri="pkcs11:token=certconn-ca;object=issuing;type=private;pin-value=24680"
check "a CA certificate is made with the token's key" \
  openssl req -new -x509 -engine pkcs11 -keyform engine -key "$uri" -subj "/CN=Token CA" -days 30 \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign -out "$work/ca.pem"

cat >"$work/c.toml" <<TOML
[host]
listen = "127.0.0.1:0"
plugin_dir = "$plugins"
state_dir = "state"
log_dir = "log"
[tenant]
plugin = "local"
[ca.token]
plugin = "local"
certificate = "$work/ca.pem"
private_key = "$uri"
[pkcs]
default_ca = "token"
TOML
start_connector "$work/c.toml" || exit 1

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/device.key" 2>/dev/null
openssl pkey -in "$work/device.key" -pubout -out "$work/device.pub"
check "a PKCS job is issued by the token-held CA" \
  "$bin" submit pkcs --config "$work/c.toml" --subject CN=token-leaf --key-type p256 --device-key "$work/device.pub" --wait --out "$work/r"
check "the leaf verifies against the token CA's certificate" bash -c "
  openssl cms -decrypt -inform DER -binary -in '$work/r/password.cms' -inkey '$work/device.key' -out '$work/pw' &&
  openssl cms -decrypt -inform DER -binary -in '$work/r/pfx.cms' -inkey '$work/device.key' |
    openssl pkcs12 -passin 'file:$work/pw' -nokeys -clcerts | openssl x509 -out '$work/leaf.pem' &&
  openssl verify -CAfile '$work/ca.pem' '$work/leaf.pem'"
check "no CA private key was written to the state directory" bash -c "[ -f '$work/state/plugins/ca-local/token/issued.db' ] && ! grep -rl 'PRIVATE KEY' '$work/state/plugins/ca-local'"
check "the PIN in the URI is redacted from the logged configuration" bash -c "! grep -q 24680 '$work/log/operational.jsonl'"

finish
