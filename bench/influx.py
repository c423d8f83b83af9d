#!/usr/bin/env python3
"""InfluxDB 1.6 side of bench/run: a deterministic database in a real influxd, and the
processes the influx phases measure against.

  influx.py prepare --root DIR --points N   load N points (cached by a stamp in DIR)
  influx.py start --root DIR                start influxd on free loopback ports, print the
                                            snapshot address (HOST:PORT), pid in DIR/pid
  influx.py serve --data DIR --pidfile F    start `cairnd serve` on a free port over a copy of
                                            the influxd data (DIR holds meta.db), print address
  influx.py stop --pidfile F                SIGTERM the process, wait for it

The points (database "bench") are 1000 series (host x sensor tags) with three random floats
and a random integer (about 30 bytes per point in TSM), ten minutes apart, so the full set
spans several 7-day shards that backups fetch in parallel. They go through the HTTP write API in batches of 20000 lines on two connections.
"""
import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../tests/influx"))
import influx  # noqa: E402  (the tests' helpers: config, free ports, waits)

SERIES = 1000
BATCH = 20000
START = 1_600_000_000
STEP = 600


def batches(points):
    rng = random.Random(20261121)
    per = points // SERIES
    lines = []
    for i in range(per):
        t = START + i * STEP
        for s in range(SERIES):
            lines.append("sensor,host=h%03d,sensor=s%d a=%.9f,b=%.9f,c=%.9f,n=%di %d"
                         % (s // 10, s % 10, rng.random(), rng.random() * 100,
                            rng.random() * 1e4, rng.randrange(1 << 30), t))
            if len(lines) == BATCH:
                yield "\n".join(lines).encode()
                lines = []
    if lines:
        yield "\n".join(lines).encode()


def prepare(root, points):
    stamp = os.path.join(root, ".stamp")
    want = "v1 points=%d\n" % points
    if os.path.exists(stamp) and open(stamp).read() == want:
        return
    if influx.INFLUXD is None:
        influx.skip("influxd is not installed (scripts/deps.sh bench)")
    subprocess.run(["rm", "-rf", root], check=True)
    ifx = influx.Influxd(root).start()
    try:
        ifx.query("CREATE DATABASE bench")
        url = "http://127.0.0.1:%d/write?db=bench&precision=s" % ifx.http
        lock = threading.Lock()
        gen = batches(points)
        errors = []

        def worker():
            while True:
                with lock:
                    body = next(gen, None)
                if body is None or errors:
                    return
                try:
                    req = urllib.request.Request(url, data=body, method="POST")
                    urllib.request.urlopen(req, timeout=300).read()
                except Exception as e:  # reported below; the other worker stops too
                    errors.append(e)
                    return

        t0 = time.time()
        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise RuntimeError("loading points: %s" % errors[0])
        ifx.wait_tsm(timeout=300)
        print("bench: loaded %d points into influxd in %.0f s" % (points, time.time() - t0))
    finally:
        ifx.stop()
    with open(stamp, "w") as f:
        f.write(want)


def start(root):
    ifx = influx.Influxd(root)
    ifx.start()
    with open(os.path.join(root, "pid"), "w") as f:
        f.write("%d\n" % ifx.proc.pid)
    print(ifx.influx_addr)


def serve(data, pidfile):
    port = influx.free_port()
    addr = "127.0.0.1:%d" % port
    log = open(data.rstrip("/") + ".log", "ab")
    p = subprocess.Popen([influx.CAIRND, "serve", "--data", data, "--listen", addr],
                         stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    influx.wait_port(port, p)
    with open(pidfile, "w") as f:
        f.write("%d\n" % p.pid)
    print(addr)


def stop(pidfile):
    try:
        pid = int(open(pidfile).read())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(200):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.unlink(pidfile)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["prepare", "start", "serve", "stop"])
    ap.add_argument("--root")
    ap.add_argument("--points", type=int, default=10_000_000)
    ap.add_argument("--data")
    ap.add_argument("--pidfile")
    a = ap.parse_args()
    if a.cmd == "prepare":
        prepare(a.root, a.points)
    elif a.cmd == "start":
        start(a.root)
    elif a.cmd == "serve":
        serve(a.data, a.pidfile)
    else:
        stop(a.pidfile)


if __name__ == "__main__":
    main()
