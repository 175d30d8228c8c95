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
exec tests/run "$@"
