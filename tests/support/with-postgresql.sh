#!/usr/bin/env bash
# Runs a command with a PostgreSQL 15 server of its own: CERTCONN_TEST_PG_URL names it.
#   with-postgresql.sh COMMAND [ARGS...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=servers/postgresql.sh
. "$here/servers/postgresql.sh"
base=${CERTCONN_TEST_TMP_DIR:-$(dirname "$here")/../build/default/tests/tmp}
mkdir -p "$base"
dir=$(mktemp -d "$base/pg.XXXXXX")
trap 'pg_stop; rm -rf "$dir"' EXIT
pg_start "$dir/pg"
export CERTCONN_TEST_PG_URL=$PG_URL
"$@"
