#!/usr/bin/env bash
# cairnd's retention after a clock step: a backup of this schedule written while the clock was
# two days ahead (its MANIFEST dated in the future) is kept and logged, and does not push the
# fresh backup out of keep-last = 1; an older, ordinary backup is removed by creation time.
set -euo pipefail
source "$(dirname "$0")/cairnd_lib.sh"

mkdir -p "$T/src" "$T/state" "$T/backups"
init_location "file://$T/backups"
echo "hello" >"$T/src/a.txt"
cat >"$T/cairnd.conf" <<CONF
[cairnd]
state-dir = $T/state
metrics-listen = 127.0.0.1:0
snapshot-interval = 1h

[schedule files]
source = $T/src
to = file://$T/backups
cron = */15 * * * *
keep-last = 1
CONF
# Two earlier backups of this schedule: 09:15 ordinary (an hour ago), 09:30 written while the
# clock was two days ahead. Test-only raw edit of their unsealed MANIFESTs.
for n in 20260301T091500Z-files 20260301T093000Z-files; do
    "$B/cairn" put "$T/backups" "$n" "$T/src" >/dev/null
done
python3 - "$T/backups" <<'PY'
import datetime, json, sys
now = datetime.datetime.now(datetime.timezone.utc)
for name, off in (("20260301T091500Z-files", -3600), ("20260301T093000Z-files", 2 * 86400)):
    p = "%s/%s/MANIFEST" % (sys.argv[1], name)
    m = json.load(open(p))
    m["created"] = (now + datetime.timedelta(seconds=off)).strftime("%Y-%m-%dT%H:%M:%SZ")
    json.dump(m, open(p, "w"), indent=2)
PY
set_clock 2026-03-01T09:50:00Z
start_run "$T/run.log"
set_clock 2026-03-01T10:00:00Z
wait_for 300 metric_is 1 cairn_backups_succeeded_total files || fail "10:00 run"
wait_for 120 grep -q "pruned 1 old backups" "$T/run.log" || fail "no prune: $(cat "$T/run.log")"
[ "$(backups)" = "20260301T093000Z-files 20260301T100000Z-files " ] || fail "kept: $(backups)"
grep -q "backup 20260301T093000Z-files: created .* in the future" "$T/run.log" ||
    fail "future-dated backup not logged"
grep -q "removed complete backup 20260301T091500Z-files (not kept by any rule)" "$T/run.log" ||
    fail "removal reason not logged"
metric_is 1 cairn_prune_removed_total files || fail "prune counter: $(metric cairn_prune_removed_total files)"
kill -TERM "$RUN_PID"
wait_exit 120 "$RUN_PID" || fail "cairnd did not stop"
RUN_PID=""
echo "PASS: a future-dated backup is kept and logged, the fresh one is not pushed out"
