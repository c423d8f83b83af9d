#!/usr/bin/env bash
# cairn list/prune of a location that does not exist is an error (exit 5, "no such storage
# location"), as with restic and borg: a typo must not look like an empty repository. An
# existing empty directory is "no backups"; cairn init creates a new location, and the first
# backup into it (cairn and cairnd) works (test_init_required.sh: without init they refuse).
set -euo pipefail
source "$(dirname "$0")/../sched/cairnd_lib.sh"

expect_fail 5 "no such storage location" "$B/cairn" list "$T/no/such/dir"
expect_fail 5 "no such storage location" "$B/cairn" list "file://$T/no/such/dir"
expect_fail 5 "no such storage location" "$B/cairn" prune "$T/no/such/dir" --keep-last 1
"$B/cairn" list "$T/no/such/dir" --json >"$T/l.json" 2>/dev/null || true
grep -q '"error":{"code":"not-found","exit":5' "$T/l.json" || fail "json: $(cat "$T/l.json")"
[ ! -e "$T/no" ] || fail "list created the location"

mkdir "$T/empty"
out=$("$B/cairn" list "$T/empty") || fail "empty dir: exit $?"
[ "$out" = "no backups in $T/empty" ] || fail "empty dir: $out"

# cairn init creates new locations; the first backups go into them.
mkdir -p "$T/src"
echo hi >"$T/src/a"
init_location "file://$T/new1/store"
init_location "file://$T/new2/store"
"$B/cairn" backup --from "$T/src" --to "file://$T/new1/store" >/dev/null || fail "backup into a new location"
"$B/cairn" list "$T/new1/store" | grep -q complete || fail "list after the first backup"
cat >"$T/cairnd.conf" <<CONF
[cairnd]
state-dir = $T/state
metrics-listen = 127.0.0.1:0

[schedule files]
source = $T/src
to = file://$T/new2/store
every = 1h
keep-last = 2
CONF
set_clock 2026-03-01T09:50:00Z
start_run "$T/run.log"
set_clock 2026-03-01T10:00:00Z
wait_for 300 metric_is 1 cairn_backups_succeeded_total files || fail "cairnd's first run into a new location: $(tail -5 "$T/run.log")"
[ -f "$T/new2/store/20260301T100000Z-files/MANIFEST" ] || fail "no backup: $(ls -R "$T/new2")"
metric_is 0 cairn_backups_failed_total files || fail "a run failed: $(tail -5 "$T/run.log")"
echo "missing locations: ok"
