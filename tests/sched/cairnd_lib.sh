#!/usr/bin/env bash
# Helpers for the tests that drive real cairnd processes (sourced): a temp dir $T cleaned up
# on exit with every process started here, a fake clock, /metrics scraping, cairnd serve.
#
# catchup_main is shared by test_catchup_sqlite.sh and test_catchup_pg.sh: a real cairnd run,
# with a fake clock, backing up a real cairnd serve into file:// storage; killed with SIGKILL
# after one run, restarted after missing three scheduled runs; must perform exactly those
# three. The caller sets STATE_URL (and may define extra_cleanup) and calls catchup_main.
set -euo pipefail
B=${CAIRN_BIN:?CAIRN_BIN not set}
source "$(dirname "${BASH_SOURCE[0]}")/../harness/repo.sh"
T=$(mktemp -d /tmp/cairnd-test-XXXXXX)
SERVE_PID=""
RUN_PID=""

cleanup() {
    local rc=$?
    [ -n "$RUN_PID" ] && kill -9 "$RUN_PID" 2>/dev/null || true
    [ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    if declare -F extra_cleanup >/dev/null; then extra_cleanup || true; fi
    if [ $rc -eq 0 ] || [ $rc -eq 77 ]; then rm -rf "$T"; else echo "(kept $T)"; tail -n 30 "$T"/run*.log 2>/dev/null || true; fi
    exit $rc
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

# expect_fail CODE TEXT CMD...: CMD exits with status CODE and says TEXT on stderr.
expect_fail() {
    local want=$1 text=$2 rc=0
    shift 2
    "$@" >/dev/null 2>"$T/expect.err" || rc=$?
    [ $rc -eq "$want" ] || fail "$*: exit $rc, want $want: $(cat "$T/expect.err")"
    grep -qF -- "$text" "$T/expect.err" || fail "$*: message: $(cat "$T/expect.err")"
}

# wait_for SECONDS CMD...: poll CMD every 0.1 s. Deadlines are generous (minutes): the tests
# run on loaded machines and under sanitizers (ASan 2-3x, TSan 5-15x slower); a deadline is
# only a bound on a hang, never a measure of speed.
wait_for() {
    local limit=$1; shift
    local end=$((SECONDS + limit))
    until "$@"; do
        [ $SECONDS -lt $end ] || return 1
        sleep 0.1
    done
}

# exited PID: PID is gone (or a zombie not yet reaped).
exited() {
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || true
    [ -z "$st" ] || [ "$st" = Z ]
}

# wait_exit SECONDS PID: wait up to SECONDS for PID (a child of this shell) to exit and set
# EXIT_RC to its status; returns 1 (leaving it running) when it has not exited by then.
wait_exit() {
    wait_for "$1" exited "$2" || return 1
    EXIT_RC=0
    wait "$2" || EXIT_RC=$?
}

# schedule_section NAME SOURCE URL [KEY=VALUE...]: a [schedule NAME] of cairnd.conf backing up
# SOURCE into URL every hour, keeping 5, then a 'KEY = VALUE' line per further argument (not
# every, keep-last, source or to: cairnd refuses a key set twice).
schedule_section() {
    printf '\n[schedule %s]\nsource = %s\nto = %s\nevery = 1h\nkeep-last = 5\n' "$1" "$2" "$3"
    shift 3
    local kv
    for kv in "$@"; do printf '%s = %s\n' "${kv%%=*}" "${kv#*=}"; done
}

set_clock() { echo "$1" >"$T/clock.tmp" && mv "$T/clock.tmp" "$T/clock"; }

# metric NAME [SCHEDULE]: one value from /metrics over HTTP ("" when absent).
metric() {
    local key=$1
    [ $# -gt 1 ] && key="$1{schedule=\"$2\"}"
    curl -fsS "http://127.0.0.1:$MPORT/metrics" | awk -v k="$key" '$1 == k { print $2 }'
}
metric_is() { [ "$(metric "${@:2}")" = "$1" ]; }

start_run() {
    local log=$1
    "$B/cairnd" run --config "$T/cairnd.conf" --fake-clock "$T/clock" >"$log" 2>&1 &
    RUN_PID=$!
    wait_for 120 grep -qs "metrics on http://" "$log" || fail "cairnd run did not start: $(cat "$log")"
    MPORT=$(sed -n 's/.*metrics on http:\/\/127.0.0.1:\([0-9]*\)\/metrics.*/\1/p' "$log" | head -n 1)
}

# last_of JSON-from-dry-run: the schedule's persisted last instant.
dry_last() {
    "$B/cairnd" run --config "$T/cairnd.conf" --fake-clock "$T/clock" --dry-run --json 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["schedules"][0]["last"])'
}
dry_last_is() { [ "$(dry_last)" = "$1" ]; }

# start_serve DATA_DIR [OPTION...]: cairnd serve on a free loopback port; sets ADDR.
start_serve() {
    "$B/cairnd" serve --data "$1" --listen 127.0.0.1:0 "${@:2}" >"$T/serve.out" 2>"$T/serve.log" &
    SERVE_PID=$!
    wait_for 120 grep -qs "listening on" "$T/serve.out" || fail "cairnd serve did not start"
    ADDR=$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$T/serve.out" | head -n 1)
}

backups() { (cd "$T/backups" && ls -1 | sort | tr '\n' ' '); }

# catchup_done LOG: cairnd run has finished its boot catch-up (every catch-up run is over).
catchup_done() { grep -q "sched: catch-up finished" "$1"; }

catchup_main() {
    # A sample InfluxDB-style data directory served by the real snapshot service.
    mkdir -p "$T/data/mydb/autogen/1" "$T/backups"
    init_location "file://$T/backups"
    head -c 200000 /dev/urandom >"$T/data/mydb/autogen/1/000000001-000000001.tsm"
    start_serve "$T/data"

    cat >"$T/cairnd.conf" <<CONF
[cairnd]
state = $STATE_URL
metrics-listen = 127.0.0.1:0
catch-up-rate = 50/s
snapshot-interval = 1s

[schedule hourly]
source = $ADDR
to = file://$T/backups
every = 1h
keep-last = 10
CONF
    set_clock 2026-01-01T10:30:00Z
    start_run "$T/run1.log"
    # Nothing is backed up by the end of the boot catch-up.
    wait_for 120 catchup_done "$T/run1.log" || fail "boot catch-up did not finish"
    [ "$(backups)" = "" ] || fail "a new schedule must not replay history: $(backups)"
    set_clock 2026-01-01T11:00:00Z
    wait_for 300 metric_is 1 cairn_backups_succeeded_total hourly || fail "11:00 run did not complete"
    wait_for 120 dry_last_is 2026-01-01T11:00:00Z || fail "state not persisted: $(dry_last)"

    kill -9 "$RUN_PID"
    wait "$RUN_PID" 2>/dev/null || true
    RUN_PID=""

    # Three scheduled runs (12:00, 13:00, 14:00) are missed while cairnd is down.
    set_clock 2026-01-01T14:10:00Z
    plan=$("$B/cairnd" run --config "$T/cairnd.conf" --fake-clock "$T/clock" --dry-run --json)
    echo "dry run: $plan"
    python3 - "$plan" <<'PY' || fail "dry run plan is wrong"
import json, sys
p = json.loads(sys.argv[1])["schedules"][0]
want = ["20260101T%02d0000Z-hourly" % h for h in (12, 13, 14)]
assert [r["name"] for r in p["catchup"]] == want, p
assert p["skipped"] == 0 and p["last"] == "2026-01-01T11:00:00Z", p
PY
    start_run "$T/run2.log"
    wait_for 300 metric_is 3 cairn_backups_succeeded_total hourly || fail "catch-up did not finish: $(metric cairn_backups_succeeded_total hourly)"
    # The catch-up is over: a stray extra run would show now.
    wait_for 120 catchup_done "$T/run2.log" || fail "catch-up did not finish"
    metric_is 3 cairn_backups_started_total hourly || fail "started != 3: $(metric cairn_backups_started_total hourly)"
    metric_is 3 cairn_catchup_runs_total hourly || fail "catch-up runs != 3"
    metric_is 0 cairn_backups_already_complete_total hourly || fail "a run was attempted twice"
    metric_is 0 cairn_backups_failed_total hourly || fail "a run failed"
    metric_is 0 cairn_snapshot_save_errors_total || fail "a snapshot save failed"
    want="20260101T110000Z-hourly 20260101T120000Z-hourly 20260101T130000Z-hourly 20260101T140000Z-hourly "
    [ "$(backups)" = "$want" ] || fail "backups: got '$(backups)', want '$want'"
    for b in $want; do
        [ -f "$T/backups/$b/MANIFEST" ] || fail "$b has no MANIFEST (incomplete)"
    done
    # The newest backup restores (every file verified against its MANIFEST).
    "$B/cairn" restore "file://$T/backups" 20260101T140000Z-hourly --into "$T/restored" >/dev/null ||
        fail "restore of the newest backup failed"
    dry_last_is 2026-01-01T14:00:00Z || fail "state after catch-up: $(dry_last)"

    # Clean shutdown on SIGTERM.
    kill -TERM "$RUN_PID"
    rc=0
    wait "$RUN_PID" || rc=$?
    RUN_PID=""
    [ $rc -eq 0 ] || fail "cairnd run exited $rc after SIGTERM"
    grep -q "stopped cleanly" "$T/run2.log" || fail "no clean stop logged"
    echo "PASS: exactly the three missed runs were performed ($STATE_KIND)"
}
