#!/usr/bin/env python3
"""etcd at the issue's scale, through the programs a user runs (issue 15, "Must show").

A real etcd 3.4 (Debian etcd-server) on loopback gets 100,000 keys with three revisions each
(then a range of them deleted and some put again), filled by transactions of 1,000 puts on
four connections. A writer thread keeps changing keys (bulk keys and keys of its own) the
whole time. Then:

  * `cairn backup --from etcd://...` -> `cairn restore STORE NAME --into DIR` -> a fresh etcd
    on DIR: its revision R lies between the source's revision before and after the backup
    (the writer's changes made before the backup are in it, those after it are not), and
    every key, value, create/mod revision and version equals the source's read at revision R
    (a range at R: the concurrent writes do not matter), and so does the history at an older
    revision;
  * the same through a cairnd schedule (`source = etcd://...`): the scheduled backup, restored
    and compared the same way.

CAIRN_ETCD_KEYS changes the number of keys. SKIP (77) without etcd, a failure under CI=true.
"""
import base64
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
import etcdtest as et  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from repo import init_location  # noqa: E402

CAIRN_BIN = os.environ.get("CAIRN_BIN", os.path.join(HERE, "../../build"))
CAIRN = os.path.join(CAIRN_BIN, "cairn")
CAIRND = os.path.join(CAIRN_BIN, "cairnd")
N = int(os.environ.get("CAIRN_ETCD_KEYS", "100000"))
REVS = 3
BATCH = 1000  # puts per transaction; the source runs with --max-txn-ops 1000
failures = []
FILLED = 0  # the source's revision when the fill ended


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)
    return cond


def cairn(*args):
    p = subprocess.run([CAIRN] + list(args), capture_output=True, text=True, timeout=900)
    return p.returncode, p.stdout, p.stderr


def key(i):
    return "/app/%06d/key" % i


def txn(e, ops):
    e.call("/v3/kv/txn", {"success": ops})


def put_ops(pairs):
    return [{"request_put": {"key": et.b64(k), "value": et.b64(v)}} for k, v in pairs]


def fill(e):
    """N keys, REVS revisions each (one generation after the other, four connections per
    generation), then the first 1,000 deleted by one range delete and 500 of them put again."""
    with ThreadPoolExecutor(4) as pool:
        for gen in range(REVS):
            batches = [put_ops([(key(i), "gen %d of %s %s" % (gen, key(i), "x" * (i % 61)))
                                for i in range(s, min(s + BATCH, N))])
                       for s in range(0, N, BATCH)]
            list(pool.map(lambda ops: txn(e, ops), batches))
    e.call("/v3/kv/deleterange", {"key": et.b64(key(0)), "range_end": et.b64(key(1000))})
    txn(e, put_ops([(key(i), "reborn %d" % i) for i in range(500)]))


class Writer(threading.Thread):
    """Keeps writing until stopped: transactions of 20 puts, half to random bulk keys (new
    revisions of existing keys), half to keys of its own (/w/SEQ/J). At most 50 transactions
    a second (a pace, so that the database does not grow without bound on a fast machine)."""

    def __init__(self, e, seed=15):
        super().__init__(daemon=True)
        self.e = e
        self.rng = random.Random(seed)
        self.stop_ev = threading.Event()
        self.txns = 0
        self.error = None

    def run(self):
        try:
            while not self.stop_ev.is_set():
                s = self.txns
                pairs = [(key(self.rng.randrange(N)), "writer %d" % s) for _ in range(10)]
                pairs += [("/w/%08d/%d" % (s, j), "w%d" % j) for j in range(10)]
                # Two puts of one key in one txn are refused ("duplicate key"): dedupe.
                txn(self.e, put_ops(dict(pairs).items()))
                self.txns += 1
                self.stop_ev.wait(0.02)
        except Exception as ex:  # reported by stop()
            self.error = ex

    def wait_more(self, n):
        """Waits (a condition, not a time) until n more transactions were made."""
        target = self.txns + n
        end = time.monotonic() + et.WAIT
        while self.txns < target and self.error is None and time.monotonic() < end:
            time.sleep(0.01)
        return self.txns >= target

    def stop(self):
        self.stop_ev.set()
        self.join(et.WAIT)
        check(self.error is None, "writer ran without error (%s)" % self.error)


def revision(e):
    return int(e.call("/v3/kv/range", {"key": et.b64("/none")})["header"]["revision"])


def dump_at(e, rev, page=20000):
    """Every (key, value, create, mod, version) at revision rev, sorted, read in pages."""
    out, start = [], b"\0"
    while True:
        r = e.call("/v3/kv/range", {"key": et.b64(start), "range_end": et.b64(b"\0"),
                                    "revision": rev, "limit": page})
        kvs = r.get("kvs", [])
        out += [(base64.b64decode(kv["key"]), base64.b64decode(kv.get("value", "")),
                 int(kv.get("create_revision", 0)), int(kv.get("mod_revision", 0)),
                 int(kv.get("version", 0))) for kv in kvs]
        if not r.get("more") or not kvs:
            return out
        start = out[-1][0] + b"\0"


def restore_and_compare(tmp, what, store, name, src, rev_before, rev_after):
    """Restores backup `name` into a new data dir, starts etcd on it and compares it with the
    source at the restored revision."""
    into = os.path.join(tmp, what + ".etcd")
    rc, _, err = cairn("restore", store, name, "--into", into)
    if not check(rc == 0, "%s: cairn restore --into: exit %d (%s)" % (what, rc, err.strip())):
        return
    b = et.Etcd(os.path.join(tmp, what), name="default", data_dir=into).start()
    try:
        rev = revision(b)
        # The writer had written before the backup began (rev_before > FILLED) and wrote
        # again after it ended (rev_after > its end), so the copy holds some of its writes and
        # none of the last ones.
        check(FILLED < rev_before <= rev < rev_after, "%s: restored revision %d lies within "
              "the backup (source at %d before, %d after, %d filled)" %
              (what, rev, rev_before, rev_after, FILLED))
        got, want = dump_at(b, rev), dump_at(src, rev)
        check(len(got) >= N - 500, "%s: %d keys restored" % (what, len(got)))
        check(got == want, "%s: every key, value, create/mod revision and version equals the "
              "source's at revision %d (%d keys, %d restored)" % (what, rev, len(want), len(got)))
        old = FILLED // 2  # inside the fill (second generation): the history came along
        check(dump_at(b, old) == dump_at(src, old), "%s: the same at revision %d" % (what, old))
        w = sum(1 for k in got if k[0].startswith(b"/w/"))
        print("%s: revision %d, %d keys (%d of the writer)" % (what, rev, len(got), w), flush=True)
    finally:
        b.stop()


def cli_case(tmp, src, w):
    store = "file://" + os.path.join(tmp, "store")
    init_location(store)
    w.wait_more(5)
    before = revision(src)
    t0 = time.monotonic()
    rc, out, err = cairn("backup", "--from", "etcd://127.0.0.1:%d" % src.client, "--to", store,
                         "--name", "e1", "--json")
    secs = time.monotonic() - t0
    w.wait_more(5)
    after = revision(src)
    if not check(rc == 0, "cairn backup --from etcd://: exit %d (%s)" % (rc, err.strip())):
        return
    info = json.loads(out)
    print("backup: %s bytes in %.1f s" % (info.get("bytes", "?"), secs), flush=True)
    rc, out, err = cairn("list", store, "--json")
    b = {x["name"]: x for x in json.loads(out)["backups"]}.get("e1", {}) if rc == 0 else {}
    check(b.get("status") == "complete" and b.get("kind") == "etcd", "e1 listed complete: %s" % b)
    restore_and_compare(tmp, "cli", store, "e1", src, before, after)


def complete(store):
    rc, out, _ = cairn("list", "file://" + store, "--json")
    if rc != 0:
        return []
    return sorted((b for b in json.loads(out)["backups"] if b["status"] == "complete"),
                  key=lambda b: b["name"])


def cairnd_case(tmp, src, w):
    store = os.path.join(tmp, "dstore")
    init_location(store)
    conf = os.path.join(tmp, "cairnd.conf")
    with open(conf, "w") as f:
        f.write("[cairnd]\nstate-dir = %s\nmetrics-listen = off\n\n"
                "[schedule etcd]\nsource = etcd://127.0.0.1:%d\nto = file://%s\n"
                "every = 2s\nkeep-last = 2\n" % (os.path.join(tmp, "dstate"), src.client, store))
    w.wait_more(5)
    before = revision(src)
    log = open(os.path.join(tmp, "cairnd.log"), "w+")
    proc = subprocess.Popen([CAIRND, "run", "--config", conf], stdout=log,
                            stderr=subprocess.STDOUT)
    done = []
    try:
        # The condition: a complete backup listed.
        end = time.monotonic() + 600
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
    done = complete(store)  # once cairnd stopped: retention may have removed the first one
    w.wait_more(5)
    after = revision(src)
    log.seek(0)
    if not check(done and done[0]["kind"] == "etcd",
                 "cairnd took a complete etcd backup: %s (log: %s)" % (done, log.read()[-800:])):
        return
    restore_and_compare(tmp, "cairnd", "file://" + store, done[0]["name"], src, before, after)


def main():
    et.need_etcd()
    tmp = tempfile.mkdtemp(prefix="cairn-etcd-scale-")
    src = et.Etcd(os.path.join(tmp, "src"), name="src", extra=["--max-txn-ops", str(BATCH)])
    w = None
    try:
        src.start()
        t0 = time.monotonic()
        fill(src)
        global FILLED
        FILLED = revision(src)
        print("filled %d keys x %d revisions in %.1f s, revision %d" %
              (N, REVS, time.monotonic() - t0, FILLED), flush=True)
        w = Writer(src)
        w.start()
        cli_case(tmp, src, w)
        cairnd_case(tmp, src, w)
    finally:
        if w is not None:
            w.stop()
        src.stop()
    if failures:
        print("%d failed: %s (kept %s)" % (len(failures), "; ".join(failures), tmp))
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
