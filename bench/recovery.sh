#!/usr/bin/env bash
# recovery.sh measures what broadcast recovery (issue 18) costs on the
# fan-out: SUBS (1000) subscribers, RATE (300) publications/s, one node
# started with --recovery-window 0 (off) and with the defaults (on, 5m and
# 64 MiB), interleaved ROUNDS (3) times; prints server CPU per delivery and
# latency percentiles for each run and the medians side by side.
#
#   go build -o bin/meshcast ./cmd/meshcast && bench/recovery.sh
#
# Environment: MESHCAST_BIN [bin/meshcast] ADDR [127.0.0.1:4100] SUBS RATE
# DURATION [10s] WARMUP [2s] ROUNDS; OUT [a new directory under /tmp].
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
OUT=${OUT:-$(mktemp -d /tmp/meshbench-recovery.XXXXXX)}
go build -o "$OUT/meshbench" ./cmd/meshbench
cp "$MESHCAST_BIN" "$OUT/sut-mc"

run() { # label, server flags...
	local label=$1
	shift
	"$OUT/sut-mc" --listen "$ADDR" --webtransport-listen off "$@" >"$OUT/$label.server.log" 2>&1 &
	local pid=$!
	for _ in $(seq 100); do curl -fs "http://$ADDR/healthz" >/dev/null && break; sleep 0.1; done
	timeout 120 "$OUT/meshbench" -url "ws://$ADDR/realtime/v1/websocket?vsn=2.0.0" -mode latency -rate "$RATE" -subs "$SUBS" \
		-duration "$DURATION" -warmup "$WARMUP" -server-pid "$pid" -json -quiet >"$OUT/$label.json" || true
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

for r in $(seq "$ROUNDS"); do
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
