#!/usr/bin/env bash
# The shipped monitoring is valid: dist/prometheus/cairnd-rules.yml passes `promtool check
# rules` and its unit tests (cairnd-rules-test.yml: each alert fires when it should and not
# before); dist/grafana/cairnd-dashboard.json is JSON with unique panel ids, and each of its
# PromQL expressions (variables substituted) passes promtool as a recording rule. Needs
# Debian's prometheus package (promtool).
set -euo pipefail
S=${CAIRN_SOURCE_DIR:?}
source "$S/tests/harness/skips.sh"
command -v promtool >/dev/null || missing "promtool (Debian package prometheus)"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

promtool check rules "$S/dist/prometheus/cairnd-rules.yml"
promtool test rules "$S/dist/prometheus/cairnd-rules-test.yml"

python3 - "$S" "$T/dashboard-rules.yml" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[1] + "/tests/metrics")
import monitoring_names
d = json.load(open(sys.argv[1] + "/dist/grafana/cairnd-dashboard.json"))
ids = [p["id"] for p in d["panels"]]
assert len(ids) == len(set(ids)), "duplicate panel ids"
assert d["uid"] == "cairnd" and d["templating"]["list"][0]["type"] == "datasource"
for p in d["panels"]:
    if p["type"] != "row":
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
with open(sys.argv[2], "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, e in enumerate(monitoring_names.exprs(sys.argv[1])):
        e = e.replace("$__rate_interval", "5m").replace("$job", ".*").replace("$instance", ".*")
        f.write("      - record: dashboard_expr_%d\n        expr: %s\n" % (i, json.dumps(e)))
PY
promtool check rules "$T/dashboard-rules.yml"
echo "PASS: alert rules check and unit tests, dashboard expressions"
