#!/usr/bin/env bash
# Install what building and testing yun needs on Debian 12 (as root). Idempotent: packages
# already present are left alone, and apt-get update runs only when something is missing.
set -euo pipefail

PACKAGES=(
	build-essential clang lld llvm libclang-rt-14-dev clang-format
	libcmocka-dev liburing-dev libseccomp-dev libjansson-dev libmicrohttpd-dev
	qemu-system-x86 acpica-tools busybox-static cpio e2fsprogs kmod xz-utils zstd
	iproute2 python3 curl lz4 binutils
	dnsmasq-base # the DHCP server of tests/linux/dhcp.sh; dnsmasq-base has no system service
	bc bison flex libelf-dev libssl-dev # guest/kit/minimal-kernel.sh builds Linux (with lz4)
)

missing=()
for p in "${PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "setup: installing ${missing[*]}" >&2
	if [ "$(id -u)" -ne 0 ]; then
		echo "setup: run as root to install packages" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
