"""The metric names the shipped monitoring (dist/prometheus/cairnd-rules.yml and
dist/grafana/cairnd-dashboard.json) uses, and every PromQL expression in them. Used by
test_alert_rules.sh (expressions) and test_prometheus_scrape.sh (names against a live
cairnd). Usage: monitoring_names.py SOURCE_DIR names|exprs"""
import json
import os
import re
import sys

FUNCS = {"time", "sum", "by", "increase", "rate", "histogram_quantile", "max_over_time", "changes",
         "on", "group_left", "group_right", "unless", "and", "or", "le", "offset", "bool",
         "ignoring", "without", "count", "max", "min", "avg", "absent", "label_values"}


def exprs(src):
    out = []
    rules = open(os.path.join(src, "dist/prometheus/cairnd-rules.yml")).read()
    # expr: one line, or a | block indented below it (no YAML library needed).
    lines = rules.splitlines()
    for i, l in enumerate(lines):
        m = re.match(r"^(\s*)expr:\s*(.*)$", l)
        if not m:
            continue
        if m.group(2) not in ("|", ">"):
            out.append(m.group(2))
            continue
        ind, block = None, []
        for l2 in lines[i + 1:]:
            if not l2.strip():
                continue
            cur = len(l2) - len(l2.lstrip())
            if cur <= len(m.group(1)):
                break
            block.append(l2.strip())
        out.append(" ".join(block))
    dash = json.load(open(os.path.join(src, "dist/grafana/cairnd-dashboard.json")))
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append(t["expr"])
    return out


def names(src):
    found = set()
    for e in exprs(src):
        e = re.sub(r'"[^"]*"', '""', e)       # label values
        e = re.sub(r"\{[^}]*\}", "", e)        # matchers
        e = re.sub(r"\[[^]]*\]", "", e)        # ranges
        e = re.sub(r"\((\s*[a-z_]+\s*(,\s*[a-z_]+\s*)*)\)", lambda m: "()" if re.search(
            r"\b(by|on|without|ignoring|group_left|group_right)\s*$",
            e[:m.start()]) else m.group(0), e)  # label lists after by/on
        for n in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
            if n not in FUNCS:
                found.add(n)
    return sorted(found)


if __name__ == "__main__":
    src, what = sys.argv[1], sys.argv[2]
    for x in (names(src) if what == "names" else exprs(src)):
        print(x)
