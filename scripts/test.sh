#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine (as root): install what is needed,
# build everything with warnings as errors, run every suite. CI runs exactly this.
# The last line is "N passed, N failed". Arguments select suites (see tests/run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
make -j2 WERROR=1 all fuzz
# The guest kit (Debian's kernel and busybox, with apt-get download), cached in /var/cache/yun.
kdir=$(guest/kit/debian-kernel.sh)
guest/kit/initramfs.sh "$kdir/modules" >/dev/null
# The minimal kernel for linux-minimal, built from Debian's linux-source-6.1 when its cache is
# missing (21 CPU-minutes: 29 minutes on 2 cores shared with a KVM host).
if [ $# -eq 0 ] || [[ " $* " == *" linux-minimal "* ]]; then
	guest/kit/minimal-kernel.sh >/dev/null ||
		echo "test.sh: the minimal kernel did not build; linux-minimal will fail" >&2
fi
exec tests/run "$@"
