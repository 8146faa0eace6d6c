#!/usr/bin/env bash
# make bench: cachenode against Redis and iperf3, side by side in one run on
# loopback, same sizes and concurrency. Prints the table and writes it into
# docs/benchmarks.md between the bench markers (with the machine and the
# exact commands). Everything it starts, it stops.
#
# Environment: BUILD (default build), BENCH_COUNT_1M / BENCH_COUNT_256K (requests
# per run), CONNS (4), NO_DOC=1 to leave docs/benchmarks.md alone.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
CONNS=${CONNS:-4}
N1M=${BENCH_COUNT_1M:-4000}
N256=${BENCH_COUNT_256K:-12000}
NLOOKUP=${BENCH_COUNT_LOOKUP:-400000}
NODE=$BUILD/node/cachenode
BENCH=$BUILD/tools/cachenode-bench
work=$(mktemp -d /tmp/cn-bench.XXXXXX)
pids=()

cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

# ---- servers ----
cn_port=$(free_port)
"$NODE" --listen 127.0.0.1:"$cn_port" --node-id bench --l1-size 4G --max-chunk 2M \
	--workers 2 --http off >"$work/node.log" 2>&1 &
pids+=($!)
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
	--protected-mode no --io-threads 2 --logfile "$work/redis.log" &
pids+=($!)
iperf_port=$(free_port)
iperf3 -s -B 127.0.0.1 -p "$iperf_port" >"$work/iperf.log" 2>&1 &
pids+=($!)
wait_port "$cn_port"
wait_port "$redis_port"
wait_port "$iperf_port"

results="$work/results.jsonl"
cmds="$work/commands.txt"
: >"$results"
: >"$cmds"

run_cn() { # label, args...
	local label=$1
	shift
	echo "$BENCH --node 127.0.0.1:PORT $*" >>"$cmds"
	local out
	out=$("$BENCH" --node 127.0.0.1:"$cn_port" "$@" --json | tail -n 1)
	python3 - "$label" "$out" >>"$results" <<'EOF'
import json, sys
label, line = sys.argv[1], sys.argv[2]
r = json.loads(line)
print(json.dumps({"label": label, "tool": "cachenode-bench", "ops_per_s": r["ops_per_s"],
                  "req_per_s": r["req_per_s"], "gbytes_per_s": r["gbytes_per_s"],
                  "p50_us": r["p50_us"], "p99_us": r["p99_us"], "p999_us": r.get("p999_us"),
                  "errors": r["errors"]}))
EOF
}

run_redis() { # label, op(set|get), size, count
	local label=$1 op=$2 size=$3 n=$4
	echo "redis-benchmark -p PORT -t $op -d $size -c $CONNS -n $n -r 1000 -P 1 --csv" >>"$cmds"
	redis-benchmark -h 127.0.0.1 -p "$redis_port" -t "$op" -d "$size" -c "$CONNS" -n "$n" \
		-r 1000 -P 1 --csv >"$work/rb.csv" 2>/dev/null
	python3 - "$label" "$size" "$work/rb.csv" >>"$results" <<'EOF'
import csv, json, sys
label, size, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = list(csv.reader(open(path)))
hdr, row = rows[0], rows[1]
d = dict(zip(hdr, row))
rps = float(d["rps"])
print(json.dumps({"label": label, "tool": "redis-benchmark", "ops_per_s": rps, "req_per_s": rps,
                  "gbytes_per_s": rps * size / 1e9, "p50_us": float(d["p50_latency_ms"]) * 1000,
                  "p99_us": float(d["p99_latency_ms"]) * 1000, "p999_us": None, "errors": 0}))
EOF
}

run_iperf() {
	echo "iperf3 -c 127.0.0.1 -p PORT -t 5 -J (single stream)" >>"$cmds"
	iperf3 -c 127.0.0.1 -p "$iperf_port" -t 5 -J >"$work/iperf.json"
	python3 - "$work/iperf.json" >>"$results" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
bps = r["end"]["sum_received"]["bits_per_second"]
print(json.dumps({"label": "loopback TCP, 1 stream", "tool": "iperf3", "ops_per_s": None,
                  "req_per_s": None, "gbytes_per_s": bps / 8 / 1e9, "p50_us": None,
                  "p99_us": None, "p999_us": None, "errors": 0}))
EOF
}

echo "running (this takes a minute or two)..." >&2
run_iperf
for size in 256K 1M; do
	bytes=$([ "$size" = 1M ] && echo 1048576 || echo 262144)
	n=$([ "$size" = 1M ] && echo "$N1M" || echo "$N256")
	run_cn "store $size" --op store --size "$size" --count "$n" --depth 1 --conns "$CONNS"
	run_redis "SET $size" set "$bytes" "$n"
	run_cn "retrieve $size" --op retrieve --size "$size" --count "$n" --depth 1 --conns "$CONNS"
	run_redis "GET $size" get "$bytes" "$n"
done
run_cn "lookup 32 keys/req" --op lookup --size 4K --keys-per-req 32 --count "$NLOOKUP" \
	--depth 16 --conns "$CONNS"

# Telemetry on vs off: the same binary, one instance with --no-telemetry. Each round starts a
# fresh pair, alternating which starts first (the first pre-faults its pool into less fragmented
# memory, which alone moved throughput by tens of percent here), and measures them alternately.
kill "${pids[0]}"
wait "${pids[0]}" 2>/dev/null || true
cpu_ticks() { # utime + stime of a process, in clock ticks
	awk '{print $14 + $15}' "/proc/$1/stat"
}
start_node() { # id, extra args...; sets node_port and node_pid (no subshell: pids are kept)
	local id=$1
	shift
	node_port=$(free_port)
	"$NODE" --listen 127.0.0.1:"$node_port" --node-id "$id" --l1-size 2G --max-chunk 2M \
		--workers 2 --http off "$@" >"$work/$id.log" 2>&1 &
	node_pid=$!
	pids+=($!)
	wait_port "$node_port"
}
for round in 1 2 3 4; do
	if [ $((round % 2)) -eq 1 ]; then
		start_node "tel-on-$round"
		on_port=$node_port on_pid=$node_pid
		start_node "tel-off-$round" --no-telemetry
		off_port=$node_port off_pid=$node_pid
	else
		start_node "tel-off-$round" --no-telemetry
		off_port=$node_port off_pid=$node_pid
		start_node "tel-on-$round"
		on_port=$node_port on_pid=$node_pid
	fi
	for mode in on off; do
		if [ $mode = on ]; then cn_port=$on_port; npid=$on_pid; else cn_port=$off_port; npid=$off_pid; fi
		# the node's own CPU time per request: steadier than throughput on a shared machine
		for w in "retrieve 1M|--op retrieve --size 1M --count $N1M --depth 1" \
			"lookup 32 keys/req|--op lookup --size 4K --keys-per-req 32 --count $NLOOKUP --depth 16"; do
			label=${w%%|*}
			# shellcheck disable=SC2086
			"$BENCH" --node 127.0.0.1:"$cn_port" ${w#*|} --conns "$CONNS" --tag tel \
				--count 100 >/dev/null 2>&1 || true # prefill outside the measurement
			t0=$(cpu_ticks "$npid")
			# shellcheck disable=SC2086
			run_cn "telemetry $mode: $label #$round" ${w#*|} --conns "$CONNS" --tag tel
			t1=$(cpu_ticks "$npid")
			echo "{\"label\": \"cpu $mode: $label #$round\", \"ticks\": $((t1 - t0))}" >>"$work/cpu.jsonl"
		done
	done
	kill "${pids[-1]}" "${pids[-2]}"
	wait "${pids[-1]}" "${pids[-2]}" 2>/dev/null || true
done

# L2 hit vs L1 hit, same run. Two fresh nodes; the --peer list (the same on both) names only P,
# so P owns every key and Q owns none. The key set is stored through P (--prefill-node), then
# retrieved once each through Q: every request is an L2 hit (fetched from P over tcp into Q's
# L1, then served). The same keys retrieved through Q again are L1 hits.
NL2=${BENCH_COUNT_L2:-512}
p_port=$(free_port)
"$NODE" --listen 127.0.0.1:"$p_port" --node-id l2-p --l1-size 2G --max-chunk 2M --workers 2 \
	--http off --peer "l2-p@127.0.0.1:$p_port" >"$work/l2-p.log" 2>&1 &
pids+=($!)
start_node l2-q --peer "l2-p@127.0.0.1:$p_port"
wait_port "$p_port"
cn_port=$node_port
l2args="--op retrieve --size 1M --keyspace $((NL2 / CONNS)) --count $((NL2 / CONNS * CONNS)) --depth 1 --conns $CONNS --tag l2 --verify"
# shellcheck disable=SC2086
run_cn "L2 hit: retrieve 1M from a peer" --prefill-node "127.0.0.1:$p_port" $l2args
# shellcheck disable=SC2086
run_cn "L1 hit: retrieve 1M, same keys" $l2args
kill "${pids[-1]}" "${pids[-2]}"
wait "${pids[-1]}" "${pids[-2]}" 2>/dev/null || true

echo "$BUILD/tools/cachenode-tel-microbench --json" >>"$cmds"
"$BUILD"/tools/cachenode-tel-microbench --json | tail -n 1 >"$work/micro.json"

python3 - "$results" "$cmds" "$BUILD" "$CONNS" "$work/micro.json" "$work/cpu.jsonl" <<'EOF' >"$work/table.md"
import json, subprocess, sys, platform
rows = [json.loads(l) for l in open(sys.argv[1])]
cmds = open(sys.argv[2]).read().strip().splitlines()
by = {r["label"]: r for r in rows}
def f(v, fmt):
    return "-" if v is None else fmt.format(v)
cpu = "unknown"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
import os
mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
out = []
out.append(f"Machine: {os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB, Linux {platform.release()}; "
           f"all on loopback, {sys.argv[4]} connections, one request in flight per connection "
           "(depth 1) unless noted.\n")
out.append("| what | tool | requests/s | GB/s | p50 us | p99 us |")
out.append("|---|---|---:|---:|---:|---:|")
for r in rows:
    if r["label"].startswith("telemetry "):
        continue  # summarised below
    out.append(f"| {r['label']} | {r['tool']} | {f(r['req_per_s'], '{:,.0f}')} | "
               f"{f(r['gbytes_per_s'], '{:.2f}')} | {f(r['p50_us'], '{:.0f}')} | "
               f"{f(r['p99_us'], '{:.0f}')} |")
ip = by.get("loopback TCP, 1 stream")
out.append("\n| target | reached | ratio |")
out.append("|---|---|---:|")
def ratio(a, b, what, target):
    if a in by and b in by and by[b]["gbytes_per_s"]:
        x = by[a]["gbytes_per_s"] / by[b]["gbytes_per_s"]
        out.append(f"| {what} >= {target}x | {by[a]['gbytes_per_s']:.2f} vs {by[b]['gbytes_per_s']:.2f} GB/s | {x:.2f}x |")
ratio("retrieve 1M", "GET 1M", "retrieve 1 MiB vs Redis GET", 1.2)
ratio("store 1M", "SET 1M", "store 1 MiB vs Redis SET", 1.2)
ratio("retrieve 1M", "loopback TCP, 1 stream", "retrieve 1 MiB vs iperf3", 0.8)
ratio("store 1M", "loopback TCP, 1 stream", "store 1 MiB vs iperf3", 0.8)
def tvals(prefix, key):
    return [r[key] for r in rows if r["label"].startswith(prefix)]
for what, key, unit in (("retrieve 1M", "gbytes_per_s", "GB/s"), ("lookup 32 keys/req", "req_per_s", "req/s")):
    on, off = tvals("telemetry on: " + what, key), tvals("telemetry off: " + what, key)
    if on and off and len(on) == len(off):
        per = ", ".join(f"{a/b:.2f}" for a, b in zip(on, off))
        mon, moff = sum(on) / len(on), sum(off) / len(off)
        out.append(f"| telemetry on/off, {what} >= 0.97 | {mon:,.2f} vs {moff:,.2f} {unit}, mean of "
                   f"{len(on)} rounds (per round: {per}) | {mon/moff:.3f} |")
cpu = {}
try:
    for l in open(sys.argv[6]):
        c = json.loads(l)
        cpu[c["label"]] = c["ticks"]
except OSError:
    pass
hz = os.sysconf("SC_CLK_TCK")
for what, n in (("retrieve 1M", None), ("lookup 32 keys/req", None)):
    on = sum(v for k, v in cpu.items() if k.startswith("cpu on: " + what))
    off = sum(v for k, v in cpu.items() if k.startswith("cpu off: " + what))
    reqs = sum(1 for k in cpu if k.startswith("cpu on: " + what))
    if on and off:
        out.append(f"| node CPU per request, telemetry off/on, {what} (1 = free) | "
                   f"{on / hz:.2f} s on vs {off / hz:.2f} s off over {reqs} rounds | {off/on:.3f} |")
try:
    m = json.load(open(sys.argv[5]))
    out.append(f"| event emission <= 30 ns | {m['ns_per_event']:.1f} ns/event enabled, "
               f"{m['ns_per_event_disabled']:.1f} ns disabled | {30/m['ns_per_event']:.2f}x headroom |")
except Exception as ex:
    out.append(f"| event emission <= 30 ns | not measured ({ex}) | - |")
l2, l1 = by.get("L2 hit: retrieve 1M from a peer"), by.get("L1 hit: retrieve 1M, same keys")
if l2 and l1 and l1["gbytes_per_s"]:
    out.append(f"| retrieve 1 MiB, L2 hit (peer, tcp) vs L1 hit | {l2['gbytes_per_s']:.2f} vs "
               f"{l1['gbytes_per_s']:.2f} GB/s, p50 {l2['p50_us']:.0f} vs {l1['p50_us']:.0f} us | "
               f"{l2['gbytes_per_s']/l1['gbytes_per_s']:.2f}x |")
lk = by.get("lookup 32 keys/req")
if lk:
    out.append(f"| lookup, 32 keys/request >= 200,000 req/s | {lk['req_per_s']:,.0f} req/s (depth 16) | "
               f"{lk['req_per_s']/200000:.2f}x |")
out.append("\nCommands (PORT is a free loopback port chosen by the script):\n")
out.append("```")
out.extend(cmds)
out.append("```")
print("\n".join(out))
EOF

cat "$work/table.md"
doc_table bench "$work/table.md" '`make bench`'

# The registry: how fast a node sees a peer's death (its own section of docs/benchmarks.md).
BUILD=$BUILD scripts/bench-registry.sh
