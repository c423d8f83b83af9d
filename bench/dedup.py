#!/usr/bin/env python3
"""Deduplication benchmark: cairn's chunk store vs cairn's full-copy format (--no-dedup) vs
restic and borg, same data, same run, tools alternating per round, medians.

    bench/dedup.py [--cairn build/cairn] [--text-mb 200] [--random-mb 128] [--runs 3]
                   [--tools cairn-dedup,cairn-force,cairn-full,restic,borg]
                   [--series 30 [--prune 20]]

Per tool and round, in a fresh repository (all encrypted: cairn with a key file, restic and
borg with a password): first backup, second backup with nothing changed, third after 1% of
the bytes changed (8 scattered in-place writes into the random files, plus an append to a text
file), restore of the newest; wall time and peak RSS (/usr/bin/time) of each, and the
repository size after each backup. The data set is bench/gen_data.py's. Prints a Markdown
table (medians) for docs/PERFORMANCE.md. cairn-force is cairn-dedup with --force-read (every file
read again, as before unchanged files were skipped); it is not in the default set.

--series N (issue 17's "30 successive backups with 1% churn", "prune of 20 of those 30"):
instead of the above, N backups into one repository, each after a new 1% churn of a copy of
the data set, then the removal of the oldest --prune K of them with their space reclaimed,
timed; see series()."""
import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, env=None, json_out=None):
    """Wall time and peak RSS of cmd; with json_out (a list), its stdout parsed as JSON is
    appended to it."""
    t0 = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, env=env,
                       stdout=subprocess.DEVNULL if json_out is None else subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    dt = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit("failed: %s\n%s" % (" ".join(cmd), p.stderr[-2000:]))
    rss = int(p.stderr.strip().splitlines()[-1]) // 1024
    if json_out is not None:
        json_out.append(json.loads(p.stdout))
    return dt, rss


def du(path):
    total = 0
    for r, _, files in os.walk(path):
        for n in files:
            total += os.path.getsize(os.path.join(r, n))
    return total


class Churn:
    """1% of the bytes: scattered in-place writes, and an append; undone afterwards. With a
    seed (the series), the writes go to files and offsets drawn from it, so each churn of a
    series differs and every tool sees the same sequence."""

    def __init__(self, data, total, seed=None):
        self.data, self.total, self.saved, self.seed = data, total, [], seed

    def apply(self):
        rnd = random.Random(42 if self.seed is None else self.seed)
        rand = sorted(os.path.join(self.data, "random", n)
                      for n in os.listdir(os.path.join(self.data, "random")))
        piece = self.total // 100 // 2 // 8
        for i in range(8):
            p = rand[i % len(rand)] if self.seed is None else rnd.choice(rand)
            size = os.path.getsize(p)
            off = rnd.randrange(0, size - piece)
            with open(p, "r+b") as f:
                f.seek(off)
                self.saved.append((p, off, f.read(piece)))
                f.seek(off)
                f.write(rnd.randbytes(piece))
        texts = sorted(os.path.join(self.data, "text", n)
                       for n in os.listdir(os.path.join(self.data, "text")))
        t = texts[0] if self.seed is None else rnd.choice(texts)
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
                                     "b%02d" % n, "--key-file", key] + force,
                "restore": lambda n: [cairn, "restore", url, "b%02d" % n, "--into", out,
                                      "--key-file", key],
                "prune": lambda k: [cairn, "prune", url, "--keep-last", str(k), "--key-file",
                                    key]}
    if tool == "restic":
        return {"init": ["restic", "-q", "-r", repo, "--password-file", pw, "init"],
                "backup": lambda n: ["restic", "-q", "-r", repo, "--password-file", pw, "backup",
                                     src],
                "restore": lambda n: ["restic", "-q", "-r", repo, "--password-file", pw,
                                      "restore", "latest", "--target", out],
                "prune": lambda k: ["restic", "-q", "-r", repo, "--password-file", pw, "forget",
                                    "--keep-last", str(k), "--prune"]}
    return {"init": ["borg", "init", "-e", "repokey", repo],
            "backup": lambda n: ["borg", "create", "--compression", "zstd,3",
                                 "%s::b%02d" % (repo, n), src],
            "restore": lambda n: ["sh", "-c", "mkdir -p %s && cd %s && borg extract %s::b%02d" %
                                  (out, out, repo, n)],
            "prune": lambda k: ["sh", "-c", "borg prune --keep-last %d %s && borg compact %s" %
                                (k, repo, repo)]}


def series(a, tools, cairn, data, total, work, key, pw):
    """--series N: per tool and round, a fresh repository and a fresh copy of the data set;
    N backups, each after a new 1% churn (seeded by its number, not undone: the churn
    accumulates as in a real data set); the repository's size after each; then the removal
    of the --prune oldest backups with their space reclaimed (cairn prune --keep-last,
    restic forget --keep-last --prune, borg prune --keep-last + compact), timed, and the
    repository's size after it. Each tool's check runs on the pruned repository, untimed
    (cairn and restic with --read-data, borg its default)."""
    keep = a.series - a.prune
    res = {t: [] for t in tools}
    src = os.path.join(work, "src")
    for rnd in range(a.runs):
        order = tools[rnd % len(tools):] + tools[:rnd % len(tools)]
        for tool in order:
            repo = os.path.join(work, "repo-" + tool)
            shutil.rmtree(repo, ignore_errors=True)
            shutil.rmtree(src, ignore_errors=True)
            shutil.copytree(data, src)
            c = tool_cmds(tool, cairn, repo, src, os.path.join(work, "out"), key, pw)
            run(c["init"])
            r = {"times": [], "sizes": [], "rss": []}
            js = [] if tool.startswith("cairn") else None
            for n in range(1, a.series + 1):
                Churn(src, total, seed=1000 + n).apply()
                dt, rss = run(c["backup"](n) + (["--json"] if js is not None else []),
                              json_out=js)
                r["times"].append(dt)
                r["rss"].append(rss)
                r["sizes"].append(du(repo))
            r["objects"] = sum(len(f) for _, _, f in os.walk(repo))
            # cairn's later backups must be incremental: the files the churn did not touch
            # are not read again (their count per backup, from --json)
            skipped = [j.get("unchanged_files", 0) for j in (js or [])[1:]]
            r["prune"], r["prune_rss"] = run(c["prune"](keep))
            r["pruned"] = du(repo)
            r["pruned_objects"] = sum(len(f) for _, _, f in os.walk(repo))
            if tool.startswith("cairn"):
                run([cairn, "check", "file://" + repo, "--read-data", "--key-file", key])
            elif tool == "restic":
                run(["restic", "-q", "-r", repo, "--password-file", pw, "check", "--read-data"])
            else:
                run(["borg", "check", repo])
            res[tool].append(r)
            print("# round %d %s: first %.2f s, later median %.2f s max %.2f s, size %.1f MB "
                  "after 1st, %.1f MB after %d (%d objects); prune %.2f s -> %.1f MB "
                  "(%d objects)%s" %
                  (rnd, tool, r["times"][0], statistics.median(r["times"][1:]),
                   max(r["times"][1:]), r["sizes"][0] / 1e6, r["sizes"][-1] / 1e6, a.series,
                   r["objects"], r["prune"], r["pruned"] / 1e6, r["pruned_objects"],
                   "; later backups skipped %d-%d unchanged files of %d" %
                   (min(skipped), max(skipped), js[-1].get("files", 0)) if skipped else ""),
                  flush=True)
    shutil.rmtree(src, ignore_errors=True)
    med = lambda t, f: statistics.median(f(r) for r in res[t])
    base = "restic" if "restic" in tools else None
    print("\ndata: %.0f MB (%d MB text + %d MiB random), %d backups each after a new 1%% "
          "churn, prune of the %d oldest, %d rounds, medians\n" %
          (total / 1e6, a.text_mb, a.random_mb, a.series, a.prune, a.runs))
    print("| tool | first backup s | later backups s (median) | repo after 1st MB | "
          "repo after %d MB | vs restic | growth per backup MB | prune of %d s | vs restic | "
          "repo after prune MB | peak RSS backup MiB |" % (a.series, a.prune))
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for t in tools:
        size = med(t, lambda r: r["sizes"][-1])
        prune = med(t, lambda r: r["prune"])
        print("| %s | %.2f | %.2f | %.1f | %.1f | %s | %.2f | %.2f | %s | %.1f | %d |" %
              (t, med(t, lambda r: r["times"][0]),
               med(t, lambda r: statistics.median(r["times"][1:])),
               med(t, lambda r: r["sizes"][0]) / 1e6, size / 1e6,
               "%.2fx" % (size / med(base, lambda r: r["sizes"][-1])) if base else "-",
               med(t, lambda r: (r["sizes"][-1] - r["sizes"][0]) / (a.series - 1)) / 1e6,
               prune, "%.2fx" % (prune / med(base, lambda r: r["prune"])) if base else "-",
               med(t, lambda r: r["pruned"]) / 1e6, med(t, lambda r: max(r["rss"]))))
    print("\nper round (size after %d MB / prune s / after prune MB):\n" % a.series)
    print("| tool | " + " | ".join("round %d" % i for i in range(a.runs)) + " |")
    print("|---|" + "---|" * a.runs)
    for t in tools:
        print("| %s | %s |" % (t, " | ".join("%.1f / %.2f / %.1f" % (
            r["sizes"][-1] / 1e6, r["prune"], r["pruned"] / 1e6) for r in res[t])))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cairn", default=os.path.join(HERE, "..", "build", "cairn"))
    ap.add_argument("--text-mb", type=int, default=200)
    ap.add_argument("--random-mb", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tools", help="default: cairn-dedup,cairn-full,restic,borg; with "
                    "--series: cairn-dedup,restic,borg")
    ap.add_argument("--series", type=int, default=0,
                    help="N backups, each after a new 1%% churn, then --prune (0: off)")
    ap.add_argument("--prune", type=int, default=20,
                    help="with --series: remove the oldest K backups, reclaim their space")
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
    if a.tools is None:
        a.tools = "cairn-dedup,restic,borg" if a.series else "cairn-dedup,cairn-full,restic,borg"
    tools = [t for t in a.tools.split(",")
             if t.startswith("cairn") or shutil.which(t)]
    if a.series:
        if a.series < 2 or not 0 < a.prune < a.series:
            sys.exit("--series needs N >= 2 and 0 < --prune < N")
        series(a, tools, cairn, data, total, work, key, pw)
        shutil.rmtree(work, ignore_errors=True)
        return
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
