#!/usr/bin/env bash
# The minimal guest kernel: Linux from Debian's linux-source-6.1 package (apt-get download,
# never installed), configured by `make allnoconfig` plus guest/kit/minimal.config, with
# yun-vmm's devices built in and no modules. Cached outside the repository under a key made
# of the source's version and the fragment; prints the cache directory, which holds:
#   vmlinux        the ELF kernel (booted through PVH)
#   bzImage        the compressed kernel (booted through the Linux boot protocol)
#   config         the full .config it was built with
#   version        the kernel release
# A cold build takes minutes (nice -n 19 make -j2; a line every 200 build steps on stderr,
# the whole log in the cache directory's build.log); a second run is instant.
# YUN_OFFLINE=1 only looks in the cache.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CACHE=${YUN_CACHE:-/var/cache/yun}
fragment=$here/minimal.config
pkg=linux-source-6.1

src=$("$here/fetch.sh" "$pkg")
deb=$(ls -t "$CACHE/deb/${pkg}_"*.deb 2>/dev/null | head -n1)
[ -n "$deb" ] || { echo "minimal-kernel: no $pkg .deb in $CACHE/deb" >&2; exit 1; }
srcver=$(dpkg-deb -f "$deb" Version)
key=$( (echo "$pkg $srcver"; cat "$fragment") | sha256sum | cut -c1-16)
out=$CACHE/kernel/minimal-$key
if [ -f "$out/vmlinux" ]; then
	echo "$out"
	exit 0
fi
if [ "${YUN_OFFLINE:-0}" = 1 ]; then
	echo "minimal-kernel: $out is not built (run guest/kit/minimal-kernel.sh)" >&2
	exit 1
fi

mkdir -p "$CACHE/kernel"
exec 9>"$CACHE/kernel/.minimal-kernel.lock"
flock 9
if [ -f "$out/vmlinux" ]; then
	echo "$out"
	exit 0
fi
tmp=$out.tmp
rm -rf "$tmp"
mkdir -p "$tmp/build"
trap 'rm -rf "$tmp/linux" "$tmp/build"' EXIT
echo "minimal-kernel: building Linux $srcver (Debian's $pkg) into $out" >&2
start=$(date +%s)
tar -xJf "$src/usr/src/$pkg.tar.xz" -C "$tmp"
mv "$tmp/$pkg" "$tmp/linux"
kmake() {
	nice -n 19 make -C "$tmp/linux" O="$tmp/build" ARCH=x86_64 "$@"
}
kmake -s KCONFIG_ALLCONFIG="$fragment" allnoconfig
kmake -s olddefconfig

# KCONFIG_ALLCONFIG drops, without a word, an option whose dependencies are not met.
missing=0
while read -r line; do
	case $line in
	CONFIG_*=*)
		grep -qxF "$line" "$tmp/build/.config" || {
			echo "minimal-kernel: $line did not survive; .config has: $(grep -E "^(# )?${line%%=*}[= ]" "$tmp/build/.config" || echo nothing)" >&2
			missing=1
		}
		;;
	"# CONFIG_"*" is not set")
		sym=${line#\# }
		sym=${sym%% *}
		if grep -qE "^$sym=[ym]" "$tmp/build/.config"; then
			echo "minimal-kernel: $sym is on although the fragment turns it off" >&2
			missing=1
		fi
		;;
	esac
done <"$fragment"
[ "$missing" = 0 ] || { echo "minimal-kernel: the configuration is not what $fragment asks" >&2; exit 1; }

# make's own lines go to build.log; stderr gets one line every 200 steps.
set +e
kmake -j2 vmlinux bzImage 2>&1 | tee "$tmp/build.log" |
	awk '/^  [A-Z]/ { if (++n % 200 == 0) { printf "minimal-kernel: %d build steps\n", n > "/dev/stderr"; fflush("/dev/stderr") } }'
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
	tail -n 40 "$tmp/build.log" >&2
	echo "minimal-kernel: make failed (status $status; log in $tmp/build.log)" >&2
	exit 1
fi
cp "$tmp/build/vmlinux" "$tmp/vmlinux"
cp "$tmp/build/arch/x86/boot/bzImage" "$tmp/bzImage"
cp "$tmp/build/.config" "$tmp/config"
cat "$tmp/build/include/config/kernel.release" >"$tmp/version"
echo "$srcver" >"$tmp/source-version"
rm -rf "$tmp/linux" "$tmp/build"
rm -rf "$out"
mv "$tmp" "$out"
echo "minimal-kernel: built in $(($(date +%s) - start)) s: vmlinux $(stat -c %s "$out/vmlinux") bytes, bzImage $(stat -c %s "$out/bzImage") bytes" >&2
echo "$out"
