# shellcheck shell=bash disable=SC2154 # $dir: preboot.sh's
# Firecracker's pre-boot endpoints before a VM exists (no KVM needed); sourced by preboot.sh,
# whose $dir it shares. A yun-vmm of its own is configured a part at a time: each endpoint's
# good input changes what GET /vm shows, each bad one gets a 400 with {"error", "fault_message"}
# and changes nothing; the configuration built this way is the one PUT /vm/config builds from
# the equivalent options.

SOCK=$dir/fc.sock
"$BUILD/yun-vmm" --api-socket "$SOCK" --console none 2>"$LOGS/api-firecracker.stderr" &
fcpid=$!
if wait_socket; then ok "firecracker: yun-vmm waits on its socket"; else
	not_ok "firecracker: yun-vmm waits on its socket # see $LOGS/api-firecracker.stderr"
	kill $fcpid 2>/dev/null
	return 0
fi
fault='isinstance(j, dict) and sorted(j) == ["error", "fault_message"] and j["error"] == j["fault_message"]'
# unchanged WHAT: the configuration is what it was when `snap` last ran.
snap() { call GET /vm; before=$(jget 'json.dumps(j["config"], sort_keys=True)'); }
unchanged() {
	call GET /vm
	if [ "$(jget 'json.dumps(j["config"], sort_keys=True)')" = "$before" ]; then ok "$1"; else
		not_ok "$1 # now $(jget 'j["config"]')"
	fi
}
KERNEL=$BUILD/guest/test-guest.elf
touch "$dir/initrd.img"
truncate -s 1M "$dir/root.img" "$dir/data.img"
truncate -s 1000 "$dir/odd.img"

# boot-source
snap
expect "boot-source: a kernel that does not exist: 400 naming it" PUT /boot-source \
	'{"kernel_image_path": "'"$dir"'/vmlinux"}' 400 "$fault and 'vmlinux' in j['error']"
expect "boot-source: a file that is no kernel: 400" PUT /boot-source \
	'{"kernel_image_path": "'"$dir"'/initrd.img"}' 400 "$fault and 'neither a bzImage' in j['error']"
expect "boot-source: an unknown field: 400 naming it" PUT /boot-source \
	'{"kernel_image_path": "'"$KERNEL"'", "kernel_args": "x"}' 400 "$fault and 'kernel_args' in j['error']"
expect "boot-source: a field of the wrong type: 400 naming it" PUT /boot-source \
	'{"kernel_image_path": 3}' 400 "$fault and 'kernel_image_path: want a string' in j['error']"
expect "boot-source: without kernel_image_path: 400" PUT /boot-source '{"boot_args": "x"}' 400 \
	"$fault and 'kernel_image_path is required' in j['error']"
expect "boot-source: an initrd that does not exist: 400 naming it" PUT /boot-source \
	'{"kernel_image_path": "'"$KERNEL"'", "initrd_path": "'"$dir"'/nothing"}' 400 "$fault and 'nothing' in j['error']"
expect "boot-source: malformed JSON: 400" PUT /boot-source '{"kernel_image_path": ' 400 "$fault"
unchanged "boot-source: after the bad ones, the configuration is unchanged"
expect "boot-source: kernel, initrd, boot_args: 204" PUT /boot-source \
	'{"kernel_image_path": "'"$KERNEL"'", "initrd_path": "'"$dir"'/initrd.img", "boot_args": "bench=wait quiet"}' 204
expect "boot-source: GET /vm shows them" GET /vm - 200 \
	"j['config']['kernel'] == '$KERNEL' and j['config']['initrd'] == '$dir/initrd.img' and j['config']['cmdline'] == 'bench=wait quiet'"

# machine-config
snap
expect "machine-config: memory the command line refuses: 400 with its message" PUT /machine-config \
	'{"vcpu_count": 2, "mem_size_mib": 7}' 400 "$fault and '--memory 7: want an even number' in j['error']"
expect "machine-config: 0 vCPUs: 400" PUT /machine-config '{"vcpu_count": 0, "mem_size_mib": 256}' 400 \
	"$fault and '--cpus 0' in j['error']"
expect "machine-config: a negative count: 400" PUT /machine-config '{"vcpu_count": -1, "mem_size_mib": 256}' 400 \
	"$fault and 'vcpu_count: want a whole number' in j['error']"
expect "machine-config: without mem_size_mib: 400" PUT /machine-config '{"vcpu_count": 2}' 400 \
	"$fault and 'mem_size_mib is required' in j['error']"
expect "machine-config: smt true: 400, not supported" PUT /machine-config \
	'{"vcpu_count": 2, "mem_size_mib": 256, "smt": true}' 400 "$fault and 'smt' in j['error']"
expect "machine-config: track_dirty_pages true: 400, not supported" PUT /machine-config \
	'{"vcpu_count": 2, "mem_size_mib": 256, "track_dirty_pages": true}' 400 "$fault and 'track_dirty_pages' in j['error']"
expect "machine-config: a CPU template: 400" PUT /machine-config \
	'{"vcpu_count": 2, "mem_size_mib": 256, "cpu_template": "T2"}' 400 "$fault and 'T2' in j['error']"
expect "machine-config: an unknown field: 400" PUT /machine-config \
	'{"vcpu_count": 2, "mem_size_mib": 256, "ht_enabled": false}' 400 "$fault and 'ht_enabled' in j['error']"
unchanged "machine-config: after the bad ones, the configuration is unchanged"
expect "machine-config: 2 vCPUs, 256 MiB, smt and track_dirty_pages false: 204" PUT /machine-config \
	'{"vcpu_count": 2, "mem_size_mib": 256, "smt": false, "track_dirty_pages": false, "cpu_template": "None"}' 204
expect "machine-config: GET /machine-config shows it" GET /machine-config - 200 \
	'j["vcpu_count"] == 2 and j["mem_size_mib"] == 256 and j["smt"] is False and j["track_dirty_pages"] is False'
expect "machine-config: PATCH mem_size_mib alone: 204" PATCH /machine-config '{"mem_size_mib": 512}' 204
expect "machine-config: GET /vm: 2 vCPUs kept, 512 MiB" GET /vm - 200 \
	'j["config"]["cpus"] == 2 and j["config"]["memory"] == 512'
expect "machine-config: PATCH with a bad value: 400" PATCH /machine-config '{"vcpu_count": 256}' 400 \
	"$fault and '--cpus 256' in j['error']"
expect "machine-config: DELETE: 405" DELETE /machine-config - 405 "$fault"

# drives
snap
expect "drives: drive_id in the body differs from the path's: 400" PUT /drives/rootfs \
	'{"drive_id": "root", "path_on_host": "'"$dir"'/root.img", "is_root_device": true, "is_read_only": false}' 400 \
	"$fault and 'drive_id' in j['error']"
expect "drives: a file that does not exist: 400 naming it" PUT /drives/rootfs \
	'{"drive_id": "rootfs", "path_on_host": "'"$dir"'/none.img", "is_root_device": true}' 400 \
	"$fault and 'none.img' in j['error']"
expect "drives: a size that is not a multiple of 512: 400 with the command line's message" PUT /drives/odd \
	'{"drive_id": "odd", "path_on_host": "'"$dir"'/odd.img", "is_root_device": false}' 400 \
	"$fault and 'size 1000 is not a multiple of 512' in j['error']"
expect "drives: an id over 20 bytes (the virtio-blk serial): 400" PUT /drives/abcdefghijklmnopqrstu \
	'{"drive_id": "abcdefghijklmnopqrstu", "path_on_host": "'"$dir"'/root.img", "is_root_device": false}' 400 "$fault"
expect "drives: without is_root_device: 400" PUT /drives/rootfs \
	'{"drive_id": "rootfs", "path_on_host": "'"$dir"'/root.img"}' 400 "$fault and 'is_root_device' in j['error']"
expect "drives: a partuuid: 400, not supported" PUT /drives/rootfs \
	'{"drive_id": "rootfs", "path_on_host": "'"$dir"'/root.img", "is_root_device": true, "partuuid": "0eaa91a0-01"}' 400 \
	"$fault and 'partuuid' in j['error']"
expect "drives: a one-time burst: 400, not supported" PUT /drives/rootfs \
	'{"drive_id": "rootfs", "path_on_host": "'"$dir"'/root.img", "is_root_device": true,
	  "rate_limiter": {"bandwidth": {"size": 1000, "refill_time": 100, "one_time_burst": 5}}}' 400 \
	"$fault and 'one_time_burst' in j['error']"
expect "drives: a token bucket without refill_time: 400" PUT /drives/rootfs \
	'{"drive_id": "rootfs", "path_on_host": "'"$dir"'/root.img", "is_root_device": true,
	  "rate_limiter": {"ops": {"size": 1000}}}' 400 "$fault and 'refill_time is required' in j['error']"
expect "drives: a bad io_engine: 400" PUT /drives/rootfs \
	'{"drive_id": "rootfs", "path_on_host": "'"$dir"'/root.img", "is_root_device": true, "io_engine": "Fast"}' 400 \
	"$fault and 'Fast' in j['error']"
unchanged "drives: after the bad ones, the configuration is unchanged"
expect "drives: a data disk first: 204" PUT /drives/data \
	'{"drive_id": "data", "path_on_host": "'"$dir"'/data.img", "is_root_device": false, "is_read_only": true,
	  "io_engine": "Sync", "rate_limiter": {"bandwidth": {"size": 1048576, "refill_time": 100}, "ops": {"size": 50, "refill_time": 1000}}}' 204
expect "drives: then the root device: 204" PUT /drives/rootfs \
	'{"drive_id": "rootfs", "path_on_host": "'"$dir"'/root.img", "is_root_device": true, "is_read_only": false, "cache_type": "Writeback"}' 204
expect "drives: the root device goes first (/dev/vda), the rate limits become bw= and ops= a second" GET /vm - 200 \
	"([d['serial'] for d in j['config']['disk']] == ['rootfs', 'data'] and j['config']['disk'][0]['root'] is True and
	 'root' not in j['config']['disk'][1] and j['config']['disk'][1]['readonly'] and j['config']['disk'][1]['engine'] == 'sync' and
	 j['config']['disk'][1]['bw'] == 10485760 and j['config']['disk'][1]['ops'] == 50)"
expect "drives: a second root device: 400" PUT /drives/data \
	'{"drive_id": "data", "path_on_host": "'"$dir"'/data.img", "is_root_device": true}' 400 \
	"$fault and 'rootfs' in j['error'] and 'root device' in j['error']"
expect "drives: the same id again replaces that drive: 204" PUT /drives/data \
	'{"drive_id": "data", "path_on_host": "'"$dir"'/data.img", "is_root_device": false, "is_read_only": false}' 204
expect "drives: ... in its place, with the new settings" GET /vm - 200 \
	"([d['serial'] for d in j['config']['disk']] == ['rootfs', 'data'] and not j['config']['disk'][1]['readonly'] and
	 'bw' not in j['config']['disk'][1])"
expect "drives: a path with no id: 400" PUT /drives/ '{"drive_id": "", "path_on_host": "x", "is_root_device": false}' 400 "$fault"
expect "drives: GET: 405" GET /drives/data - 405 "$fault"

# network-interfaces
snap
expect "network-interfaces: iface_id differs from the path's: 400" PUT /network-interfaces/eth0 \
	'{"iface_id": "eth1", "host_dev_name": "tap0"}' 400 "$fault and 'iface_id' in j['error']"
expect "network-interfaces: a multicast guest_mac: 400 with the command line's message" PUT /network-interfaces/eth0 \
	'{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "01:00:5e:00:00:01"}' 400 "$fault and '--net: mac=' in j['error']"
expect "network-interfaces: a tap name too long: 400" PUT /network-interfaces/eth0 \
	'{"iface_id": "eth0", "host_dev_name": "a-tap-name-of-20-bytes"}' 400 "$fault and 'tap name' in j['error']"
expect "network-interfaces: an rx limit without the same tx limit: 400" PUT /network-interfaces/eth0 \
	'{"iface_id": "eth0", "host_dev_name": "tap0", "rx_rate_limiter": {"ops": {"size": 100, "refill_time": 1000}}}' 400 \
	"$fault and 'both ways' in j['error']"
expect "network-interfaces: an mtu: 400, not supported" PUT /network-interfaces/eth0 \
	'{"iface_id": "eth0", "host_dev_name": "tap0", "mtu": 1400}' 400 "$fault and 'mtu' in j['error']"
unchanged "network-interfaces: after the bad ones, the configuration is unchanged"
expect "network-interfaces: eth0 on tap0, its MAC, the same limit both ways: 204" PUT /network-interfaces/eth0 \
	'{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "AA:FC:00:00:00:01",
	  "rx_rate_limiter": {"bandwidth": {"size": 125000, "refill_time": 1000}},
	  "tx_rate_limiter": {"bandwidth": {"size": 125000, "refill_time": 1000}}}' 204
expect "network-interfaces: a second NIC: 400 saying one at most" PUT /network-interfaces/eth1 \
	'{"iface_id": "eth1", "host_dev_name": "tap1"}' 400 "$fault and 'one NIC' in j['error'] and 'eth0' in j['error']"
expect "network-interfaces: GET /vm shows the NIC" GET /vm - 200 \
	"j['config']['net'] == {'tap': 'tap0', 'mac': 'aa:fc:00:00:00:01', 'queues': 1, 'bw': 125000, 'id': 'eth0'}"
expect "network-interfaces: eth0 again replaces it: 204" PUT /network-interfaces/eth0 \
	'{"iface_id": "eth0", "host_dev_name": "tap7"}' 204
expect "network-interfaces: ... with the default MAC and no limit" GET /vm - 200 \
	"j['config']['net'] == {'tap': 'tap7', 'mac': '52:54:00:12:34:56', 'queues': 1, 'id': 'eth0'}"

# vsock
snap
expect "vsock: a reserved CID: 400 with the command line's message" PUT /vsock \
	'{"guest_cid": 2, "uds_path": "'"$dir"'/v.sock"}' 400 "$fault and 'vsock cid 2' in j['error']"
expect "vsock: a uds_path that is a file: 400" PUT /vsock \
	'{"guest_cid": 3, "uds_path": "'"$dir"'/initrd.img"}' 400 "$fault and 'not a socket' in j['error']"
expect "vsock: without uds_path: 400" PUT /vsock '{"guest_cid": 3}' 400 "$fault and 'uds_path is required' in j['error']"
unchanged "vsock: after the bad ones, the configuration is unchanged"
expect "vsock: CID 3 and a socket path, vsock_id ignored: 204" PUT /vsock \
	'{"vsock_id": "vsock0", "guest_cid": 3, "uds_path": "'"$dir"'/v.sock"}' 204
expect "vsock: GET /vm shows it" GET /vm - 200 "j['config']['vsock'] == {'cid': 3, 'uds': '$dir/v.sock'}"

# The same VM through PUT /vm/config: the same configuration.
call GET /vm
fc_config=$(jget 'json.dumps(j["config"], sort_keys=True)')
expect "PUT /vm/config of the equivalent options: 204" PUT /vm/config \
	'{"kernel": "'"$KERNEL"'", "initrd": "'"$dir"'/initrd.img", "cmdline": "bench=wait quiet", "cpus": 2, "memory": 512,
	  "disk": [{"path": "'"$dir"'/root.img", "serial": "rootfs", "root": true},
	           {"path": "'"$dir"'/data.img", "serial": "data"}],
	  "net": {"tap": "tap7", "id": "eth0"}, "vsock": {"cid": 3, "uds": "'"$dir"'/v.sock"}}' 204
call GET /vm
vm_config=$(jget 'json.dumps(j["config"], sort_keys=True)')
[ "$fc_config" = "$vm_config" ] && ok "firecracker: the configuration is the one PUT /vm/config builds" ||
	not_ok "firecracker: the configuration is the one PUT /vm/config builds # $fc_config vs $vm_config"
expect "firecracker: boot-source without boot_args or initrd: back to the defaults" PUT /boot-source \
	'{"kernel_image_path": "'"$KERNEL"'"}' 204
expect "firecracker: ... as GET /vm shows" GET /vm - 200 \
	"'initrd' not in j['config'] and j['config']['cmdline'] == 'console=ttyS0 reboot=k panic=1'"
expect "firecracker: Stop: 204" PUT /actions '{"action_type": "Stop"}' 204
wait $fcpid
status=$?
[ "$status" = 0 ] && ok "firecracker: yun-vmm exits 0 after Stop" || not_ok "firecracker: yun-vmm exits 0 after Stop # status $status"
