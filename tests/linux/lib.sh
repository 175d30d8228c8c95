# shellcheck shell=bash
# What the tests in tests/linux share: their settings, the TAP helpers, and the guest kit.
# Sourced from the repository's root, after `set -u`.
VMM=$(realpath -m "${BUILD:-build}/yun-vmm")
LOGS=${YUN_TEST_LOGS:-${BUILD:-build}/test-logs}
TIMEOUT=${YUN_LINUX_TIMEOUT:-900}
mkdir -p "$LOGS"
n=0

ok() { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); echo "not ok $n - $*"; }
expect() { # expect WHAT REGEX FILE
	if grep -qE -- "$2" "$3"; then ok "$1"; else not_ok "$1 # /$2/ not in $3"; fi
}

# Linux userspace needs ring 0 virtualized: a host whose KVM emulates it cannot run it.
skip_without_ring0() {
	if [ -d /sys/module/kvm_pvm ]; then
		echo "1..0 # SKIP this host's KVM (kvm_pvm) cannot run Linux userspace (see DESIGN.md)"
		exit 0
	fi
}

# Set kdir (Debian's kernel, unpacked) and, unless `kernel-only` is given, initrd (the busybox
# initramfs) from the cache; without them, one failed test and exit.
load_kit() {
	kdir=$(YUN_OFFLINE=1 guest/kit/debian-kernel.sh) &&
		{ [ "${1:-}" = kernel-only ] ||
			initrd=$(YUN_OFFLINE=1 guest/kit/initramfs.sh "$kdir/modules"); } || {
		not_ok "guest kit in the cache (run guest/kit/debian-kernel.sh first)"
		echo "1..$n"
		exit 1
	}
}
