#!/usr/bin/env bash
# Peer death detection (part of make bench): how long after a node dies (SIGKILL) a peer's
# registry snapshot no longer lists it. Two nodes and a redis-server on loopback ports; each
# round (re)starts node B, waits until node A lists it, kills B at a random point of its
# heartbeat period, and takes the moment A's snapshot changed (the status tree's
# components.registry.membership_changed_at_ms, A's own clock, so polling does not count).
# Target: <= 3 heartbeats. Prints a table and writes it into docs/benchmarks.md between the
# bench-registry markers (NO_DOC=1: leave the doc alone).
#
# Environment: BUILD (build), ROUNDS (8), HEARTBEAT (1s).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

BUILD=${BUILD:-build}
ROUNDS=${ROUNDS:-8}
HEARTBEAT=${HEARTBEAT:-1s}
work=$(mktemp -d /tmp/cn-bench-reg.XXXXXX)
trap 'rm -rf "$work"' EXIT

python3 - "$BUILD" "$ROUNDS" "$HEARTBEAT" "$work" >"$work/table.md" <<'EOF'
import json, os, random, re, signal, socket, statistics, subprocess, sys, time, urllib.request

build, rounds, hb_arg, work = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
m = re.fullmatch(r"(\d+)(ms|s)?", hb_arg)
hb = int(m.group(1)) * (1 if m.group(2) == "ms" else 1000)
node = os.path.join(build, "node", "cachenode")
procs = []

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def now_ms():
    return int(time.time() * 1000)

def status(http):
    with urllib.request.urlopen(f"http://{http}/api/status", timeout=5) as r:
        return json.load(r)

def start(node_id, redis_url):
    http = f"127.0.0.1:{free_port()}"
    log = open(os.path.join(work, f"{node_id}.log"), "a")
    p = subprocess.Popen([node, "--listen", f"127.0.0.1:{free_port()}", "--http", http,
                          "--node-id", node_id, "--l1-size", "64M", "--max-chunk", "1M",
                          "--transport", "tcp", "--redis", redis_url, "--cluster", "bench",
                          "--heartbeat", hb_arg], stdout=log, stderr=log)
    procs.append(p)
    for _ in range(300):
        try:
            status(http)
            return p, http
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{node_id} did not start (see {log.name})")

def peers(http):
    return [q["node_id"] for q in status(http)["components"]["registry"]["peers"]]

try:
    rport = free_port()
    procs.append(subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                                   "--save", "", "--appendonly", "no", "--logfile",
                                   os.path.join(work, "redis.log")]))
    url = f"redis://127.0.0.1:{rport}"
    time.sleep(0.5)
    a, a_http = start("bench-a", url)
    results = []
    for i in range(rounds):
        b, _ = start("bench-b", url)
        t = time.time()
        while "bench-b" not in peers(a_http):
            if time.time() - t > 10 * hb / 1000:
                raise SystemExit("node a never listed node b")
            time.sleep(0.02)
        time.sleep(random.uniform(hb, 2 * hb) / 1000)  # a random point of b's heartbeat
        t_kill = now_ms()
        b.send_signal(signal.SIGKILL)
        b.wait()
        while "bench-b" in peers(a_http):
            if now_ms() - t_kill > 10 * hb:
                raise SystemExit("node a never dropped node b")
            time.sleep(0.02)
        changed = status(a_http)["components"]["registry"]["membership_changed_at_ms"]
        results.append(changed - t_kill)
    beats = [r / hb for r in results]
    print(f"{rounds} rounds, --heartbeat {hb_arg}; kill at a random point of the victim's heartbeat "
          f"period; detection = when the peer's snapshot changed (its status tree's "
          f"`membership_changed_at_ms`) minus the SIGKILL.\n")
    print("| what | median | min | max | target | reached |")
    print("|---|---:|---:|---:|---:|---|")
    print(f"| peer death detection, ms | {statistics.median(results):.0f} | {min(results)} | "
          f"{max(results)} | {3 * hb} | |")
    print(f"| peer death detection, heartbeats | {statistics.median(beats):.2f} | {min(beats):.2f} | "
          f"{max(beats):.2f} | 3 | {'yes' if max(beats) <= 3 else 'no'} |")
    print(f"\nPer round (ms): {', '.join(str(r) for r in results)}.\n")
    print("Command: `scripts/bench-registry.sh` (`ROUNDS=8 HEARTBEAT=1s`; part of `make bench`).")
finally:
    for p in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
EOF

cat "$work/table.md"
doc_table bench-registry "$work/table.md" '`make bench`'
