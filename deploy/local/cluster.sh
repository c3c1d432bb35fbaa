#!/usr/bin/env bash
# Runs a local meshcast cluster on loopback until Ctrl-C. By default three
# nodes:
#
#   node  region  clients          gossip (TCP+UDP)  mesh (QUIC, UDP)
#   n1    iad     127.0.0.1:4000   127.0.0.1:7946    127.0.0.1:7947
#   n2    fra     127.0.0.1:4001   127.0.0.1:7956    127.0.0.1:7957
#   n3    sin     127.0.0.1:4002   127.0.0.1:7966    127.0.0.1:7967
#
# Environment (make cluster VAR=value passes them):
#   CLUSTER_NAMES        node names, one node each     "n1 n2 n3"
#   CLUSTER_REGIONS      their regions (repeated if fewer) "iad fra sin"
#   CLUSTER_PORT         client port of the first node; node i gets +i   4000
#   CLUSTER_GOSSIP_PORT  gossip port of the first node; node i gets +10i,
#                        its mesh the gossip port + 1                     7946
#   MESHCAST_CLUSTER_SECRET  the cluster secret          local-dev-secret
#   MESHCAST_BIN         the binary                      bin/meshcast
#
# It builds nothing: `make cluster` runs `make build` first. Extra arguments
# go to every node, e.g. `deploy/local/cluster.sh --mesh-strategy relay`
# (make cluster ARGS="--mesh-strategy relay").
# The nodes run without --jwt-secret (open, dev only), which is why they
# listen on 127.0.0.1 only.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=${MESHCAST_BIN:-$root/bin/meshcast}
secret=${MESHCAST_CLUSTER_SECRET:-local-dev-secret}

if [[ ! -x $bin ]]; then
	echo "cluster.sh: $bin not found; run \`make build\` (or \`make cluster\`) first" >&2
	exit 1
fi

read -r -a names <<<"${CLUSTER_NAMES:-n1 n2 n3}"
read -r -a region_list <<<"${CLUSTER_REGIONS:-iad fra sin}"
client_port=${CLUSTER_PORT:-4000}
gossip_port=${CLUSTER_GOSSIP_PORT:-7946}
for v in CLUSTER_PORT:$client_port CLUSTER_GOSSIP_PORT:$gossip_port; do
	if [[ ! ${v#*:} =~ ^[0-9]+$ ]]; then
		echo "cluster.sh: ${v%%:*} must be a port number, not \"${v#*:}\"" >&2
		exit 2
	fi
done
count=${#names[@]}
if ((count == 0 || ${#region_list[@]} == 0)); then
	echo "cluster.sh: CLUSTER_NAMES and CLUSTER_REGIONS must name at least one node and region" >&2
	exit 2
fi
regions=() client_ports=() gossip_ports=()
for ((i = 0; i < count; i++)); do
	regions+=("${region_list[i % ${#region_list[@]}]}")
	client_ports+=($((client_port + i)))
	gossip_ports+=($((gossip_port + 10 * i)))
done

logs=$(mktemp -d "${TMPDIR:-/tmp}/meshcast-cluster.XXXXXX")
pids=()

# The nodes run in their own session so that Ctrl-C reaches only this
# script, which then stops each node once with SIGTERM (a node that gets a
# second signal while draining exits at once). Without setsid(1) they share
# our process group and get the terminal's SIGINT themselves.
detach=()
if command -v setsid >/dev/null; then
	detach=(setsid)
fi
interrupted=0

stop() {
	trap - INT TERM HUP EXIT
	if ((${#pids[@]} > 0)); then
		echo
		echo "stopping ${names[*]}..."
		if ((${#detach[@]} > 0 || !interrupted)); then
			kill -TERM "${pids[@]}" 2>/dev/null || true
		fi
		# A graceful stop drains clients and leaves the cluster; give it the
		# server's shutdown timeout, then force.
		for _ in $(seq 1 150); do
			alive=0
			for pid in "${pids[@]}"; do
				if kill -0 "$pid" 2>/dev/null; then alive=1; fi
			done
			((alive)) || break
			sleep 0.1
		done
		for pid in "${pids[@]}"; do
			kill -KILL "$pid" 2>/dev/null || true
		done
		wait "${pids[@]}" 2>/dev/null || true
	fi
	echo "logs kept in $logs"
}
trap stop EXIT
trap 'interrupted=1; exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

for ((i = 0; i < count; i++)); do
	args=(
		--listen "127.0.0.1:${client_ports[i]}"
		--name "${names[i]}"
		--region "${regions[i]}"
		--gossip-addr "127.0.0.1:${gossip_ports[i]}"
		--cluster-secret "$secret"
	)
	if ((i > 0)); then
		args+=(--join "127.0.0.1:${gossip_ports[0]}")
	fi
	"${detach[@]}" "$bin" "${args[@]}" "$@" >"$logs/${names[i]}.log" 2>&1 &
	pids+=($!)
done

# Wait until every node answers /metrics and sees all the others.
ready() {
	local port=$1 body
	body=$(curl -fsS --max-time 1 "http://127.0.0.1:$port/metrics" 2>/dev/null) || return 1
	grep -qx "meshcast_mesh_members $count" <<<"$body" && grep -qx "meshcast_mesh_peers_connected $((count - 1))" <<<"$body"
}
deadline=$((SECONDS + 20))
for ((i = 0; i < count; i++)); do
	until ready "${client_ports[i]}"; do
		if ! kill -0 "${pids[i]}" 2>/dev/null; then
			echo "cluster.sh: ${names[i]} exited; its log ($logs/${names[i]}.log):" >&2
			tail -n 20 "$logs/${names[i]}.log" >&2
			exit 1
		fi
		if ((SECONDS > deadline)); then
			echo "cluster.sh: ${names[i]} did not see the whole cluster within 20s; logs in $logs" >&2
			exit 1
		fi
		sleep 0.2
	done
done

echo "meshcast cluster up (logs in $logs):"
for ((i = 0; i < count; i++)); do
	port=${client_ports[i]}
	printf '  %s (%s)  demo http://127.0.0.1:%s/  realtime ws://127.0.0.1:%s/realtime/v1  metrics http://127.0.0.1:%s/metrics  log %s\n' \
		"${names[i]}" "${regions[i]}" "$port" "$port" "$port" "$logs/${names[i]}.log"
done
echo "Ctrl-C stops them all."

# Run until Ctrl-C, or until a node dies (then stop the others).
set +e
wait -n "${pids[@]}"
status=$?
set -e
for ((i = 0; i < count; i++)); do
	if ! kill -0 "${pids[i]}" 2>/dev/null; then
		echo "cluster.sh: ${names[i]} exited (status $status); last lines of its log:" >&2
		tail -n 20 "$logs/${names[i]}.log" >&2
	fi
done
exit 1
