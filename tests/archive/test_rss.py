#!/usr/bin/env python3
"""Peak RSS of `cairn snapshot save` and `verify` for a 2 GiB state streamed from a pipe.

The state is generated here (compressible text, so the test stays fast) and written into the
save process's stdin with --size, so nothing is spooled. Each cairn process is a direct child;
os.wait4 gives exactly its own ru_maxrss. The limit is 32 MiB (bounded-memory requirement);
the numbers are printed for docs/PERFORMANCE.md. Set CAIRN_RSS_GIB to change the size and
CAIRN_RSS_EXTRA to pass save options (e.g. "--zstd").
"""
import os
import subprocess
import sys
import tempfile
import time

CAIRN = os.path.join(os.environ.get("CAIRN_BIN", "build"), "cairn")
LIMIT_KIB = 32 * 1024
SIZE = int(float(os.environ.get("CAIRN_RSS_GIB", "2")) * (1 << 30))
EXTRA = os.environ.get("CAIRN_RSS_EXTRA", "").split()


def block():
    # 1 MiB of key/value lines, repeated to SIZE. The running length keeps this linear (summing
    # every line again per line cost ~17 CPU-seconds).
    lines = []
    i = n = 0
    while n < (1 << 20):
        line = f"key/{i:08d} value={i * 2654435761 % 1000003:07d} tx={i % 977}\n"
        lines.append(line)
        n += len(line)
        i += 1
    return "".join(lines).encode()[: 1 << 20]


def measure(args, feed=None):
    t0 = time.monotonic()
    p = subprocess.Popen([CAIRN] + args, stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if feed:
        view = memoryview(feed)  # no copy of the block per write
        left = SIZE
        while left > 0:
            n = min(left, len(view))
            p.stdin.write(view[:n])
            left -= n
        p.stdin.close()
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, ru.ru_maxrss, time.monotonic() - t0, out, err


def main():
    tmp = tempfile.mkdtemp(prefix="cairn-rss-")
    out = os.path.join(tmp, "big.snap")
    fails = 0
    feed = block()
    rc, rss, secs, o, e = measure(["snapshot", "save", "-", out, "--index", "7", "--term", "2",
                                   "--size", str(SIZE)] + EXTRA, feed)
    size = os.path.getsize(out) if rc == 0 else 0
    print(f"save:   rc={rc} peak RSS {rss / 1024:.1f} MiB, {SIZE / secs / 1e6:.0f} MB/s "
          f"({secs:.1f} s, archive {size / 1e6:.1f} MB)")
    if rc != 0 or rss >= LIMIT_KIB:
        print("FAIL: save", e.decode(errors="replace"))
        fails += 1
    rc, rss, secs, o, e = measure(["snapshot", "verify", out])
    print(f"verify: rc={rc} peak RSS {rss / 1024:.1f} MiB, {SIZE / secs / 1e6:.0f} MB/s "
          f"({secs:.1f} s) {o.decode().strip()}")
    if rc != 0 or rss >= LIMIT_KIB or str(SIZE) not in o.decode():
        print("FAIL: verify", e.decode(errors="replace"))
        fails += 1
    subprocess.run(["rm", "-rf", tmp])
    print("rss: ok" if fails == 0 else f"rss: {fails} failures")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
