#!/usr/bin/env python3
"""Redis at the issue's scale, through the programs a user runs (issue 15, "Must show").

A real redis-server (Debian's 7.0) on loopback gets 1,000,000 keys of every type: strings
(DEBUG POPULATE, plain, integer-encoded, long), lists, sets (intset, listpack, hashtable),
sorted sets, hashes and streams (some with a consumer group and a pending entry), one key in
ten with a TTL of a day; sent with `redis-cli --pipe`. A writer (INCR w:seq, then SET w:<seq>)
goes on during every backup. Then:

  * `cairn backup --from redis://...` -> `cairn restore STORE NAME --into DIR` -> a fresh
    redis-server on DIR/dump.rdb. The bulk keys are not touched during the backup, so each
    must DUMP byte for byte as on the source (SCAN of the source, pipelined DUMP on both
    servers, in batches: memory stays small), with the same number of keys with a TTL; the
    writer's keys must be a point-in-time prefix (w:1 .. w:S-1, maybe w:S, for the restored
    w:seq = S, nothing after) taken between the backup's start and end; DBSIZE must be the
    bulk keys plus exactly those.
  * the same through a cairnd schedule (`source = redis://...`).

CAIRN_REDIS_KEYS changes the number of keys. SKIP (77) without redis-server, a failure under
CI=true.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import redis_server as rs  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from repo import init_location  # noqa: E402

CAIRN_BIN = os.environ.get("CAIRN_BIN", os.path.join(HERE, "../../build"))
CAIRN = os.path.join(CAIRN_BIN, "cairn")
CAIRND = os.path.join(CAIRN_BIN, "cairnd")
REDIS_CLI = "/usr/bin/redis-cli"
N = int(os.environ.get("CAIRN_REDIS_KEYS", "1000000"))
POPULATE = N * 3 // 10  # plain strings made by the server itself
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)
    return cond


def cairn(*args):
    p = subprocess.run([CAIRN] + list(args), capture_output=True, text=True, timeout=900)
    return p.returncode, p.stdout, p.stderr


def typed_commands(n):
    """Commands making n keys of every type (key i of type i % 7); every 10th expires in a
    day; every 499th is large enough for the non-compact encodings."""
    for i in range(n):
        t = i % 7
        big = i % 499 == 0
        m = 200 if big else 1 + i % 6
        if t == 0:
            k = "str:%d" % i
            yield ["SET", k, str(i * 7919) if i % 2 else "v%d-" % i * (60 if big else 2)]
        elif t == 1:
            k = "list:%d" % i
            yield ["RPUSH", k] + ["e%d" % (i + j) for j in range(m)]
        elif t == 2:
            k = "set:%d" % i
            yield ["SADD", k] + [str(i + j) if i % 2 else "m%d" % (i + j) for j in range(m)]
        elif t == 3:
            k = "zset:%d" % i
            sm = []
            for j in range(m):
                sm += ["%d.25" % (i - j), "z%d" % j]
            yield ["ZADD", k] + sm
        elif t == 4:
            k = "hash:%d" % i
            kv = []
            for j in range(m):
                kv += ["f%d" % j, str(i * j)]
            yield ["HSET", k] + kv
        elif t == 5:
            k = "stream:%d" % i
            for j in range(1 + m // 2):
                yield ["XADD", k, "%d-%d" % (i + 1, j + 1), "f", str(j), "g", "v%d" % i]
            if i % 100 == 5:
                yield ["XGROUP", "CREATE", k, "grp", "0"]
                yield ["XREADGROUP", "GROUP", "grp", "c1", "COUNT", "1", "STREAMS", k, ">"]
        else:
            k = "long:%d" % i
            yield ["SET", k, ("%08d" % i) * (40 if big else 4)]
        if i % 10 == 3:
            yield ["EXPIRE", k, 86400]


def fill(tmp, srv):
    """DEBUG POPULATE for 30 % of the keys, the typed rest through redis-cli --pipe."""
    c = srv.client()
    c.call("DEBUG", "POPULATE", POPULATE, "pop", 64)
    path = os.path.join(tmp, "fill.resp")
    with open(path, "wb", buffering=1 << 20) as f:
        for cmd in typed_commands(N - POPULATE):
            f.write(rs._encode(cmd))
    with open(path, "rb") as f:
        p = subprocess.run([REDIS_CLI, "-p", str(srv.port), "--pipe"], stdin=f,
                           capture_output=True, text=True, timeout=600)
    os.unlink(path)
    if p.returncode != 0 or "errors: 0" not in p.stdout:
        raise RuntimeError("redis-cli --pipe: %s %s" % (p.stdout[-300:], p.stderr[-300:]))
    n = c.call("DBSIZE")
    c.close()
    if n != N:
        raise RuntimeError("filled %d keys, want %d" % (n, N))


def bulk_keys(c, count=10000):
    """The source's keys but the writer's, in SCAN batches."""
    cursor = b"0"
    while True:
        cursor, part = c.call("SCAN", cursor, "COUNT", count)
        part = [k for k in part if not k.startswith(b"w:")]
        if part:
            yield part
        if cursor == b"0":
            return


def compare(src, dst):
    """Every bulk key holds the same on both: the same DUMP, or, for a set of the hashtable
    encoding (whose DUMP lists members in hash-table order, and each server seeds its hash
    function at random), the same type, encoding, size and DEBUG DIGEST-VALUE (a digest of
    the members in any order). Returns (keys compared, in another order, differing, some)."""
    n, reordered, bad, some = 0, 0, 0, []
    for keys in bulk_keys(src):
        da = src.pipeline([["DUMP", k] for k in keys], batch=5000)
        db = dst.pipeline([["DUMP", k] for k in keys], batch=5000)
        odd = [k for k, x, y in zip(keys, da, db) if x is None or x != y]
        if odd:
            q = [c for k in odd for c in (["TYPE", k], ["OBJECT", "ENCODING", k], ["SCARD", k],
                                          ["DEBUG", "DIGEST-VALUE", k])]
            qa, qb = src.pipeline(q), dst.pipeline(q)
            for i, k in enumerate(odd):
                a, b = qa[4 * i:4 * i + 4], qb[4 * i:4 * i + 4]
                if a == b and a[0] == b"set" and a[1] == b"hashtable":
                    reordered += 1
                    continue
                bad += 1
                if len(some) < 3:
                    some.append((k, a[:2], b[:2]))
        n += len(keys)
    return n, reordered, bad, some


def expires(c):
    return int(dict(p.split("=") for p in rs.keyspace(c).split(","))["expires"])


def restore_and_compare(tmp, what, store, name, src, seq_before, seq_after, src_expires):
    into = os.path.join(tmp, what + "-restored")
    rc, _, err = cairn("restore", store, name, "--into", into)
    if not check(rc == 0, "%s: cairn restore --into: exit %d (%s)" % (what, rc, err.strip())):
        return
    check(os.path.isfile(os.path.join(into, "dump.rdb")), "%s: DIR/dump.rdb restored" % what)
    b = rs.RedisServer(into)
    try:
        cb = b.client()
        for p in rs.writes_consistent(cb):
            check(False, "%s: %s" % (what, p))
        s = int(cb.call("GET", "w:seq") or 0)
        check(seq_before <= s <= seq_after, "%s: the copy's w:seq %d lies within the backup "
              "(writer at %d before, %d after)" % (what, s, seq_before, seq_after))
        w_keys = 1 + (s - 1) + cb.call("EXISTS", "w:%d" % s)
        size = cb.call("DBSIZE")
        check(size == N + w_keys, "%s: DBSIZE %d = %d bulk keys + %d of the writer" %
              (what, size, N, w_keys))
        check(expires(cb) == src_expires, "%s: %d keys with a TTL (source %d)" %
              (what, expires(cb), src_expires))
        t0 = time.monotonic()
        n, reordered, bad, some = compare(src, cb)
        check(n == N and bad == 0, "%s: every one of %d bulk keys the same (compared %d in "
              "%.0f s: %d by DUMP, %d hashtable sets by members; %d differ, e.g. %r)" %
              (what, N, n, time.monotonic() - t0, n - reordered - bad, reordered, bad, some))
        cb.close()
    finally:
        b.stop()


def cli_case(tmp, srv, w, src_expires):
    store = "file://" + os.path.join(tmp, "store")
    init_location(store)
    before = w.count
    t0 = time.monotonic()
    rc, out, err = cairn("backup", "--from", "redis://127.0.0.1:%d" % srv.port, "--to", store,
                         "--name", "r1", "--json")
    secs = time.monotonic() - t0
    after = w.count
    if not check(rc == 0, "cairn backup --from redis://: exit %d (%s)" % (rc, err.strip())):
        return
    print("backup: %s bytes in %.1f s" % (json.loads(out).get("bytes", "?"), secs), flush=True)
    got = complete(store)
    check([b["name"] for b in got] == ["r1"] and got[0]["kind"] == "redis",
          "r1 listed complete, kind redis: %s" % got)
    restore_and_compare(tmp, "cli", store, "r1", srv.client(), before, after, src_expires)


def complete(store):
    rc, out, _ = cairn("list", store, "--json")
    if rc != 0:
        return []
    return sorted((b for b in json.loads(out)["backups"] if b["status"] == "complete"),
                  key=lambda b: b["name"])


def cairnd_case(tmp, srv, w, src_expires):
    store = "file://" + os.path.join(tmp, "dstore")
    init_location(store)
    conf = os.path.join(tmp, "cairnd.conf")
    with open(conf, "w") as f:
        f.write("[cairnd]\nstate-dir = %s\nmetrics-listen = off\n\n"
                "[schedule cache]\nsource = redis://127.0.0.1:%d\nto = %s\n"
                "every = 2s\nkeep-last = 2\n" % (os.path.join(tmp, "dstate"), srv.port, store))
    before = w.count
    log = open(os.path.join(tmp, "cairnd.log"), "w+")
    proc = subprocess.Popen([CAIRND, "run", "--config", conf], stdout=log,
                            stderr=subprocess.STDOUT)
    done = []
    try:
        end = time.monotonic() + 600  # the condition: a complete backup listed
        while not done and time.monotonic() < end and proc.poll() is None:
            done = complete(store)
            if not done:
                time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    after = w.count
    done = complete(store)  # once cairnd stopped: retention may have removed the first one
    log.seek(0)
    if not check(done and done[-1]["kind"] == "redis",
                 "cairnd took a complete redis backup: %s (log: %s)" % (done,
                                                                       log.read()[-800:])):
        return
    restore_and_compare(tmp, "cairnd", store, done[-1]["name"], srv.client(), before, after,
                        src_expires)


def main():
    rs.require_redis()
    tmp = tempfile.mkdtemp(prefix="cairn-redis-scale-")
    srv = rs.RedisServer(os.path.join(tmp, "source"))
    w = None
    try:
        t0 = time.monotonic()
        fill(tmp, srv)
        c = srv.client()
        src_expires = expires(c)
        print("filled %d keys (%s) in %.1f s" % (N, rs.keyspace(c), time.monotonic() - t0),
              flush=True)
        c.close()
        w = rs.Writer(srv.port)
        w.start()
        wait = time.monotonic() + rs.WAIT
        while w.count < 100 and time.monotonic() < wait:  # the writer is under way
            time.sleep(0.01)
        cli_case(tmp, srv, w, src_expires)
        cairnd_case(tmp, srv, w, src_expires)
    finally:
        if w is not None:
            w.stop()
        srv.stop()
    if failures:
        print("%d failed: %s (kept %s)" % (len(failures), "; ".join(failures), tmp))
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
