#!/usr/bin/env bash
# cairn prune and cairn rm on real file storage: age from the MANIFEST (the issue's
# weekly-old / daily-new repro), a full backup and two incrementals kept whole by
# --keep-last 1, rm of the base refused with its dependents named (--with-dependents removes
# the chain), a future-dated backup kept and reported, policies that keep nothing refused.
set -euo pipefail
C="$CAIRN_BIN/cairn"
tmp=$(mktemp -d /tmp/cairn-retention-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
mkdir -p "$tmp/src"
echo "some data" >"$tmp/src/a.txt"

# Set a stored MANIFEST's creation time (seconds from now) and parent: test-only raw access
# to an unsealed MANIFEST.
edit_manifest() { # STORE NAME OFFSET_SECONDS PARENT|-
    python3 - "$1/$2/MANIFEST" "$3" "$4" <<'PY'
import datetime, json, sys
path, off, parent = sys.argv[1], int(sys.argv[2]), sys.argv[3]
m = json.load(open(path))
t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=off)
m["created"] = t.strftime("%Y-%m-%dT%H:%M:%SZ")
if parent != "-":
    m["parent"] = parent
json.dump(m, open(path, "w"), indent=2)
PY
}

# 1. The issue's repro with real clocks: weekly-old, then daily-new one second later.
s1="$tmp/s1"
source "$(dirname "$0")/../harness/repo.sh"
init_location "$s1"
"$C" put "$s1" weekly-old "$tmp/src" >/dev/null
t0=$(date +%s)
while [ "$(date +%s)" = "$t0" ]; do sleep 0.05; done # the clock ticks: a later creation second
"$C" put "$s1" daily-new "$tmp/src" >/dev/null
out=$("$C" prune "$s1" --keep-last 1 --dry-run)
echo "$out"
grep -q "^keep    daily-new (complete): newest of group; keep-last 1/1$" <<<"$out" || fail "daily-new not kept"
grep -q "^would remove weekly-old (complete): not kept by any rule$" <<<"$out" || fail "weekly-old"
json=$("$C" prune "$s1" --keep-last 1 --dry-run --json)
python3 - "$json" <<'PY' || fail "prune --json: $json"
import json, sys
j = json.loads(sys.argv[1])
d = {x["name"]: x for x in j["decisions"]}
assert j["dry_run"] and j["removed"] == ["weekly-old"] and j["kept"] == ["daily-new"], j
assert d["daily-new"]["action"] == "keep" and "keep-last" in d["daily-new"]["reason"], d
assert d["weekly-old"]["action"] == "remove", d
assert d["weekly-old"]["reason"] == "not kept by any rule", d
PY
"$C" prune "$s1" --keep-last 1 >/dev/null
[ "$(ls "$s1")" = "daily-new" ] || fail "after prune: $(ls "$s1")"

# 2. A full backup and two incrementals: keep-last 1 keeps the whole chain.
s2="$tmp/s2"
init_location "$s2"
for n in full inc1 inc2 other; do "$C" put "$s2" "$n" "$tmp/src" >/dev/null; done
edit_manifest "$s2" other -7200 -
edit_manifest "$s2" full -3600 -
edit_manifest "$s2" inc1 -1800 full
edit_manifest "$s2" inc2 -900 inc1
out=$("$C" prune "$s2" --keep-last 1)
echo "$out"
grep -q "^keep    full (complete): parent of inc1$" <<<"$out" || fail "full not kept as a parent"
grep -q "^keep    inc1 (complete): parent of inc2$" <<<"$out" || fail "inc1 not kept as a parent"
grep -q "^removed other " <<<"$out" || fail "other not removed"
[ "$(ls "$s2" | tr '\n' ' ')" = "full inc1 inc2 " ] || fail "chain: $(ls "$s2")"
for n in full inc1 inc2; do "$C" verify "$s2" "$n" >/dev/null || fail "verify $n"; done

# rm of the base refuses (usage, exit 2) and names the dependents; nothing is removed.
rc=0
"$C" rm "$s2" full 2>"$tmp/err" || rc=$?
[ $rc -eq 2 ] || fail "rm of a base: exit $rc, want 2"
grep -q "parent of 2 backup(s) that need it to restore: inc1, inc2" "$tmp/err" ||
    fail "rm message: $(cat "$tmp/err")"
[ "$(ls "$s2" | tr '\n' ' ')" = "full inc1 inc2 " ] || fail "rm removed something: $(ls "$s2")"
# The newest link has no dependents; --with-dependents removes the whole chain.
out=$("$C" rm "$s2" full --with-dependents --json)
python3 -c 'import json,sys; j=json.loads(sys.argv[1]); assert j["ok"] and j["removed"] == "full" and j["dependents_removed"] == ["inc2", "inc1"], j' "$out" ||
    fail "rm --with-dependents: $out"
[ -z "$(ls "$s2")" ] || fail "left after --with-dependents: $(ls "$s2")"

# 3. A backup dated two days ahead (the clock was ahead) is kept and reported, and does not
# push the fresh backup out.
s3="$tmp/s3"
init_location "$s3"
for n in old fresh ahead; do "$C" put "$s3" "$n" "$tmp/src" >/dev/null; done
edit_manifest "$s3" old -7200 -
edit_manifest "$s3" fresh -60 -
edit_manifest "$s3" ahead 172800 -
"$C" prune "$s3" --keep-last 1 >"$tmp/out" 2>"$tmp/err"
grep -q "^keep    ahead (complete): future-dated$" "$tmp/out" || fail "ahead: $(cat "$tmp/out")"
grep -q "^keep    fresh (complete): newest of group; keep-last 1/1$" "$tmp/out" || fail "fresh"
grep -q "warning: ahead: created .* in the future" "$tmp/err" || fail "no warning: $(cat "$tmp/err")"
[ "$(ls "$s3" | tr '\n' ' ')" = "ahead fresh " ] || fail "future: $(ls "$s3")"

# 4. Filters and windows; policies that keep nothing are refused with exit 2.
"$C" put "$s3" nightly-1 "$tmp/src" >/dev/null
edit_manifest "$s3" nightly-1 -900 -
out=$("$C" prune "$s3" --keep-within 1h --name 'nightly-*' --dry-run)
grep -q "^keep    fresh (complete): not matched by the name filter$" <<<"$out" || fail "filter: $out"
grep -q "^keep    nightly-1 (complete): newest of group; keep-within 1h$" <<<"$out" || fail "within: $out"
for args in "" "--keep-last 0" "--keep-daily 0 --group-by none"; do
    rc=0
    # shellcheck disable=SC2086
    "$C" prune "$s3" $args 2>"$tmp/err" || rc=$?
    [ $rc -eq 2 ] && grep -q "keeps nothing" "$tmp/err" || fail "prune $args: exit $rc: $(cat "$tmp/err")"
done
rc=0
"$C" prune "$s3" --keep-within 3x 2>/dev/null || rc=$?
[ $rc -eq 2 ] || fail "--keep-within 3x: exit $rc"
rc=0
"$C" prune "$s3" --keep-last 1 --group-by host 2>/dev/null || rc=$?
[ $rc -eq 2 ] || fail "--group-by host: exit $rc"
echo "PASS: prune by creation time, chains kept, rm refuses a base, future-dated kept"
