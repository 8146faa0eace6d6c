#!/usr/bin/env bash
# make cluster N=3 / make cluster-down: a local cluster of N nodes and one Redis registry,
# each node in its own network namespace, all joined by veth pairs to one bridge.
#
#   scripts/cluster.sh up N     (re)create it: bridge, redis-server, N namespaces and nodes
#   scripts/cluster.sh down     stop and remove everything `up` made (also after a crash)
#   scripts/cluster.sh status   cachenode-status --redis for the running cluster
#
# Needs root (ip netns, veth, bridge). Both commands are idempotent: `up` on a running
# cluster replaces it, `down` with nothing running does nothing.
#
# Environment: BUILD (build), CLUSTER (demo: the --cluster name), PREFIX (cn: names of the
# namespaces <PREFIX>-node<i>, the bridge <PREFIX>-br0 and veths <PREFIX>-v<i>), SUBNET
# (10.78.0: a free /24; the bridge is .1, node i is .(10+i)), REDIS_PORT (6379), L1_SIZE (256M),
# HEARTBEAT (1s).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
CLUSTER=${CLUSTER:-demo}
PREFIX=${PREFIX:-cn}
SUBNET=${SUBNET:-10.78.0}
REDIS_PORT=${REDIS_PORT:-6379}
L1_SIZE=${L1_SIZE:-256M}
HEARTBEAT=${HEARTBEAT:-1s}
STATE=/run/cachenode-cluster-$PREFIX
BR=$PREFIX-br0
NODE=$(realpath -m "$BUILD/node/cachenode")
CLI=$(realpath -m "$BUILD/tools/cachenode-cli")
STATUS=$(realpath -m "$BUILD/tools/cachenode-status")

die() {
	echo "cluster: $*" >&2
	exit 1
}

need_root() {
	[ "$(id -u)" -eq 0 ] || die "needs root for network namespaces, veth and a bridge: sudo make $1"
	command -v ip >/dev/null || die "ip (iproute2) is not installed"
}

# Stop a process we started (pid from our state file), SIGTERM first.
stop_pid() { # file, seconds
	local f=$1 secs=$2 pid
	[ -f "$f" ] || return 0
	pid=$(cat "$f")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 1 $((secs * 10))); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$f"
}

down() {
	need_root cluster-down
	local ns
	if [ -d "$STATE" ]; then
		# nodes first (they leave the registry while Redis is still there), then Redis
		for f in "$STATE"/node*.pid; do
			[ -e "$f" ] && stop_pid "$f" 15
		done
		stop_pid "$STATE/redis.pid" 5
		for id in $(cat "$STATE/ids" 2>/dev/null); do
			rm -rf "/var/run/dpdk/cachenode-$id" # the node-id lock it leaves by design
		done
		rm -rf "$STATE"
	fi
	# whatever is left of ours, by our names only (a crash, or no state dir)
	for ns in $(ip netns list | awk '{print $1}' | grep -E "^$PREFIX-node[0-9]+$" || true); do
		ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
		ip netns del "$ns"
	done
	for v in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 |
		grep -E "^$PREFIX-v[0-9]+$" || true); do
		ip link del "$v" 2>/dev/null || true
	done
	if ip link show "$BR" >/dev/null 2>&1; then
		ip link del "$BR"
	fi
	echo "cluster: removed (namespaces $PREFIX-node*, bridge $BR, Redis, nodes)"
}

wait_until() { # seconds, command...
	local secs=$1
	shift
	for _ in $(seq 1 $((secs * 10))); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}

up() {
	local n=$1 i ip ns id
	need_root "cluster N=$n"
	[[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 200 ] || die "N must be 1..200"
	# link names are at most 15 bytes: <PREFIX>-br0, <PREFIX>-v<200>
	[[ $PREFIX =~ ^[a-z][a-z0-9]{0,9}$ ]] || die "PREFIX '$PREFIX': 1-10 of [a-z0-9], a letter first"
	[ -x "$NODE" ] && [ -x "$CLI" ] && [ -x "$STATUS" ] || die "build first (make build; BUILD=$BUILD)"
	command -v redis-server >/dev/null || die "redis-server is not installed (apt-get install redis-server)"
	ip netns list >/dev/null 2>&1 || die "ip netns does not work here"
	if [ -d "$STATE" ] || ip link show "$BR" >/dev/null 2>&1; then
		echo "cluster: replacing the running one"
		down >/dev/null
	fi
	mkdir -p "$STATE"
	echo "$CLUSTER" >"$STATE/cluster"
	: >"$STATE/ids"

	ip link add "$BR" type bridge
	ip addr add "$SUBNET.1/24" dev "$BR"
	ip link set "$BR" up

	# the registry, in the root namespace on the bridge address
	setsid redis-server --bind "$SUBNET.1" --port "$REDIS_PORT" --save '' --appendonly no \
		--protected-mode no --logfile "$STATE/redis.log" </dev/null >/dev/null 2>&1 &
	echo $! >"$STATE/redis.pid"
	wait_until 10 redis-cli -h "$SUBNET.1" -p "$REDIS_PORT" ping ||
		die "redis-server did not start on $SUBNET.1:$REDIS_PORT (see $STATE/redis.log)"

	for i in $(seq 1 "$n"); do
		ns=$PREFIX-node$i
		ip=$SUBNET.$((10 + i))
		id=$CLUSTER-node$i
		ip netns add "$ns"
		ip link add "$PREFIX-v$i" type veth peer name "$PREFIX-p$i"
		ip link set "$PREFIX-p$i" netns "$ns"
		ip -n "$ns" link set "$PREFIX-p$i" name eth0
		ip -n "$ns" addr add "$ip/24" dev eth0
		ip -n "$ns" link set lo up
		ip -n "$ns" link set eth0 up
		ip -n "$ns" route add default via "$SUBNET.1"
		ip link set "$PREFIX-v$i" master "$BR"
		ip link set "$PREFIX-v$i" up
		echo "$id" >>"$STATE/ids"
		setsid ip netns exec "$ns" "$NODE" --listen "$ip:7700" --http "$ip:9190" \
			--node-id "$id" --redis "redis://$SUBNET.1:$REDIS_PORT" --cluster "$CLUSTER" \
			--heartbeat "$HEARTBEAT" --l1-size "$L1_SIZE" --transport tcp \
			</dev/null >"$STATE/node$i.log" 2>&1 &
		echo $! >"$STATE/node$i.pid"
	done
	for i in $(seq 1 "$n"); do
		wait_until 60 "$CLI" --node "$SUBNET.$((10 + i)):7700" ping ||
			die "node $i does not answer on $SUBNET.$((10 + i)):7700 (see $STATE/node$i.log)"
	done
	# every node has joined: the registry lists N live ones
	wait_until 20 bash -c "'$STATUS' --redis redis://$SUBNET.1:$REDIS_PORT --cluster '$CLUSTER' \
		--json | grep -q '\"live\": $n,'" ||
		die "the registry does not list $n live nodes: $STATUS --redis redis://$SUBNET.1:$REDIS_PORT --cluster $CLUSTER"

	"$STATUS" --redis "redis://$SUBNET.1:$REDIS_PORT" --cluster "$CLUSTER" --no-color || true
	cat <<EOF

cluster '$CLUSTER' is up: Redis on $SUBNET.1:$REDIS_PORT, $n node(s) in namespaces $PREFIX-node1..$n
  the cluster:       $STATUS --redis redis://$SUBNET.1:$REDIS_PORT --cluster $CLUSTER [--watch]
  a node:            $CLI --node $SUBNET.11:7700 stat    (node i: $SUBNET.<10+i>, port 7700)
                     curl http://$SUBNET.11:9190/api/status       (HTTP: port 9190; /metrics)
  inside a node:     ip netns exec $PREFIX-node1 bash
  logs:              $STATE/node<i>.log, $STATE/redis.log
  stop it all:       make cluster-down
EOF
}

status() {
	[ -f "$STATE/cluster" ] || die "no cluster is running (make cluster N=3)"
	exec "$STATUS" --redis "redis://$SUBNET.1:$REDIS_PORT" --cluster "$(cat "$STATE/cluster")"
}

case "${1:-}" in
up) up "${2:-3}" ;;
down) down ;;
status) status ;;
*)
	echo "usage: $0 up N | down | status" >&2
	exit 2
	;;
esac
