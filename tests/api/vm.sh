#!/usr/bin/env bash
# The control API with a running VM (needs /dev/kvm: tests/run runs it through
# tests/kvmhost/run.sh). The test guest in `bench=wait` mode prints "ready" and polls COM1
# for a byte from ring 3; meanwhile the API pauses it, reads its registers, walks its page
# tables for the instruction pointer and reads the instruction's bytes by guest-physical and
# by guest-virtual address (compared with the guest's ELF file), resumes it, counts its exits,
# and the byte sent while it was paused is taken after the resume (nothing lost). Then: a VM configured and started entirely through
# the API, and Stop and PowerButton on running VMs; one configured through Firecracker's
# endpoints; a VM run in a jail (--jail).
set -u
cd "$(dirname "$0")/../.."
. tests/api/lib.sh
GUEST=$BUILD/guest/test-guest.elf

dir=$(mktemp -d -p "$BUILD")
local=$(mktemp -d) # FIFOs and sockets need a local file system (not 9p)
SOCK=$local/api.sock
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; exec 3>&- 2>/dev/null; rm -rf "$dir" "$local"' EXIT
err='isinstance(j, dict) and list(j) == ["error"]'

# wait_exit PID SECONDS: the process's exit status, or 124 if it is still running.
wait_exit() {
	local end=$((SECONDS + $2)) # wall-clock: a turn of the loop is slow in the KVM host
	while kill -0 "$1" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.1; done
	kill -0 "$1" 2>/dev/null && return 124
	wait "$1"
}

mkfifo "$local/in"
VMM_STDERR=$LOGS/api-vm.stderr
"$BUILD/yun-vmm" --api-socket "$SOCK" --kernel "$GUEST" --cmdline "bench=wait" --cpus 2 \
	--rng <"$local/in" >"$dir/console.log" 2>"$LOGS/api-vm.stderr" &
pid=$!
pids+=($pid)
exec 3>"$local/in"
for _ in $(seq 300); do grep -q ready "$dir/console.log" && break; sleep 0.1; done
if grep -q ready "$dir/console.log" && wait_socket; then ok "the guest runs and the API answers"; else
	not_ok "the guest runs and the API answers # see $LOGS/api-vm.stderr"
	echo "1..$n"
	exit 1
fi
# The sandbox: every thread under a seccomp filter, no new privileges, no capability but
# CAP_NET_ADMIN (bit 12: kept with --api-socket, whose configuration may add a tap).
bad=
for t in /proc/$pid/task/*; do
	grep -q '^Seccomp:[[:space:]]*2$' "$t/status" || bad+=" $(basename "$t")"
done
[ -z "$bad" ] && [ "$(ls /proc/$pid/task | wc -l)" -ge 4 ] && ok "every thread runs under a seccomp filter" ||
	not_ok "every thread runs under a seccomp filter # not:$bad"
grep -q '^NoNewPrivs:[[:space:]]*1$' /proc/$pid/status && ok "no new privileges" || not_ok "no new privileges"
caps=$(awk '/^Cap(Eff|Prm|Bnd|Amb|Inh):/ {printf "%s=%s ", $1, $2}' /proc/$pid/status)
[ "$caps" = "CapInh:=0000000000000000 CapPrm:=0000000000001000 CapEff:=0000000000001000 CapBnd:=0000000000001000 CapAmb:=0000000000000000 " ] &&
	ok "capabilities dropped but CAP_NET_ADMIN" || not_ok "capabilities dropped but CAP_NET_ADMIN # $caps"
expect "GET /vm: Running, 2 vCPUs" GET /vm - 200 'j["state"] == "Running" and j["config"]["cpus"] == 2'
expect "registers while running: 409, pause first" GET /vcpus/0/registers - 409 "$err and 'pause' in j['error']"
expect "memory by gva while running: 409, pause first" GET "/memory?gva=0x100000&vcpu=0&len=16" - 409 "$err"
expect "metrics: port I/O exits counted (the guest polls COM1), the rng listed, nothing emulated" GET /metrics - 200 \
	'j["exits"].get("io", 0) > 100 and len(j["vcpus"]) == 2 and "rng0" in j["devices"] and j["emulated"] == {} and all(v["emulated"] == {} for v in j["vcpus"])'
io_before=$(jget 'j["exits"]["io"]')
expect "PATCH /vm Paused: 204" PATCH /vm '{"state": "Paused"}' 204
expect "GET /vm: Paused" GET /vm - 200 'j["state"] == "Paused"'
expect "pausing a paused VM: 409" PUT /actions '{"action_type": "Pause"}' 409 "$err"
call GET /metrics
io1=$(jget 'j["exits"]["io"]')
sleep 1
call GET /metrics
io2=$(jget 'j["exits"]["io"]')
[ "$io1" -gt "$io_before" ] && [ "$io1" = "$io2" ] && ok "paused: no exits for a second ($io1 both times)" ||
	not_ok "paused: no exits for a second # before $io_before, then $io1 and $io2"
expect "vcpu0's registers: long mode, ring 3, rip in the guest" GET /vcpus/0/registers - 200 \
	'j["registers"]["cs"]["l"] == 1 and j["registers"]["cs"]["dpl"] == 3 and int(j["registers"]["efer"], 16) & 0x400'
rip=$(jget 'j["registers"]["rip"]')
call GET /vcpus/0/registers
[ "$(jget 'j["registers"]["rip"]')" = "$rip" ] && ok "paused: rip stays at $rip" || not_ok "paused: rip stays # $rip then $(jget 'j["registers"]["rip"]')"
expect "a vCPU the VM does not have: 404" GET /vcpus/2/registers - 404 "$err"
expect "translate rip: a 4-level walk to RAM" GET "/vcpus/0/translate?gva=$rip" - 200 \
	'j["result"] == "ok" and [s["table"] for s in j["steps"]][:2] == ["PML4", "PDPT"] and "hva" in j'
gpa=$(jget 'j["gpa"]')
expect "read 16 bytes at rip's guest-physical address" GET "/memory?gpa=$gpa&len=16" - 200 'len(j["hex"]) == 32'
mem=$(jget 'j["hex"]')
elf=$(python3 - "$GUEST" "$rip" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
va = int(sys.argv[2], 16)
phoff, = struct.unpack_from("<Q", data, 0x20)
phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
for i in range(phnum):
    p_type, _, off, vaddr, paddr, filesz, _, _ = struct.unpack_from("<IIQQQQQQ", data, phoff + i * phentsize)
    if p_type == 1 and vaddr <= va < vaddr + filesz:
        print(data[off + va - vaddr: off + va - vaddr + 16].hex())
PY
)
[ -n "$elf" ] && [ "$mem" = "$elf" ] && ok "the bytes at rip are the guest ELF's ($mem)" ||
	not_ok "the bytes at rip are the guest ELF's # memory $mem, ELF $elf"
expect "read 16 bytes at rip by gva through vcpu0's page tables" GET "/memory?gva=$rip&vcpu=0&len=16" - 200 \
	"j['hex'] == '$mem' and j['pages'] == [{'gva': '$rip', 'gpa': '$gpa', 'len': 16}]"
expect "read by gva across a page boundary: every byte, page by page" \
	GET "/memory?gva=$(printf '0x%x' $(((rip | 0xfff) - 7)))&vcpu=0&len=4096" - 200 \
	"len(j['hex']) == 8192 and sum(p['len'] for p in j['pages']) == 4096"
expect "read by gva where nothing is mapped: 400 naming the address and the error code" \
	GET "/memory?gva=0x7f0000000000&vcpu=0&len=16" - 400 "$err and '0x7f0000000000' in j['error'] and 'page fault' in j['error'] and 'error code' in j['error']"
expect "read by gva through a vCPU the VM does not have: 404" GET "/memory?gva=$rip&vcpu=2&len=16" - 404 "$err"
expect "translate an unmapped address: a page fault with its error code" \
	GET "/vcpus/0/translate?gva=0x7f0000000000" - 200 'j["result"] == "page_fault" and int(j["error_code"], 16) & 1 == 0'
expect "translate without gva: 400" GET /vcpus/0/translate - 400 "$err"
expect "memory outside RAM: 400" GET "/memory?gpa=0xfff00000000&len=16" - 400 "$err"
expect "memory over 64 KiB: 400" GET "/memory?gpa=0&len=65537" - 400 "$err"
printf x >&3
sleep 1
expect "a byte sent while paused is not taken: still Paused" GET /vm - 200 'j["state"] == "Paused"'
expect "PATCH /vm Resumed: 204" PATCH /vm '{"state": "Resumed"}' 204
wait_exit $pid 60
status=$?
[ $status = 0 ] && ok "resumed, the guest takes the byte and powers off: status 0" ||
	not_ok "resumed, the guest powers off # status $status, see $dir/console.log"
exec 3>&-

# A VM described and started entirely through the API.
rm -f "$SOCK"
"$BUILD/yun-vmm" --api-socket "$SOCK" --console "file=$dir/c2.log" 2>>"$LOGS/api-vm.stderr" &
pid=$!
pids+=($pid)
wait_socket
expect "pre-boot: PUT /vm/config" PUT /vm/config '{"kernel": "'"$GUEST"'", "cmdline": "bench=wait", "memory": 64}' 204
expect "InstanceStart: 204" PUT /actions '{"action_type": "InstanceStart"}' 204
for _ in $(seq 300); do grep -q ready "$dir/c2.log" && break; sleep 0.1; done
expect "the configured guest runs: Running, 64 MiB" GET /vm - 200 'j["state"] == "Running" and j["config"]["memory"] == 64'
grep -q ready "$dir/c2.log" && ok "... and prints ready" || not_ok "... and prints ready"
expect "the configuration cannot change now: 409" PUT /vm/config '{"memory": 128}' 409 "$err"
expect "InstanceStart twice: 409" PUT /actions '{"action_type": "InstanceStart"}' 409 "$err"
fault='isinstance(j, dict) and sorted(j) == ["error", "fault_message"]'
expect "Firecracker's PUT /boot-source after start: 409" PUT /boot-source '{"kernel_image_path": "'"$GUEST"'"}' 409 "$fault"
expect "Firecracker's PUT /drives after start: 409" PUT /drives/d \
	'{"drive_id": "d", "path_on_host": "'"$GUEST"'", "is_root_device": false}' 409 "$fault"
expect "Firecracker's PATCH /machine-config after start: 409" PATCH /machine-config '{"vcpu_count": 1}' 409 "$fault"
expect "Firecracker's GET /machine-config after start: 1 vCPU, 64 MiB" GET /machine-config - 200 \
	'j["vcpu_count"] == 1 and j["mem_size_mib"] == 64'
expect "PowerButton: 204 and ShuttingDown" PUT /actions '{"action_type": "PowerButton"}' 204
expect "GET /vm: ShuttingDown" GET /vm - 200 'j["state"] == "ShuttingDown"'
expect "Stop (the guest ignores the button): 204" PUT /actions '{"action_type": "Stop"}' 204
wait_exit $pid 30
status=$?
[ $status = 0 ] && ok "yun-vmm exits 0 after Stop" || not_ok "yun-vmm exits 0 after Stop # status $status"

# A VM configured entirely through Firecracker's endpoints: the test guest as the kernel, its
# disk as the root device (root=/dev/vda rw added to boot_args), run to its power-off.
rm -f "$SOCK"
python3 -c '
import sys
with open(sys.argv[1], "wb") as f:
    for s in range(256):
        one = b"yun-sector-%05u" % s
        f.write((one * 32)[:512])' "$dir/fc.img"
"$BUILD/yun-vmm" --api-socket "$SOCK" --console "file=$dir/fc.log" 2>>"$LOGS/api-vm.stderr" &
pid=$!
pids+=($pid)
wait_socket
expect "firecracker: PUT /boot-source" PUT /boot-source \
	'{"kernel_image_path": "'"$GUEST"'", "boot_args": "cpus=2 mem=64 disk_sectors=256 disk_serial=rootfs"}' 204
expect "firecracker: PUT /machine-config" PUT /machine-config '{"vcpu_count": 2, "mem_size_mib": 64}' 204
expect "firecracker: PUT /drives/rootfs" PUT /drives/rootfs \
	'{"drive_id": "rootfs", "path_on_host": "'"$dir"'/fc.img", "is_root_device": true, "is_read_only": false}' 204
expect "firecracker: InstanceStart: 204" PUT /actions '{"action_type": "InstanceStart"}' 204
wait_exit $pid 120
status=$?
[ $status = 0 ] && ok "firecracker: the guest runs its checks and powers off: status 0" ||
	not_ok "firecracker: the guest powers off # status $status, see $dir/fc.log"
grep -q "^# command line: root=/dev/vda rw cpus=2 mem=64" "$dir/fc.log" &&
	ok "firecracker: the guest booted with root=/dev/vda rw before boot_args" ||
	not_ok "firecracker: root=/dev/vda rw before boot_args # $(grep 'command line' "$dir/fc.log")"
plan=$(sed -n 's/^1\.\.\([0-9]*\).*/\1/p' "$dir/fc.log" | tr -d '\r')
oks=$(grep -c "^ok " "$dir/fc.log")
if [ -n "$plan" ] && [ "$oks" = "$plan" ] && ! grep -q "^not ok" "$dir/fc.log"; then
	ok "firecracker: all $plan of the guest's checks pass (virtio-blk on the drive, GET_ID \"rootfs\")"
else
	not_ok "firecracker: the guest's checks # plan $plan, ok $oks: $(grep '^not ok' "$dir/fc.log")"
fi
[ "$(dd if="$dir/fc.img" bs=512 skip=2 count=1 status=none | head -c 17)" = yun-written-00002 ] &&
	ok "firecracker: the drive's file holds the sector the guest wrote" ||
	not_ok "firecracker: the drive's file holds the sector the guest wrote"

# Jailed (--jail): the guest ELF, a disk and the sockets inside a jail on the KVM host's tmpfs
# (device nodes need a file system without nodev), a tap the jail's user owns, the VM run as
# that unprivileged user, still under the seccomp filters, until the guest powers off.
JAIL=$local/jail
JUID=12345
JGID=12346
mkdir -p "$JAIL/run"
chown $JUID:$JGID "$JAIL/run"
cp "$GUEST" "$JAIL/guest.elf"
truncate -s 1M "$JAIL/disk.img"
chown $JUID:$JGID "$JAIL/disk.img"
# Jailed, yun-vmm cannot make a tap (it has no CAP_NET_ADMIN left): one clear line, status 1.
out=$(unshare -n timeout 60 "$BUILD/yun-vmm" --jail "$JAIL" --uid $JUID --gid $JGID --kernel /guest.elf \
	--net tap=yunjail9 --console none 2>&1)
status=$?
[ $status = 1 ] && [[ $out == *"tap yunjail9: Operation not permitted (needs CAP_NET_ADMIN, or a tap owned by this user)"* ]] &&
	ok "jailed: a tap that does not exist is refused, saying why" ||
	not_ok "jailed: a tap that does not exist is refused # status $status: $out"
# A tap made beforehand for the jail's user (in a network namespace of the test's own) is its.
mkfifo "$local/jin"
unshare -n sh -c 'ip tuntap add dev yunjail0 mode tap user '$JUID' && exec "$@"' sh \
	"$BUILD/yun-vmm" --jail "$JAIL" --uid $JUID --gid $JGID --kernel /guest.elf --cmdline bench=wait \
	--disk path=/disk.img --vsock cid=3,uds=/run/vsock.sock --net tap=yunjail0 --api-socket /run/api.sock \
	<"$local/jin" >"$dir/jail.log" 2>>"$LOGS/api-vm.stderr" &
pid=$!
pids+=($pid)
exec 3>"$local/jin"
SOCK=$JAIL/run/api.sock
for _ in $(seq 300); do grep -q ready "$dir/jail.log" && break; sleep 0.1; done
if grep -q ready "$dir/jail.log" && wait_socket; then ok "jailed: the guest runs and the API answers in the jail"; else
	not_ok "jailed: the guest runs and the API answers # see $LOGS/api-vm.stderr"
fi
ids=$(awk '$1 == "Uid:" || $1 == "Gid:" {$1 = ""; printf "%s;", substr($0, 2)}' "/proc/$pid/status")
caps=$(awk '$1 ~ /^Cap(Prm|Eff|Bnd)/ {printf "%s ", $2}' "/proc/$pid/status")
[ "$ids" = "$JUID $JUID $JUID $JUID;$JGID $JGID $JGID $JGID;" ] &&
	[ "$caps" = "0000000000000000 0000000000000000 0000000000000000 " ] &&
	ok "jailed: the running VM is user $JUID, group $JGID, with no capability" ||
	not_ok "jailed: user, group and capabilities # $ids $caps"
[ "$(readlink "/proc/$pid/root")" = "$(realpath "$JAIL")" ] && ok "jailed: its root is the jail" ||
	not_ok "jailed: its root is the jail # $(readlink "/proc/$pid/root")"
bad=
for t in /proc/$pid/task/*; do
	grep -q '^Seccomp:[[:space:]]*2$' "$t/status" || bad+=" $(basename "$t")"
done
[ -z "$bad" ] && ok "jailed: every thread under a seccomp filter" || not_ok "jailed: seccomp # not:$bad"
[ -S "$JAIL/run/vsock.sock" ] && [ "$(stat -c %u "$JAIL/run/vsock.sock")" = $JUID ] &&
	ok "jailed: the vsock socket made inside the jail, the user's" || not_ok "jailed: the vsock socket # $(ls -l "$JAIL/run")"
expect "jailed: GET /vm: Running with the jail's disk and the user's tap" GET /vm - 200 \
	'j["state"] == "Running" and j["config"]["disk"][0]["path"] == "/disk.img" and j["config"]["net"]["tap"] == "yunjail0"'
printf x >&3
wait_exit $pid 60
status=$?
[ $status = 0 ] && ok "jailed: the guest takes the byte and powers off: status 0" ||
	not_ok "jailed: the guest powers off # status $status, see $dir/jail.log"
exec 3>&-

# The vCPU threads' filter bites too (the test-only build).
out=$(YUN_SANDBOX_SELFTEST=vcpu timeout 60 "$BUILD/yun-vmm-sandbox-test" --kernel "$GUEST" --console none 2>&1)
status=$?
if [ $status = $((128 + 31)) ] && [[ $out == *"forbidden system call"* ]]; then
	ok "sandbox: a forbidden call in a vCPU thread ends yun-vmm with SIGSYS"
else
	not_ok "sandbox: a forbidden call in a vCPU thread ends yun-vmm with SIGSYS # status $status: $out"
fi
echo "1..$n"
