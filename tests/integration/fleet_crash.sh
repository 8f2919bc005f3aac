#!/usr/bin/env bash
# Integration (issue #13): 1,000 PKCS jobs and 60 revoke jobs over four real connector instances
# on one real PostgreSQL 15, while the fleet is hurt:
#   - `kill -9` of instances holding leases, then restarted;
#   - one instance SIGSTOPped past its lease, then SIGCONTed: its late result is fenced off (822);
#   - PostgreSQL crash-restarted (`pg_ctl -m immediate`) mid-batch;
#   - PostgreSQL stopped for 60 s, then started: every instance logs 801, then 802; an instance
#     started meanwhile waits for the store and then serves.
# Then: every job has exactly one result and it is a success; ca-local's issuance record holds
# exactly one certificate per request id, and it is the one in the job's result; the host's
# shared outbox is empty; every revoked serial is revoked.
# usage: fleet_crash.sh CERTCONNECTOR_BIN PLUGIN_DIR
set -uo pipefail
source "$(dirname "$0")/../interop/lib.sh" fleet-crash "$@"
fleet_lease_seconds=10
fleet_poll_ms=50
fleet_concurrency=4
source "$(dirname "$0")/fleet_lib.sh"
started=$SECONDS

fleet_pg_start || exit 1
names=(p1 p2 p3 p4)
for n in "${names[@]}"; do fleet_config "$n" pkcs,revoke; done
for n in "${names[@]}"; do fleet_start "$n" || { fail "instance $n started"; echo "0 passed, 1 failed"; exit 1; }; done
ok "four instances (pkcs, revoke) run on one PostgreSQL"
jobs_table=$(fleet_job_table)
check "tenant-local's queue is in PostgreSQL (tenant_local.jobs)" test -n "$jobs_table"
: "${jobs_table:=tenant_local.jobs}"

# running_owners: "owner count" of the jobs running now (leases held), busiest first.
running_owners() { pg_sql "SELECT owner, count(*) FROM $jobs_table WHERE status='running' GROUP BY owner ORDER BY 2 DESC" 2>/dev/null | tr '|' ' '; }
done_count() { pg_sql "SELECT count(*) FROM $jobs_table WHERE status IN ('succeeded','failed')" 2>/dev/null; }
# wait_running_on NAME SECONDS: until NAME holds at least one lease.
wait_running_on() {
  local deadline=$((SECONDS + $2))
  until running_owners | grep -q "^$1 "; do [ "$SECONDS" -ge "$deadline" ] && return 1; sleep 0.1; done
}

pkcs_jobs crash 1 1000 >"$work/all.jobs"
sed 's/.*"id": "\([^"]*\)".*/\1/' "$work/all.jobs" >"$work/pkcs.ids"
# Wave 1: 350 jobs.
head -n 350 "$work/all.jobs" | fleet_submit p1 >"$work/w1.answers"
check "wave 1: 350 PKCS jobs accepted" test "$(grep -c '"http": 201' "$work/w1.answers")" = 350

# kill -9 the two instances holding the most leases, while they hold them; restart them.
enough_running() { [ "$(pg_sql "SELECT count(*) FROM $jobs_table WHERE status='running'" 2>/dev/null || echo 0)" -ge 4 ]; }
wait_until 60 enough_running
owners=$(running_owners)
echo "# leases before kill -9: $(tr '\n' ';' <<<"$owners")"
victims=$(awk '$1 ~ /^p[123]$/ {print $1}' <<<"$owners" | head -n 2)
check "kill -9 hits instances that hold leases (mid-batch)" test -n "$victims"
for v in $victims; do fleet_kill "$v" KILL; done
echo "# killed: $victims"
sleep 1
for v in $victims; do fleet_start "$v" || fail "instance $v restarted after kill -9"; done

# SIGSTOP p4 while its workers run jobs, and keep it stopped past the lease, so others claim
# its jobs and its late results are fenced off. To catch p4 mid-run, the other instances pause
# (for less than a lease) while p4 alone takes the first 16 jobs of wave 2, which ask for
# RSA-4096 keys (seconds of key generation each). A lease whose result is already in the shared
# outbox is not late: the outbox leader delivers it and the next claim restamps it.
in_worker_on_p4() {
  pg_sql "SELECT count(*) FROM $jobs_table j WHERE status='running' AND owner='p4'
          AND NOT EXISTS (SELECT 1 FROM host.deliveries d WHERE d.kind = 'result' AND d.key = j.id)" 2>/dev/null
}
p4_busy() { [ "$(in_worker_on_p4)" -ge 1 ] 2>/dev/null; }
others=$(for n in p1 p2 p3; do fleet_alive "$n" && echo "$n"; done)
for n in $others; do fleet_kill "$n" STOP; done
sed -n 351,366p "$work/all.jobs" | sed 's/"request": {"type": "issue"/"request": {"type": "issue", "key_type": "rsa4096"/' |
  fleet_submit p4 >"$work/w2a.answers"
caught=""
deadline=$((SECONDS + 30))
until p4_busy; do [ "$SECONDS" -ge "$deadline" ] && break; sleep 0.1; done
if p4_busy; then fleet_kill p4 STOP; p4_busy && caught=1; fi
for n in $others; do fleet_kill "$n" CONT; done
# Wave 2 (the other 334); PostgreSQL is crash-restarted while they run.
sed -n 367,700p "$work/all.jobs" | fleet_submit p2 >"$work/w2b.answers"
check "wave 2: 350 PKCS jobs accepted (16 of them RSA-4096)" \
  test "$(cat "$work/w2a.answers" "$work/w2b.answers" | grep -c '"http": 201')" = 350
if [ -n "$caught" ]; then
  pg_sql "SELECT id FROM $jobs_table WHERE status='running' AND owner='p4'" >"$work/p4.held"
  echo "# p4 stopped holding $(wc -l <"$work/p4.held") lease(s), $(in_worker_on_p4) of them in its workers"
  sleep $((fleet_lease_seconds + 5))
  check "p4's jobs were claimed again (or finished) by others while it slept" bash -c "
    source '$(dirname "$0")/../support/servers/postgresql.sh'; PG_DIR='$PG_DIR' PG_PORT='$PG_PORT'
    for id in \$(cat '$work/p4.held'); do
      r=\$(pg_sql \"SELECT owner||' '||status||' '||attempts FROM $jobs_table WHERE id='\$id'\")
      echo \"\$id \$r\"; case \"\$r\" in p4\\ running*) exit 1;; esac
    done"
  fleet_kill p4 CONT
else
  fleet_kill p4 CONT
  fail "p4 stopped while its workers run jobs (p4 took none of the RSA-4096 jobs in 30 s)"
fi

# 60 revoke jobs for certificates of wave 1 (whatever has a result by now).
head -n 60 "$work/pkcs.ids" >"$work/first60.ids"
fleet_wait_final p3 180 "$work/first60.ids" >/dev/null 2>&1 || true
fleet_job_states p3 <"$work/first60.ids" | "$py" -c "
import json,sys
for i,l in enumerate(sys.stdin):
    d=json.loads(l)
    if d.get('serial'): print('crash-rev-%02d %s' % (i, d['serial']))" >"$work/rev.pairs"
while read -r id serial; do revoke_job "$id" "$serial"; done <"$work/rev.pairs" >"$work/rev.jobs"
fleet_submit p3 <"$work/rev.jobs" >"$work/rev.answers"
check "60 revoke jobs accepted" test "$(grep -c '"http": 201' "$work/rev.answers")" = 60
cut -d' ' -f1 "$work/rev.pairs" >"$work/rev.ids"
echo "# done before pg_restart_immediate: $(done_count)"
pg_restart_immediate
ok "PostgreSQL crash-restarted (-m immediate) mid-batch"

# Wave 3 (300); then PostgreSQL away for 60 s while work is queued.
sed -n 701,1000p "$work/all.jobs" | fleet_submit p4 >"$work/w3.answers"
check "wave 3: 300 PKCS jobs accepted" test "$(grep -c '"http": 201' "$work/w3.answers")" = 300
queued=$(pg_sql "SELECT count(*) FROM $jobs_table WHERE status IN ('queued','running')")
check "jobs are still queued or running when PostgreSQL goes away ($queued)" test "${queued:-0}" -gt 0
pg_stop
down_at=$SECONDS
# An instance started while the store is away waits for it (801) instead of exiting.
fleet_config p5 pkcs,revoke
fleet_names+=(p5)
(cd "$work/p5" && exec "$bin" run --config "$work/p5/c.toml") >>"$work/p5/daemon.out" 2>&1 &
fleet_pid[p5]=$!
sleep 15
p5_waits() { fleet_alive p5 && [ "$(fleet_count_events p5 801)" -ge 1 ]; }
check "p5, started while PostgreSQL is away, waits for it: alive, 801 StoreUnavailable" p5_waits
sleep $((60 - (SECONDS - down_at)))
pg_start "$work/pg" "$PG_PORT" || fail "PostgreSQL started again"
echo "# PostgreSQL was away $((SECONDS - down_at)) s"
check "p5 starts once PostgreSQL answers" wait_until 60 "$bin" status --config "$work/p5/c.toml"
names+=(p5)

all_ids=$(cat "$work/pkcs.ids" "$work/rev.ids")
printf '%s\n' $all_ids >"$work/all.ids"
check "every job (1,000 PKCS, $(wc -l <"$work/rev.ids") revoke) is final" fleet_wait_final p1 150 "$work/all.ids"
check "every job succeeded (none failed, none lost)" bash -c "
  ! grep -v '\"status\": \"succeeded\"' '$work/all.ids.states' | head -n 5 | grep ."
check "every result is exactly one: the queue holds one final row per job id" bash -c "
  source '$(dirname "$0")/../support/servers/postgresql.sh'; PG_DIR='$PG_DIR' PG_PORT='$PG_PORT'
  [ \"\$(pg_sql \"SELECT count(*) FROM $jobs_table WHERE id LIKE 'crash-%' AND status='succeeded'\")\" = $(wc -l <"$work/all.ids") ]"

iss=$(fleet_issuance_table)
check "ca-local's issuance record is in PostgreSQL (schema ca_local)" test -n "$iss"
: "${iss:=ca_local.certificates}"
check "one certificate per request id: 1,000 certificates for the 1,000 PKCS request ids, no request id twice" bash -c "
  source '$(dirname "$0")/../support/servers/postgresql.sh'; PG_DIR='$PG_DIR' PG_PORT='$PG_PORT'
  r=\$(pg_sql \"SELECT count(*)||' '||count(DISTINCT request_id) FROM $iss WHERE request_id LIKE '%crash-%'\"); echo \"\$r\"
  [ \"\$r\" = '1000 1000' ]"
pg_sql "SELECT request_id||' '||serial FROM $iss WHERE request_id LIKE '%crash-%'" >"$work/issued.pairs" 2>/dev/null
check "each PKCS job's result is the certificate the CA recorded for its request id" "$py" -c "
import json,sys
issued={}
for l in open(sys.argv[1]):
    rid,serial=l.split()
    issued[rid.split(':')[-1].split('/')[-1]]=serial.upper().lstrip('0')
bad=[]
for l in open(sys.argv[2]):
    d=json.loads(l)
    if not d['id'].startswith('crash-0') and not d['id'].startswith('crash-1'): continue
    if issued.get(d['id'])!=(d.get('serial') or '').upper().lstrip('0'): bad.append((d['id'],d.get('serial'),issued.get(d['id'])))
assert not bad, bad[:10]" "$work/issued.pairs" "$work/all.ids.states"
check "every revoked serial is revoked in ca-local's record" bash -c "
  source '$(dirname "$0")/../support/servers/postgresql.sh'; PG_DIR='$PG_DIR' PG_PORT='$PG_PORT'
  t=\$(pg_sql \"SELECT table_schema||'.'||table_name FROM information_schema.columns WHERE table_schema='ca_local' AND column_name='revoked_at' LIMIT 1\")
  [ -n \"\$t\" ] || { echo 'no revoked_at column in ca_local'; exit 1; }
  n=\$(pg_sql \"SELECT count(DISTINCT serial) FROM \$t WHERE revoked_at IS NOT NULL\"); echo \"revoked: \$n\"
  [ \"\$n\" -ge $(wc -l <"$work/rev.ids") ]"
outbox_empty() { [ "$(fleet_outbox_rows)" = 0 ]; }
check "the host's shared outbox is empty once results are delivered" wait_until 30 outbox_empty

check "p4's late result was fenced off: 822 ResultFenced in p4's log" test "$(fleet_count_events p4 822)" -ge 1
echo "# p4: 822 x$(fleet_count_events p4 822), 308 x$(fleet_count_events p4 308)"
for n in "${names[@]}"; do
  check "instance $n: 801 StoreUnavailable, then 802 StoreRecovered" "$py" -c "
import glob,json,sys
ev=[]
for f in glob.glob(sys.argv[1]+'/log/*.jsonl*'):
    for l in open(f):
        try: e=json.loads(l)
        except ValueError: continue
        if e.get('id') in (801,802): ev.append((e['time'],e['id']))
ev.sort()
i801=[i for i,(t,x) in enumerate(ev) if x==801]
assert i801 and any(x==802 for t,x in ev[i801[0]:]), ev" "$work/$n"
done
for n in "${names[@]}"; do stop_checked "$n"; done
echo "# run time $((SECONDS - started)) s"
echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
