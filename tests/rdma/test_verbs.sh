#!/bin/sh
# The verbs primitives on soft-RoCE. Runs INSIDE the VM of tests/rdma/vm.sh (busybox sh, no
# python), in /work, with cachenode-rdma-bench copied there:
#
#   tests/rdma/vm.sh run CACHE tests/rdma/test_verbs.sh build/tools/cachenode-rdma-bench
#
# One server (rxe0, 10.77.0.1) serves every client in turn: raw WRITE/READ bandwidth (busy and
# event-driven polling) and latency, data integrity (--verify), a READ with a wrong rkey (must
# fail with -EACCES), then --verify again: the server must have survived the broken connection.
# rxe on kernel 6.1 is not network-namespace aware: client and server both use rxe0 in the
# initial namespace. Also: a waiter with an open, idle connection uses no CPU; a client killed
# mid-run and a connect to a port nobody listens on. Exit 0 when every case passed.
BENCH=${BENCH:-./cachenode-rdma-bench}
DEV=${DEV:-rxe0}
ADDR=${ADDR:-10.77.0.1}
PORT=${PORT:-7701}
NCLIENTS=10
fails=0
T=/usr/bin/timeout

pass() { echo "PASS: $*"; }
fail() {
	echo "FAIL: $*"
	fails=$((fails + 1))
}

# A flat JSON object of "key": number|string|true|false pairs (what the bench prints).
json_ok() { # line
	rest=$(printf '%s\n' "$1" | sed -n 's/^{\(.*\)}$/\1/p' |
		sed -E 's/"[a-z0-9_]+": ("[^"]*"|-?[0-9]+(\.[0-9]+)?|true|false)(, |$)//g')
	printf '%s\n' "$1" | grep -q '^{.*}$' && [ -z "$rest" ]
}

# Run a client: case name, then the bench arguments (before ADDR). Output in $name.log.
client() { # name args...
	name=$1
	shift
	$T 120 "$BENCH" -d "$DEV" --port "$PORT" "$@" "$ADDR" >"$name.log" 2>&1
	rc=$?
	cat "$name.log"
	last=$(tail -n 1 "$name.log")
	return $rc
}

check_json() { # name key
	if [ $rc -ne 0 ]; then
		fail "$1: exit status $rc"
	elif ! json_ok "$last"; then
		fail "$1: last line is not a JSON object: $last"
	elif ! printf '%s\n' "$last" | grep -Eq "\"$2\": [0-9]+(\.[0-9]+)?"; then
		fail "$1: no numeric $2 in $last"
	else
		pass "$1 ($2 $(printf '%s\n' "$last" | sed -E "s/.*\"$2\": ([0-9.]+).*/\1/"))"
	fi
}

cpu_ticks() { # pid -> utime + stime
	sed -E 's/^.*\) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# host-side sanity: the tool exists and sees the device
$BENCH --probe -d "$DEV" || {
	echo "FAIL: $DEV is not usable"
	exit 1
}

$BENCH --server -d "$DEV" --port "$PORT" --clients $NCLIENTS >server.log 2>&1 &
srv=$!
i=0
while ! grep -q '^listening' server.log 2>/dev/null; do
	i=$((i + 1))
	if [ $i -gt 100 ] || ! kill -0 $srv 2>/dev/null; then
		cat server.log
		echo "FAIL: the server did not start"
		exit 1
	fi
	sleep 0.1
done

# An idle server (blocked in accept) must use no CPU.
t0=$(cpu_ticks $srv)
sleep 2
t1=$(cpu_ticks $srv)
if [ $((t1 - t0)) -le 2 ]; then
	pass "idle server used $((t1 - t0)) ticks in 2 s"
else
	fail "idle server used $((t1 - t0)) ticks in 2 s (busy waiting?)"
fi

client write_bw --raw write --size 64K --iters 1000 --json
check_json write_bw bw_avg_mbs

# connected and idle for 3 s: both ends sit in cn_verbs_poll() (the server waits for a message)
$BENCH -d "$DEV" --port "$PORT" --raw write --iters 10 --hold 3000 "$ADDR" >hold.log 2>&1 &
cl=$!
i=0
while ! grep -q '^connected' hold.log 2>/dev/null && [ $i -lt 100 ]; do
	i=$((i + 1))
	sleep 0.1
done
t0=$(cpu_ticks $srv)
sleep 2
t1=$(cpu_ticks $srv)
wait $cl
hrc=$?
if [ $hrc -eq 0 ] && [ $((t1 - t0)) -le 2 ]; then
	pass "server waiting on an idle connection used $((t1 - t0)) ticks in 2 s"
else
	cat hold.log
	fail "idle connection: client exit $hrc, server used $((t1 - t0)) ticks in 2 s"
fi

# a client killed in the middle of a run: the server must notice and go on
$T -s KILL 2 "$BENCH" -d "$DEV" --port "$PORT" --raw write --size 64K --iters 1000000 \
	"$ADDR" >killed.log 2>&1
rc=$?
[ $rc -eq 137 ] && pass "client killed mid-run" || fail "killed client: exit $rc"

# nobody listens there: refused, quickly
$T 20 "$BENCH" -d "$DEV" --port $((PORT + 1)) --raw write "$ADDR" >refused.log 2>&1
rc=$?
if [ $rc -eq 1 ] && grep -q 'refused' refused.log; then
	pass "connect to a closed port: $(cat refused.log)"
else
	cat refused.log
	fail "connect to a closed port: exit $rc"
fi
client read_bw --raw read --size 64K --iters 1000 --json
check_json read_bw bw_avg_mbs
client write_bw_event --raw write --size 64K --iters 1000 --event --json
check_json write_bw_event bw_avg_mbs
client write_lat --raw write --lat --size 64 --iters 500 --json
check_json write_lat t_typical_us
client read_lat --raw read --lat --size 2 --iters 500 --json
check_json read_lat t_typical_us

client verify --verify --size 1M --json
if [ $rc -eq 0 ] && json_ok "$last" && printf '%s\n' "$last" | grep -q '"ok": true'; then
	pass "verify 1 MiB: READ and WRITE bytes equal"
else
	fail "verify 1 MiB (exit $rc)"
fi

client bad_rkey --bad-rkey
if [ $rc -eq 0 ] && grep -q 'remote access error detected' bad_rkey.log; then
	pass "READ with a wrong rkey completed with -EACCES"
else
	fail "bad rkey (exit $rc)"
fi

# the server survived the broken connection and serves the next client (odd size: tail bytes)
client verify_after --verify --size 100003 --json
if [ $rc -eq 0 ] && printf '%s\n' "$last" | grep -q '"ok": true'; then
	pass "verify after the access error: the server still serves"
else
	fail "verify after the access error (exit $rc)"
fi

# the server exits 0 after its last client; give it a few seconds
i=0
while kill -0 $srv 2>/dev/null && [ $i -lt 100 ]; do
	i=$((i + 1))
	sleep 0.1
done
if kill -0 $srv 2>/dev/null; then
	kill $srv
	fail "the server did not exit after $NCLIENTS clients"
fi
wait $srv
src=$?
echo "--- server log"
cat server.log
if grep -q 'connection ended' server.log; then
	pass "server reported the broken connection: $(grep 'connection ended' server.log | head -n 1)"
fi
[ $src -eq 0 ] && pass "server exit status 0" || fail "server exit status $src"

echo "test_verbs: $fails failure(s)"
[ $fails -eq 0 ]
