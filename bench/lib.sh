# lib.sh: what the benchmark scripts share. Source it after setting
#   BENCH_NAME         the script's name, for messages
#   QUIET_WAIT         seconds wait_quiet waits at most for a quiet host
#   QUIET_CORES_TICKS  what counts as quiet: fewer busy ticks (1/100 s of one
#                      core) over one second of the whole machine
# and start the server under test in the background with SERVER_PID=$!, or
# a cluster with start_cluster.

SERVER_PID=

# stop_server: TERM the server, KILL it after 10 s, and reap it.
stop_server() {
	[[ -n $SERVER_PID ]] || return 0
	if kill -0 "$SERVER_PID" 2>/dev/null; then
		kill -TERM "$SERVER_PID" 2>/dev/null || true
		for _ in $(seq 100); do
			kill -0 "$SERVER_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$SERVER_PID" 2>/dev/null || true
	fi
	wait "$SERVER_PID" 2>/dev/null || true
	SERVER_PID=
}

# host_busy_ticks: CPU ticks the whole machine spent outside idle/iowait since boot.
host_busy_ticks() { awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }

# wait_quiet: waits (at most QUIET_WAIT seconds) until the host, the idle
# server included, is nearly idle, so that other work on a shared machine
# disturbs the measurement less. It only warns if that never happens.
wait_quiet() {
	local deadline=$((SECONDS + QUIET_WAIT)) a b
	while :; do
		a=$(host_busy_ticks)
		sleep 1
		b=$(host_busy_ticks)
		((b - a < QUIET_CORES_TICKS)) && return 0
		if ((SECONDS >= deadline)); then
			echo "$BENCH_NAME: host still busy ($((b - a))% of one core) after ${QUIET_WAIT}s; measuring anyway" >&2
			return 0
		fi
	done
}

# start_cluster N ARGS...: `$mb cluster -nodes N ARGS...` in the background
# (stop_cluster stops it and so its nodes); waits up to 60 s until the N
# nodes are meshed and their WebSocket URLs are in url[1]..url[N]. Its
# output goes to $logs.
start_cluster() {
	local n=$1
	shift
	"$mb" cluster -nodes "$n" -logs "$logs" "$@" >"$logs/urls" 2>>"$logs/cluster.log" &
	CLUSTER_PID=$!
	for _ in $(seq 600); do
		if (($(wc -l <"$logs/urls") >= n)); then
			mapfile -t url < <(echo && cat "$logs/urls")
			return 0
		fi
		kill -0 "$CLUSTER_PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "${0##*/}: the cluster did not start: $(tail -3 "$logs/cluster.log")" >&2
	return 1
}

# stop_cluster: TERM what start_cluster started (it stops its nodes, KILL
# after 10 s) and reap it.
stop_cluster() {
	[[ -n ${CLUSTER_PID:-} ]] || return 0
	kill -TERM "$CLUSTER_PID" 2>/dev/null || true
	wait "$CLUSTER_PID" 2>/dev/null || true
	CLUSTER_PID=
}
