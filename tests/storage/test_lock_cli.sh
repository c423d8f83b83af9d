#!/usr/bin/env bash
# Locks through the CLI on file storage: prune and rm refuse a location a backup holds, with
# exit code 10 and the holder named; put refuses one a prune holds; a lock of a dead process
# is taken over with a warning; cairn unlock removes stale locks and keeps live ones (--all
# removes those too); lock objects are never listed as backups.
set -euo pipefail
C="$CAIRN_BIN/cairn"
tmp=$(mktemp -d /tmp/cairn-lockcli-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
S="$tmp/store"
source "$(dirname "$0")/../harness/repo.sh"
init_location "$S"
mkdir -p "$tmp/src"
echo data >"$tmp/src/a"
"$C" put "$S" first "$tmp/src" >/dev/null
[ -d "$S/.locks" ] && [ -z "$(ls -A "$S/.locks")" ] || fail "put left a lock behind"

# plant OBJECT MODE PID AGE_MS: a lock object as another cairn of this host would write it.
plant() {
    python3 - "$S/.locks/$1" "$2" "$3" "$4" <<'PY'
import json, socket, sys, time
path, mode, pid, age = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
now = int(time.time() * 1000) - age
json.dump({"version": 1, "id": "x", "host": socket.gethostname(), "pid": pid, "mode": mode,
           "command": "backup", "started_ms": now, "refreshed_ms": now, "refresh_ms": 30000},
          open(path, "w"))
PY
}

# A live shared lock (held by this shell, which is alive) blocks prune and rm, not put.
plant live-000000 shared $$ 0
rc=0
"$C" prune "$S" --keep-last 1 >"$tmp/out" 2>"$tmp/err" || rc=$?
[ $rc -eq 10 ] || fail "prune under a live backup lock: exit $rc: $(cat "$tmp/err")"
grep -q "locked by another process: shared lock of host $(hostname) pid $$ (backup), started" "$tmp/err" ||
    fail "prune message: $(cat "$tmp/err")"
rc=0
"$C" rm "$S" first 2>"$tmp/err" || rc=$?
[ $rc -eq 10 ] || fail "rm under a live lock: exit $rc"
"$C" prune "$S" --keep-last 1 --dry-run >/dev/null || fail "a dry run takes no lock"
"$C" put "$S" second "$tmp/src" >/dev/null || fail "put beside another backup"
out=$("$C" list "$S")
grep -q locks <<<"$out" && fail "a lock listed as a backup: $out"
[ "$("$C" list "$S" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["backups"]))')" = 2 ] ||
    fail "list: $out"

# unlock keeps a live lock; --all removes it.
out=$("$C" unlock "$S")
grep -q "^kept    live-000000: shared lock of host" <<<"$out" || fail "unlock: $out"
grep -q "0 lock(s) removed, 1 left" <<<"$out" || fail "unlock: $out"
"$C" unlock "$S" --all | grep -q "^removed live-000000" || fail "unlock --all"
[ -z "$(ls -A "$S/.locks")" ] || fail "unlock --all left $(ls -A "$S/.locks")"

# A live exclusive lock (a prune) blocks put, which creates nothing.
plant prune-000000 exclusive $$ 0
rc=0
"$C" put "$S" third "$tmp/src" 2>"$tmp/err" || rc=$?
[ $rc -eq 10 ] || fail "put under a prune lock: exit $rc"
[ ! -e "$S/third" ] || fail "put created its backup although locked out"
rm "$S/.locks/prune-000000"

# A lock of a process that no longer exists is taken over with a warning.
sh -c 'exit 0' &
dead=$!
wait $dead
plant dead-000000 shared $dead 0
"$C" prune "$S" --keep-last 5 >/dev/null 2>"$tmp/err" || fail "prune over a dead lock: $(cat "$tmp/err")"
grep -q "removing stale lock: shared lock of host $(hostname) pid $dead" "$tmp/err" ||
    fail "no takeover warning: $(cat "$tmp/err")"
# One not refreshed for 4 periods is stale; unlock removes it.
plant old-000000 shared $$ 121000
out=$("$C" unlock "$S" --json)
python3 - "$out" <<'PY' || fail "unlock --json: $out"
import json, sys
j = json.loads(sys.argv[1])
assert j["ok"] and j["removed"] == 1, j
assert j["locks"][0]["object"] == "old-000000" and j["locks"][0]["stale"], j
PY
rc=0
"$C" unlock "$tmp/nosuch" 2>/dev/null || rc=$?
[ $rc -eq 5 ] || fail "unlock of a missing location: exit $rc"
echo "PASS"
