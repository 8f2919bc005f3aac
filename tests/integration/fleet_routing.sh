#!/usr/bin/env bash
# Integration (issue #13): five real connector instances with different [features] on one real
# PostgreSQL 15 share one job queue; each job is run only by an instance that has its feature
# (told by the events each instance writes to its own log directory), the instances that share a
# feature share its jobs, `status --fleet` lists all five, and a feature no live instance serves
# is reported as such while its jobs wait (and run once an instance serving it is back).
# usage: fleet_routing.sh CERTCONNECTOR_BIN PLUGIN_DIR
set -uo pipefail
source "$(dirname "$0")/../interop/lib.sh" fleet-routing "$@"
source "$(dirname "$0")/fleet_lib.sh"

fleet_pg_start || exit 1
scep_section='[scep]
shared_key_file = "'"$work"'/shared.key"
[scep.profiles.devices]
path = "/scep/devices"
ca = "corp"
tenant = "local"'
# Feature sets: a {pkcs}, b {revoke}, c {import}, d {pkcs, revoke}, e {scep}.
fleet_config a pkcs
fleet_config b revoke
fleet_config c import
fleet_config d pkcs,revoke
fleet_config e scep "$scep_section"
for n in a b c d e; do
  check "instance $n: config check accepts it (shared [store], its [features])" "$bin" config check --config "$work/$n/c.toml"
done
for n in a b c d e; do fleet_start "$n" || { fail "instance $n started"; finish; exit 1; }; done
ok "five instances run on one PostgreSQL"

check "status --fleet lists all five instances" bash -c "
  out=\$('$bin' status --fleet --config '$work/e/c.toml' 2>&1) || { echo \"\$out\"; exit 1; }
  for n in a b c d e; do grep -qw \"\$n\" <<<\"\$out\" || { echo \"missing \$n in:\"; echo \"\$out\"; exit 1; }; done"
check "the registry holds all five with their features (host.instances)" bash -c "
  source '$(dirname "$0")/../support/servers/postgresql.sh'; PG_DIR='$PG_DIR' PG_PORT='$PG_PORT'
  out=\$(pg_sql \"SELECT instance_id||' '||features FROM host.instances WHERE left_at IS NULL ORDER BY instance_id\") || exit 1
  echo \"\$out\"
  [ \"\$(wc -l <<<\"\$out\")\" = 5 ] &&
  grep -q '^a .*pkcs' <<<\"\$out\" && ! grep -q '^a .*revoke' <<<\"\$out\" &&
  grep -q '^b .*revoke' <<<\"\$out\" && ! grep -q '^b .*pkcs' <<<\"\$out\" &&
  grep -q '^c .*import' <<<\"\$out\" && grep -q '^e .*scep' <<<\"\$out\" && ! grep -q '^e .*pkcs' <<<\"\$out\""

# 40 PKCS jobs, submitted through e (which cannot run them: the intake is shared, the work is not).
pkcs_jobs route 1 40 >"$work/pkcs.jobs"
fleet_submit e <"$work/pkcs.jobs" >"$work/pkcs.answers"
check "40 PKCS jobs accepted through instance e's intake (201)" \
  test "$(grep -c '"http": 201' "$work/pkcs.answers")" = 40
sed 's/.*"id": "\([^"]*\)".*/\1/' "$work/pkcs.jobs" >"$work/pkcs.ids"
check "every PKCS job succeeded" all_succeeded e 90 "$work/pkcs.ids"

# Revoke jobs for ten of those certificates, submitted through a (which has no revoke).
head -n 10 "$work/pkcs.ids.states" | "$py" -c "
import json,sys
for i,l in enumerate(sys.stdin):
    d=json.loads(l); print('route-rev-%02d %s' % (i, d['serial']))" >"$work/rev.pairs"
while read -r id serial; do revoke_job "$id" "$serial"; done <"$work/rev.pairs" >"$work/rev.jobs"
fleet_submit a <"$work/rev.jobs" >"$work/rev.answers"
check "10 revoke jobs accepted through instance a" test "$(grep -c '"http": 201' "$work/rev.answers")" = 10
cut -d' ' -f1 "$work/rev.pairs" >"$work/rev.ids"
check "every revoke job succeeded" all_succeeded a 60 "$work/rev.ids"

# An import job naming a connector key nobody holds: it fails, but only c may run (and fail) it.
printf '{"id":"route-imp-1","feature":"import","request":{"pfx":"%s","encrypted_password":"%s","key_name":"nobody-holds-this","purpose":"unassigned","upn":"bob@example.com","device_key_pem":%s}}\n' \
  "$(head -c 64 /dev/urandom | base64 -w0)" "$(head -c 256 /dev/urandom | base64 -w0)" \
  "$("$py" -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read()))' "$work/device.pub")" >"$work/imp.jobs"
fleet_submit d <"$work/imp.jobs" >"$work/imp.answers"
echo route-imp-1 >"$work/imp.ids"
import_failed() { fleet_wait_final d 60 "$work/imp.ids" && grep -q '"status": "failed"' "$work/imp.ids.states"; }
check "the import job has a result (failed: the key is not held)" import_failed

fleet_who_ran 1050 | sort -u >"$work/ran.pkcs"      # PkcsIssuedSuccess
fleet_who_ran 3050 | sort -u >"$work/ran.revoke"    # RevokeSuccess
{ fleet_who_ran 2050; fleet_who_ran 2052; } | sort -u >"$work/ran.import"  # import re-encrypted / failed
check "each of the 40 PKCS jobs was issued by an instance with pkcs (a or d), and only there" bash -c "
  [ \"\$(grep -c '^route-' '$work/ran.pkcs')\" -ge 40 ] || { echo 'too few 1050 events:'; cat '$work/ran.pkcs'; exit 1; }
  ! grep -v ' [ad]\$' '$work/ran.pkcs'"
check "the PKCS jobs were shared: both a and d issued some" bash -c "
  grep -q ' a\$' '$work/ran.pkcs' && grep -q ' d\$' '$work/ran.pkcs' || { cut -d' ' -f2 '$work/ran.pkcs' | sort | uniq -c; exit 1; }"
check "each revoke job was run by an instance with revoke (b or d), and only there" bash -c "
  [ \"\$(grep -c '^route-rev-' '$work/ran.revoke')\" -ge 10 ] || { cat '$work/ran.revoke'; exit 1; }
  ! grep -v ' [bd]\$' '$work/ran.revoke'"
check "the import job was run by c, the only instance with import" bash -c "
  grep -q '^route-imp-1 c\$' '$work/ran.import' && ! grep -v ' c\$' '$work/ran.import'"
check "e (scep only) ran no job at all" bash -c "! grep -q ' e\$' '$work/ran.pkcs' '$work/ran.revoke' '$work/ran.import'"

# c leaves: no live instance serves import. A new import job waits, status says so, event 814.
stop_checked c
printf '%s\n' "$(sed 's/route-imp-1/route-imp-2/' "$work/imp.jobs")" | fleet_submit a >/dev/null
expect_within 20 "status --fleet says no live instance serves import" "no live instance serves.*import" \
  "$bin" status --fleet --config "$work/a/c.toml"
sleep 3
echo route-imp-2 >"$work/imp2.ids"
fleet_job_states a <"$work/imp2.ids" >"$work/imp2.states"
check "the import job waits (queued) while no instance serves import" grep -q '"status": "queued"' "$work/imp2.states"
check "an instance logged 814 FleetFeatureUnserved naming import" bash -c "
  for n in a b d e; do cat '$work'/\$n/log/*.jsonl 2>/dev/null; done | grep '\"id\":814' | grep -q import"
fleet_start c || fail "c restarted"
c_logged_imp2() { cat "$work"/c/log/*.jsonl | grep -q '"request_id":"route-imp-2"'; }
import2_by_c() { fleet_wait_final a 120 "$work/imp2.ids" && wait_until 15 c_logged_imp2; }
check "with c back, the waiting import job gets its result, from c" import2_by_c

for n in a b c d e; do stop_checked "$n"; done
echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
