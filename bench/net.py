#!/usr/bin/env python3
"""Network device benchmark: yun-vmm beside QEMU's user-space virtio-net (vhost=off), same guest,
same tap.

The test guest's `bench=net-*` modes drive virtio-net from ring 3 by polling (no interrupts, no
offloads), so the figures are the VMM's device path, not a guest kernel's:
  tx-64      frames with 64-byte UDP payloads, back to back for NET_MS: packets/s
  tx-1500    1514-byte frames (1500-byte IP packets), the same way: MB/s of frames
  rr-64      a 64-byte datagram to an echo program on the host and the wait for its reply:
             p50/p99 latency, round trips/s
  rx-64      the host floods the guest with frames of 64-byte datagrams, written straight to
             the tap (past the host's IP stack); the guest counts: packets/s
  rxb-64     the same frames, BURST of them queued on the tap while the guest takes none,
             then drained: packets/s with no sender sharing the host, the receive path's
             capacity (rx-64's rate is at most what the generator offers)
Each round also measures tx-64's ceiling on this host: a program writing the guest's frames
into the tap, as a VMM's device thread does, with no VMM at all.
One boot of the guest (`bench=net`) runs the five in turn. The tap lives in a network
namespace of the benchmark's own, set up once for every VMM alike; the guest's transmit rates
are counted twice, by the guest (frames the device handed back) and on the host (the tap's
rx_packets, sampled while the guest sends: what actually arrived), and the host's IP and UDP
counters confirm the frames were valid (headers, checksums, addresses, ports). The kicks rows
count the guest's notifications, each a VM exit: it kicks only when the device's used ring
does not say VRING_USED_F_NO_NOTIFY. RUNS rounds, the VMMs interleaved in each; prints medians
and ratios. Needs /dev/kvm and CAP_NET_ADMIN (bench/run.sh net provides both on hosts without
them).
"""
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

RUNS = int(os.environ.get("YUN_BENCH_RUNS", "3"))
NET_MS = int(os.environ.get("YUN_BENCH_NET_MS", "1000"))
RR_N = int(os.environ.get("YUN_BENCH_NET_RR", "2000"))
BURST = int(os.environ.get("YUN_BENCH_NET_BURST", "16000"))
TXQUEUELEN = 1000  # a tap's own, but for rxb-64's burst
DEBUG = bool(os.environ.get("YUN_BENCH_DEBUG"))
BUILD = os.environ.get("BUILD", "build")
GUEST = f"{BUILD}/guest/test-guest.elf"
PEER = f"{BUILD}/bench/net-peer"
MEM = 128
TAP = "yunbench0"
TAP_MAC = "02:00:00:00:00:01"
GUEST_MAC = "52:54:00:12:34:56"
HOST_IP, GUEST_IP = "10.0.2.1", "10.0.2.15"
DISCARD, ECHO = 9, 7
NS_ENV = "YUN_BENCH_NETNS"


def cmdline(mode):
    return (f"bench={mode} net_ms={NET_MS} net_n={RR_N} net_ip={GUEST_IP} "
            f"net_peer_ip={HOST_IP} net_peer_mac={TAP_MAC}")


def yun(mode):
    return [f"{BUILD}/yun-vmm", "--kernel", GUEST, "--memory", str(MEM), "--cpus", "1",
            "--net", f"tap={TAP},mac={GUEST_MAC}", "--cmdline", cmdline(mode),
            "--console", "stdio"]


def qemu(mode):
    return ["qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none",
            "-M", "q35", "-accel", "kvm", "-cpu", "kvm64", "-smp", "1", "-m", str(MEM),
            "-kernel", GUEST, "-append", cmdline(mode), "-serial", "stdio", "-no-reboot",
            "-name", "bench,debug-threads=on",  # names its vCPU threads, for device_cpu()
            "-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no,vhost=off",
            "-device", f"virtio-net-pci,netdev=n0,disable-legacy=on,mac={GUEST_MAC},romfile="]


VMMS = {"yun": yun, "qemu": qemu}
# YUN_BENCH_BASE=PATH: another yun-vmm (an older build) run beside the two, for before/after.
if os.environ.get("YUN_BENCH_BASE"):
    VMMS["base"] = lambda mode: [os.environ["YUN_BENCH_BASE"]] + yun(mode)[1:]


def trace(*what):
    """With YUN_BENCH_DEBUG set, each step of a round on stderr: where a stuck round is."""
    if DEBUG:
        print(f"# {time.monotonic():.3f}", *what, file=sys.stderr, flush=True)


def sh(*argv):
    subprocess.run(argv, check=True)


def tap_stat(name):
    with open(f"/sys/class/net/{TAP}/statistics/{name}") as f:
        return int(f.read())


def snmp():
    """This namespace's IP and UDP counters, as {"Udp InCsumErrors": N, ...}."""
    with open("/proc/net/snmp") as f:
        lines = [line.split() for line in f]
    got = {}
    for names, values in zip(lines[::2], lines[1::2]):
        for k, v in zip(names[1:], values[1:]):
            got[f"{names[0][:-1]} {k}"] = int(v)
    return got


# The names the VMMs give their vCPU threads (QEMU with -name debug-threads=on).
VCPU_THREAD = re.compile(r"vcpu \d+|CPU \d+/KVM")


def threads(pid):
    """(tid, is a vCPU thread, schedstat fields) for each of the VMM's threads; a thread that
    ends while it is read is left out (what it ran is lost to both marks alike)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                stat = [int(x) for x in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        yield int(tid), bool(VCPU_THREAD.fullmatch(comm)), stat


def device_cpu(pid):
    """CPU time (ns) the VMM's threads other than its vCPUs have run, and how many times the
    scheduler put them on a CPU: its device path, the work a packet costs the host beside the
    guest's own, and its wake-ups. None when no thread has a vCPU's name (a build that does
    not name them)."""
    total, slices, vcpus = 0, 0, 0
    for _, vcpu, (ns, _, runs) in threads(pid):
        if vcpu:
            vcpus += 1
        else:
            total += ns
            slices += runs
    return (total, slices) if vcpus else None


class Sampler(threading.Thread):
    """The tap's rx_packets every few milliseconds, for the rate at which frames arrived."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples, self.stop = [], threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.samples.append((time.monotonic(), tap_stat("rx_packets")))
            time.sleep(0.01)

    def rate(self, t0, t1):
        """Packets a second between t0 and t1: from the first sample that saw new packets to
        the first that saw the last of them."""
        s = [x for x in self.samples if t0 <= x[0] <= t1]
        if len(s) < 3:
            return 0
        first = next((i for i, (_, c) in enumerate(s) if c > s[0][1]), None)
        last = next(i for i, (_, c) in enumerate(s) if c == s[-1][1])
        if first is None or last <= first:
            return 0
        return (s[last][1] - s[first][1]) / (s[last][0] - s[first][0])


# Where everything runs, with two CPUs or more: the VMM's device threads (all but its vCPUs),
# the host's peers and this script on the first; the guest's vCPU and rx-64's generator on the
# last. The device path is what is measured, so it gets a CPU the generator does not take; the
# guest only polls and counts, and needs little of its CPU. Unpinned, the scheduler's placement
# of three busy threads on two CPUs moved the figures more than the VMMs did.
CPUS = sorted(os.sched_getaffinity(0))
HOST_CPU, GUEST_CPU = (CPUS[0], CPUS[-1]) if len(CPUS) > 1 else (None, None)


def pin_vcpus(pid):
    """Move the VMM's vCPU threads to the guest's CPU (the rest stay where the VMM started)."""
    if GUEST_CPU is None:
        return
    for tid, vcpu, _ in threads(pid):
        if vcpu:
            try:
                os.sched_setaffinity(tid, {GUEST_CPU})
            except ProcessLookupError:
                pass


PKTGEN = "/proc/net/pktgen"


class Flood:
    """rx-64's traffic, 64-byte UDP datagrams in 106-byte frames written to the tap as fast as
    it takes them: by the kernel's own packet generator (pktgen) where the host has it, else by
    `net-peer flood-raw` (a packet socket). Either way past the host's IP stack, whose cost
    would otherwise share the CPUs with the VMM's receive path."""

    def __init__(self, burst=False):
        """Until stop(); without pktgen, for rx-64's time, or two seconds for a burst (and
        the tap's queue drops what it cannot hold)."""
        self.offered0 = tap_stat("tx_packets") + tap_stat("tx_dropped")
        self.peer, self.thread = None, None
        if not os.path.isdir(PKTGEN):
            seconds = 2 if burst else NET_MS / 1000 + 3
            self.peer = subprocess.Popen([PEER, "flood-raw", TAP, GUEST_MAC, GUEST_IP,
                                          str(DISCARD), "64", str(seconds)],
                                         stdout=subprocess.DEVNULL)
            if GUEST_CPU is not None:
                os.sched_setaffinity(self.peer.pid, {GUEST_CPU})
            return
        self.kthread = f"{PKTGEN}/kpktgend_{GUEST_CPU or 0}"  # each is bound to its CPU
        pktgen_clear(self.kthread)
        pgset(self.kthread, f"add_device {TAP}")
        pgset(f"{PKTGEN}/{TAP}", "count 0", "pkt_size 106", "clone_skb 0", "delay 0",
              f"dst {GUEST_IP}", f"dst_mac {GUEST_MAC}", f"udp_src_min {DISCARD}",
              f"udp_src_max {DISCARD}", f"udp_dst_min {DISCARD}", f"udp_dst_max {DISCARD}")
        # "start" returns when the generator stops: at "stop", or when the tap loses its
        # carrier as the VMM exits. (Not with a count: pktgen would then wait, spinning on
        # its CPU, until the guest has taken its last frame.)
        self.thread = threading.Thread(target=pgset, args=(f"{PKTGEN}/pgctrl", "start"))
        self.thread.start()

    def sent(self):
        """Frames pktgen has handed the tap so far (pktgen counts a frame the tap dropped as an
        error, not here)."""
        with open(f"{PKTGEN}/{TAP}") as f:
            m = re.search(r"pkts-sofar: (\d+)", f.read())
        return int(m.group(1)) if m else 0

    def stop(self):
        """Stops it; returns how many frames the host offered the VMM (its tap's transmit
        counters: taken and dropped for a full queue)."""
        trace("flood: stop")
        if self.peer:
            self.peer.kill()
            self.peer.wait()
        if self.thread:
            pgset(f"{PKTGEN}/pgctrl", "stop")
            trace("flood: stop sent")
            self.thread.join()
            self.total = self.sent()  # its file goes with the device
            trace("flood: stopped after", self.total)
            pktgen_clear(self.kthread)
            trace("flood: cleared")
        return tap_stat("tx_packets") + tap_stat("tx_dropped") - self.offered0


def tap_write_rate():
    """What the host alone makes of tx-64's frames: net-peer writes them into the tap (no VMM
    has it then) as a VMM's device thread does, on the same CPU; packets/s."""
    out = subprocess.run([PEER, "tap-write", TAP, GUEST_MAC, GUEST_IP, str(DISCARD), "64",
                          str(NET_MS / 1000)], check=True, capture_output=True, text=True).stdout
    return int(out.split()[1]) * 1000 / NET_MS


def queue_burst():
    """rxb-64's frames, BURST of them or a few more, queued on the tap while the guest takes
    none; what the queue got, for the report. The generator is stopped before the guest drains
    the queue (pktgen would otherwise spin on the guest's CPU until its last frame is freed)."""
    # Room for rx-64's leftovers too. Debian 12's kernel refuses a queue over 20 000 or so
    # (ERANGE; 40 000 was refused, 20 000 taken).
    sh("ip", "link", "set", TAP, "txqueuelen", str(BURST + 4000))
    dropped0, taken0 = tap_stat("tx_dropped"), tap_stat("tx_packets")
    got = {}
    if os.path.isdir(PKTGEN):
        flood, end = Flood(), time.monotonic() + 30
        trace("burst: started")
        while flood.sent() < BURST and time.monotonic() < end:
            time.sleep(0.005)
        flood.stop()
        got["rxb-64 host_queued"] = flood.total
    else:
        Flood(burst=True).peer.wait()
    got["rxb-64 host_dropped"] = tap_stat("tx_dropped") - dropped0
    got["rxb-64 taken_early"] = tap_stat("tx_packets") - taken0
    return got


def pktgen_clear(kthread):
    """Takes every device from pktgen's thread, and waits until it has: the thread does it when
    it next wakes, and would take a device added before then with the rest."""
    pgset(kthread, "rem_device_all")
    for _ in range(100):
        with open(kthread) as f:
            if TAP not in f.read().partition("Result:")[0]:
                return
        time.sleep(0.01)
    sys.exit(f"pktgen: {kthread} keeps {TAP}")


def pgset(path, *commands):
    """Commands to one of pktgen's files, each in a write of its own, newline-ended (pgctrl
    takes the last byte for one)."""
    for c in commands:
        with open(path, "w") as f:
            f.write(c + "\n")


def run_guest(name, tmp):
    """One boot of the guest in bench=net: its figures, and the host's for its frames."""
    snmp0 = snmp()
    # Nothing crosses the tap before the guest's first phase (no IPv6, no ARP).
    marks = {"start": (time.monotonic(), tap_stat("rx_packets"))}
    sampler = Sampler()
    sampler.start()
    flooder, flood_sent, got_burst, out, cpu = None, None, {}, [], {}
    with open(os.path.join(tmp, "stderr"), "w+") as err:
        p = subprocess.Popen(VMMS[name]("net"), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=err, text=True)
        timer = threading.Timer(300, p.kill)
        timer.start()
        for line in p.stdout:
            if "bench-net " not in line:
                continue
            line = line[line.index("bench-net "):].strip()
            trace(name, line)
            out.append(line)
            # Where the tap's counters stood when each figure came (the guest pauses after
            # each transmit phase, so the next one's frames are not in them).
            what = line.split()[1]
            marks[what] = (time.monotonic(), tap_stat("rx_packets"))
            cpu[what.partition("=")[0]] = device_cpu(p.pid)
            if what.startswith("tsc_khz"):
                pin_vcpus(p.pid)
            if what == "tx-1500":
                sampler.stop.set()
            if line == "bench-net rx-ready":
                flooder = Flood()
            if what == "rx-64":
                flood_sent = flooder.stop()
            if line == "bench-net rxb-ready":
                got_burst = queue_burst()
                cpu["rxb-go"] = device_cpu(p.pid)
                try:
                    p.stdin.write("g")  # COM1: the guest takes the queued frames from here
                    p.stdin.flush()
                except BrokenPipeError:
                    pass  # the VMM is gone: its last words are reported below
        trace(name, "output ends")
        p.wait()
        timer.cancel()
        err.seek(0)
        stderr = err.read()
    sampler.stop.set()
    sampler.join()
    if flooder and flood_sent is None:
        flood_sent = flooder.stop()
    sh("ip", "link", "set", TAP, "txqueuelen", str(TXQUEUELEN))
    if "bench-net done" not in out or any("error" in line for line in out):
        sys.exit(f"{name}: the guest did not finish:\n" + "\n".join(out) + "\n" + stderr[-2000:])
    got = {}
    for line in out:
        words = line.split()
        what = "" if "=" in words[1] else words.pop(1) + " "
        for kv in words[1:]:
            k, _, v = kv.partition("=")
            if v.isdigit():
                got[what + k] = int(v)
    for metric, before in (("tx-64", "start"), ("tx-1500", "tx-64")):
        (t0, c0), (t1, c1) = marks[before], marks[metric]
        got[f"{metric} host_pps"] = sampler.rate(t0, t1)
        got[f"{metric} host_mbps"] = sampler.rate(t0, t1) * got[f"{metric} frame_bytes"] / 1e6
        got[f"{metric} arrived_%"] = 100 * (c1 - c0) / got[f"{metric} packets"]
    # The device path's CPU for each packet: from the line before a phase to its figures.
    for metric, before in (("tx-64", "tsc_khz"), ("rx-64", "rx-ready"), ("rxb-64", "rxb-go")):
        if None not in (cpu.get(before), cpu.get(metric)) and got.get(f"{metric} packets"):
            (ns0, runs0), (ns1, runs1) = cpu[before], cpu[metric]
            got[f"{metric} device_ns_per_pkt"] = (ns1 - ns0) / got[f"{metric} packets"]
            got[f"{metric} device_runs_per_kpkt"] = \
                1000 * (runs1 - runs0) / got[f"{metric} packets"]
    snmp1 = snmp()
    bad = {k: snmp1[k] - snmp0[k] for k in ("Ip InHdrErrors", "Ip InAddrErrors",
                                           "Udp NoPorts", "Udp InCsumErrors")}
    if any(bad.values()):
        sys.exit(f"{name}: the host took the guest's frames for bad ones: {bad}")
    if flood_sent:
        got["rx-64 host_sent"] = int(flood_sent)
    got.update(got_burst)
    got["stderr"] = stderr
    return got


# (key in the guest's results, label, higher is better)
ROWS = [
    ("tx-64 pps", "tx-64 packets/s (guest)", True),
    ("tx-64 host_pps", "tx-64 packets/s (host)", True),
    ("tx-64 arrived_%", "tx-64 arrived %", True),
    ("tx-64 kicks_per_kpkt", "tx-64 kicks/1000 pkts", False),
    ("tx-64 device_ns_per_pkt", "tx-64 device CPU ns/pkt", False),
    ("tx-64 device_runs_per_kpkt", "tx-64 device runs/1000 pkts", False),
    ("tx-1500 mbps", "tx-1500 MB/s (guest)", True),
    ("tx-1500 host_mbps", "tx-1500 MB/s (host)", True),
    ("tx-1500 arrived_%", "tx-1500 arrived %", True),
    ("rr-64 p50_us", "rr-64 p50 us", False),
    ("rr-64 p99_us", "rr-64 p99 us", False),
    ("rr-64 tps", "rr-64 round trips/s", True),
    ("rr-64 kicks_per_rt", "rr-64 kicks/round trip", False),
    ("rx-64 pps", "rx-64 packets/s (guest)", True),
    ("rx-64 kicks_per_kpkt", "rx-64 kicks/1000 pkts", False),
    ("rx-64 device_ns_per_pkt", "rx-64 device CPU ns/pkt", False),
    ("rx-64 device_runs_per_kpkt", "rx-64 device runs/1000 pkts", False),
    ("rxb-64 pps", "rxb-64 packets/s (guest)", True),
    ("rxb-64 kicks_per_kpkt", "rxb-64 kicks/1000 pkts", False),
    ("rxb-64 device_ns_per_pkt", "rxb-64 device CPU ns/pkt", False),
    ("rxb-64 device_runs_per_kpkt", "rxb-64 device runs/1000 pkts", False),
]


def derive(got):
    for m in ("tx-64", "rx-64", "rxb-64"):
        if got.get(f"{m} packets"):
            got[f"{m} kicks_per_kpkt"] = 1000 * got[f"{m} kicks"] / got[f"{m} packets"]
    if got.get("rr-64 n"):
        got["rr-64 kicks_per_rt"] = got["rr-64 kicks"] / got["rr-64 n"]


def setup_namespace():
    if not os.path.isdir(PKTGEN):
        subprocess.run(["modprobe", "-q", "pktgen"])  # rx-64's generator, where there is one
    sh("ip", "link", "set", "lo", "up")
    sh("ip", "tuntap", "add", "dev", TAP, "mode", "tap")
    sh("ip", "link", "set", TAP, "address", TAP_MAC)
    for conf in ("all", "default", TAP):
        sh("sysctl", "-qw", f"net.ipv6.conf.{conf}.disable_ipv6=1")
    sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", TAP)
    sh("ip", "link", "set", TAP, "txqueuelen", str(TXQUEUELEN), "up")
    # The guest answers no ARP: the host knows its address beforehand.
    sh("ip", "neigh", "replace", GUEST_IP, "lladdr", GUEST_MAC, "dev", TAP, "nud", "permanent")


def inside():
    if HOST_CPU is not None:
        os.sched_setaffinity(0, {HOST_CPU})  # and so every process started from here
    setup_namespace()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # never read: a valid frame's end
    sink.bind(("0.0.0.0", DISCARD))
    echo = subprocess.Popen([PEER, "echo", str(ECHO)])
    results = {n: {} for n in VMMS}
    notes, baseline = {}, []
    try:
        with tempfile.TemporaryDirectory(dir=os.environ.get("YUN_BENCH_DIR")) as tmp:
            for r in range(RUNS):
                baseline.append(tap_write_rate())
                for name in VMMS:
                    t = time.monotonic()
                    got = run_guest(name, tmp)
                    print(f"# round {r + 1}: {name} {time.monotonic() - t:.1f} s",
                          file=sys.stderr, flush=True)
                    net0 = re.search(r"net0: .*", got.pop("stderr"))
                    if net0:
                        notes[name] = net0.group(0)
                    if got.get("rx-64 host_sent"):
                        notes[f"{name} rx-64"] = (
                            f"the host offered {got['rx-64 host_sent']} frames "
                            f"({'pktgen' if os.path.isdir(PKTGEN) else 'net-peer flood-raw'})")
                    if "rxb-64 host_dropped" in got:
                        notes[f"{name} rxb-64"] = (
                            f"{got.get('rxb-64 host_queued', '?')} frames queued, "
                            f"{got['rxb-64 host_dropped']} dropped for a full queue, "
                            f"{got['rxb-64 taken_early']} taken while queuing; "
                            f"the guest counted {got.get('rxb-64 packets', 0)}")
                    derive(got)
                    for k, v in got.items():
                        results[name].setdefault(k, []).append(v)
    finally:
        echo.kill()
    sys.stderr.flush()
    others = [n for n in VMMS if n not in ("yun", "qemu")]
    print(f"{'median of ' + str(RUNS):28}{'yun':>12}{'qemu':>12}{'yun/qemu':>10}"
          + "".join(f"{n:>12}{n + '/qemu':>10}" for n in others))
    for key, label, higher in ROWS:
        med = {n: statistics.median(results[n][key]) if results[n].get(key) else 0
               for n in VMMS}
        ratio = {n: med[n] / med["qemu"] if med["qemu"] else 0 for n in VMMS}
        fmt = ".1f" if med["yun"] < 100 and med["qemu"] < 100 else ".0f"
        print(f"{label:28}{med['yun']:>12{fmt}}{med['qemu']:>12{fmt}}{ratio['yun']:>10.2f}"
              + "".join(f"{med[n]:>12{fmt}}{ratio[n]:>10.2f}" for n in others)
              + ("" if higher else "  (lower is better)"))
    host = statistics.median(baseline)
    print(f"# tx-64 baseline: net-peer writing the same frames into the tap, one write() each, "
          f"on the device threads' CPU: {host:.0f} packets/s; yun "
          f"{100 * statistics.median(results['yun']['tx-64 pps']) / host:.0f}%, qemu "
          f"{100 * statistics.median(results['qemu']['tx-64 pps']) / host:.0f}% of it")
    for what, line in notes.items():
        print(f"# {what} (last round): {line}")
    print("# the host's IP and UDP counters saw no bad header, checksum, address or port")
    print(f"# tsc_khz yun {results['yun'].get('tsc_khz', ['?'])[0]}, "
          f"qemu {results['qemu'].get('tsc_khz', ['?'])[0]}; net_ms={NET_MS}, rr n={RR_N}")


def main():
    if os.environ.get(NS_ENV):
        inside()
        return
    # Everything runs in a namespace of its own: the tap, the host's ends, and /sys and
    # /proc/net as that namespace sees them (ip netns exec remounts /sys).
    ns = f"yun-bench-{os.getpid()}"
    sh("ip", "netns", "add", ns)
    try:
        r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, __file__] + sys.argv[1:],
                           env={**os.environ, NS_ENV: ns})
    finally:
        subprocess.run(["ip", "netns", "del", ns])
    sys.exit(r.returncode)


if __name__ == "__main__":
    main()
