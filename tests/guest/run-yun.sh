#!/usr/bin/env bash
# The test guest under yun-vmm (needs /dev/kvm: tests/run runs it through tests/kvmhost/run.sh):
# with 2 vCPUs and 128 MiB as under QEMU, and once more with 4 GiB, whose last GiB lies above
# the 32-bit PCI hole.
set -u
shopt -s extglob
cd "$(dirname "$0")/../.."
. tests/guest/lib.sh

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for config in "2 128" "1 4096"; do
	read -r CPUS MEM <<<"$config"
	GUEST_CMDLINE="cpus=$CPUS mem=$MEM disk_sectors=$DISK_SECTORS disk_serial=$DISK_SERIAL rng=1"
	what="yun-vmm ${CPUS}cpu/${MEM}M"
	make_disk "$dir/disk.img"
	log=$LOGS/guest-yun-$MEM-console.log
	timeout "${YUN_GUEST_TIMEOUT:-300}" "${BUILD:-build}/yun-vmm" --kernel "$GUEST" \
		--cpus "$CPUS" --memory "$MEM" --cmdline "$GUEST_CMDLINE" --console "file=$log" \
		--disk "path=$dir/disk.img,serial=$DISK_SERIAL" --rng --no-reboot \
		</dev/null >"$LOGS/guest-yun-$MEM.stderr" 2>&1
	status=$?
	echo "# $what exited with status $status"
	check_run "$what" "$log" "$status" "$dir/disk.img"
	if [ "$MEM" -gt 3072 ]; then
		if grep -qE '^# memmap 0x0000000100000000-0x000000013fffffff type 1' "$log"; then
			ok "$what: the memory map puts the last GiB above 4 GiB"
		else
			not_ok "$what: the memory map puts the last GiB above 4 GiB # see $log"
		fi
	fi
done
echo "1..$n"
