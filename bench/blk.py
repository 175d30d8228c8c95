#!/usr/bin/env python3
"""Block device benchmark: yun-vmm (io_uring and sync engines) beside QEMU, same guest, same file.

The test guest's `bench=blk` mode drives virtio-blk from ring 3 by polling (no interrupts), so
the figures are the VMM's device path, not a guest kernel's:
  randread-4k-qd1    4 KiB random reads, one at a time: IOPS and p50/p99 latency
  randread-4k-qd32   4 KiB random reads, 32 in flight: IOPS
  randwrite-4k-qd1   4 KiB random writes, one at a time: IOPS
  randwrite-4k-qd32  4 KiB random writes, 32 in flight: IOPS
  seqread-1m         1 MiB sequential reads, one at a time: MB/s
The disk is a 256 MiB raw file of random bytes in $YUN_BENCH_DIR (default: the temporary
directory; inside the nested KVM host that is a tmpfs), in memory for every VMM alike: this
measures the device path, not a disk. A host-side baseline reads the same file with
dd (O_DIRECT and cached) for the physical limit. RUNS rounds, the VMMs interleaved in each;
prints medians and ratios. Needs /dev/kvm (bench/run.sh provides one on hosts without it).
"""
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

RUNS = int(os.environ.get("YUN_BENCH_RUNS", "3"))
BUILD = os.environ.get("BUILD", "build")
GUEST = f"{BUILD}/guest/test-guest.elf"
MEM = 128
CMDLINE = "bench=blk"


def yun(disk, engine):
    return [f"{BUILD}/yun-vmm", "--kernel", GUEST, "--memory", str(MEM), "--cpus", "1",
            "--disk", f"path={disk},engine={engine}", "--cmdline", CMDLINE,
            "--console", "stdio"]


def qemu(disk, aio):
    return ["qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none",
            "-M", "q35", "-accel", "kvm", "-cpu", "kvm64", "-smp", "1", "-m", str(MEM),
            "-kernel", GUEST, "-append", CMDLINE, "-serial", "stdio", "-no-reboot",
            "-drive", f"if=none,id=d0,format=raw,file={disk},aio={aio}",
            "-device", "virtio-blk-pci,drive=d0,disable-legacy=on"]


VMMS = {
    "yun io_uring": lambda d: yun(d, "io_uring"),
    "yun sync": lambda d: yun(d, "sync"),
    "qemu io_uring": lambda d: qemu(d, "io_uring"),
    "qemu threads": lambda d: qemu(d, "threads"),
}
LINE = re.compile(r"^bench-blk (\S+) (.*)$")


def run_guest(argv):
    out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=600).stdout
    got = {}
    for line in out.splitlines():
        m = LINE.match(line.strip())
        if not m:
            continue
        for kv in m.group(2).split():
            k, _, v = kv.partition("=")
            if v.isdigit():
                got[f"{m.group(1)} {k}"] = int(v)
    if "bench-blk done" not in out:
        sys.exit(f"{argv[0]}: the guest did not finish:\n{out[-2000:]}")
    return got


def dd_mbps(disk, direct):
    """The host reading the file itself; None where O_DIRECT is refused (tmpfs)."""
    t0 = time.monotonic()
    r = subprocess.run(["dd", f"if={disk}", "of=/dev/null", "bs=1M"] +
                       (["iflag=direct"] if direct else []), capture_output=True)
    if r.returncode:
        return None
    return os.path.getsize(disk) / (time.monotonic() - t0) / 1e6


def main():
    with tempfile.TemporaryDirectory(dir=os.environ.get("YUN_BENCH_DIR")) as tmp:
        disk = os.path.join(tmp, "disk.img")
        with open(disk, "wb") as f:
            f.write(os.urandom(256 << 20))
        dd_mbps(disk, False)  # into the page cache
        results = {name: {} for name in VMMS}
        for _ in range(RUNS):
            for name, argv in VMMS.items():
                for k, v in run_guest(argv(disk)).items():
                    results[name].setdefault(k, []).append(v)
        direct = [dd_mbps(disk, True) for _ in range(RUNS)]
        host_direct = None if None in direct else statistics.median(direct)
        host_cached = statistics.median(dd_mbps(disk, False) for _ in range(RUNS))
    keys = [k for k in results["yun io_uring"] if not k.startswith("tsc_khz")
            and not k.startswith("capacity") and not k.startswith("qsize")]
    names = list(VMMS)
    print(f"{'median of ' + str(RUNS):30}" + "".join(f"{n:>15}" for n in names) +
          f"{'yun/qemu':>10}")
    for k in keys:
        med = {n: statistics.median(results[n][k]) if results[n].get(k) else 0 for n in names}
        best_qemu = max(med["qemu io_uring"], med["qemu threads"])
        if k.endswith("_us"):  # latency: lower is better; compare with the lower QEMU figure
            best_qemu = min(med["qemu io_uring"], med["qemu threads"])
        ratio = med["yun io_uring"] / best_qemu if best_qemu else 0
        print(f"{k:30}" + "".join(f"{med[n]:>15.0f}" for n in names) + f"{ratio:>10.2f}")
    direct = "n/a (the filesystem refuses it)" if host_direct is None else f"{host_direct:.0f}"
    print(f"host dd 1 MiB reads of the file: {host_cached:.0f} MB/s from the page cache, "
          f"O_DIRECT {direct}")
    print("yun/qemu: yun io_uring against the better QEMU (io_uring or thread pool)")


if __name__ == "__main__":
    main()
