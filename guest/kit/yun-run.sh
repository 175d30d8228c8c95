# The end of a guest's /init (busybox sh), appended to it by guest/kit/initramfs.sh and
# scripts/demo.sh --minimal: with `yun.run=CMD` on the kernel command line (commas for spaces,
# which the command line cannot hold) it runs CMD, else a shell on the console; then it powers
# the guest off.
cmd=$(sed -n 's/.*yun\.run=\([^ ]*\).*/\1/p' /proc/cmdline | tr , ' ')
if [ -n "$cmd" ]; then
	sh -c "$cmd"
	echo "yun-guest: command exited with status $?"
else
	echo "yun-guest: shell on the console; 'exit' powers off"
	setsid cttyhack sh
fi
sync
poweroff -f
