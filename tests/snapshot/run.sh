#!/usr/bin/env bash
# Snapshot and restore (needs /dev/kvm: tests/run runs it through tests/kvmhost/run.sh).
# The test guest in `bench=snapshot` mode sets up virtio-blk, reads a sector, prints "ready"
# and polls COM1. Through the API the VM is paused and snapshotted; the original goes on.
# Then `yun-vmm --restore` twice from the same snapshot, each sent a different byte: each
# restored guest echoes it, writes a sector named after it through its queue as the snapshot
# left it (MSI-X firing), reads it back and powers off; the disk shows each one's sector.
# Last, snapshots that must be refused: another format version, a truncated state, memory of
# the wrong size, a configuration that does not match.
set -u
cd "$(dirname "$0")/../.."
. tests/api/lib.sh
GUEST=$BUILD/guest/test-guest.elf
SECTORS=64

dir=$(mktemp -d -p "$BUILD")
local=$(mktemp -d) # FIFOs and sockets need a local file system (not 9p)
SOCK=$local/api.sock
snap=$local/snap # the memory file is mapped: keep it off 9p too
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; exec 3>&- 2>/dev/null; rm -rf "$dir" "$local"' EXIT
err='isinstance(j, dict) and list(j) == ["error"]'

# sector N's expected bytes: "PREFIX%05u" repeated over 512 bytes.
pattern() { python3 -c 'import sys; s=(sys.argv[1]+"%05u"%int(sys.argv[2])).encode(); sys.stdout.buffer.write((s*64)[:512])' "$1" "$2"; }
sector() { dd if="$1" bs=512 skip="$2" count=1 status=none; }

# wait_exit PID SECONDS [BEFORE]: its exit status; 124, and the VMM killed, when it outlives
# SECONDS (after running BEFORE, when given). Killed, so that a guest that hangs costs one check
# and not every later one that needs the disk the VMM holds locked.
wait_exit() {
	local end=$((SECONDS + $2)) # wall-clock: a turn of the loop is slow in the KVM host
	while kill -0 "$1" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.1; done
	if kill -0 "$1" 2>/dev/null; then
		[ -z "${3:-}" ] || "$3"
		kill -KILL "$1"
		wait "$1" 2>/dev/null
		return 124
	fi
	wait "$1"
}

# hang_report: where a restored guest that does not go on is, through its VMM's API (still
# up): vCPU 0's exits a second apart, then paused, its registers. Comment lines, for the log.
hang_report() {
	local a b
	call GET /metrics
	a=$body
	sleep 1
	call GET /metrics
	b=$body
	echo "# hang: vCPU exits, a second apart: $(echo "$a" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("vcpus"))' 2>&1 | head -c 300)"
	echo "#   then: $(echo "$b" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("vcpus"))' 2>&1 | head -c 300)"
	call PATCH /vm '{"state": "Paused"}'
	a=$code
	call GET /vcpus/0/registers
	echo "# hang: vCPU 0 (pause: status $a): $(echo "$body" | python3 -c '
import json, sys
r = json.load(sys.stdin)["registers"]
print(*("%s=%s" % (k, r[k]) for k in ("rip", "rsp", "rflags", "rax", "rdx")), "cs=%s dpl %s" % (r["cs"]["selector"], r["cs"]["dpl"]))' 2>&1 | head -c 400)"
}

wait_for() { # wait_for FILE TEXT SECONDS
	for _ in $(seq $(($3 * 10))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
	return 1
}

disk=$dir/disk.img
for ((s = 0; s < SECTORS; s++)); do pattern yun-sector- "$s"; done >"$disk"

mkfifo "$local/in"
"$BUILD/yun-vmm" --api-socket "$SOCK" --kernel "$GUEST" --cmdline "bench=snapshot" --cpus 2 \
	--disk "path=$disk" <"$local/in" >"$dir/console.log" 2>"$LOGS/snapshot.stderr" &
pid=$!
pids+=($pid)
exec 3>"$local/in"
if wait_for "$dir/console.log" ready 60 && wait_socket; then ok "the guest is ready and the API answers"; else
	not_ok "the guest is ready and the API answers # see $LOGS/snapshot.stderr"
	echo "1..$n"
	exit 1
fi
expect "snapshot of a running VM: 409, pause first" PUT /snapshot/create "{\"path\": \"$snap\"}" 409 "$err"
expect "pause" PATCH /vm '{"state": "Paused"}' 204
expect "snapshot: a path that is not a string: 400" PUT /snapshot/create '{"path": 5}' 400 "$err"
expect "snapshot: an unknown field: 400" PUT /snapshot/create "{\"path\": \"$snap\", \"x\": 1}" 400 "$err"
expect "snapshot into a directory whose parent does not exist: 404" PUT /snapshot/create \
	"{\"path\": \"$local/no/such\"}" 404 "$err"
expect "snapshot of the paused VM: 204" PUT /snapshot/create "{\"path\": \"$snap\"}" 204
mem_bytes=$(stat -c %s "$snap/memory" 2>/dev/null || echo 0)
mem_alloc=$(($(stat -c %b "$snap/memory" 2>/dev/null || echo 0) * 512))
[ -s "$snap/state" ] && [ -s "$snap/config.json" ] && [ "$mem_bytes" = $((128 << 20)) ] &&
	ok "the snapshot holds state, config.json and 128 MiB of memory" ||
	not_ok "the snapshot holds state, config.json and 128 MiB of memory # $(ls -l "$snap" 2>&1)"
[ "$mem_alloc" -gt 0 ] && [ "$mem_alloc" -lt $((16 << 20)) ] &&
	ok "the memory file is sparse: $((mem_alloc >> 10)) KiB written of 128 MiB" ||
	not_ok "the memory file is sparse # $mem_alloc bytes allocated"
python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); sys.exit(0 if c["cpus"]==2 and c["memory"]==128 and c["disk"][0]["path"]==sys.argv[2] else 1)' \
	"$snap/config.json" "$disk" && ok "config.json: 2 vCPUs, 128 MiB, the disk" ||
	not_ok "config.json: 2 vCPUs, 128 MiB, the disk # $(cat "$snap/config.json")"
grep -q "snapshot $snap written" "$LOGS/snapshot.stderr" && ok "the VMM logs the snapshot and its time: $(grep -o 'written in [0-9.]* ms' "$LOGS/snapshot.stderr")" ||
	not_ok "the VMM logs the snapshot # see $LOGS/snapshot.stderr"

# The original goes on after the snapshot.
expect "resume" PATCH /vm '{"state": "Resumed"}' 204
printf 'A' >&3
exec 3>&-
wait_exit "$pid" 30
status=$?
[ $status = 0 ] && grep -q "passed, 0 failed" "$dir/console.log" &&
	[ "$(sector "$disk" 3)" = "$(pattern yun-restored- 65)" ] &&
	ok "the original VM goes on after the snapshot: byte 65, sector 3 written, exit 0" ||
	not_ok "the original VM goes on after the snapshot # status $status; $(tail -3 "$dir/console.log")"

# restore NAME BYTE [ARGS...]: run `yun-vmm --restore $snap`, send BYTE; sets $status.
restore() {
	local name=$1 byte=$2
	shift 2
	rm -f "$local/in"
	mkfifo "$local/in"
	"$BUILD/yun-vmm" --restore "$snap" "$@" <"$local/in" >"$dir/$name.log" 2>"$LOGS/snapshot-$name.stderr" &
	rpid=$!
	pids+=($rpid)
	exec 3>"$local/in"
	printf "\\$(printf %o "$byte")" >&3
	exec 3>&-
	wait_exit "$rpid" 60
	status=$?
}

for run in 1 2; do
	byte=$((65 + run))
	restore "restore$run" $byte
	log=$dir/restore$run.log
	[ $status = 0 ] && ok "restore $run: exit 0" || not_ok "restore $run: exit 0 # status $status; see $LOGS/snapshot-restore$run.stderr"
	grep -q "^# got byte $byte" "$log" && ok "restore $run: the guest goes on from the snapshot and takes byte $byte from COM1" ||
		not_ok "restore $run: the guest takes byte $byte # $(head -c 400 "$log")"
	grep -q "^ok .* after: sector 3 reads back" "$log" && grep -q "passed, 0 failed" "$log" &&
		ok "restore $run: its virtio-blk queue, MSI-X and disk work ($(grep -c '^ok .* after:' "$log") checks after the restore)" ||
		not_ok "restore $run: its virtio-blk queue, MSI-X and disk work # $(grep -E '^(not ok|#)' "$log" | head -5)"
	[ "$(sector "$disk" 3)" = "$(pattern yun-restored- $byte)" ] && ok "restore $run: sector 3 on the host holds its write" ||
		not_ok "restore $run: sector 3 on the host holds its write # $(sector "$disk" 3 | head -c 40)"
	grep -q "ready" "$log" && not_ok "restore $run: no second boot # it printed ready again" ||
		ok "restore $run: no second boot (no \"ready\" again)"
	ms=$(grep -o 'vCPU 0 runs [0-9.]* ms' "$LOGS/snapshot-restore$run.stderr" | grep -o '[0-9.]* ms')
	[ -n "$ms" ] && ok "restore $run: vCPU 0 ran $ms after the restore began" ||
		not_ok "restore $run: the VMM logs its restore time # see $LOGS/snapshot-restore$run.stderr"
done
[ "$(sector "$disk" 1)" = "$(pattern yun-sector- 1)" ] && ok "sector 1 unchanged" || not_ok "sector 1 unchanged"

# A third restore through the API, as a management layer does it: a yun-vmm with only its
# socket, then PUT /snapshot/load.
rm -f "$local/in" "$SOCK"
mkfifo "$local/in"
"$BUILD/yun-vmm" --api-socket "$SOCK" <"$local/in" >"$dir/restore3.log" 2>"$LOGS/snapshot-restore3.stderr" &
rpid=$!
pids+=($rpid)
# A call it does not answer says whether it is gone, and its last words (tests/api/lib.sh).
pid=$rpid VMM_STDERR=$LOGS/snapshot-restore3.stderr
exec 3>"$local/in"
if wait_socket; then ok "restore 3: yun-vmm waits for the API"; else not_ok "restore 3: yun-vmm waits for the API"; fi
expect "snapshot/load: a directory without a snapshot: 404" PUT /snapshot/load "{\"path\": \"$local/none\"}" 404 "$err"
expect "snapshot/load: no path: 400" PUT /snapshot/load '{}' 400 "$err"
expect "snapshot/load: 204" PUT /snapshot/load "{\"path\": \"$snap\"}" 204
expect "GET /vm: Running, the snapshot's configuration" GET /vm - 200 \
	'j["state"] == "Running" and j["config"]["cpus"] == 2 and len(j["config"]["disk"]) == 1'
expect "snapshot/load once started: 409" PUT /snapshot/load "{\"path\": \"$snap\"}" 409 "$err"
# The restored guest waits for its byte: its memory is the snapshot's file, mapped private
# (copy-on-write), and only the pages it touched are resident.
for _ in $(seq 100); do
	maps=$(grep " $snap/memory\$" /proc/$rpid/maps)
	[ -n "$maps" ] && break
	sleep 0.1
done
sleep 0.5
rss=$(awk '/^VmRSS:/ {print $2}' /proc/$rpid/status)
[ -n "$maps" ] && [ "$(echo "$maps" | awk '{print substr($2, 4, 1)}' | sort -u)" = p ] &&
	ok "restore 3: guest memory is the snapshot's file, mapped private" ||
	not_ok "restore 3: guest memory is the snapshot's file, mapped private # $maps"
[ -n "$rss" ] && [ "$rss" -lt $((48 * 1024)) ] &&
	ok "restore 3: loaded lazily: $rss KiB resident for a 128 MiB guest" ||
	not_ok "restore 3: loaded lazily # VmRSS $rss KiB"
printf 'D' >&3
exec 3>&-
wait_exit "$rpid" 60 hang_report
status=$?
[ $status = 0 ] && grep -q "^# got byte 68" "$dir/restore3.log" && grep -q "^ok .* after: sector 3 reads back" "$dir/restore3.log" &&
	[ "$(sector "$disk" 3)" = "$(pattern yun-restored- 68)" ] &&
	ok "restore 3: the guest goes on, takes byte 68, writes its sector, exits 0" ||
	not_ok "restore 3: the guest goes on # status $status; $(head -c 300 "$dir/restore3.log"); see $LOGS/snapshot-restore3.stderr"

# Snapshots to refuse, each with one clear line and status 1, before the guest runs.
refused() { # refused WHAT DIR TEXT
	"$BUILD/yun-vmm" --restore "$2" </dev/null >"$dir/refused.log" 2>"$dir/refused.stderr"
	local st=$?
	if [ $st = 1 ] && grep -q "$3" "$dir/refused.stderr" && ! [ -s "$dir/refused.log" ]; then
		ok "$1: refused ($(grep -m1 "$3" "$dir/refused.stderr" | cut -c1-110))"
	else
		not_ok "$1: refused with '$3' # status $st: $(head -3 "$dir/refused.stderr")"
	fi
}
bad=$local/bad
cp -r "$snap" "$bad"
printf '\x63\x00\x00\x00' | dd of="$bad/state" bs=1 seek=8 conv=notrunc status=none
refused "a snapshot of another format version" "$bad" "format version 99"
cp "$snap/state" "$bad/state"
truncate -s 1000 "$bad/state"
refused "a truncated state file" "$bad" "truncated\|bad section"
cp "$snap/state" "$bad/state"
truncate -s $((64 << 20)) "$bad/memory"
refused "a memory file of the wrong size" "$bad" "not 128 MiB"
rm -rf "$bad"
cp -r "$snap" "$bad"
python3 -c 'import json,sys; p=sys.argv[1]; c=json.load(open(p)); c["cpus"]=1; json.dump(c, open(p,"w"))' "$bad/config.json"
refused "a configuration with other vCPUs than the snapshot's" "$bad" "2 vCPUs and 128 MiB in the snapshot"
rm -f "$bad/state"
refused "a directory without a state file" "$bad" "state: No such file"
"$BUILD/yun-vmm" --restore "$snap" --config "$snap/config.json" </dev/null >/dev/null 2>"$dir/refused.stderr"
[ $? = 1 ] && grep -q "no --config with it" "$dir/refused.stderr" && ok "--restore with --config: refused" ||
	not_ok "--restore with --config: refused # $(cat "$dir/refused.stderr")"
echo "1..$n"
