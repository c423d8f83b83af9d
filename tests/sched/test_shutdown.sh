#!/usr/bin/env bash
# SIGTERM while a real backup is running, with shutdown-timeout = 0s: the backup is cancelled
# promptly, nothing that looks complete is left, cairnd exits 0, and after a restart the same
# run (same name) is taken again and completes.
set -euo pipefail
source "$(dirname "$0")/cairnd_lib.sh"

mkdir -p "$T/data/mydb/autogen/1" "$T/backups"
init_location "file://$T/backups"
# A 1 TiB sparse shard (no disk space used): its backup cannot finish in many minutes on any
# machine (hashing alone is over 500 s at 2 GB/s), so the first run is certainly still in
# flight at SIGTERM, and an exit within SHUTDOWN_DEADLINE can only come from the cancellation.
shard="$T/data/mydb/autogen/1/000000001-000000001.tsm"
truncate -s 1T "$shard"
SHUTDOWN_DEADLINE=120
start_serve "$T/data"
cat >"$T/cairnd.conf" <<CONF
[cairnd]
state = sqlite:$T/state.db
metrics-listen = 127.0.0.1:0
shutdown-timeout = 0s

[schedule big]
source = $ADDR
to = file://$T/backups
every = 1h
keep-last = 3
CONF
set_clock 2026-01-01T10:30:00Z
start_run "$T/run1.log"
set_clock 2026-01-01T11:00:00Z
wait_for 300 metric_is 1 cairn_backups_in_flight || fail "backup did not start"
kill -TERM "$RUN_PID"
wait_exit $SHUTDOWN_DEADLINE "$RUN_PID" ||
    fail "not cancelled promptly: still running ${SHUTDOWN_DEADLINE} s after SIGTERM"
RUN_PID=""
[ $EXIT_RC -eq 0 ] || fail "exit $EXIT_RC after SIGTERM"
grep -q "aborted by shutdown" "$T/run1.log" || fail "backup was not cancelled: $(tail -5 "$T/run1.log")"
! ls "$T"/backups/*/MANIFEST >/dev/null 2>&1 || fail "a cancelled backup looks complete"
dry_last_is 2026-01-01T10:30:00Z || fail "the cancelled run advanced the state: $(dry_last)"

# Restart: the cancelled run is taken again under the same name and completes. The shard
# shrinks to 4 MiB first so that the re-run is quick.
truncate -s 4M "$shard"
start_run "$T/run2.log"
wait_for 300 metric_is 1 cairn_backups_succeeded_total big || fail "re-run did not complete"
[ -f "$T/backups/20260101T110000Z-big/MANIFEST" ] || fail "re-run is not complete"
metric_is 1 cairn_backups_started_total big || fail "started != 1"
kill -TERM "$RUN_PID"
wait_exit 120 "$RUN_PID" || fail "second shutdown: still running 120 s after SIGTERM"
RUN_PID=""
[ $EXIT_RC -eq 0 ] || fail "second shutdown failed: exit $EXIT_RC"
echo "PASS: cancelled on SIGTERM, nothing complete-looking left, re-run after restart"
