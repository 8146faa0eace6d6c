#!/usr/bin/env bash
# Cost of --trace-output: the same binary with and without recording, side by side on loopback.
# Each round starts a fresh pair of nodes (alternating which starts first) and measures them
# alternately with cachenode-bench: throughput and the node's own CPU time for the same work.
# Then the producer's cost per record (cachenode-tel-microbench). Prints a table and writes it
# into docs/benchmarks.md between the bench-trace markers (NO_DOC=1: leave the file alone).
#
# Environment: BUILD (default build), ROUNDS (4), CONNS (4), N_LOOKUP (200000 requests),
# N_RETRIEVE (8000), N_STORE (4000), TRACE_DIR (where the trace files go; default a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
ROUNDS=${ROUNDS:-4}
CONNS=${CONNS:-4}
N_LOOKUP=${N_LOOKUP:-200000}
N_RETRIEVE=${N_RETRIEVE:-8000}
N_STORE=${N_STORE:-4000}
NODE=$BUILD/node/cachenode
BENCH=$BUILD/tools/cachenode-bench
work=$(mktemp -d /tmp/cn-bench-trace.XXXXXX)
TRACE_DIR=${TRACE_DIR:-$work}
pids=()

cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

cpu_ticks() { # utime + stime of a process's threads named $2 (rte-worker-*, cn-tel-drain), in ticks
	local sum=0 t
	for t in /proc/"$1"/task/*; do
		case "$(cat "$t/comm")" in
		$2) sum=$((sum + $(awk '{print $14 + $15}' "$t/stat"))) ;;
		esac
	done
	echo "$sum"
}

start_node() { # id, extra args...; sets node_port and node_pid
	local id=$1
	shift
	node_port=$(free_port)
	"$NODE" --listen 127.0.0.1:"$node_port" --node-id "$id" --l1-size 1G --max-chunk 1M \
		--workers 1 --http off "$@" >"$work/$id.log" 2>&1 &
	node_pid=$!
	pids+=($!)
	wait_port "$node_port"
}

workloads=(
	"lookup 32 keys/req|--op lookup --size 4K --keys-per-req 32 --count $N_LOOKUP --depth 16"
	"retrieve 256K|--op retrieve --size 256K --count $N_RETRIEVE --depth 1"
	"store 256K|--op store --size 256K --count $N_STORE --depth 1"
)
results="$work/results.jsonl"
: >"$results"
echo "running $ROUNDS rounds..." >&2
for round in $(seq 1 "$ROUNDS"); do
	first=on
	[ $((round % 2)) -eq 0 ] && first=off
	for mode in $first $([ $first = on ] && echo off || echo on); do
		if [ "$mode" = on ]; then
			start_node "trace-on-$round" --trace-output "$TRACE_DIR/bench-$round.trace"
			on_port=$node_port on_pid=$node_pid
		else
			start_node "trace-off-$round"
			off_port=$node_port off_pid=$node_pid
		fi
	done
	for w in "${workloads[@]}"; do
		label=${w%%|*}
		for mode in on off; do
			if [ "$mode" = on ]; then port=$on_port npid=$on_pid; else port=$off_port npid=$off_pid; fi
			tag="r$round-${label%% *}"
			# shellcheck disable=SC2086
			"$BENCH" --node 127.0.0.1:"$port" ${w#*|} --conns "$CONNS" --count 100 \
				--tag "$tag" >/dev/null 2>&1 || true # the key set is stored here, untimed
			w0=$(cpu_ticks "$npid" 'rte-worker-*')
			d0=$(cpu_ticks "$npid" 'cn-tel-drain')
			# shellcheck disable=SC2086
			out=$("$BENCH" --node 127.0.0.1:"$port" ${w#*|} --conns "$CONNS" --tag "$tag" \
				--json | tail -n 1)
			w1=$(cpu_ticks "$npid" 'rte-worker-*')
			d1=$(cpu_ticks "$npid" 'cn-tel-drain')
			python3 - "$label" "$mode" "$round" "$((w1 - w0))" "$((d1 - d0))" "$out" \
				>>"$results" <<'EOF'
import json, sys
label, mode, rnd, worker, drain, line = sys.argv[1:7]
r = json.loads(line)
print(json.dumps({"label": label, "mode": mode, "round": int(rnd), "worker": int(worker),
                  "drain": int(drain), "req_per_s": r["req_per_s"], "requests": r["count"],
                  "p99_us": r["p99_us"], "errors": r["errors"]}))
EOF
		done
	done
	bytes=$(stat -c %s "$TRACE_DIR/bench-$round.trace" 2>/dev/null || echo 0)
	kill "$on_pid" "$off_pid"
	wait "$on_pid" "$off_pid" 2>/dev/null || true
	echo "{\"label\": \"file\", \"round\": $round, \"bytes\": $bytes}" >>"$results"
	rm -f "$TRACE_DIR/bench-$round.trace"*
done
"$BUILD"/tools/cachenode-tel-microbench --json | tail -n 1 >"$work/micro.json"

python3 - "$results" "$work/micro.json" "$ROUNDS" "$CONNS" <<'EOF' >"$work/table.md"
import json, os, platform, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
micro = json.load(open(sys.argv[2]))
rounds, conns = int(sys.argv[3]), sys.argv[4]
cpu = "unknown"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
hz = os.sysconf("SC_CLK_TCK")
out = [f"Machine: {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}; one worker per node, "
       f"{conns} connections, {rounds} rounds, nodes with and without `--trace-output` measured "
       "alternately. CPU: microseconds per request of the worker thread (the request path) and "
       "of the drain thread (which writes the file), from `/proc/<pid>/task/*/stat`.\n",
       "| workload | requests/s on / off (ratio) | per round | worker us/req on / off | "
       "drain us/req on / off |",
       "|---|---|---|---|---|"]
def us_per_req(rs, key):
    return sum(r[key] for r in rs) / hz * 1e6 / sum(r["requests"] for r in rs)
for label in dict.fromkeys(r["label"] for r in rows if r["label"] != "file"):
    on = [r for r in rows if r["label"] == label and r["mode"] == "on"]
    off = [r for r in rows if r["label"] == label and r["mode"] == "off"]
    mon = sum(r["req_per_s"] for r in on) / len(on)
    moff = sum(r["req_per_s"] for r in off) / len(off)
    per = ", ".join(f"{a['req_per_s'] / b['req_per_s']:.2f}" for a, b in zip(on, off))
    out.append(f"| {label} | {mon:,.0f} / {moff:,.0f} ({mon / moff:.3f}) | {per} | "
               f"{us_per_req(on, 'worker'):.2f} / {us_per_req(off, 'worker'):.2f} | "
               f"{us_per_req(on, 'drain'):.2f} / {us_per_req(off, 'drain'):.2f} |")
files = [r["bytes"] for r in rows if r["label"] == "file"]
out.append(f"\nTrace file per round: {sum(files) / len(files) / 2**20:.1f} MiB on average.\n")
out.append("| producer cost (`cachenode-tel-microbench`) | ns per record |")
out.append("|---|---:|")
out.append(f"| trace record, 1 key (store, retrieve, delete) | {micro['trace_ns_1key']:.1f} |")
out.append(f"| trace record, lookup of 32 keys | {micro['trace_ns_32keys']:.1f} |")
out.append(f"| no `--trace-output` (the branch) | {micro['trace_ns_disabled']:.1f} |")
out.append(f"| for comparison: one telemetry event | {micro['ns_per_event']:.1f} |")
print("\n".join(out))
EOF
cat "$work/table.md"
doc_table bench-trace "$work/table.md" '`scripts/bench-trace.sh`'
