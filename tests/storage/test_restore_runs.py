"""Restore of a deduplicated backup reads runs (docs/STORAGE.md, "Deduplication: the chunk
store"): chunks that lie one after the other in a pack are fetched with one read (one pread,
one ranged GET on S3), and the result stays byte-exact when a file's chunk list
- repeats a chunk (the same id twice in a row and later again: its bytes are decrypted in
  place once, so a repeat is read again),
- jumps between packs (a second backup rewrites the middle of a file: old, new, old chunks),
- mixes stored (random) and compressed (text) chunks, and ends with an empty file.
File storage (encrypted; strace: one syncfs, no fsync per file) and a real s3rver (plain): on
S3 the restore's ranged GETs of pack data are counted through a proxy (at most a quarter of
the chunk count), and a restore through a proxy that answers every request's first attempt
with HTTP 503 retries and is byte-exact."""
import os
import random
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reliability"))
from rel import (CAIRN, FaultProxy, S3rver, cairn, check, finish, run, tmpdir,  # noqa: E402
                 tree_bytes)
import skips  # noqa: E402

T = tmpdir("cairn-runs-")
os.environ["XDG_CACHE_HOME"] = os.path.join(T, "cache")
CHUNK = 64 * 1024  # the average of the chunker below


def make_data(d):
    rnd = random.Random(23)
    os.makedirs(os.path.join(d, "sub"))
    with open(os.path.join(d, "rand.bin"), "wb") as f:
        f.write(rnd.randbytes(3 << 20))
    block = rnd.randbytes(512 << 10)
    with open(os.path.join(d, "rep.bin"), "wb") as f:  # R R R x R: repeated chunk ids
        f.write(block + block + block + rnd.randbytes(100000) + block)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"epsilon\n"]
    with open(os.path.join(d, "sub", "text.log"), "wb") as f:
        f.write(b" ".join(rnd.choice(words) for _ in range(400000)))
    open(os.path.join(d, "sub", "empty"), "wb").close()


def rewrite_middle(d):
    with open(os.path.join(d, "rand.bin"), "r+b") as f:
        f.seek(1 << 20)
        f.write(random.Random(7).randbytes(600 << 10))


def restored(out):
    """The restored tree (restore --into puts the source's entries at out, get may keep its
    name: both accepted)."""
    got = tree_bytes(out)
    return tree_bytes(os.path.join(out, "src")) if got and all(k.startswith("src/") for k in got) \
        else got


def total_chunks(d):
    return sum(max(1, len(v) // CHUNK) for v in tree_bytes(d).values())


def backups(url, src, where, keyargs, one_worker=False):
    """b1, then b2 with the middle of rand.bin rewritten; both restore byte-exact. With
    one_worker the files are chunked one after the other (`put --workers 1`), so each file's
    new chunks lie together in a pack; with several, files chunked at the same time share
    packs and their runs are shorter."""
    rc, _, err, _ = cairn("init", url, *(keyargs or ["--no-encryption"]), "--chunker",
                          "16K,64K,256K")
    check(rc == 0, "%s: init: %s" % (where, err))
    want = {}
    for name in ("b1", "b2"):
        if name == "b2":
            rewrite_middle(src)
        if one_worker:
            rc, _, err, _ = cairn("put", url, name, src, "--workers", "1", *keyargs)
        else:
            rc, _, err, _ = cairn("backup", "--from", src, "--to", url, "--name", name, *keyargs)
        check(rc == 0, "%s: backup %s: %s" % (where, name, err))
        want[name] = tree_bytes(src)
    for name in ("b1", "b2"):
        out = os.path.join(T, "out-%s-%s" % (where, name))
        rc, _, err, _ = cairn("restore", url, name, "--into", out, *keyargs)
        got = restored(out) if rc == 0 else {}
        check(rc == 0 and got == want[name],
              "%s: %s restores byte-exact (repeated chunks, two packs): %s" % (where, name, err))
    return want["b2"]


def sync_calls(url, keyargs, want):
    """Restore under strace: no fsync per file, one syncfs before the tree lands (the
    directories and the target's parent are still fsync'd)."""
    if shutil.which("strace") is None:
        skips.missing_part("strace not installed (scripts/deps.sh test): sync calls unchecked")
        return
    log, out = os.path.join(T, "strace-sync"), os.path.join(T, "out-strace")
    # LeakSanitizer cannot run under ptrace: its leak check stays on in every other run.
    env = dict(os.environ, ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0")
    rc, _, err, _ = run(["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync,syncfs", "-o", log,
                         CAIRN, "restore", url, "b2", "--into", out] + keyargs, env=env)
    with open(log, errors="replace") as f:
        calls = [ln.split()[1].split("(")[0] for ln in f if len(ln.split()) > 1]
    dirs = len({os.path.dirname(k) for k in want} | {""}) + 1  # and the target's parent
    nsync = calls.count("fsync") + calls.count("fdatasync")
    check(rc == 0 and restored(out) == want and calls.count("syncfs") == 1 and nsync <= dirs,
          "file: restore makes one syncfs and %d fsync(s) for %d files (at most one per "
          "directory and the target's parent: %d), byte-exact: %s"
          % (nsync, len(want), dirs, err.strip()[-200:]))


class Counting(FaultProxy):
    """Records every request line it sees (HTTP, alternate mode hands it the line)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.lines = []

    def _next_action(self, request=None):
        with self.lock:
            self.lines.append(request or b"")
        return super()._next_action(request)


def s3_part(src):
    s3 = S3rver(T)
    if not s3.available():
        skips.missing_part("s3rver not installed (scripts/deps.sh test)")
        return
    s3.start()
    try:
        want = backups(s3.url("runs"), src, "s3", [], one_worker=True)
        nchunks = total_chunks(src)
        # A clean proxy (alternate mode, no faults) to count the restore's requests.
        p = Counting(("127.0.0.1", s3.port), plan=[], http=True, alternate=True).start()
        out = os.path.join(T, "out-s3-count")
        rc, _, err, _ = cairn("restore", s3.url("runs", port=p.port), "b2", "--into", out)
        p.stop()
        gets = [x for x in p.lines if x.startswith(b"GET ") and b"/.data/" in x]
        check(rc == 0 and restored(out) == want,
              "s3: restore through the proxy is byte-exact: %s" % err)
        check(0 < len(gets) and 4 * len(gets) <= nchunks,
              "s3: restore reads runs: %d ranged GETs of pack data for about %d chunks"
              % (len(gets), nchunks))
        # Every request's first attempt answered 503; one worker, so no other request's
        # attempts interleave with a retry's.
        p = Counting(("127.0.0.1", s3.port), plan=["http503"], http=True,
                     alternate=True).start()
        out = os.path.join(T, "out-s3-503")
        rc, _, err, _ = cairn("get", s3.url("runs", port=p.port, retries=4, retry_base_ms=10),
                              "b2", out, "--workers", "1")
        p.stop()
        check(rc == 0 and restored(out) == want and p.stats["http503"] > 0,
              "s3: restore through 503s on every first attempt (%d answered 503) retries and "
              "is byte-exact: %s" % (p.stats["http503"], err.strip()[-300:]))
    finally:
        s3.stop()


def main():
    key = os.path.join(T, "repo.key")
    rc, _, err, _ = cairn("key", "generate", key)
    check(rc == 0, "key generate: %s" % err)
    src = os.path.join(T, "src")
    make_data(src)
    url = "file://" + os.path.join(T, "repo")
    sync_calls(url, ["--key-file", key], backups(url, src, "file", ["--key-file", key]))
    shutil.rmtree(src)
    make_data(src)
    s3_part(src)
    shutil.rmtree(T, ignore_errors=True)
    finish()


main()
