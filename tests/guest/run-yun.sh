#!/usr/bin/env bash
# The test guest under yun-vmm (needs /dev/kvm: tests/run runs it through tests/kvmhost/run.sh):
# with 2 vCPUs and 128 MiB as under QEMU, and once more with 4 GiB, whose last GiB lies above
# the 32-bit PCI hole; then the disk behind the thread-pool engine, and with O_DIRECT where a
# file system here takes it; then with the virtio-console as its console. The first run has a
# virtio-vsock too, whose guest connects to tests/guest/vsock-listener.py.
set -u
shopt -s extglob
cd "$(dirname "$0")/../.."
. tests/guest/lib.sh

dir=$(mktemp -d)
# O_DIRECT wants a file system that takes it: /tmp (a tmpfs inside the KVM host refuses it
# before Linux 6.6), else the build directory (the shared working directory there).
direct_dir=$dir
if ! dd if=/dev/zero of="$dir/probe" bs=4096 count=1 oflag=direct status=none 2>/dev/null; then
	direct_dir=$(mktemp -d "$PWD/${BUILD:-build}/guest-yun-direct.XXXXXX")
	dd if=/dev/zero of="$direct_dir/probe" bs=4096 count=1 oflag=direct status=none 2>/dev/null ||
		direct_dir=
fi
listener=
trap '[ -n "$listener" ] && kill "$listener" 2>/dev/null; rm -rf "$dir" ${direct_dir:+"$direct_dir"}' EXIT
VSOCK_CID=42
VSOCK_PORT=5123

# start_listener: the host end of the guest's vsock checks on PATH_<port>, listening.
start_listener() {
	python3 tests/guest/vsock-listener.py "$dir/vsock_$VSOCK_PORT" "$LOGS/guest-yun-vsock.log" \
		"$dir/vsock-ready" &
	listener=$!
	for _ in $(seq 100); do
		[ -e "$dir/vsock-ready" ] && return
		sleep 0.1
	done
}

# check_vsock WHAT LOG: the guest's vsock checks ran, and the listener got its bytes.
check_vsock() {
	local what=$1 log=$2 line
	# The guest has gone: the listener ends at once, unless the guest never closed.
	for _ in $(seq 50); do
		kill -0 "$listener" 2>/dev/null || break
		sleep 0.1
	done
	kill "$listener" 2>/dev/null
	wait "$listener"
	listener=
	for line in 'answered with RESPONSE' 'the listener got them all intact' \
		'SHUTDOWN answered with' 'nobody listens, gets RST'; do
		if grep -qE "^ok [0-9]+ - virtio-vsock: .*$line" "$log"; then
			ok "$what: the guest's vsock check passed: $line"
		else
			not_ok "$what: the guest's vsock check passed: $line # see $log"
		fi
	done
	for line in "got: b'hello from the test guest\\n'" 'bulk 524288 ok' 'eof'; do
		if grep -qxF "$line" "$LOGS/guest-yun-vsock.log"; then
			ok "$what: the host's vsock listener logged: $line"
		else
			not_ok "$what: the host's vsock listener logged: $line # see $LOGS/guest-yun-vsock.log"
		fi
	done
}
# CPUS MEM [DISK OPTIONS, and the line the VMM logs for them]
for config in "2 128" "1 4096" "2 128 engine=threads" "2 128 direct=on"; do
	read -r CPUS MEM opts <<<"$config"
	GUEST_CMDLINE="cpus=$CPUS mem=$MEM disk_sectors=$DISK_SECTORS disk_serial=$DISK_SERIAL rng=1"
	what="yun-vmm ${CPUS}cpu/${MEM}M${opts:+ $opts}"
	name=$MEM${opts:+-${opts%%=*}}
	disk=$dir/disk.img
	vsock=()
	if [ "$config" = "2 128" ]; then
		start_listener
		vsock=(--vsock "cid=$VSOCK_CID,uds=$dir/vsock")
		GUEST_CMDLINE+=" vsock_cid=$VSOCK_CID vsock_port=$VSOCK_PORT"
	fi
	case $opts in
	direct=on)
		if [ -z "$direct_dir" ]; then
			n=$((n + 1))
			echo "ok $n - $what # SKIP no file system here takes O_DIRECT"
			continue
		fi
		disk=$direct_dir/disk.img
		;;
	esac
	make_disk "$disk"
	log=$LOGS/guest-yun-$name-console.log
	timeout "${YUN_GUEST_TIMEOUT:-300}" "${BUILD:-build}/yun-vmm" --kernel "$GUEST" \
		--cpus "$CPUS" --memory "$MEM" --cmdline "$GUEST_CMDLINE" --console "file=$log" \
		--disk "path=$disk,serial=$DISK_SERIAL${opts:+,$opts}" --rng "${vsock[@]}" \
		--no-reboot </dev/null >"$LOGS/guest-yun-$name.stderr" 2>&1
	status=$?
	echo "# $what exited with status $status"
	check_run "$what" "$log" "$status" "$disk"
	[ ${#vsock[@]} -gt 0 ] && check_vsock "$what" "$log"
	if [ "$MEM" -gt 3072 ]; then
		if grep -qE '^# memmap 0x0000000100000000-0x000000013fffffff type 1' "$log"; then
			ok "$what: the memory map puts the last GiB above 4 GiB"
		else
			not_ok "$what: the memory map puts the last GiB above 4 GiB # see $log"
		fi
	fi
	# The guest's ring-0 popcnt of two virtio registers went through the emulation fallback:
	# yun-vmm counts it as its vCPU stops.
	if grep -q 'popcnt of queue_desc .* from ring 0' "$log"; then
		if grep -qE 'emulated by yun-vmm:.* popcnt ([2-9]|[1-9][0-9]+)' "$LOGS/guest-yun-$name.stderr"; then
			ok "$what: the VMM emulated the guest's ring-0 popcnts ($(grep -oE 'popcnt [0-9]+' "$LOGS/guest-yun-$name.stderr" | head -n 1))"
		else
			not_ok "$what: the VMM emulated the guest's ring-0 popcnts # see $LOGS/guest-yun-$name.stderr"
		fi
	fi
	want=
	case $opts in
	engine=threads) want='engine threads' ;;
	direct=on) want='engine [a-z_]+, O_DIRECT' ;;
	esac
	if [ -n "$want" ]; then
		if grep -qE "$want" "$LOGS/guest-yun-$name.stderr"; then
			ok "$what: the VMM says it serves the disk with $want"
		else
			not_ok "$what: the VMM says it serves the disk with $want # see $LOGS/guest-yun-$name.stderr"
		fi
	fi
done

# The virtio-console as the VM's console (--console-device virtio; COM1's output is discarded
# then): the guest relays its whole log through the console after its checks, and the line it
# must receive comes in on stdin (a pipe: yun-vmm cannot watch a regular file), waiting in the
# device until the guest posts receive buffers.
what="yun-vmm virtio-console"
make_disk "$dir/disk.img"
log=$LOGS/guest-yun-vcon-console.log
printf '%s\n' "$VCON_IN" | timeout "${YUN_GUEST_TIMEOUT:-300}" "${BUILD:-build}/yun-vmm" \
	--kernel "$GUEST" --cpus 1 --memory 128 --console stdio --console-device virtio \
	--cmdline "cpus=1 mem=128 disk_sectors=$DISK_SECTORS disk_serial=$DISK_SERIAL rng=1 vcon=console vcon_in=$VCON_IN" \
	--disk "path=$dir/disk.img,serial=$DISK_SERIAL" --rng --no-reboot \
	>"$log" 2>"$LOGS/guest-yun-vcon.stderr"
status=$?
echo "# $what exited with status $status; $(grep 'console0:' "$LOGS/guest-yun-vcon.stderr")"
check_run "$what" "$log" "$status" "$dir/disk.img"
check_vcon "$what" "$log"
echo "1..$n"
