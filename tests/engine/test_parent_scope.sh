#!/usr/bin/env bash
# An incremental backup's parent is the newest complete backup of the same kind and source
# whose scope (--db/--rp) covers its own (the same, or all databases). `backup --db sensors` then `backup --since T` (all databases) took the
# sensors-only backup as parent, and restoring the chain exited 0 without the other databases.
# Restores check every link of a chain; MANIFESTs without a scope (older cairn) still list,
# restore and serve as parents.
set -euo pipefail
source "$(dirname "$0")/../sched/cairnd_lib.sh"

mkdir -p "$T/data/sensors/autogen/1" "$T/data/other/autogen/2"
head -c 40000 /dev/urandom >"$T/data/sensors/autogen/1/000000001-000000001.tsm"
head -c 40000 /dev/urandom >"$T/data/other/autogen/2/000000001-000000001.tsm"
start_serve "$T/data"
S=$T/store
U=file://$S
# --no-dedup: the scope check below reads a per-file (version 1) MANIFEST.
init_location "$U" --no-encryption --no-dedup
SINCE=2000-01-01T00:00:00Z
cairn() { "$B/cairn" "$@"; }
# parent_of JSON: the "parent" of a `backup --json` summary ("None" for a full backup).
parent_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["parent"])'; }
# manifest_edit NAME PYTHON: run PYTHON on the MANIFEST's JSON object m (unsealed storage).
manifest_edit() {
    python3 - "$S/$1/MANIFEST" "$2" <<'PY'
import json, sys
path, code = sys.argv[1], sys.argv[2]
m = json.load(open(path))
exec(code)
json.dump(m, open(path, "w"), indent=2)
PY
}

cairn backup --from "$ADDR" --to "$U" --db sensors --name a-sensors >/dev/null || fail "backup a"
# The wrong-parent scenario: no all-databases backup to chain to, so it fails and says so.
expect_fail 5 "no parent for an incremental backup (--since): no complete influxdb backup of $ADDR (all databases) in '$U': take a full backup first, or pass --full-if-no-parent" \
    cairn backup --from "$ADDR" --to "$U" --since "$SINCE" --name b-inc
[ ! -e "$S/b-inc" ] || fail "a refused incremental left a backup behind"
expect_fail 2 "--full-if-no-parent needs --since" \
    cairn backup --from "$ADDR" --to "$U" --full-if-no-parent --name x

# With --full-if-no-parent it takes a full backup instead.
out=$(cairn backup --from "$ADDR" --to "$U" --since "$SINCE" --full-if-no-parent --name c-full \
    --json) || fail "backup c"
[ "$(parent_of <<<"$out")" = None ] || fail "c-full has a parent: $out"
grep -q '"full_no_parent": *true' <<<"$out" || fail "c-full not reported as a full fallback: $out"
grep -q '"since"' "$S/c-full/MANIFEST" && fail "c-full records a since time"
# A newer sensors-only backup must not become the all-databases chain's parent.
cairn backup --from "$ADDR" --to "$U" --db sensors --name d-sensors >/dev/null || fail "backup d"
out=$(cairn backup --from "$ADDR" --to "$U" --since "$SINCE" --name e-inc --json) || fail "e"
[ "$(parent_of <<<"$out")" = c-full ] || fail "e-inc chained to the wrong parent: $out"
out=$(cairn backup --from "$ADDR" --to "$U" --since "$SINCE" --name f-inc --json) || fail "f"
[ "$(parent_of <<<"$out")" = e-inc ] || fail "f-inc chained to the wrong parent: $out"
# A sensors-only incremental may chain to a newer all-databases backup (it holds sensors).
out=$(cairn backup --from "$ADDR" --to "$U" --db sensors --since "$SINCE" --name g-sens --json) ||
    fail "backup g"
[ "$(parent_of <<<"$out")" = f-inc ] || fail "g-sens chained to the wrong parent: $out"
out=$(cairn backup --from "$ADDR" --to "$U" --db sensors --rp autogen --since "$SINCE" \
    --name g2-sens --json) || fail "backup g2"
[ "$(parent_of <<<"$out")" = g-sens ] || fail "g2-sens chained to the wrong parent: $out"
out=$(cairn backup --from "$ADDR" --to "$U" --db other --since "$SINCE" --name g3-oth --json) ||
    fail "backup g3"
[ "$(parent_of <<<"$out")" = g2-sens ] && fail "g3-oth (other) chained to a sensors backup"
[ "$(parent_of <<<"$out")" = f-inc ] || fail "g3-oth chained to the wrong parent: $out"
# The same server under another address is another source.
PORT=${ADDR##*:}
expect_fail 5 "influxdb backup of localhost:$PORT (database 'sensors', retention policy 'autogen')" \
    cairn backup --from "localhost:$PORT" --to "$U" --db sensors --rp autogen --since "$SINCE" \
    --name h
python3 - "$S/f-inc/MANIFEST" <<'PY' || fail "scope not recorded"
import json, sys
m = json.load(open(sys.argv[1]))
assert m["scope"] == {"db": None, "rp": None}, m.get("scope")
assert m["version"] == 1
PY

# The chain restores with every database.
cairn restore "$U" f-inc --into "$T/r1" >/dev/null || fail "restore f-inc"
for f in meta.00 sensors.autogen.00001.00 other.autogen.00002.00 other.autogen.00002.02; do
    [ -s "$T/r1/$f" ] || fail "restore f-inc: no $f in $(ls "$T/r1")"
done

# A tampered link (a parent of another scope) is refused before anything is written.
cp "$S/f-inc/MANIFEST" "$T/f.MANIFEST"
manifest_edit f-inc 'm["parent"] = "d-sensors"'
expect_fail 3 "backup chain is inconsistent: 'f-inc' (influxdb backup of $ADDR (all databases)) has as parent 'd-sensors' (influxdb backup of $ADDR (database 'sensors', all retention policies))" \
    cairn restore "$U" f-inc --into "$T/r2"
[ -z "$(ls -A "$T/r2" 2>/dev/null)" ] || fail "a refused restore wrote files: $(ls -A "$T/r2")"
expect_fail 3 "nothing was restored" cairn restore "$U" f-inc --to "$ADDR" --db other --newdb o2
[ ! -e "$T/data/o2" ] || fail "a refused online restore changed the server"
cp "$T/f.MANIFEST" "$S/f-inc/MANIFEST"
# ... and so is one whose parent's own MANIFEST says another scope or source.
cp "$S/e-inc/MANIFEST" "$T/e.MANIFEST"
manifest_edit e-inc 'm["scope"] = {"db": "other", "rp": None}'
expect_fail 3 "backup chain is inconsistent" cairn restore "$U" f-inc --into "$T/r3"
manifest_edit e-inc 'm["scope"] = {"db": None, "rp": None}; m["source"] = "elsewhere:8088"'
expect_fail 3 "'e-inc' (influxdb backup of elsewhere:8088 (all databases))" \
    cairn restore "$U" f-inc --into "$T/r3"
[ -z "$(ls -A "$T/r3" 2>/dev/null)" ] || fail "a refused restore wrote files: $(ls -A "$T/r3")"
cp "$T/e.MANIFEST" "$S/e-inc/MANIFEST"
# A missing parent is "not found".
mv "$S/c-full" "$T/c-full.away"
expect_fail 5 "parent of 'f-inc'" cairn restore "$U" f-inc --into "$T/r4"
mv "$T/c-full.away" "$S/c-full"

# MANIFESTs written before scopes: the scope comes from meta's filters.
for n in c-full e-inc f-inc d-sensors; do manifest_edit $n 'm.pop("scope")'; done
cairn list "$U" >"$T/list.out" || fail "list with old MANIFESTs"
for n in c-full e-inc f-inc d-sensors; do
    grep -q "$n.*complete" "$T/list.out" || fail "list: $n: $(cat "$T/list.out")"
done
cairn restore "$U" f-inc --into "$T/r5" >/dev/null || fail "restore of old MANIFESTs"
cmp "$T/r1/other.autogen.00002.00" "$T/r5/other.autogen.00002.00" || fail "old restore differs"
out=$(cairn backup --from "$ADDR" --to "$U" --since "$SINCE" --name i-inc --json) || fail "i"
[ "$(parent_of <<<"$out")" = f-inc ] || fail "i-inc did not chain to the old f-inc: $out"
for n in g-sens g2-sens g3-oth; do manifest_edit $n 'm.pop("scope")'; done
out=$(cairn backup --from "$ADDR" --to "$U" --db sensors --rp autogen --since "$SINCE" \
    --name j-sens --json) || fail "backup j"
[ "$(parent_of <<<"$out")" = i-inc ] || fail "j-sens chained to the wrong parent: $out"
out=$(cairn backup --from "$ADDR" --to "$U" --db other --rp autogen --since "$SINCE" \
    --name j2-oth --json) || fail "backup j2"
[ "$(parent_of <<<"$out")" = i-inc ] || fail "j2-oth chained to the wrong parent: $out"
# A chain whose parent holds the child's database is fine; a narrower parent (tampered) is not.
cairn restore "$U" j-sens --into "$T/r7" --db sensors >/dev/null || fail "restore j-sens"
manifest_edit j2-oth 'm["parent"] = "g2-sens"'
expect_fail 3 "backup chain is inconsistent" cairn restore "$U" j2-oth --into "$T/r8"
cairn restore "$U" i-inc --into "$T/r6" >/dev/null || fail "restore of a mixed chain"

# Local-path backups record their path as scope.
mkdir -p "$T/tree" && echo hi >"$T/tree/f"
cairn backup --from "$T/tree" --to "$U" --name k-path >/dev/null || fail "path backup"
grep -qF "\"path\": \"$(realpath "$T/tree")\"" "$S/k-path/MANIFEST" || fail "no path scope"
echo "parent scope: ok"
