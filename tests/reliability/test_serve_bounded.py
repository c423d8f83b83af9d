"""cairnd serve under hostile clients, bounded in count and time:
- 8 concurrent metastore uploads declaring 256 MiB (the default --max-upload), each sending
  16 MiB and stalling: uploads are received into unnamed files in DIR/.cairn-snap, so the
  server's peak RSS (VmHWM) stays under 64 MiB; it used to malloc the declared size.
- 70 tricklers (shard uploads sending one byte every 1.8 s, reconnecting when cut) from seven
  loopback addresses against the default 64 slots: a probe from 127.0.0.1 is answered every
  time, each within the request deadline (10 s here; the slowest connection is dropped for
  it), and a whole `cairn backup` succeeds meanwhile. They used to hold all 64 slots.
Prints "figures:" lines."""
import os
import socket
import threading
import time

from rel import Cairnd, cairn, check, influx_data, run_parts, tmpdir, WAIT
from influx import request
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from repo import init_location  # noqa: E402

T = tmpdir("cairn-serve-bounded-")
figures = []
MiB = 1 << 20


def mem(pid):
    d = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                k, v = line.split(":")
                d[k] = int(v.split()[0]) * 1024
    return d


def wait_log(path, needle, count=1, timeout=WAIT):
    end = time.time() + timeout
    while time.time() < end:
        with open(path, errors="replace") as f:
            if f.read().count(needle) >= count:
                return True
        time.sleep(0.1)
    return False


def memory():
    data = influx_data(os.path.join(T, "mem"), shards=2, size=5000)
    log = os.path.join(T, "mem.log")
    c = Cairnd(data, extra=["--allow-restore"], log=log).start()
    pid = c.proc.pid
    base = mem(pid)["VmHWM"]
    sent = threading.Barrier(9, timeout=WAIT)
    done = threading.Event()
    errors = []

    def uploader(i):
        try:
            host, port = c.addr.rsplit(":", 1)
            s = socket.create_connection((host, int(port)), timeout=WAIT)
            s.sendall(request(6, BackupDatabase="db1", RestoreDatabase="m%d" % i,
                              UploadSize=256 * MiB))
            chunk = bytes([i]) * MiB
            for _ in range(16):
                s.sendall(chunk)
            sent.wait()
            done.wait(WAIT)
            s.close()
        except Exception as e:  # noqa: BLE001 - reported as a check below
            errors.append("uploader %d: %s" % (i, e))
            sent.abort()

    threads = [threading.Thread(target=uploader, args=(i,)) for i in range(8)]
    try:
        for t in threads:
            t.start()
        try:
            sent.wait()
        except threading.BrokenBarrierError:
            pass
        # Wait until the server has read every byte sent (its unnamed upload files hold
        # 8 x 16 MiB), or its peak already exceeds the bound (as when it buffered uploads).
        end = time.time() + WAIT
        while time.time() < end and staged(pid) < 128 * MiB and mem(pid)["VmHWM"] < 64 * MiB:
            time.sleep(0.1)
        staged_bytes = staged(pid)
        peak = mem(pid)["VmHWM"]
        done.set()
        for t in threads:
            t.join(WAIT)
        check(not errors, "8 uploads of 16 MiB sent: %s" % errors)
        check(staged_bytes == 128 * MiB, "all 128 MiB received into upload files (%.1f MiB)" %
              (staged_bytes / MiB))
        check(wait_log(log, "read upload: EOF after", 8), "8 stalled uploads ended, logged")
        check(peak < 64 * MiB, "8 x 256 MiB declared uploads (16 MiB sent each): VmHWM %.1f MiB"
              " (%.1f MiB at start) < 64 MiB" % (peak / MiB, base / MiB))
        staging = os.path.join(data, ".cairn-snap")
        left = os.listdir(staging) if os.path.isdir(staging) else []
        check(left == [], "no upload files left in the staging area: %s" % left)
        figures.append("8 concurrent 256 MiB-declared metastore uploads, 128 MiB received: "
                       "cairnd serve VmHWM %.1f MiB (%.1f MiB idle)" % (peak / MiB, base / MiB))
    finally:
        done.set()
        c.stop()


def staged(pid):
    """Bytes in the upload files cairnd holds open in DIR/.cairn-snap (unnamed: via /proc)."""
    total = 0
    fds = "/proc/%d/fd" % pid
    for n in os.listdir(fds):
        try:
            if ".cairn-snap" in os.readlink(os.path.join(fds, n)):
                total += os.stat(os.path.join(fds, n)).st_size
        except OSError:
            pass  # closed meanwhile
    return total


def tricklers():
    data = influx_data(os.path.join(T, "trk"), shards=4, size=50000)
    log = os.path.join(T, "trk.log")
    deadline = 10.0
    c = Cairnd(data, extra=["--allow-restore", "--allow-overwrite", "--idle-timeout", "3000",
                            "--request-deadline", str(int(deadline * 1000))], log=log).start()
    host, port = c.addr.rsplit(":", 1)
    stop = threading.Event()
    stats = {"connects": 0, "cut": 0}
    lock = threading.Lock()

    def trickle(src):
        while not stop.is_set():
            try:
                s = socket.socket()
                s.bind((src, 0))
                s.settimeout(WAIT)
                s.connect((host, int(port)))
                with lock:
                    stats["connects"] += 1
                s.sendall(b"\x03\x07" + (1).to_bytes(8, "big"))
                while not stop.wait(1.8):
                    s.sendall(b"\0")
                s.close()
            except OSError:
                with lock:
                    stats["cut"] += 1
                stop.wait(0.2)

    threads = [threading.Thread(target=trickle, args=("127.0.0.%d" % (2 + i % 7),), daemon=True)
               for i in range(70)]
    for t in threads:
        t.start()
    probes = []
    try:
        # All 64 slots taken (later connections are refused, the slowest dropped for them).
        check(wait_log(log, "refused: 64 connections open") or wait_log(log, "dropped:"),
              "the tricklers filled the 64 slots")
        # A connection is droppable once 2 s old (the grace is a time, so this waits one).
        time.sleep(2.5)
        t_end = time.time() + 15
        backup = {}

        init_location(os.path.join(T, "store"))
        def do_backup():
            t0 = time.time()
            backup["rc"], _, backup["err"], _ = cairn(
                "backup", "--from", c.addr, "--to", os.path.join(T, "store"), "--name", "b",
                timeout=WAIT)
            backup["s"] = time.time() - t0

        bt = threading.Thread(target=do_backup)
        bt.start()
        while time.time() < t_end or bt.is_alive():
            t0 = time.time()
            try:
                s = socket.create_connection((host, int(port)), timeout=WAIT)
                s.sendall(request(1))
                out = b""
                while True:
                    b = s.recv(65536)
                    if not b:
                        break
                    out += b
                s.close()
                ok = out[:8] == bytes.fromhex("0000000059590101")
            except OSError:
                ok = False
            probes.append((ok, time.time() - t0))
            time.sleep(0.5)
            if time.time() > t_end + WAIT:
                break
        bt.join(WAIT)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        c.stop()
    answered = sum(1 for p in probes if p[0])
    worst = max(p[1] for p in probes)
    check(answered == len(probes), "probe from 127.0.0.1 answered %d of %d times during the "
          "trickle" % (answered, len(probes)))
    check(worst < deadline, "worst probe latency %.2f s < the %.0f s request deadline" % (
        worst, deadline))
    check(backup.get("rc") == 0, "cairn backup during the trickle: %s" % backup.get("err"))
    check(wait_log(log, "dropped:"), "slow connections dropped for the probes, logged")
    figures.append("70 tricklers (%d connections, %d cut): %d of %d probes answered, worst "
                   "%.2f s; cairn backup of 4 shards in %.1f s" % (
                       stats["connects"], stats["cut"], answered, len(probes), worst,
                       backup.get("s", -1)))


run_parts(T, figures, memory, tricklers)
