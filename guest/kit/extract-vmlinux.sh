#!/usr/bin/env bash
# Extract the ELF vmlinux from a bzImage (as Linux's scripts/extract-vmlinux does): find the
# compressed payload by its magic, decompress it, keep the first result that is an ELF file.
set -euo pipefail
img=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

try() { # try MAGIC-HEX DECOMPRESSOR...
	local magic=$1
	shift
	local off
	for off in $(LC_ALL=C grep -obUaP "$magic" "$img" | cut -d: -f1); do
		tail -c +$((off + 1)) "$img" | "$@" >"$tmp/out" 2>/dev/null || true
		if [ -s "$tmp/out" ] && readelf -h "$tmp/out" >/dev/null 2>&1; then
			cat "$tmp/out"
			exit 0
		fi
	done
}

try '\x02\x21\x4c\x18' lz4 -dc
try '\x1f\x8b\x08' gunzip -c
try '\xfd\x37\x7a\x58\x5a\x00' unxz -c
try '\x28\xb5\x2f\xfd' zstd -dc
echo "extract-vmlinux: no ELF kernel found in $img" >&2
exit 1
