"""cairn verify reports files in MANIFEST order (issue 19), text and --json: a tree of files
of very different sizes (a few MiB-sized ones among hundreds of tiny ones, so with 4 and 7
workers the checks finish far out of order) is put into a deduplicating and a --no-dedup
repository; every line of `cairn verify` and every element of `cairn verify --json` names
the MANIFEST's files in the MANIFEST's own order. A corrupted file (one byte flipped with XOR)
is reported in its place too, with exit 3."""
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reliability"))
from rel import check, cairn, tmpdir, run_parts  # noqa: E402

T = tmpdir("cairn-verifyorder-")
SRC = os.path.join(T, "src")
NFILES = 400


def make_tree():
    rnd = random.Random(19)
    os.mkdir(SRC)
    for i in range(NFILES):
        d = os.path.join(SRC, "d%02d" % (i % 7))
        os.makedirs(d, exist_ok=True)
        # Every 37th file is 1-3 MiB of random bytes (no dedup, no compression), the rest
        # are 0-20 KiB: a big file's check outlasts those of dozens of small ones after it.
        size = rnd.randint(1 << 20, 3 << 20) if i % 37 == 3 else rnd.randint(0, 20000)
        with open(os.path.join(d, "x%04d" % i), "wb") as f:
            f.write(rnd.randbytes(size))


def manifest_order(repo, name):
    """The file names of a one-document plain MANIFEST, in its order."""
    with open(os.path.join(repo, name, "MANIFEST")) as f:
        doc = json.load(f)
    check("parts" not in doc, "the MANIFEST of %s is one document" % name)
    return [e["name"] for e in doc["files"]]


def text_order(out):
    names = []
    for ln in out.splitlines():
        if ln.startswith("ok    "):
            names.append(ln[6:].rsplit(" (", 1)[0])
        elif ln.startswith("FAIL  "):
            names.append(ln[6:].split(": ", 1)[0])
    return names


def check_order(url, repo, name, what, want_rc=0):
    want = manifest_order(repo, name)
    check(len(want) > NFILES, "%s: the MANIFEST lists %d files" % (what, len(want)))
    for workers in ("4", "7"):
        rc, out, err, _ = cairn("verify", url, name, "--workers", workers, "--quiet")
        got = text_order(out)
        check(rc == want_rc, "%s: verify --workers %s exits %d (%d: %s)"
              % (what, workers, want_rc, rc, err.strip()[-300:]))
        check(got == want, "%s: verify --workers %s lists the %d files in MANIFEST order "
              "(first difference at %s)" % (what, workers, len(want), first_diff(got, want)))
        rc, out, err, _ = cairn("verify", url, name, "--workers", workers, "--quiet", "--json")
        doc = json.loads(out) if out.strip() else {}
        got = [f["name"] for f in doc.get("files", [])]
        check(rc == want_rc, "%s: verify --json --workers %s exits %d (%d)"
              % (what, workers, want_rc, rc))
        check(got == want, "%s: verify --json --workers %s lists the files in MANIFEST order "
              "(first difference at %s)" % (what, workers, first_diff(got, want)))
    return doc


def first_diff(got, want):
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return "%d: %s, MANIFEST %s" % (i, a, b)
    return "none" if len(got) == len(want) else "length %d, MANIFEST %d" % (len(got), len(want))


def part_dedup():
    make_tree()
    repo = os.path.join(T, "dedup")
    check(cairn("init", "file://" + repo, "--no-encryption")[0] == 0, "init dedup")
    rc, _, err, _ = cairn("put", "file://" + repo, "b1", SRC, "--quiet")
    check(rc == 0, "put into the deduplicating repository (%s)" % err.strip())
    check_order("file://" + repo, repo, "b1", "dedup")


def part_plain():
    repo = os.path.join(T, "plain")
    check(cairn("init", "file://" + repo, "--no-encryption", "--no-dedup")[0] == 0,
          "init --no-dedup")
    rc, _, err, _ = cairn("put", "file://" + repo, "b1", SRC, "--quiet")
    check(rc == 0, "put into the --no-dedup repository (%s)" % err.strip())
    check_order("file://" + repo, repo, "b1", "no-dedup")
    # One small file late in the MANIFEST, after a big one, fails: reported in its place.
    names = manifest_order(repo, "b1")
    victim = names[len(names) * 3 // 4]
    path = os.path.join(repo, "b1", victim)
    with open(path, "r+b") as f:
        b = f.read(1)
        if b:
            f.seek(0)
            f.write(bytes([b[0] ^ 0x01]))
    doc = check_order("file://" + repo, repo, "b1", "no-dedup, one file corrupt", want_rc=3)
    bad = [f["name"] for f in doc.get("files", []) if not f["ok"]]
    check(bad == [victim], "the corrupt file alone fails (%s, want %s)" % (bad, victim))


run_parts(T, [], part_dedup, part_plain)
