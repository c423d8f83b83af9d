#!/usr/bin/env bash
# The schedule key force-read (cairn backup --force-read): a real cairnd run (fake clock) backs
# up a local path into two deduplicating locations that each hold a backup of it already. The
# schedule without the key skips the unchanged files (its completion line counts them); the one
# with force-read = yes reads every file (no file counted as unchanged).
set -euo pipefail
source "$(dirname "$0")/cairnd_lib.sh"

mkdir -p "$T/src/sub"
head -c 300000 /dev/urandom >"$T/src/a.bin"
head -c 70000 /dev/urandom >"$T/src/sub/b.bin"
echo hello >"$T/src/c.txt"
for loc in skip force; do
    init_location "file://$T/$loc"
    "$B/cairn" backup --from "$T/src" --to "file://$T/$loc" --name first --quiet ||
        fail "first backup into $loc"
done

{
    printf '[cairnd]\nstate = sqlite:%s/state.db\nmetrics-listen = 127.0.0.1:0\n' "$T"
    schedule_section skip "$T/src" "file://$T/skip"
    schedule_section force "$T/src" "file://$T/force" force-read=yes
} >"$T/cairnd.conf"
"$B/cairnd" run --config "$T/cairnd.conf" --dry-run >/dev/null || fail "dry run refuses force-read"
set_clock 2026-01-01T10:30:00Z
start_run "$T/run.log"
set_clock 2026-01-01T11:00:00Z
wait_for 120 metric_is 1 cairn_backups_succeeded_total skip || fail "skip: backup did not complete"
wait_for 120 metric_is 1 cairn_backups_succeeded_total force || fail "force: backup did not complete"
skip_line=$(grep "schedule skip: backup .* complete" "$T/run.log") || fail "skip: no completion line"
force_line=$(grep "schedule force: backup .* complete" "$T/run.log") || fail "force: no completion line"
echo "$skip_line"
echo "$force_line"
grep -q "(3 unchanged files, .*, not read)" <<<"$skip_line" ||
    fail "skip: the three unchanged files were not skipped"
if grep -q "unchanged" <<<"$force_line"; then fail "force: force-read = yes skipped files"; fi
# Both new backups are whole.
for loc in skip force; do
    "$B/cairn" check "file://$T/$loc" --read-data >/dev/null || fail "$loc: check --read-data"
done
echo OK
