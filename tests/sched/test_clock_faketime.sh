#!/usr/bin/env bash
# cairnd under a stepped wall clock (Debian's libfaketime, steps written to a file and re-read
# on every call; the monotonic and boot clocks stay real, as under an NTP step).
# A: a running cairnd (every 2s, keep-last 2) has its clock stepped 2 days forward for a few
#    runs, then back: the step is logged and counted both ways, catch-up stays within
#    catch-up-max, retention is held while the clock is ahead (the earlier backups survive),
#    the schedule goes on after the return, the future-dated backups are kept and reported, and
#    the fresh ones are the two kept by keep-last (not pushed out by the future-dated ones).
# B: cairnd restarted with its clock 1 hour behind its saved state: the step is logged, in
#    /metrics and /healthz (200), and backups are still taken.
set -euo pipefail
source "$(dirname "$0")/cairnd_lib.sh"
source "$(dirname "$0")/../harness/skips.sh"

FT=$(ls /usr/lib/*/faketime/libfaketimeMT.so.1 2>/dev/null | head -n 1 || true)
[ -n "$FT" ] || missing "libfaketime (faketime; scripts/deps.sh test installs it)"

mkdir -p "$T/src" "$T/state" "$T/backups"
init_location "file://$T/backups"
echo "hello" >"$T/src/a.txt"
cat >"$T/cairnd.conf" <<CONF
[cairnd]
state-dir = $T/state
metrics-listen = 127.0.0.1:0
snapshot-interval = 1s
catch-up-max = 1
catch-up-rate = 100/s

[schedule files]
source = $T/src
to = file://$T/backups
every = 2s
keep-last = 2
CONF

step() { echo "$1" >"$T/offset.tmp" && mv "$T/offset.tmp" "$T/offset"; }

start_faked() {
    local log=$1
    LD_PRELOAD=$FT FAKETIME_TIMESTAMP_FILE="$T/offset" FAKETIME_NO_CACHE=1 \
        FAKETIME_DONT_FAKE_MONOTONIC=1 FAKETIME_FORCE_MONOTONIC_FIX=0 \
        "$B/cairnd" run --config "$T/cairnd.conf" >"$log" 2>&1 &
    RUN_PID=$!
    wait_for 120 grep -qs "metrics on http://" "$log" || fail "cairnd run did not start: $(cat "$log")"
    MPORT=$(sed -n 's/.*metrics on http:\/\/127.0.0.1:\([0-9]*\)\/metrics.*/\1/p' "$log" | head -n 1)
}

stop_run() {
    kill -TERM "$RUN_PID"
    wait_exit 120 "$RUN_PID" || fail "cairnd did not stop"
    RUN_PID=""
    [ "$EXIT_RC" -eq 0 ] || fail "cairnd exited $EXIT_RC"
}

# present: complete backups now (a MANIFEST), sorted by name. A last entry without one (a run
# in progress) must not end the loop with status 1: under pipefail that silently ended the test.
present() { (cd "$T/backups" && for b in *; do [ ! -f "$b/MANIFEST" ] || echo "$b"; done) | sort; }
# future: backups created (MANIFEST "created") more than a day ahead of the real clock. Not by
# name: a run that straddles a step is named on one side of it and created on the other.
created() {
    local b c
    for b in $(present); do
        c=$(grep -m 1 -o '"created": "[^"]*"' "$T/backups/$b/MANIFEST" 2>/dev/null) || continue
        echo "${c:12:20} $b"
    done
}
future() { created | awk -v now="$(date -u -d '+1 day' +%Y-%m-%dT%H:%M:%SZ)" '$1 > now { print $2 }'; }
fresh() { created | awk -v now="$(date -u -d '+1 day' +%Y-%m-%dT%H:%M:%SZ)" '$1 <= now { print $2 }'; }
nfuture_at_least() { [ "$(future | wc -l)" -ge "$1" ]; }
succeeded() { metric cairn_backups_succeeded_total files; }
at_least() { local v; v=$(metric "${@:2}"); [ -n "$v" ] && [ "${v%.*}" -ge "$1" ]; }
health() { curl -s -o "$T/health" -w '%{http_code}' "http://127.0.0.1:$MPORT/healthz"; }

# ---- A: 2 days forward for a few runs, then back ----
step "+0"
start_faked "$T/run1.log"
wait_for 300 at_least 2 cairn_backups_succeeded_total files || fail "no runs: $(cat "$T/run1.log")"
s0=$(succeeded)
before=$(present)
step "+2d"
wait_for 120 at_least 1 cairn_clock_forwards_total || fail "forward step not seen"
seen=$(present)
wait_for 300 at_least $((${s0%.*} + 3)) cairn_backups_succeeded_total files || fail "no runs while ahead"
# A run in flight at the step may count above without being created ahead: wait for three that were.
wait_for 300 nfuture_at_least 3 || fail "want >= 3 future-dated backups, got: $(created | tr '\n' ' ')"
[ "$(health)" = 200 ] || fail "healthz $(cat "$T/health")"
grep -q "went forward by 1728[0-9][0-9]s.*retention held" "$T/health" || fail "healthz: $(cat "$T/health")"
# Retention held while ahead: every backup from before the step is still there, unless a run
# that ended as the step was written pruned it on the real clock (logged before the step was).
for b in $before; do
    [ -f "$T/backups/$b/MANIFEST" ] && continue
    sed '/the wall clock jumped forward by/q' "$T/run1.log" | grep -q "removed complete backup $b " ||
        fail "$b (taken before the step) was removed while the clock was ahead"
done
for b in $seen; do
    [ -f "$T/backups/$b/MANIFEST" ] || fail "$b (there when the step was seen) was removed while the clock was ahead"
done
grep -q "retention held" "$T/run1.log" || fail "held retention not logged"
step "+0"
wait_for 120 at_least 1 cairn_clock_backwards_total || fail "backward step not seen"
s1=$(succeeded)
ahead=$(future)
nfuture=$(echo "$ahead" | wc -l)
[ "$nfuture" -ge 3 ] || fail "want >= 3 future-dated backups, got: $(created | tr '\n' ' ')"
# The schedule goes on after the return (it does not wait 2 days for its cursor) ...
wait_for 300 at_least $((${s1%.*} + 3)) cairn_backups_succeeded_total files ||
    fail "no runs after the clock came back: $(tail -n 20 "$T/run1.log")"
# A run started while ahead may have completed after the step was seen: count again now that
# the (serial) schedule has run since the return; none counted at the step may be gone.
nfuture=$(future | wc -l)
for b in $ahead; do
    [ -f "$T/backups/$b/MANIFEST" ] || fail "future-dated $b was removed: $(present | tr '\n' ' ')"
done
# ... and keep-last 2 keeps the two newest fresh backups, beside every future-dated one.
newest_fresh() {
    local want
    want=$(grep -o "backup [0-9TZ]*-files complete" "$T/run1.log" | awk '{print $2}' |
        awk -v now="$(date -u -d '+1 day' +%Y%m%dT%H%M%S)" 'substr($1,1,15) <= now' | sort | tail -n 2)
    [ "$(fresh)" = "$want" ]
}
wait_for 120 newest_fresh || fail "fresh backups kept: $(fresh | tr '\n' ' '), all: $(present | tr '\n' ' ')"
[ "$(future | wc -l)" -eq "$nfuture" ] || fail "a future-dated backup was removed: $(present | tr '\n' ' ')"
for b in $ahead; do
    [ -f "$T/backups/$b/MANIFEST" ] || fail "future-dated $b was removed: $(present | tr '\n' ' ')"
done
grep -q "in the future (clock step?): kept" "$T/run1.log" || fail "future-dated backups not reported"
grep -q "the wall clock went back by 1728[0-9][0-9]s" "$T/run1.log" || fail "backward step not logged"
grep -q "the wall clock jumped forward by 1728[0-9][0-9]s" "$T/run1.log" || fail "forward step not logged"
# No burst: the forward step gave at most catch-up-max (1) catch-up run.
[ "$(metric cairn_catchup_runs_total files)" -le 1 ] || fail "catch-up runs: $(metric cairn_catchup_runs_total files)"
metric_is 1 cairn_clock_forwards_total || fail "forwards: $(metric cairn_clock_forwards_total)"
metric_is 1 cairn_clock_backwards_total || fail "backwards: $(metric cairn_clock_backwards_total)"
metric_is 0 cairn_backups_failed_total files || fail "a run failed"
stop_run

# ---- B: restarted 1 hour behind the saved state ----
step "-1h"
start_faked "$T/run2.log"
wait_for 120 grep -q "the wall clock is 3[0-9][0-9][0-9]s behind the saved state" "$T/run2.log" ||
    fail "step not logged: $(cat "$T/run2.log")"
metric_is 1 cairn_clock_backwards_total || fail "backwards: $(metric cairn_clock_backwards_total)"
v=$(metric cairn_clock_last_step_seconds)
[ "${v%.*}" -le -3500 ] && [ "${v%.*}" -ge -3610 ] || fail "last step $v"
[ "$(health)" = 200 ] || fail "healthz $(cat "$T/health")"
grep -q "notice: the wall clock went back by 3[0-9][0-9][0-9]s" "$T/health" || fail "healthz: $(cat "$T/health")"
wait_for 300 at_least 3 cairn_backups_succeeded_total files ||
    fail "no backups 1h behind the saved state: $(tail -n 20 "$T/run2.log")"
metric_is 0 cairn_backups_already_complete_total files || fail "re-ran existing instants"
stop_run
echo "PASS: clock steps forward and back delete no fresh backup; a step back is reported and the schedule keeps running"
