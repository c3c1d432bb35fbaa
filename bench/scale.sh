#!/usr/bin/env bash
# scale.sh runs `meshbench scale` (issue 19 §3): connections held by a local
# cluster of meshcast processes, from several meshbench worker processes
# (each from its own loopback source address, 127.0.0.10 on), every
# connection joined to one of CHANNELS channels; held HOLD, then one
# broadcast per second to every channel. See bench/README.md.
#
#   bench/scale.sh              # both runs below, then their summaries
#   bench/scale.sh limit        # 3 nodes with as many connections as the open-file limit lets a node hold
#   bench/scale.sh 100k         # 100 000 connections over NODES_100K nodes
#
# Environment [defaults]: MESHCAST_BIN [bin/meshcast] MESHBENCH_BIN [bin/meshbench]
#   CHANNELS [100] HOLD [60s] DURATION [30s] CONNECT_RATE [1000]
#   LIMIT_CONNS [59400: 3 × 19 800, the most 3 nodes hold under a 20 000-descriptor limit]
#   NODES_100K [6] NODE_FLAGS [] (more meshcast flags) EXTRA [] (more meshbench scale flags)
#   QUIET_WAIT [60]: before each run, wait up to this many seconds for a quiet host
#   OUT [a new /tmp/meshbench-scale.XXXXXX]: per-run JSON and summaries, node logs
# Every run is bounded by its budget and `timeout`; meshbench stops the nodes
# and workers it started.
set -euo pipefail
cd "$(dirname "$0")/.."
mb=${MESHBENCH_BIN:-bin/meshbench}
bin=${MESHCAST_BIN:-bin/meshcast}
CHANNELS=${CHANNELS:-100} HOLD=${HOLD:-60s} DURATION=${DURATION:-30s} CONNECT_RATE=${CONNECT_RATE:-1000}
LIMIT_CONNS=${LIMIT_CONNS:-59400} NODES_100K=${NODES_100K:-6} EXTRA=${EXTRA:-}
QUIET_WAIT=${QUIET_WAIT:-60}
OUT=${OUT:-$(mktemp -d /tmp/meshbench-scale.XXXXXX)}
mkdir -p "$OUT"
mode=${1:-all}

BENCH_NAME=scale.sh QUIET_CORES_TICKS=25
# shellcheck source=bench/lib.sh
. bench/lib.sh # wait_quiet

# run NAME meshbench-scale-args...: one run; its summary on stderr and in $OUT/NAME.txt.
run() {
	local name=$1
	shift
	wait_quiet
	echo "== $name: meshbench scale $* (load avg $(cut -d' ' -f1-3 /proc/loadavg))" >&2
	# shellcheck disable=SC2086
	if timeout 1800 "$mb" scale -json -meshcast-bin "$bin" -channels "$CHANNELS" -hold "$HOLD" -duration "$DURATION" \
		-connect-rate "$CONNECT_RATE" -logs "$OUT/logs-$name" -node-flags "${NODE_FLAGS:-}" "$@" $EXTRA >"$OUT/$name.json" 2>"$OUT/$name.err"; then
		:
	else
		echo "scale.sh: $name failed" >&2
	fi
	grep -v '^meshbench: ' "$OUT/$name.err" | tee "$OUT/$name.txt" >&2 || true
}

case $mode in
limit) run limit -nodes 3 -conns "$LIMIT_CONNS" ;;
100k) run 100k -nodes "$NODES_100K" -conns 100000 ;;
all)
	run limit -nodes 3 -conns "$LIMIT_CONNS"
	run 100k -nodes "$NODES_100K" -conns 100000
	;;
*)
	echo "usage: $0 [limit|100k|all]" >&2
	exit 2
	;;
esac
echo "scale.sh: results in $OUT" >&2
