#!/usr/bin/env bash
# cairnd killed (SIGKILL) and restarted after missing three runs performs exactly those three,
# with the state in the embedded SQLite store.
source "$(dirname "$0")/cairnd_lib.sh"
STATE_URL="sqlite:$T/state/cairnd.db"
STATE_KIND=sqlite
catchup_main

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
rc=0
"$B/cairnd" run --config "$T/cairnd.conf" --dry-run >/dev/null 2>"$T/newer.err" || rc=$?
[ $rc -eq 2 ] || fail "newer state: exit $rc, want 2"
grep -q "snapshot payload version 2 is newer than this cairnd supports (max 1)" "$T/newer.err" ||
    fail "newer state message: $(cat "$T/newer.err")"
echo "PASS: newer state refused"
