#!/usr/bin/env bash
# strategies.sh measures mesh bytes per message for the three routing
# strategies with 6 meshcast processes (3 regions × 2 nodes) on loopback:
# the publisher is on n1 (iad), SUBS subscribers are spread over n2..n5, n6
# has none. Bytes are the data-lane counters of every node's /metrics, read
# before and after a meshbench latency run of MSGS messages.
#
#   bench/strategies.sh          # after `make build`
#
# Environment [defaults]: MESHCAST_BIN [bin/meshcast] MESHBENCH_BIN [bin/meshbench]
#   SUBS [400] RATE [200] DURATION [10s] BASE_PORT [4200]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${MESHCAST_BIN:-bin/meshcast}
mb=${MESHBENCH_BIN:-bin/meshbench}
SUBS=${SUBS:-400} RATE=${RATE:-200} DURATION=${DURATION:-10s} BASE_PORT=${BASE_PORT:-4200}
regions=(iad iad fra fra sin sin)
logs=$(mktemp -d /tmp/meshcast-strategies.XXXXXX)
# shellcheck source=bench/nodes.sh
. bench/nodes.sh
trap stop_nodes EXIT
url() { echo "ws://127.0.0.1:$((BASE_PORT + $1))/realtime/v1/websocket?apikey=bench&vsn=2.0.0"; }
# data-lane bytes sent by every node: total, and to nodes of another region
data_bytes() {
	local total=0 wan=0
	for i in 1 2 3 4 5 6; do
		while read -r peer v; do
			total=$((total + v))
			[[ ${region_of[$peer]:-} != "${regions[i-1]}" ]] && wan=$((wan + v))
		done < <(curl -sf "http://127.0.0.1:$((BASE_PORT + i))/metrics" |
			sed -n 's/^meshcast_mesh_bytes_sent_total{peer="\([^"]*\)",lane="data"} \([0-9]*\)$/\1 \2/p')
	done
	echo "$total $wan"
}
printf '%-11s %12s %12s %10s\n' strategy mesh-B/msg wan-B/msg delivered
for strategy in all interested relay; do
	declare -A region_of=()
	for i in 1 2 3 4 5 6; do
		join=()
		((i > 1)) && join=(--join "127.0.0.1:$((BASE_PORT + 3010))")
		"$bin" --listen "127.0.0.1:$((BASE_PORT + i))" --name "n$i" --region "${regions[i-1]}" \
			--gossip-addr "127.0.0.1:$((BASE_PORT + 3000 + 10 * i))" --cluster-secret bench --log-level info \
			--mesh-strategy "$strategy" "${join[@]}" 2>"$logs/$strategy-n$i.log" &
		pids+=($!)
	done
	for i in 1 2 3 4 5 6; do
		wait_peers $((BASE_PORT + i)) 5
	done
	for i in 1 2 3 4 5 6; do
		id=$(sed -n 's/.*msg="mesh started" node=\([^ ]*\).*/\1/p' "$logs/$strategy-n$i.log" | head -1)
		region_of[$id]=${regions[i-1]}
	done
	read -r t0 w0 < <(data_bytes)
	out=$(timeout 120 "$mb" -quiet -mode latency -rate "$RATE" -subs "$SUBS" -duration "$DURATION" \
		-url "$(url 2),$(url 3),$(url 4),$(url 5)" -pub-url "$(url 1)" -json 2>/dev/null)
	read -r t1 w1 < <(data_bytes)
	msgs=$(echo "$out" | sed -n 's/.*"published":\([0-9]*\).*/\1/p')
	delivered=$(echo "$out" | sed -n 's/.*"delivered":\([0-9]*\).*/\1/p')
	printf '%-11s %12.1f %12.1f %10s\n' "$strategy" "$(echo "($t1-$t0)/$msgs" | bc -l)" "$(echo "($w1-$w0)/$msgs" | bc -l)" "$delivered/$(echo "$out" | sed -n 's/.*"expected":\([0-9]*\).*/\1/p')"
	stop_nodes
	unset region_of
done
echo "logs in $logs" >&2
