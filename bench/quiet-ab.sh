#!/usr/bin/env bash
# quiet-ab.sh compares one node of the previous main (OLD_BIN) with today's
# build with recovery on (its defaults) and off (--recovery-window 0): 1000
# subscribers, 100-byte payloads, at 470 msg/s (latency) and at max load
# (throughput, window 32), ROUNDS (3) rounds with the order rotated, a fresh
# node per run. Prints per variant the runs' CPU per delivery, p50, p99,
# deliveries/s, lost, and the CPU other processes took (host − server −
# client): run it on a quiet host. README "No regression" has its figures.
#
#   make build && OLD_BIN=/tmp/old/meshcast bench/quiet-ab.sh
#
# Environment: OLD_BIN (required) NEW_BIN [bin/meshcast] ADDR
# [127.0.0.1:4100] ROUNDS [3]; OUT [a new directory under /tmp].
# Bounded: each meshbench run by `timeout 120`, each node stop by TERM then
# KILL after 10 s.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OLD_BIN:?set OLD_BIN to the meshcast binary of the previous main}"
NEW_BIN=${NEW_BIN:-bin/meshcast}
ADDR=${ADDR:-127.0.0.1:4100}
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-$(mktemp -d /tmp/meshbench-quietab.XXXXXX)}
go build -o "$OUT/meshbench" ./cmd/meshbench
cp "$NEW_BIN" "$OUT/new-mc"
cp "$OLD_BIN" "$OUT/old-mc"

start() { # label, binary, flags...
	local label=$1 bin=$2
	shift 2
	"$bin" --listen "$ADDR" --webtransport-listen off --log-level warn "$@" >"$OUT/$label.log" 2>&1 &
	PID=$!
	for _ in $(seq 100); do curl -fs "http://$ADDR/healthz" >/dev/null && break; sleep 0.1; done
}

stop() { # pid
	kill -TERM "$1" 2>/dev/null || true
	for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

one() { # label, mode (lat|tp), binary, flags...
	local label=$1 mode=$2 bin=$3
	shift 3
	local load=(-mode latency -rate 470)
	[[ $mode == tp ]] && load=(-mode throughput -window 32)
	start "$label" "$bin" "$@"
	timeout 120 "$OUT/meshbench" -url "ws://$ADDR/realtime/v1/websocket?vsn=2.0.0" "${load[@]}" -subs 1000 \
		-duration 10s -warmup 2s -server-pid "$PID" -json -quiet >"$OUT/$label.json" || true
	stop "$PID"
}

for r in $(seq "$ROUNDS"); do
	for mode in lat tp; do
		order="old on off"
		((r % 2 == 0)) && order="off on old"
		for v in $order; do
			case $v in
			old) one "$mode-old-r$r" "$mode" "$OUT/old-mc" ;;
			on) one "$mode-on-r$r" "$mode" "$OUT/new-mc" ;;
			off) one "$mode-off-r$r" "$mode" "$OUT/new-mc" --recovery-window 0 ;;
			esac
		done
	done
done

python3 - "$OUT" "$ROUNDS" <<'PY'
import json, sys
out, rounds = sys.argv[1], int(sys.argv[2])
for mode in ("lat", "tp"):
    for v in ("old", "off", "on"):
        rows = [json.load(open(f"{out}/{mode}-{v}-r{r}.json")) for r in range(1, rounds + 1)]
        f = lambda k: [round(x[k], 2) for x in rows]
        other = [round(x["host_cpu_cores"] - x["server_cpu_cores"] - x["client_cpu_cores"], 2) for x in rows]
        print(mode, v, "cpu µs/delivery", f("server_cpu_us_per_delivery"), "p50", f("p50_ms"), "p99", f("p99_ms"),
              "deliveries/s", [int(x["deliveries_per_sec"]) for x in rows], "lost", [x["lost"] for x in rows], "other cores", other)
PY
echo "quiet-ab: results in $OUT" >&2
