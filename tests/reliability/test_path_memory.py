"""Bounded memory for large trees (docs/STORAGE.md, "Streaming"): `cairn put`, `list`,
`verify` and `get` of a tree of 200,000 tiny files stay under 32 MiB of peak RSS each (the
budget of docs/PERFORMANCE.md; before streaming, about 1.3 KiB per file: some 260 MiB here),
and the restore is complete and identical. Peak RSS is the kernel's (wait4 ru_maxrss of each
command), not a timing. Under a sanitizer (its shadow memory is not ours to bound) the tree is
20,000 files and only the behaviour is checked.

It runs on a per-file repository (`--no-dedup`) with the 32 MiB budget, and on the default
deduplicating one with issue 17's budget for a repository of up to 1,000,000 chunks, 64 MiB:
the chunk index holds 32 bytes a chunk (docs/PERFORMANCE.md) and this tree makes 400,000
(one chunk and one chunk list a file)."""
import os
import sys

from rel import check, finish, peak_rss, tmpdir, CAIRN
import skips  # noqa: E402,F401 (on the path rel.py sets)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from repo import init_location  # noqa: E402

SANITIZER = os.environ.get("CAIRN_SANITIZER", "")
DIRS = 20 if SANITIZER else 200
PER_DIR = 1000
BUDGET_MIB = 32
DEDUP_BUDGET_MIB = 64
base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else os.environ.get("TMPDIR", "/tmp")
os.environ["TMPDIR"] = base  # tmpfs: 3 x the tree's inodes, no fsync cost
T = tmpdir("cairn-pathmem-")


def make_tree(src):
    os.mkdir(src)
    for d in range(DIRS):
        dp = os.path.join(src, "d%03d" % d)
        os.mkdir(dp)
        for i in range(PER_DIR):
            with open(os.path.join(dp, "x%04d" % i), "w") as f:
                f.write("x%d.%d\n" % (d, i))


def same_tree(a, b):
    """Every file of a is in b with the same bytes, and b has nothing more."""
    n = 0
    for d in sorted(os.listdir(a)):
        names_a = sorted(os.listdir(os.path.join(a, d)))
        names_b = sorted(os.listdir(os.path.join(b, d)))
        if names_a != names_b:
            return False, "directory %s differs" % d
        for name in names_a:
            with open(os.path.join(a, d, name), "rb") as fa, \
                    open(os.path.join(b, d, name), "rb") as fb:
                if fa.read() != fb.read():
                    return False, "%s/%s differs" % (d, name)
            n += 1
    if sorted(os.listdir(a)) != sorted(os.listdir(b)):
        return False, "top level differs"
    return True, "%d files identical" % n


def one_store(src, kind, init_opts, budget, figures):
    out = os.path.join(T, "out-" + kind)
    url = "file://" + os.path.join(T, "store-" + kind)
    init_location(url, *init_opts)
    nfiles = DIRS * PER_DIR
    for what, args in (("put", [CAIRN, "put", url, "big", src]),
                       ("list", [CAIRN, "list", url]),
                       ("verify", [CAIRN, "verify", url, "big"]),
                       ("get", [CAIRN, "get", url, "big", out])):
        rc, rss, secs = peak_rss(args)
        figures.append("%s: %s of %d files: %.1f MiB peak RSS, %.1f s"
                       % (kind, what, nfiles, rss, secs))
        check(rc == 0, "%s: cairn %s of %d files exits 0 (got %d)" % (kind, what, nfiles, rc))
        if not SANITIZER:
            check(rss <= budget, "%s: cairn %s of %d files peaks at %.1f MiB (budget %d MiB)"
                  % (kind, what, nfiles, rss, budget))
    ok, why = same_tree(src, out)
    check(ok, "%s: the restored tree is identical: %s" % (kind, why))
    os.system("rm -rf '%s' '%s'" % (out, os.path.join(T, "store-" + kind)))


def main():
    src = os.path.join(T, "src")
    make_tree(src)
    figures = []
    try:
        one_store(src, "per-file", ["--no-encryption", "--no-dedup"], BUDGET_MIB, figures)
        one_store(src, "dedup", ["--no-encryption"], DEDUP_BUDGET_MIB, figures)
    finally:
        os.system("rm -rf '%s'" % T)
    for f in figures:
        print("figures: " + f)
    sys.stdout.flush()
    finish()

main()
