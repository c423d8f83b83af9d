#!/usr/bin/env bash
# Shared by test_state_lock.sh (SQLite) and test_state_lock_pg.sh (sourced after
# cairnd_lib.sh): two `cairnd run` on one state. The second exits 10 naming the state and the
# owner, touching nothing; a dry run still reads the state; once the first is killed
# (SIGKILL: no clean release) a new one starts. The caller sets STATE_URL and calls
# state_lock_main.
state_lock_main() {
    mkdir -p "$T/src" "$T/backups"
    init_location "file://$T/backups"
    echo data >"$T/src/f"
    cat >"$T/cairnd.conf" <<CONF
[cairnd]
state = $STATE_URL
metrics-listen = 127.0.0.1:0

[schedule hourly]
source = $T/src
to = file://$T/backups
every = 1h
keep-last = 3
CONF
    set_clock 2026-01-01T10:30:00Z
    start_run "$T/run1.log"
    first=$RUN_PID
    expect_fail 10 "state '$STATE_URL' is in use by another cairnd" \
        "$B/cairnd" run --config "$T/cairnd.conf" --fake-clock "$T/clock"
    cat "$T/expect.err"
    if [ "$STATE_KIND" = sqlite ]; then
        grep -qF "is held by pid $first on host $(hostname)" "$T/expect.err" ||
            fail "the owner is not named: $(cat "$T/expect.err")"
    fi
    "$B/cairnd" run --config "$T/cairnd.conf" --fake-clock "$T/clock" --dry-run >/dev/null 2>&1 ||
        fail "a dry run must not need the state lock"
    kill -0 "$first" || fail "the first cairnd died"
    kill -9 "$first"
    wait "$first" 2>/dev/null || true
    RUN_PID=""
    start_run "$T/run2.log"
    kill -TERM "$RUN_PID"
    wait "$RUN_PID" || fail "second cairnd did not stop cleanly"
    RUN_PID=""
    echo "PASS: one cairnd per state ($STATE_KIND)"
}
