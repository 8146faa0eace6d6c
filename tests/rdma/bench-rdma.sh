#!/bin/sh
# perftest vs cachenode, side by side in one VM boot: the raw verbs primitives
# (cachenode-rdma-bench) and the node itself over the verbs transport (cachenode +
# cachenode-bench --transport verbs, chunk-level store and retrieve). Runs INSIDE the VM of
# tests/rdma/vm.sh (busybox sh), in /work:
#
#   VM_TIMEOUT=900 tests/rdma/vm.sh run CACHE tests/rdma/bench-rdma.sh \
#       build/tools/cachenode-rdma-bench build/node/cachenode build/tools/cachenode-bench
#
# Chunk level: retrieve (the node RDMA-WRITEs each chunk into the client's registered buffer)
# is compared with ib_write_bw, store (the node RDMA-READs it) with ib_read_bw, same size, one
# connection (one QP), with 1 and with 16 requests in flight (CHUNK_DEPTHS); each row's perftest
# figure is taken right before it.
#
# Soft-RoCE under software emulation: absolute numbers mean nothing, the ratios do. Bandwidth
# compares BW average (MB/s, 2^20), latency compares t_typical (median, usec) of a READ round
# trip (ib_read_lat). Both sides: device rxe0, GID index 1 (10.77.0.1), server and client in the
# initial namespace (rxe on 6.1 is not namespace aware), busy polling, tx depth 128.
# Environment: BW_ITERS_64K, BW_ITERS_1M, LAT_ITERS to change the iteration counts.
BENCH=${BENCH:-./cachenode-rdma-bench}
DEV=${DEV:-rxe0}
GID=${GID:-1}
ADDR=${ADDR:-10.77.0.1}
PORT=${PORT:-7701}
BW_ITERS_64K=${BW_ITERS_64K:-3000}
BW_ITERS_1M=${BW_ITERS_1M:-300}
LAT_ITERS=${LAT_ITERS:-3000}
CHUNK_DEPTHS=${CHUNK_DEPTHS:-1 16}
CHUNK_SECS=${CHUNK_SECS:-8}
T=/usr/bin/timeout
fails=0
: >table.txt

# perftest: server in the background, client against it; print the client's value line.
perftest() { # tool args...
	tool=$1
	shift
	echo "+ $tool -d $DEV -x $GID $* (server) / $tool -d $DEV -x $GID $* $ADDR (client)" >&2
	$T 120 "$tool" -d "$DEV" -x "$GID" "$@" >pt_server.log 2>&1 &
	ps=$!
	sleep 1
	$T 120 "$tool" -d "$DEV" -x "$GID" "$@" "$ADDR" >pt_client.log 2>&1
	prc=$?
	wait $ps
	if [ $prc -ne 0 ]; then
		cat pt_client.log pt_server.log >&2
		fails=$((fails + 1))
	fi
	grep -A 1 '#bytes' pt_client.log | tail -n 1
}

# ours: against the server started below; print the JSON line.
ours() { # args...
	echo "+ $BENCH -d $DEV --port $PORT $* --json $ADDR" >&2
	$T 120 "$BENCH" -d "$DEV" --port "$PORT" "$@" --json "$ADDR" >ours.log 2>&1
	orc=$?
	if [ $orc -ne 0 ]; then
		cat ours.log >&2
		fails=$((fails + 1))
	fi
	grep -v '^{' ours.log | grep -A 1 '#bytes' | tail -n 1 >&2
	tail -n 1 ours.log
}

jnum() { # json key
	printf '%s\n' "$1" | sed -n -E "s/.*\"$2\": ([0-9.]+).*/\1/p"
}

row() { # name perftest ours
	r=$(awk -v a="$2" -v b="$3" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", b / a; else print "n/a" }')
	printf '%-26s %12s %12s %8s\n' "$1" "$2" "$3" "$r" | tee -a table.txt
}

$BENCH --server -d "$DEV" --port "$PORT" >server.log 2>&1 &
srv=$!
sleep 1

for op in write read; do
	for size in 65536 1048576; do
		[ $size -eq 65536 ] && n=$BW_ITERS_64K || n=$BW_ITERS_1M
		line=$(perftest ib_${op}_bw -s $size -n $n)
		echo "perftest: $line"
		pt=$(echo "$line" | awk '{print $4}')
		j=$(ours --raw $op --size $size --iters $n)
		echo "ours:     $j"
		row "${op}_bw ${size}B MB/s" "$pt" "$(jnum "$j" bw_avg_mbs)"
	done
done
for size in 2 64; do
	line=$(perftest ib_read_lat -s $size -n $LAT_ITERS)
	echo "perftest: $line"
	pt=$(echo "$line" | awk '{print $5}')
	pa=$(echo "$line" | awk '{print $6}')
	j=$(ours --raw read --lat --size $size --iters $LAT_ITERS)
	echo "ours:     $j"
	row "read_lat ${size}B typ us" "$pt" "$(jnum "$j" t_typical_us)"
	row "read_lat ${size}B avg us" "$pa" "$(jnum "$j" t_avg_us)"
done

kill $srv
wait $srv 2>/dev/null

# One chunk-level run, paired with the perftest run it is compared with, taken just before it
# (same size, same moment: machine noise then hits both alike): the node's bandwidth in MB/s
# (2^20) against ib_write_bw (retrieve: the node RDMA-WRITEs) or ib_read_bw (store: it READs).
chunk_row() { # op size depth
	[ "$1" = retrieve ] && pt_tool=ib_write_bw || pt_tool=ib_read_bw
	[ "$2" -eq 65536 ] && n=$BW_ITERS_64K || n=$BW_ITERS_1M
	line=$(perftest $pt_tool -s "$2" -n "$n")
	echo "perftest: $line"
	pt=$(echo "$line" | awk '{print $4}')
	echo "+ cachenode-bench --transport verbs --rdma-dev $DEV --node $ADDR:7700" \
		"--op $1 --size $2 --depth $3 --duration $CHUNK_SECS --json" >&2
	$T 120 ./cachenode-bench --transport verbs --rdma-dev "$DEV" --node "$ADDR:7700" \
		--op "$1" --size "$2" --depth "$3" --duration "$CHUNK_SECS" --json >chunk.log 2>&1
	crc=$?
	j=$(tail -n 1 chunk.log)
	echo "ours:     $j"
	if [ $crc -ne 0 ] || ! printf '%s\n' "$j" | grep -q '"transport": "verbs"'; then
		cat chunk.log node.log >&2
		fails=$((fails + 1))
	fi
	mbs=$(awk -v g="$(jnum "$j" gbytes_per_s)" 'BEGIN { printf "%.2f", g * 1e9 / 1048576 }')
	row "$1 ${2}B d$3 MB/s" "$pt" "$mbs"
}

# The node over verbs on the same device: chunk-level bandwidth against perftest's.
if [ -x ./cachenode ] && [ -x ./cachenode-bench ]; then
	echo "+ cachenode --listen $ADDR:7700 --transport verbs --rdma-dev $DEV --l1-size 512M" \
		"--max-chunk 2M --workers 1 --http off" >&2
	./cachenode --listen "$ADDR:7700" --transport verbs --rdma-dev "$DEV" --l1-size 512M \
		--max-chunk 2M --workers 1 --http off >node.log 2>&1 &
	nd=$!
	i=0
	while ! grep -q 'serving on' node.log && [ $i -lt 300 ]; do
		i=$((i + 1))
		sleep 0.1
	done
	for size in 65536 1048576; do
		for depth in $CHUNK_DEPTHS; do
			for op in retrieve store; do
				chunk_row $op $size $depth
			done
		done
	done
	kill $nd
	wait $nd || { cat node.log >&2; fails=$((fails + 1)); }
fi
echo
echo "=== perftest vs cachenode on $DEV (soft-RoCE, emulated: compare ratios) ==="
printf '%-26s %12s %12s %8s\n' "test" "perftest" "ours" "ours/pt"
cat table.txt
echo "bench-rdma: $fails failed run(s)"
[ $fails -eq 0 ]
