#!/usr/bin/env bash
# recover.sh: recovery time after a node kill (issue 18). Three meshcast
# nodes on loopback: n1 has the publisher, n2 the SUBS (1000) subscribers of
# one channel; n2 is killed -9, MISSED (1000) broadcasts are published on
# n1, and every subscriber reconnects at once to n3 with its positions
# (meshbench recover): time until all are live again, n3's CPU and RSS.
#
#   go build -o bin/meshcast ./cmd/meshcast && bench/recover.sh
#
# Environment: MESHCAST_BIN [bin/meshcast] SUBS MISSED BASE_PORT [4200]; OUT
# [a new directory under /tmp]. Bounded: meshbench by its budget and
# `timeout`, every node stopped with TERM then KILL.
set -euo pipefail
cd "$(dirname "$0")/.."
MESHCAST_BIN=${MESHCAST_BIN:-bin/meshcast}
SUBS=${SUBS:-1000}
MISSED=${MISSED:-1000}
BASE_PORT=${BASE_PORT:-4200}
OUT=${OUT:-$(mktemp -d /tmp/meshbench-recover.XXXXXX)}
go build -o "$OUT/meshbench" ./cmd/meshbench
cp "$MESHCAST_BIN" "$OUT/sut-mc"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	sleep 1
	for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
for i in 1 2 3; do
	http=$((BASE_PORT + i * 10))
	args=(--name "n$i" --listen "127.0.0.1:$http" --webtransport-listen off --gossip-addr "127.0.0.1:$((http + 1))"
		--mesh-addr "127.0.0.1:$((http + 2))" --cluster-secret recover-bench --gossip-probe-interval 200ms)
	((i > 1)) && args+=(--join "127.0.0.1:$((BASE_PORT + 11))")
	"$OUT/sut-mc" "${args[@]}" >"$OUT/n$i.log" 2>&1 &
	pids+=($!)
	for _ in $(seq 100); do curl -fs "http://127.0.0.1:$http/healthz" >/dev/null && break; sleep 0.1; done
done
for _ in $(seq 150); do
	[[ $(curl -fs "http://127.0.0.1:$((BASE_PORT + 30))/metrics" | awk '$1 == "meshcast_mesh_peers_connected" {print $2}') == 2 ]] && break
	sleep 0.1
done
url() { echo "ws://127.0.0.1:$((BASE_PORT + $1 * 10))/realtime/v1/websocket?vsn=2.0.0"; }
timeout 600 "$OUT/meshbench" recover -first-url "$(url 2)" -pub-url "$(url 1)" -url "$(url 3)" \
	-subs "$SUBS" -missed "$MISSED" -kill-pid "${pids[1]}" -server-pid "${pids[2]}" | tee "$OUT/result.txt"
echo "recover: logs in $OUT" >&2
