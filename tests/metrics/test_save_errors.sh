#!/usr/bin/env bash
# Scrape a real cairnd over HTTP while its state saves fail (the SQLite state directory is
# removed under it): the save-error counter moves by exactly the failed saves, the backup
# counters keep moving, /healthz reports the degradation and the final save failure is the
# exit status.
set -euo pipefail
source "$(dirname "$0")/../sched/cairnd_lib.sh"
scrape() { curl -fsS "http://127.0.0.1:$MPORT/metrics"; }

mkdir -p "$T/src/sub" "$T/state" "$T/backups"
init_location "file://$T/backups"
echo "hello" >"$T/src/a.txt"
head -c 100000 /dev/urandom >"$T/src/sub/b.bin"
cat >"$T/cairnd.conf" <<CONF
[cairnd]
state-dir = $T/state
metrics-listen = 127.0.0.1:0
log-format = json
snapshot-interval = 1h

[schedule files]
source = $T/src
to = file://$T/backups
cron = */15 * * * *
keep-last = 2
CONF
set_clock 2026-03-01T09:50:00Z
start_run "$T/run.log"
# JSON log lines.
head -n 1 "$T/run.log" | python3 -c 'import json,sys; json.loads(sys.stdin.readline())' || fail "log is not JSON lines"

wait_for 120 metric_is 1 cairn_snapshot_saves_total || fail "no snapshot after catch-up"
metric_is 0 cairn_snapshot_save_errors_total || fail "save errors before the fault"
metric_is 0 cairn_snapshot_creation_errors_total || fail "creation errors"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$MPORT/healthz")" = 200 ] || fail "healthz not 200"

# One good run: counters, bytes, duration histogram, last success time (the fake clock's).
set_clock 2026-03-01T10:00:00Z
wait_for 300 metric_is 1 cairn_backups_succeeded_total files || fail "10:00 run"
wait_for 120 metric_is 2 cairn_snapshot_saves_total || fail "no snapshot after the run"
[ "$(metric cairn_backup_bytes_total files)" -gt 100000 ] || fail "bytes: $(metric cairn_backup_bytes_total files)"
metric_is 1 cairn_backup_duration_seconds_count files || fail "duration histogram"
# grep reads the whole scrape: with -q it exits at the match, and under pipefail curl's
# SIGPIPE on the rest of the page failed the pipeline.
scrape | grep '^cairn_backup_duration_seconds_bucket{schedule="files",le="+Inf"} 1$' >/dev/null ||
    fail "+Inf bucket"
metric_is 1772359200 cairn_backup_last_success_timestamp_seconds files || fail "last success time"

# The state directory disappears: the next saves fail, backups go on.
rm -rf "$T/state"
set_clock 2026-03-01T10:15:00Z
wait_for 300 metric_is 2 cairn_backups_succeeded_total files || fail "10:15 run"
wait_for 120 metric_is 1 cairn_snapshot_save_errors_total || fail "save error not counted: $(metric cairn_snapshot_save_errors_total)"
metric_is 2 cairn_snapshot_saves_total || fail "a failed save was counted as saved"
metric_is 0 cairn_snapshot_creation_errors_total || fail "creation errors moved"
set_clock 2026-03-01T10:30:00Z
wait_for 300 metric_is 3 cairn_backups_succeeded_total files || fail "10:30 run"
wait_for 120 metric_is 2 cairn_snapshot_save_errors_total || fail "second save error not counted"
code=$(curl -s -o "$T/health" -w '%{http_code}' "http://127.0.0.1:$MPORT/healthz")
[ "$code" = 503 ] || fail "healthz $code, want 503"
grep -q "last state snapshot save failed" "$T/health" || fail "healthz body: $(cat "$T/health")"
# keep-last = 2 pruned the oldest backup.
[ "$(ls "$T/backups" | tr '\n' ' ')" = "20260301T101500Z-files 20260301T103000Z-files " ] ||
    fail "prune: $(ls "$T/backups")"
metric_is 1 cairn_prune_removed_total files || fail "prune counter"

# Shutdown: the final save fails too, and says so in the exit status (7 = local I/O).
kill -TERM "$RUN_PID"
rc=0
wait "$RUN_PID" || rc=$?
RUN_PID=""
[ $rc -eq 7 ] || fail "exit status $rc, want 7"
grep -q "final state snapshot not saved" "$T/run.log" || fail "final save failure not reported"
echo "PASS: save errors counted over HTTP"
