#!/usr/bin/env bash
# recovery.sh measures what broadcast recovery (issue 18) costs on the
# fan-out: SUBS (1000) subscribers, RATE (300) publications/s, one node
# started with --recovery-window 0 (off) and with the defaults (on, 5m and
# 64 MiB), interleaved ROUNDS (3) times; prints server CPU per delivery and
# latency percentiles for each run and the medians side by side.
#
#   go build -o bin/meshcast ./cmd/meshcast && bench/recovery.sh
#
# SIMULTANEOUS=1 starts both nodes at once (ADDR and ADDR2) and measures
# them at the same time, each with its own meshbench: on a host shared with
# other work both then see the same background load (each at RATE, so use
# half the rate of the sequential runs for the same total), and the nodes'
# ports swap every round. MODE [latency] or throughput (window 32).
#
# Environment: MESHCAST_BIN [bin/meshcast] ADDR [127.0.0.1:4100]
# ADDR2 [127.0.0.1:4101] SUBS RATE DURATION [10s] WARMUP [2s] ROUNDS
# SIMULTANEOUS [0] MODE; OUT [a new directory under /tmp].
# Bounded: each meshbench run by its budget and `timeout`, each server
# stop by TERM then KILL after 10 s.
set -euo pipefail
cd "$(dirname "$0")/.."
MESHCAST_BIN=${MESHCAST_BIN:-bin/meshcast}
ADDR=${ADDR:-127.0.0.1:4100}
SUBS=${SUBS:-1000}
RATE=${RATE:-300}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
ROUNDS=${ROUNDS:-3}
ADDR2=${ADDR2:-127.0.0.1:4101}
SIMULTANEOUS=${SIMULTANEOUS:-0}
MODE=${MODE:-latency}
OUT=${OUT:-$(mktemp -d /tmp/meshbench-recovery.XXXXXX)}
go build -o "$OUT/meshbench" ./cmd/meshbench
cp "$MESHCAST_BIN" "$OUT/sut-mc"

# start ADDR LABEL FLAGS...: a node in the background; its pid in PID.
start() {
	local addr=$1 label=$2
	shift 2
	"$OUT/sut-mc" --listen "$addr" --webtransport-listen off "$@" >"$OUT/$label.server.log" 2>&1 &
	PID=$!
	for _ in $(seq 100); do curl -fs "http://$addr/healthz" >/dev/null && break; sleep 0.1; done
}

stop() { # pid
	kill -TERM "$1" 2>/dev/null || true
	for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

measure() { # addr, pid, label
	local load=(-mode latency -rate "$RATE")
	[[ $MODE == throughput ]] && load=(-mode throughput -window 32)
	timeout 120 "$OUT/meshbench" -url "ws://$1/realtime/v1/websocket?vsn=2.0.0" "${load[@]}" -subs "$SUBS" \
		-duration "$DURATION" -warmup "$WARMUP" -server-pid "$2" -json -quiet >"$OUT/$3.json" || true
}

run() { # label, server flags...
	local label=$1
	shift
	start "$ADDR" "$label" "$@"
	measure "$ADDR" "$PID" "$label"
	stop "$PID"
}

both() { # round
	local a=$ADDR b=$ADDR2
	if (($1 % 2 == 0)); then a=$ADDR2 b=$ADDR; fi
	start "$a" "off-r$1" --recovery-window 0
	local off=$PID
	start "$b" "on-r$1"
	local on=$PID
	measure "$a" "$off" "off-r$1" &
	local m1=$!
	measure "$b" "$on" "on-r$1" &
	local m2=$!
	wait "$m1" "$m2" || true
	stop "$off"
	stop "$on"
}

for r in $(seq "$ROUNDS"); do
	if [[ $SIMULTANEOUS == 1 ]]; then
		both "$r"
		continue
	fi
	run "off-r$r" --recovery-window 0
	run "on-r$r"
done

python3 - "$OUT" "$ROUNDS" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
print(f"{'run':8} {'cpu µs/delivery':>16} {'p50 ms':>8} {'p99 ms':>8} {'deliveries/s':>13} {'lost':>5}")
med = {}
for mode in ("off", "on"):
    rows = []
    for r in range(1, rounds + 1):
        j = json.load(open(f"{out}/{mode}-r{r}.json"))
        rows.append(j)
        print(f"{mode}-r{r:<5} {j['server_cpu_us_per_delivery']:16.3f} {j['p50_ms']:8.2f} {j['p99_ms']:8.2f} {j['deliveries_per_sec']:13.0f} {j['lost']:5}")
    med[mode] = {k: statistics.median(x[k] for x in rows) for k in ("server_cpu_us_per_delivery", "p50_ms", "p99_ms")}
for k in ("server_cpu_us_per_delivery", "p50_ms", "p99_ms"):
    off, on = med["off"][k], med["on"][k]
    print(f"median {k}: off {off:.3f}, on {on:.3f} ({(on / off - 1) * 100:+.1f} %)")
PY
echo "recovery: results in $OUT" >&2
