#!/usr/bin/env python3
"""Peak RSS of a cairn backup with N chunks already in the repository (docs/PERFORMANCE.md).

    bench/index_rss.py [--cairn build/cairn] [--chunks 1000000] [--data-mb 256]

Makes a plain deduplicating repository, writes one index object naming N random chunk ids
(in a pack that does not exist: only the index's memory matters here; docs/FORMAT.md "Index
objects"), then backs up DATA_MB of random bytes into it under /usr/bin/time and prints the
peak RSS, with the same backup into an empty repository for comparison."""
import argparse
import hashlib
import os
import shutil
import struct
import subprocess
import tempfile

ap = argparse.ArgumentParser()
ap.add_argument("--cairn", default=os.path.join(os.path.dirname(__file__), "..", "build", "cairn"))
ap.add_argument("--chunks", type=int, default=1000000)
ap.add_argument("--data-mb", type=int, default=256)
a = ap.parse_args()
t = tempfile.mkdtemp(prefix="cairn-rss-")
src = os.path.join(t, "src")
os.makedirs(src)
with open(os.path.join(src, "data.bin"), "wb") as f:
    for _ in range(a.data_mb):
        f.write(os.urandom(1 << 20))


def backup(repo, n):
    subprocess.run([a.cairn, "init", "file://" + repo, "--no-encryption"], check=True,
                   stdout=subprocess.DEVNULL)
    if n:
        body = bytearray(b"CRNIDX01" + struct.pack("<I", 1) + os.urandom(32) +
                         struct.pack("<I", n))
        ids = os.urandom(32 * n)
        for i in range(n):
            body += ids[32 * i:32 * i + 32] + struct.pack("<IIIB", 100 * i, 100, 100, 0)
        body += hashlib.sha256(body).digest()
        os.makedirs(os.path.join(repo, ".index"))
        with open(os.path.join(repo, ".index", os.urandom(32).hex()), "wb") as f:
            f.write(body)
    p = subprocess.run(["/usr/bin/time", "-f", "%M %e", a.cairn, "backup", "--from", src, "--to",
                        "file://" + repo, "--name", "b1"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True, check=True)
    kb, sec = p.stderr.strip().splitlines()[-1].split()
    return int(kb) / 1024, float(sec)


for n in (0, a.chunks):
    rss, sec = backup(os.path.join(t, "repo%d" % n), n)
    print("%d chunks in the repository: backup of %d MiB: peak RSS %.1f MiB, %.1f s" %
          (n, a.data_mb, rss, sec))
shutil.rmtree(t)
