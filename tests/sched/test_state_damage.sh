#!/usr/bin/env bash
# A damaged SQLite state database heals (docs/RELIABILITY.md, "State that heals"): pages of
# state.db are overwritten (XOR with nonzero bytes, so every byte changes) while cairnd runs
# and between runs; cairnd keeps backing up, says so (log, /healthz, cairn_state_recovered_total),
# keeps the damaged file for inspection, and never runs a schedule's instant twice: after a
# restart with nothing salvageable, each schedule's last run comes from its backups in storage.
source "$(dirname "$0")/cairnd_lib.sh"
DB="$T/state/state.db"

# damage MODE: XOR bytes of the database file through one descriptor (a heal that renames the
# file meanwhile must not let this touch the fresh one). pages: the b-tree header of every page
# but the first; all: also the file header (then it is not even recognised as SQLite).
damage() {
    python3 - "$DB" "$1" <<'PY'
import os, random, sys
path, mode = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDWR)
ps = int.from_bytes(os.pread(fd, 2, 16), "big")
ps = 65536 if ps == 1 else ps
pages = os.fstat(fd).st_size // ps
assert pages >= 3, pages
for p in range(0 if mode == "all" else 1, pages):
    off = p * ps
    old = os.pread(fd, 16, off)
    os.pwrite(fd, bytes(b ^ random.randint(1, 255) for b in old), off)
os.fsync(fd)
os.close(fd)
print("damaged %d of %d pages (%s)" % (pages - (0 if mode == "all" else 1), pages, mode))
PY
}

health() { curl -s -o "$T/health.body" -w '%{http_code}' "http://127.0.0.1:$MPORT/healthz"; }
degraded() { [ "$(health)" = 503 ] && grep -q "state database damaged and rebuilt" "$T/health.body"; }
both_ok() { metric_is "$1" cairn_backups_succeeded_total a && metric_is "$1" cairn_backups_succeeded_total b; }
asides() { ls "$T/state" | grep -c '^state\.db\.corrupt-' || true; }

mkdir -p "$T/data/mydb/autogen/1" "$T/backups"
init_location "file://$T/backups"
head -c 100000 /dev/urandom >"$T/data/mydb/autogen/1/000000001-000000001.tsm"
start_serve "$T/data"
cat >"$T/cairnd.conf" <<CONF
[cairnd]
state = sqlite:$DB
metrics-listen = 127.0.0.1:0
catch-up-rate = 50/s
snapshot-interval = 1s
state-check-interval = 1s

[schedule a]
source = $ADDR
to = file://$T/backups
every = 1h
keep-last = 10

[schedule b]
source = $ADDR
to = file://$T/backups
every = 1h
keep-last = 10
CONF

# 1. Damage while cairnd runs: found by the periodic check, healed, backups go on.
set_clock 2026-01-01T10:30:00Z
start_run "$T/run1.log"
wait_for 120 catchup_done "$T/run1.log" || fail "boot catch-up did not finish"
[ "$(health)" = 200 ] || fail "healthy start: $(health) $(cat "$T/health.body")"
metric_is 0 cairn_state_recovered_total || fail "recovered metric not exported as 0"
set_clock 2026-01-01T11:00:00Z
wait_for 300 both_ok 1 || fail "11:00 runs did not complete"
wait_for 120 dry_last_is 2026-01-01T11:00:00Z || fail "state not persisted: $(dry_last)"
damage pages
wait_for 120 metric_is 1 cairn_state_recovered_total || fail "damage while running not noticed"
wait_for 60 degraded || fail "/healthz not degraded: $(health) $(cat "$T/health.body")"
grep -q "STATE DATABASE DAMAGED" "$T/run1.log" || fail "no loud error logged"
[ "$(asides)" = 1 ] || fail "damaged file not kept: $(ls "$T/state")"
aside=$(ls "$T/state"/state.db.corrupt-* | head -n 1)
[ "$(stat -c %a "$aside")" = 600 ] || fail "kept file mode $(stat -c %a "$aside")"
dry_last_is 2026-01-01T11:00:00Z || fail "fresh database lost the state: $(dry_last)"
set_clock 2026-01-01T12:00:00Z
wait_for 300 both_ok 2 || fail "backups stopped after the heal"
wait_for 120 dry_last_is 2026-01-01T12:00:00Z || fail "state not saved after heal: $(dry_last)"
metric_is 1 cairn_state_recovered_total || fail "healed more than once"
metric_is 0 cairn_backups_already_complete_total a || fail "an instant of a ran twice"
echo "PASS: damage while running healed, backups went on"
kill -9 "$RUN_PID"
wait "$RUN_PID" 2>/dev/null || true
RUN_PID=""

# 2. Damage between runs, nothing salvageable (not even the file header): cairnd starts (no
# exit 3, no restart loop), takes each schedule's last run from storage (12:00) and runs only
# the two instants it missed, 13:00 and 14:00.
damage all
set_clock 2026-01-01T14:10:00Z
start_run "$T/run2.log"
metric_is 1 cairn_state_recovered_total || fail "damage at start not counted: $(metric cairn_state_recovered_total)"
degraded || fail "/healthz not degraded after a heal at start: $(health)"
[ "$(asides)" = 2 ] || fail "second damaged file not kept: $(ls "$T/state")"
grep -q "schedule a: last run recovered from storage: 20260101T120000Z-a" "$T/run2.log" ||
    fail "last run of a not recovered from storage"
grep -q "schedule b: last run recovered from storage: 20260101T120000Z-b" "$T/run2.log" ||
    fail "last run of b not recovered from storage"
wait_for 300 both_ok 2 || fail "catch-up after the heal did not finish"
wait_for 120 catchup_done "$T/run2.log" || fail "catch-up did not finish"
for s in a b; do
    metric_is 2 cairn_backups_started_total $s || fail "$s started $(metric cairn_backups_started_total $s), want 2"
    metric_is 0 cairn_backups_already_complete_total $s || fail "$s: an instant already backed up ran again"
done
# Every instant has exactly one complete backup per schedule.
want=""
for h in 11 12 13 14; do want="${want}20260101T${h}0000Z-a 20260101T${h}0000Z-b "; done
got=$(backups | tr ' ' '\n' | sort | tr '\n' ' ')
[ "$got" = "$(echo "$want" | tr ' ' '\n' | sed '/^$/d' | sort | tr '\n' ' ')" ] || fail "backups: $got"
for b in $want; do [ -f "$T/backups/$b/MANIFEST" ] || fail "$b incomplete"; done
kill -TERM "$RUN_PID"
wait "$RUN_PID" || fail "shutdown after recovery"
RUN_PID=""
dry_last_is 2026-01-01T14:00:00Z || fail "state after recovery: $(dry_last)"
echo "PASS: damage between runs healed at start, each instant backed up once"

# 3. A clean restart is healthy again and takes nothing from storage.
start_run "$T/run3.log"
wait_for 120 catchup_done "$T/run3.log" || fail "restart catch-up"
[ "$(health)" = 200 ] || fail "healthy restart: $(health) $(cat "$T/health.body")"
metric_is 0 cairn_state_recovered_total || fail "healthy restart counted a heal"
! grep -q "recovered from storage" "$T/run3.log" || fail "intact state was overridden from storage"
metric_is 0 cairn_backups_started_total a || fail "a ran again after a clean restart"
echo "PASS: clean restart"
