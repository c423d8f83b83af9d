#!/usr/bin/env bash
# cairnd schedules into encrypted repositories (docs/SECURITY.md): [cairnd] key-file serves
# every schedule without its own, a schedule's key-file overrides it. A schedule with the
# right key backs up (nothing of its data readable in storage), its retention runs; one with
# a wrong key fails every run and writes nothing; a key file others can read is refused.
set -euo pipefail
source "$(dirname "$0")/cairnd_lib.sh"

mkdir -p "$T/src" "$T/repo"
for i in 1 2 3; do { yes "SECRET-TOKEN-sched $i" || true; } | head -n 2000 >"$T/src/confidential-$i.txt"; done
"$B/cairn" key generate "$T/repo.key" >/dev/null
"$B/cairn" key generate "$T/wrong.key" >/dev/null
"$B/cairn" init "file://$T/repo" --key-file "$T/repo.key" >/dev/null
cat >"$T/cairnd.conf" <<CONF
[cairnd]
state = sqlite:$T/state.db
metrics-listen = 127.0.0.1:0
key-file = $T/repo.key

[schedule good]
source = $T/src
to = file://$T/repo
every = 1h
keep-last = 1

[schedule bad]
source = $T/src
to = file://$T/repo
key-file = $T/wrong.key
every = 1h
keep-last = 1
CONF
set_clock 2026-01-01T10:30:00Z
start_run "$T/run1.log"
set_clock 2026-01-01T11:00:00Z
wait_for 300 metric_is 1 cairn_backups_succeeded_total good || fail "good did not complete: $(tail -5 "$T/run1.log")"
wait_for 300 metric_is 1 cairn_backups_failed_total bad || fail "bad did not fail: $(tail -5 "$T/run1.log")"
set_clock 2026-01-01T12:00:00Z
wait_for 300 metric_is 2 cairn_backups_succeeded_total good || fail "good's second run"
kill -TERM "$RUN_PID"
wait_exit 120 "$RUN_PID" || fail "still running 120 s after SIGTERM"
RUN_PID=""
grep -q "no key of repository" "$T/run1.log" || fail "bad's failure does not name the key: $(grep bad "$T/run1.log" | tail -3)"
# keep-last = 1: only the newest of good's backups is left; none of bad's exists
"$B/cairn" list "file://$T/repo" --key-file "$T/repo.key" --json >"$T/list.json"
python3 - "$T/list.json" <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))["backups"]
names = [x["name"] for x in b]
assert names == ["20260101T120000Z-good"], names
assert all(x["status"] == "complete" for x in b), b
PY
! grep -rqa "SECRET-TOKEN\|confidential" "$T/repo" || fail "plaintext found in the repository"
"$B/cairn" restore "file://$T/repo" 20260101T120000Z-good --into "$T/out" --key-file "$T/repo.key" >/dev/null
diff -r "$T/src" "$T/out" || fail "restored tree differs"
# a key file others can read: refused when the configuration is checked by a run
chmod 644 "$T/repo.key"
sed -i '/key-file = .*wrong.key/d' "$T/cairnd.conf"
set_clock 2026-01-01T13:00:00Z
start_run "$T/run2.log"
wait_for 300 metric_is 1 cairn_backups_failed_total good || fail "good with an open key file did not fail"
grep -q "readable by group or others" "$T/run2.log" || fail "no message about the key file's mode"
echo "ok: encrypted schedules"
