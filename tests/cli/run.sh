#!/usr/bin/env bash
# yun-vmm's command line: bad input gets one clear line on stderr and exit status 1, never a
# crash; --help and --version exit 0. Needs no /dev/kvm (every case fails before the VM runs).
set -u
cd "$(dirname "$0")/../.."
VMM=${BUILD:-build}/yun-vmm
GUEST=${BUILD:-build}/guest/test-guest.elf
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0

# expect STATUS PATTERN DESCRIPTION -- ARGS...: exit status, one stderr line matching PATTERN.
expect() {
	local want=$1 pattern=$2 desc=$3
	shift 4
	n=$((n + 1))
	"$VMM" "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
	local got=$? lines
	lines=$(wc -l <"$tmp/err")
	if [ "$got" -ne "$want" ]; then
		echo "not ok $n - $desc # exit status $got, want $want; stderr: $(head -c 300 "$tmp/err")"
	elif [ "$want" -ne 0 ] && [ "$lines" -ne 1 ]; then
		echo "not ok $n - $desc # want one line on stderr, got $lines: $(head -c 300 "$tmp/err")"
	elif ! grep -qE -- "$pattern" "$tmp/err" "$tmp/out"; then
		echo "not ok $n - $desc # output does not match /$pattern/: $(head -c 300 "$tmp/err")"
	else
		echo "ok $n - $desc"
	fi
}

printf 'not a kernel\n' >"$tmp/text"
head -c 1000 /dev/zero >"$tmp/odd.img"
head -c 4096 /dev/zero >"$tmp/good.img"
# Any ELF file passes the kernel format check that runs before the VM exists.
kernel=$GUEST
[ -f "$kernel" ] || kernel=/bin/true

expect 0 'Usage: yun-vmm' "--help prints usage and exits 0" -- --help
expect 0 '^yun-vmm [0-9]' "--version prints the version" -- --version
expect 1 'kernel PATH is required' "no arguments: --kernel is required" --
expect 1 'kernel /nonexistent: No such file' "a missing kernel file is named" -- --kernel /nonexistent
expect 1 'neither a bzImage nor an ELF' "a kernel that is neither bzImage nor ELF is refused" -- --kernel "$tmp/text"
expect 1 'initrd /nonexistent' "a missing initrd is named" -- --kernel "$kernel" --initrd /nonexistent
expect 1 'memory 0' "--memory 0 is refused" -- --kernel "$kernel" --memory 0
expect 1 'memory abc' "--memory abc is refused" -- --kernel "$kernel" --memory abc
expect 1 'memory 129' "an odd --memory is refused" -- --kernel "$kernel" --memory 129
expect 1 'memory 99999999999999999999' "an overflowing --memory is refused" -- --kernel "$kernel" --memory 99999999999999999999
expect 1 'cpus 0' "--cpus 0 is refused" -- --kernel "$kernel" --cpus 0
expect 1 'cpus 256' "--cpus 256 is refused" -- --kernel "$kernel" --cpus 256
expect 1 'cpus -1' "--cpus -1 is refused" -- --kernel "$kernel" --cpus -1
expect 1 'disk .*/nonexistent.img: No such file' "a missing disk is named" -- --kernel "$kernel" --disk path=/nonexistent.img
expect 1 'size 1000 is not a multiple of 512' "a disk whose size is not a multiple of 512 is refused" -- --kernel "$kernel" --disk "path=$tmp/odd.img"
expect 1 "'foo' is not key=value" "a malformed --disk is refused" -- --kernel "$kernel" --disk foo
expect 1 'readonly=maybe' "a bad readonly= value is refused" -- --kernel "$kernel" --disk "path=$tmp/good.img,readonly=maybe"
expect 1 'engine=bogus: use io_uring, threads or sync' "a bad disk engine= is refused" -- --kernel "$kernel" --disk "path=$tmp/good.img,engine=bogus"
expect 0 'Usage: yun-vmm' "--disk engine=threads and direct=on are accepted" -- --disk "path=$tmp/good.img,engine=threads,direct=on" --help
expect 1 'direct=maybe: use on or off' "a bad disk direct= is refused" -- --kernel "$kernel" --disk "path=$tmp/good.img,direct=maybe"
# direct=on where the file system refuses O_DIRECT: a ramfs (tmpfs takes O_DIRECT from Linux
# 6.6 on), mounted in a mount namespace of the VMM's own.
mkdir "$tmp/ramfs"
if unshare -m mount -t ramfs ramfs "$tmp/ramfs" 2>/dev/null; then
	cat >"$tmp/vmm-on-ramfs" <<EOF
#!/bin/sh
exec unshare -m sh -c 'mount -t ramfs ramfs $tmp/ramfs && head -c 4096 /dev/zero >$tmp/ramfs/disk.img && exec "\$0" "\$@"' "$VMM" "\$@"
EOF
	chmod +x "$tmp/vmm-on-ramfs"
	VMM=$tmp/vmm-on-ramfs expect 1 "disk $tmp/ramfs/disk.img: direct=on: its file system refuses O_DIRECT" \
		"direct=on on a file system without O_DIRECT is refused, naming the disk" -- --kernel "$kernel" --disk "path=$tmp/ramfs/disk.img,direct=on"
else
	n=$((n + 1))
	echo "ok $n - direct=on on a file system without O_DIRECT is refused # SKIP cannot mount a ramfs here"
fi
expect 0 'Usage: yun-vmm' "--disk bw= and ops= are accepted" -- --disk "path=$tmp/good.img,bw=10M,ops=1000" --help
expect 1 'bw=abc: want bytes a second' "a disk bw= that is not a number is refused" -- --kernel "$kernel" --disk "path=$tmp/good.img,bw=abc"
expect 1 'bw=2048G: want bytes a second' "a disk bw= over 2^40 is refused" -- --kernel "$kernel" --disk "path=$tmp/good.img,bw=2048G"
expect 1 'ops=-1: want a count a second' "a negative disk ops= is refused" -- --kernel "$kernel" --disk "path=$tmp/good.img,ops=-1"
expect 1 'ops=1K: want a count a second' "a disk ops= takes no suffix" -- --kernel "$kernel" --disk "path=$tmp/good.img,ops=1K"
expect 1 'unknown key' "an unknown --disk key is refused" -- --kernel "$kernel" --disk "path=$tmp/good.img,cache=none"
expect 1 'given twice' "the same disk twice is refused" -- --kernel "$kernel" --disk "path=$tmp/good.img" --disk "path=$tmp/good.img"
expect 1 'tap=NAME is required' "--net without a tap is refused" -- --kernel "$kernel" --net mac=52:54:00:00:00:01
expect 1 'want a unicast address' "a multicast --net mac is refused" -- --kernel "$kernel" --net tap=t0,mac=01:00:5e:00:00:01
expect 1 'want a unicast address' "a malformed --net mac is refused" -- --kernel "$kernel" --net tap=t0,mac=52:54:00:00:00
expect 1 '1 to 15 characters' "an over-long tap name is refused" -- --kernel "$kernel" --net tap=abcdefghijklmnop
expect 0 'Usage: yun-vmm' "--net bw= and ops= are accepted" -- --net tap=t0,bw=1G,ops=100000 --help
expect 0 'Usage: yun-vmm' "--net queues=8 is accepted" -- --net tap=t0,queues=8 --help
expect 1 'queues=0: want queue pairs from 1 to 8' "--net queues=0 is refused" -- --kernel "$kernel" --net tap=t0,queues=0
expect 1 'queues=9: want queue pairs from 1 to 8' "--net queues=9 is refused" -- --kernel "$kernel" --net tap=t0,queues=9
expect 1 'queues=x: want queue pairs from 1 to 8' "--net queues=x is refused" -- --kernel "$kernel" --net tap=t0,queues=x
expect 1 'bw=12X: want bytes a second' "a net bw= with an unknown suffix is refused" -- --kernel "$kernel" --net tap=t0,bw=12X
expect 1 'ops=99999999999999999999: want a count' "an overflowing net ops= is refused" -- --kernel "$kernel" --net tap=t0,ops=99999999999999999999
expect 0 'vsock cid=N,uds=PATH' "--help lists --vsock" -- --help
expect 0 'Usage: yun-vmm' "--vsock cid= and uds= are accepted" -- --vsock "cid=3,uds=$tmp/v.sock" --help
expect 1 'cid=N and uds=PATH are required' "--vsock without a uds is refused" -- --kernel "$kernel" --vsock cid=3
expect 1 'cid=N and uds=PATH are required' "--vsock without a cid is refused" -- --kernel "$kernel" --vsock "uds=$tmp/v.sock"
expect 1 'vsock cid 2: want 3 to 4294967294' "the host's CID 2 is refused for the guest" -- --kernel "$kernel" --vsock "cid=2,uds=$tmp/v.sock"
expect 1 'vsock cid 4294967295: want 3' "VMADDR_CID_ANY is refused for the guest" -- --kernel "$kernel" --vsock "cid=4294967295,uds=$tmp/v.sock"
expect 1 'cid=abc: want a number' "a vsock cid that is not a number is refused" -- --kernel "$kernel" --vsock "cid=abc,uds=$tmp/v.sock"
expect 1 'cid=-3: want a number' "a negative vsock cid is refused" -- --kernel "$kernel" --vsock "cid=-3,uds=$tmp/v.sock"
expect 1 'want a path of 1 to 96 bytes' "a vsock uds too long for PATH_<port> is refused" -- --kernel "$kernel" --vsock "cid=3,uds=/$(printf 'a%.0s' $(seq 96))"
expect 1 'want a path of 1 to 96 bytes' "an empty vsock uds is refused" -- --kernel "$kernel" --vsock "cid=3,uds="
expect 1 'exists and is not a socket' "a vsock uds that is a regular file is refused" -- --kernel "$kernel" --vsock "cid=3,uds=$tmp/good.img"
expect 1 "unknown key 'port'" "an unknown --vsock key is refused" -- --kernel "$kernel" --vsock "cid=3,uds=$tmp/v.sock,port=5"
expect 1 'one device at most' "a second --vsock is refused" -- --kernel "$kernel" --vsock "cid=3,uds=$tmp/a" --vsock "cid=4,uds=$tmp/b"
expect 1 'console bogus' "a bad --console is refused" -- --kernel "$kernel" --console bogus
expect 0 'console-device serial\|virtio' "--help lists --console-device" -- --help
# --help after the option: a value the parser refused would have stopped it first.
expect 0 'Usage: yun-vmm' "--console-device serial is accepted" -- --console-device serial --help
expect 0 'Usage: yun-vmm' "--console-device virtio is accepted" -- --console-device virtio --console none --help
expect 1 'console-device bogus: use serial or virtio' "a bad --console-device is refused" -- --kernel "$kernel" --console-device bogus
expect 1 'console-device needs a value' "--console-device without a value is refused" -- --kernel "$kernel" --console-device
expect 1 "unknown option '--bogus'" "an unknown option is refused" -- --kernel "$kernel" --bogus
expect 1 'needs a value' "an option without its value is refused" -- --kernel
expect 1 "unexpected argument 'extra'" "a stray argument is refused" -- --kernel "$kernel" extra
if [ -e /dev/kvm ]; then
	n=$((n + 1))
	echo "ok $n - no /dev/kvm is reported clearly # SKIP this host has /dev/kvm"
else
	expect 1 'cannot open /dev/kvm' "no /dev/kvm is reported in one line" -- --kernel "$kernel"
fi
echo "1..$n"
