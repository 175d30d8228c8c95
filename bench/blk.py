#!/usr/bin/env python3
"""Block device benchmark: yun-vmm (io_uring, thread-pool and sync engines) beside QEMU, same
guest, same file; and with O_DIRECT beside QEMU's cache.direct=on and the host's own O_DIRECT.

The test guest's `bench=blk` mode drives virtio-blk from ring 3 by polling (no interrupts), so
the figures are the VMM's device path, not a guest kernel's:
  randread-4k-qd1    4 KiB random reads, one at a time: IOPS and p50/p99 latency
  randread-4k-qd32   4 KiB random reads, 32 in flight: IOPS
  randwrite-4k-qd1   4 KiB random writes, one at a time: IOPS
  randwrite-4k-qd32  4 KiB random writes, 32 in flight: IOPS
  seqread-1m         1 MiB sequential reads, one at a time: MB/s
The disk is a 256 MiB raw file of random bytes in $YUN_BENCH_DIR (default: the temporary
directory; inside the nested KVM host that is a tmpfs), in memory for every VMM alike: this
measures the device path, not a disk. The O_DIRECT columns need a file system that takes
O_DIRECT: $YUN_BENCH_DIRECT_DIR, else the temporary directory if it does, else (as root) an
ext4 image loop-mounted there, which keeps the data in memory too. Their baseline is the host
reading the same file with `dd iflag=direct bs=1M`: the issue's target is yun's sequential read
at 90 % of it or more. RUNS rounds, the VMMs interleaved in each; prints medians and ratios.
Needs /dev/kvm (bench/run.sh provides one on hosts without it).
"""
import json
import os
import re
import shutil
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
DISK_MIB = 256


def yun(disk, engine, direct=False):
    return [f"{BUILD}/yun-vmm", "--kernel", GUEST, "--memory", str(MEM), "--cpus", "1",
            "--disk", f"path={disk},engine={engine}" + (",direct=on" if direct else ""),
            "--cmdline", CMDLINE, "--console", "stdio"]


def qemu(disk, aio, direct=False):
    return ["qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none",
            "-M", "q35", "-accel", "kvm", "-cpu", "kvm64", "-smp", "1", "-m", str(MEM),
            "-kernel", GUEST, "-append", CMDLINE, "-serial", "stdio", "-no-reboot",
            "-drive", f"if=none,id=d0,format=raw,file={disk},aio={aio}" +
            (",cache.direct=on" if direct else ""),
            "-device", "virtio-blk-pci,drive=d0,disable-legacy=on"]


# name: (command line for a disk, whether it wants the O_DIRECT disk)
VMMS = {
    "yun io_uring": (lambda d: yun(d, "io_uring"), False),
    "yun threads": (lambda d: yun(d, "threads"), False),
    "yun sync": (lambda d: yun(d, "sync"), False),
    "qemu io_uring": (lambda d: qemu(d, "io_uring"), False),
    "qemu threads": (lambda d: qemu(d, "threads"), False),
    "yun direct": (lambda d: yun(d, "io_uring", True), True),
    "qemu direct": (lambda d: qemu(d, "io_uring", True), True),
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


def takes_direct(d):
    probe = os.path.join(d, "direct-probe")
    try:
        with open(probe, "wb") as f:
            f.write(bytes(4096))
        fd = os.open(probe, os.O_RDONLY | os.O_DIRECT)
        os.close(fd)
        return True
    except OSError:
        return False
    finally:
        if os.path.exists(probe):
            os.unlink(probe)


def direct_dir(tmp, cleanup):
    """A directory whose file system takes O_DIRECT, or None (with the reason printed)."""
    d = os.environ.get("YUN_BENCH_DIRECT_DIR")
    if d:
        if takes_direct(d):
            return d
        print(f"# YUN_BENCH_DIRECT_DIR={d} refuses O_DIRECT: no O_DIRECT columns")
        return None
    if takes_direct(tmp):
        return tmp
    if os.geteuid() != 0 or not shutil.which("mkfs.ext4"):
        print(f"# {tmp} refuses O_DIRECT and no ext4 can be mounted: no O_DIRECT columns")
        return None
    img, mnt = os.path.join(tmp, "ext4.img"), os.path.join(tmp, "ext4")
    os.mkdir(mnt)
    with open(img, "wb") as f:
        f.truncate((DISK_MIB + 64) << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", img], check=True)
    r = subprocess.run(["mount", "-o", "loop", img, mnt], capture_output=True, text=True)
    if r.returncode:
        print(f"# cannot loop-mount an ext4 image ({r.stderr.strip()}): no O_DIRECT columns")
        return None
    cleanup.append(["umount", mnt])
    return mnt


def main():
    cleanup = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("YUN_BENCH_DIR")) as tmp:
        try:
            disks = {False: os.path.join(tmp, "disk.img")}
            data = os.urandom(DISK_MIB << 20)
            with open(disks[False], "wb") as f:
                f.write(data)
            ddir = direct_dir(tmp, cleanup)
            if ddir:
                disks[True] = os.path.join(ddir, "direct.img")
                with open(disks[True], "wb") as f:
                    f.write(data)
                os.sync()
            del data
            vmms = {n: v for n, v in VMMS.items() if v[1] in disks}
            dd_mbps(disks[False], False)  # into the page cache
            results = {name: {} for name in vmms}
            for _ in range(RUNS):
                for name, (argv, direct) in vmms.items():
                    for k, v in run_guest(argv(disks[direct])).items():
                        results[name].setdefault(k, []).append(v)
            host_direct = None
            if True in disks:
                direct = [dd_mbps(disks[True], True) for _ in range(RUNS)]
                host_direct = None if None in direct else statistics.median(direct)
            host_cached = statistics.median(dd_mbps(disks[False], False) for _ in range(RUNS))
        finally:
            for argv in cleanup:
                subprocess.run(argv)
    with open(f"{BUILD}/bench-blk.json", "w") as f:
        json.dump({"results": results, "host_cached": host_cached, "host_direct": host_direct},
                  f)
    report(results, host_cached, host_direct, ddir)


def report(results, host_cached, host_direct, ddir):
    keys = [k for k in results["yun io_uring"] if not k.startswith("tsc_khz")
            and not k.startswith("capacity") and not k.startswith("qsize")]
    names = list(results)
    direct = "yun direct" in results
    print(f"{'median of ' + str(RUNS):28}" + "".join(f"{n:>14}" for n in names) +
          f"{'yun/qemu':>10}" + (f"{'direct':>8}" if direct else ""))
    for k in keys:
        med = {n: statistics.median(results[n][k]) if results[n].get(k) else 0 for n in names}

        def ratio(yun, qemus):
            best = (min if k.endswith("_us") else max)(med[q] for q in qemus)
            return med[yun] / best if best else 0

        line = f"{k:28}" + "".join(f"{med[n]:>14.0f}" for n in names)
        line += f"{ratio('yun io_uring', ['qemu io_uring', 'qemu threads']):>10.2f}"
        if direct:
            line += f"{ratio('yun direct', ['qemu direct']):>8.2f}"
        print(line)
    print(f"host dd 1 MiB reads of the file from the page cache: {host_cached:.0f} MB/s")
    if host_direct is None:
        print("host dd 1 MiB O_DIRECT reads: n/a (no file system here takes O_DIRECT)")
    else:
        seq = statistics.median(results["yun direct"]["seqread-1m mbps"])
        print(f"host dd 1 MiB O_DIRECT reads of the file in {ddir}: {host_direct:.0f} MB/s; "
              f"yun direct=on seqread-1m / host O_DIRECT: {seq / host_direct:.2f} "
              "(the issue's target: 0.90 or more)")
    print("yun/qemu: yun io_uring against the better QEMU (io_uring or thread pool); direct: "
          "yun io_uring direct=on against QEMU io_uring cache.direct=on")


if __name__ == "__main__":
    main()
