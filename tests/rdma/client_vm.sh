#!/bin/sh
# The client host of the two-VM node suite (see node_vm.sh): real clients on rxe0 (10.77.0.2)
# against the node at 10.77.0.1 over RDMA. Exit 0 when every case passed.
NODE=10.77.0.1:7700
CHUNKS=${CHUNKS:-10000}
T=/usr/bin/timeout
fails=0
pass() { echo "PASS: $*"; }
fail() {
	echo "FAIL: $*"
	fails=$((fails + 1))
}
ctl() { # command -> node host
	i=0
	until echo "$1" | nc 10.77.0.1 9000 2>/dev/null; do
		i=$((i + 1))
		[ $i -gt 50 ] && return 1
		sleep 0.2
	done
}
sync_node() { # returns once the node host has run every command sent before (up to 120 s)
	i=0
	until echo sync | nc 10.77.0.1 9000 2>/dev/null; do
		i=$((i + 1))
		[ $i -gt 600 ] && return 1
		sleep 0.2
	done
}
check() { # name cmd...
	name=$1
	shift
	$T 600 "$@" >"$name.log" 2>&1
	rc=$?
	cat "$name.log"
	[ $rc -eq 0 ] && pass "$name: $(tail -n 1 "$name.log")" || fail "$name (exit $rc)"
}

# wait for the node host to say "ready" (after its idle-CPU check, which no client may disturb)
i=0
until [ "$(nc -w 2 10.77.0.1 9001 </dev/null 2>/dev/null)" = ready ]; do
	i=$((i + 1))
	[ $i -gt 300 ] && { fail "the node host never said ready"; break; }
	sleep 0.5
done

check roundtrip ./cachenode-rdma-check roundtrip $NODE --chunks $CHUNKS --seed 1

# the node restarts while a client is connected: the client sees a clear error, reconnects
./cachenode-rdma-check hold $NODE --seed 4 --wait-ms 120000 >hold.log 2>&1 &
cl=$!
i=0
while ! grep -q connected hold.log && [ $i -lt 200 ]; do
	i=$((i + 1))
	sleep 0.1
done
ctl restart || fail "could not reach the node host's control port"
wait $cl
rc=$?
cat hold.log
[ $rc -eq 0 ] && pass "node restart: $(grep 'lost the node' hold.log)" || fail "node restart (exit $rc)"

# requests naming memory the node may not touch (counted by the node host after 'done')
check bad_rkey ./cachenode-rdma-check bad-rkey $NODE --seed 2
check bad_addr ./cachenode-rdma-check bad-addr $NODE --seed 2
check bad_rkey_retrieve ./cachenode-rdma-check bad-rkey-retrieve $NODE --seed 2

# a client killed mid-transfer (1 MiB stores): every chunk it left is absent or whole
./cachenode-rdma-check store-loop $NODE --seed 3 --size 1048576 >loop.log 2>&1 &
cl=$!
i=0
while ! grep -q storing loop.log && [ $i -lt 100 ]; do
	i=$((i + 1))
	sleep 0.1
done
sleep 3
kill -9 $cl
wait $cl 2>/dev/null
check killed_client ./cachenode-rdma-check verify $NODE --seed 3 --size 1048576 --chunks 400 \
	--min-present 1

# after all that the node still serves a full round trip
check after ./cachenode-rdma-check roundtrip $NODE --chunks 500 --seed 5

# L2 over verbs: a second node here (vmpeer, 10.77.0.2) and the node host's node (vmnode,
# restarted by "l2") get the same --peer list, both /verbs. Chunks stored through vmpeer (which
# keeps them: --l2-write none) come back byte-exact through vmnode by CN_F_RDMA RETRIEVE when
# vmpeer owns them, fetched by vmnode's L2 threads over verbs; vmnode's own are misses.
L2CHUNKS=${L2CHUNKS:-300}
L2PEERS=vmnode@10.77.0.1:7700/verbs,vmpeer@10.77.0.2:7700/verbs
./cachenode --listen 10.77.0.2:7700 --transport verbs --rdma-dev rxe0 --l1-size 64M \
	--max-chunk 256K --http 127.0.0.1:9191 --node-id vmpeer --peer $L2PEERS \
	--l2-write none >peer.log 2>&1 &
ppid=$!
i=0
while ! grep -q 'serving on' peer.log && [ $i -lt 300 ] && kill -0 $ppid 2>/dev/null; do
	i=$((i + 1))
	sleep 0.1
done
grep -q 'serving on' peer.log && pass "L2 peer node vmpeer serving" || fail "L2 peer node did not start"
ctl l2 || fail "could not reach the node host's control port"
check l2_verbs ./cachenode-rdma-check l2 10.77.0.2:7700 $NODE --ids vmnode,vmpeer \
	--store-id vmpeer --retrieve-id vmnode --chunks $L2CHUNKS --seed 6 --wait-ms 120000
want=$(sed -n 's/.*"l2_expected": \([0-9][0-9]*\).*/\1/p' l2_verbs.log | tail -n 1)
ctl "l2check ${want:-none}" || fail "could not reach the node host's control port"
# its checks read vmnode's counters: done before the next case stores through vmnode
sync_node || fail "the node host did not finish its L2 checks"
# the peer served vmnode's fetches as a peer session, by RDMA WRITE
psess=$(wget -qO- http://127.0.0.1:9191/api/status | tr ',{' '\n\n' |
	sed -n 's/.*"peer_sessions": *\([0-9][0-9]*\).*/\1/p' | head -n 1)
prdma=$(wget -qO- http://127.0.0.1:9191/api/status | tr ',{' '\n\n' |
	sed -n 's/.*"rdma_retrieve_reqs": *\([0-9][0-9]*\).*/\1/p' | head -n 1)
[ "${psess:-0}" -ge 1 ] && [ "${prdma:-0}" -ge 1 ] &&
	pass "vmpeer served $psess peer session(s), $prdma RDMA RETRIEVEs in all" ||
	fail "vmpeer: peer_sessions '$psess', rdma_retrieve_reqs '$prdma'"
# Write-through over verbs, the other way round: chunks stored through vmnode (--l2-write
# through, its default) that vmpeer owns are copied to vmpeer by vmnode's L2 threads; all come
# back byte-exact through vmpeer, its own from its L1 and vmnode's fetched from vmnode.
peer_value() { # key -> first number after it in vmpeer's /api/status
	wget -qO- http://127.0.0.1:9191/api/status | tr ',{' '\n\n' |
		sed -n "s/.*\"$1\": *\([0-9][0-9]*\).*/\1/p" | head -n 1
}
check l2_through ./cachenode-rdma-check l2 $NODE 10.77.0.2:7700 --ids vmnode,vmpeer \
	--store-id vmnode --retrieve-id vmpeer --l2-write through --chunks $L2CHUNKS --seed 7 \
	--wait-ms 120000
fetched=$(sed -n 's/.*"l2_expected": \([0-9][0-9]*\).*/\1/p' l2_through.log | tail -n 1)
tchunks=$(sed -n 's/.*"through_chunks": \([0-9][0-9]*\).*/\1/p' l2_through.log | tail -n 1)
tbytes=$(sed -n 's/.*"through_bytes": \([0-9][0-9]*\).*/\1/p' l2_through.log | tail -n 1)
# vmpeer fetched nothing in the first case: its counters are this case's alone
for k in retrieve_l2_hits fills fetch_hits; do
	v=$(peer_value $k)
	[ -n "$fetched" ] && [ "${v:--1}" -eq "$fetched" ] &&
		pass "vmpeer: L2 $k moved by $v (want $fetched)" ||
		fail "vmpeer: L2 $k is '$v' (want '$fetched')"
done
for k in fill_failed marked_down timeouts; do
	v=$(peer_value $k)
	[ "${v:--1}" -eq 0 ] && pass "vmpeer: L2 $k is 0" || fail "vmpeer: L2 $k is '$v' (want 0)"
done
ctl "l2through ${tchunks:-none} ${tbytes:-none}" ||
	fail "could not reach the node host's control port"
kill -TERM $ppid
wait $ppid
rc=$?
[ $rc -eq 0 ] && pass "L2 peer node stopped cleanly" || {
	fail "L2 peer node exit status $rc"
	cat peer.log
}
ctl done
echo "client_vm: $fails failure(s)"
[ $fails -eq 0 ]
