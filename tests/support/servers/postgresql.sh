# PostgreSQL 15 for a test, from Debian's packages, on loopback, in a directory of its own.
# Source this file, then:
#   pg_start DIR [PORT]   initdb (once) and start; sets PG_URL (postgresql://certconn@127.0.0.1:PORT/certconn)
#   pg_stop               stop (fast); also registered for the caller's cleanup
#   pg_restart_immediate  crash-restart (-m immediate): in-flight transactions roll back
#   pg_sql "SQL"          psql as the test's role
# PostgreSQL refuses to run as root: as root everything runs as the `postgres` user (runuser).
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

pg__as() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_start() {
  PG_DIR=$1
  PG_PORT=${2:-$((20000 + RANDOM % 20000))}
  mkdir -p "$PG_DIR"
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$PG_DIR"; chmod 0700 "$PG_DIR"; fi
  # The data directory's parents must be reachable by postgres.
  local d=$PG_DIR
  while [ "$d" != / ] && [ "$(id -u)" -eq 0 ]; do d=$(dirname "$d"); chmod o+x "$d" 2>/dev/null || true; done
  if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
    pg__as "$PG_BIN/initdb" -A trust -U postgres -D "$PG_DIR/data" >"$PG_DIR/initdb.log" 2>&1 || {
      cat "$PG_DIR/initdb.log" >&2; return 1; }
    cat >>"$PG_DIR/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_DIR'
max_connections = ${PG_MAX_CONNECTIONS:-200}
shared_buffers = 64MB
fsync = on
log_min_messages = warning
CONF
  fi
  pg__as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 start >/dev/null || {
    tail -20 "$PG_DIR/server.log" >&2; return 1; }
  pg__as "$PG_BIN/psql" -h "$PG_DIR" -p "$PG_PORT" -U postgres -d postgres -qAt -v ON_ERROR_STOP=1 \
    -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'certconn') THEN CREATE ROLE certconn LOGIN; END IF; END \$\$" \
    >/dev/null
  pg__as "$PG_BIN/psql" -h "$PG_DIR" -p "$PG_PORT" -U postgres -d postgres -qAt \
    -c "CREATE DATABASE certconn OWNER certconn" >/dev/null 2>&1 || true
  PG_URL="postgresql://certconn@127.0.0.1:$PG_PORT/certconn"
  export PG_URL PG_DIR PG_PORT
}

pg_stop() {
  [ -n "${PG_DIR:-}" ] && [ -f "$PG_DIR/data/postmaster.pid" ] || return 0
  pg__as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
}

pg_restart_immediate() {
  pg__as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  pg__as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 start >/dev/null
}

pg_sql() {
  pg__as "$PG_BIN/psql" -h "$PG_DIR" -p "$PG_PORT" -U certconn -d certconn -qAt -v ON_ERROR_STOP=1 -c "$1"
}
