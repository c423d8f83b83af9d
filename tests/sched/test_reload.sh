#!/usr/bin/env bash
# SIGHUP reloads cairnd run's config (issue 18): an invalid new config is logged and the
# running one kept; a valid one takes effect (a schedule removed stops, one added runs, one
# changed follows its new timing) while a backup running at the time finishes, not cancelled.
source "$(dirname "$0")/cairnd_lib.sh"
mkdir -p "$T/backups"
"$B/cairn" init "file://$T/backups" --no-encryption >/dev/null
conf() { # conf SCHEDULE-SECTIONS...
    {
        cat <<CONF
[cairnd]
state-dir = $T/state
metrics-listen = 127.0.0.1:0
snapshot-interval = 1s
CONF
        printf '%s\n' "$@"
    } >"$T/cairnd.conf.tmp" && mv "$T/cairnd.conf.tmp" "$T/cairnd.conf"
}
sched() { # sched NAME EVERY [SOURCE]
    printf '[schedule %s]\nsource = %s\nto = file://%s/backups\nevery = %s\nkeep-last = 100\n' \
        "$1" "${3:-exec:echo $1}" "$T" "$2"
}
# slow: the backup holds until the file $T/go exists (then it is a real, complete backup).
conf "$(sched slow 1h "exec:while [ ! -e $T/go ]; do sleep 0.05; done; echo slow")" "$(sched gone 1h)"
set_clock 2026-01-01T10:59:59Z
start_run "$T/run.log"
wait_for 60 catchup_done "$T/run.log" || fail "boot did not finish"
set_clock 2026-01-01T11:00:00Z
wait_for 60 grep -q "backup 20260101T110000Z-slow started" "$T/run.log" || fail "slow backup did not start"
wait_for 60 metric_is 1 cairn_backups_succeeded_total gone || fail "gone did not run at 11:00"

# 1. An invalid config: logged, the running one kept.
conf "$(sched slow 1h)" "[schedule broken]" "source = /x" "to = relative/b" "every = 1m" "keep-last = 1"
kill -HUP "$RUN_PID"
wait_for 30 grep -q "reload failed: .*to: storage URL 'relative/b' has no scheme.*keeping the running configuration" "$T/run.log" ||
    fail "invalid reload not reported: $(tail -n 5 "$T/run.log")"
kill -0 "$RUN_PID" || fail "cairnd died on an invalid reload"
grep -q "backup 20260101T110000Z-slow aborted" "$T/run.log" && fail "the running backup was cancelled"

# 2. A valid config: 'gone' removed, 'added' new (every minute), 'slow' changed to every 30m.
conf "$(sched slow 30m)" "$(sched added 1m)"
kill -HUP "$RUN_PID"
hups() { [ "$(grep -c "received SIGHUP" "$T/run.log")" -ge 2 ]; }
wait_for 30 hups || fail "second SIGHUP not received"
# The reload waits for the running backup, which is held until $T/go exists.
grep -q "configuration reloaded" "$T/run.log" && fail "reloaded before the running backup finished"
touch "$T/go"
wait_for 60 grep -q "backup 20260101T110000Z-slow complete" "$T/run.log" || fail "running backup did not finish"
wait_for 60 grep -q "configuration reloaded: 2 schedules" "$T/run.log" || fail "valid config not reloaded"
grep -q "20260101T110000Z-slow aborted" "$T/run.log" && fail "the running backup was cancelled by the reload"
set_clock 2026-01-01T11:30:00Z
wait_for 60 metric_is 1 cairn_backups_succeeded_total added || fail "added schedule did not run"
wait_for 60 metric_is 2 cairn_backups_succeeded_total slow || fail "changed schedule did not run at 11:30"
[ -f "$T/backups/20260101T113000Z-slow/MANIFEST" ] || fail "no 11:30 backup of the changed schedule"
ls "$T/backups" | grep -q -- "-gone$" && [ "$(ls "$T/backups" | grep -c -- '-gone$')" -eq 1 ] ||
    fail "removed schedule ran again: $(ls "$T/backups")"
# One family per metric name on /metrics, not one per scheduler term.
n=$(curl -fsS "http://127.0.0.1:$MPORT/metrics" | grep -c '^# TYPE cairn_backups_succeeded_total ')
[ "$n" -eq 1 ] || fail "cairn_backups_succeeded_total declared $n times"
kill -TERM "$RUN_PID"
wait_exit 60 "$RUN_PID" || fail "no stop on SIGTERM"
RUN_PID=""
[ "$EXIT_RC" -eq 0 ] || fail "exit $EXIT_RC after SIGTERM"
echo "PASS: SIGHUP reload (invalid kept, valid applied, running backup finished)"
