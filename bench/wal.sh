#!/usr/bin/env bash
# wal.sh runs the Postgres changes benchmarks of issue 8 with `meshbench wal`.
# Every run starts its own Postgres (initdb in a temporary directory, as the
# postgres user when root) and 3 meshcast nodes (iad/fra/sin on loopback, the
# reader on n1), writes rows with sent_ns = the writer's clock, and stops
# everything at its end. See bench/README.md for what is measured.
#
#   bench/wal.sh fanout     # 1000 subscribers over 3 nodes, every row to everyone: RATES, then max
#   bench/wal.sh rls        # 500 users with distinct JWTs, each sees 1/5 of the rows (team policy)
#   bench/wal.sh filtered   # id=eq.<k>, one key per subscriber: 100 vs 10 000 subscribers, same rate
#   bench/wal.sh light      # light load: 100 subscribers at 20 rows/s; 1000 filtered at 100 changes/s
#   bench/wal.sh all        # the four, then one table of every run
#
# Environment [defaults]: MESHCAST_BIN [bin/meshcast] MESHBENCH_BIN [bin/meshbench]
#   DURATION [20s] WARMUP [3s] ROUNDS [1]
#   RATES [100 150 200 250 300] (fanout rows/s)   RLS_RATES [10 20 30] (rls, one row per transaction)
#   FILTER_RATE [500] (filtered changes/s)        NODE_FLAGS [] (more meshcast flags)   EXTRA [] (more meshbench flags)
#   QUIET_WAIT [60]: before each run, wait up to this many seconds for the host to be nearly idle
#     (< QUIET_TICKS [25] % of one core busy over 1 s); then run anyway
#   OUT [a new /tmp/meshbench-wal.XXXXXX]: per-run JSON, stderr and node logs; results.jsonl
# Every run is bounded by its own budget and `timeout`; meshbench stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
mb=${MESHBENCH_BIN:-bin/meshbench}
bin=${MESHCAST_BIN:-bin/meshcast}
DURATION=${DURATION:-20s} WARMUP=${WARMUP:-3s} ROUNDS=${ROUNDS:-1}
RATES=${RATES:-100 150 200 250 300} RLS_RATES=${RLS_RATES:-10 20 30} FILTER_RATE=${FILTER_RATE:-500}
QUIET_WAIT=${QUIET_WAIT:-60} QUIET_TICKS=${QUIET_TICKS:-25}
OUT=${OUT:-$(mktemp -d /tmp/meshbench-wal.XXXXXX)}
mkdir -p "$OUT"
mode=${1:-all}

BENCH_NAME=wal.sh QUIET_CORES_TICKS=$QUIET_TICKS
# shellcheck source=bench/lib.sh
. bench/lib.sh # wait_quiet

# run LABEL meshbench-wal-args...: one run, its summary on the terminal, its
# JSON appended to $OUT/results.jsonl.
run() {
	local label=$1
	shift
	for r in $(seq 1 "$ROUNDS"); do
		local name=$label
		((ROUNDS > 1)) && name="$label#$r"
		wait_quiet
		echo "== $name: meshbench wal $* (load avg $(cut -d' ' -f1-3 /proc/loadavg))" >&2
		# shellcheck disable=SC2086
		if timeout 900 "$mb" wal -quiet -json -label "$name" -meshcast-bin "$bin" -duration "$DURATION" -warmup "$WARMUP" \
			-logs "$OUT/logs-${name//[^a-zA-Z0-9_-]/_}" -node-flags "${NODE_FLAGS:-}" "$@" $EXTRA \
			>"$OUT/$name.json" 2>"$OUT/$name.err"; then
			cat "$OUT/$name.json" >>"$OUT/results.jsonl"
		else
			echo "wal.sh: $name failed:" >&2
		fi
		cat "$OUT/$name.err" >&2
	done
}
EXTRA=${EXTRA:-}

fanout() {
	for rate in $RATES; do
		run "fanout-$rate" -shape fanout -subs 1000 -rate "$rate"
	done
	run fanout-max -shape fanout -subs 1000 -rate 0 -window 64
}

rls() {
	for rate in $RLS_RATES; do
		run "rls-$rate" -shape rls -jwt-secret meshbench-secret -subs 500 -teams 5 -rate "$rate"
	done
	# Supabase's figure counts changes; several rows per transaction share
	# one RLS query per user.
	run rls-150x50 -shape rls -jwt-secret meshbench-secret -subs 500 -teams 5 -rate 150 -rows-per-tx 50 -window 300
}

filtered() {
	run filtered-100 -shape filtered -subs 100 -rate "$FILTER_RATE"
	run filtered-10000 -shape filtered -subs 10000 -rate "$FILTER_RATE" -connect-rate 2000
}

light() {
	run light-fanout -shape fanout -subs 100 -rate 20
	run light-filtered -shape filtered -subs 1000 -rate 100
}

case $mode in
fanout | rls | filtered | light) "$mode" ;;
all) fanout; rls; filtered; light ;;
*)
	echo "usage: $0 fanout|rls|filtered|light|all" >&2
	exit 2
	;;
esac
[ -f "$OUT/results.jsonl" ] && "$mb" wal -table "$OUT/results.jsonl"
echo "results in $OUT" >&2
