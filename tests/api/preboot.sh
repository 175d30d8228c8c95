#!/usr/bin/env bash
# The control API before a VM exists (no KVM needed): yun-vmm started with only --api-socket
# waits to be configured; every class of bad input gets a 4xx with a JSON message and
# changes nothing; a good configuration is described back; Stop ends the process with 0.
# Then Firecracker's pre-boot endpoints (tests/api/firecracker.sh) and --jail (tests/api/jail.sh).
set -u
cd "$(dirname "$0")/../.."
. tests/api/lib.sh

dir=$(mktemp -d)
SOCK=$dir/api.sock
"$BUILD/yun-vmm" --api-socket "$SOCK" --console none 2>"$LOGS/api-preboot.stderr" &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
if wait_socket; then ok "yun-vmm --api-socket without --kernel serves the socket"; else
	not_ok "yun-vmm --api-socket serves the socket # see $LOGS/api-preboot.stderr"
	echo "1..$n"
	exit 1
fi

err='isinstance(j, dict) and list(j) == ["error"] and len(j["error"]) > 5'
expect "GET /vm: NotStarted, with the default configuration" GET /vm - 200 \
	'j["state"] == "NotStarted" and j["config"]["memory"] == 128 and "kernel" not in j["config"]'
expect "malformed JSON: 400 saying where" PUT /vm/config '{"kernel": ' 400 "$err and 'line 1' in j['error']"
expect "a body that is not an object: 400" PUT /vm/config '[1, 2]' 400 "$err"
expect "an empty body: 400" PUT /vm/config '' 400 "$err"
expect "an unknown field: 400 naming it" PUT /vm/config '{"kernl": "x"}' 400 "$err and 'kernl' in j['error']"
expect "a field of the wrong type: 400" PUT /vm/config '{"cpus": [[1]]}' 400 "$err"
expect "a value out of range: 400 with the command line's message" PUT /vm/config '{"memory": 7}' 400 \
	"$err and '--memory 7' in j['error']"
expect "a bad disk key: 400" PUT /vm/config '{"disk": {"path": "a.img", "speed": 1}}' 400 "$err and 'speed' in j['error']"
expect "options that are not a VM's (help): 400" PUT /vm/config '{"help": true}' 400 "$err"
expect "the console cannot be changed through the API: 400" PUT /vm/config '{"console": "stdio"}' 400 "$err"
expect "duplicate keys: 400" PUT /vm/config '{"cpus": 1, "cpus": 2}' 400 "$err"
big=$(head -c 70000 /dev/zero | tr '\0' ' ')
expect "a body over 64 KiB: 413" PUT /vm/config "{$big}" 413 "$err"
expect "after all that, the configuration is unchanged" GET /vm - 200 \
	'j["config"]["memory"] == 128 and j["config"]["disk"] == []'
expect "an unknown path: 404" GET /nothing - 404 "$err"
expect "a known path, wrong method: 405" DELETE /vm - 405 "$err"
expect "an unknown action: 400 listing the actions" PUT /actions '{"action_type": "Explode"}' 400 \
	"$err and 'InstanceStart' in j['error']"
expect "an action with an extra field: 400" PUT /actions '{"action_type": "Pause", "now": true}' 400 "$err"
expect "an action of the wrong type: 400" PUT /actions '{"action_type": 3}' 400 "$err"
expect "Pause before start: 409 (wrong state)" PUT /actions '{"action_type": "Pause"}' 409 \
	"$err and 'NotStarted' in j['error']"
expect "PATCH /vm with a bad state: 400" PATCH /vm '{"state": "Asleep"}' 400 "$err"
expect "registers before start: 409" GET /vcpus/0/registers - 409 "$err"
expect "a vCPU path that is not one: 404" GET /vcpus/x/registers - 404 "$err"
expect "metrics before start: 409" GET /metrics - 409 "$err"
expect "memory without gpa: 400" GET '/memory?len=4' - 400 "$err"
expect "memory before start: 409" GET '/memory?gpa=0&len=4' - 409 "$err"
expect "memory by gva before start: 409" GET '/memory?gva=0x1000&vcpu=0&len=4' - 409 "$err"
expect "memory by gva and gpa at once: 400" GET '/memory?gva=0&gpa=0&len=4' - 400 "$err"
expect "memory by gva without len: 400" GET '/memory?gva=0x1000' - 400 "$err"
expect "memory by gva, over 64 KiB: 400" GET '/memory?gva=0&len=65537' - 400 "$err"
expect "InstanceStart without a kernel: 400 saying so" PUT /actions '{"action_type": "InstanceStart"}' 400 \
	"$err and 'kernel' in j['error']"

touch "$dir/disk.img"
truncate -s 1M "$dir/disk.img"
cfg='{"kernel": "'$dir/nokernel'", "memory": 256, "cpus": 2, "rng": true, "cmdline": "console=ttyS0 quiet",
      "disk": [{"path": "'$dir/disk.img'", "readonly": true, "serial": "d0"}]}'
expect "a whole configuration: 204" PUT /vm/config "$cfg" 204
expect "GET /vm describes it" GET /vm - 200 \
	'j["config"]["memory"] == 256 and j["config"]["cpus"] == 2 and j["config"]["rng"] and j["config"]["cmdline"] == "console=ttyS0 quiet" and j["config"]["disk"][0]["readonly"] and j["config"]["disk"][0]["serial"] == "d0"'
expect "InstanceStart with a kernel that does not exist: 400 naming it, still NotStarted" \
	PUT /actions '{"action_type": "InstanceStart"}' 400 "$err and 'nokernel' in j['error']"
expect "... and the state is still NotStarted" GET /vm - 200 'j["state"] == "NotStarted"'
expect "Stop: 204" PUT /actions '{"action_type": "Stop"}' 204
status=0
for _ in $(seq 50); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
wait $pid
status=$?
[ "$status" = 0 ] && ok "yun-vmm exits 0 after Stop" || not_ok "yun-vmm exits 0 after Stop # status $status"
[ ! -e "$SOCK" ] && ok "the socket file is removed at exit" || not_ok "the socket file is removed at exit"

# --config FILE: the same JSON as the API's, with the command line adding to it.
echo '{"memory": 7}' >"$dir/bad.json"
out=$("$BUILD/yun-vmm" --config "$dir/bad.json" 2>&1)
status=$?
[ $status = 1 ] && [[ $out == *"--memory 7"* ]] && ok "--config with a bad value: status 1 and the option's message" ||
	not_ok "--config with a bad value: status $status, '$out'"
echo '{"memory": 64,' >"$dir/broken.json"
out=$("$BUILD/yun-vmm" --config "$dir/broken.json" 2>&1)
status=$?
[ $status = 1 ] && [[ $out == *"broken.json: line"* ]] && ok "--config with malformed JSON: status 1, file and line" ||
	not_ok "--config with malformed JSON: status $status, '$out'"
echo '{"config": "x.json"}' >"$dir/nested.json"
out=$("$BUILD/yun-vmm" --config "$dir/nested.json" 2>&1)
[ $? = 1 ] && [[ $out == *"cannot include another"* ]] && ok "--config cannot nest" || not_ok "--config cannot nest: '$out'"
echo "{\"kernel\": \"$dir/nokernel\"}" >"$dir/k.json"
out=$("$BUILD/yun-vmm" --config "$dir/k.json" --kernel /etc/hostname 2>&1)
[ $? = 1 ] && [[ $out == *"/etc/hostname: neither a bzImage"* ]] && ok "options on the command line override the file's" ||
	not_ok "options on the command line override the file's: '$out'"

# The sandbox bites: the test-only build's threads try a call their filter refuses.
for role in api main; do
	out=$(YUN_SANDBOX_SELFTEST=$role "$BUILD/yun-vmm-sandbox-test" --api-socket "$dir/selftest.sock" \
		--kernel "$BUILD/guest/test-guest.elf" --console none 2>&1)
	status=$?
	if [ $status = $((128 + 31)) ] && [[ $out == *"forbidden system call"* ]]; then
		ok "sandbox: a forbidden call in the $role thread ends yun-vmm with SIGSYS"
	else
		not_ok "sandbox: a forbidden call in the $role thread ends yun-vmm with SIGSYS # status $status: $out"
	fi
done

. tests/api/firecracker.sh
. tests/api/jail.sh
echo "1..$n"
