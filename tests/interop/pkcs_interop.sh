#!/usr/bin/env bash
# Interop: the real daemon issues PKCS jobs; third-party tools open what it produced.
#   openssl cms -decrypt (both envelopes), openssl pkcs12, GnuTLS certtool --p12-info,
#   python3-cryptography (load_key_and_certificates), openssl verify against `ca export`.
# For RSA and EC device keys, bare keys and certificates, modern and legacy PKCS#12, recrypt,
# and the refusals (forbidden key type and SAN, unknown CA, malformed device key).
# usage: pkcs_interop.sh CERTCONNECTOR_BIN PLUGIN_DIR
set -uo pipefail
source "$(dirname "$0")/lib.sh" interop "$@"

# An existing CA made with the openssl command line, for ca-local's "bring your own CA" mode.
mkdir -p "$work/ext"
openssl req -x509 -newkey rsa:3072 -nodes -subj "/CN=Existing Corp CA" -days 30 \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
  -keyout "$work/ext/ca.key" -out "$work/ext/ca.pem" 2>/dev/null
chmod 600 "$work/ext/ca.key"

cat > "$work/c.toml" <<TOML
[host]
listen = "127.0.0.1:0"
plugin_dir = "$plugins"
state_dir = "state"
log_dir = "log"
[jobs]
concurrency = 2
[tenant]
plugin = "local"
[ca.corp]
plugin = "local"
algorithm = "p384"
[ca.corp.profiles.default]
extended_key_usage = ["clientAuth", "emailProtection"]
[ca.corp.profiles.restricted]
key_types = ["p256"]
san_types = ["email"]
[ca.imported]
plugin = "local"
certificate = "$work/ext/ca.pem"
private_key = "$work/ext/ca.key"
[pkcs]
default_ca = "corp"
TOML

start_connector "$work/c.toml" || exit 1
cc() { "$bin" "$@" --config "$work/c.toml"; }

cc ca export --name corp >"$work/chain.pem"
awk '/BEGIN/{n++} n==1' "$work/chain.pem" >"$work/issuing.pem"
awk '/BEGIN/{n++} n==2' "$work/chain.pem" >"$work/root.pem"
check "ca export prints issuing + root" grep -q "BEGIN CERTIFICATE" "$work/root.pem"

# Device keys: RSA and EC, as bare public keys and as certificates.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/rsa.key" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/ec.key" 2>/dev/null
for k in rsa ec; do
  openssl pkey -in "$work/$k.key" -pubout -out "$work/$k.pub"
  openssl req -new -x509 -key "$work/$k.key" -subj "/CN=device-$k" -days 2 -out "$work/$k.crt" 2>/dev/null
done

open_result() {  # open_result DIR KEY LABEL
  local dir=$1 key=$2 label=$3
  check "$label: openssl cms decrypts the password" \
    openssl cms -decrypt -inform DER -binary -in "$dir/password.cms" -inkey "$key" -out "$dir/password.txt"
  check "$label: openssl cms decrypts the PKCS#12" \
    openssl cms -decrypt -inform DER -binary -in "$dir/pfx.cms" -inkey "$key" -out "$dir/bundle.p12"
  check "$label: openssl pkcs12 opens it" \
    openssl pkcs12 -in "$dir/bundle.p12" -passin "file:$dir/password.txt" -nodes -out "$dir/bundle.pem"
  check "$label: certtool --p12-info opens it" \
    certtool --p12-info --inder --infile "$dir/bundle.p12" --password "$(cat "$dir/password.txt")"
  check "$label: python3-cryptography loads key, leaf and chain" "$py" - "$dir/bundle.p12" "$dir/password.txt" <<'PY'
import sys
from cryptography.hazmat.primitives.serialization import pkcs12
data = open(sys.argv[1], "rb").read()
password = open(sys.argv[2], "rb").read()
key, cert, chain = pkcs12.load_key_and_certificates(data, password)
assert key is not None and cert is not None, "no key or leaf"
assert len(chain) == 2, f"expected issuing + root, got {len(chain)}"
assert key.public_key().public_numbers() == cert.public_key().public_numbers(), "key does not match leaf"
PY
  openssl pkcs12 -in "$dir/bundle.p12" -passin "file:$dir/password.txt" -clcerts -nokeys 2>/dev/null | openssl x509 -out "$dir/leaf.pem"
  check "$label: openssl verify leaf against the CA chain" \
    openssl verify -CAfile "$work/root.pem" -untrusted "$work/issuing.pem" "$dir/leaf.pem"
}

for device in rsa ec; do
  for form in pub crt; do
    for fmt in modern legacy; do
      label="$device-$form-$fmt"
      extra=()
      [ "$fmt" = legacy ] && extra=(--legacy)
      out=$(cc submit pkcs --subject "CN=$label,O=Interop" --san "email:$label@example.com" --san "upn:$label@corp.example" \
              --key-type p256 --device-key "$work/$device.$form" "${extra[@]}" --wait --out "$work/$label" 2>&1)
      if [ $? -ne 0 ]; then fail "$label: job succeeds" "$out"; continue; fi
      ok "$label: job succeeds"
      open_result "$work/$label" "$work/$device.key" "$label"
      if [ "$fmt" = legacy ]; then
        check "$label: legacy PKCS#12 is 3DES with a SHA-1 MAC" \
          bash -c "openssl pkcs12 -in '$work/$label/bundle.p12' -passin 'file:$work/$label/password.txt' -info -noout 2>&1 | grep -q 'MAC: sha1' && openssl pkcs12 -in '$work/$label/bundle.p12' -passin 'file:$work/$label/password.txt' -info -noout 2>&1 | grep -q 'pbeWithSHA1And3-KeyTripleDES-CBC'"
      else
        check "$label: modern PKCS#12 is AES-256/PBKDF2 with a SHA-256 MAC" \
          bash -c "openssl pkcs12 -in '$work/$label/bundle.p12' -passin 'file:$work/$label/password.txt' -info -noout 2>&1 | grep -q 'MAC: sha256' && openssl pkcs12 -in '$work/$label/bundle.p12' -passin 'file:$work/$label/password.txt' -info -noout 2>&1 | grep -q 'PBES2, PBKDF2, AES-256-CBC'"
      fi
      check "$label: RSA device keys get RSA-OAEP key transport" bash -c \
        "[ $device != rsa ] || openssl cms -cmsout -print -inform DER -in '$work/$label/pfx.cms' | grep -q rsaesOaep"
    done
  done
done

# The RSA-2048 default key type, a given password, and the UPN in the leaf.
check "rsa2048 leaf key and a given password" bash -c "
  '$bin' submit pkcs --config '$work/c.toml' --subject 'CN=rsa-leaf' --san upn:u@corp.example --device-key '$work/rsa.pub' \
    --key-type rsa2048 --pfx-password 'S3cret pass' --wait --out '$work/rsaleaf' >/dev/null &&
  openssl cms -decrypt -inform DER -binary -in '$work/rsaleaf/password.cms' -inkey '$work/rsa.key' | grep -qx 'S3cret pass' &&
  openssl cms -decrypt -inform DER -binary -in '$work/rsaleaf/pfx.cms' -inkey '$work/rsa.key' |
    openssl pkcs12 -passin 'pass:S3cret pass' -nokeys -clcerts | openssl x509 -noout -text | grep -q 'UPN::u@corp.example' &&
  openssl cms -decrypt -inform DER -binary -in '$work/rsaleaf/pfx.cms' -inkey '$work/rsa.key' |
    openssl pkcs12 -passin 'pass:S3cret pass' -nocerts -nodes | openssl pkey -noout -text | grep -q 'Private-Key: (2048 bit'"

# Recrypt: the escrow copy of one result, re-encrypted to a new device key.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$work/new.key" 2>/dev/null
openssl pkey -in "$work/new.key" -pubout -out "$work/new.pub"
"$py" - "$work/rsa-pub-modern/result.json" "$work/new.pub" "$work/recrypt.json" <<'PY'
import json, sys
result = json.load(open(sys.argv[1]))["result"]
json.dump({"request": {"type": "recrypt", "escrow_cms": result["escrow_cms"],
                       "device_key_pem": open(sys.argv[2]).read()}}, open(sys.argv[3], "w"))
PY
out=$(cc submit pkcs --json "$work/recrypt.json" --wait --out "$work/recrypt" 2>&1) && ok "recrypt: job succeeds" || fail "recrypt: job succeeds" "$out"
open_result "$work/recrypt" "$work/new.key" "recrypt"
check "recrypt: same certificate as the original" cmp "$work/recrypt/leaf.pem" "$work/rsa-pub-modern/leaf.pem"

# ca-local with an existing CA certificate and key (PEM files made by openssl).
check "existing CA: issues, and the leaf verifies against that CA" bash -c "
  '$bin' submit pkcs --config '$work/c.toml' --ca imported --subject CN=imported --device-key '$work/ec.pub' --key-type p256 \
    --wait --out '$work/imported' >/dev/null &&
  openssl cms -decrypt -inform DER -binary -in '$work/imported/password.cms' -inkey '$work/ec.key' -out '$work/imported/pw' &&
  openssl cms -decrypt -inform DER -binary -in '$work/imported/pfx.cms' -inkey '$work/ec.key' |
    openssl pkcs12 -passin 'file:$work/imported/pw' -nokeys -clcerts | openssl x509 -out '$work/imported/leaf.pem' &&
  openssl verify -CAfile '$work/ext/ca.pem' '$work/imported/leaf.pem'"

# Refusals: each a failed job with a clear error, nothing lost.
refused() {  # refused LABEL EXPECTED-TEXT SUBMIT-ARGS...
  local label=$1 expected=$2; shift 2
  local out
  out=$(cc submit pkcs "$@" --wait --out "$work/refused" 2>&1)
  if [ $? -eq 1 ] && grep -q -- "$expected" <<<"$out"; then ok "refused: $label"; else fail "refused: $label" "$out"; fi
}
refused "key type the profile forbids" "profile 'restricted' does not allow key type rsa2048" \
  --subject CN=x --device-key "$work/ec.pub" --profile restricted --key-type rsa2048
refused "SAN type the profile forbids" "profile 'restricted' does not allow SAN type dns" \
  --subject CN=x --device-key "$work/ec.pub" --profile restricted --key-type p256 --san dns:x.example
refused "unknown CA name" "no CA named 'nope' is configured (configured: corp, imported)" \
  --subject CN=x --device-key "$work/ec.pub" --ca nope
echo "not a key" >"$work/garbage.pem"
refused "malformed device key" "device_key_pem: not a PEM public key or certificate" \
  --subject CN=x --device-key "$work/garbage.pem"
refused "unknown SAN type" "unknown type 'phone'" --subject CN=x --device-key "$work/ec.pub" --san phone:123
check "refused jobs are in the Admin log as 1001" grep -q '"id":1001' "$work/log/admin.jsonl"
check "every job ended: none queued or running" bash -c "
  ! grep -q '\"status\":\"\(queued\|running\)\"' <(for f in '$work'/*/result.json; do cat \"\$f\"; done)"

finish
