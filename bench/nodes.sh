# nodes.sh holds what the cluster benchmark scripts share; they source it.

pids=()

# stop_nodes stops every node in pids: TERM, up to 10 s to drain, then KILL.
stop_nodes() {
	((${#pids[@]})) || return 0
	kill -TERM "${pids[@]}" 2>/dev/null || true
	for _ in $(seq 1 100); do
		alive=0
		for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
		((alive)) || break
		sleep 0.1
	done
	kill -KILL "${pids[@]}" 2>/dev/null || true
	pids=()
}

# wait_peers PORT N waits up to 15 s until the node on 127.0.0.1:PORT is
# connected to N peers.
wait_peers() {
	for _ in $(seq 1 150); do
		curl -sf "http://127.0.0.1:$1/metrics" 2>/dev/null | grep -q "^meshcast_mesh_peers_connected $2\$" && return 0
		sleep 0.1
	done
	echo "${0##*/}: the node on port $1 never connected to $2 peers" >&2
	return 1
}
