#!/usr/bin/env bash
# A busybox initramfs for Linux guests, cached outside the repository; prints its path.
# Its /init mounts the usual file systems, loads the virtio modules of the kernel it is built
# for (Debian's cloud kernel has them as modules), prints "yun-guest: userspace up" on the
# console (the boot-time marker), then runs a shell on the console and powers off when it
# exits. With `yun.run=CMD` on the kernel command line it runs CMD instead of the shell (that
# end of /init is guest/kit/yun-run.sh, which the minimal kernel's root in scripts/demo.sh shares).
#
#   guest/kit/initramfs.sh MODULES_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CACHE=${YUN_CACHE:-/var/cache/yun}
moddir=$1
# In load order: each after the modules it needs.
MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover
	 net_failover virtio_blk virtio_net virtio-rng virtio_console
	 vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport"

bb=$("$here/fetch.sh" busybox-static)/bin/busybox
# The cache's key: what the initramfs is made of, by content (not by path, which differs from
# one checkout to another).
key=$( (for f in "$bb" "$0" "$here/yun-run.sh"; do sha256sum <"$f"; done
	readlink -f "$moddir"; echo "$MODULES") | sha256sum | cut -c1-16)
out=$CACHE/initramfs/initramfs-$key.cpio.gz
if [ ! -f "$out" ]; then
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	mkdir -p "$tmp"/{bin,dev,proc,sys,tmp,mnt,lib/modules,etc}
	cp "$bb" "$tmp/bin/busybox"
	: >"$tmp/etc/modules"
	for m in $MODULES; do
		f=$(find -L "$moddir/kernel" -name "$m.ko" -o -name "$(echo "$m" | tr - _).ko" | head -n1)
		[ -n "$f" ] || continue
		cp "$f" "$tmp/lib/modules/"
		basename "$f" .ko >>"$tmp/etc/modules"
	done
	cat >"$tmp/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /etc/modules); do insmod /lib/modules/$m.ko 2>/dev/null; done
# With console=hvc0 the console's driver (virtio_console) is one of those modules: the kernel
# had no console to give init, so init takes it now that there is one.
[ -t 1 ] || exec </dev/console >/dev/console 2>&1
echo "yun-guest: userspace up"
INIT
	cat "$here/yun-run.sh" >>"$tmp/init"
	chmod +x "$tmp/init"
	mkdir -p "$(dirname "$out")"
	(cd "$tmp" && find . | cpio -o -H newc --quiet | gzip -9) >"$out.tmp"
	mv "$out.tmp" "$out"
fi
echo "$out"
