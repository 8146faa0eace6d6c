#!/usr/bin/env bash
# Real RDMA verbs on a machine without an RDMA NIC: soft-RoCE (rdma_rxe) inside a small qemu VM
# booted from Debian's stock kernel package.
#
#   vm.sh build CACHE            build (once) CACHE/vmlinux and CACHE/base.cpio.gz
#   vm.sh run CACHE SCRIPT [FILE...]
#                                boot the VM, run SCRIPT inside it with FILEs (binaries get their
#                                shared libraries too) and exit with SCRIPT's status
#   vm.sh run2 CACHE NODE_SCRIPT CLIENT_SCRIPT [FILE...]
#                                two VMs, each a host with its own rxe0, joined by a virtual link:
#                                the node (10.77.0.1) runs NODE_SCRIPT, the client (10.77.0.2)
#                                CLIENT_SCRIPT; exit with the first non-zero status
#
# Inside the VM: two "hosts" = the initial network namespace ("node", 10.77.0.1, rxe0) and the
# namespace "client" (10.77.0.2, rxe1), joined by a veth pair; no other network exists (qemu has
# no network device). SCRIPT runs in the node namespace with /work as its directory; run a command
# on the client host with `on-client CMD` (busybox's own `ip` shadows /usr/bin/ip in scripts).
#
# Exit status: SCRIPT's, 77 when qemu or the kernel package cannot be had (skip), 99 when the VM
# did not report a result (boot failure, timeout).
set -euo pipefail

KVER_PKG=${KVER_PKG:-}
VM_TIMEOUT=${VM_TIMEOUT:-600}
MODS=(crc32_generic udp_tunnel ip6_udp_tunnel ib_core ib_uverbs rdma_rxe veth configfs ib_cm
	iw_cm rdma_cm rdma_ucm virtio_pci virtio_net)
BINS=(/usr/bin/ip /usr/bin/rdma /usr/bin/ibv_devices /usr/bin/ibv_devinfo /usr/bin/ibv_rc_pingpong
	/usr/bin/ib_write_bw /usr/bin/ib_read_bw /usr/bin/ib_read_lat /usr/bin/ib_write_lat
	/usr/bin/rping /usr/bin/timeout /usr/bin/cmp /usr/bin/sha256sum)

die() {
	echo "vm.sh: $*" >&2
	exit 99
}

skip() {
	echo "vm.sh: SKIP: $*" >&2
	exit 77
}

# Copy a file into the image tree at the same path, with its shared-library closure.
add_with_libs() { # root file
	local root=$1 f=$2 lib
	mkdir -p "$root$(dirname "$f")"
	cp -L "$f" "$root$f"
	for lib in $(ldd "$f" 2>/dev/null | awk '/=> \//{print $3} /^\t\/lib/{print $1}'); do
		if [ ! -e "$root$lib" ]; then
			mkdir -p "$root$(dirname "$lib")"
			cp -L "$lib" "$root$lib"
		fi
	done
}

build() {
	local cache=$1 kpkg kver root
	mkdir -p "$cache"
	cache=$(cd "$cache" && pwd)
	if [ -s "$cache/vmlinux" ] && [ -s "$cache/base.cpio.gz" ]; then
		return 0
	fi
	command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 is not installed"
	kpkg=${KVER_PKG:-$(apt-cache depends linux-image-amd64 2>/dev/null |
		awk '/Depends: linux-image-[0-9]/{print $2; exit}')}
	[ -n "$kpkg" ] || skip "no linux-image package known to apt (run apt-get update)"
	kver=${kpkg#linux-image-}
	rm -rf "$cache/k" "$cache/root"
	mkdir -p "$cache/k"
	(cd "$cache/k" && apt-get download "$kpkg" >/dev/null 2>&1) ||
		skip "cannot download $kpkg"
	dpkg -x "$cache"/k/*.deb "$cache/k/root"
	depmod -b "$cache/k/root" "$kver"

	# The bzImage's payload is xz: booting the uncompressed ELF saves seconds under emulation.
	python3 - "$cache/k/root/boot/vmlinuz-$kver" "$cache/vmlinux.xz" <<'EOF'
import sys
data = open(sys.argv[1], "rb").read()
off = data.find(b"\xfd7zXZ\x00")
if off < 0:
    sys.exit("no xz payload in " + sys.argv[1])
open(sys.argv[2], "wb").write(data[off:])
EOF
	xz -dc --single-stream "$cache/vmlinux.xz" >"$cache/vmlinux.tmp" 2>/dev/null || true
	rm -f "$cache/vmlinux.xz"
	[ -s "$cache/vmlinux.tmp" ] || die "could not extract vmlinux"
	mv "$cache/vmlinux.tmp" "$cache/vmlinux"

	root=$cache/root
	mkdir -p "$root"/{bin,sbin,dev,proc,sys,run,tmp,etc,work,lib/modules,usr/bin,var}
	ln -s /run "$root/var/run"
	cp /bin/busybox "$root/bin/busybox"
	for b in "${BINS[@]}"; do
		[ -x "$b" ] || skip "$b is missing (install rdma-core ibverbs-utils perftest rdmacm-utils)"
		add_with_libs "$root" "$b"
	done
	# The rxe provider is loaded with dlopen: ldd cannot see it, nor libgcc_s (thread exit).
	add_with_libs "$root" /usr/lib/x86_64-linux-gnu/libibverbs/librxe-rdmav34.so
	mkdir -p "$root/etc/libibverbs.d"
	cp /etc/libibverbs.d/rxe.driver "$root/etc/libibverbs.d/"
	add_with_libs "$root" "$(readlink -f /lib/x86_64-linux-gnu/libgcc_s.so.1)"
	cp -L /lib/x86_64-linux-gnu/libgcc_s.so.1 "$root/lib/x86_64-linux-gnu/"
	# Modules in load order (dependencies first), as insmod lines.
	: >"$root/etc/modules.order"
	for m in "${MODS[@]}"; do
		modprobe -d "$cache/k/root" -S "$kver" --show-depends "$m" 2>/dev/null |
			awk '$1 == "insmod" {print $2}' | while read -r ko; do
			rel=${ko#"$cache/k/root"}
			if ! grep -qx "$rel" "$root/etc/modules.order"; then
				mkdir -p "$root$(dirname "$rel")"
				cp "$ko" "$root$rel"
				echo "$rel" >>"$root/etc/modules.order"
			fi
		done
	done
	grep -q rdma_rxe "$root/etc/modules.order" || die "rdma_rxe not found in $kpkg"
	cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/bin:/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
mount -t configfs configfs /sys/kernel/config 2>/dev/null
while read -r ko; do insmod "$ko" || echo "insmod $ko failed"; done </etc/modules.order
/usr/bin/ip link set lo up
role=$(sed -n 's/.*cn.role=\([a-z]*\).*/\1/p' /proc/cmdline)
if [ -n "$role" ]; then
	# two VMs: this one is a whole host, eth0 is the link to the other VM
	[ "$role" = node ] && addr=10.77.0.1 || addr=10.77.0.2
	echo 0 >/proc/sys/net/ipv6/conf/eth0/accept_dad
	/usr/bin/ip addr add $addr/24 dev eth0
	/usr/bin/ip link set eth0 up
	for i in 1 2 3 4 5 6 7 8 9 10; do
		[ "$(cat /sys/class/net/eth0/operstate)" = up ] && break
		sleep 0.2
	done
	/usr/bin/rdma link add rxe0 type rxe netdev eth0
	cd /work
	if [ -x /work/$role.sh ]; then /work/$role.sh; rc=$?; else echo "no /work/$role.sh"; rc=98; fi
	echo "CN-RESULT: $rc"
	sync
	poweroff -f
fi
/usr/bin/ip netns add client
/usr/bin/ip netns exec client /usr/bin/ip link set lo up
/usr/bin/ip link add veth0 type veth peer name veth1
/usr/bin/ip link set veth1 netns client
echo 0 >/proc/sys/net/ipv6/conf/veth0/accept_dad
/usr/bin/ip netns exec client sh -c 'echo 0 >/proc/sys/net/ipv6/conf/veth1/accept_dad'
/usr/bin/ip addr add 10.77.0.1/24 dev veth0
/usr/bin/ip netns exec client /usr/bin/ip addr add 10.77.0.2/24 dev veth1
/usr/bin/ip link set veth0 up
/usr/bin/ip netns exec client /usr/bin/ip link set veth1 up
for i in 1 2 3 4 5 6 7 8 9 10; do
	s0=$(cat /sys/class/net/veth0/operstate)
	[ "$s0" = up ] && break
	sleep 0.2
done
/usr/bin/rdma link add rxe0 type rxe netdev veth0
/usr/bin/ip netns exec client /usr/bin/rdma link add rxe1 type rxe netdev veth1
cd /work
if [ -x /work/run.sh ]; then
	/work/run.sh
	rc=$?
else
	echo "no /work/run.sh"
	rc=98
fi
echo "CN-RESULT: $rc"
sync
poweroff -f
EOF
	chmod +x "$root/init"
	# busybox ash runs its own applets (a smaller `ip`) before $PATH: give scripts a helper
	printf '#!/bin/sh\nexec /usr/bin/ip netns exec client "$@"\n' >"$root/usr/bin/on-client"
	chmod +x "$root/usr/bin/on-client"
	(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$cache/base.cpio.gz.tmp"
	mv "$cache/base.cpio.gz.tmp" "$cache/base.cpio.gz"
	rm -rf "$cache/k" "$root"
}

run() {
	local cache=$1 script=$2 extra out rc
	shift 2
	build "$cache"
	cache=$(cd "$cache" && pwd)
	extra=$(mktemp -d)
	out=$(mktemp)
	mkdir -p "$extra/work"
	cp "$script" "$extra/work/run.sh"
	chmod +x "$extra/work/run.sh"
	for f in "$@"; do
		if [ -x "$f" ] && file -L "$f" 2>/dev/null | grep -q ELF || ldd "$f" >/dev/null 2>&1; then
			add_with_libs "$extra" "$(readlink -f "$f")"
			cp -L "$f" "$extra/work/$(basename "$f")"
		else
			cp -L "$f" "$extra/work/$(basename "$f")"
		fi
	done
	(cd "$extra" && find . | cpio -o -H newc --quiet | gzip -1) >"$extra.cpio.gz"
	cat "$cache/base.cpio.gz" "$extra.cpio.gz" >"$extra.initrd"
	set +e
	timeout "$VM_TIMEOUT" qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp 2 -m 1536 \
		-nographic -nodefaults -serial stdio -no-reboot -kernel "$cache/vmlinux" \
		-initrd "$extra.initrd" -append "console=ttyS0 quiet panic=-1" </dev/null |
		tr -d '\r' | tee "$out"
	set -e
	rc=$(sed -n 's/^CN-RESULT: \([0-9]*\)$/\1/p' "$out" | tail -n 1)
	rm -rf "$extra" "$extra.cpio.gz" "$extra.initrd" "$out"
	[ -n "$rc" ] || die "the VM reported no result (boot failure or timeout after ${VM_TIMEOUT}s)"
	return "$rc"
}

# Two VMs, "node" (10.77.0.1) and "client" (10.77.0.2), each one host with its own rxe0 on a
# virtio NIC, joined by a qemu socket netdev over a loopback TCP port.
run2() {
	local cache=$1 nscript=$2 cscript=$3 extra out_n out_c rc_n rc_c port pid_n
	shift 3
	build "$cache"
	cache=$(cd "$cache" && pwd)
	extra=$(mktemp -d)
	out_n=$(mktemp)
	out_c=$(mktemp)
	mkdir -p "$extra/work"
	cp "$nscript" "$extra/work/node.sh"
	cp "$cscript" "$extra/work/client.sh"
	chmod +x "$extra/work/node.sh" "$extra/work/client.sh"
	for f in "$@"; do
		if ldd "$f" >/dev/null 2>&1; then
			add_with_libs "$extra" "$(readlink -f "$f")"
		fi
		cp -L "$f" "$extra/work/$(basename "$f")"
	done
	(cd "$extra" && find . | cpio -o -H newc --quiet | gzip -1) >"$extra.cpio.gz"
	cat "$cache/base.cpio.gz" "$extra.cpio.gz" >"$extra.initrd"
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	set +e
	timeout "$VM_TIMEOUT" qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp 1 -m 1024 \
		-nographic -nodefaults -serial stdio -no-reboot -kernel "$cache/vmlinux" \
		-initrd "$extra.initrd" -append "console=ttyS0 quiet panic=-1 cn.role=node" \
		-netdev socket,id=n0,listen=127.0.0.1:"$port" \
		-device virtio-net-pci,netdev=n0,mac=52:54:00:77:00:01 </dev/null |
		tr -d '\r' | sed -u 's/^/node| /' >"$out_n" &
	pid_n=$!
	sleep 1
	timeout "$VM_TIMEOUT" qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp 1 -m 1024 \
		-nographic -nodefaults -serial stdio -no-reboot -kernel "$cache/vmlinux" \
		-initrd "$extra.initrd" -append "console=ttyS0 quiet panic=-1 cn.role=client" \
		-netdev socket,id=n0,connect=127.0.0.1:"$port" \
		-device virtio-net-pci,netdev=n0,mac=52:54:00:77:00:02 </dev/null |
		tr -d '\r' | sed -u 's/^/client| /' >"$out_c"
	wait "$pid_n"
	set -e
	cat "$out_n" "$out_c"
	rc_n=$(sed -n 's/^node| CN-RESULT: \([0-9]*\)$/\1/p' "$out_n" | tail -n 1)
	rc_c=$(sed -n 's/^client| CN-RESULT: \([0-9]*\)$/\1/p' "$out_c" | tail -n 1)
	rm -rf "$extra" "$extra.cpio.gz" "$extra.initrd" "$out_n" "$out_c"
	[ -n "$rc_n" ] && [ -n "$rc_c" ] || die "a VM reported no result (timeout after ${VM_TIMEOUT}s?)"
	[ "$rc_n" -ne 0 ] && return "$rc_n"
	return "$rc_c"
}

case "${1:-}" in
build) build "${2:?cache dir}" ;;
run2)
	shift
	run2 "$@"
	;;
run)
	shift
	run "$@"
	;;
*)
	echo "usage: $0 build CACHE | run CACHE SCRIPT [FILE...] | run2 CACHE NODE CLIENT [FILE...]" >&2
	exit 2
	;;
esac
