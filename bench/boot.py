#!/usr/bin/env python3
"""Boot-time and memory benchmark: yun-vmm beside QEMU, same test guest, same run.

For each VMM, RUNS times, interleaved so that host noise hits both alike:
  first instruction  process start -> the guest's first byte on COM1 (head.S writes '!' as its
                     third instruction, so this is the first instruction plus one port exit)
  power-off          process start -> process exit, on the guest's shortest path (`bench`: read
                     the ACPI tables it needs, power off through PM1a_CNT)
  overhead           the VMM's resident memory beyond the guest memory the guest touched:
                     VmRSS - RssShmem, sampled while the guest idles (`bench=wait`); guest RAM is
                     a memfd in both VMMs (QEMU: memory-backend-memfd), so touched guest pages
                     are exactly RssShmem.
1 vCPU, 128 MiB. Prints medians and yun/QEMU ratios. Needs /dev/kvm (bench/run.sh provides one
on hosts without it).
"""
import os
import statistics
import subprocess
import sys
import time

RUNS = int(os.environ.get("YUN_BENCH_RUNS", "10"))
BUILD = os.environ.get("BUILD", "build")
GUEST = f"{BUILD}/guest/test-guest.elf"
MEM = 128


def yun(cmdline):
    return [f"{BUILD}/yun-vmm", "--kernel", GUEST, "--memory", str(MEM), "--cpus", "1",
            "--cmdline", cmdline, "--console", "stdio"]


def qemu(cmdline):
    return ["qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none",
            "-M", "q35", "-accel", "kvm", "-cpu", "kvm64", "-smp", "1", "-m", str(MEM),
            "-object", f"memory-backend-memfd,id=ram,size={MEM}M", "-machine", "memory-backend=ram",
            "-kernel", GUEST, "-append", cmdline, "-serial", "stdio", "-no-reboot"]


VMMS = {"yun-vmm": yun, "qemu": qemu}


def spawn_baseline():
    """What starting any process and reading its first byte costs here (python, fork, exec)."""
    samples = []
    for _ in range(RUNS):
        t0 = time.monotonic_ns()
        p = subprocess.Popen(["printf", "!"], stdout=subprocess.PIPE)
        p.stdout.read(1)
        samples.append((time.monotonic_ns() - t0) / 1e6)
        p.wait()
    return statistics.median(samples)


def time_boot(argv):
    t0 = time.monotonic_ns()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    first = p.stdout.read(1)
    t1 = time.monotonic_ns()
    p.stdout.read()
    status = p.wait()
    t2 = time.monotonic_ns()
    if first != b"!" or status != 0:
        sys.exit(f"bench: {argv[0]} failed: first byte {first!r}, status {status}")
    return (t1 - t0) / 1e6, (t2 - t0) / 1e6


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def overhead(argv):
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    out = b""
    while not out.endswith(b"ready\r\n"):
        b = p.stdout.read(1)
        if not b:
            sys.exit(f"bench: {argv[0]} ended before the guest was ready")
        out += b
    time.sleep(0.2)
    rss = status_kib(p.pid, "VmRSS")
    shmem = status_kib(p.pid, "RssShmem")
    p.stdin.write(b"x")
    p.stdin.close()
    p.stdout.read()
    p.wait()
    return rss - shmem, shmem


def main():
    times = {name: ([], []) for name in VMMS}
    for _ in range(RUNS):
        for name, argv in VMMS.items():
            first, off = time_boot(argv("bench"))
            times[name][0].append(first)
            times[name][1].append(off)
    mem = {name: overhead(argv("bench=wait")) for name, argv in VMMS.items()}

    base = spawn_baseline()
    print(f"# {RUNS} runs each, interleaved; 1 vCPU, {MEM} MiB; medians")
    print(f"# baseline: spawning printf and reading its first byte takes {base:.1f} ms here")
    print(f"{'':24}{'yun-vmm':>12}{'qemu':>12}{'yun/qemu':>10}")
    rows = [
        ("first instruction (ms)", [statistics.median(times[n][0]) for n in VMMS]),
        ("power-off (ms)", [statistics.median(times[n][1]) for n in VMMS]),
        ("VMM overhead (KiB)", [mem[n][0] for n in VMMS]),
        ("guest touched (KiB)", [mem[n][1] for n in VMMS]),
    ]
    for label, (y, q) in rows:
        print(f"{label:24}{y:12.1f}{q:12.1f}{y / q:10.2f}")


if __name__ == "__main__":
    main()
