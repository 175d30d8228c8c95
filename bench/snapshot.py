#!/usr/bin/env python3
"""Restore from a snapshot beside a cold boot: yun-vmm, the same test guest, the same run.

The test guest in `bench=snapshot` mode (2 vCPUs, 128 MiB, one virtio-blk disk) sets up its disk,
prints "ready" and polls COM1. One snapshot of it is taken through the API. Then, RUNS times,
interleaved so that host noise hits both alike:
  cold boot   process start -> "ready" on the console: the kernel loaded, the guest's set-up
              (ACPI tables, APs brought up, virtio-blk initialised and a sector read) done;
  restore     `yun-vmm --restore DIR` process start -> the restored guest's answer to a byte
              sent at once ("# got byte"): the guest running again at the same point;
and, from yun-vmm's own log (-v), the time from the start of building the VM to vCPU 0's first
KVM_RUN, for both ("booting: ..." and "restored: vCPU 0 runs N ms after the restore began"):
the VMM's part, without process start-up. QEMU has no comparable restore from a file through
its command line at this speed (its `-incoming` reads a migration stream), so the comparison is
with our own cold boot. Also the snapshot's size on disk and the time to write it.
"""
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

RUNS = int(os.environ.get("YUN_BENCH_RUNS", "10"))
BUILD = os.environ.get("BUILD", "build")
GUEST = f"{BUILD}/guest/test-guest.elf"
VMM = f"{BUILD}/yun-vmm"
MEM = 128


def read_until(p, marker, what):
    out = b""
    while marker not in out:
        b = p.stdout.read(1)
        if not b:
            sys.exit(f"bench: {what} ended before {marker!r}: {out[-200:]!r}")
        out += b
    return out


def log_ms(stderr, pattern):
    m = re.search(pattern + r" ([0-9.]+) ms", stderr)
    if not m:
        sys.exit(f"bench: no '{pattern}' in yun-vmm's log: {stderr[-400:]}")
    return float(m.group(1))


def api(sock_path, method, path, body=None):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    data = json.dumps(body).encode() if body is not None else b""
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: yun\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
    reply = b""
    while chunk := s.recv(65536):
        reply += chunk
    s.close()
    status = int(reply.split(b" ", 2)[1])
    if status >= 300:
        sys.exit(f"bench: {method} {path}: {reply!r}")


def boot_argv(disk, extra=()):
    return [VMM, "-v", "--kernel", GUEST, "--memory", str(MEM), "--cpus", "2",
            "--cmdline", "bench=snapshot", "--disk", f"path={disk}", *extra]


def cold_boot(disk, errlog):
    with open(errlog, "w") as err:
        t0 = time.monotonic_ns()
        p = subprocess.Popen(boot_argv(disk), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=err)
        read_until(p, b"ready", "the cold boot")
        t1 = time.monotonic_ns()
        p.stdin.write(b"x")
        p.stdin.close()
        p.stdout.read()
        p.wait()
    return (t1 - t0) / 1e6, log_ms(open(errlog).read(), "vCPU 0 runs")


def restore(snap, errlog):
    with open(errlog, "w") as err:
        t0 = time.monotonic_ns()
        p = subprocess.Popen([VMM, "-v", "--restore", snap], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=err)
        p.stdin.write(b"y")
        p.stdin.flush()
        read_until(p, b"# got byte", "the restore")
        t1 = time.monotonic_ns()
        p.stdin.close()
        p.stdout.read()
        status = p.wait()
    if status != 0:
        sys.exit(f"bench: the restored guest exited {status}: {open(errlog).read()[-400:]}")
    return (t1 - t0) / 1e6, log_ms(open(errlog).read(), "vCPU 0 runs")


def take_snapshot(tmp, disk):
    sock = f"{tmp}/api.sock"
    snap = f"{tmp}/snap"
    with open(f"{tmp}/snapshot.stderr", "w") as err:
        p = subprocess.Popen(boot_argv(disk, ["--api-socket", sock]), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=err)
        read_until(p, b"ready", "the VM to snapshot")
        api(sock, "PATCH", "/vm", {"state": "Paused"})
        api(sock, "PUT", "/snapshot/create", {"path": snap})
        api(sock, "PUT", "/actions", {"action_type": "Stop"})
        p.stdin.close()
        p.stdout.read()
        p.wait()
    written = log_ms(open(f"{tmp}/snapshot.stderr").read(), "written in")
    st = os.stat(f"{snap}/memory")
    state = os.stat(f"{snap}/state").st_size
    return snap, written, st.st_blocks * 512, state


def main():
    with tempfile.TemporaryDirectory() as tmp:
        disk = f"{tmp}/disk.img"
        with open(disk, "wb") as f:
            f.write(b"".join((b"yun-sector-%05u" % s * 64)[:512] for s in range(2048)))
        snap, written, mem_bytes, state_bytes = take_snapshot(tmp, disk)
        cold, warm = ([], []), ([], [])
        for i in range(RUNS):
            for which, fn, arg in (cold, cold_boot, disk), (warm, restore, snap):
                total, vmm = fn(arg, f"{tmp}/run.stderr")
                which[0].append(total)
                which[1].append(vmm)
    print(f"# {RUNS} runs each, interleaved; 2 vCPUs, {MEM} MiB, one virtio-blk disk; medians")
    print(f"# snapshot: written in {written:.1f} ms; memory file {mem_bytes >> 10} KiB on disk "
          f"(of {MEM} MiB), state {state_bytes >> 10} KiB")
    print(f"{'':38}{'cold boot':>12}{'restore':>12}{'ratio':>8}")
    for label, i in ("process start -> guest at 'ready' (ms)", 0), ("VM build -> vCPU 0 runs (ms)", 1):
        c, r = statistics.median(cold[i]), statistics.median(warm[i])
        print(f"{label:38}{c:12.2f}{r:12.2f}{r / c:8.2f}")


if __name__ == "__main__":
    main()
