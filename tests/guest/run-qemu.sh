#!/usr/bin/env bash
# The test guest under Debian's QEMU, the oracle: the same guest, disk and expectations as
# run-yun.sh, on a q35 machine with a modern virtio-blk-pci. With a usable /dev/kvm QEMU runs
# under KVM (-cpu kvm64, as the issue asks); without one it runs under its own emulator (TCG),
# which is slower but models the same hardware.
set -u
shopt -s extglob
cd "$(dirname "$0")/../.."
. tests/guest/lib.sh

accel=tcg
if [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] && [ -z "${YUN_QEMU_TCG:-}" ]; then
	accel=kvm
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
make_disk "$dir/disk.img"
log=$LOGS/guest-qemu-console.log
timeout "${YUN_GUEST_TIMEOUT:-300}" qemu-system-x86_64 -nodefaults -no-user-config -display none \
	-M q35 -accel "$accel" -cpu kvm64 -smp "$CPUS" -m "$MEM" -no-reboot \
	-kernel "$GUEST" -append "$GUEST_CMDLINE" -serial "file:$log" \
	-drive "if=none,id=d0,format=raw,file=$dir/disk.img" \
	-device "virtio-blk-pci,drive=d0,disable-legacy=on,serial=$DISK_SERIAL" \
	-device virtio-rng-pci,disable-legacy=on \
	</dev/null >"$LOGS/guest-qemu.stderr" 2>&1
status=$?
echo "# qemu ($accel) exited with status $status"
check_run "qemu/$accel" "$log" "$status" "$dir/disk.img"
echo "1..$n"
