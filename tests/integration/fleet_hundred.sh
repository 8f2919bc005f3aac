#!/usr/bin/env bash
# Integration (issue #13): 100 real connector processes on one machine and one PostgreSQL 15
# (tiny configurations: one job at a time each, small poll intervals). All are visible in
# `status --fleet` and the registry; PKCS jobs are spread over them; PostgreSQL never runs out of
# connections; and the connections each instance holds are reported (pg_stat_activity grouped by
# application_name, which every instance sets to "certconnector <instance id>").
# usage: fleet_hundred.sh CERTCONNECTOR_BIN PLUGIN_DIR [INSTANCES (default 100)]
set -uo pipefail
source "$(dirname "$0")/../interop/lib.sh" fleet-hundred "$1" "$2"
count=${3:-100}
fleet_concurrency=1
fleet_poll_ms=250
fleet_lease_seconds=30
fleet_start_tries=600
# Every instance may hold a few connections (host, tenant-local, ca-local); leave room for psql.
export PG_MAX_CONNECTIONS=$((count * 6 + 20))
source "$(dirname "$0")/fleet_lib.sh"
started=$SECONDS

fleet_pg_start || exit 1
names=()
for i in $(seq 1 "$count"); do names+=("$(printf 'h%03d' "$i")"); done
for n in "${names[@]}"; do
  fleet_config "$n" pkcs
  # A registry heartbeat every 2 s (100 instances: 50 updates a second), loss after 10 s.
  sed -i 's/^heartbeat_seconds = 1$/heartbeat_seconds = 2/; s/^lost_after_seconds = 4$/lost_after_seconds = 10/' "$work/$n/c.toml"
done
# Start them ten at a time (each start waits for its admin socket), in the background.
start_failed=0
for ((b = 0; b < count; b += 10)); do
  batch=("${names[@]:b:10}")
  for n in "${batch[@]}"; do
    [[ " ${fleet_names[*]} " == *" $n "* ]] || fleet_names+=("$n")
    (cd "$work/$n" && exec "$bin" run --config "$work/$n/c.toml") >>"$work/$n/daemon.out" 2>&1 &
    fleet_pid[$n]=$!
  done
  # A start is slow on a loaded machine (every instance already up heartbeats and polls), so
  # the wait is long; a process that died is reported at once.
  for n in "${batch[@]}"; do
    deadline=$((SECONDS + 300))
    until "$bin" status --config "$work/$n/c.toml" >/dev/null 2>&1; do
      if ! fleet_alive "$n" || [ "$SECONDS" -ge "$deadline" ]; then
        start_failed=$((start_failed + 1))
        echo "# $n did not start ($(fleet_alive "$n" && echo "still starting after 300 s" || echo "exited")):"
        tail -n 5 "$work/$n/daemon.out"; tail -n 3 "$work/$n/log/operational.jsonl" 2>/dev/null
        break
      fi
      sleep 0.5
    done
  done
done
check "$count instances started ($((SECONDS - started)) s)" test "$start_failed" = 0
alive=0; for n in "${names[@]}"; do fleet_alive "$n" && alive=$((alive + 1)); done
check "all $count processes are alive" test "$alive" = "$count"

fleet_listed() {
  local out n
  out=$("$bin" status --fleet --config "$work/h001/c.toml" 2>&1) || return 1
  for n in "${names[@]}"; do grep -qw "$n" <<<"$out" || return 1; done
}
check "status --fleet lists all $count instances" wait_until 30 fleet_listed
check "the registry (host.instances) holds $count live instances" wait_until 30 bash -c "
  source '$(dirname "$0")/../support/servers/postgresql.sh'; PG_DIR='$PG_DIR' PG_PORT='$PG_PORT'
  [ \"\$(pg_sql \"SELECT count(*) FROM host.instances WHERE left_at IS NULL AND instance_id LIKE 'h%'\")\" = $count ]"

jobs_n=$((count * 3))
pkcs_jobs hundred 1 "$jobs_n" >"$work/jobs"
sed 's/.*"id": "\([^"]*\)".*/\1/' "$work/jobs" >"$work/ids"
t0=$SECONDS
fleet_submit h001 <"$work/jobs" >"$work/answers"
check "$jobs_n PKCS jobs accepted" test "$(grep -c '"http": 201' "$work/answers")" = "$jobs_n"
check "every job succeeded" fleet_wait_final h001 240 "$work/ids"
echo "# $jobs_n jobs done in $((SECONDS - t0)) s"
check "no job failed" bash -c "! grep -v '\"status\": \"succeeded\"' '$work/ids.states' | head -n 5 | grep ."
fleet_who_ran 1050 | grep '^hundred-' | sort -u >"$work/ran"
ran_by=$(cut -d' ' -f2 "$work/ran" | sort -u | wc -l)
busiest=$(cut -d' ' -f2 "$work/ran" | sort | uniq -c | sort -rn | head -n 1 | awk '{print $1, $2}')
echo "# jobs were issued by $ran_by instances; busiest: $busiest"
check "work spread: at least a quarter of the instances issued certificates ($ran_by of $count)" test "$ran_by" -ge $((count / 4))
check "no instance took more than a tenth of the jobs (busiest: $busiest)" test "${busiest%% *}" -le $((jobs_n / 10))

# Connections per instance.
pg_sql "SELECT application_name, count(*) FROM pg_stat_activity WHERE datname='certconn' GROUP BY 1 ORDER BY 1" >"$work/conns"
check "every instance connects as application_name 'certconnector <instance id>'" bash -c "
  for n in ${names[*]}; do grep -q \"^certconnector \$n|\" '$work/conns' || { echo \"no connection named for \$n\"; exit 1; }; done"
"$py" - "$work/conns" "$count" <<'PY'
import collections, sys
per = [int(l.rsplit("|", 1)[1]) for l in open(sys.argv[1]) if l.startswith("certconnector ")]
c = collections.Counter(per)
print("# connections per instance: min %d, max %d, mean %.2f, total %d for %s instances; histogram %s"
      % (min(per), max(per), sum(per) / len(per), sum(per), sys.argv[2], dict(sorted(c.items()))))
PY
max_per=$(awk -F'|' '/^certconnector /{if ($2 > m) m = $2} END {print m + 0}' "$work/conns")
check "each instance holds at most 7 connections, its budget (max $max_per)" test "$max_per" -le 7
check "PostgreSQL never refused a connection (no 'too many clients' in its log or any instance's)" bash -c "
  ! grep -l 'too many clients\|remaining connection slots' '$PG_DIR/server.log' '$work'/h*/daemon.out '$work'/h*/log/*.jsonl 2>/dev/null | head -n 3 | grep ."
rss=$(for n in "${names[@]}"; do [ -n "${fleet_pid[$n]}" ] && awk '/VmRSS/{print $2}' "/proc/${fleet_pid[$n]}/status" 2>/dev/null; done | awk '{s+=$1} END {printf "%d", s/1024}')
echo "# resident memory of the $count instances: ${rss} MiB"

# Stop them all (in parallel: TERM each, then reap).
stop_fail=0
for n in "${names[@]}"; do kill -TERM "${fleet_pid[$n]}" 2>/dev/null; done
for n in "${names[@]}"; do wait "${fleet_pid[$n]}" || stop_fail=$((stop_fail + 1)); fleet_pid[$n]=""; done
check "all $count instances stopped cleanly (exit 0)" test "$stop_fail" = 0
echo "# run time $((SECONDS - started)) s"
echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
