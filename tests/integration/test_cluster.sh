#!/usr/bin/env bash
# `make cluster N=3` and `make cluster-down`, for real: three nodes in three network
# namespaces and a Redis on the bridge. The registry lists the three, live, at the
# namespaces' addresses; a chunk stored on one node through the bridge comes back; the
# nodes reach each other across namespaces; `make cluster` again replaces the cluster
# (still three); `make cluster-down` leaves no namespace, link, process or state behind,
# and a second `make cluster-down` is a no-op.
#
# Usage: test_cluster.sh SOURCE_DIR BUILD_DIR. Exit 77 (skipped) when not root, or when
# network namespaces or redis-server are not available here.
set -uo pipefail

src=$1
build=$2
export PREFIX=ct$(($$ % 10000)) SUBNET=10.79.$(($$ % 200 + 20)) L1_SIZE=64M HEARTBEAT=250ms
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("0.0.0.0",0)); print(s.getsockname()[1])')
export REDIS_PORT=$port
cluster=itest$$
status=$build/tools/cachenode-status
cli=$build/tools/cachenode-cli

skip() {
	echo "SKIP: $*"
	exit 77
}
fail() {
	echo "FAIL: $*" >&2
	make -s -C "$src" cluster-down BUILD="$build" >/dev/null 2>&1
	exit 1
}

[ "$(id -u)" -eq 0 ] || skip "make cluster needs root (network namespaces)"
command -v redis-server >/dev/null || skip "redis-server is not installed"
ip netns add "$PREFIX-probe" 2>/dev/null || skip "cannot create a network namespace here"
ip netns del "$PREFIX-probe"
ip link add "$PREFIX-pb" type bridge 2>/dev/null || skip "cannot create a bridge here"
ip link del "$PREFIX-pb"

pids_of_cluster() {
	cat /run/cachenode-cluster-"$PREFIX"/*.pid 2>/dev/null
}

live_count() {
	"$status" --redis "redis://$SUBNET.1:$port" --cluster "$cluster" --json |
		python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["live"], " ".join(sorted(n["record"]["address"] for n in d["nodes"] if n["state"] == "live")))'
}

out=$(make -s -C "$src" cluster N=3 BUILD="$build" CLUSTER="$cluster" 2>&1) || fail "make cluster: $out"
echo "$out"
grep -q "cachenode-status --redis redis://$SUBNET.1:$port --cluster $cluster" <<<"$out" ||
	fail "make cluster did not say how to reach the cluster"
got=$(live_count)
[ "$got" = "3 $SUBNET.11:7700 $SUBNET.12:7700 $SUBNET.13:7700" ] ||
	fail "registry: '$got', want 3 live nodes at $SUBNET.11-13:7700"
for i in 1 2 3; do
	ip netns list | grep -q "^$PREFIX-node$i\b" || fail "no namespace $PREFIX-node$i"
done

# through the bridge from the root namespace, and across namespaces
tmp=$(mktemp)
head -c 100000 /dev/urandom >"$tmp"
"$cli" --node "$SUBNET.12:7700" put cluster-chunk "$tmp" >/dev/null || fail "put on node 2"
ip netns exec "$PREFIX-node1" "$cli" --node "$SUBNET.12:7700" get cluster-chunk "$tmp.back" \
	>/dev/null || fail "get from node 2, inside node 1's namespace"
cmp -s "$tmp" "$tmp.back" || fail "the chunk came back different"
rm -f "$tmp" "$tmp.back"
# each node lists the other two as peers (node 3 reads them at its next heartbeat: up to 5 s)
for try in $(seq 50); do
	peers=$(curl -s "http://$SUBNET.13:9190/api/status" |
		python3 -c 'import json,sys; print(" ".join(sorted(p["node_id"] for p in json.load(sys.stdin)["components"]["registry"]["peers"])))' 2>/dev/null)
	[ "$peers" = "$cluster-node1 $cluster-node2" ] && break
	sleep 0.1
done
[ "$peers" = "$cluster-node1 $cluster-node2" ] || fail "node 3 lists peers '$peers'"

# again: replaced, still three, the old processes gone
old=$(pids_of_cluster)
make -s -C "$src" cluster N=3 BUILD="$build" CLUSTER="$cluster" >/dev/null 2>&1 || fail "make cluster, twice"
for p in $old; do
	! kill -0 "$p" 2>/dev/null || fail "process $p of the first cluster still runs"
done
got=$(live_count)
[ "${got%% *}" = 3 ] || fail "after the second make cluster: '$got'"

# down: nothing left
pids=$(pids_of_cluster)
make -s -C "$src" cluster-down BUILD="$build" >/dev/null 2>&1 || fail "make cluster-down"
for p in $pids; do
	! kill -0 "$p" 2>/dev/null || fail "process $p survived cluster-down"
done
! ip netns list | grep -q "^$PREFIX-" || fail "namespaces left: $(ip netns list | grep "^$PREFIX-")"
! ip -o link show | grep -q " $PREFIX-" || fail "links left: $(ip -o link show | grep " $PREFIX-")"
[ ! -e "/run/cachenode-cluster-$PREFIX" ] || fail "state directory left"
! redis-cli -h "$SUBNET.1" -p "$port" ping >/dev/null 2>&1 || fail "Redis still answers"
make -s -C "$src" cluster-down BUILD="$build" >/dev/null 2>&1 || fail "make cluster-down, twice"
echo "PASS: make cluster N=3 / make cluster-down"
