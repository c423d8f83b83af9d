#!/usr/bin/env bash
# Hooks and the webhook of a real cairnd run (fake clock, local-path sources, file:// storage):
# before/after with their environment; a failing before hook fails the run with its reason and
# starts no backup, and on-failure runs; a hanging before hook is killed at hook-timeout with
# its whole process group; a failing after hook is counted while the backup stays complete;
# [cairnd] hooks apply to schedules without their own; a webhook receiver that fails twice
# gets the JSON on the third attempt.
set -euo pipefail
source "$(dirname "$0")/cairnd_lib.sh"

RECV_PID=""
extra_cleanup() { [ -n "$RECV_PID" ] && kill "$RECV_PID" 2>/dev/null; true; }

mkdir -p "$T/src" "$T/backups" "$T/out"
head -c 100000 /dev/urandom >"$T/src/a.bin"
echo hello >"$T/src/b.txt"
"$B/cairn" init "file://$T/backups" --no-encryption >/dev/null

python3 "$(dirname "$0")/webhook_receiver.py" "$T/recv.port" "$T/recv.log" 500 503 &
RECV_PID=$!
disown "$RECV_PID" # not waited for by the cleanup's wait; extra_cleanup stops it
wait_for 60 test -s "$T/recv.port" || fail "webhook receiver did not start"
RPORT=$(cat "$T/recv.port")

# Each hook writes its environment (the CAIRN_* part) to $T/out/<schedule>.<hook>.
dump='env | grep ^CAIRN_ | sort >"'$T'/out/$CAIRN_SCHEDULE.$CAIRN_HOOK"'
cat >"$T/cairnd.conf" <<CONF
[cairnd]
state = sqlite:$T/state.db
metrics-listen = 127.0.0.1:0
max-concurrent = 4
on-failure = $dump; echo global on-failure for \$CAIRN_SCHEDULE
hook-timeout = 1m

[schedule ok]
source = $T/src
to = file://$T/backups
every = 1h
keep-last = 5
before = $dump; echo before says hi
after = $dump
webhook = http://127.0.0.1:$RPORT/hook/secret-token
webhook-on = always

[schedule badbefore]
source = $T/src
to = file://$T/backups
every = 1h
keep-last = 5
before = echo cannot reach the database >&2; exit 3
on-failure = $dump

[schedule hang]
source = $T/src
to = file://$T/backups
every = 1h
keep-last = 5
hook-timeout = 2s
before = sleep 600 & echo \$! >"$T/out/hang.child"; wait

[schedule badafter]
source = $T/src
to = file://$T/backups
every = 1h
keep-last = 5
after = exit 1
CONF
set_clock 2026-01-01T10:30:00Z
start_run "$T/run.log"
set_clock 2026-01-01T11:00:00Z
wait_for 120 metric_is 1 cairn_backups_succeeded_total ok || fail "ok: backup did not complete"
wait_for 120 metric_is 1 cairn_backups_succeeded_total badafter || fail "badafter: no backup"
wait_for 120 metric_is 1 cairn_backups_failed_total badbefore || fail "badbefore: not failed"
wait_for 120 metric_is 1 cairn_backups_failed_total hang || fail "hang: not failed"
wait_for 120 metric_is 1 cairn_hook_failures_total badafter || fail "badafter: not counted"
wait_for 120 test -s "$T/out/hang.on-failure" || fail "hang: global on-failure did not run"
wait_for 120 test -s "$T/out/badbefore.on-failure" || fail "badbefore: on-failure did not run"
wait_for 120 grep -qs '"attempt": 3' "$T/recv.log" || fail "webhook: no third attempt: $(cat "$T/recv.log" 2>/dev/null)"
wait_for 60 grep -q "webhook http://127.0.0.1:$RPORT: backup ok success delivered (attempt 3)" "$T/run.log" ||
    fail "webhook delivery not logged"

has() { grep -qxF "$2" "$T/out/$1" || fail "$1: no '$2' in: $(cat "$T/out/$1")"; }
# before and after of the good run.
has ok.before CAIRN_SCHEDULE=ok
has ok.before CAIRN_BACKUP=20260101T110000Z-ok
has ok.before CAIRN_SCHEDULED_AT=2026-01-01T11:00:00Z
has ok.before CAIRN_HOOK=before
has ok.after CAIRN_STATUS=success
has ok.after CAIRN_ERROR=
grep -qE '^CAIRN_BYTES=[1-9][0-9]{5}$' "$T/out/ok.after" || fail "ok.after: bytes: $(cat "$T/out/ok.after")"
grep -qE '^CAIRN_DURATION=[0-9]+$' "$T/out/ok.after" || fail "ok.after: no duration"
[ -f "$T/backups/20260101T110000Z-ok/MANIFEST" ] || fail "ok: backup not complete"
grep -q "hook: before hook of schedule ok: before says hi" "$T/run.log" || fail "hook output not logged"

# A failing before hook: the run fails naming it, no backup, on-failure sees why.
grep -q "schedule badbefore: backup 20260101T110000Z-badbefore failed after .*: backup not started: before hook of schedule badbefore exited with status 3" "$T/run.log" ||
    fail "badbefore: reason not logged: $(grep badbefore "$T/run.log")"
grep -q "before hook of schedule badbefore: cannot reach the database" "$T/run.log" || fail "badbefore: stderr not logged"
[ ! -e "$T/backups/20260101T110000Z-badbefore" ] || fail "badbefore: a backup was started"
has badbefore.on-failure CAIRN_STATUS=failure
has badbefore.on-failure CAIRN_HOOK=on-failure
has badbefore.on-failure "CAIRN_ERROR=backup not started: before hook of schedule badbefore exited with status 3"
has badbefore.on-failure CAIRN_BYTES=0
metric_is 0 cairn_backups_started_total badbefore && fail "badbefore: not counted as started"
metric_is 1 cairn_hook_failures_total badbefore || fail "badbefore: hook failure not counted"
# Its own on-failure replaced the global one.
! grep -q "global on-failure for badbefore" "$T/run.log" || fail "badbefore: the global on-failure ran too"

# A hanging before hook: killed at hook-timeout with its child.
grep -q "backup not started: before hook of schedule hang timed out after 2s (killed)" "$T/run.log" ||
    fail "hang: timeout not logged: $(grep hang "$T/run.log")"
child=$(cat "$T/out/hang.child")
wait_for 30 exited "$child" || fail "hang: the hook's child $child survived the timeout"
[ ! -e "$T/backups/20260101T110000Z-hang" ] || fail "hang: a backup was started"
grep -q "global on-failure for hang" "$T/run.log" || fail "hang: [cairnd] on-failure did not run"

# A failing after hook: counted, logged, and the backup stays complete.
grep -q "after hook of schedule badafter exited with status 1 (the backup stays complete)" "$T/run.log" ||
    fail "badafter: not logged"
[ -f "$T/backups/20260101T110000Z-badafter/MANIFEST" ] || fail "badafter: backup not complete"
metric_is 0 cairn_backups_failed_total badafter || fail "badafter: counted as a failed backup"

# The webhook: two refusals, then the JSON, on the path given.
python3 - "$T/recv.log" <<'PY' || fail "webhook requests are wrong: $(cat "$T/recv.log")"
import json, sys
reqs = [json.loads(l) for l in open(sys.argv[1])]
assert [r["status"] for r in reqs] == [500, 503, 200], reqs
for r in reqs:
    assert r["path"] == "/hook/secret-token" and r["type"] == "application/json", r
b = reqs[2]["body"]
assert b["event"] == "backup" and b["schedule"] == "ok" and b["status"] == "success", b
assert b["backup"] == "20260101T110000Z-ok" and b["bytes"] > 100000 and b["error"] is None, b
assert b["started"].endswith("Z") and b["finished"] >= b["started"], b
PY
! grep -q "secret-token" "$T/run.log" || fail "the webhook URL's path was logged"
metric_is 0 cairn_webhook_failures_total ok || fail "webhook counted as failed"
kill -TERM "$RUN_PID"
wait_exit 120 "$RUN_PID" || fail "still running 120 s after SIGTERM"
RUN_PID=""
[ $EXIT_RC -eq 0 ] || fail "exit $EXIT_RC after SIGTERM: $(tail -n 20 "$T/run.log")"
echo "PASS: before/after/on-failure hooks, timeout, global hooks, webhook retried"
