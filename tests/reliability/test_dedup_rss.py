"""Peak RSS of a deduplicating backup (docs/PERFORMANCE.md "Memory of a deduplicating
backup"): `cairn backup` of 4 x 32 MiB of random bytes and 4 x 8 MB of text into a fresh
encrypted repository with a chunk store stays within the 32 MiB budget (the chunk index of an
empty repository is nothing; issue 17's 64 MiB is for 1,000,000 chunks). Four file workers
each hold a chunk of up to the chunker's max (512 KiB / 1 MiB / 8 MiB), so chunk buffers
that doubled and stayed, a second full-size copy of every chunk for its encryption, and
freed buffers left resident in malloc's arenas peaked at 38-46 MiB here. Peak RSS is the
kernel's (wait4 ru_maxrss), not a timing; under a sanitizer (its shadow memory is not ours to
bound) only the behaviour is checked. The restore is byte-exact."""
import os
import random

from rel import CAIRN, cairn, check, finish, new_key_file, peak_rss, tmpdir, tree_sums

SANITIZER = os.environ.get("CAIRN_SANITIZER", "")
BUDGET_MIB = 32
T = tmpdir("cairn-dedup-rss-")
os.environ["XDG_CACHE_HOME"] = os.path.join(T, "cache")


def make_data(d):
    rnd = random.Random(17)
    os.makedirs(os.path.join(d, "random"))
    os.makedirs(os.path.join(d, "text"))
    for i in range(4):
        with open(os.path.join(d, "random", "blob-%d.bin" % i), "wb") as f:
            f.write(rnd.randbytes(32 << 20))
    words = ["%s%d" % (w, n) for w in ("alpha", "beta", "gamma", "delta", "epsilon", "zeta")
             for n in range(300)]
    for i in range(4):  # about 8 MB each, no long repeats (chunks of 0.5-3 MiB, like logs)
        with open(os.path.join(d, "text", "log-%d.txt" % i), "w") as f:
            for n in range(8_000_000 // 100):
                f.write("%d %s\n" % (n, " ".join(rnd.choices(words, k=12))))


def main():
    src, out = os.path.join(T, "src"), os.path.join(T, "out")
    url = "file://" + os.path.join(T, "repo")
    key = new_key_file(os.path.join(T, "key"))
    make_data(src)
    rc, _, err, _ = cairn("init", url, "--key-file", key)
    check(rc == 0, "init of a deduplicating repository: %s" % err.strip()[-300:])
    rc, rss, secs = peak_rss([CAIRN, "backup", "--from", src, "--to", url, "--name", "b1",
                          "--key-file", key])
    print("figures: backup of 160 MB (128 MiB random, 32 MB text): %.1f MiB peak RSS, %.1f s"
          % (rss, secs))
    check(rc == 0, "backup exits 0 (got %d)" % rc)
    if not SANITIZER:
        check(rss <= BUDGET_MIB, "the deduplicating backup peaks at %.1f MiB (budget %d MiB)"
              % (rss, BUDGET_MIB))
    rc, _, err, _ = cairn("restore", url, "b1", "--into", out, "--key-file", key)
    check(rc == 0, "restore: %s" % err.strip()[-300:])
    check(rc == 0 and tree_sums(src) == tree_sums(out), "the restored tree is byte-exact")
    finish()


try:
    main()
finally:
    os.system("rm -rf '%s'" % T)
