#!/usr/bin/env python3
# The host end of the test guest's virtio-vsock checks (guest/test/vsock.c): listens on the Unix
# socket PATH (yun-vmm's uds path with _PORT), takes one connection, answers the guest's hello
# line, checks the bulk bytes it announces (byte i is i % 251), answers with its verdict and
# waits for the guest to close. LOG gets one line per step, for run-yun.sh to check; the file
# READY appears once it listens.
import os
import socket
import sys
import time

path, log_path, ready = sys.argv[1:4]
HELLO = b"hello from the test guest\n"


def read_line(conn, buf):
    while b"\n" not in buf:
        more = conn.recv(4096)
        if not more:
            raise EOFError("connection closed before a whole line")
        buf += more
    line, _, rest = buf.partition(b"\n")
    return line + b"\n", rest


with open(log_path, "w") as log:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if os.path.exists(path):
        os.unlink(path)
    srv.bind(path)
    srv.listen(1)
    srv.settimeout(120)
    open(ready, "w").close()
    try:
        conn, _ = srv.accept()
        conn.settimeout(60)
        line, rest = read_line(conn, b"")
        log.write("got: %r\n" % line)
        log.flush()
        if line == HELLO:
            conn.sendall(b"host got: " + line)
        line, rest = read_line(conn, rest)
        want = int(line.split()[1]) if line.startswith(b"bulk ") else 0
        log.write("bulk line: %r\n" % line)
        # Late, so that the device's buffer for the guest fills: the guest must wait for
        # credit, and one that sends beyond it gets RST.
        time.sleep(1)
        got = bytearray(rest)
        while len(got) < want:
            more = conn.recv(65536)
            if not more:
                break
            got += more
        expect = bytes(i % 251 for i in range(want))
        verdict = "ok" if want and bytes(got) == expect else "bad (%d bytes)" % len(got)
        log.write("bulk %d %s\n" % (want, verdict))
        log.flush()
        conn.sendall(b"bulk %d %s\n" % (want, verdict.encode()))
        while conn.recv(4096):
            pass
        log.write("eof\n")
    except (OSError, EOFError, ValueError, IndexError) as e:
        log.write("error: %s\n" % e)
    finally:
        os.unlink(path)
