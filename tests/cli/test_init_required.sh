#!/usr/bin/env bash
# A new location must be made a repository (cairn init) before its first backup: cairn backup
# (a local path, a source driver, an InfluxDB address), cairn put and cairnd's runs refuse a
# location with no repository config and no backup with exit 2 and a message saying which
# cairn init to run, before asking the source for anything and without creating the location;
# cairnd run --dry-run reports it per schedule. A legacy location (backups, no config: written
# before repositories existed) stays readable and writable.
set -euo pipefail
source "$(dirname "$0")/../sched/cairnd_lib.sh"

mkdir -p "$T/src"
echo hello >"$T/src/a.txt"
F=file://$T/fresh
want="storage $F is not a repository: run 'cairn init $F' (encrypted, with --key-file/--password-file) or 'cairn init --no-encryption $F'"

expect_fail 2 "$want" "$B/cairn" backup --from "$T/src" --to "$F"
expect_fail 2 "$want" "$B/cairn" backup --from "exec:touch $T/ran" --to "$F" --name e1
[ ! -e "$T/ran" ] || fail "the source was run for a refused backup"
# an InfluxDB address where nothing listens: refused before any connection is tried
expect_fail 2 "$want" "$B/cairn" backup --from 127.0.0.1:1 --to "$F" --name i1
expect_fail 2 "$want" "$B/cairn" put "$F" p1 "$T/src"
"$B/cairn" backup --from "$T/src" --to "$F" --json >"$T/j.json" 2>/dev/null && fail "json: exit 0"
python3 - "$T/j.json" <<'PY' || fail "json: $(cat "$T/j.json")"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["ok"] is False and j["error"]["exit"] == 2 and "cairn init" in j["error"]["message"], j
PY
[ ! -e "$T/fresh" ] || fail "a refused backup created the location: $(ls -la "$T/fresh")"
# An existing empty directory is no repository either.
mkdir "$T/empty"
expect_fail 2 "is not a repository" "$B/cairn" backup --from "$T/src" --to "$T/empty"

# Legacy: backups without a config (the location's .cairn removed, as before repositories).
L=file://$T/legacy
# legacy locations predate the chunk store: their backups are in the per-file format
init_location "$L" --no-encryption --no-dedup
"$B/cairn" put "$L" old "$T/src" >/dev/null || fail "put into an initialised location"
rm -rf "$T/legacy/.cairn"
"$B/cairn" backup --from "$T/src" --to "$L" --name new >/dev/null || fail "backup into a legacy location"
"$B/cairn" put "$L" new2 "$T/src" >/dev/null || fail "put into a legacy location"
"$B/cairn" list "$L" --json >"$T/l.json" || fail "list of a legacy location"
python3 - "$T/l.json" <<'PY' || fail "legacy list: $(cat "$T/l.json")"
import json, sys
st = {b["name"]: b["status"] for b in json.load(open(sys.argv[1]))["backups"]}
assert st == {"old": "complete", "new": "complete", "new2": "complete"}, st
PY
"$B/cairn" restore "$L" old --into "$T/restored" >/dev/null || fail "restore from a legacy location"
cmp "$T/src/a.txt" "$T/restored/a.txt" || fail "restored bytes"

# An encrypted repository whose config was removed is no legacy location: no plaintext there.
E=file://$T/enc
"$B/cairn" key generate "$T/k.key" >/dev/null
init_location "$E" --key-file "$T/k.key"
"$B/cairn" put "$E" e1 "$T/src" --key-file "$T/k.key" >/dev/null || fail "put into an encrypted repository"
rm -rf "$T/enc/.cairn"
expect_fail 4 "holds encrypted backups but has no repository config" "$B/cairn" backup --from "$T/src" --to "$E" --name e2
[ ! -e "$T/enc/e2" ] || fail "plaintext written into a location that lost its config"

# cairnd: a schedule into an uninitialised location; --dry-run says so, the run fails with
# the same message and writes nothing; once initialised, the next run succeeds.
D=file://$T/daemon
wantd="storage $D is not a repository: run 'cairn init $D'"
cat >"$T/cairnd.conf" <<CONF
[cairnd]
state-dir = $T/state
metrics-listen = 127.0.0.1:0

[schedule files]
source = $T/src
to = $D
every = 1h
keep-last = 2
CONF
set_clock 2026-03-01T09:50:00Z
"$B/cairnd" run --config "$T/cairnd.conf" --fake-clock "$T/clock" --dry-run >"$T/dry.out" 2>&1 ||
    fail "dry run: $(cat "$T/dry.out")"
grep -qF "  storage: $wantd" "$T/dry.out" || fail "dry run does not report it: $(cat "$T/dry.out")"
"$B/cairnd" run --config "$T/cairnd.conf" --fake-clock "$T/clock" --dry-run --json >"$T/dry.json" 2>/dev/null
python3 - "$T/dry.json" "$wantd" <<'PY' || fail "dry run json: $(cat "$T/dry.json")"
import json, sys
s = json.load(open(sys.argv[1]))["schedules"][0]
assert s["storage"].startswith(sys.argv[2]), s
PY
start_run "$T/run.log"
set_clock 2026-03-01T10:00:00Z
wait_for 300 metric_is 1 cairn_backups_failed_total files || fail "no failed run: $(tail -5 "$T/run.log")"
grep -qF "$wantd" "$T/run.log" || fail "the run's failure does not say why: $(tail -5 "$T/run.log")"
[ ! -e "$T/daemon" ] || fail "the failed run created the location"
init_location "$D"
"$B/cairnd" run --config "$T/cairnd.conf" --fake-clock "$T/clock" --dry-run >"$T/dry2.out" 2>&1 ||
    fail "dry run: $(cat "$T/dry2.out")"
grep -qx "  storage: ok" "$T/dry2.out" || fail "dry run after init: $(cat "$T/dry2.out")"
set_clock 2026-03-01T11:00:00Z
wait_for 300 metric_is 1 cairn_backups_succeeded_total files || fail "no run after init: $(tail -5 "$T/run.log")"
[ -f "$T/daemon/20260301T110000Z-files/MANIFEST" ] || fail "no backup: $(ls -R "$T/daemon")"
echo "init required: ok"
