#!/usr/bin/env bash
# The skip rules hold (docs/TESTING.md): every ctest test maps exit 77 to "skipped"; skip
# exits 77 always; missing exits 77, but 1 naming what is missing under CI=true; in the shell
# helpers, the Python helpers and the C harness alike.
set -euo pipefail
: "${CAIRN_BIN:?}" "${CAIRN_SOURCE_DIR:?}"
H=$CAIRN_SOURCE_DIR/tests/harness
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# expect CODE TEXT CMD...: CMD exits CODE and prints TEXT (stdout or stderr).
expect() {
    local want=$1 text=$2 rc=0
    shift 2
    "$@" >"$tmp/out" 2>&1 || rc=$?
    [ "$rc" -eq "$want" ] || { fail "$*: exit $rc, want $want: $(head -c 400 "$tmp/out")"; return; }
    [ -z "$text" ] || grep -qF -- "$text" "$tmp/out" || fail "$*: no '$text' in: $(head -c 400 "$tmp/out")"
}

# Shell.
expect 77 "*** SKIPPED: no tmpfs" env -u CI bash -c "source $H/skips.sh; skip no tmpfs"
expect 77 "*** SKIPPED: no tmpfs" env CI=true bash -c "source $H/skips.sh; skip no tmpfs"
expect 77 "*** SKIPPED: no influxd" env -u CI bash -c "source $H/skips.sh; missing no influxd"
expect 1 "missing under CI=true: no influxd" env CI=true bash -c "source $H/skips.sh; missing no influxd"

# Python, whole and in part.
py="import sys; sys.path.insert(0, '$H'); import skips"
expect 77 "*** SKIPPED: x" env CI=true python3 -c "$py; skips.skip(\"x\")"
expect 77 "*** SKIPPED: y" env -u CI python3 -c "$py; skips.missing(\"y\")"
expect 1 "missing under CI=true: y" env CI=true python3 -c "$py; skips.missing(\"y\")"
expect 77 "*** SKIPPED (part): z" env -u CI python3 -c "$py; skips.missing_part(\"z\"); sys.exit(skips.exit_code([]))"
expect 1 "missing under CI=true: z" env CI=true python3 -c "$py; skips.missing_part(\"z\"); sys.exit(skips.exit_code([]))"
expect 1 "" env -u CI python3 -c "$py; skips.skip_part(\"z\"); sys.exit(skips.exit_code([\"a failed check\"]))"
expect 0 "" env CI=true python3 -c "$py; sys.exit(skips.exit_code([]))"

# The C harness, through a real test binary whose S3 cases need s3rver.
conf=$CAIRN_BIN/tests/storage_test_conformance
[ -x "$conf" ] || { echo "FAIL: $conf not built"; exit 1; }
expect 77 "SKIP: s3rver not installed (/nonexistent/s3rver)" \
    env -u CI CAIRN_S3RVER=/nonexistent/s3rver "$conf" 's3_roundtrip*'
expect 1 "missing under CI=true: s3rver not installed" \
    env CI=true CAIRN_S3RVER=/nonexistent/s3rver "$conf" 's3_roundtrip*'
# Selection: globs, exclusions, and a pattern that matches nothing is an error.
expect 0 "1 passed, 0 failed, 0 skipped" "$conf" 'url_pars*'
expect 0 "1 passed, 0 failed, 0 skipped" "$conf" '!s3_*,!file_*'
expect 1 "no test matches" "$conf" 'no_such_test'

# Every registered ctest test maps 77 to skipped.
ctest --test-dir "$CAIRN_BIN" --show-only=json-v1 >"$tmp/tests.json"
python3 - "$tmp/tests.json" <<'PY' || fails=$((fails + 1))
import json, sys
tests = json.load(open(sys.argv[1]))["tests"]
bad = [t["name"] for t in tests
       if not any(p["name"] == "SKIP_RETURN_CODE" and p["value"] == 77
                  for p in t.get("properties", []))]
print("%d tests, %d without SKIP_RETURN_CODE 77 %s" % (len(tests), len(bad), bad))
sys.exit(1 if bad or not tests else 0)
PY

[ $fails -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "1 passed, 0 failed"
