#!/usr/bin/env bash
# The minimal guest kernel (guest/kit/minimal-kernel.sh: virtio and ext4 built in, no modules, no
# initramfs) on yun-vmm with 2 vCPUs, 256 MiB, an ext4 root disk, a NIC on a tap in a network
# namespace of the test's own and virtio-rng. The kernel's log must show both CPUs up, Linux's
# own virtio_blk driver on our disk, the ext4 root mounted read-write from /dev/vda, eth0
# configured by ip=, and init started; the image's superblock must show the mount. Then /init
# (busybox, static, on the ext4 root) proves userspace: it reads the hardware RNG's driver, pings
# the host's end of the tap, writes a file the host reads back out of the image, and powers off
# through ACPI; yun-vmm must say so and exit 0. Needs /dev/kvm (tests/kvmhost/run.sh provides
# one), CAP_NET_ADMIN, mkfs.ext4 and the minimal kernel in the cache; cleans up its namespace.
set -u
cd "$(dirname "$0")/../.."
. tests/linux/lib.sh
kdir=$(YUN_OFFLINE=1 guest/kit/minimal-kernel.sh) &&
	bb=$(YUN_OFFLINE=1 guest/kit/fetch.sh busybox-static)/bin/busybox || {
	not_ok "the minimal kernel and busybox in the cache (run guest/kit/minimal-kernel.sh first)"
	echo "1..$n"
	exit 1
}
# On a kvm_pvm host Linux's userspace dies at its first system call (DESIGN.md): the kernel's
# checks still hold there, the userspace ones are skipped.
userspace=1
[ -d /sys/module/kvm_pvm ] && userspace=0
uskip() { # uskip WHAT REGEX FILE: expect, or a skip without ring-0 virtualization
	if [ "$userspace" = 1 ]; then expect "$@"; else ok "$1 # SKIP kvm_pvm host"; fi
}
netns_setup yun-min
mkdir -p "$dir/root"/{bin,dev,proc,sys,tmp}

# The root file system: busybox with its applets as links, and /init.
stamp=yun-minimal-$$-$RANDOM
cp "$bb" "$dir/root/bin/busybox"
for a in $("$bb" --list); do
	[ "$a" = busybox ] || ln -s busybox "$dir/root/bin/$a"
done
cat >"$dir/root/init" <<EOF
#!/bin/busybox sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo "yun-minimal: userspace up"
grep ' / ' /proc/mounts | sed 's/^/root-mount /'
echo "cpus \$(grep -c ^processor /proc/cpuinfo)"
echo "rng \$(cat /sys/devices/virtual/misc/hw_random/rng_current)"
echo "eth0 \$(cat /sys/class/net/eth0/address)"
ping -c 1 -W 5 10.0.2.1 || ping -c 1 -W 5 10.0.2.1
echo "$stamp" >/stamp
sync
echo "yun-minimal: powering off"
poweroff -f
EOF
chmod +x "$dir/root/init"
disk=$dir/root.ext4
truncate -s 64M "$disk"
mkfs.ext4 -q -L yun-minimal -d "$dir/root" "$disk" || {
	not_ok "mkfs.ext4 -d made the root image"
	echo "1..$n"
	exit 1
}
sb() { dumpe2fs -h "$disk" 2>/dev/null | sed -n "s/^$1: *//p"; }
count0=$(sb 'Mount count')
mtime0=$(sb 'Last mount time')

mac=52:54:00:12:34:56
log=$LOGS/linux-minimal-guest.log
: >"$log"
cmdline="console=ttyS0 panic=-1 root=/dev/vda rw init=/init"
cmdline+=" ip=10.0.2.15::10.0.2.1:255.255.255.0::eth0:off"
start=$(date +%s)
in_ns timeout "$TIMEOUT" "$VMM" --kernel "$kdir/vmlinux" --cpus 2 --memory 256 \
	--disk "path=$disk" --net "tap=yuntap0,mac=$mac" --rng --console "file=$log" --no-reboot \
	--cmdline "$cmdline" 2>"$log.stderr" &
vmm=$!
tap_up yuntap0 10.0.2.1/24
wait "$vmm"
status=$?
echo "# Linux $(cat "$kdir/version") (minimal, PVH): exit status $status after $(($(date +%s) - start)) s"
sed -n 's/^\[ *\([0-9.]*\)\] Run \/init as init process.*/# init started at \1 s of guest time/p' "$log"

# The kernel's own checks.
expect "both CPUs up" 'smp: Brought up 1 node, 2 CPUs' "$log"
expect "Linux's virtio_blk driver found our disk" \
	'virtio_blk virtio[0-9]+: \[vda\] 131072 512-byte logical blocks' "$log"
expect "ext4 mounted /dev/vda" 'EXT4-fs \(vda\): mounted filesystem' "$log"
expect "the root is ext4 from /dev/vda, read-write" \
	'VFS: Mounted root \(ext4 filesystem\) on device [0-9]+:[0-9]+' "$log"
expect "ip= configured eth0" 'device=eth0, hwaddr=52:54:00:12:34:56, ipaddr=10\.0\.2\.15, mask=255\.255\.255\.0, gw=10\.0\.2\.1' "$log"
expect "init started" 'Run /init as init process' "$log"
if grep -qE 'Oops|BUG:|WARNING:|Call Trace|Kernel panic' "$log"; then
	not_ok "no oops, warning or panic: $(grep -m1 -E 'Oops|BUG:|WARNING:|Call Trace|Kernel panic' "$log")"
else
	ok "no oops, warning or panic"
fi
count1=$(sb 'Mount count')
mtime1=$(sb 'Last mount time')
if [ -n "$count1" ] && [ "$count1" != "$count0" ] && [ "$mtime1" != "$mtime0" ]; then
	ok "the image's superblock shows the mount (mount count $count0 -> $count1, last mount $mtime1)"
else
	not_ok "the image's superblock shows the mount (mount count '$count0' -> '$count1', last mount '$mtime0' -> '$mtime1')"
fi

# Userspace's.
uskip "userspace ran from the ext4 root" '^yun-minimal: userspace up' "$log"
uskip "/proc/mounts: / is /dev/root, ext4, rw" '^root-mount /dev/root / ext4 rw' "$log"
uskip "the guest saw 2 CPUs" $'^cpus 2\r?$' "$log"
uskip "Linux's virtio_rng is the current hardware RNG" $'^rng virtio_rng\\.0\r?$' "$log"
uskip "Linux's virtio_net driver has our MAC" $"^eth0 $mac"$'\r?$' "$log"
uskip "the guest pinged the host's end of the tap" '^1 packets transmitted, 1 packets received' "$log"
if [ "$userspace" = 1 ]; then
	got=$(debugfs -R 'cat /stamp' "$disk" 2>/dev/null)
	if [ "$got" = "$stamp" ]; then
		ok "the host reads the file the guest wrote"
	else
		not_ok "the host reads the file the guest wrote (got '$got')"
	fi
	if [ "$status" = 0 ] && grep -q 'guest powered off (S5)' "$log.stderr"; then
		ok "the guest powered off through ACPI and yun-vmm exited 0 saying so"
	else
		not_ok "yun-vmm exit status $status, 0 and the power-off due # $(tail -c 300 "$log.stderr")"
	fi
else
	ok "the host reads the file the guest wrote # SKIP kvm_pvm host"
	echo "# yun-vmm: $(tail -n 1 "$log.stderr")"
	if [ "$status" = 2 ]; then
		ok "init died, the kernel panicked and yun-vmm exited 2 (--no-reboot)"
	else
		not_ok "yun-vmm exit status $status, 2 due # $(tail -c 300 "$log.stderr")"
	fi
fi
echo "1..$n"
