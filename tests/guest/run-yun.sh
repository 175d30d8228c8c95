#!/usr/bin/env bash
# The test guest under yun-vmm (needs /dev/kvm: tests/run runs it through tests/kvmhost/run.sh).
set -u
shopt -s extglob
cd "$(dirname "$0")/../.."
. tests/guest/lib.sh

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
make_disk "$dir/disk.img"
log=$LOGS/guest-yun-console.log
timeout "${YUN_GUEST_TIMEOUT:-300}" "${BUILD:-build}/yun-vmm" --kernel "$GUEST" \
	--cpus "$CPUS" --memory "$MEM" --cmdline "$GUEST_CMDLINE" --console "file=$log" \
	--disk "path=$dir/disk.img,serial=$DISK_SERIAL" --no-reboot \
	</dev/null >"$LOGS/guest-yun.stderr" 2>&1
status=$?
echo "# yun-vmm exited with status $status"
check_run yun-vmm "$log" "$status" "$dir/disk.img"
echo "1..$n"
