# Shared by the interop scripts: `source lib.sh NAME "$@"` takes the script's arguments
# (CERTCONNECTOR_BIN PLUGIN_DIR) and sets $bin, $plugins, $py and $work (a private directory named
# after NAME); then results, checks, and a connector started for the test.
bin=$(realpath "$2")
plugins=$(realpath "$3")
py=/usr/bin/python3
work=$(mktemp -d "/tmp/certconn-$1-XXXXXX")
chmod 755 "$work"
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   - $1"; }
fail() { failed=$((failed + 1)); echo "FAIL - $1"; [ -n "${2:-}" ] && sed 's/^/       /' <<<"$2"; }
# check NAME COMMAND...: passes when the command succeeds.
check() { local name=$1; shift; local out; if out=$("$@" 2>&1); then ok "$name"; else fail "$name" "$out"; fi; }
# expect NAME TEXT COMMAND...: passes when the command's output contains TEXT.
expect() { local name=$1 text=$2; shift 2; local out; out=$("$@" 2>&1); if grep -q -- "$text" <<<"$out"; then ok "$name"; else fail "$name" "$out"; fi; }

# expect_within SECONDS NAME TEXT COMMAND...: like expect, for what a daemon publishes a little
# later (a CRL made in the background): retried every half second until SECONDS have passed.
expect_within() {
  local limit=$1 name=$2 text=$3; shift 3; local out deadline=$((SECONDS + limit))
  while :; do
    out=$("$@" 2>&1)
    if grep -q -- "$text" <<<"$out"; then ok "$name"; return; fi
    [ "$SECONDS" -ge "$deadline" ] && { fail "$name" "$out"; return; }
    sleep 0.5
  done
}

# start_connector CONFIG: runs the connector until the script exits (then stops it and removes $work).
start_connector() {
  "$bin" run --config "$1" >"$work/daemon.out" 2>&1 &
  daemon=$!
  trap '[ -n "${daemon:-}" ] && kill -TERM $daemon 2>/dev/null && wait $daemon 2>/dev/null; rm -rf "$work"' EXIT
  for _ in $(seq 1 100); do "$bin" status --config "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "the connector did not start:" >&2
  cat "$work/daemon.out" >&2
  return 1
}

# stop_connector: stops it (it must exit 0: under the asan preset a sanitizer report makes it
# fail). The event log is complete afterwards: repeated identical events are summarised at stop.
stop_connector() {
  if [ -n "${daemon:-}" ]; then
    kill -TERM "$daemon" 2>/dev/null
    if wait "$daemon"; then ok "the connector stopped cleanly (exit 0)"
    else fail "the connector stopped cleanly (exit 0)" "$(tail -n 40 "$work/daemon.out")"; fi
    daemon=""
  fi
}

# count_events ID FILE: how many events with that id were logged, counting those a summary
# record stands for (fields.suppressed).
count_events() {
  $py -c "import json,sys
n=0
for line in open(sys.argv[2]):
    e=json.loads(line)
    if e['id']==int(sys.argv[1]): n+=1+e.get('fields',{}).get('suppressed',0)
print(n)" "$1" "$2"
}

# finish: stops the connector if it still runs, then the closing line ctest and CI read, and the
# exit status.
finish() {
  stop_connector
  echo
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}
