"""Backups of live directories (docs/STORAGE.md, "Live data"):
- 20 backups (`cairn put` and `cairn backup --from`, alternating) of a directory where a
  churner creates, deletes, renames and rewrites 50 files every 20 ms: every one completes
  (exit 0), counts what vanished ("vanished" in the JSON result; at least one over the 20, as
  the churned files sort after 8 MiB of stable files read by one worker), verifies, and the
  last one restores;
- a file swapped for a FIFO between the walk and its read never hangs a backup: 5 rounds,
  each bounded by a 120 s deadline (the test fails if cairn has not exited by then);
- a FIFO and a directory named MANIFEST in two backups: `list` (bounded) shows them corrupt
  with the reason and the others complete; `prune` proceeds and `rm` removes them."""
import json
import os
import random
import threading
import time

from rel import cairn, check, run_parts, statuses, tmpdir
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from repo import init_location  # noqa: E402

T = tmpdir("cairn-live-")
figures = []
DEADLINE = 120
SEED = int(os.environ.get("CAIRN_SEED", random.randrange(1 << 30)))
print("seed", SEED)


def stable_files(src, n=128, size=64 << 10):
    rnd = random.Random(SEED)
    os.makedirs(src, exist_ok=True)
    for i in range(n):
        with open(os.path.join(src, "a%04d" % i), "wb") as f:
            f.write(rnd.randbytes(size))


class Churner(threading.Thread):
    """Every 20 ms: 50 operations on z-named files (create, delete, rename, rewrite)."""

    def __init__(self, d, seed):
        super().__init__(daemon=True)
        self.d, self.rnd, self.stop = d, random.Random(seed), threading.Event()
        self.ops = 0

    def run(self):
        os.makedirs(self.d, exist_ok=True)
        while not self.stop.is_set():
            for _ in range(50):
                p = os.path.join(self.d, "z%03d" % self.rnd.randrange(80))
                q = os.path.join(self.d, "z%03d" % self.rnd.randrange(80))
                op = self.rnd.randrange(4)
                try:
                    if op == 0:
                        with open(p, "wb") as f:
                            f.write(b"x" * self.rnd.randrange(1, 20000))
                    elif op == 1:
                        os.unlink(p)
                    elif op == 2:
                        os.rename(p, q)
                    else:
                        with open(p + ".new", "wb") as f:
                            f.write(b"y" * self.rnd.randrange(1, 20000))
                        os.rename(p + ".new", p)
                except OSError:
                    pass
                self.ops += 1
            time.sleep(0.02)


def churn():
    src = os.path.join(T, "churn")
    stable_files(src)
    store = os.path.join(T, "store")
    init_location(store)
    ch = Churner(os.path.join(src, "zdir"), SEED)
    ch.start()
    results = []
    try:
        for i in range(20):
            name = "b%02d" % i
            if i % 2 == 0:
                rc, out, err, secs = cairn("put", store, name, src, "--workers", "1", "--json",
                                           timeout=DEADLINE)
            else:
                rc, out, err, secs = cairn("backup", "--from", src, "--to", store, "--name", name,
                                           "--parallel", "1", "--json", timeout=DEADLINE)
            ok = check(rc == 0, "backup %d of the churning tree completes (exit %d): %s" % (
                i, rc, err.strip()[-300:]))
            res = json.loads(out.strip().splitlines()[-1]) if ok else {}
            results.append(res)
    finally:
        ch.stop.set()
        ch.join()
    vanished = [r.get("vanished", 0) for r in results]
    changed = [r.get("changed", 0) for r in results]
    print("vanished per backup:", vanished, "changed:", changed, "churn ops:", ch.ops)
    check(all("vanished" in r and "changed" in r for r in results),
          "every result counts vanished and changed")
    check(sum(1 for v in vanished if v > 0) >= 1, "at least one backup counted a vanished file")
    sts = statuses(store)
    check(len(sts) == 20 and set(sts.values()) == {"complete"}, "all 20 are complete: %s" % sts)
    for name in sorted(sts):
        rc, _, err, _ = cairn("verify", store, name)
        check(rc == 0, "%s verifies: %s" % (name, err.strip()[-200:]))
    rc, _, err, _ = cairn("get", store, "b19", os.path.join(T, "got"))
    check(rc == 0, "the last backup restores: " + err.strip()[-200:])
    figures.append("20 backups of a tree churning 50 files every 20 ms: all complete; vanished "
                   "counted in %d of them (%d files in all), changed in %d" % (
                       sum(1 for v in vanished if v), sum(vanished),
                       sum(1 for c in changed if c)))


def fifo_swap():
    src = os.path.join(T, "fifo")
    stable_files(src, n=64)
    store = os.path.join(T, "fstore")
    init_location(store)
    os.mkfifo(os.path.join(src, "a-fifo"))  # seen by the walk: skipped, never opened
    targets = [os.path.join(src, "zz-%02d" % i) for i in range(20)]
    stop = threading.Event()

    def swap():
        # 20 names flip between a regular file and a FIFO with no writer (rename over, so the
        # name always exists): a walk that saw a file and an open that meets a FIFO happen by
        # the dozen; opening one for reading without O_NONBLOCK blocks forever.
        n = 0
        while not stop.is_set():
            for t in targets:
                tmp = t + ".swap"
                if n % 2:
                    os.mkfifo(tmp)
                else:
                    with open(tmp, "wb") as f:
                        f.write(b"r" * 65536)
                os.rename(tmp, t)
            n += 1
            time.sleep(0.001)
    th = threading.Thread(target=swap, daemon=True)
    th.start()
    counted = 0
    try:
        for rnd in range(5):
            rc, out, err, secs = cairn("put", store, "f%d" % rnd, src, "--workers", "1",
                                       "--json", timeout=DEADLINE)
            check(rc != -9, "round %d: cairn exited before the %d s deadline" % (rnd, DEADLINE))
            check(rc == 0, "round %d: backup with FIFOs swapped in completes: %s" % (
                rnd, err.strip()[-300:]))
            if rc == 0:
                counted += json.loads(out.strip().splitlines()[-1])["vanished"]
    finally:
        stop.set()
        th.join()
    check(counted >= 1, "a swapped-in FIFO was counted (not a regular file when opened): %d"
          % counted)
    figures.append("FIFOs swapped in between walk and read: 5 backups, none hung, %d counted"
                   % counted)


def damaged_manifest_dedup():
    damaged_manifest(True)


def damaged_manifest(dedup=False):
    """A FIFO and a directory as MANIFEST: list and prune answer in time. Per-file
    (--no-dedup): prune applies retention and exits 0. Deduplicating (the default): retention
    is applied, then garbage collection refuses (exit 3 naming d1: the damaged backup's chunks
    cannot be marked), and runs once the damaged backups are removed."""
    src = os.path.join(T, "small-dedup" if dedup else "small")
    stable_files(src, n=3, size=1000)
    store = os.path.join(T, "dstore-dedup" if dedup else "dstore")
    init_location(store, *(() if dedup else ("--no-encryption", "--no-dedup")))
    for n in ("d1", "d2", "d3", "d4"):
        rc, _, err, _ = cairn("put", store, n, src)
        check(rc == 0, "put %s: %s" % (n, err.strip()))
    os.unlink(os.path.join(store, "d1", "MANIFEST"))
    os.mkfifo(os.path.join(store, "d1", "MANIFEST"))
    os.unlink(os.path.join(store, "d2", "MANIFEST"))
    os.mkdir(os.path.join(store, "d2", "MANIFEST"))
    rc, out, err, _ = cairn("list", store, "--json", timeout=DEADLINE)
    check(rc == 0, "list with a FIFO and a directory as MANIFEST exits 0 in time (%d): %s" % (
        rc, err.strip()))
    if rc == 0:
        b = {x["name"]: x for x in json.loads(out)["backups"]}
        check(b["d1"]["status"] == "corrupt" and "FIFO" in (b["d1"]["error"] or ""),
              "FIFO MANIFEST: corrupt with its reason: %s" % b["d1"])
        check(b["d2"]["status"] == "corrupt" and "directory" in (b["d2"]["error"] or ""),
              "directory MANIFEST: corrupt with its reason: %s" % b["d2"])
        check(b["d3"]["status"] == "complete" and b["d4"]["status"] == "complete",
              "the others are complete")
    rc, out, err, _ = cairn("prune", store, "--keep-last", "1", "--json", timeout=DEADLINE)
    if dedup:
        check(rc == 3 and "'d1' is corrupt" in err, "prune applies retention, then garbage "
              "collection refuses naming d1 (%d): %s" % (rc, err.strip()))
        doc = json.loads(out) if out.strip() else {}
        check(doc.get("removed") == ["d3"] and doc.get("error", {}).get("exit") == 3,
              "prune removed the old complete one, its JSON error is exit 3: " + out)
    else:
        check(rc == 0, "prune proceeds (%d): %s" % (rc, err.strip()))
        if rc == 0:
            check(json.loads(out)["removed"] == ["d3"],
                  "prune removed the old complete one: " + out)
    for n in ("d1", "d2"):
        rc, _, err, _ = cairn("rm", store, n, timeout=DEADLINE)
        check(rc == 0, "rm of the damaged %s: %s" % (n, err.strip()))
    check(statuses(store) == {"d4": "complete"}, "only d4 is left")
    if dedup:
        rc, _, err, _ = cairn("prune", store, "--keep-last", "1", timeout=DEADLINE)
        check(rc == 0, "prune collects once the damaged backups are gone (%d): %s"
              % (rc, err.strip()))
        rc, _, err, _ = cairn("verify", store, "d4", timeout=DEADLINE)
        check(rc == 0, "d4 verifies after the collection: " + err.strip())


run_parts(T, figures, churn, fifo_swap, damaged_manifest, damaged_manifest_dedup)
