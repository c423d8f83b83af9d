"""Load: 500 concurrent clients against cairnd serve for a bounded time (CAIRN_LOAD_SECONDS,
default 20). 400 clients loop over real requests (metastore backup, shard backup, database
info) and check every answer; 100 clients are slow (send one byte and stall) and must be cut
at the idle deadline. Meanwhile cairnd's VmRSS/VmHWM are sampled from /proc: memory must stay
bounded (peak under 256 MiB, growth over the last half under 32 MiB) and a probe request must
keep being answered (worst probe latency printed). Prints "figures:" lines."""
import os
import shutil
import socket
import threading
import time

from rel import Cairnd, check, finish, influx_data, tmpdir
from influx import request

T = tmpdir("cairn-load-")
SECONDS = float(os.environ.get("CAIRN_LOAD_SECONDS", "20"))
CLIENTS, SLOW = 400, 100
stop = threading.Event()
lock = threading.Lock()
stats = {"ok": 0, "bad": 0, "refused": 0, "slow_cut": 0, "bytes": 0}


def exchange(addr, payload, timeout=120):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=timeout)
    try:
        s.sendall(payload)
        out = bytearray()
        while True:
            b = s.recv(1 << 16)
            if not b:
                break
            out += b
        return bytes(out)
    finally:
        s.close()


def worker(addr, i):
    reqs = [request(1), request(0, ShardID=1 + i % 4), request(3, BackupDatabase="db1")]
    n = i
    while not stop.is_set():
        req = reqs[n % len(reqs)]
        n += 1
        try:
            out = exchange(addr, req)
        except OSError:
            with lock:
                stats["refused"] += 1
            time.sleep(0.05)
            continue
        good = (req[1] == 1 and out[:8] == bytes.fromhex("0000000059590101")) or \
               (req[1] == 0 and len(out) > 1024 and out[257:262] == b"ustar") or \
               (req[1] == 3 and out.startswith(b'{"Paths":['))
        with lock:
            stats["ok" if good else "bad"] += 1
            stats["bytes"] += len(out)


def slow(addr):
    host, port = addr.rsplit(":", 1)
    while not stop.is_set():
        try:
            s = socket.create_connection((host, int(port)), timeout=120)
            s.sendall(b"\x03")
            if s.recv(1) == b"":
                with lock:
                    stats["slow_cut"] += 1
            s.close()
        except OSError:
            time.sleep(0.05)


def mem(pid):
    d = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM", "Threads")):
                k, v = line.split(":")
                d[k] = int(v.split()[0])
    return d


def main():
    data = influx_data(os.path.join(T, "svc"), shards=4, size=64 << 10)
    c = Cairnd(data, extra=["--max-conns", "600", "--max-conns-per-addr", "600",
                            "--idle-timeout", "2000"],
               log=os.path.join(T, "cairnd.log")).start()
    pid = c.proc.pid
    samples, probes = [], []
    try:
        threads = [threading.Thread(target=worker, args=(c.addr, i), daemon=True)
                   for i in range(CLIENTS)]
        threads += [threading.Thread(target=slow, args=(c.addr,), daemon=True)
                    for _ in range(SLOW)]
        m0 = mem(pid)
        for t in threads:
            t.start()
        # At least SECONDS, and on until 1000 requests have been answered (a loaded machine
        # answers fewer per second; the limit only bounds a server that stopped answering).
        t_start = time.time()
        t_end = t_start + SECONDS
        while time.time() < t_end or (stats["ok"] <= 1000 and time.time() < t_start + 240):
            samples.append((time.time(), mem(pid)))
            t0 = time.time()
            try:
                ok = exchange(c.addr, request(1), timeout=120)[:8] == \
                    bytes.fromhex("0000000059590101")
            except OSError:
                ok = False
            probes.append((ok, time.time() - t0))
            time.sleep(0.5)
        dur = time.time() - t_start
        stop.set()
        for t in threads:
            t.join(timeout=30)
        alive = c.proc.poll() is None
        check(alive, "cairnd survived the load")
        after = exchange(c.addr, request(1))[:8] == bytes.fromhex("0000000059590101")
        check(after, "cairnd answers after the load")
        c.stop()
    finally:
        stop.set()
        try:
            c.stop()
        except RuntimeError as e:
            check(False, "cairnd stops cleanly: %s" % e)
        shutil.rmtree(T, ignore_errors=True)
    peak = max(s[1]["VmHWM"] for s in samples)
    half = [s[1]["VmRSS"] for s in samples[len(samples) // 2:]]
    growth = max(half) - min(half)
    threads_peak = max(s[1]["Threads"] for s in samples)
    worst = max(p[1] for p in probes)
    answered = sum(1 for p in probes if p[0])
    print(stats)
    check(stats["bad"] == 0, "no wrong answers (%d)" % stats["bad"])
    check(stats["ok"] > 1000, "requests answered: %d" % stats["ok"])
    check(stats["slow_cut"] > 0, "slow clients cut at the idle deadline: %d" % stats["slow_cut"])
    check(answered == len(probes), "probe answered %d of %d times, worst %.2fs" % (
        answered, len(probes), worst))
    check(peak < 256 * 1024, "peak RSS %.1f MiB < 256 MiB" % (peak / 1024))
    check(growth < 32 * 1024, "RSS growth over the second half %.1f MiB < 32 MiB" % (
        growth / 1024))
    print("figures: load: %d clients (%d requesting, %d slow) for %.0f s against cairnd serve "
          "--max-conns 600: %d requests answered correctly (%.0f/s, %.0f MiB), 0 wrong, %d "
          "connection errors, %d slow connections cut at the 2 s idle deadline; probe answered "
          "%d/%d, worst latency %.2f s; cairnd RSS %.1f MiB at start, peak (VmHWM) %.1f MiB, "
          "%d threads at peak, RSS growth over the second half %.1f MiB" % (
              CLIENTS + SLOW, CLIENTS, SLOW, dur, stats["ok"], stats["ok"] / dur,
              stats["bytes"] / 1048576.0, stats["refused"], stats["slow_cut"], answered,
              len(probes), worst, m0["VmRSS"] / 1024, peak / 1024, threads_peak,
              growth / 1024))
    finish()


if __name__ == "__main__":
    main()
