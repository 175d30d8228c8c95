#!/usr/bin/env bash
# Run a benchmark, yun-vmm beside QEMU: `boot` (the default; bench/boot.py: boot time and
# memory), `blk` (bench/blk.py: the virtio-blk device path) or `net` (bench/net.py: the
# virtio-net device path, on a tap in a network namespace of its own), `snapshot` or `linux`
# (bench/linux.py: Linux's boot time, the minimal kernel beside Debian's). Builds first;
# on a host without a usable /dev/kvm, runs inside the nested KVM host of tests/kvmhost, where
# both VMMs pay the same nesting cost (compare the ratios, not the absolute figures).
set -euo pipefail
cd "$(dirname "$0")/.."
make -j"$(nproc)" vmm guest bench >/dev/null
which=boot
case ${1:-} in boot | blk | net | snapshot | linux) which=$1 && shift ;; esac
exec tests/kvmhost/run.sh --cpus 2 -- python3 "bench/$which.py" "$@"
