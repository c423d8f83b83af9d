"""Crash safety of the chunk store (issue 17): `cairn backup` and `cairn prune` (backup
removal, then garbage collection with repack) are killed with SIGKILL at random points, on
file storage (encrypted) and a real s3rver (plain). After each kill: `cairn check
--read-data` passes, every complete backup restores byte for byte, a later backup and a
rerun of prune complete (the rerun finishes the job); at the end a second prune deletes
nothing: every stored pack is indexed, one index object remains and no temporary of a killed
writer is left (in .data or .index). Then `cairn check` is killed CAIRN_CRASH_CHECK times
(default 2) at random points: it must change nothing stored. Last, in a second repository
per storage where every prune repacks, prune is killed CAIRN_CRASH_REPACK times (default 2).

Kill points: half of the kills after a random delay drawn over the measured duration of an
unkilled run of the same command, half after the k-th change of the stored objects (k drawn
over the changes an unkilled run makes; the storage is watched as a directory tree, the
file location or s3rver's data directory). A run that ends before its point counts as no
kill; kills are drawn until CAIRN_CRASH_N have landed per command and storage (default 4, 2
under a sanitizer; the issue's run: CAIRN_CRASH_N=100, docs/TESTING.md). Each kill's phase is read from what
changed in the storage; the histogram is printed. CAIRN_CRASH_SEED repeats a run."""
import collections
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reliability"))
from rel import S3rver, check, cairn, tmpdir, tree_sums, finish, CAIRN  # noqa: E402
import skips  # noqa: E402

T = tmpdir("cairn-dcrash-")
# under a sanitizer (ASan phase of make check) fewer: it is there for memory errors
SANITIZED = os.environ.get("CAIRN_SANITIZER") in ("address", "thread")
N = int(os.environ.get("CAIRN_CRASH_N", "2" if SANITIZED else "4"))
SEED = int(os.environ.get("CAIRN_CRASH_SEED", str(os.getpid())))
CHECK_KILLS = int(os.environ.get("CAIRN_CRASH_CHECK", "2"))
REPACK_KILLS = int(os.environ.get("CAIRN_CRASH_REPACK", "2"))
rnd = random.Random(SEED)
phases = collections.Counter()
spread = collections.Counter()  # share of the measured run (tenths) at which time kills landed


def change(src, i):
    """Round i: 256 KiB overwritten at a random place of a 6 MiB file, a new log file (the
    last 4 kept), so that prune finds dead and partly dead packs."""
    p = os.path.join(src, "data.bin")
    with open(p, "r+b" if os.path.exists(p) else "wb") as f:
        if i == 0:
            f.write(random.Random(1).randbytes(6 << 20))
        else:
            f.seek(rnd.randrange(0, 6 << 20))
            f.write(rnd.randbytes(256 << 10))
    with open(os.path.join(src, "log-%d.txt" % i), "wb") as f:
        f.write(("line %d %d\n" % (i, rnd.getrandbits(64))).encode() * 20000)
    old = os.path.join(src, "log-%d.txt" % (i - 4))
    if os.path.exists(old):
        os.unlink(old)


def objects(root):
    """The stored objects under root (a file location, or s3rver's directory of a prefix):
    relative names, s3rver's metadata files left out."""
    out = set()
    for r, _, files in os.walk(root):
        for n in files:
            if "._S3rver_" in n:
                if not n.endswith("._S3rver_object"):
                    continue
                n = n[: -len("._S3rver_object")]
            out.add(os.path.relpath(os.path.join(r, n), root))
    return out


def watch(p, root, before, stop_after):
    """Wait for p while watching root: returns (changes seen, killed). With stop_after, kill p
    once that many changes of the object set have been seen."""
    seen, cur = 0, before
    while p.poll() is None:
        now = objects(root)
        if now != cur:
            seen += 1
            cur = now
            if stop_after and seen >= stop_after and p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()
                return seen, True
    return seen, False


class Op:
    """Measured unkilled runs of one command: durations and object changes."""

    def __init__(self):
        self.durs, self.changes = [], []

    def full(self, args, root):
        before = objects(root)
        t0 = time.monotonic()
        p = subprocess.Popen([CAIRN] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        seen, _ = watch(p, root, before, 0)
        out, err = p.communicate()
        self.durs.append(time.monotonic() - t0)
        self.changes.append(seen)
        return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    def killed(self, args, root, by_time):
        """Run args and SIGKILL it at a random point: returns (killed, objects before)."""
        before = objects(root)
        if by_time:
            d = statistics.median(self.durs[-5:]) * 1.1
            delay = rnd.uniform(0, d)
            t0 = time.monotonic()
            p = subprocess.Popen([CAIRN] + args, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            time.sleep(max(0, delay - (time.monotonic() - t0)))
            hit = p.poll() is None
            if hit:
                p.send_signal(signal.SIGKILL)
                spread[min(9, int(10 * delay / d))] += 1
            p.wait()
        else:
            k = rnd.randint(1, max(1, max(self.changes[-5:])))
            p = subprocess.Popen([CAIRN] + args, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            _, hit = watch(p, root, before, k)
            p.wait()
        return hit, before


def backup_phase(before, after, name):
    new = after - before
    if name + "/MANIFEST" in new:
        return "backup: MANIFEST landed, not exited"
    if any(o.startswith(".index/") for o in new):
        return "backup: index object written, no MANIFEST"
    if any(o.startswith(".data/") for o in new):
        return "backup: packs stored, no index object"
    if any(o.startswith(name + "/") for o in new):
        return "backup: backup started, no pack"
    return "backup: before the first object (locking, reading)"


def prune_phase(before, after):
    new, gone = after - before, before - after
    if any(o.startswith(".data/") for o in gone):
        return "prune: deleting packs"
    if any(o.startswith(".index/") for o in gone):
        return "prune: deleting old index objects"
    if any(o.startswith(".index/") for o in new):
        return "prune: new index written"
    if any(o.startswith(".data/") for o in new):
        return "prune: repacking"
    if any(not o.startswith(".locks/") for o in gone):
        return "prune: removing backups or marking"
    return "prune: before removing anything (locking, planning)"


def consistent(url, keyargs, where, snaps):
    """check --read-data passes and every complete backup restores byte for byte."""
    rc, out, err, _ = cairn("check", url, "--read-data", *keyargs)
    ok = check(rc == 0, "%s: check --read-data: %s" % (where, (out + err).strip()[-300:]))
    rc, out, err, _ = cairn("list", url, "--json", *keyargs)
    complete = [b["name"] for b in json.loads(out)["backups"] if b["status"] == "complete"]
    bad = []
    for name in complete:
        dst = os.path.join(T, "restore")
        shutil.rmtree(dst, ignore_errors=True)
        rc, _, err, _ = cairn("restore", url, name, "--into", dst, *keyargs)
        if rc != 0 or name not in snaps or tree_sums(dst) != snaps[name]:
            bad.append("%s: rc %d %s" % (name, rc, err.strip()[-200:]))
    ok &= check(not bad, "%s: every complete backup (%d) restores byte for byte %s" %
                (where, len(complete), bad))
    return ok


def scenario(url, keyargs, where, root):
    src = os.path.join(T, "src-" + where)
    os.makedirs(src)
    rc, _, err, _ = cairn("init", url, *(keyargs or ["--no-encryption"]), "--chunker",
                          "16K,64K,256K")
    check(rc == 0, "%s: init %s" % (where, err))
    bk, pr = Op(), Op()
    snaps = {}
    kills = {"backup": 0, "prune": 0}
    t0 = time.monotonic()
    repacked = 0
    for i in range(6 * N + 2):
        if min(kills.values()) >= N:
            break
        change(src, i)
        args = ["backup", "--from", src, "--to", url, "--name", "b%03da" % i] + keyargs
        snaps["b%03da" % i] = tree_sums(src)  # kept only if it completes
        if i < 2 or kills["backup"] >= N:
            rc, _, err = bk.full(args, root)
            check(rc == 0, "%s #%d: backup %s" % (where, i, err.strip()))
        else:
            hit, before = bk.killed(args, root, by_time=i % 2 == 0)
            if hit:
                kills["backup"] += 1
                phases[where, backup_phase(before, objects(root), "b%03da" % i)] += 1
                if not consistent(url, keyargs, "%s #%d (backup)" % (where, i), snaps):
                    break
        # a later backup completes
        name = "b%03db" % i
        rc, _, err = bk.full(["backup", "--from", src, "--to", url, "--name", name] + keyargs,
                             root)
        snaps[name] = tree_sums(src)
        check(rc == 0, "%s #%d: a later backup completes %s" % (where, i, err.strip()))
        args = ["prune", url, "--keep-last", "2"] + keyargs
        if i >= 1 and kills["prune"] < N:
            hit, before = pr.killed(args, root, by_time=i % 2 == 1)
            if hit:
                kills["prune"] += 1
                phases[where, prune_phase(before, objects(root))] += 1
                if not consistent(url, keyargs, "%s #%d (prune)" % (where, i), snaps):
                    break
        # the rerun finishes the job
        rc, out, err = pr.full(args, root)
        check(rc == 0, "%s #%d: prune (rerun) completes %s" % (where, i, err.strip()))
        m = re.search(r"(\d+) repacked", out)
        repacked += int(m.group(1)) if m else 0
    check(min(kills.values()) >= N, "%s: %s kills landed (%d wanted each)" % (where, kills, N))
    rc, out, err = pr.full(["prune", url, "--keep-last", "2"] + keyargs, root)
    ok = check(rc == 0, "%s: a last prune %s %s" % (where, out.strip()[-200:], err))
    if ok:  # a second one deletes nothing: every pack is indexed, one index object names them
        before = objects(root)
        rc, out, err = pr.full(["prune", url, "--keep-last", "2"] + keyargs, root)
        m = re.search(r"chunks: (\d+) pack\(s\), 0 deleted, 0 repacked", out)
        after = objects(root)
        packs = {o for o in before if o.startswith(".data/")}
        index = [o for o in after if o.startswith(".index/")]
        check(rc == 0 and m and int(m.group(1)) == len(packs) and len(index) == 1 and
              packs == {o for o in after if o.startswith(".data/")},
              "%s: a second prune deletes nothing, every pack (%d) is in the one index (%d): "
              "%s %s" % (where, len(packs), len(index), out.strip()[-200:], err))
    consistent(url, keyargs, where + " end", snaps)
    if CHECK_KILLS:
        check_kills(url, keyargs, where, root)
    print("# %s: %s kills in %.0f s; %d pack(s) repacked by the reruns; backup %.2f s "
          "(median, %d changes), prune %.2f s (%d changes)" %
          (where, kills, time.monotonic() - t0, repacked, statistics.median(bk.durs),
           max(bk.changes), statistics.median(pr.durs), max(pr.changes)), flush=True)


def check_kills(url, keyargs, where, root):
    """cairn check killed at random points changes nothing stored (its lock object aside,
    which a dead process leaves and the next locker removes as stale)."""
    ck = Op()
    ck.full(["check", url, "--read-data"] + keyargs, root)
    landed = 0
    for k in range(4 * CHECK_KILLS):
        if landed >= CHECK_KILLS:
            break
        hit, before = ck.killed(["check", url, "--read-data"] + keyargs, root, by_time=True)
        landed += hit
        after = objects(root)
        diff = {o for o in before ^ after if not o.startswith(".locks/")}
        if not check(not diff, "%s: a killed check changed nothing %s" % (where, diff)):
            break
    check(landed >= CHECK_KILLS, "%s: %d kills of check landed" % (where, landed))


def repack_kills(url, keyargs, where, root):
    """Prune killed while it repacks: each round stores a pack that is 1/7 live after the
    prune's removal (above the 20% garbage threshold), so every prune repacks."""
    src = os.path.join(T, "src-repack-" + where)
    os.makedirs(src)
    rc, _, err, _ = cairn("init", url, *(keyargs or ["--no-encryption"]), "--chunker",
                          "16K,64K,256K")
    check(rc == 0, "%s repack: init %s" % (where, err))
    bk, pr = Op(), Op()
    snaps, landed, repacked = {}, 0, 0
    for i in range(4 * REPACK_KILLS + 2):
        if landed >= REPACK_KILLS:
            break
        for n, size in (("keep-%d" % i, 512 << 10), ("big-%d" % i, 3 << 20)):
            with open(os.path.join(src, n), "wb") as f:
                f.write(rnd.randbytes(size))
        old = os.path.join(src, "keep-%d" % (i - 2))
        if os.path.exists(old):
            os.unlink(old)
        for name in ("r%03da" % i, "r%03db" % i):
            rc, _, err = bk.full(["backup", "--from", src, "--to", url, "--name", name] +
                                 keyargs, root)
            snaps[name] = tree_sums(src)
            check(rc == 0, "%s repack #%d: backup %s %s" % (where, i, name, err.strip()))
            if name.endswith("a"):  # 6/7 of this pack is garbage once the prune removes it
                os.unlink(os.path.join(src, "big-%d" % i))
        args = ["prune", url, "--keep-last", "1"] + keyargs
        if i >= 1:
            hit, before = pr.killed(args, root, by_time=i % 2 == 0)
            if hit:
                landed += 1
                phases[where, "repack " + prune_phase(before, objects(root))] += 1
                if not consistent(url, keyargs, "%s repack #%d" % (where, i), snaps):
                    break
        rc, out, err = pr.full(args, root)
        m = re.search(r"(\d+) repacked", out)
        repacked += int(m.group(1)) if m else 0
        check(rc == 0, "%s repack #%d: prune (rerun) completes %s" % (where, i, err.strip()))
    check(landed >= REPACK_KILLS, "%s: %d kills of a repacking prune landed" % (where, landed))
    consistent(url, keyargs, where + " repack end", snaps)
    print("# %s: %d kills of a repacking prune; %d pack(s) repacked by the reruns" %
          (where, landed, repacked), flush=True)


def main():
    key = os.path.join(T, "k")
    cairn("key", "generate", key)
    root = os.path.join(T, "repo")
    scenario("file://" + root, ["--key-file", key], "file", root)
    if REPACK_KILLS:
        repack_kills("file://" + root + "-rp", ["--key-file", key], "file", root + "-rp")
    s3 = S3rver(T)
    if not s3.available():
        skips.missing_part("s3rver not installed (scripts/deps.sh test)")
    else:
        s3.start()
        try:
            scenario(s3.url("dcrash"), [], "s3", os.path.join(s3.data, s3.bucket, "dcrash"))
            if REPACK_KILLS:
                repack_kills(s3.url("dcrash-rp"), [], "s3",
                             os.path.join(s3.data, s3.bucket, "dcrash-rp"))
        finally:
            s3.stop()
    print("# seed %d; phases of the kills:" % SEED)
    for (where, ph), n in sorted(phases.items()):
        print("#   %4d  %-4s %s" % (n, where, ph))
    print("# time kills by share of the measured run (tenths): %s" %
          [spread[k] for k in range(10)], flush=True)
    shutil.rmtree(T, ignore_errors=True)
    finish()


main()
