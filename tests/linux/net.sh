#!/usr/bin/env bash
# virtio-net on a tap, proved by Linux's own virtio_net driver: Debian's cloud kernel on yun-vmm
# with a busybox initramfs, the tap in a network namespace of the test's own. The guest pings
# the host (small and fragmented packets), sends it 4 MiB over TCP (checksum and segmentation
# offloads to the tap) and receives 4 MiB from it (mergeable receive buffers); both ends compare
# checksums. The NIC has two queue pairs (YUN_NET_QUEUES, default 2) on a multi-queue tap and the
# guest two vCPUs: Linux turns both pairs on through the control queue, and the two transfers,
# pinned one to each vCPU, go through different pairs. A tap made single-queue beforehand is
# refused with a clear message. Needs /dev/kvm with real ring-0 virtualization
# (tests/kvmhost/run.sh provides one) and CAP_NET_ADMIN; cleans up its namespace.
set -u
cd "$(dirname "$0")/../.."
. tests/linux/lib.sh
skip_without_ring0
load_kit
listeners=
netns_cleanup_hook() { [ -z "$listeners" ] || kill $listeners 2>/dev/null; }
netns_setup yun-test
head -c 4M /dev/urandom >"$dir/to-guest"
want_rx=$(md5sum <"$dir/to-guest" | cut -d' ' -f1)

mac=52:54:00:ab:cd:ef
queues=${YUN_NET_QUEUES:-2}
log=$LOGS/linux-net-guest.log
run="ip,link,set,eth0,up;ip,addr,add,10.0.2.15/24,dev,eth0;cat,/sys/class/net/eth0/address"
run+=";echo,queues,\$(ls,/sys/class/net/eth0/queues)"
run+=";ping,-c,3,10.0.2.1;ping,-c,3,-s,8000,10.0.2.1"
run+=";head,-c,4194304,/dev/urandom,>/tmp/out;echo,tx-md5,\$(md5sum,</tmp/out)"
# One transfer on each vCPU: Linux sends on the queue of the vCPU (XPS), and the tap answers a
# flow on the queue it last came from.
run+=";taskset,1,nc,10.0.2.1,5000,</tmp/out;sleep,1"
run+=";taskset,2,nc,10.0.2.1,5001,>/tmp/in;echo,rx-md5,\$(md5sum,</tmp/in);wc,-c,/tmp/in"
# One boot of the guest with fresh host ends; sets status (yun-vmm's exit status, or "stall"
# when the guest's kernel reported an RCU stall: it is killed then rather than left to time out).
attempt() {
	local vmm watch
	[ -z "$listeners" ] || kill $listeners 2>/dev/null
	ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null
	: >"$log"
	rm -f "$dir/stalled"
	start=$(date +%s)
	in_ns timeout "$TIMEOUT" "$VMM" --kernel "$kdir/vmlinuz" --initrd "$initrd" --cpus 2 \
		--memory 256 --net "tap=yuntap0,mac=$mac,queues=$queues" --console "file=$log" --no-reboot \
		--cmdline "console=ttyS0 panic=-1 yun.run=$run" 2>"$log.stderr" &
	vmm=$!
	tap_up yuntap0 10.0.2.1/24
	# The host's ends: a receiver that keeps its side open, and a sender. (sleep holds nc's
	# stdin open: busybox nc stops at EOF there; it must not hold the test's output.)
	sleep 600 2>/dev/null | in_ns busybox nc -l -p 5000 >"$dir/from-guest" &
	listeners=$(pgrep -P $$ -x sleep | tr '\n' ' ')
	in_ns busybox nc -l -p 5001 <"$dir/to-guest" &
	(
		while kill -0 "$vmm" 2>/dev/null; do
			if grep -qE 'rcu: INFO: rcu_[a-z]+ detected stalls' "$log" 2>/dev/null; then
				echo stall >"$dir/stalled"
				ip netns pids "$ns" | xargs -r kill
				break
			fi
			sleep 2
		done
	) &
	watch=$!
	wait "$vmm"
	status=$?
	kill "$watch" 2>/dev/null
	wait "$watch" 2>/dev/null
	[ -e "$dir/stalled" ] && status=stall
}

# A tap that exists without IFF_MULTI_QUEUE cannot give a queue a pair: one clear message.
if [ "$queues" -gt 1 ]; then
	in_ns ip tuntap add dev yunsq0 mode tap
	in_ns timeout 60 "$VMM" --kernel "$kdir/vmlinuz" --net "tap=yunsq0,queues=$queues" \
		--console none >/dev/null 2>"$dir/sq.stderr"
	sq=$?
	if [ "$sq" = 1 ] && grep -q 'tap yunsq0: .*must be multi-queue' "$dir/sq.stderr"; then
		ok "queues=$queues on a single-queue tap is refused: $(grep -m1 yunsq0 "$dir/sq.stderr")"
	else
		not_ok "queues=$queues on a single-queue tap is refused (status $sq: $(head -c 300 "$dir/sq.stderr"))"
	fi
	in_ns ip link del yunsq0
fi

attempt
if [ "$status" = 3 ] || [ "$status" = stall ]; then
	# An open problem (docs/testing.md): in the nested KVM host (tests/kvmhost) about one run
	# in eight has the 2-vCPU guest triple-fault or freeze a vCPU during the 4 MiB transfer,
	# with no kernel message first; QEMU with the same guest did not in 26 runs. Until it is
	# understood, one more boot separates it from a fault that repeats; the first attempt's
	# logs are kept and this line says it happened.
	echo "# attempt 1 ended with status $status ($(head -c 200 "$log.stderr" | tr '\n' ' ')): once more"
	cp "$log" "$log.attempt1"
	cp "$log.stderr" "$log.stderr.attempt1"
	attempt
fi
echo "# exit status $status after $(($(date +%s) - start)) s"
grep 'net0' "$log.stderr" | sed 's/^/# /'
if [ "$status" = 0 ]; then
	ok "the guest powered off and yun-vmm exited 0"
else
	not_ok "yun-vmm exit status $status # $(head -c 300 "$log.stderr")"
fi
expect "Linux's virtio_net driver bound our NIC with the MAC we gave" $"^$mac"$'\r?$' "$log"
expect "ping: 3 of 3 small packets answered" '^3 packets transmitted, 3 packets received' "$log"
expect "ping: 8000-byte (fragmented) packets answered" \
	'^8008 bytes from 10\.0\.2\.1' "$log"
tx=$(sed -n 's/^tx-md5 \([0-9a-f]*\).*/\1/p' "$log" | head -n1)
got=$(md5sum <"$dir/from-guest" | cut -d' ' -f1)
if [ -n "$tx" ] && [ "$tx" = "$got" ]; then
	ok "4 MiB from the guest over TCP arrive intact ($(stat -c %s "$dir/from-guest") bytes)"
else
	not_ok "4 MiB from the guest over TCP arrive intact (guest $tx, host $got, $(stat -c %s "$dir/from-guest") bytes)"
fi
rx=$(sed -n 's/^rx-md5 \([0-9a-f]*\).*/\1/p' "$log" | head -n1)
if [ "$rx" = "$want_rx" ]; then
	ok "4 MiB to the guest over TCP arrive intact"
else
	not_ok "4 MiB to the guest over TCP arrive intact (host $want_rx, guest '$rx')"
fi
if [ "$queues" -gt 1 ]; then
	expect "Linux turned $queues queue pairs on (VQ_PAIRS_SET)" "net0: $queues queue pairs in service" \
		"$log.stderr"
	want="queues$(for i in $(seq 0 $((queues - 1))); do printf ' rx-%s' "$i"; done)"
	want+="$(for i in $(seq 0 $((queues - 1))); do printf ' tx-%s' "$i"; done)"
	expect "the guest's eth0 has $queues receive and $queues transmit queues" "^$want"$'\r?$' "$log"
	# Pairs that carried packets each way, from yun-vmm's per-pair counters at exit.
	busy=$(sed -n 's/.*net0 pair [0-9]*: rx \([0-9]*\) packets.*; tx \([0-9]*\) packets.*/\1 \2/p' \
		"$log.stderr" | awk '$1 > 0 && $2 > 0' | wc -l)
	if [ "$busy" -gt 1 ]; then
		ok "traffic went through $busy queue pairs"
	else
		not_ok "traffic went through more than one queue pair ($busy did)"
	fi
fi
if grep -q 'net0: .* 0 dropped; tx .* 0 dropped' "$log.stderr"; then
	ok "yun-vmm dropped no packet"
else
	not_ok "yun-vmm dropped no packet: $(grep 'net0:' "$log.stderr")"
fi
echo "1..$n"
