#!/usr/bin/env python3
"""The sources of issue 15 against their native tools, on the same server, in one run.

  bench/sources.py --cairn BUILD/cairn [--runs N] [--only etcd|redis] [--mb MB] [--dir DIR]

Starts a real etcd 3.4 and a real redis-server 7 (Debian's) on loopback, each holding about
MB megabytes (default 200) of deterministic data, then times, alternating the order every
round, with the page cache warm:

  etcd:  cairn backup --from etcd://... --to file://...   vs  etcdctl snapshot save FILE
  redis: cairn backup --from redis://... --to file://...  vs  redis-cli --rdb FILE

each under /usr/bin/time (wall seconds, peak RSS). Raw rows go to DIR/results.tsv (the columns
of bench/run), the table (bench/report.py) to stdout. cairn does more than the native tools:
it hashes every byte (SHA-256), checks the service's own checksum (etcd's SHA-256 trailer, the
RDB's CRC-64), compresses what compresses (zstd -1) and stores durably (fsync, MANIFEST).

The etcd phase also times `curl -o FILE` of the JSON gateway's answer (POST
/v3/maintenance/snapshot, cairn's fallback when etcd does not answer in gRPC): the least time
any client of the gateway can take.

Data: etcd: 100,000 keys per 200 MB of JSON-like values of about 2 KiB (one revision each,
compressible about 3:1). Redis: 1,000,000 string keys per 200 MB of about 200 bytes of
text-like values (rdbcompression on, the default).
"""
import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "source"))
import etcdtest as et  # noqa: E402  (the tests' helpers: servers on free ports, waits)
import redis_server as rs  # noqa: E402

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
         "november oscar papa quebec romeo sierra tango uniform victor whiskey xray").split()


def text(rng, n):
    """About n bytes of JSON-like text: words, numbers and hex ids, compressible ~3:1."""
    parts, size = [], 0
    while size < n:
        p = '"%s":"%s-%08x",' % (rng.choice(WORDS), rng.choice(WORDS), rng.getrandbits(32))
        parts.append(p)
        size += len(p)
    return ("{" + "".join(parts))[:n]


def fill_etcd(e, mb):
    rng = random.Random(20261202)
    keys = mb * 500  # 2 KB values
    batches = []
    for s in range(0, keys, 400):
        batches.append([{"request_put": {"key": et.b64("/registry/obj/%08d" % i),
                                         "value": et.b64(text(rng, 2000))}}
                        for i in range(s, min(s + 400, keys))])
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda ops: e.call("/v3/kv/txn", {"success": ops}), batches))
    return keys


def fill_redis(srv, mb, tmp):
    rng = random.Random(20261202)
    keys = mb * 5000  # 200-byte values
    path = os.path.join(tmp, "fill.resp")
    with open(path, "wb", buffering=1 << 20) as f:
        for i in range(keys):
            f.write(rs._encode(["SET", "user:%08d" % i, text(rng, 200)]))
    with open(path, "rb") as f:
        p = subprocess.run(["redis-cli", "-p", str(srv.port), "--pipe"], stdin=f,
                           capture_output=True, text=True)
    os.unlink(path)
    if p.returncode != 0 or "errors: 0" not in p.stdout:
        raise RuntimeError("redis-cli --pipe: %s %s" % (p.stdout, p.stderr))
    return keys


def measure(results, phase, tool, run, nbytes, cmd, env=None):
    tf = tempfile.NamedTemporaryFile(delete=False)
    tf.close()
    p = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", tf.name] + cmd,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    secs, rss = open(tf.name).read().split()[-2:]
    os.unlink(tf.name)
    if p.returncode != 0:
        raise RuntimeError("%s/%s failed: %s" % (phase, tool, p.stderr[-500:]))
    with open(results, "a") as f:
        f.write("%s\t%s\t%d\t%s\t%s\t%d\n" % (phase, tool, run, secs, rss, nbytes))
    print("  %-6s %-22s run %d: %6.2f s, %6.1f MiB" % (phase, tool, run, float(secs),
                                                         int(rss) / 1024), flush=True)


def run_phase(results, phase, runs, nbytes, tools):
    """tools: (name, prepare, argv, env); the order rotates every round."""
    for r in range(1, runs + 1):
        for i in range(len(tools)):
            name, prep, cmd, env = tools[(i + r) % len(tools)]
            prep()
            measure(results, phase, name, r, nbytes, cmd, env)


def rm(path):
    return lambda: shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else (
        os.unlink(path) if os.path.exists(path) else None)


def fresh_repo(cairn, path):
    """Removes path and makes it a new plain repository (cairn init, untimed)."""
    def prepare():
        rm(path)()
        subprocess.run([cairn, "init", "--no-encryption", "file://" + path], check=True,
                       stdout=subprocess.DEVNULL)
    return prepare


def bench_etcd(args, work, results):
    e = et.Etcd(os.path.join(work, "etcd"), name="bench",
                extra=["--max-request-bytes", str(4 << 20), "--max-txn-ops", "1000",
                       "--quota-backend-bytes", str(8 << 30)])
    e.start()
    try:
        t0 = time.monotonic()
        keys = fill_etcd(e, args.mb)
        db = os.path.join(e.data_dir, "member", "snap", "db")
        size = os.path.getsize(db)
        print("etcd: %d keys, database %.0f MB, filled in %.0f s" % (
            keys, size / 1e6, time.monotonic() - t0), flush=True)
        url = "127.0.0.1:%d" % e.client
        store, snap = os.path.join(work, "etcd-store"), os.path.join(work, "etcdctl.db")
        gw = os.path.join(work, "gateway.json")
        env = dict(os.environ, ETCDCTL_API="3")
        run_phase(results, "etcd", args.runs, size, [
            # The floor of any client of the JSON gateway (cairn's fallback): the answer
            # downloaded to a file, neither decoded, checked, nor made durable.
            ("curl (gateway floor)", rm(gw), ["curl", "-sS", "-X", "POST", "-d", "{}", "-o", gw,
                                              "http://%s/v3/maintenance/snapshot" % url], None),
            ("cairn", fresh_repo(args.cairn, store),
             [args.cairn, "backup", "--from", "etcd://" + url, "--to", "file://" + store,
              "--name", "b"], None),
            ("etcdctl snapshot save", rm(snap), ["etcdctl", "--endpoints", "http://" + url,
                                                 "snapshot", "save", snap], env),
        ])
    finally:
        e.stop()


def bench_redis(args, work, results):
    srv = rs.RedisServer(os.path.join(work, "redis"))
    try:
        t0 = time.monotonic()
        keys = fill_redis(srv, args.mb, work)
        probe = os.path.join(work, "probe.rdb")
        subprocess.run(["redis-cli", "-p", str(srv.port), "--rdb", probe], check=True,
                       capture_output=True)
        size = os.path.getsize(probe)
        os.unlink(probe)
        print("redis: %d keys, RDB %.0f MB, filled in %.0f s" % (
            keys, size / 1e6, time.monotonic() - t0), flush=True)
        store, rdb = os.path.join(work, "redis-store"), os.path.join(work, "cli.rdb")
        run_phase(results, "redis", args.runs, size, [
            ("cairn", fresh_repo(args.cairn, store),
             [args.cairn, "backup", "--from", "redis://127.0.0.1:%d" % srv.port, "--to",
              "file://" + store, "--name", "b"], None),
            ("redis-cli --rdb", rm(rdb), ["redis-cli", "-p", str(srv.port), "--rdb", rdb],
             None),
        ])
    finally:
        srv.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cairn", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", choices=("etcd", "redis"))
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--dir", default=os.environ.get("CAIRN_BENCH_DIR", "/var/tmp/cairn-bench"))
    args = ap.parse_args()
    work = os.path.join(args.dir, "sources")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    results = os.path.join(work, "results.tsv")
    with open(results, "w") as f:
        f.write("phase\ttool\trun\tseconds\tmaxrss_kb\tbytes\n")
    if args.only in (None, "etcd"):
        bench_etcd(args, work, results)
    if args.only in (None, "redis"):
        bench_redis(args, work, results)
    print("\nMachine: %d cores, %s. Load average at the end: %s." % (
        os.cpu_count(), open("/etc/debian_version").read().strip() and
        "Debian " + open("/etc/debian_version").read().strip(),
        " ".join(open("/proc/loadavg").read().split()[:3])))
    sys.stdout.flush()
    subprocess.run([sys.executable, os.path.join(HERE, "report.py"), results], check=True)
    for d in os.listdir(work):  # the servers' data and the copies; results.tsv stays
        if d != "results.tsv":
            rm(os.path.join(work, d))()


if __name__ == "__main__":
    main()
