#!/usr/bin/env bash
# The guest's console on our virtio-console (hvc0) instead of COM1: Debian's cloud kernel with
# console=hvc0 and --console-device virtio. Its virtio_console module, loaded from the busybox
# initramfs, binds our device; the userspace marker, a command's output and a kernel message
# arrive through hvc0 in the --console file, and yun-vmm exits 0 when the guest powers off. A
# second boot, on stdio, has the guest read a line from yun-vmm's stdin through hvc0. Needs
# /dev/kvm with real ring-0 virtualization (run through tests/kvmhost/run.sh) and the guest kit
# in the cache.
set -u
cd "$(dirname "$0")/../.."
. tests/linux/lib.sh
skip_without_ring0
load_kit
dir=$(mktemp -d)
vmm=
trap '[ -z "$vmm" ] || kill "$vmm" 2>/dev/null; rm -rf "$dir"' EXIT
stamp=yun-hvc-$$-$RANDOM

log=$LOGS/linux-hvc-console.log # not linux-hvc.log: tests/run keeps the suite's output there
run="echo,$stamp;cat,/sys/class/tty/console/active;echo,'<2>yun-kmsg-$stamp'>/dev/kmsg"
start=$(date +%s)
timeout "$TIMEOUT" "$VMM" --kernel "$kdir/vmlinuz" --initrd "$initrd" --memory 256 \
	--console-device virtio --console "file=$log" --no-reboot \
	--cmdline "console=hvc0 panic=-1 yun.run=$run" 2>"$log.stderr"
status=$?
echo "# exit status $status after $(($(date +%s) - start)) s; $(grep 'console0:' "$log.stderr")"
if [ $status -eq 0 ]; then
	ok "the guest powered off and yun-vmm exited 0"
else
	not_ok "yun-vmm exit status $status # $(head -c 300 "$log.stderr")"
fi
expect "userspace ran, its output on hvc0" 'yun-guest: userspace up' "$log"
expect "the command's output arrived through hvc0" "^$stamp"$'\r?$' "$log"
expect "the guest's console is hvc0" $'^hvc0\r?$' "$log"
# The kernel's own console output (printk), as opposed to the tty's. Linux's virtio_console
# replays none of the log from before it loaded: hvc0 registers (and replays) before the
# driver lists its port, so those writes fail in the guest.
expect "a kernel message reached hvc0" "yun-kmsg-$stamp" "$log"
expect "the command finished" 'yun-guest: command exited with status 0' "$log"
expect "yun-vmm counted the transmitted bytes" \
	'console0: rx [0-9]+ requests [0-9]+ bytes; tx [1-9][0-9]* requests [1-9]' "$log.stderr"

# The other way: a line written to yun-vmm's stdin once the guest is up is what the guest reads
# from hvc0. (Not earlier: input that reaches Linux's virtio_console while it is still probing
# the device is dropped by the guest, whose port is not listed yet.)
log=$LOGS/linux-hvc-input.log
run="read,-t,120,line;echo,got-\$line"
mkfifo "$dir/in"
start=$(date +%s)
timeout "$TIMEOUT" "$VMM" --kernel "$kdir/vmlinuz" --initrd "$initrd" --memory 256 \
	--console-device virtio --console stdio --no-reboot \
	--cmdline "console=hvc0 panic=-1 yun.run=$run" <"$dir/in" >"$log" 2>"$log.stderr" &
vmm=$!
exec 3>"$dir/in"
for _ in $(seq "$TIMEOUT"); do
	grep -q 'yun-guest: userspace up' "$log" && break
	kill -0 "$vmm" 2>/dev/null || break
	sleep 1
done
printf 'hello-%s\n' "$stamp" >&3
wait "$vmm"
status=$?
vmm=
exec 3>&-
echo "# stdin: exit status $status after $(($(date +%s) - start)) s; $(grep 'console0:' "$log.stderr")"
if [ $status -eq 0 ]; then
	ok "stdin: the guest powered off and yun-vmm exited 0"
else
	not_ok "stdin: yun-vmm exit status $status # $(head -c 300 "$log.stderr")"
fi
expect "stdin: the guest read the host's line from hvc0" "^got-hello-$stamp"$'\r?$' "$log"
expect "stdin: yun-vmm counted the received bytes" \
	"console0: rx [1-9][0-9]* requests $((${#stamp} + 7)) bytes" "$log.stderr"
echo "1..$n"
