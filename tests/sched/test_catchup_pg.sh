#!/usr/bin/env bash
# cairnd killed (SIGKILL) and restarted after missing three runs performs exactly those three,
# with the state in a real PostgreSQL server started here on loopback.
source "$(dirname "$0")/cairnd_lib.sh"
source "$(dirname "$0")/pg_lib.sh"
extra_cleanup() { pg_stop; }
pg_start
STATE_URL=$PG_URL
STATE_KIND=postgresql
catchup_main
# The schema is cairnd's: migrated to the newest version (4: the leader lease), rows pruned to state-keep (10).
[ "$(pg_sql "SELECT MAX(version) FROM cairn_schema_version")" = 4 ] || fail "schema version"
rows=$(pg_sql "SELECT COUNT(*) FROM cairn_state_snapshots")
[ "$rows" -ge 2 ] && [ "$rows" -le 10 ] || fail "$rows snapshot rows, want 2..10"
# A corrupt newest row falls back to the previous good one instead of refusing to start.
pg_sql "UPDATE cairn_state_snapshots SET snapshot = '\\x00' WHERE id = (SELECT MAX(id) FROM cairn_state_snapshots)"
out=$("$B/cairnd" run --config "$T/cairnd.conf" --fake-clock "$T/clock" --dry-run --json 2>"$T/dry.err") ||
    fail "dry run after corrupting the newest row: $(cat "$T/dry.err")"
grep -q "skipping corrupt postgresql state snapshot row" "$T/dry.err" || fail "no fallback logged"
python3 -c 'import json,sys; assert json.loads(sys.argv[1])["schedules"][0]["last"] == "2026-01-01T14:00:00Z"' "$out" ||
    fail "fallback state wrong: $out"
echo "PASS: postgresql schema, pruning and corrupt-row fallback"
