#!/usr/bin/env bash
# rate-limit = 1M in a schedule paces its upload (issue 18): 3 MB of incompressible data take
# at least (3 MB - the 0.1 s burst) / 1 MiB/s. Only the lower bound is asserted: a limit can
# only make a backup slower, so the bound holds on any machine; the bucket's exact accounting
# is tests/io/test_ratelimit.c's.
source "$(dirname "$0")/cairnd_lib.sh"
mkdir -p "$T/backups"
"$B/cairn" init "file://$T/backups" --no-encryption >/dev/null
head -c 3000000 /dev/urandom >"$T/data"
cat >"$T/cairnd.conf" <<CONF
[cairnd]
state-dir = $T/state
metrics-listen = 127.0.0.1:0
[schedule slow]
source = exec:cat $T/data
to = file://$T/backups
every = 1h
keep-last = 5
rate-limit = 1M
CONF
set_clock 2026-01-01T10:59:59Z
start_run "$T/run.log"
wait_for 60 catchup_done "$T/run.log" || fail "boot did not finish"
set_clock 2026-01-01T11:00:00Z
wait_for 120 metric_is 1 cairn_backups_succeeded_total slow || fail "backup did not complete: $(tail -n 5 "$T/run.log")"
secs=$(sed -n 's/.*backup 20260101T110000Z-slow complete: .* in \([0-9.]*\)s$/\1/p' "$T/run.log")
want=$(python3 -c 'print(round((3000000 - 1048576 / 10) / 1048576, 2))')
echo "3 MB at rate-limit = 1M: ${secs}s (at least ${want}s)"
python3 -c "import sys; sys.exit(0 if float('$secs') >= $want - 0.05 else 1)" ||
    fail "3 MB went in ${secs}s: faster than 1 MiB/s allows (${want}s)"
"$B/cairn" verify "file://$T/backups" 20260101T110000Z-slow >/dev/null || fail "the paced backup does not verify"
kill -TERM "$RUN_PID"
wait_exit 60 "$RUN_PID" || fail "no stop"
RUN_PID=""
echo "PASS: rate-limit paces uploads"
