#!/usr/bin/env bash
# Build yun, prepare the guest kit, and boot Debian's own cloud kernel on yun-vmm with a busybox
# initramfs and a virtio-blk disk, to a shell on the serial console ('exit' powers the VM off).
#
#   scripts/demo.sh                 interactive shell
#   scripts/demo.sh --run 'CMD'     run CMD in the guest instead (commas become spaces), then
#                                   power off; prints the console and ends with yun-vmm's status
#   scripts/demo.sh --minimal ...   the minimal kernel instead (guest/kit/minimal-kernel.sh, built
#                                   on first use), its root busybox on an ext4 disk (/dev/vda)
#
# On a host without a usable /dev/kvm, yun-vmm runs inside the KVM host of tests/kvmhost/run.sh
# (nested KVM under QEMU's emulator): slower, but the same yun-vmm and the same guest.
set -euo pipefail
cd "$(dirname "$0")/.."
run=
minimal=0
while [ $# -gt 0 ]; do
	case $1 in
	--run) run=${2:?--run needs a command} && shift 2 ;;
	--minimal) minimal=1 && shift ;;
	*) echo "usage: scripts/demo.sh [--minimal] [--run 'CMD']" >&2 && exit 2 ;;
	esac
done

scripts/setup.sh
make -j"$(nproc)" vmm >/dev/null
mkdir -p build/demo
cmdline="console=ttyS0 panic=-1 quiet"
[ -n "$run" ] && cmdline+=" yun.run=$(echo "$run" | tr ' ' ,)"
if [ "$minimal" = 1 ]; then
	kdir=$(guest/kit/minimal-kernel.sh)
	# The root: busybox with its applets as links and an /init that does what the initramfs's
	# does (less the modules: this kernel has its drivers built in), ending in the same
	# guest/kit/yun-run.sh. Made again when this script or that file changes.
	disk=build/demo/minimal-root.ext4
	key=$(cat scripts/demo.sh guest/kit/yun-run.sh | sha256sum)
	if [ ! -f "$disk" ] || [ "$(cat "$disk.key" 2>/dev/null)" != "$key" ]; then
		bb=$(guest/kit/fetch.sh busybox-static)/bin/busybox
		root=build/demo/minimal-root
		rm -rf "$root"
		mkdir -p "$root"/{bin,dev,proc,sys,tmp,mnt}
		cp "$bb" "$root/bin/busybox"
		for a in $("$bb" --list); do [ "$a" = busybox ] || ln -s busybox "$root/bin/$a"; done
		cat >"$root/init" <<'INIT'
#!/bin/busybox sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo "yun-guest: userspace up"
INIT
		cat guest/kit/yun-run.sh >>"$root/init"
		chmod +x "$root/init"
		truncate -s 64M "$disk.tmp"
		mkfs.ext4 -q -L yun-minimal -d "$root" "$disk.tmp"
		mv "$disk.tmp" "$disk"
		echo "$key" >"$disk.key"
	fi
	vmm=(build/yun-vmm --kernel "$kdir/vmlinux" --cpus 2 --memory 512
		--disk "path=$disk,root=on,serial=yun-demo" --rng --cmdline "$cmdline init=/init"
		--no-reboot)
	what="the minimal kernel, Linux $(cat "$kdir/version"),"
else
	kdir=$(guest/kit/debian-kernel.sh)
	initrd=$(guest/kit/initramfs.sh "$kdir/modules")
	disk=build/demo/disk.img
	if [ ! -f "$disk" ]; then
		truncate -s 64M "$disk"
		mkfs.ext4 -q -L yun-demo "$disk"
	fi
	vmm=(build/yun-vmm --kernel "$kdir/vmlinuz" --initrd "$initrd" --cpus 2 --memory 512
		--disk "path=$disk,serial=yun-demo" --rng --cmdline "$cmdline" --no-reboot)
	what="Debian $(cat "$kdir/version")"
fi

echo "demo: booting $what on yun-vmm (Ctrl-A x quits)" >&2
if [ -c /dev/kvm ] && { : <>/dev/kvm; } 2>/dev/null; then
	exec "${vmm[@]}"
fi
echo "demo: no usable /dev/kvm here; running yun-vmm inside the nested KVM host" >&2
if [ -n "$run" ]; then
	exec tests/kvmhost/run.sh --mem 2048 --timeout 900 -- "${vmm[@]}"
fi
exec tests/kvmhost/run.sh --mem 2048 --interactive -- "${vmm[@]}"
