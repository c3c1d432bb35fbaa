#!/usr/bin/env bash
# make run-pg: a throwaway local PostgreSQL (initdb in a temp dir,
# wal_level=logical, a todos table in the supabase_realtime publication) and
# one meshcast node streaming its changes, with the demo page's table panel
# (--demo-todos: the page inserts, updates and deletes todos rows through the
# node; only this throwaway setup turns it on), and a private room guarded by a
# membership policy plus a trigger calling realtime.broadcast_changes
# (demo-private.sql; the node runs with a throwaway --jwt-secret and the page
# gets a token for the name typed in it). Ctrl-C stops both and removes the
# database. Extra arguments go to meshcast.
#
# Environment (make run-pg VAR=value passes them):
#   LISTEN     the node's --listen address    127.0.0.1:4000 (this machine only:
#              the node is open and its table panel writes without auth)
#   PGPORT     Postgres's port (127.0.0.1)    54329
#   PG_BINDIR  Postgres's server binaries     /usr/lib/postgresql/15/bin
#   BIN        the meshcast binary            ./bin/meshcast
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-./bin/meshcast}
PG_BINDIR=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
PGPORT=${PGPORT:-54329}
LISTEN=${LISTEN:-127.0.0.1:4000}

dir=$(mktemp -d /tmp/meshcast-pg.XXXXXX)
as_pg=()
if [ "$(id -u)" = 0 ]; then
	# initdb and postgres refuse to run as root.
	chown postgres "$dir"
	as_pg=(runuser -u postgres --)
fi
cleanup() {
	[ -n "${node:-}" ] && kill "$node" 2>/dev/null && wait "$node" 2>/dev/null
	"${as_pg[@]}" "$PG_BINDIR/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM

"${as_pg[@]}" "$PG_BINDIR/initdb" -D "$dir/data" -U postgres -A trust --no-sync >/dev/null
cat >>"$dir/data/postgresql.conf" <<CONF
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$dir'
max_slot_wal_keep_size = 1GB
CONF
"${as_pg[@]}" "$PG_BINDIR/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w start >/dev/null
url="postgres://postgres@127.0.0.1:$PGPORT/postgres"
psql=("${as_pg[@]}" "$PG_BINDIR/psql" -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres)
"$BIN" realtime-schema-sql | "${psql[@]}" >/dev/null
"${psql[@]}" <deploy/local/todos.sql
"${psql[@]}" <deploy/local/demo-private.sql
secret=$(head -c 32 /dev/urandom | base64 | tr -d '/+=')
echo "Postgres: $url   (psql -h 127.0.0.1 -p $PGPORT -U postgres)"
echo "demo: http://localhost:${LISTEN##*:}/ (the live table panel: open it in two tabs)"
echo "try: psql -h 127.0.0.1 -p $PGPORT -U postgres -c \"INSERT INTO todos (title) VALUES ('hello')\""
cat <<'HINT'
     psql … -c "SELECT realtime.send(jsonb_build_object('user', 'psql', 'text', 'hi'), 'chat', 'vip')"  (the private room vip)
HINT
"$BIN" --listen "$LISTEN" --database-url "$url" --jwt-secret "$secret" --demo-todos "$@" &
node=$!
wait "$node"
