#!/usr/bin/env bash
# The test guest under Debian's QEMU, the oracle: the same guest, disk and expectations as
# run-yun.sh, on a q35 machine with a modern virtio-blk-pci (and virtio-rng, virtio-console). With a usable /dev/kvm QEMU runs
# under KVM (-cpu kvm64, as the issue asks); without one it runs under its own emulator (TCG),
# which is slower but models the same hardware. POPCNT is added: the guest's ring-0 popcnt of a
# virtio register is the oracle for yun-vmm's emulation fallback, and TCG refuses it (#UD)
# on a CPU model without it.
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
# The virtio-console: a virtio-serial whose port 0 is a console on QEMU's stdio, the host's line
# its input and its output a file of its own (QEMU offers MULTIPORT; the guest does not take it).
vcon=$LOGS/guest-qemu-vcon.log
printf '%s\n' "$VCON_IN" >"$dir/vcon-in"
timeout "${YUN_GUEST_TIMEOUT:-300}" qemu-system-x86_64 -nodefaults -no-user-config -display none \
	-M q35 -accel "$accel" -cpu kvm64,+popcnt -smp "$CPUS" -m "$MEM" -no-reboot \
	-kernel "$GUEST" -append "$GUEST_CMDLINE vcon=1 vcon_in=$VCON_IN" -serial "file:$log" \
	-drive "if=none,id=d0,format=raw,file=$dir/disk.img" \
	-device "virtio-blk-pci,drive=d0,disable-legacy=on,serial=$DISK_SERIAL" \
	-device virtio-rng-pci,disable-legacy=on \
	-chardev stdio,id=vc0,signal=off \
	-device virtio-serial-pci,disable-legacy=on -device virtconsole,chardev=vc0 \
	<"$dir/vcon-in" >"$vcon" 2>"$LOGS/guest-qemu.stderr"
status=$?
echo "# qemu ($accel) exited with status $status"
check_run "qemu/$accel" "$log" "$status" "$dir/disk.img"
check_vcon "qemu/$accel" "$vcon"
echo "1..$n"
