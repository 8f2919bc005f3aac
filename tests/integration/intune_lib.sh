# shellcheck shell=bash
# Shared by the intune_*.sh integration tests (after tests/interop/lib.sh): the Intune stand-in
# (tests/stand-ins/intune/intune.py) on a random loopback port with a TLS certificate made here,
# the application's certificate credential (RSA) and client secret, and helpers for its control
# API. Sets $standin_url, $standin_port, $T (tenant), $C (client id), $O (application object id).
standins="$(cd "$(dirname "${BASH_SOURCE[0]}")/../stand-ins" && pwd)"
T=contoso.onmicrosoft.com
C=6a1f0e7c-3b2d-4c5e-9f80-1a2b3c4d5e6f
O=0f9e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/tls.key" -out "$work/tls.crt" \
  -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -days 2 2>/dev/null
# The application's certificate credential: what an administrator uploads to the app registration.
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/cred.key" -out "$work/cred.crt" -subj "/CN=certconnector $C" \
  -days 400 2>/dev/null
chmod 600 "$work/cred.key"
printf '%s\n' "cS3cr~$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$work/client.secret"
chmod 600 "$work/client.secret"

extra_pids=()
# start_standin [ARGS...]: (re)starts the stand-in; keeps its port across restarts.
start_standin() {
  rm -f "$work/standin.port"
  "$py" "$standins/intune/intune.py" --port "${standin_port:-0}" --port-file "$work/standin.port" \
    --cert "$work/tls.crt" --key "$work/tls.key" --tenant-id "$T" --client-id "$C" --app-object-id "$O" \
    --secret-file "$work/client.secret" --credential-cert "$work/cred.crt" "$@" 2>>"$work/standin.log" &
  standin_pid=$!
  extra_pids+=("$standin_pid")
  for _ in $(seq 1 100); do [ -s "$work/standin.port" ] && break; sleep 0.1; done
  [ -s "$work/standin.port" ] || { echo "the Intune stand-in did not start:" >&2; cat "$work/standin.log" >&2; return 1; }
  standin_port=$(cat "$work/standin.port")
  standin_url="https://127.0.0.1:$standin_port"
}
stop_extras() { for p in "${extra_pids[@]}"; do kill "$p" 2>/dev/null; done; }

# ctl METHOD PATH [curl args]: the stand-in's control API (JSON).
ctl() { local m=$1 p=$2; shift 2; curl -s --cacert "$work/tls.crt" -X "$m" -H 'Content-Type: application/json' "$standin_url/_control/$p" "$@"; }
# jq_py EXPR: evaluates a Python expression over the JSON on stdin (bound to `d`), prints the result.
jq_py() { "$py" -c "import json,sys; d=json.load(sys.stdin); r=($1); print(r if not isinstance(r,(list,dict)) else json.dumps(r))"; }

# wait_until SECONDS COMMAND...: retries the command every half second; fails after SECONDS.
wait_until() {
  local limit=$1; shift; local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do [ "$SECONDS" -ge "$deadline" ] && return 1; sleep 0.5; done
}

# free_port: a loopback port nobody listens on now.
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# scep_enroll DIR URL CHALLENGE CN: micromdm scepclient into DIR (key.pem, cert.pem, out.txt).
scep_enroll() {
  mkdir -p "$1"
  (cd "$1" && timeout 60 scepclient -server-url "$2" -challenge "$3" -cn "$4" -private-key key.pem -certificate cert.pem \
    >out.txt 2>&1)
}

# notification_for KIND SERIAL_HEX: the stand-in's recorded notification of KIND whose serial is
# SERIAL (hex, case and leading zeros ignored), as JSON, or nothing.
notification_for() {
  ctl GET notifications | "$py" -c "
import json,sys
want=sys.argv[2].upper().lstrip('0')
for n in json.load(sys.stdin):
    x=n['notification']
    if n['kind']==sys.argv[1] and str(x.get('certificateSerialNumber','')).upper().lstrip('0')==want:
        print(json.dumps(x)); break" "$1" "$2"
}

# A client assertion (RS256, x5t and x5t#S256 of CERT) for the stand-in's token endpoint, signed
# with openssl: what the plugin sends, made independently. client_assertion KEY CERT
b64u() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
client_assertion() {
  local now h s x5t x5t256 aud="$standin_url/$T/oauth2/v2.0/token"
  now=$(date +%s)
  x5t=$(openssl x509 -in "$2" -outform DER | openssl dgst -sha1 -binary | b64u)
  x5t256=$(openssl x509 -in "$2" -outform DER | openssl dgst -sha256 -binary | b64u)
  h=$(printf '{"alg":"RS256","typ":"JWT","x5t":"%s","x5t#S256":"%s"}' "$x5t" "$x5t256" | b64u)
  s=$(printf '{"aud":"%s","iss":"%s","sub":"%s","jti":"%s","nbf":%d,"iat":%d,"exp":%d}' "$aud" "$C" "$C" \
    "$(cat /proc/sys/kernel/random/uuid)" "$now" "$now" $((now + 300)) | b64u)
  printf '%s.%s.%s' "$h" "$s" "$(printf '%s.%s' "$h" "$s" | openssl dgst -sha256 -sign "$1" -binary | b64u)"
}
# token_with KEY CERT: the token endpoint's answer to a client assertion signed by KEY.
token_with() {
  curl -s --cacert "$work/tls.crt" "$standin_url/$T/oauth2/v2.0/token" -d grant_type=client_credentials -d client_id="$C" \
    --data-urlencode "scope=https://api.manage.microsoft.com//.default" \
    -d client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer -d client_assertion="$(client_assertion "$1" "$2")"
}
