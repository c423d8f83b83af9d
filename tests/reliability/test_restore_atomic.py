"""All-or-nothing restores through the CLI (the issue's repro): one XOR-flipped byte in one
stored file of a 7-file backup makes `cairn restore --into DIR` and `cairn get` exit 3 with DIR
exactly as before, compared byte for byte (path, type, mode, content) with a snapshot taken
before: DIR absent, empty, and holding content (--force). No temporary is left beside or inside
DIR. The same backup, repaired, restores complete."""
import hashlib
import os
import random
import shutil

from rel import cairn, check, run_parts, temporaries, tmpdir, tree_state
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from repo import init_location  # noqa: E402

T0 = tmpdir("cairn-restore-atomic-")
figures = []


def repro_dedup():
    repro(True)


def repro(dedup=False):
    """A byte of the stored data flipped: of a per-file object (--no-dedup), or of a pack of
    the deduplicating repository (the default); every restore fails whole."""
    seed = int(os.environ.get("CAIRN_SEED", random.randrange(1 << 30)))
    print("seed", seed, "dedup" if dedup else "no-dedup")
    rnd = random.Random(seed)
    T = os.path.join(T0, "dedup" if dedup else "nodedup")
    src = os.path.join(T, "src")
    os.makedirs(os.path.join(src, "sub"))
    for i in range(7):
        with open(os.path.join(src, "sub" if i >= 4 else "", "f%d" % i), "wb") as f:
            f.write(bytes(rnd.randrange(256) for _ in range(1000 + 500 * i)))
    store = os.path.join(T, "store")
    opts = () if dedup else ("--no-encryption", "--no-dedup")  # per-file objects fNNNNNN
    init_location(store, *opts)
    rc, _, err, _ = cairn("put", store, "b", src)
    check(rc == 0, "7-file backup: " + err.strip())
    start, end = 0, None
    if dedup:
        # A byte of one file's chunk (each file is one chunk, its id the SHA-256 of its bytes
        # in a plain repository), found in the pack header: entries of id, offset, length.
        ids = set()
        for dp, _, names in os.walk(src):
            for n in names:
                with open(os.path.join(dp, n), "rb") as f:
                    ids.add(hashlib.sha256(f.read()).digest())
        places = []
        for pk in sorted(os.listdir(os.path.join(store, ".data"))):
            with open(os.path.join(store, ".data", pk), "rb") as f:
                data = f.read()
            hlen = int.from_bytes(data[-12:-8], "little")
            hdr = data[len(data) - 12 - hlen:len(data) - 12]
            for i in range(0, len(hdr), 45):
                if hdr[i:i + 32] in ids:
                    places.append((pk, int.from_bytes(hdr[i + 32:i + 36], "little"),
                                   int.from_bytes(hdr[i + 36:i + 40], "little")))
        check(len(places) == 7, "the 7 files' chunks are in the packs: %d" % len(places))
        pk, start, ln = places[rnd.randrange(len(places))]
        victim, end = os.path.join(store, ".data", pk), start + ln
    else:
        victim = os.path.join(store, "b", "f%06d" % rnd.randrange(7))
    with open(victim, "r+b") as f:
        off = rnd.randrange(start, end if end is not None else os.path.getsize(victim))
        f.seek(off)
        c = f.read(1)[0]
        f.seek(off)
        f.write(bytes([c ^ (1 + rnd.randrange(255))]))
    print("flipped byte %d of %s" % (off, victim))

    full = os.path.join(T, "full")
    os.makedirs(os.path.join(full, "sub"))
    for n, data in (("f0", b"old f0"), ("mine", b"kept"), ("sub/f5", b"old f5")):
        with open(os.path.join(full, n), "wb") as f:
            f.write(data)
    empty = os.path.join(T, "empty")
    os.mkdir(empty, 0o751)
    cases = [("restore", os.path.join(T, "absent"), []), ("restore", empty, []),
             ("restore", full, ["--force"]), ("get", os.path.join(T, "absent2"), []),
             ("get", full, ["--force"])]
    for cmd, target, extra in cases:
        before = tree_state(target)
        args = ([cmd, store, "b", "--into", target] if cmd == "restore"
                else [cmd, store, "b", target]) + extra
        rc, _, err, _ = cairn(*args)
        check(rc == 3, "%s into %s %s: exit 3 (got %d): %s" % (
            cmd, os.path.basename(target), extra, rc, err.strip()[-300:]))
        check(tree_state(target) == before,
              "%s into %s: target unchanged byte for byte" % (cmd, os.path.basename(target)))
        check(not temporaries(T, target), "no temporaries left: %s" % temporaries(T, target))
    # Without --force a non-empty target is refused (exit 6) naming what is in it.
    before = tree_state(full)
    rc, _, err, _ = cairn("restore", store, "b", "--into", full)
    check(rc == 6 and "not empty" in err and "holds" in err,
          "non-empty target without --force: exit 6 naming an entry: %d %s" % (rc, err.strip()))
    check(tree_state(full) == before, "refused target unchanged")
    # Repaired (flip back by restoring the stored file from a fresh backup): restores whole.
    shutil.rmtree(store)
    init_location(store, *opts)
    rc, _, err, _ = cairn("put", store, "b", src)
    out = os.path.join(T, "good")
    rc, _, err, _ = cairn("restore", store, "b", "--into", out)
    check(rc == 0, "good backup restores: " + err.strip())
    check(tree_state(out)[1:] == tree_state(src)[1:], "restored tree equals the source")
    figures.append("corrupt stored %s: restore --into/get exit 3 with the target unchanged "
                   "in %d cases" % ("pack" if dedup else "file", len(cases)))


run_parts(T0, figures, repro, repro_dedup)
