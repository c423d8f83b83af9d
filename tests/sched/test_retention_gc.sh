#!/usr/bin/env bash
# cairnd's retention reclaims chunk space in a deduplicating repository: a schedule with
# keep-last = 2 whose source gets 2 MiB of new random data per run keeps the repository at
# about two backups' worth (without the collection every run would add its 2 MiB for good):
# each prune that removes a backup runs the garbage collection under its lock, logs it and
# counts it (cairn_gc_reclaimed_bytes_total), `cairn check --read-data` passes and a later
# collection finds no pack to delete or repack. Then `cairn rm` leaves the removed backup's
# packs in place (as restic's forget), `cairn rm --prune` reclaims them (text and --json).
set -euo pipefail
source "$(dirname "$0")/cairnd_lib.sh"

MIB=$((1024 * 1024))
mkdir -p "$T/src" "$T/state" "$T/backups"
init_location "file://$T/backups"
echo "the same in every backup" >"$T/src/same.txt"
new_data() { head -c $((2 * MIB)) /dev/urandom >"$T/src/data.bin"; }
# Bytes of the chunk store's packs (what the collection frees).
packs_size() { du -sb --apparent-size "$T/backups/.data" | cut -f1; }
# A later collection (cairn prune that keeps everything) finds nothing to delete or repack.
no_garbage() {
    local out
    out=$("$B/cairn" prune "file://$T/backups" --keep-last 100 2>&1) || fail "cairn prune: $out"
    grep -q ", 0 deleted, 0 repacked;" <<<"$out" || fail "garbage left after $1: $out"
}
# collections_logged N: cairnd has logged at least N chunk collections.
collections_logged() { [ "$(grep -c "reclaimed .* of chunk space" "$T/run.log")" -ge "$1" ]; }
cat >"$T/cairnd.conf" <<CONF
[cairnd]
state-dir = $T/state
metrics-listen = 127.0.0.1:0
snapshot-interval = 1h

[schedule files]
source = $T/src
to = file://$T/backups
cron = 0 * * * *
keep-last = 2
CONF
set_clock 2026-03-01T09:50:00Z
start_run "$T/run.log"
max=0
for h in 10 11 12 13 14; do
    new_data
    set_clock "2026-03-01T$h:00:00Z"
    n=$((h - 9))
    wait_for 300 metric_is "$n" cairn_backups_succeeded_total files || fail "$h:00 run: $(tail -5 "$T/run.log")"
    if [ "$n" -gt 2 ]; then # a backup was removed: wait for its collection to be logged
        wait_for 120 collections_logged $((n - 2)) ||
            fail "no collection logged after the $h:00 prune: $(tail -5 "$T/run.log")"
    fi
    size=$(packs_size)
    echo "after $h:00: backups $(backups)packs $size bytes"
    [ "$size" -gt "$max" ] && max=$size
done
[ "$(backups)" = "20260301T130000Z-files 20260301T140000Z-files " ] || fail "kept: $(backups)"
# Five runs wrote >= 10 MiB of distinct data; two backups' worth (4 MiB) plus slack remain.
[ "$size" -lt $((5 * MIB)) ] || fail "packs hold $size bytes after five runs with keep-last = 2"
[ "$max" -lt $((7 * MIB)) ] || fail "packs grew to $max bytes: removed backups were not collected"
reclaimed=$(metric cairn_gc_reclaimed_bytes_total files)
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) >= 3 * 2 * 1048576 else 1)" "${reclaimed:-0}" ||
    fail "cairn_gc_reclaimed_bytes_total = '$reclaimed', want >= 6 MiB (three removed backups)"
metric_is 0 cairn_gc_errors_total files || fail "gc errors: $(metric cairn_gc_errors_total files)"
metric_is 3 cairn_prune_removed_total files || fail "prune counter: $(metric cairn_prune_removed_total files)"
grep -q "reclaimed .* of chunk space (.* pack(s) deleted" "$T/run.log" || fail "collection log line"
kill -TERM "$RUN_PID"
wait_exit 120 "$RUN_PID" || fail "cairnd did not stop"
RUN_PID=""
"$B/cairn" check "file://$T/backups" --read-data >/dev/null || fail "cairn check --read-data after cairnd's prunes"
no_garbage "cairnd's prunes"
"$B/cairn" verify "file://$T/backups" 20260301T140000Z-files --quiet >/dev/null || fail "verify the newest"

# cairn rm: the packs of the removed backup stay; cairn rm --prune reclaims them, and only
# the chunks no remaining backup references.
before=$(packs_size)
"$B/cairn" rm "file://$T/backups" 20260301T130000Z-files >/dev/null || fail "cairn rm"
[ "$(packs_size)" -eq "$before" ] || fail "plain cairn rm changed the packs ($before -> $(packs_size))"
"$B/cairn" put "file://$T/backups" extra "$T/src" >/dev/null || fail "put extra"
new_data
"$B/cairn" put "file://$T/backups" extra2 "$T/src" >/dev/null || fail "put extra2"
before=$(packs_size)
out=$("$B/cairn" rm --prune "file://$T/backups" 20260301T140000Z-files) || fail "cairn rm --prune: $out"
grep -q "^removed 20260301T140000Z-files$" <<<"$out" || fail "rm --prune output: $out"
grep -q "^chunks: .* pack(s), [1-9][0-9]* deleted" <<<"$out" || fail "rm --prune deleted no pack: $out"
after=$(packs_size)
echo "rm --prune: packs $before -> $after bytes"
# The 13:00 backup's own 2 MiB (removed by the plain rm) goes now, with nothing else.
[ $((before - after)) -ge $((2 * MIB)) ] || fail "rm --prune freed $((before - after)) bytes"
"$B/cairn" check "file://$T/backups" --read-data >/dev/null || fail "cairn check after rm --prune"
no_garbage "cairn rm --prune"
# "extra" shares its data with the 14:00 backup removed above: only now are those chunks
# unreferenced, and collected.
json=$("$B/cairn" rm --prune --json "file://$T/backups" extra) || fail "rm --prune --json: $json"
python3 - "$json" <<'PY' || fail "rm --prune --json: $json"
import json, sys
d = json.loads(sys.argv[1])
assert d["ok"] and d["removed"] == "extra", d
g = d["gc"]
assert g["packs_deleted"] >= 1 and 2 * 1048576 <= g["bytes_freed"] <= g["bytes_total"], g
PY
no_garbage "cairn rm --prune --json"
"$B/cairn" verify "file://$T/backups" extra2 --quiet >/dev/null || fail "extra2 verifies after rm --prune"
echo "PASS: cairnd's retention and cairn rm --prune reclaim chunk space; cairn check passes"
