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

# A network namespace of the test's own and a scratch directory, both gone however the test
# ends: sets ns (PREFIX-PID) and dir (DIR, made here, or a new temporary one) and brings lo up
# in ns. On exit the namespace's processes are killed, then netns_cleanup_hook runs if the test
# defines one (for its own processes outside the namespace), then the namespace and dir are
# deleted; HUP, INT and TERM exit through it with 128 + the signal's number. Without a
# namespace, one failed test and exit.
netns_setup() { # netns_setup PREFIX [DIR]
	ns=$1-$$
	dir=${2:-$(mktemp -d)}
	trap netns_cleanup EXIT
	trap 'exit 129' HUP
	trap 'exit 130' INT
	trap 'exit 143' TERM
	mkdir -p "$dir"
	ip netns add "$ns" || { not_ok "a network namespace for the test"; echo "1..$n"; exit 1; }
	in_ns ip link set lo up
}
netns_cleanup() {
	ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null
	if declare -F netns_cleanup_hook >/dev/null; then netns_cleanup_hook; fi
	ip netns del "$ns" 2>/dev/null
	rm -rf "$dir"
}
in_ns() { ip netns exec "$ns" "$@"; }

# Wait (up to 10 s) for yun-vmm to make the tap TAP in ns, then give the host's end ADDR (with
# its prefix length) and bring it up.
tap_up() { # tap_up TAP ADDR
	for _ in $(seq 100); do in_ns ip link show "$1" >/dev/null 2>&1 && break; sleep 0.1; done
	in_ns ip addr add "$2" dev "$1"
	in_ns ip link set "$1" up
}
