"""Crash safety of the chunk store: `cairn backup` and `cairn prune` are killed with SIGKILL at
random points (file storage, encrypted; and a real s3rver, plain); after each kill
`cairn check --read-data` passes and every complete backup verifies (the newest also
restores byte for byte); a later prune finishes the job. CAIRN_CRASH_N kills per storage
(default 6; the issue's full run is 100)."""
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import json

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reliability"))
from rel import (check, cairn, tmpdir, finish, new_key_file, tree_bytes,  # noqa: E402
                 with_s3rver, CAIRN)

T = tmpdir("cairn-dcrash-")
N = int(os.environ.get("CAIRN_CRASH_N", "6"))
rnd = random.Random(int(os.environ.get("CAIRN_CRASH_SEED", str(os.getpid()))))


def change(src, i):
    p = os.path.join(src, "data.bin")
    with open(p, "r+b" if os.path.exists(p) else "wb") as f:
        if i == 0:
            f.write(random.Random(1).randbytes(6 << 20))
        else:
            f.seek(rnd.randrange(0, 6 << 20))
            f.write(rnd.randbytes(256 << 10))
    with open(os.path.join(src, "log-%d.txt" % i), "wb") as f:
        f.write(("line %d\n" % i).encode() * 20000)


def killed(args, duration):
    """Run cairn with args and SIGKILL it after a random share of duration (or let it end)."""
    p = subprocess.Popen([CAIRN] + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        p.wait(timeout=rnd.uniform(0, duration))
        return p.returncode
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        p.wait()
        return -9


def consistent(url, keyargs, where, snaps):
    rc, out, err, _ = cairn("check", url, "--read-data", *keyargs)
    ok = check(rc == 0, "%s: check --read-data after the kill: %s" % (where, err.strip()))
    rc, out, err, _ = cairn("list", url, "--json", *keyargs)
    complete = [b["name"] for b in json.loads(out)["backups"] if b["status"] == "complete"]
    bad = []
    for name in complete:
        rc, _, err, _ = cairn("verify", url, name, *keyargs)
        if rc != 0:
            bad.append("%s: %s" % (name, err.strip()))
    ok &= check(not bad, "%s: every complete backup (%d) verifies %s" % (where, len(complete), bad))
    if complete:
        newest = sorted(complete)[-1]
        out = os.path.join(T, "restore-%s" % where)
        shutil.rmtree(out, ignore_errors=True)
        rc, _, err, _ = cairn("restore", url, newest, "--into", out, *keyargs)
        ok &= check(rc == 0 and newest in snaps and tree_bytes(out) == snaps[newest],
                    "%s: the newest complete backup %s restores byte for byte %s" %
                    (where, newest, err.strip()))
    return ok


def scenario(url, keyargs, where, n):
    src = os.path.join(T, "src-" + where)
    os.makedirs(src)
    rc, _, err, _ = cairn("init", url, *(keyargs or ["--no-encryption"]), "--chunker",
                          "16K,64K,256K")
    check(rc == 0, "%s: init %s" % (where, err))
    snaps = {}
    change(src, 0)
    t0 = time.monotonic()
    rc, _, err, _ = cairn("backup", "--from", src, "--to", url, "--name", "b000", *keyargs)
    dur = max(time.monotonic() - t0, 0.2)
    check(rc == 0, "%s: first backup (%.2f s) %s" % (where, dur, err))
    snaps["b000"] = tree_bytes(src)
    for i in range(1, n + 1):
        change(src, i)
        name = "b%03d" % i
        if i % 2:
            snaps[name] = tree_bytes(src)  # kept only if it completes
            rc = killed(["backup", "--from", src, "--to", url, "--name", name] + keyargs,
                        dur * 1.5)
            what = "backup"
        else:
            rc, _, err, _ = cairn("backup", "--from", src, "--to", url, "--name", name, *keyargs)
            snaps[name] = tree_bytes(src)
            rc = killed(["prune", url, "--keep-last", "2"] + keyargs, dur * 2)
            what = "prune"
        print("# %s: %s killed at a random point (rc %s)" % (where, what, rc), flush=True)
        if not consistent(url, keyargs, "%s #%d (%s)" % (where, i, what), snaps):
            break
    rc, out, err, _ = cairn("prune", url, "--keep-last", "2", *keyargs)
    check(rc == 0, "%s: a last prune finishes the job: %s %s" % (where, out.strip()[-200:], err))
    consistent(url, keyargs, where + " end", snaps)


def main():
    key = new_key_file(os.path.join(T, "k"))
    root = os.path.join(T, "repo")
    scenario("file://" + root, ["--key-file", key], "file", N)
    with_s3rver(T, lambda s3: scenario(s3.url("dcrash"), [], "s3", max(2, N // 2)))
    shutil.rmtree(T, ignore_errors=True)
    finish()


main()
