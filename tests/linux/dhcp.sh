#!/usr/bin/env bash
# DHCP through our virtio-net: Debian's cloud kernel on yun-vmm with a busybox initramfs, its
# NIC on a tap in a network namespace of the test's own, where dnsmasq serves DHCP and nothing
# else. Debian's cloud kernel has no IP_PNP (no `ip=dhcp`), so the client is busybox's udhcpc
# in the guest's userspace: it broadcasts through Linux's virtio_net and our device, takes a
# lease, applies it, and pings the server. The guest's log, dnsmasq's log and its lease file
# must all tell the same exchange for our MAC. Needs /dev/kvm with real ring-0 virtualization
# (tests/kvmhost/run.sh provides one), CAP_NET_ADMIN and dnsmasq; cleans up its namespace,
# dnsmasq and its files however it ends.
set -u
cd "$(dirname "$0")/../.."
. tests/linux/lib.sh
skip_without_ring0
load_kit
if ! command -v dnsmasq >/dev/null; then
	not_ok "dnsmasq installed (scripts/setup.sh installs dnsmasq-base)"
	echo "1..$n"
	exit 1
fi
dnsmasq=
netns_cleanup_hook() { [ -z "$dnsmasq" ] || wait "$dnsmasq" 2>/dev/null; }
# Scratch under the build tree (the KVM host's /tmp is private to it); logs stay in $LOGS.
netns_setup yun-dhcp "$(realpath -m "${BUILD:-build}/linux-dhcp.$$")"

mac=52:54:00:d4:c0:01
server=10.0.2.1
range_lo=100
range_hi=150
log=$LOGS/linux-dhcp-guest.log
dlog=$LOGS/linux-dhcp-dnsmasq.log
leases=$dir/dnsmasq.leases
: >"$dlog"

# udhcpc's script (busybox's default, /usr/share/udhcpc/default.script, is not in the
# initramfs): udhcpc runs it with the event as $1 and the lease in the environment. It reaches
# the guest base64-encoded on the kernel command line, which has no room for spaces.
script=$(base64 -w0 <<'EOF'
#!/bin/sh
case $1 in
deconfig) ip link set "$interface" up; ip addr flush dev "$interface" ;;
bound) ip addr add "$ip/$mask" dev "$interface" && echo "dhcp-bound $ip/$mask router $router server $serverid" ;;
esac
EOF
)
run="echo,$script|base64,-d>/tmp/dhcp.sh;chmod,+x,/tmp/dhcp.sh;cat,/sys/class/net/eth0/address"
run+=";udhcpc,-i,eth0,-n,-q,-t,5,-s,/tmp/dhcp.sh;echo,udhcpc-status,\$?;ip,-4,addr,show,eth0"
run+=";ping,-c,3,$server"

start=$(date +%s)
in_ns timeout "$TIMEOUT" "$VMM" --kernel "$kdir/vmlinuz" --initrd "$initrd" --memory 256 \
	--net "tap=yuntap0,mac=$mac" --console "file=$log" --no-reboot \
	--cmdline "console=ttyS0 panic=-1 yun.run=$run" 2>"$log.stderr" &
vmm=$!
tap_up yuntap0 "$server/24"
# dnsmasq as a DHCP server only, on the tap only, reading and writing nothing of the host's:
# no configuration file, no DNS (port 0) and so no resolv.conf or hosts, the lease file in the
# test's scratch directory, its log in $LOGS, no pid file (none in --no-daemon mode). It stays
# root (--user): its own user, dnsmasq, need not be able to write the build tree it writes to.
in_ns dnsmasq --no-daemon --conf-file=/dev/null --port=0 --no-resolv --no-hosts \
	--interface=yuntap0 --bind-interfaces --user=root \
	--dhcp-range=10.0.2.$range_lo,10.0.2.$range_hi,255.255.255.0,1h \
	--dhcp-leasefile="$leases" --log-dhcp --log-facility="$dlog" 2>"$dlog.stderr" &
dnsmasq=$!
for _ in $(seq 100); do
	grep -q 'sockets bound exclusively to interface yuntap0' "$dlog" && break
	kill -0 "$dnsmasq" 2>/dev/null || break
	sleep 0.1
done
if grep -q 'sockets bound exclusively to interface yuntap0' "$dlog"; then
	ok "dnsmasq serves DHCP on the tap"
else
	not_ok "dnsmasq serves DHCP on the tap # $(head -c 300 "$dlog.stderr")"
fi
wait "$vmm"
status=$?
echo "# exit status $status after $(($(date +%s) - start)) s; $(grep 'net0:' "$log.stderr")"
if [ "$status" = 0 ]; then
	ok "the guest powered off and yun-vmm exited 0"
else
	not_ok "yun-vmm exit status $status # $(head -c 300 "$log.stderr")"
fi
expect "Linux's virtio_net driver bound our NIC with the MAC we gave" "^$mac"$'\r?$' "$log"

addr=$(sed -n "s/.*udhcpc: lease of \(10\.0\.2\.[0-9]*\) obtained from $server.*/\1/p" "$log" | head -n1)
host=${addr##*.}
if [ -n "$addr" ] && [ "$host" -ge $range_lo ] && [ "$host" -le $range_hi ]; then
	ok "udhcpc obtained a lease of $addr from $server, in the range"
else
	not_ok "udhcpc obtained a lease in 10.0.2.$range_lo-$range_hi from $server (got '$addr')"
	addr=none
fi
expect "the guest applied the lease" "^dhcp-bound $addr/24 router $server server $server"$'\r?$' "$log"
expect "eth0 holds the leased address" "inet $addr/24 " "$log"
for msg in DHCPDISCOVER DHCPOFFER DHCPREQUEST DHCPACK; do
	case $msg in
	DHCPDISCOVER) re="$msg\\(yuntap0\\) $mac" ;;
	*) re="$msg\\(yuntap0\\) $addr $mac" ;;
	esac
	expect "dnsmasq's log: $msg for our MAC" "$re" "$dlog"
done
expect "dnsmasq's lease file holds our MAC and address" "^[0-9]+ $mac $addr " "$leases"
expect "the guest's ping of the DHCP server answered" \
	'^3 packets transmitted, 3 packets received' "$log"
echo "1..$n"
