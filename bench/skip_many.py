#!/usr/bin/env python3
"""Many small files, nothing changed: the second backup's time and peak RSS, cairn (unchanged
files skipped; and with --force-read) against restic, alternating, medians.

    bench/skip_many.py [--cairn build/cairn] [--files 50000] [--runs 3]

The parent's files are indexed in memory at 120 bytes each (docs/STORAGE.md "Unchanged files
are not read again"); this shows what that costs on a tree of many files."""
import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, env=None):
    t0 = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    dt = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit("failed: %s\n%s" % (" ".join(cmd), p.stderr[-2000:]))
    return dt, int(p.stderr.strip().splitlines()[-1]) // 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cairn", default=os.path.join(HERE, "..", "build", "cairn"))
    ap.add_argument("--files", type=int, default=50000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=os.environ.get("CAIRN_BENCH_DIR", "/var/tmp/cairn-dedup"))
    a = ap.parse_args()
    cairn = os.path.abspath(a.cairn)
    os.makedirs(a.dir, exist_ok=True)
    work = tempfile.mkdtemp(dir=a.dir)
    src = os.path.join(work, "src")
    rnd = random.Random(1)
    for i in range(a.files):
        d = os.path.join(src, "d%03d" % (i // 500))
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "f%06d.txt" % i), "wb") as f:
            f.write(("%d %s\n" % (i, "x" * rnd.randrange(100, 4000))).encode())
    key, pw = os.path.join(work, "key"), os.path.join(work, "pw")
    subprocess.run([cairn, "key", "generate", key], check=True, stdout=subprocess.DEVNULL)
    with open(pw, "w") as f:
        f.write("bench-password\n")
    tools = ["cairn", "cairn-force"] + (["restic"] if shutil.which("restic") else [])
    res = {t: {"first": [], "second": [], "rss": []} for t in tools}
    for r in range(a.runs):
        for t in tools[r % len(tools):] + tools[:r % len(tools)]:
            repo = os.path.join(work, "repo-" + t)
            shutil.rmtree(repo, ignore_errors=True)
            if t.startswith("cairn"):
                url = "file://" + repo
                subprocess.run([cairn, "init", url, "--key-file", key], check=True,
                               stdout=subprocess.DEVNULL)
                force = ["--force-read"] if t == "cairn-force" else []
                b = [[cairn, "backup", "--from", src, "--to", url, "--name", "b%d" % n,
                      "--key-file", key, "--quiet"] + force for n in (1, 2)]
            else:
                subprocess.run(["restic", "-q", "-r", repo, "--password-file", pw, "init"],
                               check=True, stdout=subprocess.DEVNULL)
                b = [["restic", "-q", "-r", repo, "--password-file", pw, "backup", src]] * 2
            res[t]["first"].append(run(b[0])[0])
            dt, rss = run(b[1])
            res[t]["second"].append(dt)
            res[t]["rss"].append(rss)
            print("# round %d %s: first %.2f s, second %.2f s, %d MiB" %
                  (r, t, res[t]["first"][-1], dt, rss), flush=True)
    print("\n%d files, %d rounds, medians\n" % (a.files, a.runs))
    print("| tool | first backup s | second (unchanged) s | peak RSS second MiB |")
    print("|---|---|---|---|")
    for t in tools:
        m = {k: statistics.median(v) for k, v in res[t].items()}
        print("| %s | %.2f | %.2f | %d |" % (t, m["first"], m["second"], m["rss"]))
    shutil.rmtree(work, ignore_errors=True)


main()
