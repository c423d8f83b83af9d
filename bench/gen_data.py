#!/usr/bin/env python3
"""Build the benchmark data set deterministically (same bytes on every machine).

Layout under OUT: text/log-NN.txt (text-like log lines, TEXT_MB in all, 8 files),
random/blob-NN.bin (incompressible bytes, RANDOM_MB in all, 4 files) and small/ (200 small
config-like files). A stamp file records the parameters so a rerun reuses the data.
"""
import argparse
import os
import random
import sys

LEVELS = ["debug", "info", "info", "info", "warn", "error"]
PATHS = ["/api/v1/items", "/api/v1/users", "/healthz", "/api/v2/search", "/static/app.js",
         "/api/v1/orders", "/metrics", "/api/v1/items/batch"]
MSGS = ["request handled", "cache miss", "slow query", "upstream timeout", "retrying",
        "connection reset by peer", "snapshot saved", "compaction finished"]


def text_file(path, size, rng):
    lines = []
    written = 0
    t = 1_700_000_000 + rng.randrange(1_000_000)
    with open(path, "w") as f:
        while written < size:
            t += rng.randrange(1, 3)
            line = (f"2023-11-{(t // 86400) % 28 + 1:02d}T{(t // 3600) % 24:02d}:"
                    f"{(t // 60) % 60:02d}:{t % 60:02d}.{rng.randrange(1000):03d}Z "
                    f"host=web-{rng.randrange(64):03d} level={rng.choice(LEVELS)} "
                    f"msg=\"{rng.choice(MSGS)}\" path={rng.choice(PATHS)}/{rng.randrange(100000)} "
                    f"status={rng.choice((200, 200, 200, 201, 204, 304, 404, 500))} "
                    f"duration_ms={rng.random() * 250:.3f} bytes={rng.randrange(100, 65536)} "
                    f"trace={rng.getrandbits(64):016x}\n")
            lines.append(line)
            written += len(line)
            if len(lines) >= 4096:
                f.write("".join(lines))
                lines.clear()
        f.write("".join(lines))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--text-mb", type=int, default=670)
    ap.add_argument("--random-mb", type=int, default=512)
    a = ap.parse_args()
    stamp = os.path.join(a.out, ".stamp")
    want = f"v1 text={a.text_mb} random={a.random_mb}\n"
    if os.path.exists(stamp) and open(stamp).read() == want:
        return
    os.makedirs(os.path.join(a.out, "text"), exist_ok=True)
    os.makedirs(os.path.join(a.out, "random"), exist_ok=True)
    os.makedirs(os.path.join(a.out, "small"), exist_ok=True)
    rng = random.Random(20261121)
    for i in range(8):
        text_file(os.path.join(a.out, "text", f"log-{i:02d}.txt"), a.text_mb * 1000 * 1000 // 8, rng)
    mib = 1 << 20
    per = a.random_mb // 4
    for i in range(4):
        with open(os.path.join(a.out, "random", f"blob-{i:02d}.bin"), "wb") as f:
            for _ in range(per):
                f.write(rng.randbytes(mib))
    for i in range(200):
        with open(os.path.join(a.out, "small", f"conf-{i:03d}.ini"), "w") as f:
            f.write("".join(f"key{j} = value-{rng.randrange(10**6)}\n" for j in range(rng.randrange(10, 200))))
    with open(stamp, "w") as f:
        f.write(want)


if __name__ == "__main__":
    sys.exit(main())
