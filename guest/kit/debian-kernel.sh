#!/usr/bin/env bash
# Debian's cloud kernel for yun guests, fetched with apt-get download (never installed on the
# host) and cached outside the repository. Prints the cache directory, which holds:
#   vmlinuz        the bzImage, as Debian ships it
#   vmlinux        the ELF kernel extracted from it (booted through PVH)
#   modules/       the kernel's modules (lib/modules/VERSION)
#   version        the kernel release
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CACHE=${YUN_CACHE:-/var/cache/yun}

meta=${YUN_KERNEL_PACKAGE:-linux-image-cloud-amd64}
pkg=$(apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
if [ -z "$pkg" ]; then
	apt-get update -qq >/dev/null
	pkg=$(apt-cache depends "$meta" | awk '/Depends: linux-image-/ {print $2; exit}')
fi
[ -n "$pkg" ] || { echo "debian-kernel: cannot resolve $meta" >&2; exit 1; }

out=$CACHE/kernel/$pkg
if [ ! -f "$out/vmlinux" ]; then
	root=$("$here/fetch.sh" "$pkg")
	mkdir -p "$out.tmp"
	cp "$root"/boot/vmlinuz-* "$out.tmp/vmlinuz"
	version=$(basename "$root"/boot/vmlinuz-* | sed 's/^vmlinuz-//')
	echo "$version" >"$out.tmp/version"
	ln -sfn "$root/lib/modules/$version" "$out.tmp/modules"
	"$here/extract-vmlinux.sh" "$out.tmp/vmlinuz" >"$out.tmp/vmlinux"
	rm -rf "$out"
	mv "$out.tmp" "$out"
fi
echo "$out"
