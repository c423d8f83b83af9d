"""Prune when a live chunk is in two packs that both get repacked (issue 17, crash safety):
a killed prune (after its repacked packs and their index landed, before the old index went)
or a killed backup leaves such copies, and the rerun must finish the job. Found by
test_dedup_crash.py with 100 kills: the rerun copied the chunk once, then read the second
copy through the index lookup, which named its own open pack (not landed yet): "pack not
found", and every later prune failed the same way. Here the state is made by hand, from
docs/FORMAT.md: a plain repository's pack is copied under a second name and an index object
naming the copy is added; most of both packs is then garbage. Also: the temporaries that
killed writers leave in the file driver's .data and .index (a pack cut short, up to 32 MiB)
are swept by prune; nothing else ever removes them."""
import hashlib
import os
import random
import shutil
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reliability"))
from rel import check, cairn, tmpdir, finish, tree_bytes  # noqa: E402

T = tmpdir("cairn-gccopies-")


def main():
    root = os.path.join(T, "repo")
    url = "file://" + root
    src = os.path.join(T, "src")
    os.makedirs(src)
    rnd = random.Random(5)
    with open(os.path.join(src, "keep.bin"), "wb") as f:
        f.write(rnd.randbytes(1 << 20))
    with open(os.path.join(src, "gone.bin"), "wb") as f:
        f.write(rnd.randbytes(3 << 20))
    rc, _, err, _ = cairn("init", url, "--no-encryption", "--chunker", "16K,64K,256K")
    check(rc == 0, "init %s" % err)
    rc, _, err, _ = cairn("backup", "--from", src, "--to", url, "--name", "b1")
    check(rc == 0, "first backup %s" % err)
    packs = os.listdir(os.path.join(root, ".data"))
    check(len(packs) == 1, "one pack: %s" % packs)
    # the same pack under a second name, and an index object naming it (FORMAT.md)
    with open(os.path.join(root, ".data", packs[0]), "rb") as f:
        pack = f.read()
    check(pack[-8:] == b"CRNPACK1", "a pack ends with its magic")
    hlen = struct.unpack("<I", pack[-12:-8])[0]
    hdr = pack[-12 - hlen:-12]
    copy = rnd.randbytes(32)
    with open(os.path.join(root, ".data", copy.hex()), "wb") as f:
        f.write(pack)
    body = b"CRNIDX01" + struct.pack("<I", 1) + copy + struct.pack("<I", hlen // 45) + hdr
    with open(os.path.join(root, ".index", rnd.randbytes(32).hex()), "wb") as f:
        f.write(body + hashlib.sha256(body).digest())
    rc, out, err, _ = cairn("check", url, "--read-data")
    check(rc == 0 and "2 pack(s)" in out, "check reads both copies: %s %s" % (out, err))
    # what killed writers leave on file storage: temporaries of a pack and an index object
    debris = [os.path.join(root, d, ".%s.tmp.Ab12Cd" % rnd.randbytes(32).hex())
              for d in (".data", ".index")]
    for p in debris:
        with open(p, "wb") as f:
            f.write(pack[:100000])
    # 3/4 of both packs become garbage, the rest stays live: both are repacked
    os.unlink(os.path.join(src, "gone.bin"))
    rc, _, err, _ = cairn("backup", "--from", src, "--to", url, "--name", "b2")
    check(rc == 0, "second backup %s" % err)
    rc, out, err, _ = cairn("prune", url, "--keep-last", "1")
    check(rc == 0 and "2 repacked" in out, "prune repacks both copies: %s %s" % (out, err))
    rc, out, err, _ = cairn("check", url, "--read-data")
    check(rc == 0, "check --read-data after the prune: %s %s" % (out, err))
    left = os.listdir(os.path.join(root, ".data")) + os.listdir(os.path.join(root, ".index"))
    check(not any(os.path.exists(p) for p in debris), "prune swept the temporaries %s" % left)
    dst = os.path.join(T, "out")
    rc, _, err, _ = cairn("restore", url, "b2", "--into", dst)
    check(rc == 0 and tree_bytes(dst) == tree_bytes(src), "b2 restores byte for byte %s" % err)
    rc, out, err, _ = cairn("prune", url, "--keep-last", "1")
    check(rc == 0 and "0 deleted, 0 repacked" in out, "a second prune has nothing to do: %s %s" %
          (out, err))
    shutil.rmtree(T, ignore_errors=True)
    finish()


main()
