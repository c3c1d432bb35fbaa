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
mb=${MESHBENCH_BIN:-bin/meshbench}
SUBS=${SUBS:-400} RATE=${RATE:-200} DURATION=${DURATION:-10s} BASE_PORT=${BASE_PORT:-4200}
regions=(iad iad fra fra sin sin)
logs=$(mktemp -d /tmp/meshcast-strategies.XXXXXX)
# shellcheck source=bench/lib.sh
. bench/lib.sh
trap stop_cluster EXIT
metrics() { curl -sf "http://127.0.0.1:$((BASE_PORT + $1))/metrics"; }
# data-lane bytes sent by every node: total, and to nodes of another region
data_bytes() {
	local total=0 wan=0
	for i in 1 2 3 4 5 6; do
		while read -r peer v; do
			total=$((total + v))
			[[ ${region_of[$peer]:-} != "${regions[i-1]}" ]] && wan=$((wan + v))
		done < <(metrics "$i" | sed -n 's/^meshcast_mesh_bytes_sent_total{peer="\([^"]*\)",lane="data"} \([0-9]*\)$/\1 \2/p')
	done
	echo "$total $wan"
}
printf '%-11s %12s %12s %10s\n' strategy mesh-B/msg wan-B/msg delivered
for strategy in all interested relay; do
	start_cluster 6 -meshcast-bin "${MESHCAST_BIN:-bin/meshcast}" -base-port "$BASE_PORT" -regions "$(
		IFS=,
		echo "${regions[*]}"
	)" -node-flags "--log-level info --mesh-strategy $strategy"
	declare -A region_of=()
	for i in 1 2 3 4 5 6; do
		read -r id region < <(metrics "$i" | sed -n 's/^meshcast_mesh_node_info{node="\([^"]*\)",region="\([^"]*\)"}.*/\1 \2/p')
		region_of[$id]=$region
	done
	read -r t0 w0 < <(data_bytes)
	out=$(timeout 120 "$mb" -quiet -mode latency -rate "$RATE" -subs "$SUBS" -duration "$DURATION" \
		-url "${url[2]},${url[3]},${url[4]},${url[5]}" -pub-url "${url[1]}" -json 2>/dev/null)
	read -r t1 w1 < <(data_bytes)
	msgs=$(echo "$out" | sed -n 's/.*"published":\([0-9]*\).*/\1/p')
	delivered=$(echo "$out" | sed -n 's/.*"delivered":\([0-9]*\).*/\1/p')
	printf '%-11s %12.1f %12.1f %10s\n' "$strategy" "$(echo "($t1-$t0)/$msgs" | bc -l)" "$(echo "($w1-$w0)/$msgs" | bc -l)" "$delivered/$(echo "$out" | sed -n 's/.*"expected":\([0-9]*\).*/\1/p')"
	stop_cluster
	unset region_of
done
echo "logs in $logs" >&2
