#!/usr/bin/env bash
# The rdma suite (meson test --suite rdma): real verbs on soft-RoCE inside qemu.
# Usage: run-suite.sh CACHE-DIR [cachenode-rdma-bench [cachenode cachenode-rdma-check]]
#   1. one VM, both ends on rxe0: perftest sanity, then the project's verbs tests
#      (tests/rdma/test_verbs.sh) when the verbs build produced cachenode-rdma-bench;
#   2. two VMs (two hosts, one rxe each, a virtual link): RC traffic between the hosts, then
#      the node suite: cachenode serving over verbs on one host, real clients on the other
#      (tests/rdma/node_vm.sh, client_vm.sh), ending with L2 over verbs: a node on each host,
#      one --peer list naming both /verbs, chunks stored through one and RDMA-retrieved through
#      the other, which fetches them from their owner.
# Exit 77 (skipped) only when qemu or the kernel package cannot be had.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=$1
bench=${2:-}
node=${3:-}
check=${4:-}
vm=$here/vm.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$vm" build "$cache" || exit $?

cat >"$work/one.sh" <<'VM'
#!/bin/sh
fail=0
echo "== perftest sanity on rxe0 (server and client on one device)"
ib_write_bw -d rxe0 -x 1 -s 65536 -D 2 >/tmp/s.log 2>&1 &
sleep 1
timeout 60 ib_write_bw -d rxe0 -x 1 -s 65536 -D 2 10.77.0.1 || fail=1
wait
if [ -x /work/test_verbs.sh ]; then
	echo "== project verbs tests"
	/work/test_verbs.sh || fail=1
fi
exit $fail
VM
files=()
if [ -n "$bench" ] && [ -x "$bench" ]; then
	files+=("$bench" "$here/test_verbs.sh")
fi
echo "--- one VM"
VM_TIMEOUT=${VM_TIMEOUT:-600} "$vm" run "$cache" "$work/one.sh" "${files[@]}" || exit $?

cat >"$work/node.sh" <<'VM'
#!/bin/sh
timeout 120 ibv_rc_pingpong -d rxe0 -g 1 -n 50
VM
cat >"$work/client.sh" <<'VM'
#!/bin/sh
for i in 1 2 3 4 5 6 7 8 9 10; do
	timeout 60 ibv_rc_pingpong -d rxe0 -g 1 -n 50 10.77.0.1 && exit 0
	sleep 1
done
exit 1
VM
echo "--- two VMs"
VM_TIMEOUT=${VM_TIMEOUT:-600} "$vm" run2 "$cache" "$work/node.sh" "$work/client.sh" || exit $?
if [ -n "$node" ] && [ -x "$node" ] && [ -n "$check" ] && [ -x "$check" ]; then
	echo "--- two VMs: the node over verbs"
	VM_TIMEOUT=${VM_TIMEOUT:-900} "$vm" run2 "$cache" "$here/node_vm.sh" "$here/client_vm.sh" \
		"$node" "$check" || exit $?
else
	echo "rdma suite: the node suite needs cachenode and cachenode-rdma-check (verbs build)"
	exit 1
fi
echo "rdma suite: all passed"
