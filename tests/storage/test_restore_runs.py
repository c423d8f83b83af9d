"""Restore of a deduplicated backup reads runs (docs/STORAGE.md, "Deduplication: the chunk
store"): chunks that lie one after the other in a pack are fetched with one read (one pread,
one ranged GET on S3), and the result stays byte-exact when a file's chunk list
- repeats a chunk (the same id twice in a row and later again: its bytes are decrypted in
  place once, so a repeat is read again),
- jumps between packs (a second backup rewrites the middle of a file: old, new, old chunks),
- mixes stored (random) and compressed (text) chunks, and ends with an empty file.
File storage (encrypted) and a real s3rver (plain): on S3 the restore's ranged GETs of pack
data are counted through a proxy (at most a quarter of the chunk count), and a restore through
a proxy that answers every request's first attempt with HTTP 503 retries and is byte-exact."""
import os
import random
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reliability"))
from rel import FaultProxy, S3rver, cairn, check, finish, tmpdir  # noqa: E402
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


def tree(d):
    out = {}
    for r, _, files in os.walk(d):
        for n in files:
            with open(os.path.join(r, n), "rb") as f:
                out[os.path.relpath(os.path.join(r, n), d)] = f.read()
    return out


def restored(out):
    """The restored tree (restore --into puts the source's entries at out, get may keep its
    name: both accepted)."""
    got = tree(out)
    return tree(os.path.join(out, "src")) if got and all(k.startswith("src/") for k in got) \
        else got


def total_chunks(d):
    return sum(max(1, len(v) // CHUNK) for v in tree(d).values())


def backups(url, src, where, keyargs):
    """b1, then b2 with the middle of rand.bin rewritten; both restore byte-exact."""
    rc, _, err, _ = cairn("init", url, *(keyargs or ["--no-encryption"]), "--chunker",
                          "16K,64K,256K")
    check(rc == 0, "%s: init: %s" % (where, err))
    want = {}
    for name in ("b1", "b2"):
        if name == "b2":
            rewrite_middle(src)
        rc, _, err, _ = cairn("backup", "--from", src, "--to", url, "--name", name, *keyargs)
        check(rc == 0, "%s: backup %s: %s" % (where, name, err))
        want[name] = tree(src)
    for name in ("b1", "b2"):
        out = os.path.join(T, "out-%s-%s" % (where, name))
        rc, _, err, _ = cairn("restore", url, name, "--into", out, *keyargs)
        got = restored(out) if rc == 0 else {}
        check(rc == 0 and got == want[name],
              "%s: %s restores byte-exact (repeated chunks, two packs): %s" % (where, name, err))
    return want["b2"]


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
        want = backups(s3.url("runs"), src, "s3", [])
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
    backups("file://" + os.path.join(T, "repo"), src, "file", ["--key-file", key])
    shutil.rmtree(src)
    make_data(src)
    s3_part(src)
    shutil.rmtree(T, ignore_errors=True)
    finish()


main()
