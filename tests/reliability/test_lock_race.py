"""prune racing backups (docs/STORAGE.md, "Locks"): 50 rounds, on file storage and on a real
s3rver, of `cairn prune --keep-last 2` started at a random moment among 4 concurrent
`cairn put` of tiny trees under random names (so running backups often sort before the newest
complete one: the names prune once took for failed attempts). Even rounds wait for locks
(CAIRN_LOCK_WAIT_MS), odd ones do not (a command locked out exits 10). After every round:
- every put exited 0 or 10, the prune 0 or 10;
- no complete backup is lost: each put that exited 0 is listed complete, or a prune that
  started after it said "removed" it;
- no backup is listed complete that is not: each one listed complete passes `cairn verify`;
- nothing incomplete is left (a put locked out creates nothing) and no lock object either."""
import json
import os
import random
import threading
import time

from rel import S3rver, check, cairn, run, run_parts, statuses, tmpdir, CAIRN
import skips  # noqa: E402 (on the path rel.py sets)
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from repo import init_location  # noqa: E402

T = tmpdir("cairn-lockrace-")
figures = []
# 50 rounds in the plain build; under ThreadSanitizer (each process 5-15x slower) 12, which
# still race every lock path in every process TSan watches (docs/TESTING.md).
ROUNDS = int(os.environ.get("CAIRN_LOCK_RACE_ROUNDS",
                            "12" if os.environ.get("CAIRN_SANITIZER") == "thread" else "50"))
SEED = int(os.environ.get("CAIRN_SEED", random.randrange(1 << 30)))
print("seed", SEED)


def trees():
    srcs = []
    for w in range(4):
        d = os.path.join(T, "src%d" % w)
        os.makedirs(d, exist_ok=True)
        for i in range(3):
            with open(os.path.join(d, "f%d" % i), "wb") as f:
                f.write(os.urandom(512 + 97 * i))
        srcs.append(d)
    return srcs


def locks_left(url):
    rc, out, err, _ = cairn("unlock", url, "--json")
    if rc != 0:
        return "unlock failed: " + err
    return [x["object"] for x in json.loads(out)["locks"]]


def one_round(url, srcs, rnd, wait, r, stats):
    env = dict(os.environ, CAIRN_LOCK_WAIT_MS=str(60000 if wait else 0))
    results = {}
    names = ["x%08x" % rnd.getrandbits(32) for _ in srcs]

    def put(i):
        time.sleep(rnd_delays[i])
        results[names[i]] = run([CAIRN, "put", url, names[i], srcs[i]], env=env)

    rnd_delays = [rnd.random() * 0.3 for _ in srcs]
    prune_delay = rnd.random() * 0.3

    def prune():
        time.sleep(prune_delay)
        results["<prune>"] = run([CAIRN, "prune", url, "--keep-last", "2", "--group-by", "none"],
                                 env=env)

    threads = [threading.Thread(target=put, args=(i,)) for i in range(len(srcs))]
    threads.append(threading.Thread(target=prune))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    prc, pout, perr, _ = results.pop("<prune>")
    ok = check(prc in (0, 10), "round %d: prune exit %d (0 or 10): %s" % (r, prc, perr.strip()))
    stats["prune_locked"] += prc == 10
    removed = {ln.split()[1] for ln in pout.splitlines() if ln.startswith("removed ")}
    stats["removed"] += len(removed)
    st = statuses(url)
    for name, (rc, out, err, _) in sorted(results.items()):
        ok &= check(rc in (0, 10), "round %d: put %s exit %d (0 or 10): %s" % (r, name, rc, err.strip()))
        if rc == 0:
            stats["puts_ok"] += 1
            ok &= check(st.get(name) == "complete" or name in removed,
                        "round %d: completed backup %s is %s and no prune removed it"
                        % (r, name, st.get(name, "gone")))
        else:
            stats["puts_locked"] += 1
            ok &= check(name not in st, "round %d: locked-out put %s left %s" % (r, name, st.get(name)))
    stray = {n: s for n, s in st.items() if s != "complete"}
    ok &= check(not stray, "round %d: nothing incomplete or corrupt left: %s" % (r, stray))
    complete = sorted(n for n, s in st.items() if s == "complete")
    verdicts = {}

    def verify(name):
        verdicts[name] = cairn("verify", url, name)

    vt = [threading.Thread(target=verify, args=(n,)) for n in complete]
    for t in vt:
        t.start()
    for t in vt:
        t.join()
    for name in complete:
        rc, out, err, _ = verdicts[name]
        ok &= check(rc == 0, "round %d: listed complete %s verifies: %s" % (r, name, err.strip()))
        stats["verified"] += 1
    left = locks_left(url)
    ok &= check(left == [], "round %d: no lock left: %s" % (r, left))
    return ok


def race(url, label):
    srcs = trees()
    rnd = random.Random(SEED)
    init_location(url)
    # The location exists before the first prune (prune of a missing one is exit 5).
    check(cairn("put", url, "seed", srcs[0])[0] == 0, "%s: first backup" % label)
    stats = dict(puts_ok=0, puts_locked=0, prune_locked=0, removed=0, verified=0)
    t0 = time.time()
    failed = 0
    for r in range(ROUNDS):
        if not one_round(url, srcs, rnd, r % 2 == 0, r, stats):
            failed += 1
            if failed >= 3:
                break
    figures.append("%s: %d rounds in %.0fs: %s" % (label, ROUNDS, time.time() - t0, stats))
    check(failed == 0, "%s: every round kept its invariants" % label)
    check(stats["removed"] > 0 and stats["puts_ok"] > ROUNDS,
          "%s: the race did work (backups completed and prunes removed some): %s" % (label, stats))


def file_race():
    race("file://" + os.path.join(T, "store"), "file")


def s3_race():
    s3 = S3rver(os.path.join(T, "s3"))
    if not s3.available():
        skips.missing_part("s3 race: s3rver not installed (scripts/deps.sh test)")
        return
    s3.start()
    try:
        race(s3.url("race"), "s3")
    finally:
        s3.stop()


run_parts(T, figures, file_race, s3_race)
