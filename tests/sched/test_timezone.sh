#!/usr/bin/env bash
# cairnd's timezone setting: cron schedules follow the local wall clock of that zone across
# DST changes (Europe/Berlin, 2026), an unknown zone is a configuration error (exit 2).
source "$(dirname "$0")/cairnd_lib.sh"
source "$(dirname "$0")/../harness/skips.sh"
[ -r /usr/share/zoneinfo/Europe/Berlin ] ||
    missing "no /usr/share/zoneinfo/Europe/Berlin (scripts/deps.sh installs tzdata)"
mkdir -p "$T/src" && echo data >"$T/src/f"
conf() {
    cat >"$T/cairnd.conf" <<CONF
[cairnd]
state-dir = $T/state
metrics-listen = off
timezone = $1
[schedule nightly]
source = $T/src
to = file://$T/store
cron = 30 2 * * *
keep-last = 3
CONF
}
# next_at CLOCK: the schedule's next run when cairnd boots at CLOCK (a new schedule).
next_at() {
    set_clock "$1"
    "$B/cairnd" run --config "$T/cairnd.conf" --fake-clock "$T/clock" --dry-run --json 2>"$T/dry.err" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["schedules"][0]["next"])'
}

conf Europe/Berlin
got=$(next_at 2026-01-10T12:00:00Z)
[ "$got" = 2026-01-11T01:30:00Z ] || fail "winter: 02:30 CET is 01:30Z, got $got"
grep -q "cron schedules use the time zone Europe/Berlin" "$T/dry.err" || fail "no zone in the log: $(cat "$T/dry.err")"
got=$(next_at 2026-07-10T12:00:00Z)
[ "$got" = 2026-07-11T00:30:00Z ] || fail "summer: 02:30 CEST is 00:30Z, got $got"
got=$(next_at 2026-03-28T12:00:00Z)
[ "$got" = 2026-03-29T01:00:00Z ] || fail "02:30 skipped by DST runs at the jump (01:00Z), got $got"
got=$(next_at 2026-10-25T00:40:00Z)
[ "$got" = 2026-10-26T01:30:00Z ] || fail "02:30 repeated by DST runs once, got $got"
echo "PASS: cron follows Europe/Berlin across both DST changes"

conf UTC
got=$(next_at 2026-07-10T12:00:00Z)
[ "$got" = 2026-07-11T02:30:00Z ] || fail "UTC: got $got"

conf Europe/Atlantis
expect_fail 2 "cairnd.conf:4: timezone = 'Europe/Atlantis': unknown time zone" \
    "$B/cairnd" run --config "$T/cairnd.conf" --dry-run
echo "PASS: UTC default, unknown zone refused with exit 2"
