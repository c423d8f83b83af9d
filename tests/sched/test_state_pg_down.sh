#!/usr/bin/env bash
# cairnd run started while its PostgreSQL state store is down waits for it instead of exiting
# (docs/RELIABILITY.md): it logs each failed attempt, /healthz says 503 naming the error,
# cairn_state_store_up is 0; SIGTERM then stops it with exit 0. Once PostgreSQL is up the
# same process connects, runs its schedule and is healthy.
source "$(dirname "$0")/cairnd_lib.sh"
source "$(dirname "$0")/pg_lib.sh"
extra_cleanup() { pg_stop; }
pg_start

mkdir -p "$T/data/mydb/autogen/1" "$T/backups"
init_location "file://$T/backups"
head -c 50000 /dev/urandom >"$T/data/mydb/autogen/1/000000001-000000001.tsm"
start_serve "$T/data"
cat >"$T/cairnd.conf" <<CONF
[cairnd]
state = $PG_URL
metrics-listen = 127.0.0.1:0
catch-up-rate = 50/s
snapshot-interval = 1s

[schedule a]
source = $ADDR
to = file://$T/backups
every = 1h
keep-last = 10
CONF
set_clock 2026-01-01T10:30:00Z
pg_down
health() { curl -s -m 30 -o "$T/health.body" -w '%{http_code}' "http://127.0.0.1:$MPORT/healthz"; }
tries() { [ "$(grep -c "state store unreachable" "$1")" -ge "$2" ]; }

# 1. Down at start: waits (two attempts at least), says so, SIGTERM stops it cleanly.
start_run "$T/run1.log"
wait_for 120 tries "$T/run1.log" 2 || fail "no retries: $(cat "$T/run1.log")"
! exited "$RUN_PID" || fail "cairnd exited while waiting: $(cat "$T/run1.log")"
[ "$(health)" = 503 ] || fail "/healthz while waiting: $(health)"
grep -q "waiting for the state store: postgresql connect" "$T/health.body" ||
    fail "/healthz body: $(cat "$T/health.body")"
metric_is 0 cairn_state_store_up || fail "cairn_state_store_up: $(metric cairn_state_store_up)"
[ "$(metric cairn_state_store_connect_failures_total)" -ge 2 ] || fail "failures not counted"
kill -TERM "$RUN_PID"
wait_exit 120 "$RUN_PID" || fail "SIGTERM while waiting did not stop cairnd"
RUN_PID=""
[ "$EXIT_RC" = 0 ] || fail "exit $EXIT_RC after SIGTERM while waiting: $(tail -3 "$T/run1.log")"
grep -q "received SIGTERM while waiting for the state store" "$T/run1.log" || fail "stop not logged"
echo "PASS: waits for PostgreSQL at start, stops on SIGTERM"

# 2. PostgreSQL comes up while cairnd waits: the same process connects and backs up.
start_run "$T/run2.log"
wait_for 120 tries "$T/run2.log" 1 || fail "no attempt logged"
pg_up
wait_for 300 grep -q "scheduler running" "$T/run2.log" || fail "never connected: $(tail "$T/run2.log")"
wait_for 120 catchup_done "$T/run2.log" || fail "catch-up"
metric_is 1 cairn_state_store_up || fail "cairn_state_store_up after connecting"
wait_for 120 bash -c '[ "$(curl -s -m 30 -o /dev/null -w "%{http_code}" "http://127.0.0.1:'"$MPORT"'/healthz")" = 200 ]' ||
    fail "not healthy after connecting: $(health) $(cat "$T/health.body")"
set_clock 2026-01-01T11:00:00Z
wait_for 300 metric_is 1 cairn_backups_succeeded_total a || fail "no backup after connecting"
[ -f "$T/backups/20260101T110000Z-a/MANIFEST" ] || fail "backup incomplete"
echo "PASS: connects once PostgreSQL is up and runs its schedule"
