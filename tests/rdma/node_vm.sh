#!/bin/sh
# The node host of the two-VM node suite (tests/rdma/run-suite.sh, vm.sh run2): runs cachenode
# on rxe0 (10.77.0.1) over the verbs transport and obeys one-line commands the client host sends
# to TCP port 9000: "restart" (SIGTERM, then start again), "l2" (check the counters of the cases
# so far, then restart as one of two L2 nodes: --peer names this node and the client host's node,
# both /verbs), "l2check N" (the L2 counters must show exactly N chunks fetched from the peer over
# verbs), "done" (check counters, stop).
# Exit 0 when the node always started, stopped cleanly (exit 0) and its counters say what the
# client's cases did.
ADDR=10.77.0.1:7700
# the same list on both nodes (the client host's node is vmpeer on 10.77.0.2:7700)
L2PEERS=vmnode@10.77.0.1:7700/verbs,vmpeer@10.77.0.2:7700/verbs
NODE_ARGS="--l1-size 384M --max-chunk 4M"
fails=0
pass() { echo "PASS: $*"; }
fail() {
	echo "FAIL: $*"
	fails=$((fails + 1))
}

start_node() {
	# shellcheck disable=SC2086
	./cachenode --listen $ADDR --transport verbs --rdma-dev rxe0 $NODE_ARGS \
		--http 127.0.0.1:9190 --node-id vmnode >>node.log 2>&1 &
	pid=$!
	i=0
	while ! grep -q 'serving on' node.log; do
		i=$((i + 1))
		if [ $i -gt 300 ] || ! kill -0 $pid 2>/dev/null; then
			cat node.log
			fail "the node did not start"
			echo "CTL: node start failed"
			exit 1
		fi
		sleep 0.1
	done
	pass "node $pid serving: $(grep 'transport' node.log | tail -n 1)"
}

stop_node() {
	kill -TERM $pid
	wait $pid
	rc=$?
	[ $rc -eq 0 ] && pass "node stopped cleanly" || fail "node exit status $rc after SIGTERM"
}

status_value() { # dotted-free key name -> first number after it in /api/status
	wget -qO- http://127.0.0.1:9190/api/status | tr ',{' '\n\n' |
		sed -n "s/.*\"$1\": *\([0-9][0-9]*\).*/\1/p" | head -n 1
}

# pinned_bytes, once it is 0 or 30 s have passed. A write-through copy keeps its chunks pinned
# until its job comes back to the worker, which is after the owner has them (and may already
# have served them to the client).
pinned_settled() {
	i=0
	while :; do
		p=$(status_value pinned_bytes)
		[ "${p:-1}" -eq 0 ] || [ $i -ge 60 ] && break
		i=$((i + 1))
		sleep 0.5
	done
	[ $i -gt 0 ] && echo "pinned_bytes took ${i} half-second polls to settle (now '$p')" >&2
	echo "$p"
}

# What the client's cases before the L2 step must have left on the node.
checked=0
case_checks() {
	checked=1
	# The client's three bad requests each broke their connection with a remote access error.
	acc=$(status_value err_remote_access)
	[ "${acc:-0}" -ge 3 ] && pass "remote access errors counted: $acc" ||
		fail "err_remote_access is '${acc}' after the bad-rkey cases"
	pinned=$(status_value pinned_bytes)
	[ "${pinned:-1}" -eq 0 ] && pass "nothing left pinned" || fail "pinned_bytes is '$pinned'"
	wget -qO- http://127.0.0.1:9190/api/healthz >/dev/null && pass "node healthy" ||
		fail "node unhealthy"
}

# After the client's L2 case: this node fetched exactly $1 chunks from vmpeer, over verbs.
l2_checks() {
	want=$1
	peer=$(wget -qO- http://127.0.0.1:9190/api/status | tr -d ' \n' |
		grep -o '"id":"vmpeer","addr":"[^"]*","transport":"[a-z]*"')
	echo "L2 peer: $peer"
	case "$peer" in
	*'"transport":"verbs"') pass "L2 peer vmpeer is reached over verbs" ;;
	*) fail "L2 peer vmpeer: '$peer' (want transport verbs)" ;;
	esac
	for k in retrieve_l2_hits fills fetch_hits; do
		v=$(status_value $k)
		[ "${v:--1}" -eq "$want" ] && pass "L2 $k moved by $v (want $want)" ||
			fail "L2 $k is '$v' (want $want)"
	done
	for k in fill_failed marked_down timeouts; do
		v=$(status_value $k)
		[ "${v:--1}" -eq 0 ] && pass "L2 $k is 0" || fail "L2 $k is '$v' (want 0)"
	done
	echo "L2 counters: rdma_retrieve_reqs $(status_value rdma_retrieve_reqs)" \
		"retrieve_hits $(status_value retrieve_hits) l2_waits $(status_value l2_waits)" \
		"fetch_reqs $(status_value fetch_reqs) fetch_keys $(status_value fetch_keys)" \
		"fetch_bytes $(status_value fetch_bytes) rdma_writes $(status_value rdma_writes)"
	pinned=$(status_value pinned_bytes)
	[ "${pinned:-1}" -eq 0 ] && pass "L2 node: nothing left pinned" ||
		fail "L2 node: pinned_bytes is '$pinned'"
}

# After the client's write-through case: this node copied exactly $1 chunks, $2 bytes, to vmpeer
# over verbs, and dropped none.
l2_through_checks() {
	v=$(status_value l2_puts)
	[ "${v:--1}" -eq "$1" ] 2>/dev/null && pass "write-through: l2_puts $v (want $1)" ||
		fail "write-through: l2_puts is '$v' (want '$1')"
	v=$(status_value put_bytes)
	[ "${v:--1}" -eq "$2" ] 2>/dev/null && pass "write-through: put_bytes $v (want $2)" ||
		fail "write-through: put_bytes is '$v' (want '$2')"
	v=$(status_value put_reqs)
	[ "${v:-0}" -ge 1 ] && pass "write-through: $v STOREs to vmpeer" ||
		fail "write-through: put_reqs is '$v'"
	for k in put_dropped marked_down timeouts; do
		v=$(status_value $k)
		[ "${v:--1}" -eq 0 ] && pass "write-through: $k is 0" ||
			fail "write-through: $k is '$v' (want 0)"
	done
	pinned=$(pinned_settled)
	[ "${pinned:-1}" -eq 0 ] && pass "write-through: nothing left pinned" ||
		fail "write-through: pinned_bytes is '$pinned'"
}

# per-thread CPU ticks of $pid: "tid comm ticks" lines
thread_ticks() {
	for t in /proc/$pid/task/*; do
		printf '%s %s %s\n' "${t##*/}" "$(cat $t/comm)" \
			"$(sed -E 's/^.*\) //' $t/stat | awk '{print $12 + $13}')"
	done
}

start_node
# An idle node (no client yet) must not spin: its workers (DPDK names them rte-worker-N) block on
# their completion channels and the acceptor on the listener's channel. Under emulation the
# telemetry drain thread's idle wake-ups (every 5 ms) cost a few ticks of their own, so the check
# is on the verbs threads; every thread's figure is printed. Startup settles for 1 s first.
sleep 1
thread_ticks >ticks0
sleep 2
thread_ticks >ticks1
busy=0
while read -r tid comm t1; do
	t0=$(awk -v id="$tid" '$1 == id {print $3}' ticks0)
	d=$((t1 - ${t0:-0}))
	echo "idle 2 s: thread $tid ($comm) $d ticks"
	case "$comm" in rte-worker-* | cn-verbs-accept) busy=$((busy + d)) ;; esac
done <ticks1
[ $busy -le 2 ] && pass "idle worker and acceptor threads used $busy ticks in 2 s" ||
	fail "idle worker and acceptor threads used $busy ticks in 2 s (busy waiting?)"
# now let the client host begin (it waits for this line on port 9001)
echo ready | nc -l -p 9001 >/dev/null
while :; do
	cmd=$(nc -l -p 9000 | head -n 1)
	echo "command: $cmd"
	case "$cmd" in
	restart)
		stop_node
		: >node.log
		start_node
		;;
	l2)
		case_checks
		stop_node
		cat node.log
		: >node.log
		# small chunks only in this step: a fetch over verbs registers --max-chunk per key
		NODE_ARGS="--l1-size 128M --max-chunk 256K --peer $L2PEERS --l2-timeout 20000"
		start_node
		grep 'L2:' node.log
		;;
	l2check\ *) l2_checks "${cmd#l2check }" ;;
	l2through\ *) l2_through_checks ${cmd#l2through } ;;
	sync) ;; # the client waits for this: the checks before it are done
	done) break ;;
	*) echo "unknown command '$cmd'" ;;
	esac
done

[ $checked -eq 1 ] || case_checks
stop_node
echo "--- node log"
cat node.log
echo "node_vm: $fails failure(s)"
[ $fails -eq 0 ]
