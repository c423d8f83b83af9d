#!/usr/bin/env bash
# cairnd killed (SIGKILL) and restarted after missing three runs performs exactly those three,
# with the state in the embedded SQLite store.
source "$(dirname "$0")/cairnd_lib.sh"
STATE_URL="sqlite:$T/state/cairnd.db"
STATE_KIND=sqlite
catchup_main

# Idempotency through the real storage: roll the state back to the first snapshot (10:30, as
# if every later save had been lost) and restart: the four runs it replays all find their
# complete backups and count as done; nothing is backed up twice.
python3 - "$T/state/cairnd.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("DELETE FROM cairn_state_snapshots WHERE id <> (SELECT MIN(id) FROM cairn_state_snapshots)")
db.commit()
PY
dry_last_is 2026-01-01T10:30:00Z || fail "rollback: $(dry_last)"
start_run "$T/run3.log"
wait_for 300 metric_is 4 cairn_backups_already_complete_total hourly ||
    fail "replayed runs: $(metric cairn_backups_already_complete_total hourly) found complete"
wait_for 120 catchup_done "$T/run3.log" || fail "replay catch-up did not finish"
metric_is 0 cairn_backups_started_total hourly || fail "a complete backup was taken again"
[ "$(backups)" = "$want" ] || fail "backups changed: $(backups)"
kill -TERM "$RUN_PID"
wait "$RUN_PID" || fail "shutdown after replay"
RUN_PID=""
dry_last_is 2026-01-01T14:00:00Z || fail "state after replay: $(dry_last)"
echo "PASS: replayed runs found complete, none taken twice"

# State written by a newer cairnd is refused with exit status 2 and a clear message.
python3 - "$T/state/cairnd.db" <<'PY'
import hashlib, sqlite3, struct, sys
payload = struct.pack("<I", 0)
head = b"CAIRNST\x1a" + struct.pack("<HHI", 1, 2, len(payload))
env = head + payload + hashlib.sha256(head + payload).digest()
db = sqlite3.connect(sys.argv[1])
db.execute("INSERT INTO cairn_state_snapshots (created_at, payload_version, snapshot) VALUES (1, 2, ?)", (env,))
db.commit()
PY
expect_fail 2 "snapshot payload version 2 is newer than this cairnd supports (max 1)" \
    "$B/cairnd" run --config "$T/cairnd.conf" --dry-run
echo "PASS: newer state refused"
