#!/usr/bin/env python3
"""Summarise bench/run's raw measurements: median seconds, throughput, ratio to cairn, peak RSS.

Input: a TSV with columns phase, tool, run, seconds, maxrss_kb, bytes (input bytes).
Output: one markdown table per phase on stdout.
"""
import collections
import statistics
import sys


def main(path):
    rows = collections.defaultdict(list)
    size = {}
    for line in open(path):
        if not line.strip() or line.startswith("phase"):
            continue
        phase, tool, _run, secs, rss, nbytes = line.rstrip("\n").split("\t")
        rows[(phase, tool)].append((float(secs), int(rss)))
        size[phase] = int(nbytes)
    phases = []
    for phase, _ in rows:
        if phase not in phases:
            phases.append(phase)
    for phase in phases:
        tools = [t for (p, t) in rows if p == phase]
        med = {t: statistics.median(s for s, _ in rows[(phase, t)]) for t in tools}
        # the ratio's base: "cairn" (or "cairnd"), else the first cairn-* flavour by name
        base = next((t for t in sorted(tools) if t.startswith("cairn")), None)
        print(f"\n### {phase} ({size[phase] / 1e6:.0f} MB input, {len(rows[(phase, tools[0])])} runs)\n")
        print("| tool | median s | MB/s | time vs cairn | peak RSS MiB |")
        print("|---|---:|---:|---:|---:|")
        for t in sorted(tools, key=lambda t: med[t]):
            rss = max(r for _, r in rows[(phase, t)]) / 1024
            ratio = f"{med[t] / med[base]:.2f}x" if base else "-"
            mbps = size[phase] / 1e6 / med[t] if med[t] > 0 else float("inf")
            print(f"| {t} | {med[t]:.2f} | {mbps:.0f} | {ratio} | {rss:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1])
