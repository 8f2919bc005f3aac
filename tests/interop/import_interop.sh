#!/usr/bin/env bash
# Interop: connector keys (file store and a SoftHSM token) and the import feature. PFX files
# are made by the openssl CLI (PBES2 and -legacy), passwords encrypted with RSA-OAEP by
# `pfx encrypt-password` and by python3-cryptography (an independent implementation), and the
# delivered envelopes opened with `openssl cms -decrypt` using RSA and EC device keys.
# usage: import_interop.sh CERTCONNECTOR_BIN PLUGIN_DIR
set -uo pipefail
source "$(dirname "$0")/lib.sh" import "$@"

mkdir -p "$work/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$work/tokens" >"$work/softhsm2.conf"
export SOFTHSM2_CONF="$work/softhsm2.conf"
softhsm2-util --init-token --free --label connector-keys --pin 97531 --so-pin 86420 >/dev/null

cat >"$work/c.toml" <<TOML
[host]
listen = "127.0.0.1:0"
plugin_dir = "$plugins"
state_dir = "state"
log_dir = "log"
[jobs]
retry_initial_ms = 200
retry_max_ms = 1000
max_attempts = 30
[tenant]
plugin = "local"
[ca.local]
plugin = "local"
TOML
cfg="$work/c.toml"

check "keys create makes a file key (0600 in a 0700 store) and prints its public key" bash -c "
  '$bin' keys create --config '$cfg' --name mail-2026 --size 3072 >'$work/mail.pub' &&
  grep -q 'BEGIN PUBLIC KEY' '$work/mail.pub' &&
  [ \$(stat -c %a '$work/state/keys/mail-2026.pem') = 600 ] && [ \$(stat -c %a '$work/state/keys') = 700 ]"
check "keys export-public gives the same public key" bash -c "'$bin' keys export-public --config '$cfg' --name mail-2026 | cmp - '$work/mail.pub'"
expect "keys create refuses an existing name" "already exists" "$bin" keys create --config "$cfg" --name mail-2026
expect "keys create refuses a bad name" "key name" "$bin" keys create --config "$cfg" --name "../x"
check "keys create --pkcs11 generates on the SoftHSM token, not extractable" bash -c "
  '$bin' keys create --config '$cfg' --name hsm-2026 --size 2048 --pkcs11 'pkcs11:token=connector-keys;pin-value=97531' >'$work/hsm.pub' &&
  pkcs11-tool --module /usr/lib/softhsm/libsofthsm2.so --login --pin 97531 --list-objects 2>/dev/null | grep -A4 'Private Key' | grep -q 'never extractable' &&
  ! grep -rq 'PRIVATE KEY' '$work/state/keys/hsm-2026.ref'"
expect "a wrong token PIN is a clear error" "wrong PIN" \
  "$bin" keys create --config "$cfg" --name hsm-bad --pkcs11 "pkcs11:token=connector-keys;pin-value=1"
check "keys add shares an existing PEM key under another name" "$bin" keys add --config "$cfg" --name shared --file "$work/state/keys/mail-2026.pem"
out=$("$bin" keys list --config "$cfg" 2>&1)
expect "keys list shows the file and token keys, PIN redacted" "pin-value=\*\*\*" echo "$out"
expect "keys list shows key types" "hsm-2026  rsa2048" echo "$out"
check "keys list never prints the PIN" bash -c "! grep -q 97531 <<<'$out'"

# The pkcs feature's escrow key on the token too (created above): escrow copies then open only there.
cat >>"$cfg" <<TOML
[pkcs]
escrow_key = "pkcs11:token=connector-keys;object=hsm-2026;type=private;pin-value=97531"
TOML
start_connector "$cfg" || exit 1

# An S/MIME encryption certificate for each device-key kind, as administrators export them.
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/user.key" -subj "/CN=Bob Example/emailAddress=bob@example.com" -days 30 \
  -addext keyUsage=critical,keyEncipherment,digitalSignature -addext extendedKeyUsage=emailProtection \
  -addext subjectAltName=email:bob@example.com -out "$work/user.pem" 2>/dev/null
printf 'Pässword 1!' >"$work/pw"
openssl pkcs12 -export -inkey "$work/user.key" -in "$work/user.pem" -passout "file:$work/pw" -out "$work/user.pfx"
openssl pkcs12 -export -legacy -inkey "$work/user.key" -in "$work/user.pem" -passout "file:$work/pw" -out "$work/user-legacy.pfx" 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/dev-rsa.key" 2>/dev/null
openssl pkey -in "$work/dev-rsa.key" -pubout -out "$work/dev-rsa.pub"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/dev-ec.key" 2>/dev/null
openssl req -new -x509 -key "$work/dev-ec.key" -subj /CN=device -days 30 -out "$work/dev-ec.crt"
thumb=$(openssl x509 -in "$work/user.pem" -noout -fingerprint -sha1 | cut -d= -f2 | tr -d : | tr A-F a-f)

# roundtrip NAME KEY PUBFILE PADDING DEVICE_PUB DEVICE_KEY PFX: import, open both envelopes, compare.
roundtrip() {
  local name=$1 key=$2 pub=$3 padding=$4 dpub=$5 dkey=$6 pfx=$7 ep out="$work/$1"
  ep=$("$bin" pfx encrypt-password --key-public "$pub" --padding "$padding" --password-file "$work/pw") || return 1
  "$bin" submit import --config "$cfg" --pfx "$pfx" --encrypted-password "$ep" --key-name "$key" --padding "$padding" \
    --purpose smimeEncryption --upn bob@example.com --device-key "$dpub" --wait --out "$out" || return 1
  openssl cms -decrypt -inform DER -binary -in "$out/password.cms" -inkey "$dkey" -out "$out/pw" &&
  cmp "$out/pw" "$work/pw" &&
  openssl cms -decrypt -inform DER -binary -in "$out/pfx.cms" -inkey "$dkey" -out "$out/user.pfx" &&
  cmp "$out/user.pfx" "$pfx" &&
  openssl pkcs12 -in "$out/user.pfx" -passin "file:$work/pw" -nodes -legacy 2>/dev/null | openssl x509 -noout -fingerprint -sha1 |
    cut -d= -f2 | tr -d : | tr A-F a-f | grep -qx "$thumb" &&
  grep -q "\"thumbprint\":\"$thumb\"" "$out/result.json"
}
check "import, OAEP-SHA256, RSA device key: both envelopes open, the PFX and password are the originals" \
  roundtrip rsa256 mail-2026 "$work/mail.pub" oaep-sha256 "$work/dev-rsa.pub" "$work/dev-rsa.key" "$work/user.pfx"
check "import, OAEP-SHA512, RSA device key" \
  roundtrip rsa512 mail-2026 "$work/mail.pub" oaep-sha512 "$work/dev-rsa.pub" "$work/dev-rsa.key" "$work/user.pfx"
check "import, OAEP-SHA256, EC device certificate (ECDH)" \
  roundtrip ec256 mail-2026 "$work/mail.pub" oaep-sha256 "$work/dev-ec.crt" "$work/dev-ec.key" "$work/user.pfx"
check "import, OAEP-SHA512, EC device certificate (ECDH)" \
  roundtrip ec512 mail-2026 "$work/mail.pub" oaep-sha512 "$work/dev-ec.crt" "$work/dev-ec.key" "$work/user.pfx"
check "import, OAEP-SHA384, a legacy (RC2/3DES) PFX" \
  roundtrip legacy mail-2026 "$work/mail.pub" oaep-sha384 "$work/dev-rsa.pub" "$work/dev-rsa.key" "$work/user-legacy.pfx"
check "import through the SoftHSM token key (decrypted on the token)" \
  roundtrip hsm hsm-2026 "$work/hsm.pub" oaep-sha512 "$work/dev-ec.crt" "$work/dev-ec.key" "$work/user.pfx"
check "import through a key shared by path (keys add --file)" \
  roundtrip shared shared "$work/mail.pub" oaep-sha256 "$work/dev-rsa.pub" "$work/dev-rsa.key" "$work/user.pfx"
# The job document as Graph names its fields, the password encrypted by python3-cryptography.
$py - "$work/mail.pub" "$work/pw" "$work/user.pfx" "$work/dev-rsa.pub" >"$work/graph-job.json" <<'PY'
import base64, json, sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
key = serialization.load_pem_public_key(open(sys.argv[1], "rb").read())
oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA512()), algorithm=hashes.SHA512(), label=None)
print(json.dumps({"request": {
    "encryptedPfxBlob": base64.b64encode(open(sys.argv[3], "rb").read()).decode(),
    "encryptedPfxPassword": base64.b64encode(key.encrypt(open(sys.argv[2], "rb").read(), oaep)).decode(),
    "keyName": "mail-2026", "paddingScheme": "oaepSha512", "intendedPurpose": "smimeEncryption",
    "userPrincipalName": "bob@example.com", "device_key_pem": open(sys.argv[4]).read()}}))
PY
check "Graph field names, password encrypted by python3-cryptography (OAEP-SHA512, Intune's default)" \
  "$bin" submit import --config "$cfg" --json "$work/graph-job.json" --wait

ep256=$("$bin" pfx encrypt-password --key-public "$work/mail.pub" --padding oaep-sha256 --password-file "$work/pw")
out=$("$bin" submit import --config "$cfg" --pfx "$work/user.pfx" --encrypted-password "$ep256" --key-name mail-2026 \
  --padding oaep-sha512 --device-key "$work/dev-rsa.pub" --id wrong-padding --wait 2>&1)
expect "a wrong padding scheme is a clear error" "does not decrypt with key 'mail-2026' and oaep-sha512" echo "$out"
expect "and the job is not lost: it stays, failed, with that message" '"status":"failed"' "$bin" job show wrong-padding --config "$cfg"
expect "a password encrypted to another key is a clear error" "does not decrypt with key 'hsm-2026'" \
  "$bin" submit import --config "$cfg" --pfx "$work/user.pfx" --encrypted-password "$ep256" --key-name hsm-2026 \
    --padding oaep-sha256 --device-key "$work/dev-rsa.pub" --wait
expect "a key this connector does not hold: 'key K is not held by this connector'" "key 'other-connector' is not held by this connector" \
  "$bin" submit import --config "$cfg" --pfx "$work/user.pfx" --encrypted-password "$ep256" --key-name other-connector \
    --padding oaep-sha256 --device-key "$work/dev-rsa.pub" --wait
expect "event 410 names the missing key in the Admin log" "other-connector" grep '"id":410,' "$work/log/admin.jsonl"
expect "PKCS#1 v1.5 padding is refused" "only RSA-OAEP" \
  "$bin" pfx encrypt-password --key-public "$work/mail.pub" --padding pkcs1 --password-file "$work/pw"
expect "a certificate that does not suit the purpose is refused" "does not suit vpn" \
  "$bin" submit import --config "$cfg" --pfx "$work/user.pfx" --encrypted-password "$ep256" --key-name mail-2026 \
    --padding oaep-sha256 --purpose vpn --device-key "$work/dev-rsa.pub" --wait
printf 'wrong' >"$work/wrongpw"
expect "a wrong PFX password is a clear error" "PFX password is wrong" bash -c "
  '$bin' submit import --config '$cfg' --pfx '$work/user.pfx' --key-name mail-2026 --padding oaep-sha256 --device-key '$work/dev-rsa.pub' --wait \
    --encrypted-password \$('$bin' pfx encrypt-password --key-public '$work/mail.pub' --padding oaep-sha256 --password-file '$work/wrongpw') 2>&1"
$py - "$work/pw" "$work/old.pfx" <<'PY'  # OpenSSL 3.0's CLI cannot back-date; python3-cryptography can
import datetime, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "Old")])
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(datetime.datetime(2020, 1, 1))
        .not_valid_after(datetime.datetime(2020, 2, 1)).sign(key, hashes.SHA256()))
enc = serialization.BestAvailableEncryption(open(sys.argv[1], "rb").read())
open(sys.argv[2], "wb").write(pkcs12.serialize_key_and_certificates(b"old", key, cert, None, enc))
PY
expect "an expired certificate is refused" "expired" \
  "$bin" submit import --config "$cfg" --pfx "$work/old.pfx" --encrypted-password "$ep256" --key-name mail-2026 \
    --padding oaep-sha256 --device-key "$work/dev-rsa.pub" --wait

# A transient failure: the shared key file is not there yet (a share not mounted). The job
# retries (2051) and succeeds once it appears.
cp "$work/state/keys/mail-2026.pem" "$work/later.pem"
"$bin" keys add --config "$cfg" --name later --file "$work/later.pem" >/dev/null 2>&1
mv "$work/later.pem" "$work/later.hidden"
"$bin" submit import --config "$cfg" --pfx "$work/user.pfx" --encrypted-password "$ep256" --key-name later --padding oaep-sha256 \
  --device-key "$work/dev-rsa.pub" --id transient --wait --timeout 60 >"$work/transient.out" 2>&1 &
tpid=$!
for _ in $(seq 1 100); do grep -q '"id":2051,' "$work/log/operational.jsonl" && break; sleep 0.1; done
mv "$work/later.hidden" "$work/later.pem"
wait "$tpid"
expect "a key that cannot be loaded yet is retried (2051), and the job then succeeds" "succeeded" cat "$work/transient.out"
expect "the retry was logged as 2051 and the unusable key as 411" "411" bash -c "grep -q '\"id\":2051,' '$work/log/operational.jsonl' && grep -o '\"id\":411' '$work/log/operational.jsonl' | head -1"

# The escrow key in the token: a PKCS job's escrow copy is re-encrypted (decrypted on the token).
check "a PKCS escrow copy made to a token-held escrow key re-encrypts to a new device key" bash -c "
  '$bin' submit pkcs --config '$cfg' --subject CN=escrowed --device-key '$work/dev-rsa.pub' --wait --out '$work/esc' >/dev/null &&
  $py -c 'import json,sys; r=json.load(open(sys.argv[1]))[\"result\"]; print(json.dumps({\"request\":{\"type\":\"recrypt\",\"escrow_cms\":r[\"escrow_cms\"],\"device_key_pem\":open(sys.argv[2]).read()}}))' \
    '$work/esc/result.json' '$work/dev-ec.crt' >'$work/recrypt.json' &&
  '$bin' submit pkcs --config '$cfg' --json '$work/recrypt.json' --wait --out '$work/rec' >/dev/null &&
  openssl cms -decrypt -inform DER -binary -in '$work/rec/password.cms' -inkey '$work/dev-ec.key' -out '$work/rec/pw' &&
  openssl cms -decrypt -inform DER -binary -in '$work/rec/pfx.cms' -inkey '$work/dev-ec.key' |
    openssl pkcs12 -passin 'file:$work/rec/pw' -nokeys -clcerts | grep -q 'CN = escrowed'"

expect "events: 2020, 2050, 2102 in Operational; 2000 and 2001 in Admin" "ok" bash -c "
  for id in 2020 2050 2102; do grep -q '\"id\":'\$id',' '$work/log/operational.jsonl' || { echo missing \$id; exit 1; }; done
  for id in 2000 2001; do grep -q '\"id\":'\$id',' '$work/log/admin.jsonl' || { echo missing \$id; exit 1; }; done
  echo ok"
check "no password and no PIN appears in any log" bash -c "! grep -rq -e 'Pässword' -e 97531 '$work/log' '$work/daemon.out'"

finish
