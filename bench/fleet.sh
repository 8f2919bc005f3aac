#!/usr/bin/env bash
# bench/fleet (issue #13): PKCS and revoke jobs per second, and claim latency p50/p99, for
#   1 instance on SQLite (today's single machine) and 1, 2 and 4 instances on one PostgreSQL 15,
# in one run, each a real `certconnector` process (tests/integration/fleet_lib.sh starts them;
# PostgreSQL from Debian's packages via tests/support/servers/postgresql.sh).
# Prints JSON lines:
#   {"bench":"fleet","store":"sqlite|postgresql","instances":N,"kind":"pkcs|revoke","jobs":J,
#    "seconds":S,"jobs_per_second":R}
#   {"bench":"fleet",...,"kind":"claim_latency","samples":K,"p50_ms":..,"p99_ms":..,"poll_interval_ms":P}
# jobs/s: J jobs submitted at once through one instance's intake, from the first submission until
# the last job has its result (submission included). Claim latency: a job submitted alone to an
# idle fleet, from the queue's created_at until an instance picks it up (the feature's "request
# received" event, 1020): what a device waits before work starts; it includes the poll interval.
# usage: bench-fleet [--quick]   (built by `scripts/bench fleet`; CERTCONNECTOR_BIN and PLUGIN_DIR
# come from the build, or from the environment)
set -uo pipefail
here="$(cd "$(dirname "$(realpath "$0")")" && pwd)"
src=${CERTCONN_SOURCE_DIR:-$(cd "$here/.." && pwd)}
bin=${CERTCONNECTOR_BIN:?CERTCONNECTOR_BIN: the certconnector binary}
plugin_dir=${CERTCONN_PLUGIN_DIR:?CERTCONN_PLUGIN_DIR: the built plugins}
quick=0; [ "${1:-}" = --quick ] && quick=1
jobs_n=$([ $quick = 1 ] && echo 100 || echo 500)
lat_n=$([ $quick = 1 ] && echo 20 || echo 100)

# The test helpers, quietly: lib.sh's check/ok print to stderr here (stdout is JSON lines only).
source "$src/tests/interop/lib.sh" bench-fleet "$bin" "$plugin_dir"
fleet_concurrency=4
fleet_poll_ms=100
fleet_lease_seconds=30
source "$src/tests/integration/fleet_lib.sh"
exec 3>&1 1>&2   # everything but the JSON lines goes to stderr

fleet_pg_start || exit 1
run=0

# measure STORE N: starts N instances, runs the PKCS, revoke and latency phases, prints JSON.
measure() {
  local store=$1 count=$2 names=() i n
  run=$((run + 1))
  for i in $(seq 1 "$count"); do names+=("b$run-$i"); done
  for n in "${names[@]}"; do
    fleet_config "$n" pkcs,revoke
    if [ "$store" = sqlite ]; then
      sed -i '/^url = /d; /^heartbeat_seconds = /d; /^lost_after_seconds = /d; /^shared_key_file = /d' "$work/$n/c.toml"
    fi
  done
  for n in "${names[@]}"; do fleet_start "$n" || { echo "instance $n did not start" >&2; return 1; }; done
  local first=${names[0]}

  # PKCS throughput.
  pkcs_jobs "r$run" 1 "$jobs_n" >"$work/r$run.jobs"
  sed 's/.*"id": "\([^"]*\)".*/\1/' "$work/r$run.jobs" >"$work/r$run.ids"
  local t0 t1
  t0=$(date +%s.%N)
  fleet_submit "$first" <"$work/r$run.jobs" >/dev/null
  fleet_wait_final "$first" 600 "$work/r$run.ids" || return 1
  t1=$(date +%s.%N)
  emit "$store" "$count" pkcs "$jobs_n" "$t0" "$t1"

  # Revoke throughput: every certificate just issued.
  "$py" -c "
import json,sys
for i,l in enumerate(open(sys.argv[1])):
    d=json.loads(l)
    if d.get('serial'): print(json.dumps({'id':'r%s-rev-%04d'%(sys.argv[2],i),'feature':'revoke','request':{'ca':'corp','serial':d['serial'],'reason':'superseded'}}))
" "$work/r$run.ids.states" "$run" >"$work/r$run.rev"
  sed 's/.*"id": "\([^"]*\)".*/\1/' "$work/r$run.rev" >"$work/r$run.rev.ids"
  t0=$(date +%s.%N)
  fleet_submit "$first" <"$work/r$run.rev" >/dev/null
  fleet_wait_final "$first" 600 "$work/r$run.rev.ids" || return 1
  t1=$(date +%s.%N)
  emit "$store" "$count" revoke "$(wc -l <"$work/r$run.rev.ids")" "$t0" "$t1"

  # Claim latency on an idle fleet: one job at a time, 150 ms apart.
  pkcs_jobs "l$run" 1 "$lat_n" >"$work/l$run.jobs"
  sed 's/.*"id": "\([^"]*\)".*/\1/' "$work/l$run.jobs" >"$work/l$run.ids"
  while read -r j; do printf '%s\n' "$j" | fleet_submit "$first" >/dev/null; sleep 0.15; done <"$work/l$run.jobs"
  fleet_wait_final "$first" 300 "$work/l$run.ids" || return 1
  fleet_get_created "$first" <"$work/l$run.ids" >"$work/l$run.created"
  for n in "${names[@]}"; do fleet_events "$n" 1020; done >"$work/l$run.received"
  "$py" - "$work/l$run.created" "$work/l$run.received" "$store" "$count" "$fleet_poll_ms" >&3 <<'PY'
import datetime, json, sys
def ts(s): return datetime.datetime.strptime(s.rstrip("Z")[:26], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc).timestamp()
created = dict(l.split() for l in open(sys.argv[1]) if l.strip())
got = {}
for l in open(sys.argv[2]):
    e = json.loads(l); r = e.get("request_id")
    if r in created and r not in got: got[r] = ts(e["time"])
lat = sorted((got[r] - ts(created[r])) * 1000 for r in got)
pct = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else None
print(json.dumps({"bench": "fleet", "store": sys.argv[3], "instances": int(sys.argv[4]), "kind": "claim_latency",
                  "samples": len(lat), "p50_ms": pct(0.50), "p99_ms": pct(0.99), "poll_interval_ms": int(sys.argv[5])}), flush=True)
PY
  for n in "${names[@]}"; do fleet_stop "$n" || echo "instance $n did not stop cleanly" >&2; done
  # The next run starts from an empty database.
  [ "$store" = postgresql ] && pg_sql "DROP SCHEMA IF EXISTS host, tenant_local, ca_local, scep CASCADE" >/dev/null 2>&1
  return 0
}

emit() { # STORE N KIND JOBS T0 T1
  "$py" -c "
import json,sys
s=float(sys.argv[6])-float(sys.argv[5])
print(json.dumps({'bench':'fleet','store':sys.argv[1],'instances':int(sys.argv[2]),'kind':sys.argv[3],'jobs':int(sys.argv[4]),
                  'seconds':round(s,2),'jobs_per_second':round(int(sys.argv[4])/s,1)}), flush=True)" "$@" >&3
}

# fleet_get_created NAME: "id created_at" for the ids on stdin.
fleet_get_created() {
  local id
  while read -r id; do printf '%s %s\n' "$id" "$(fleet_get "$1" "/tenant/v1/jobs/$id" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["created_at"])')"; done
}

status=0
measure sqlite 1 || status=1
for count in 1 2 4; do measure postgresql "$count" || status=1; done
exit $status
