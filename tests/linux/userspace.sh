#!/usr/bin/env bash
# Debian's unmodified cloud kernel on yun-vmm all the way to userspace: a busybox initramfs
# loads Linux's own virtio drivers (modules), which find our virtio-blk over PCI with MSI-X
# and take our virtio-rng as the hardware RNG;
# the guest mounts the ext4 disk, writes a file, and powers off through ACPI. The host then
# reads the file back out of the image. Needs /dev/kvm with real ring-0 virtualization (run
# through tests/kvmhost/run.sh) and the guest kit in the cache.
set -u
cd "$(dirname "$0")/../.."
. tests/linux/lib.sh
skip_without_ring0
load_kit
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
disk=$dir/root.ext4
truncate -s 32M "$disk"
mkfs.ext4 -q -L yun-test "$disk"
stamp=yun-$$-$RANDOM
# A second disk held to 2 MiB/s (a 2 MiB burst): reading its 8 MiB takes at least 3 s.
limited=$dir/limited.img
head -c 8M /dev/urandom >"$limited"

for kernel in vmlinuz vmlinux; do
	what="Debian $(cat "$kdir/version") $kernel"
	log=$LOGS/linux-userspace-$kernel.log
	run="mount,/dev/vda,/mnt;echo,$stamp-$kernel>/mnt/stamp;sync;fstrim,-v,/mnt;echo,wz-max,\$(cat,/sys/block/vda/queue/write_zeroes_max_bytes);cat,/sys/block/vda/serial;echo;umount,/mnt;grep,-c,^processor,/proc/cpuinfo;cat,/sys/devices/virtual/misc/hw_random/rng_current"
	run+=";read,t0,x,</proc/uptime;dd,if=/dev/vdb,of=/dev/null,bs=1M,iflag=direct"
	run+=";read,t1,x,</proc/uptime;echo,limited-read,\$t0,\$t1"
	start=$(date +%s)
	timeout "$TIMEOUT" "$VMM" --kernel "$kdir/$kernel" --initrd "$initrd" --cpus 2 --memory 256 \
		--disk "path=$disk,serial=yun-test-disk" --disk "path=$limited,readonly=on,bw=2M" \
		--rng --console "file=$log" \
		--cmdline "console=ttyS0 panic=-1 yun.run=$run" 2>"$log.stderr"
	status=$?
	echo "# $what: exit status $status after $(($(date +%s) - start)) s"
	if [ $status -eq 0 ]; then
		ok "$what: the guest powered off and yun-vmm exited 0"
	else
		not_ok "$what: yun-vmm exit status $status # $(head -c 300 "$log.stderr")"
	fi
	expect "$what: both CPUs up" 'smp: Brought up 1 node, 2 CPUs' "$log"
	expect "$what: Linux's virtio_blk driver found our disk" \
		'virtio_blk virtio0: \[vda\] 65536 512-byte logical blocks' "$log"
	expect "$what: the disk's interrupts are MSI-X" 'virtio0-req\.0|virtio_blk virtio0: 1/0/0' "$log"
	expect "$what: ext4 mounted from /dev/vda" 'EXT4-fs \(vda\): mounted filesystem' "$log"
	expect "$what: userspace ran" 'yun-guest: userspace up' "$log"
	expect "$what: fstrim discarded the free blocks through our disk" \
		'^/mnt: [1-9][0-9]* bytes trimmed' "$log"
	expect "$what: yun-vmm served the discards" 'disk0: .* [1-9][0-9]* discards' "$log.stderr"
	expect "$what: Linux's virtio_blk takes write-zeroes" '^wz-max [1-9][0-9]*' "$log"
	expect "$what: the guest read the disk's serial" '^yun-test-disk' "$log"
	expect "$what: the guest saw 2 CPUs" $'^2\r?$' "$log"
	expect "$what: Linux's virtio_rng is the current hardware RNG" $'^virtio_rng\\.0\r?$' "$log"
	expect "$what: the command finished" 'yun-guest: command exited with status 0' "$log"
	secs=$(sed -n 's/^limited-read \([0-9.]*\) \([0-9.]*\).*/\1 \2/p' "$log" |
		awk '{ printf "%.2f", $2 - $1 }')
	if [ -n "$secs" ] && awk -v s="$secs" 'BEGIN { exit !(s >= 2.5) }'; then
		ok "$what: the 2 MiB/s disk held the guest's 8 MiB read to ${secs} s (3 s due)"
	else
		not_ok "$what: the 2 MiB/s disk held the guest's 8 MiB read to '${secs}' s (3 s due)"
	fi
	expect "$what: yun-vmm's rate limiter held the disk back" \
		'disk1: held back by the rate limiter [1-9]' "$log.stderr"
	got=$(debugfs -R 'cat /stamp' "$disk" 2>/dev/null)
	if [ "$got" = "$stamp-$kernel" ]; then
		ok "$what: the host reads the file the guest wrote"
	else
		not_ok "$what: the host reads the file the guest wrote (got '$got')"
	fi
done
echo "1..$n"
