#!/usr/bin/env bash
# regions.sh measures latency by region and the routing strategies on a
# cluster of meshcast processes on this machine, 3 regions × 2 nodes on an
# emulated WAN (meshbench local; RTTs from fly.md's Azure table unless
# RTT_MATRIX says otherwise), and writes the reports:
#
#   rooms     C channels × K subscribers, a publisher per channel in each
#             region, under all, interested and relay (the HTML report
#             `make bench` writes: $OUT/regions.html)
#   fanout    one publisher in iad, SUBS subscribers over every node
#   presence  join churn, time until every node's clients see a join
#   connect   CONNS idle connections held by one meshbench process
#
#   bench/regions.sh                   # after `make build`; about 6 minutes
#   ROUNDS=3 ONLY=rooms bench/regions.sh
#
# Environment [defaults]: MESHBENCH_BIN [bin/meshbench] MESHCAST_BIN [bin/meshcast]
#   OUT [bin] ROUNDS [1] ONLY [rooms fanout presence connect] RATE [200] DURATION [20s]
#   CHANNELS [40] PER_CHANNEL [6] SUBS [300] FANOUT_RATE [100] CONNS [19900]
#   RTT_MATRIX [] EXTRA [] (more meshbench local flags)
# Every meshbench run holds /tmp/meshcast-bench.lock, so benchmarks on a
# shared machine never overlap, and is bounded by timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
mb=${MESHBENCH_BIN:-bin/meshbench}
OUT=${OUT:-bin} ROUNDS=${ROUNDS:-1} ONLY=${ONLY:-rooms fanout presence connect}
RATE=${RATE:-200} DURATION=${DURATION:-20s} CHANNELS=${CHANNELS:-40} PER_CHANNEL=${PER_CHANNEL:-6}
SUBS=${SUBS:-300} FANOUT_RATE=${FANOUT_RATE:-100} CONNS=${CONNS:-19900}
BENCH_NAME=regions.sh QUIET_WAIT=${QUIET_WAIT:-60} QUIET_CORES_TICKS=${QUIET_CORES_TICKS:-30}
# shellcheck source=bench/lib.sh
. bench/lib.sh
mkdir -p "$OUT"
common=(-meshcast-bin "${MESHCAST_BIN:-bin/meshcast}" -quiet -rounds "$ROUNDS")
[[ -n ${RTT_MATRIX:-} ]] && common+=(-rtt-matrix "$RTT_MATRIX")
# shellcheck disable=SC2206
common+=(${EXTRA:-})
run() { # name, meshbench local args...
	local name=$1
	shift
	wait_quiet
	echo "== $name: $mb local ${common[*]} $*" >&2
	timeout 1800 flock /tmp/meshcast-bench.lock "$mb" local "${common[@]}" "$@" -report "$OUT/$name"
}
for s in $ONLY; do
	case $s in
	rooms) run regions -scenario rooms -channels "$CHANNELS" -subs-per-channel "$PER_CHANNEL" -rate "$RATE" \
		-duration "$DURATION" -strategies all,interested,relay ;;
	fanout) run regions-fanout -scenario fanout -subs "$SUBS" -rate "$FANOUT_RATE" -duration "$DURATION" -strategies interested,relay ;;
	presence) run regions-presence -scenario presence -subs 60 -rate 20 -duration "$DURATION" ;;
	connect) run regions-connect -scenario connect -subs "$CONNS" -connect-rate 2000 -idle 10s ;;
	*) echo "regions.sh: unknown scenario $s" >&2 && exit 2 ;;
	esac
done
echo "reports in $OUT/regions*.{txt,json,html}" >&2
