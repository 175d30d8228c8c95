#!/usr/bin/env bash
# Run the benchmarks (bench/boot.py: boot time and memory, yun-vmm beside QEMU). Builds first;
# on a host without a usable /dev/kvm, runs inside the nested KVM host of tests/kvmhost, where
# both VMMs pay the same nesting cost (compare the ratios, not the absolute figures).
set -euo pipefail
cd "$(dirname "$0")/.."
make -j"$(nproc)" vmm guest >/dev/null
exec tests/kvmhost/run.sh --cpus 2 -- python3 bench/boot.py "$@"
