#!/usr/bin/env bash
# Fetch one Debian package with `apt-get download` (never installed on the host), unpack it
# into the cache, and print the directory it was unpacked into. Idempotent, and safe to run
# twice at once. YUN_OFFLINE=1 only looks in the cache.
#
#   guest/kit/fetch.sh PACKAGE
set -euo pipefail
pkg=$1
CACHE=${YUN_CACHE:-/var/cache/yun}
dir=$CACHE/pkg/$pkg
if [ -f "$dir/.unpacked" ]; then
	echo "$dir"
	exit 0
fi
if [ "${YUN_OFFLINE:-0}" = 1 ]; then
	echo "fetch: $pkg is not in $CACHE (run guest/kit/fetch.sh $pkg on a host with apt)" >&2
	exit 1
fi
mkdir -p "$CACHE/pkg" "$CACHE/deb"
exec 9>"$CACHE/pkg/.lock"
flock 9
if [ ! -f "$dir/.unpacked" ]; then
	if ! apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
		apt-get update -qq >/dev/null
	fi
	(cd "$CACHE/deb" && apt-get download -qq "$pkg" >/dev/null 2>"$CACHE/deb/.err") || {
		cat "$CACHE/deb/.err" >&2
		echo "fetch: apt-get download $pkg failed" >&2
		exit 1
	}
	deb=$(ls -t "$CACHE/deb/${pkg}_"*.deb | head -n1)
	rm -rf "$dir.tmp"
	dpkg-deb -x "$deb" "$dir.tmp"
	touch "$dir.tmp/.unpacked"
	rm -rf "$dir"
	mv "$dir.tmp" "$dir"
fi
echo "$dir"
