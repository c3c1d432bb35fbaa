#!/usr/bin/env bash
# cluster.sh measures cross-node delivery in a 3-node meshcast cluster on
# loopback, side by side with same-node delivery in the same cluster:
#
#   same-node   publisher and SUBS subscribers on n1
#   cross-node  publisher on n1, SUBS subscribers on n2 (every message crosses the mesh once)
#   spread      publisher on n1, subscribers spread over n1, n2, n3
#
# each in latency mode at RATE publications/s, then cross-node throughput.
#
#   bench/cluster.sh              # after `make build`
#   RATE=470 SUBS=1000 ROUNDS=2 bench/cluster.sh
#
# Environment [defaults]: MESHCAST_BIN [bin/meshcast] MESHBENCH_BIN [bin/meshbench]
#   SUBS [1000] RATE [470] DURATION [10s] WARMUP [2s] ROUNDS [1] MESHCAST_FLAGS []
#   BASE_PORT [4100]: clients on BASE_PORT+1..3 (meshbench cluster's layout)
# Every step is bounded by `timeout`; the nodes (meshbench cluster) are
# stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
mb=${MESHBENCH_BIN:-bin/meshbench}
SUBS=${SUBS:-1000} RATE=${RATE:-470} DURATION=${DURATION:-10s} WARMUP=${WARMUP:-2s} ROUNDS=${ROUNDS:-1}
logs=$(mktemp -d /tmp/meshcast-bench-cluster.XXXXXX)
# shellcheck source=bench/lib.sh
. bench/lib.sh
trap 'stop_cluster; echo "logs in $logs" >&2' EXIT
start_cluster 3 -meshcast-bin "${MESHCAST_BIN:-bin/meshcast}" -base-port "${BASE_PORT:-4100}" -node-flags "${MESHCAST_FLAGS:-}"

run() { # name, meshbench args...
	local name=$1
	shift
	printf '%-12s ' "$name"
	timeout 300 "$mb" -quiet -subs "$SUBS" -duration "$DURATION" -warmup "$WARMUP" "$@" 2>&1 | tail -1
}
for r in $(seq 1 "$ROUNDS"); do
	echo "round $r: $SUBS subscribers, $RATE msg/s"
	run same-node -mode latency -rate "$RATE" -url "${url[1]}" -pub-url "${url[1]}"
	run cross-node -mode latency -rate "$RATE" -url "${url[2]}" -pub-url "${url[1]}"
	run spread -mode latency -rate "$RATE" -url "${url[1]},${url[2]},${url[3]}" -pub-url "${url[1]}"
	run cross-max -mode throughput -url "${url[2]}" -pub-url "${url[1]}"
done
