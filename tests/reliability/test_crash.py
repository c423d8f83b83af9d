"""SIGKILL at random points during backups (cairn backup <- cairnd serve) into file storage and
into S3 storage (a real s3rver): the client (`cairn backup`) and the server (`cairnd serve`)
are each killed at random moments spread over a whole backup. After every kill:
- the interrupted backup is never listed as complete unless it verifies (it may have finished
  just before the kill); it is never "corrupt";
- the earlier backup's stored bytes are unchanged (checksums before and after).
At the end `cairn verify` passes on every complete backup, and `cairn prune` removes every
incomplete one (once a newer complete backup exists), leaving no debris.
100 kills in all (25 per storage and victim; 24 in all under a sanitizer, which looks for
memory errors and races on the same paths rather than repeating the count: see
docs/TESTING.md); CAIRN_CRASH_KILLS overrides the count.
Prints "figures:" lines for docs/RELIABILITY.md."""
import os
import random
import signal
import subprocess
import time

from rel import (CAIRN, Cairnd, S3rver, cairn, check, influx_data, run_parts, statuses, tmpdir,
                 tree_sums)
import skips  # noqa: E402  (tests/harness, on the path through rel)
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from repo import init_location  # noqa: E402

T = tmpdir("cairn-crash-")
SANITIZED = os.environ.get("CAIRN_SANITIZER") in ("address", "thread")
KILLS = int(os.environ.get("CAIRN_CRASH_KILLS", "24" if SANITIZED else "100"))
rnd = random.Random(int(os.environ.get("CAIRN_CRASH_SEED", "7")))
figures = []


class Target:
    def __init__(self, kind, url, sums_fn, dir_fn):
        self.kind, self.url, self.sums, self.dir = kind, url, sums_fn, dir_fn


def start_serve(data):
    return Cairnd(data, log=os.path.join(T, "cairnd.log")).start()


def backup_proc(addr, url, name):
    return subprocess.Popen([CAIRN, "backup", "--from", addr, "--to", url, "--name", name,
                             "--timeout", "3000"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def campaign(t, data, kills):
    base = "20260101T000000Z-base"
    srv = start_serve(data)
    try:
        rc, _, err, _ = cairn("backup", "--from", srv.addr, "--to", t.url, "--name", base)
        check(rc == 0, "%s: earlier backup: %s" % (t.kind, err.strip()[-200:]))
        base_sums = t.sums(base)
        t0 = time.time()
        rc, _, err, _ = cairn("backup", "--from", srv.addr, "--to", t.url, "--name",
                              "20251231T000000Z-probe")
        dur = time.time() - t0
        cairn("rm", t.url, "20251231T000000Z-probe")
        print("%s: a whole backup takes %.3fs" % (t.kind, dur), flush=True)
        outcome = {"midway": 0, "finished": 0, "absent": 0}
        for i in range(kills):
            victim = "cairn" if i % 2 == 0 else "cairnd"
            name = "20260102T%06dZ-%s" % (i, victim)
            delay = rnd.uniform(0, dur * 1.1)
            p = backup_proc(srv.addr, t.url, name)
            time.sleep(delay)
            if victim == "cairn":
                p.send_signal(signal.SIGKILL)
            else:
                srv.proc.send_signal(signal.SIGKILL)
                srv.proc.wait()
                srv.proc = None
            try:
                # A hang, not slowness: cairn's own --timeout is 3000 ms.
                _, err = p.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
                check(False, "%s: cairn backup hung after cairnd was killed" % t.kind)
            rc = p.returncode
            if victim == "cairnd":
                srv = start_serve(data)  # a restart clears the server's crash leftovers
            st = statuses(t.url).get(name, "absent")
            if st == "complete":
                vrc = cairn("verify", t.url, name)[0]
                check(vrc == 0, "%s kill %d (%s after %.3fs): complete backup verifies" % (
                    t.kind, i, victim, delay))
                outcome["finished"] += 1
                if rc != 0 and victim == "cairn":
                    print("  (killed after the MANIFEST landed)")
            else:
                outcome["midway" if st == "incomplete" else "absent"] += 1
                check(st != "corrupt", "%s kill %d: %s is %s" % (t.kind, i, name, st))
                if victim == "cairnd":
                    check(rc not in (0, None), "%s kill %d: cairn backup reported the failure "
                          "(exit %s)" % (t.kind, i, rc))
            if t.sums(base) != base_sums:
                check(False, "%s kill %d: the earlier backup changed" % (t.kind, i))
        check(True, "%s: %d kills, earlier backup unchanged after each" % (t.kind, kills))
        # A newer complete backup, then prune: every interrupted one goes.
        last = "20260103T000000Z-last"
        rc, _, err, _ = cairn("backup", "--from", srv.addr, "--to", t.url, "--name", last)
        check(rc == 0, "%s: a backup after the crashes completes" % t.kind)
    finally:
        srv.stop()
    sts = statuses(t.url)
    complete = [n for n, s in sts.items() if s == "complete"]
    bad = [n for n in complete if cairn("verify", t.url, n)[0] != 0]
    check(not bad, "%s: all %d complete backups verify (%s)" % (t.kind, len(complete), bad))
    rc, out, err, _ = cairn("prune", t.url, "--keep-last", "1000")
    after = statuses(t.url)
    check(rc == 0 and set(after) == set(complete) and
          all(s == "complete" for s in after.values()),
          "%s: prune removed the %d incomplete backups and kept the %d complete" % (
              t.kind, len(sts) - len(complete), len(complete)))
    if t.dir is not None:
        debris = [os.path.join(r, f) for r, _, fs in os.walk(t.dir) for f in fs
                  if ".tmp" in f]
        check(not debris, "%s: no temporary files left (%s)" % (t.kind, debris[:3]))
    check(t.sums(base) == base_sums and cairn("verify", t.url, base)[0] == 0,
          "%s: earlier backup unchanged and verifies at the end" % t.kind)
    figures.append("%s storage: %d SIGKILLs (%d of cairn backup, %d of cairnd serve) over a "
                   "%.2f s backup: %d left incomplete, %d had finished (verified), %d absent "
                   "(removed by the failing client or not begun); %d complete backups verified; prune "
                   "removed %d incomplete" % (
                       t.kind, kills, (kills + 1) // 2, kills // 2, dur, outcome["midway"],
                       outcome["finished"], outcome["absent"], len(complete),
                       len(sts) - len(complete)))


DATA = os.path.join(T, "svc")


def data_dir():
    d = os.path.join(DATA, "data")
    return d if os.path.isdir(d) else influx_data(DATA, shards=8, size=3 << 20)


def file_part():
    store = os.path.join(T, "store")
    os.makedirs(store)
    init_location(store)
    ft = Target("file", store, lambda n: tree_sums(os.path.join(store, n)), store)
    campaign(ft, data_dir(), KILLS // 2)


def s3_part():
    s3 = S3rver(T)
    if not s3.available():
        skips.missing_part("S3 crash half: s3rver not installed (scripts/deps.sh test)")
        return
    s3.start()
    try:
        init_location(s3.url("crash", retry_base_ms=20))
        st = Target("s3", s3.url("crash", retry_base_ms=20),
                    lambda n: s3.backup_sums("crash", n), None)
        campaign(st, data_dir(), KILLS - KILLS // 2)
    finally:
        s3.stop()


def main():
    run_parts(T, figures, file_part, s3_part)


if __name__ == "__main__":
    main()
