#!/usr/bin/env python3
"""Deduplication benchmark: cairn's chunk store vs cairn's full-copy format (--no-dedup) vs
restic and borg, same data, same run, tools alternating per round, medians.

    bench/dedup.py [--cairn build/cairn] [--text-mb 200] [--random-mb 128] [--runs 3]
                   [--tools cairn-dedup,cairn-force,cairn-full,restic,borg]

Per tool and round, in a fresh repository (all encrypted: cairn with a key file, restic and
borg with a password): first backup, second backup with nothing changed, third after 1% of
the bytes changed (8 scattered in-place writes into the random files, plus an append to a text
file), restore of the newest; wall time and peak RSS (/usr/bin/time) of each, and the
repository size after each backup. The data set is bench/gen_data.py's. Prints a Markdown
table (medians) for docs/PERFORMANCE.md. cairn-force is cairn-dedup with --force-read (every file
read again, as before unchanged files were skipped); it is not in the default set."""
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
    rss = int(p.stderr.strip().splitlines()[-1]) // 1024
    return dt, rss


def du(path):
    total = 0
    for r, _, files in os.walk(path):
        for n in files:
            total += os.path.getsize(os.path.join(r, n))
    return total


class Churn:
    """1% of the bytes: scattered in-place writes, and an append; undone afterwards."""

    def __init__(self, data, total):
        self.data, self.total, self.saved = data, total, []

    def apply(self):
        rnd = random.Random(42)
        rand = sorted(os.path.join(self.data, "random", n)
                      for n in os.listdir(os.path.join(self.data, "random")))
        piece = self.total // 100 // 2 // 8
        for i in range(8):
            p = rand[i % len(rand)]
            size = os.path.getsize(p)
            off = rnd.randrange(0, size - piece)
            with open(p, "r+b") as f:
                f.seek(off)
                self.saved.append((p, off, f.read(piece)))
                f.seek(off)
                f.write(rnd.randbytes(piece))
        t = sorted(os.path.join(self.data, "text", n)
                   for n in os.listdir(os.path.join(self.data, "text")))[0]
        self.append = (t, os.path.getsize(t))
        with open(t, "ab") as f:
            line = b"2023-11-30T12:00:00.000Z host=web-001 level=info msg=\"appended\"\n"
            f.write(line * (self.total // 100 // 2 // len(line)))

    def undo(self):
        for p, off, b in self.saved:
            with open(p, "r+b") as f:
                f.seek(off)
                f.write(b)
        self.saved = []
        os.truncate(*self.append)


def tool_cmds(tool, cairn, repo, src, out, key, pw):
    if tool.startswith("cairn"):
        url = "file://" + repo
        init = [cairn, "init", url, "--key-file", key] + (["--no-dedup"] if tool ==
                                                         "cairn-full" else [])
        force = ["--force-read"] if tool == "cairn-force" else []
        return {"init": init,
                "backup": lambda n: [cairn, "backup", "--from", src, "--to", url, "--name",
                                     "b%d" % n, "--key-file", key] + force,
                "restore": lambda n: [cairn, "restore", url, "b%d" % n, "--into", out,
                                      "--key-file", key]}
    if tool == "restic":
        return {"init": ["restic", "-q", "-r", repo, "--password-file", pw, "init"],
                "backup": lambda n: ["restic", "-q", "-r", repo, "--password-file", pw, "backup",
                                     src],
                "restore": lambda n: ["restic", "-q", "-r", repo, "--password-file", pw,
                                      "restore", "latest", "--target", out]}
    return {"init": ["borg", "init", "-e", "repokey", repo],
            "backup": lambda n: ["borg", "create", "--compression", "zstd,3",
                                 "%s::b%d" % (repo, n), src],
            "restore": lambda n: ["sh", "-c", "mkdir -p %s && cd %s && borg extract %s::b%d" %
                                  (out, out, repo, n)]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cairn", default=os.path.join(HERE, "..", "build", "cairn"))
    ap.add_argument("--text-mb", type=int, default=200)
    ap.add_argument("--random-mb", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tools", default="cairn-dedup,cairn-full,restic,borg")
    ap.add_argument("--dir", default=os.environ.get("CAIRN_BENCH_DIR", "/var/tmp/cairn-dedup"))
    a = ap.parse_args()
    cairn = os.path.abspath(a.cairn)
    data = os.path.join(a.dir, "data-%d-%d" % (a.text_mb, a.random_mb))
    subprocess.run([sys.executable, os.path.join(HERE, "gen_data.py"), "--out", data,
                    "--text-mb", str(a.text_mb), "--random-mb", str(a.random_mb)], check=True)
    total = du(data)
    work = tempfile.mkdtemp(dir=a.dir)
    key, pw = os.path.join(work, "key"), os.path.join(work, "pw")
    subprocess.run([cairn, "key", "generate", key], check=True, stdout=subprocess.DEVNULL)
    with open(pw, "w") as f:
        f.write("bench-password\n")
    os.environ["BORG_PASSPHRASE"] = "bench-password"
    os.environ["BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK"] = "yes"
    tools = [t for t in a.tools.split(",")
             if t.startswith("cairn") or shutil.which(t)]
    res = {t: {} for t in tools}
    for rnd in range(a.runs):
        order = tools[rnd % len(tools):] + tools[:rnd % len(tools)]
        for tool in order:
            repo = os.path.join(work, "repo-" + tool)
            out = os.path.join(work, "out-" + tool)
            shutil.rmtree(repo, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
            c = tool_cmds(tool, cairn, repo, data, out, key, pw)
            run(c["init"])
            r = res[tool]
            for n, phase in ((1, "first"), (2, "second"), (3, "churn")):
                ch = Churn(data, total)
                if phase == "churn":
                    ch.apply()
                dt, rss = run(c["backup"](n))
                if phase == "churn":
                    ch.undo()
                r.setdefault(phase, []).append(dt)
                r.setdefault(phase + "_rss", []).append(rss)
                r.setdefault(phase + "_size", []).append(du(repo))
            dt, rss = run(c["restore"](3))
            r.setdefault("restore", []).append(dt)
            r.setdefault("restore_rss", []).append(rss)
            print("# round %d %s: %s" % (rnd, tool, {k: v[-1] for k, v in r.items()}),
                  flush=True)
            shutil.rmtree(out, ignore_errors=True)
    med = {t: {k: statistics.median(v) for k, v in res[t].items()} for t in tools}
    print("\ndata: %.0f MB (%d MB text + %d MiB random), %d rounds, medians\n" %
          (total / 1e6, a.text_mb, a.random_mb, a.runs))
    print("| tool | first backup s | second (unchanged) s | after 1% churn s | restore s | "
          "repo after 1st MB | growth 2nd MB | growth 3rd MB | peak RSS backup MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for t in tools:
        m = med[t]
        print("| %s | %.2f | %.2f | %.2f | %.2f | %.1f | %.2f | %.2f | %d |" %
              (t, m["first"], m["second"], m["churn"], m["restore"], m["first_size"] / 1e6,
               (m["second_size"] - m["first_size"]) / 1e6,
               (m["churn_size"] - m["second_size"]) / 1e6,
               max(m["first_rss"], m["second_rss"], m["churn_rss"])))
    shutil.rmtree(work, ignore_errors=True)


main()
