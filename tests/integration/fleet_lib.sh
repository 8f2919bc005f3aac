# shellcheck shell=bash
# Shared by the fleet_*.sh integration tests (issue #13), after tests/interop/lib.sh: one real
# PostgreSQL 15 (tests/support/servers/postgresql.sh) and any number of real `certconnector`
# processes, each with its own directory ($work/<name>: c.toml, state/, log/), its own listen port
# and the one shared `[store] url`. The instance id of <name> is <name> ([update] instance_id), so
# the registry, `status --fleet` and pg_stat_activity's application_name name it.
#
#   fleet_pg_start                       PostgreSQL in $work/pg (PG_MAX_CONNECTIONS honoured)
#   fleet_config NAME FEATURES [EXTRA]   writes $work/NAME/c.toml; FEATURES: comma list of
#                                        pkcs,revoke,import,scep enabled (the others disabled);
#                                        EXTRA: TOML appended (e.g. more sections)
#   fleet_start NAME                     runs it; waits for its admin socket to answer
#   fleet_kill NAME [SIGNAL]             signal (default KILL) and reap; fleet_stop NAME: TERM, exit 0 expected
#   fleet_submit NAME < JOBS             POSTs JSON job documents (one a line) to NAME's intake
#                                        over its admin socket; prints the answers (one a line)
#   fleet_events NAME ID                 the event records with that id in NAME's logs (JSON lines)
#   fleet_who_ran EVENT_ID               "request_id instance" for every EVENT_ID record of every instance
#   fleet_jobs_sql SQL                   pg_sql against the shared job queue (schema tenant_local)
source "$(dirname "${BASH_SOURCE[0]}")/../support/servers/postgresql.sh"

declare -A fleet_pid=()
declare -A fleet_port=()
fleet_names=()
fleet_lease_seconds=${fleet_lease_seconds:-10}
fleet_poll_ms=${fleet_poll_ms:-100}
fleet_concurrency=${fleet_concurrency:-4}

fleet_cleanup() {
  local n
  for n in "${!fleet_pid[@]}"; do
    local p=${fleet_pid[$n]}
    [ -n "$p" ] || continue
    kill -CONT "$p" 2>/dev/null
    kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  [ "$(type -t fleet_extra_cleanup)" = function ] && fleet_extra_cleanup
  pg_stop
  if [ -n "${KEEP_WORK:-}" ]; then echo "work kept in $work"; else rm -rf "$work"; fi
}
trap fleet_cleanup EXIT

# free_port: a loopback port nobody listens on now, below the kernel's ephemeral range: a fleet's
# instances start minutes after their configurations are written, and hundreds of outbound
# connections (to PostgreSQL) would otherwise take the chosen ports first.
free_port() {
  "$py" -c '
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for _ in range(1000):
    port = random.randrange(10000, low)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port)); print(port); break
    except OSError: pass
    finally: s.close()'
}

# wait_until SECONDS COMMAND...: retries the command every half second; fails after SECONDS.
wait_until() {
  local limit=$1; shift; local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do [ "$SECONDS" -ge "$deadline" ] && return 1; sleep 0.5; done
}

fleet_pg_start() {
  pg_start "$work/pg" || { echo "PostgreSQL did not start" >&2; return 1; }
}

# The passphrase every instance reads for the shared CA and RA keys (fleet-spec: shared_key_file).
fleet_shared_key() {
  [ -f "$work/shared.key" ] && return 0
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/shared.key"
  echo >>"$work/shared.key"
  chmod 600 "$work/shared.key"
}

fleet_config() {
  local name=$1 features=$2 extra=${3:-} f flags=""
  local port=${fleet_port[$name]:-$(free_port)}
  fleet_port[$name]=$port
  fleet_shared_key
  mkdir -p "$work/$name"
  for f in pkcs revoke import scep; do
    if [[ ",$features," == *",$f,"* ]]; then flags+="$f = true"$'\n'; else flags+="$f = false"$'\n'; fi
  done
  cat >"$work/$name/c.toml" <<TOML
[host]
listen = "127.0.0.1:$port"
plugin_dir = "$plugins"
state_dir = "state"
log_dir = "log"
[update]
instance_id = "$name"
[store]
url = "$PG_URL"
heartbeat_seconds = 1
lost_after_seconds = 4
[jobs]
concurrency = $fleet_concurrency
lease_seconds = $fleet_lease_seconds
poll_interval_ms = $fleet_poll_ms
retry_initial_ms = 100
retry_max_ms = 1000
max_attempts = 20
[features]
$flags
[tenant.local]
plugin = "local"
[ca.corp]
plugin = "local"
algorithm = "${fleet_ca_algorithm:-p256}"
shared_key_file = "$work/shared.key"
public_base_url = "${fleet_public_base:-http://127.0.0.1:$port}"
[ca.corp.profiles.default]
validity_days = 30
key_usage = ["digitalSignature", "keyEncipherment"]
extended_key_usage = ["clientAuth"]
san_types = ["email", "dns", "upn"]
[pkcs]
default_ca = "corp"
default_profile = "default"
default_key_type = "p256"
shared_key_file = "$work/shared.key"
$extra
TOML
}

fleet_start() {
  local name=$1
  [[ " ${fleet_names[*]} " == *" $name "* ]] || fleet_names+=("$name")
  (cd "$work/$name" && exec "$bin" run --config "$work/$name/c.toml") >>"$work/$name/daemon.out" 2>&1 &
  fleet_pid[$name]=$!
  local i
  for i in $(seq 1 ${fleet_start_tries:-450}); do
    "$bin" status --config "$work/$name/c.toml" >/dev/null 2>&1 && return 0
    kill -0 "${fleet_pid[$name]}" 2>/dev/null || break
    sleep 0.2
  done
  echo "instance $name did not start:" >&2
  tail -n 30 "$work/$name/daemon.out" >&2
  return 1
}

fleet_kill() {
  local name=$1 sig=${2:-KILL} p=${fleet_pid[$1]:-}
  [ -n "$p" ] || return 0
  kill -"$sig" "$p" 2>/dev/null
  if [ "$sig" = KILL ] || [ "$sig" = TERM ]; then wait "$p" 2>/dev/null; fleet_pid[$name]=""; fi
}

# fleet_stop NAME: TERM; succeeds only when it exits 0.
fleet_stop() {
  local p=${fleet_pid[$1]:-} rc
  [ -n "$p" ] || return 0
  kill -TERM "$p" 2>/dev/null
  wait "$p"; rc=$?
  fleet_pid[$1]=""
  return $rc
}

fleet_alive() { [ -n "${fleet_pid[$1]:-}" ] && kill -0 "${fleet_pid[$1]}" 2>/dev/null; }

fleet_sock() { echo "$work/$1/state/admin.sock"; }

# fleet_submit NAME: job documents on stdin, one JSON object a line; answers on stdout, one a line
# ({"http": status, ...body}). Over the admin socket, which holds every scope.
fleet_submit() {
  "$py" -c "$(cat <<'PY'
import http.client, json, socket, sys
class Unix(http.client.HTTPConnection):
    def __init__(self, path): super().__init__("localhost", timeout=30); self.path_ = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.settimeout(30); self.sock.connect(self.path_)
conn = Unix(sys.argv[1])
for line in sys.stdin.read().splitlines():
    if not line.strip(): continue
    for attempt in range(3):
        try:
            conn.request("POST", "/tenant/v1/jobs", body=line, headers={"Content-Type": "application/json"})
            r = conn.getresponse(); body = r.read(1 << 20)
            break
        except (OSError, http.client.HTTPException):
            conn.close(); conn = Unix(sys.argv[1])
    else:
        print(json.dumps({"http": 0})); continue
    try: d = json.loads(body)
    except ValueError: d = {"raw": body.decode(errors="replace")[:200]}
    if not isinstance(d, dict): d = {"body": d}
    d["http"] = r.status
    print(json.dumps(d), flush=True)
PY
)" "$(fleet_sock "$1")"
}

# fleet_get NAME PATH: GET over NAME's admin socket (body on stdout).
fleet_get() { curl -s --max-time 20 --unix-socket "$(fleet_sock "$1")" "http://localhost$2"; }

# fleet_events NAME ID: NAME's event records with that id (every channel, archives included).
fleet_events() {
  cat "$work/$1"/log/*.jsonl* 2>/dev/null | "$py" -c "
import json,sys
for line in sys.stdin:
    try: e=json.loads(line)
    except ValueError: continue
    if e.get('id')==int(sys.argv[1]): print(json.dumps(e))" "$2"
}

# fleet_count_events NAME ID: how many (summary records counted for what they stand for).
fleet_count_events() {
  fleet_events "$1" "$2" | "$py" -c "
import json,sys
print(sum(1+json.loads(l).get('fields',{}).get('suppressed',0) for l in sys.stdin if l.strip()))"
}

# fleet_who_ran EVENT_ID: "request_id instance" for each record of that event in every instance's logs.
fleet_who_ran() {
  local n
  for n in "${fleet_names[@]}"; do
    fleet_events "$n" "$1" | "$py" -c "
import json,sys
for l in sys.stdin:
    e=json.loads(l)
    if e.get('request_id'): print(e['request_id'], sys.argv[1])" "$n"
  done
}

# A device key (P-256) every PKCS job in a test envelopes its result to.
fleet_device_key() {
  [ -f "$work/device.pub" ] && return 0
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/device.key" 2>/dev/null
  openssl pkey -in "$work/device.key" -pubout -out "$work/device.pub" 2>/dev/null
}

# pkcs_jobs PREFIX FROM TO: job documents pkcs PREFIX-FROM .. PREFIX-TO (ids = request ids).
pkcs_jobs() {
  fleet_device_key
  "$py" -c "$(cat <<'PY'
import json, sys
pem = open(sys.argv[4]).read()
for i in range(int(sys.argv[2]), int(sys.argv[3]) + 1):
    jid = "%s-%04d" % (sys.argv[1], i)
    print(json.dumps({"id": jid, "feature": "pkcs",
                      "request": {"type": "issue", "subject": "CN=%s,O=Fleet" % jid, "device_key_pem": pem}}))
PY
)" "$1" "$2" "$3" "$work/device.pub"
}

# revoke_job ID SERIAL: one revoke job document.
revoke_job() {
  printf '{"id":"%s","feature":"revoke","request":{"ca":"corp","serial":"%s","reason":"keyCompromise"}}\n' "$1" "$2"
}

# fleet_job_table: the shared job queue's table, schema-qualified (tenant-local owns it).
fleet_job_table() {
  pg_sql "SELECT table_schema||'.'||table_name FROM information_schema.tables
          WHERE table_schema='tenant_local' AND table_name='jobs'" 2>/dev/null
}
# fleet_issuance_table: ca-local's issuance record (serial, request_id), schema-qualified.
fleet_issuance_table() {
  pg_sql "SELECT table_schema||'.'||table_name FROM information_schema.columns
          WHERE table_schema='ca_local' AND column_name='request_id' ORDER BY table_name LIMIT 1" 2>/dev/null
}
# fleet_outbox_rows: rows in the host's shared outbox (schema host), summed over its outbox tables.
fleet_outbox_rows() {
  local t total=0 n
  for t in $(pg_sql "SELECT table_schema||'.'||table_name FROM information_schema.tables
                     WHERE table_schema='host' AND (table_name LIKE '%outbox%' OR table_name LIKE '%deliver%')" 2>/dev/null); do
    n=$(pg_sql "SELECT count(*) FROM $t") || return 1
    total=$((total + n))
  done
  [ -n "$t" ] || { echo "no outbox table in schema host" >&2; return 1; }
  echo "$total"
}

# fleet_status_fleet NAME: `certconnector status --fleet` asked of NAME.
fleet_status_fleet() { "$bin" status --fleet --config "$work/$1/c.toml" 2>&1; }

# fleet_job_states NAME: job ids on stdin (one a line); prints one JSON line per job
# {"id","status","attempts","serial","error"} as NAME's job API (GET /tenant/v1/jobs/ID) answers.
fleet_job_states() {
  "$py" -c "$(cat <<'PY'
import http.client, json, socket, sys
class Unix(http.client.HTTPConnection):
    def __init__(self, path): super().__init__("localhost", timeout=30); self.path_ = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.settimeout(30); self.sock.connect(self.path_)
conn = Unix(sys.argv[1])
for jid in sys.stdin.read().split():
    d = {"id": jid, "status": "unreachable"}
    for attempt in range(3):
        try:
            conn.request("GET", "/tenant/v1/jobs/" + jid)
            r = conn.getresponse(); body = r.read(1 << 22)
            if r.status == 200:
                j = json.loads(body); res = j.get("result") or {}
                d = {"id": jid, "status": j.get("status"), "attempts": j.get("attempts"),
                     "serial": res.get("serial"), "error": res.get("error"), "result_status": res.get("status")}
            else:
                d = {"id": jid, "status": "http %d" % r.status}
            break
        except (OSError, http.client.HTTPException, ValueError):
            conn.close(); conn = Unix(sys.argv[1])
    print(json.dumps(d), flush=True)
PY
)" "$(fleet_sock "$1")"
}

# fleet_wait_final NAME SECONDS FILE: waits until every job id listed in FILE is succeeded or
# failed (asking NAME); writes their states to FILE.states; fails (printing a summary) on timeout.
fleet_wait_final() {
  local name=$1 limit=$2 file=$3 deadline=$((SECONDS + $2)) pending
  while :; do
    fleet_job_states "$name" <"$file" >"$file.states"
    # A job the API did not answer for counts as pending (so does a missing line).
    pending=$("$py" -c "
import json,sys
ids=open(sys.argv[2]).read().split()
st={json.loads(l)['id']:json.loads(l)['status'] for l in open(sys.argv[1]) if l.strip()}
print(sum(1 for i in ids if st.get(i) not in ('succeeded','failed')))" "$file.states" "$file")
    [ "$pending" = 0 ] && return 0
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "$pending of $(wc -l <"$file") jobs not final after ${limit}s:"
      "$py" -c "
import collections,json,sys
print(dict(collections.Counter(json.loads(l)['status'] for l in open(sys.argv[1]))))" "$file.states"
      return 1
    fi
    sleep 1
  done
}

# stop_checked NAME: fleet_stop in this shell (not in check's subshell: `wait` needs the parent),
# reported as a check; a sanitizer report or a crash at exit makes it fail.
stop_checked() {
  if fleet_stop "$1"; then ok "instance $1 stops cleanly (exit 0)"
  else fail "instance $1 stops cleanly (exit 0)" "$(tail -n 20 "$work/$1/daemon.out")"; fi
}

# all_succeeded NAME SECONDS FILE: fleet_wait_final, then every one of them succeeded (the others listed).
all_succeeded() {
  fleet_wait_final "$@" || return 1
  ! grep -v '"status": "succeeded"' "$3.states" | head -n 5 | grep .
}
