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
#   BASE_PORT [4100]: clients on BASE_PORT+1..3, gossip on BASE_PORT+3000+10*i (mesh +1)
# Every step is bounded by `timeout`; nodes are stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${MESHCAST_BIN:-bin/meshcast}
mb=${MESHBENCH_BIN:-bin/meshbench}
SUBS=${SUBS:-1000} RATE=${RATE:-470} DURATION=${DURATION:-10s} WARMUP=${WARMUP:-2s} ROUNDS=${ROUNDS:-1}
BASE_PORT=${BASE_PORT:-4100}
logs=$(mktemp -d /tmp/meshcast-bench-cluster.XXXXXX)
# shellcheck source=bench/nodes.sh
. bench/nodes.sh
stop() {
	stop_nodes
	echo "logs in $logs" >&2
}
trap stop EXIT

regions=(iad fra sin)
for i in 1 2 3; do
	gossip=$((BASE_PORT + 3000 + 10 * i))
	join=()
	((i > 1)) && join=(--join "127.0.0.1:$((BASE_PORT + 3010))")
	# shellcheck disable=SC2086
	"$bin" --listen "127.0.0.1:$((BASE_PORT + i))" --name "n$i" --region "${regions[i-1]}" \
		--gossip-addr "127.0.0.1:$gossip" --cluster-secret bench --log-level warn \
		"${join[@]}" ${MESHCAST_FLAGS:-} 2>"$logs/n$i.log" &
	pids+=($!)
done
url() { echo "ws://127.0.0.1:$((BASE_PORT + $1))/realtime/v1/websocket?apikey=bench&vsn=2.0.0"; }
for i in 1 2 3; do
	wait_peers $((BASE_PORT + i)) 2
done

run() { # name, meshbench args...
	local name=$1
	shift
	printf '%-12s ' "$name"
	timeout 300 "$mb" -quiet -subs "$SUBS" -duration "$DURATION" -warmup "$WARMUP" "$@" 2>&1 | tail -1
}
for r in $(seq 1 "$ROUNDS"); do
	echo "round $r: $SUBS subscribers, $RATE msg/s"
	run same-node -mode latency -rate "$RATE" -url "$(url 1)" -pub-url "$(url 1)"
	run cross-node -mode latency -rate "$RATE" -url "$(url 2)" -pub-url "$(url 1)"
	run spread -mode latency -rate "$RATE" -url "$(url 1),$(url 2),$(url 3)" -pub-url "$(url 1)"
	run cross-max -mode throughput -url "$(url 2)" -pub-url "$(url 1)"
done
