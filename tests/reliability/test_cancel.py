"""SIGINT/SIGTERM stop local-path backups and restores (README: exit 130), at seeded random
points: each run is signalled once it has stored (backup) or written (restore) a random number
of files, observed on disk, never after a fixed sleep.
- `cairn backup --from DIR` and `cairn put` (10 runs): exit 130, no MANIFEST for the
  interrupted backup (it is removed), no temporary left; the store still lists only the
  complete backups, which verify.
- `cairn restore --into DIR` and `cairn get` (10 runs, DIR absent or empty): exit 130, DIR
  exactly as before (compared byte for byte), no temporary beside or inside it.
A run may legitimately finish between the observation and the signal: then it must be exit 0
and complete (counted and printed); at least half the runs must be cancelled. Every run is
bounded by a 120 s deadline; the time from signal to exit is printed, not asserted."""
import os
import random
import signal
import subprocess
import time

from rel import CAIRN, check, cairn, run_parts, statuses, temporaries, tmpdir, tree_state
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from repo import init_location  # noqa: E402

T = tmpdir("cairn-cancel-")
figures = []
SEED = int(os.environ.get("CAIRN_SEED", random.randrange(1 << 30)))
print("seed", SEED)
rnd = random.Random(SEED)
DEADLINE = 120
NFILES = 400


def make_tree(src):
    r = random.Random(SEED)
    for i in range(NFILES):
        d = os.path.join(src, "d%02d" % (i % 20))
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "f%04d" % i), "wb") as f:
            f.write(r.randbytes(128 << 10))


def count_files(path):
    n = 0
    for _, _, files in os.walk(path):
        n += len(files)
    return n


def interrupt(args, ready):
    """Start cairn, wait until ready() (polled), signal it; returns (rc, stderr, latency)."""
    sig = rnd.choice([signal.SIGINT, signal.SIGTERM])
    p = subprocess.Popen([CAIRN] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = time.time()
    while p.poll() is None and not ready() and time.time() - t0 < DEADLINE:
        time.sleep(0.002)
    ts = time.time()
    if p.poll() is None:
        p.send_signal(sig)
    try:
        _, err = p.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
        return -9, err.decode(errors="replace"), DEADLINE
    return p.returncode, err.decode(errors="replace"), time.time() - ts


def backups():
    src = os.path.join(T, "src")
    make_tree(src)
    store = os.path.join(T, "store")
    # --no-dedup: the signal point is observed as the backup's stored fNNNNNN objects; the
    # restores below run on the default (deduplicating) repository.
    init_location(store, "--no-encryption", "--no-dedup")
    cancelled, finished, lat = 0, [], []
    for i in range(10):
        name = "c%02d" % i
        at = rnd.randrange(1, NFILES // 2)
        bdir = os.path.join(store, name)
        args = (["backup", "--from", src, "--to", store, "--name", name, "--parallel", "2"]
                if i % 2 == 0 else ["put", store, name, src, "--workers", "2"])
        rc, err, secs = interrupt(args, lambda: count_files(bdir) >= at)
        check(rc != -9, "%s %s: exited before the %d s deadline" % (args[0], name, DEADLINE))
        man = os.path.exists(os.path.join(bdir, "MANIFEST"))
        if rc == 130:
            cancelled += 1
            lat.append(secs)
            check(not man, "%s %s cancelled after %d files: no MANIFEST" % (args[0], name, at))
            check(not os.path.exists(bdir), "the cancelled backup's directory is removed")
            check("cancelled" in err, "the error says cancelled: " + err.strip()[-200:])
        else:
            check(rc == 0 and man, "%s %s: exit 130, or 0 when it finished first (got %d): %s"
                  % (args[0], name, rc, err.strip()[-300:]))
            finished.append(name)
        check(not temporaries(store, bdir), "no temporaries: %s" % temporaries(store, bdir))
    sts = statuses(store)
    check(sorted(sts) == finished and set(sts.values()) <= {"complete"},
          "only the finished backups are listed, complete: %s" % sts)
    for n in finished:
        rc, _, err, _ = cairn("verify", store, n)
        check(rc == 0, "finished %s verifies: %s" % (n, err.strip()))
    check(cancelled >= 5, "at least half the backups were cancelled: %d of 10" % cancelled)
    figures.append("SIGINT/SIGTERM at 10 random points of backup --from/put: %d cancelled "
                   "(exit 130, no MANIFEST), %d finished first; signal to exit max %.2f s"
                   % (cancelled, len(finished), max(lat) if lat else 0))


def restores():
    src = os.path.join(T, "src")
    store = os.path.join(T, "rstore")
    init_location(store)
    rc, _, err, _ = cairn("put", store, "full", src)
    check(rc == 0, "backup to restore: " + err.strip())
    cancelled, finished, lat = 0, 0, []
    for i in range(10):
        target = os.path.join(T, "r%02d" % i)
        if i % 4 >= 2:
            os.mkdir(target, 0o750)
        before = tree_state(target)
        at = rnd.randrange(1, NFILES // 2)

        def written():
            return sum(count_files(d) for d in temporaries(T))
        args = (["restore", store, "full", "--into", target, "--json"] if i % 2 == 0
                else ["get", store, "full", target, "--workers", "2"])
        rc, err, secs = interrupt(args, lambda: written() >= at)
        check(rc != -9, "%s %d: exited before the %d s deadline" % (args[0], i, DEADLINE))
        if rc == 130:
            cancelled += 1
            lat.append(secs)
            check(tree_state(target) == before, "%s %d cancelled after %d files: target as before"
                  % (args[0], i, at))
        else:
            check(rc == 0 and count_files(target) == NFILES,
                  "%s %d: exit 130, or 0 and complete when it finished first (got %d): %s"
                  % (args[0], i, rc, err.strip()[-300:]))
            finished += 1
        check(not temporaries(T, target), "no temporaries: %s" % temporaries(T, target))
    check(cancelled >= 5, "at least half the restores were cancelled: %d of 10" % cancelled)
    figures.append("SIGINT/SIGTERM at 10 random points of restore --into/get: %d cancelled "
                   "(exit 130, target unchanged), %d finished first; signal to exit max %.2f s"
                   % (cancelled, finished, max(lat) if lat else 0))


run_parts(T, figures, backups, restores)
