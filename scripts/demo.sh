#!/usr/bin/env bash
# Build yun, prepare the guest kit, and boot Debian's own cloud kernel on yun-vmm with a busybox
# initramfs and a virtio-blk disk, to a shell on the serial console ('exit' powers the VM off).
#
#   scripts/demo.sh                 interactive shell
#   scripts/demo.sh --run 'CMD'     run CMD in the guest instead (commas become spaces), then
#                                   power off; prints the console and ends with yun-vmm's status
#
# On a host without a usable /dev/kvm, yun-vmm runs inside the KVM host of tests/kvmhost/run.sh
# (nested KVM under QEMU's emulator): slower, but the same yun-vmm and the same guest.
set -euo pipefail
cd "$(dirname "$0")/.."
run=
[ "${1:-}" = --run ] && run=${2:?--run needs a command}

scripts/setup.sh
make -j"$(nproc)" vmm >/dev/null
kdir=$(guest/kit/debian-kernel.sh)
initrd=$(guest/kit/initramfs.sh "$kdir/modules")
mkdir -p build/demo
disk=build/demo/disk.img
if [ ! -f "$disk" ]; then
	truncate -s 64M "$disk"
	mkfs.ext4 -q -L yun-demo "$disk"
fi

cmdline="console=ttyS0 panic=-1 quiet"
[ -n "$run" ] && cmdline+=" yun.run=$(echo "$run" | tr ' ' ,)"
vmm=(build/yun-vmm --kernel "$kdir/vmlinuz" --initrd "$initrd" --cpus 2 --memory 512
	--disk "path=$disk,serial=yun-demo" --rng --cmdline "$cmdline" --no-reboot)

echo "demo: booting Debian $(cat "$kdir/version") on yun-vmm (Ctrl-A x quits)" >&2
if [ -c /dev/kvm ] && { : <>/dev/kvm; } 2>/dev/null; then
	exec "${vmm[@]}"
fi
echo "demo: no usable /dev/kvm here; running yun-vmm inside the nested KVM host" >&2
if [ -n "$run" ]; then
	exec tests/kvmhost/run.sh --mem 2048 --timeout 900 -- "${vmm[@]}"
fi
exec tests/kvmhost/run.sh --mem 2048 --interactive -- "${vmm[@]}"
