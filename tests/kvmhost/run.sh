#!/usr/bin/env bash
# Run a command where /dev/kvm works.
#
#   tests/kvmhost/run.sh [--mem MiB] [--cpus N] [--timeout S] [--silence S]
#                        [--cpu-features +F,...] [--interactive] -- COMMAND [ARGS...]
#
# On a host whose /dev/kvm opens, COMMAND simply runs here. Otherwise (the VMs this project is
# developed and tested on have no usable /dev/kvm) it runs inside a "KVM host": Debian's
# generic kernel under QEMU's emulator (TCG) with emulated AMD-V, where kvm-amd gives a real,
# nested /dev/kvm. The host's root file system is shared read-only over virtio-9p and the
# current directory read-write at the same path; the command runs chrooted there as root, with
# the same working directory. Its output (stdout and stderr, merged) comes back on a serial
# port of its own, and its exit status with it; 125 means the KVM host itself failed. A command
# that prints nothing for --silence seconds (default 600; 0: no limit) is taken for a KVM host
# that stopped (it does, now and then, under TCG) and ended with 125, as at --timeout.
# Kernel messages go to $YUN_KVMHOST_LOG (default: a file in /tmp named on failure).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kit=$here/../../guest/kit
CACHE=${YUN_CACHE:-/var/cache/yun}
mem=3072
cpus=$(nproc)
timeout=3600
silence=600
interactive=0
features=

while [ $# -gt 0 ]; do
	case $1 in
	--mem) mem=$2; shift 2 ;;
	--cpus) cpus=$2; shift 2 ;;
	--timeout) timeout=$2; shift 2 ;;
	--silence) silence=$2; shift 2 ;;
	--cpu-features) features=,$2; shift 2 ;;
	--interactive) interactive=1; shift ;;
	--) shift; break ;;
	*) echo "kvmhost: unknown option $1" >&2; exit 125 ;;
	esac
done
[ $# -gt 0 ] || { echo "kvmhost: usage: run.sh [options] -- COMMAND [ARGS...]" >&2; exit 125; }

# A /dev/kvm that opens read-write is used directly.
if [ "${YUN_KVMHOST_FORCE:-0}" != 1 ] && [ -c /dev/kvm ] && { exec 3<>/dev/kvm; } 2>/dev/null; then
	exec 3>&-
	exec "$@"
fi

# The KVM host's kernel: Debian's generic one (it has kvm-amd and 9p as modules).
meta=linux-image-amd64
kpkg=$(apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
if [ -z "$kpkg" ]; then
	apt-get update -qq >/dev/null 2>&1 || true
	kpkg=$(apt-cache depends "$meta" | awk '/Depends: linux-image-/ {print $2; exit}')
fi
kroot=$("$kit/fetch.sh" "$kpkg") || exit 125
kver=$(ls "$kroot/lib/modules")
bb=$("$kit/fetch.sh" busybox-static)/bin/busybox || exit 125
[ -f "$kroot/lib/modules/$kver/modules.dep" ] || depmod -b "$kroot" "$kver"

# The modules to load, in dependency order; one line per wanted module.
# (loop and ext4: bench/blk.py's O_DIRECT disk, an ext4 image on the KVM host's tmpfs.)
# (pktgen: bench/net.py's rx-64 traffic.)
MODULES="kvm-amd 9p 9pnet_virtio virtio_pci tun veth bridge loop ext4 pktgen"
key=$( (cat "$0" "$bb" | sha256sum; echo "$kroot $MODULES") | sha256sum | cut -c1-16)
initrd=$CACHE/kvmhost/initrd-$key.cpio.gz
if [ ! -f "$initrd" ]; then
	tmp=$(mktemp -d)
	mkdir -p "$tmp"/{bin,dev,proc,sys,host,modules}
	cp "$bb" "$tmp/bin/busybox"
	for m in $MODULES; do
		modprobe -d "$kroot" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
	done | awk '!seen[$0]++' >"$tmp/order"
	while read -r ko; do
		cp "$ko" "$tmp/modules/"
		basename "$ko" >>"$tmp/modules/order"
	done <"$tmp/order"
	rm "$tmp/order"
	cat >"$tmp/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mkdir -p /bin /sbin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/order); do insmod /modules/$m || echo "kvmhost: insmod $m failed"; done
arg() { sed -n "s/.*yun\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
out=/dev/ttyS1
stty -F $out raw -echo 2>/dev/null
fail() { echo "kvmhost: $*" >$out; echo "YUN-KVMHOST-EXIT 125" >$out; poweroff -f; }
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288 hostroot /host || fail "cannot mount the host's root"
for d in proc sys dev; do mount --bind /$d /host/$d; done
mount -t devpts devpts /host/dev/pts 2>/dev/null
mount -t tmpfs tmpfs /host/dev/shm 2>/dev/null
mount -t tmpfs tmpfs /host/tmp
mount -t tmpfs tmpfs /host/run
mount -t tmpfs tmpfs /host/root
work=$(arg work)
job=$(arg job)
mkdir -p "/host$work" 2>/dev/null # under /tmp or /root, which are tmpfs here
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 work "/host$work" || fail "cannot mount $work"
mkdir -p "/host$job"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 job "/host$job" || fail "cannot mount the job"
[ -c /dev/kvm ] || fail "no /dev/kvm in the KVM host (is AMD-V emulated?)"
chroot /host /bin/bash "$job/job.sh" <$out >$out 2>&1
echo "YUN-KVMHOST-EXIT $?" >$out
sync
poweroff -f
INIT
	chmod +x "$tmp/init"
	mkdir -p "$CACHE/kvmhost"
	(cd "$tmp" && find . | cpio -o -H newc --quiet | gzip -1) >"$initrd.tmp"
	mv "$initrd.tmp" "$initrd"
	rm -rf "$tmp"
fi

# The job: the working directory, the environment worth keeping, the command.
job=$(mktemp -d /tmp/yun-kvmhost.XXXXXX)
log=${YUN_KVMHOST_LOG:-$job.kernel.log}
trap 'rm -rf "$job" "$job.qemu.pid"' EXIT
{
	echo "cd $(printf %q "$PWD") || exit 125"
	echo "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=${TERM:-dumb}"
	{ env | grep -E '^(CI|BUILD|YUN_[A-Z0-9_]*)=' | grep -v '^YUN_KVMHOST' || true; } | while IFS= read -r kv; do
		echo "export $(printf %q "$kv")"
	done
	for v in ${YUN_KVMHOST_ENV:-}; do
		[ -n "${!v+x}" ] && echo "export $v=$(printf %q "${!v}")"
	done
	printf 'exec'
	printf ' %q' "$@"
	echo
} >"$job/job.sh"

# Emulated AMD-V with nested paging; MTTCG uses every host core. --cpu-features adds to the
# CPU model what a guest needs TCG to execute (TCG refuses an instruction the model lacks).
qemu=(qemu-system-x86_64 -M q35 -accel tcg,thread=multi -cpu "qemu64,+svm,+npt$features"
	-smp "$cpus" -m "$mem" -nodefaults -no-user-config -display none -no-reboot
	-kernel "$kroot/boot/vmlinuz-$kver" -initrd "$initrd" -pidfile "$job.qemu.pid"
	-append "console=ttyS0 quiet loglevel=4 panic=-1 yun.work=$PWD yun.job=$job"
	-serial "file:$log" -chardev stdio,id=out,signal=off -serial chardev:out
	-fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap
	-device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot
	-fsdev "local,id=work,path=$PWD,security_model=none"
	-device virtio-9p-pci,fsdev=work,mount_tag=work
	-fsdev "local,id=job,path=$job,security_model=none"
	-device virtio-9p-pci,fsdev=job,mount_tag=job)

stdin=/dev/null
[ "$interactive" = 1 ] && stdin=/dev/stdin

# One boot of the KVM host. A watchdog reads its kernel log: nested SVM under TCG now and then
# locks the KVM host up for good while it boots (soft lockups on every CPU); the watchdog then
# stops QEMU and says so on the output, so that the boot can be tried again.
boot() {
	timeout "$timeout" "${qemu[@]}" <$stdin 2>>"$log" &
	local q=$!
	(
		while kill -0 "$q" 2>/dev/null; do
			sleep 5
			if grep -qE 'soft lockup|rcu_preempt (self-)?detected stall' "$log"; then
				echo "YUN-KVMHOST-LOCKUP"
				kill "$q" 2>/dev/null
				break
			fi
		done
	) &
	wait "$q"
	echo "YUN-KVMHOST-QEMU $?" >>"$log"
}

[ "$interactive" = 1 ] && silence=0
# The next line of the command's output, or none after --silence seconds: then QEMU is stopped,
# and the lines already on their way are still read to the end.
next_line() {
	local rc=0
	if [ "$silence" -gt 0 ]; then
		IFS= read -r -t "$silence" line || rc=$?
	else
		IFS= read -r line || rc=$?
	fi
	[ "$rc" = 0 ] && return 0
	[ "$rc" -gt 128 ] || return 1 # the end of the output
	silent=1
	kill "$(cat "$job.qemu.pid" 2>/dev/null)" 2>/dev/null || true
	return 0
}

for attempt in 1 2 3; do
	status=125
	lockup=0
	silent=0
	output=0
	: >"$log"
	# The command's output, passed through line by line; the marker line carries its status.
	while next_line; do
		[ "$silent" = 1 ] && [ -z "$line" ] && continue
		line=${line%$'\r'}
		case $line in
		*"YUN-KVMHOST-EXIT "*)
			# After output without a final newline, the marker ends that line.
			[ -n "${line%%YUN-KVMHOST-EXIT *}" ] && printf '%s\n' "${line%%YUN-KVMHOST-EXIT *}"
			status=${line##*YUN-KVMHOST-EXIT }
			;;
		"YUN-KVMHOST-LOCKUP") lockup=1 ;;
		*)
			output=1
			printf '%s\n' "$line"
			;;
		esac
	done < <(boot)
	# QEMU killed by --timeout or --silence (the KVM host wedged without a lock-up message: a
	# command that printed nothing in 13 minutes, in the middle of a suite).
	timed_out=0
	grep -q 'terminating on signal 15 from pid [0-9]* (timeout)' "$log" && timed_out=1
	# Only a lock-up or time-out before the command printed anything is retried: a retry
	# must not repeat output.
	{ [ "$lockup" = 1 ] || [ "$timed_out" = 1 ] || [ "$silent" = 1 ]; } && [ "$output" = 0 ] &&
		[ "$status" = 125 ] || break
	[ "$attempt" -lt 3 ] || break
	echo "kvmhost: the KVM host locked up or timed out before the command printed anything (attempt $attempt); starting it again" >&2
done
if [ "$lockup" = 1 ]; then
	echo "kvmhost: the KVM host locked up (soft lockups in its kernel log)" >&2
fi
if [ "$silent" = 1 ]; then
	echo "kvmhost: the command printed nothing for $silence s: the KVM host was stopped" >&2
fi
if [ "$status" = 125 ]; then
	echo "kvmhost: the KVM host ended without the command's exit status; its log:" >&2
	tail -n 40 "$log" >&2
fi
exit "$status"
