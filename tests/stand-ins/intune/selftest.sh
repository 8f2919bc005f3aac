#!/usr/bin/env bash
# Self-test of the Intune stand-in with curl and openssl only (JWTs signed by `openssl dgst`):
# every endpoint answers, and refuses what the real service refuses. Runs in a few seconds.
# usage: selftest.sh
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py=/usr/bin/python3
work=$(mktemp -d /tmp/certconn-intune-selftest-XXXXXX)
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok   - $1"; }
fail() { failed=$((failed + 1)); echo "FAIL - $1"; [ -n "${2:-}" ] && sed 's/^/       /' <<<"$2"; }
expect() { local name=$1 text=$2; shift 2; local out; out=$("$@" 2>&1); if grep -q -- "$text" <<<"$out"; then ok "$name"; else fail "$name" "$out"; fi; }
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/tls.key" -out "$work/tls.crt" \
  -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -days 2 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/rsa.key" -out "$work/rsa.crt" -subj /CN=cred-rsa -days 30 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/ec.key" -out "$work/ec.crt" \
  -subj /CN=cred-ec -days 30 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/other.key" -out "$work/other.crt" -subj /CN=unregistered -days 30 2>/dev/null
printf 's3cret-value\n' >"$work/secret"
T=contoso.onmicrosoft.com C=11111111-2222-3333-4444-555555555555 O=99999999-8888-7777-6666-555555555555
"$py" "$here/intune.py" --port 0 --port-file "$work/port" --cert "$work/tls.crt" --key "$work/tls.key" --tenant-id $T \
  --client-id $C --app-object-id $O --secret-file "$work/secret" --credential-cert "$work/rsa.crt" \
  --credential-cert "$work/ec.crt" --token-lifetime 60 --reoffer-seconds 1 2>"$work/standin.log" &
pid=$!
for _ in $(seq 1 100); do [ -s "$work/port" ] && break; sleep 0.1; done
P=$(cat "$work/port")
U="https://127.0.0.1:$P"
c() { curl -s --cacert "$work/tls.crt" "$@"; }
ctl() { local m=$1 p=$2; shift 2; c -X "$m" -H 'Content-Type: application/json' "$U/_control/$p" "$@"; }

b64u() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
# jwt KEY CERT ALG CLAIMS_JSON: a compact JWS with x5t (SHA-1) and x5t#S256 of CERT.
jwt() {
  local key=$1 cert=$2 alg=$3 claims=$4 h s sig
  local x5t x5t256
  x5t=$(openssl x509 -in "$cert" -outform DER | openssl dgst -sha1 -binary | b64u)
  x5t256=$(openssl x509 -in "$cert" -outform DER | openssl dgst -sha256 -binary | b64u)
  h=$(printf '{"alg":"%s","typ":"JWT","x5t":"%s","x5t#S256":"%s"}' "$alg" "$x5t" "$x5t256" | b64u)
  s=$(printf '%s' "$claims" | b64u)
  if [ "$alg" = RS256 ]; then
    sig=$(printf '%s.%s' "$h" "$s" | openssl dgst -sha256 -sign "$key" -binary | b64u)
  else  # ES256: the DER ECDSA signature becomes r||s, 32 bytes each
    sig=$(printf '%s.%s' "$h" "$s" | openssl dgst -sha256 -sign "$key" -binary | openssl asn1parse -inform DER |
      awk -F: '/INTEGER/{print $NF}' | while read -r n; do printf '%064s' "$n" | tr ' ' 0; done | xxd -r -p | b64u)
  fi
  printf '%s.%s.%s' "$h" "$s" "$sig"
}
now=$(date +%s)
claims() { printf '{"aud":"%s","iss":"%s","sub":"%s","jti":"%s","nbf":%d,"iat":%d,"exp":%d}' "$1" "$2" "$2" "$3" "$4" "$4" "$5"; }
EP="$U/$T/oauth2/v2.0/token"
tok() { c "$EP" -d grant_type=client_credentials -d client_id=$C "$@"; }
GS="scope=$U/.default"
IS="scope=https://api.manage.microsoft.com//.default"

expect "a wrong secret is refused 401 invalid_client AADSTS7000215" '"error_codes": \[7000215\]' tok --data-urlencode "$GS" -d client_secret=nope
expect "an unknown tenant is refused AADSTS90002" '"error_codes": \[90002\]' \
  c "$U/other.example/oauth2/v2.0/token" -d grant_type=client_credentials -d client_id=$C --data-urlencode "$GS" -d client_secret=s3cret-value
expect "a scope without /.default is refused invalid_scope" 'invalid_scope' tok --data-urlencode "scope=$U/User.Read" -d client_secret=s3cret-value
expect "no credential: AADSTS7000218" '7000218' tok --data-urlencode "$GS"
G=$(tok --data-urlencode "$GS" -d client_secret=s3cret-value | "$py" -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
[ -n "$G" ] && ok "a Graph token for the secret" || fail "a Graph token for the secret"
A=$(jwt "$work/rsa.key" "$work/rsa.crt" RS256 "$(claims "$EP" $C jti-1 $now $((now + 600)))")
expect "an RS256 client assertion gets an Intune token" '"token_type": "Bearer"' \
  tok --data-urlencode "$IS" -d client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer -d client_assertion="$A"
I=$(jwt "$work/ec.key" "$work/ec.crt" ES256 "$(claims "$EP" $C jti-2 $now $((now + 300)))")
I=$(tok --data-urlencode "$IS" -d client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer -d client_assertion="$I" |
  "$py" -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
[ -n "$I" ] && ok "an ES256 client assertion gets an Intune token" || fail "an ES256 client assertion gets an Intune token"
expect "the same assertion again (jti replay) is refused" 'invalid_client' \
  tok --data-urlencode "$IS" -d client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer -d client_assertion="$A"
bad=$(jwt "$work/other.key" "$work/other.crt" RS256 "$(claims "$EP" $C jti-3 $now $((now + 600)))")
expect "an assertion signed by an unregistered certificate: AADSTS700027" '700027' \
  tok --data-urlencode "$IS" -d client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer -d client_assertion="$bad"
bad=$(jwt "$work/rsa.key" "$work/rsa.crt" RS256 "$(claims "https://login.microsoftonline.com/$T/oauth2/v2.0/token" $C jti-4 $now $((now + 600)))")
expect "an assertion for another token endpoint (aud) is refused" 'audience claim' \
  tok --data-urlencode "$IS" -d client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer -d client_assertion="$bad"
bad=$(jwt "$work/rsa.key" "$work/rsa.crt" RS256 "$(claims "$EP" $C jti-5 $now $((now + 3600)))")
expect "an assertion living more than 10 minutes: AADSTS700024" '700024' \
  tok --data-urlencode "$IS" -d client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer -d client_assertion="$bad"
bad=$(jwt "$work/rsa.key" "$work/rsa.crt" RS256 "$(claims "$EP" someone-else jti-6 $now $((now + 600)))")
expect "an assertion whose iss/sub is not the client: AADSTS700021" '700021' \
  tok --data-urlencode "$IS" -d client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer -d client_assertion="$bad"
forged=$(printf '%s' "$A" | sed 's/\.[^.]*$/.AAAA/')
expect "a forged signature: AADSTS700027" 'signature validation' \
  tok --data-urlencode "$IS" -d client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer -d client_assertion="$forged"

EPS=/v1.0/servicePrincipals/appId=0000000a-0000-0000-c000-000000000000/endpoints
expect "discovery lists ScepRequestValidationFEService on this server" "\"uri\": \"$U/ScepRequestValidationFEService\"" \
  c -H "Authorization: Bearer $G" "$U$EPS"
expect "discovery with an Intune token is refused 401 (wrong audience)" 'InvalidAuthenticationToken' \
  c -H "Authorization: Bearer $I" "$U$EPS"
expect "the application by appId shows both key credentials" 'cred-ec' \
  c -H "Authorization: Bearer $G" "$U/v1.0/applications(appId='$C')?\$select=id,keyCredentials"
expect "an unknown application is 404" 'Request_ResourceNotFound' c -H "Authorization: Bearer $G" "$U/v1.0/applications/nope"

# addKey / removeKey: a new RSA credential, proof signed by the EC one.
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/new.key" -out "$work/new.crt" -subj /CN=cred-new -days 30 2>/dev/null
newder=$(openssl x509 -in "$work/new.crt" -outform DER | openssl base64 -A)
pop() { jwt "$1" "$2" "$3" "$(printf '{"aud":"00000002-0000-0000-c000-000000000000","iss":"%s","jti":"%s","nbf":%d,"exp":%d}' "$4" "$RANDOM" $now $((now + 600)))"; }
expect "addKey with a proof whose iss is not the object id is refused" 'object id' \
  c -H "Authorization: Bearer $G" -H 'Content-Type: application/json' "$U/v1.0/applications/$O/addKey" \
  -d "{\"keyCredential\":{\"type\":\"AsymmetricX509Cert\",\"usage\":\"Verify\",\"key\":\"$newder\"},\"passwordCredential\":null,\"proof\":\"$(pop "$work/ec.key" "$work/ec.crt" ES256 $C)\"}"
expect "addKey with a proof signed by an unregistered key is refused" 'not registered' \
  c -H "Authorization: Bearer $G" -H 'Content-Type: application/json' "$U/v1.0/applications/$O/addKey" \
  -d "{\"keyCredential\":{\"type\":\"AsymmetricX509Cert\",\"usage\":\"Verify\",\"key\":\"$newder\"},\"passwordCredential\":null,\"proof\":\"$(pop "$work/other.key" "$work/other.crt" RS256 $O)\"}"
out=$(c -H "Authorization: Bearer $G" -H 'Content-Type: application/json' "$U/v1.0/applications(appId='$C')/addKey" \
  -d "{\"keyCredential\":{\"type\":\"AsymmetricX509Cert\",\"usage\":\"Verify\",\"key\":\"$newder\",\"displayName\":\"CN=cred-new\"},\"passwordCredential\":null,\"proof\":\"$(pop "$work/ec.key" "$work/ec.crt" ES256 $O)\"}")
newid=$("$py" -c 'import json,sys; print(json.loads(sys.argv[1])["keyId"])' "$out" 2>/dev/null)
thumb=$(openssl x509 -in "$work/new.crt" -noout -fingerprint -sha1 | cut -d= -f2 | tr -d :)
expect "addKey answers the keyCredential with customKeyIdentifier = the SHA-1 thumbprint" "$thumb" echo "$out"
oldid=$(ctl GET app | "$py" -c 'import json,sys; print([k["keyId"] for k in json.load(sys.stdin)["keyCredentials"] if "cred-rsa" in k["displayName"]][0])')
expect "removeKey of the RSA credential with a proof by the new key: 204" '^204$' \
  c -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $G" -H 'Content-Type: application/json' "$U/v1.0/applications/$O/removeKey" \
  -d "{\"keyId\":\"$oldid\",\"proof\":\"$(pop "$work/new.key" "$work/new.crt" RS256 $O)\"}"
expect "the removed key can no longer sign in" '700027' \
  tok --data-urlencode "$IS" -d client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer \
  -d client_assertion="$(jwt "$work/rsa.key" "$work/rsa.crt" RS256 "$(claims "$EP" $C jti-7 $now $((now + 600)))")"
expect "the control API shows the new key and not the removed one" "$newid" bash -c "ctl() { curl -s --cacert '$work/tls.crt' '$U/_control/app'; }; ctl | grep -v '$oldid'"

# SCEP validation.
key="$work/dev.key"; openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$key" 2>/dev/null
csr() { openssl req -new -key "$key" -subj "$1" ${2:+-addext "challengePassword=$2"} -outform DER 2>/dev/null | openssl base64 -A; }
csr_cp() {  # a CSR with a challengePassword attribute (openssl req takes it from the config's [req_attributes])
  printf '[req]\ndistinguished_name=dn\nattributes=attrs\nprompt=no\n[dn]\nCN=%s\n[attrs]\nchallengePassword=%s\n' "$1" "$2" >"$work/req.cnf"
  openssl req -new -key "$key" -config "$work/req.cnf" -outform DER 2>/dev/null | openssl base64 -A
}
ctl POST challenges -d '{"challenge":"good-one","subject":"CN=dev-1"}' >/dev/null
ctl POST challenges -d '{"challenge":"expired-one","code":"ChallengeExpired"}' >/dev/null
V="$U/ScepRequestValidationFEService/ScepActions"
scep() { c -H "Authorization: Bearer $I" -H 'Content-Type: application/json' -H 'api-version: 2018-02-20' \
  -H "client-request-id: $(cat /proc/sys/kernel/random/uuid)" -H 'UserAgent: selftest/1.0' "$V/$1" -d "$2"; }
vreq() { printf '{"request":{"transactionId":"%s","certificateRequest":"%s","callerInfo":"selftest"}}' "$1" "$2"; }
expect "validateRequest: the registered challenge and subject: Success" '"code": "Success"' scep validateRequest "$(vreq t1 "$(csr_cp dev-1 good-one)")"
expect "validateRequest: an unknown challenge: ChallengeDecryptionError" 'ChallengeDecryptionError' scep validateRequest "$(vreq t2 "$(csr_cp dev-1 guess)")"
expect "validateRequest: no challenge: ChallengePasswordMissing" 'ChallengePasswordMissing' scep validateRequest "$(vreq t3 "$(csr /CN=dev-1)")"
expect "validateRequest: another subject: SubjectNameMismatch" 'SubjectNameMismatch' scep validateRequest "$(vreq t4 "$(csr_cp dev-2 good-one)")"
expect "validateRequest: a forced code is answered" 'ChallengeExpired' scep validateRequest "$(vreq t5 "$(csr_cp dev-1 expired-one)")"
expect "validateRequest: garbage: CertificateRequestDecodingFailed" 'CertificateRequestDecodingFailed' scep validateRequest "$(vreq t6 AAAA)"
expect "validateRequest without api-version is 400" '^400$' c -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $I" \
  -H "client-request-id: x" "$V/validateRequest" -d "$(vreq t1 "$(csr_cp dev-1 good-one)")"
expect "validateRequest with a Graph token is 401" '^401$' c -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $G" \
  -H 'api-version: 2018-02-20' -H "client-request-id: x" "$V/validateRequest" -d "$(vreq t1 "$(csr_cp dev-1 good-one)")"
expect "the control API lists each validation with its answer" '"transactionId": "t4", "code": "SubjectNameMismatch"' ctl GET validations
expect "successNotification is recorded: Success" '"code": "Success"' scep successNotification \
  '{"notification":{"transactionId":"t1","certificateRequest":"x","certificateThumbprint":"AB","certificateSerialNumber":"01","certificateExpirationDateUtc":"2030-01-01T00:00:00Z","issuingCertificateAuthority":"CN=CA","caConfiguration":"cc","certificateAuthority":"local","callerInfo":"selftest"}}'
expect "failureNotification with hResult is recorded" '"code": "Success"' scep failureNotification \
  '{"notification":{"transactionId":"t9","certificateRequest":"x","hResult":-2146875374,"errorDescription":"refused","callerInfo":"selftest"}}'
expect "a notification without its thumbprint is 400" 'certificateThumbprint' scep successNotification '{"notification":{"transactionId":"t1","certificateRequest":"x"}}'
expect "the control API lists both notifications in order" '"kind": "success".*"kind": "failure"' bash -c "curl -s --cacert '$work/tls.crt' '$U/_control/notifications'"

# Revocation.
R="$U/PkiConnectorFEService/CertificateAuthorityRequests"
pki() { c -H "Authorization: Bearer $I" -H 'Content-Type: application/json' -H 'api-version: 5019-05-05' \
  -H "client-request-id: $(cat /proc/sys/kernel/random/uuid)" "$R/$1" -d "$2"; }
ctl POST revocations -d '[{"serialNumber":"0A","issuerName":"CN=CA","caConfiguration":"other\\CA"},{"serialNumber":"0B","issuerName":"CN=CA","caConfiguration":"ca01\\CA"},{"serialNumber":"0C","issuerName":"CN=CA","caConfiguration":"ca01\\CA"}]' >/dev/null
expect "download with issuerName truncates first, then filters on caConfiguration (issue #133): nothing" '"value": \[\]' \
  pki downloadRevocationRequests '{"downloadParameters":{"maxRequests":1,"issuerName":"ca01\\CA"}}'
expect "maxRequests 501 is 400" 'maxRequests' pki downloadRevocationRequests '{"downloadParameters":{"maxRequests":501,"issuerName":null}}'
out=$(pki downloadRevocationRequests '{"downloadParameters":{"maxRequests":2,"issuerName":null}}')
expect "download hands out up to maxRequests" '"serialNumber": "0B"' echo "$out"
ctx=$("$py" -c 'import json,sys; print(json.loads(sys.argv[1])["value"][1]["requestContext"])' "$out")
expect "and the rest next time" '"serialNumber": "0C"' pki downloadRevocationRequests '{"downloadParameters":{"maxRequests":5,"issuerName":null}}'
expect "upload with errorCode as a name and a numeric string: value true" '"value": true' pki uploadRevocationResults \
  "{\"results\":[{\"requestContext\":\"$ctx\",\"succeeded\":false,\"errorCode\":\"CertificateNotFoundError\",\"errorMessage\":\"not found\"}]}"
expect "upload with succeeded true and errorCode 4004 is 400" '400' bash -c "curl -s -o /dev/null -w '%{http_code}' --cacert '$work/tls.crt' \
  -H 'Authorization: Bearer $I' -H 'api-version: 5019-05-05' -H 'client-request-id: x' '$R/uploadRevocationResults' \
  -d '{\"results\":[{\"requestContext\":\"$ctx\",\"succeeded\":true,\"errorCode\":4004}]}'"
sleep 1.1
expect "unanswered requests are handed out again after the re-offer timeout, answered ones not" '"0A".*"0C"\|"0C".*"0A"' bash -c "
  curl -s --cacert '$work/tls.crt' -H 'Authorization: Bearer $I' -H 'api-version: 5019-05-05' -H 'client-request-id: x' \
  '$R/downloadRevocationRequests' -d '{\"downloadParameters\":{\"maxRequests\":5,\"issuerName\":null}}' | grep -v '\"0B\"' | tr -d '\n'"
expect "the control API shows the result with errorCode 4004" '"errorCode": 4004' ctl GET revocation-results

# Faults and token expiry.
ctl POST fault -d '{"match":"PkiConnectorFEService","mode":"status","status":429,"retry_after":7,"count":1}' >/dev/null
expect "a status fault answers 429 with Retry-After" 'Retry-After: 7' c -D - -o /dev/null -H "Authorization: Bearer $I" \
  -H 'api-version: 5019-05-05' -H 'client-request-id: x' "$R/downloadRevocationRequests" -d '{}'
ctl POST fault -d '{"match":"/","mode":"down"}' >/dev/null
expect "fault mode down drops the connection" '^000$' c -o /dev/null -w '%{http_code}' "$U$EPS"
ctl DELETE fault >/dev/null
expect "after DELETE /_control/fault it answers again" '^200$' c -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $G" "$U$EPS"
ctl POST expire-tokens >/dev/null
expect "after expire-tokens an old token gets 401 with WWW-Authenticate invalid_token" 'error="invalid_token"' \
  c -D - -o /dev/null -H "Authorization: Bearer $G" "$U$EPS"
expect "the call log records client-request-id, api-version and UserAgent" '"UserAgent": "selftest/1.0"' ctl GET calls
check_secret() { ! grep -q -e s3cret-value -e good-one -e "$G" "$work/standin.log"; }
check_secret && ok "no secret, challenge or token in the stand-in's log" || fail "no secret, challenge or token in the stand-in's log"
echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
