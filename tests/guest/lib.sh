# shellcheck shell=bash
# Shared by run-yun.sh and run-qemu.sh: the disk the test guest reads, and the checks made on
# the host after the guest has run. Both runners print TAP.
#
# The disk: sector N holds "yun-sector-NNNNN" repeated; the guest reads sector 1, writes
# "yun-written-00002" over sector 2, flushes, and powers off. The guest is told what to expect
# on its command line.

GUEST=${BUILD:-build}/guest/test-guest.elf
LOGS=${YUN_TEST_LOGS:-${BUILD:-build}/test-logs}
DISK_SECTORS=256
DISK_SERIAL=yun-test-disk
CPUS=2
MEM=128
GUEST_CMDLINE="cpus=$CPUS mem=$MEM disk_sectors=$DISK_SECTORS disk_serial=$DISK_SERIAL rng=1"
# The line the host types on the virtio-console, which the guest must receive (vcon_in=).
VCON_IN=yun-vcon-in-$$
mkdir -p "$LOGS"
n=0

ok() { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); echo "not ok $n - $*"; }

# pattern PREFIX N: one 512-byte sector of PREFIX followed by N in five digits, repeated.
pattern() {
	local one rep=""
	one=$(printf '%s%05u' "$1" "$2")
	while [ ${#rep} -lt 512 ]; do rep+=$one; done
	printf '%s' "${rep:0:512}"
}

make_disk() {
	local disk=$1 s
	for ((s = 0; s < DISK_SECTORS; s++)); do pattern yun-sector- "$s"; done >"$disk"
}

# check_run WHAT LOG STATUS DISK: the guest's own TAP lines, its plan, the exit status, the
# sector it wrote.
check_run() {
	local what=$1 log=$2 status=$3 disk=$4 line plan=0 seen=0
	while IFS= read -r line; do
		line=${line%$'\r'}
		case $line in
		"ok "* | "not ok "*)
			seen=$((seen + 1))
			if [[ $line == ok* ]]; then
				ok "$what: ${line#ok +([0-9]) - }"
			else
				not_ok "$what: ${line#not ok +([0-9]) - }"
			fi
			;;
		1..*) plan=${line#1..} ;;
		"Bail out!"*) not_ok "$what: $line" ;;
		esac
	done <"$log"
	if [ "$plan" -gt 0 ] && [ "$seen" -eq "$plan" ]; then
		ok "$what: the guest ran all $plan of its checks"
	else
		not_ok "$what: the guest ran $seen checks, its plan says ${plan} # see $log"
	fi
	if [ "$status" -eq 0 ]; then
		ok "$what: power-off ends the VM with status 0"
	else
		not_ok "$what: power-off ends the VM with status 0 (got $status) # see $log"
	fi
	if [ "$(dd if="$disk" bs=512 skip=2 count=1 status=none)" = "$(pattern yun-written- 2)" ]; then
		ok "$what: the host file holds the sector the guest wrote"
	else
		not_ok "$what: the host file holds the sector the guest wrote"
	fi
	if [ "$(dd if="$disk" bs=512 skip=3 count=1 status=none)" = "$(pattern yun-sector- 3)" ]; then
		ok "$what: the sectors around it are untouched"
	else
		not_ok "$what: the sectors around it are untouched"
	fi
}

# check_vcon WHAT LOG [EARLY]: what the guest's virtio-console checks (guest/test/console.c)
# left in the console's output: the line sent on the transmit queue, and the emergency writes
# after DRIVER_OK and, unless EARLY is "no", before the features were negotiated (virtio 1.2
# §5.3.5 allows it at any time).
check_vcon() {
	local what=$1 log=$2 early=${3:-yes} line
	for line in hello emerg early; do
		[ "$line" = early ] && [ "$early" = no ] && continue
		if grep -qE "^yun-vcon-$line"$'\r?$' "$log"; then
			ok "$what: virtio-console output holds the guest's $line line"
		else
			not_ok "$what: virtio-console output holds the guest's $line line # see $log"
		fi
	done
}
