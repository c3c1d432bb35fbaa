#!/usr/bin/env bash
# compare.sh runs the same meshbench scenarios against meshcast and Centrifugo,
# one server at a time on 127.0.0.1, and prints a side-by-side table.
#
#   bench/compare.sh                 # from the repo root, after: go build -o bin/meshcast ./cmd/meshcast
#   ROUNDS=3 bench/compare.sh        # repeat everything, interleaving servers; the table shows medians
#
# Scenarios (per round, per server):
#   idle        SUBS_IDLE (10000) subscribers on a freshly started server: RSS delta per connection
#   throughput  SUBS (1000) subscribers, publisher as fast as the in-flight window allows,
#               once per window in WINDOWS (32 256): deeper queues let servers batch more
#   latency     SUBS (1000) subscribers, RATE (470) publications/s
#   throughput, binary   meshcast only (MESHCAST_BINARY=0 skips): kind-3 frames in, kind-4 out
#
# Environment (defaults in brackets):
#   MESHCAST_BIN [bin/meshcast]  CENTRIFUGO_BIN [centrifugo in PATH, else $GOBIN or $GOPATH/bin]
#   MESHCAST_ADDR [127.0.0.1:4000]  CENTRIFUGO_PORT [8000]  MESHCAST_FLAGS [] (extra server flags)
#   SUBS [1000] SUBS_IDLE [10000] RATE [470] DURATION [10s] WARMUP [2s] CONNECT_RATE [2000]
#   ROUNDS [1]  TARGETS ["meshcast centrifugo"]  MESHCAST_BINARY [1]  WINDOWS ["32 256"]
#   EXTRA [] (extra meshbench flags)
#   OUT [a new directory under /tmp]: logs, per-run JSON, results.jsonl
#   QUIET_WAIT [60]: before each run, wait up to this many seconds for the host to be
#     nearly idle (< QUIET_CORES_TICKS [25] % of one core busy over 1 s); then run anyway
#
# Everything is bounded: each meshbench run by its own budget and `timeout`,
# server start by PORT_WAIT + READY_TIMEOUT, server stop by a TERM then KILL
# after 10s, the wait for a quiet host by QUIET_WAIT.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

MESHCAST_BIN=${MESHCAST_BIN:-$ROOT/bin/meshcast}
if [[ -z ${CENTRIFUGO_BIN:-} ]]; then
	CENTRIFUGO_BIN=$(command -v centrifugo || true)
	if [[ -z $CENTRIFUGO_BIN ]]; then
		gobin=$(go env GOBIN)
		[[ -n $gobin ]] || gobin=$(go env GOPATH)/bin
		CENTRIFUGO_BIN=$gobin/centrifugo
	fi
fi
MESHCAST_ADDR=${MESHCAST_ADDR:-127.0.0.1:4000}
CENTRIFUGO_PORT=${CENTRIFUGO_PORT:-8000}
MESHCAST_FLAGS=${MESHCAST_FLAGS:-}
SUBS=${SUBS:-1000}
SUBS_IDLE=${SUBS_IDLE:-10000}
RATE=${RATE:-470}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNECT_RATE=${CONNECT_RATE:-2000}
ROUNDS=${ROUNDS:-1}
TARGETS=${TARGETS:-meshcast centrifugo}
MESHCAST_BINARY=${MESHCAST_BINARY:-1}
WINDOWS=${WINDOWS:-32 256}
EXTRA=${EXTRA:-}
READY_TIMEOUT=${READY_TIMEOUT:-15}
PORT_WAIT=${PORT_WAIT:-60}
QUIET_WAIT=${QUIET_WAIT:-60}
QUIET_CORES_TICKS=${QUIET_CORES_TICKS:-25}
OUT=${OUT:-$(mktemp -d /tmp/meshbench-compare.XXXXXX)}
mkdir -p "$OUT"

for t in $TARGETS; do
	case $t in
	meshcast) [[ -x $MESHCAST_BIN ]] || { echo "compare: $MESHCAST_BIN not found; go build -o bin/meshcast ./cmd/meshcast" >&2; exit 2; } ;;
	centrifugo) [[ -x $CENTRIFUGO_BIN ]] || { echo "compare: centrifugo not found; go install github.com/centrifugal/centrifugo/v6@v6.9.1" >&2; exit 2; } ;;
	*) echo "compare: unknown target $t" >&2; exit 2 ;;
	esac
done

echo "compare: building meshbench into $OUT" >&2
go build -o "$OUT/meshbench" ./cmd/meshbench
MB=$OUT/meshbench
# Run a snapshot of the server binary under a neutral name: a concurrent
# rebuild of bin/meshcast, or someone's `pkill meshcast` while developing,
# then cannot change or stop the server in the middle of a measurement.
if [[ " $TARGETS " == *" meshcast "* ]]; then
	cp "$MESHCAST_BIN" "$OUT/sut-mc"
	MESHCAST_RUN=$OUT/sut-mc
fi

BENCH_NAME=compare
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
trap stop_server EXIT
trap 'exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

# port_free ADDR: waits up to PORT_WAIT seconds for nobody to listen on ADDR
# (meshcast's default --listen is :4000, so a developer's server may hold it).
port_free() {
	local i
	for ((i = 0; i < PORT_WAIT; i++)); do
		port_open "$1" || return 0
		((i > 0)) || echo "compare: $1 in use, waiting up to ${PORT_WAIT}s" >&2
		sleep 1
	done
	echo "compare: $1 still in use; skipping" >&2
	return 1
}

# start_server TARGET LOG: starts a fresh server and waits until it accepts connections.
start_server() {
	local t=$1 log=$2 addr
	case $t in
	meshcast)
		addr=$MESHCAST_ADDR
		port_free "$addr" || return 1
		# shellcheck disable=SC2086
		"$MESHCAST_RUN" --listen "$addr" $MESHCAST_FLAGS >"$log" 2>&1 &
		;;
	centrifugo)
		addr=127.0.0.1:$CENTRIFUGO_PORT
		port_free "$addr" || return 1
		"$CENTRIFUGO_BIN" -c "$ROOT/bench/centrifugo/config.json" \
			--http_server.address 127.0.0.1 --http_server.port "$CENTRIFUGO_PORT" >"$log" 2>&1 &
		;;
	esac
	SERVER_PID=$!
	for _ in $(seq $((READY_TIMEOUT * 10))); do
		port_open "$addr" && return 0
		kill -0 "$SERVER_PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "compare: $t did not start (log: $log)" >&2
	tail -5 "$log" >&2 || true
	stop_server
	return 1
}

url_of() {
	case $1 in
	meshcast) echo "ws://$MESHCAST_ADDR/realtime/v1/websocket?apikey=bench&vsn=2.0.0" ;;
	centrifugo) echo "ws://127.0.0.1:$CENTRIFUGO_PORT/connection/websocket" ;;
	esac
}

RESULTS=$OUT/results.jsonl
: >"$RESULTS"

# bench TARGET NAME ARGS...: one meshbench run against the running server.
bench() {
	local t=$1 name=$2
	shift 2
	local json=$OUT/$t-$name.json
	wait_quiet
	echo "compare: [$t] $name (load avg: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
	# shellcheck disable=SC2086
	if timeout 300 "$MB" -quiet -json -target "$t" -url "$(url_of "$t")" -server-pid "$SERVER_PID" \
		-connect-rate "$CONNECT_RATE" "$@" $EXTRA >"$json" 2>"$OUT/$t-$name.err"; then
		:
	else
		echo "compare: [$t] $name failed: $(tail -3 "$OUT/$t-$name.err")" >&2
	fi
	if [[ -s $json ]]; then
		cat "$json" >>"$RESULTS"
		echo "    $(tail -1 "$OUT/$t-$name.err")" >&2
	fi
	if ! kill -0 "$SERVER_PID" 2>/dev/null; then
		echo "compare: [$t] SERVER EXITED during $name; log tail:" >&2
		tail -20 "$OUT/$t.log" >&2 || true
		return 1
	fi
}

for round in $(seq "$ROUNDS"); do
	for t in $TARGETS; do
		echo "compare: round $round/$ROUNDS, $t" >&2
		# Idle memory on a fresh process, so traffic runs do not inflate the baseline.
		if start_server "$t" "$OUT/$t.log"; then
			bench "$t" "idle-r$round" -mode idle -subs "$SUBS_IDLE" || true
			stop_server
		fi
		sleep 2
		if start_server "$t" "$OUT/$t.log"; then
			(
				for w in $WINDOWS; do
					bench "$t" "throughput-w$w-r$round" -mode throughput -window "$w" -subs "$SUBS" -duration "$DURATION" -warmup "$WARMUP" || exit 1
				done
				bench "$t" "latency-r$round" -mode latency -rate "$RATE" -subs "$SUBS" -duration "$DURATION" -warmup "$WARMUP" || exit 1
				if [[ $t == meshcast && $MESHCAST_BINARY == 1 ]]; then
					for w in $WINDOWS; do
						bench "$t" "throughput-binary-w$w-r$round" -mode throughput -binary -window "$w" -subs "$SUBS" -duration "$DURATION" -warmup "$WARMUP" || exit 1
					done
				fi
			) || true
			stop_server
		fi
		sleep 2
	done
done

echo
echo "meshbench compare: $(date -u +%FT%TZ), $(nproc) CPUs, loopback; results in $OUT"
echo "meshcast: $MESHCAST_BIN --listen $MESHCAST_ADDR $MESHCAST_FLAGS (run as a copy, $MESHCAST_RUN)"
echo "centrifugo: $CENTRIFUGO_BIN -c bench/centrifugo/config.json ($(go version -m "$CENTRIFUGO_BIN" 2>/dev/null | awk '$1 == "mod" {print $3; exit}'))"
echo "meshbench: -duration $DURATION -warmup $WARMUP -connect-rate $CONNECT_RATE $EXTRA"
echo
"$MB" -table "$RESULTS"
