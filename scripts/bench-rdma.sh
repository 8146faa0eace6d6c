#!/usr/bin/env bash
# make bench-rdma: in one soft-RoCE VM boot, perftest and cachenode-rdma-bench side by side on
# the same rxe device (tests/rdma/bench-rdma.sh runs inside the VM and prints the table).
# Writes the table into docs/benchmarks.md between the bench-rdma markers (NO_DOC=1: don't).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
bench=$BUILD/tools/cachenode-rdma-bench
[ -x "$bench" ] || { echo "no $bench: the build has no RDMA support (libibverbs/librdmacm)" >&2; exit 1; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
VM_TIMEOUT=${VM_TIMEOUT:-900} tests/rdma/vm.sh run "$BUILD/tests/rdma-vm" tests/rdma/bench-rdma.sh \
	"$bench" "$BUILD/node/cachenode" "$BUILD/tools/cachenode-bench" | tee "$out"
if [ -z "${NO_DOC:-}" ]; then
	python3 - docs/benchmarks.md "$out" <<'PY'
import sys, datetime, re
doc, raw = sys.argv[1], open(sys.argv[2]).read()
lines = raw.splitlines()
start = next(i for i, l in enumerate(lines) if l.startswith("=== perftest vs"))
end = next(i for i, l in enumerate(lines) if l.startswith("bench-rdma:"))
cmds = ["+ " + l.split("+ ", 1)[1] for l in lines
        if l.startswith("+ ") or (l.startswith("Booting") and "+ " in l)]
table = "```\n" + "\n".join(lines[start:end + 1]) + "\n```"
if cmds:
    table += "\n\nCommands run in the VM:\n\n```\n" + "\n".join(c[2:] for c in cmds) + "\n```"
text = open(doc).read()
b, e = "<!-- bench-rdma:begin -->", "<!-- bench-rdma:end -->"
if b not in text:
    text += f"\n## RDMA on soft-RoCE (`make bench-rdma`)\n\n{b}\n{e}\n"
head, rest = text.split(b, 1)
_, tail = rest.split(e, 1)
stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
open(doc, "w").write(f"{head}{b}\n_Last run: {stamp}; soft-RoCE (rdma_rxe) in a qemu TCG VM, "
                     f"2 vCPUs, both ends on one rxe device: absolute figures mean little, the "
                     f"ratios are the result._\n\n{table}\n{e}{tail}")
PY
fi
