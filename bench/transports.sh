#!/usr/bin/env bash
# transports.sh measures meshcast's two client transports side by side on one
# node: WebSocket and WebTransport (HTTP/3 over QUIC, the stream), plus
# unreliable broadcast over WebTransport datagrams, and prints one table.
#
#   bench/transports.sh                 # from the repo root, after: make build
#   ROUNDS=3 bench/transports.sh        # medians of 3 rounds
#
# Per round:
#   idle        SUBS_IDLE (2000) connections of each transport, each on a freshly
#               started node: server RSS delta per connection (session)
#   traffic     one fresh node; the transports take turns scenario by scenario
#               (interleaved, so drift on a shared host hits both alike):
#               throughput (SUBS subscribers, window WINDOW), latency at RATE msg/s,
#               and datagrams (WebTransport, -unreliable) at RATE and at RATE_DG_HIGH
#
# Environment (defaults in brackets):
#   MESHCAST_BIN [bin/meshcast]  ADDR [127.0.0.1:4000]  MESHCAST_FLAGS []
#   SUBS [1000] SUBS_IDLE [2000] RATE [100] RATE_DG_HIGH [400] WINDOW [32]
#   DURATION [10s] WARMUP [2s] CONNECT_RATE [1000] ROUNDS [1] EXTRA [] (meshbench flags)
#   OUT [a new directory under /tmp]: logs, per-run JSON, results.jsonl
#   QUIET_WAIT [60] QUIET_CORES_TICKS [25]: wait for a nearly idle host before each run
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
MESHCAST_BIN=${MESHCAST_BIN:-$ROOT/bin/meshcast}
ADDR=${ADDR:-127.0.0.1:4000}
MESHCAST_FLAGS=${MESHCAST_FLAGS:-}
SUBS=${SUBS:-1000}
SUBS_IDLE=${SUBS_IDLE:-2000}
RATE=${RATE:-100}
RATE_DG_HIGH=${RATE_DG_HIGH:-400}
WINDOW=${WINDOW:-32}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNECT_RATE=${CONNECT_RATE:-1000}
ROUNDS=${ROUNDS:-1}
EXTRA=${EXTRA:-}
QUIET_WAIT=${QUIET_WAIT:-60}
QUIET_CORES_TICKS=${QUIET_CORES_TICKS:-25}
OUT=${OUT:-$(mktemp -d /tmp/meshbench-transports.XXXXXX)}
mkdir -p "$OUT"
[[ -x $MESHCAST_BIN ]] || { echo "transports: $MESHCAST_BIN not found; make build" >&2; exit 2; }

go build -o "$OUT/meshbench" ./cmd/meshbench
MB=$OUT/meshbench
cp "$MESHCAST_BIN" "$OUT/sut-mc" # a rebuild or pkill elsewhere cannot hit a run
RESULTS=$OUT/results.jsonl
: >"$RESULTS"

BENCH_NAME=transports
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
trap stop_server EXIT
trap 'exit 130' INT TERM

start_server() {
	if curl -sf "http://$ADDR/healthz" >/dev/null 2>&1; then
		echo "transports: $ADDR is in use" >&2
		return 1
	fi
	# shellcheck disable=SC2086
	"$OUT/sut-mc" --listen "$ADDR" --log-level warn $MESHCAST_FLAGS >>"$OUT/meshcast.log" 2>&1 &
	SERVER_PID=$!
	for _ in $(seq 150); do
		curl -sf "http://$ADDR/healthz" >/dev/null 2>&1 && return 0
		kill -0 "$SERVER_PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "transports: meshcast did not start; log:" >&2
	tail -5 "$OUT/meshcast.log" >&2
	return 1
}

# run NAME ARGS...: one meshbench run against the running node.
run() {
	local name=$1
	shift
	wait_quiet
	echo "transports: $name (load avg: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
	# shellcheck disable=SC2086
	if timeout 300 "$MB" -quiet -json -url "ws://$ADDR/realtime/v1/websocket?apikey=bench&vsn=2.0.0" \
		-server-pid "$SERVER_PID" -connect-rate "$CONNECT_RATE" "$@" $EXTRA >"$OUT/$name.json" 2>"$OUT/$name.err"; then
		:
	else
		echo "transports: $name failed: $(tail -3 "$OUT/$name.err")" >&2
	fi
	if [[ -s $OUT/$name.json ]]; then
		cat "$OUT/$name.json" >>"$RESULTS"
		echo "    $(tail -1 "$OUT/$name.err")" >&2
	fi
}

for round in $(seq "$ROUNDS"); do
	for tr in websocket webtransport; do
		start_server || exit 1
		run "idle-$tr-r$round" -transport "$tr" -mode idle -subs "$SUBS_IDLE"
		stop_server
		sleep 2
	done
	start_server || exit 1
	for tr in websocket webtransport; do
		run "throughput-$tr-r$round" -transport "$tr" -mode throughput -window "$WINDOW" -subs "$SUBS" -duration "$DURATION" -warmup "$WARMUP"
	done
	for tr in websocket webtransport; do
		run "latency-$tr-r$round" -transport "$tr" -mode latency -rate "$RATE" -subs "$SUBS" -duration "$DURATION" -warmup "$WARMUP"
	done
	run "datagrams-r$round" -transport webtransport -unreliable -mode latency -rate "$RATE" -subs "$SUBS" -duration "$DURATION" -warmup "$WARMUP"
	for tr in websocket webtransport; do
		run "latency-high-$tr-r$round" -transport "$tr" -mode latency -rate "$RATE_DG_HIGH" -subs "$SUBS" -duration "$DURATION" -warmup "$WARMUP"
	done
	run "datagrams-high-r$round" -transport webtransport -unreliable -mode latency -rate "$RATE_DG_HIGH" -subs "$SUBS" -duration "$DURATION" -warmup "$WARMUP"
	stop_server
	sleep 2
done

echo
echo "meshbench transports: $(date -u +%FT%TZ), $(nproc) CPUs, loopback; results in $OUT"
echo "meshcast: $MESHCAST_BIN --listen $ADDR $MESHCAST_FLAGS; meshbench -duration $DURATION -warmup $WARMUP -connect-rate $CONNECT_RATE $EXTRA"
echo
"$MB" -table "$RESULTS"
