#!/usr/bin/env bash
# Install the Debian packages a target needs, only those missing; silent when
# nothing is missing. Usage: scripts/install-deps.sh build|test|bench|cluster
set -euo pipefail

build=(meson ninja-build pkg-config gcc libc6-dev libdpdk-dev libjansson-dev libcmocka-dev libmicrohttpd-dev
	libhiredis-dev)
test=(dpdk-dev python3 procps prometheus curl file qemu-system-x86 busybox-static rdma-core ibverbs-utils
	ibverbs-providers libibverbs-dev librdmacm-dev rdmacm-utils perftest iproute2 kmod cpio xz-utils
	redis-server redis-tools python3-yaml)
# dpdk-dev ships dpdk-telemetry.py, prometheus promtool; qemu, busybox, rdma-core, perftest: tests/rdma;
# redis-server: the registry tests; python3-yaml: the deploy/ checks
bench=(redis-server redis-tools iperf3 python3)
cluster=(redis-server redis-tools iproute2) # make cluster

want=("${build[@]}")
case "${1:-build}" in
build) ;;
test) want+=("${test[@]}") ;;
bench) want+=("${test[@]}" "${bench[@]}") ;;
cluster) want+=("${cluster[@]}") ;;
*) echo "usage: $0 build|test|bench|cluster" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
