#!/usr/bin/env bash
# Restoring a database (or retention policy) that the backup does not hold is "not in this
# backup" (exit 5), online and offline, before anything is applied; it said "may already
# exist" (exit 6).
set -euo pipefail
source "$(dirname "$0")/../sched/cairnd_lib.sh"

mkdir -p "$T/data/mydb/autogen/1"
head -c 50000 /dev/urandom >"$T/data/mydb/autogen/1/000000001-000000001.tsm"
start_serve "$T/data" --allow-restore
U=file://$T/store
init_location "$U"
"$B/cairn" backup --from "$ADDR" --to "$U" --name full >/dev/null || fail "backup"

expect_fail 5 "database 'nosuchdb' is not in backup 'full' (it has: mydb)" \
    "$B/cairn" restore "$U" full --to "$ADDR" --db nosuchdb --newdb x
expect_fail 5 "not in backup" "$B/cairn" restore "$U" full --into "$T/into" --db nosuchdb
expect_fail 5 "retention policy 'mydb.nosuchrp' is not in backup 'full'" \
    "$B/cairn" restore "$U" full --to "$ADDR" --db mydb --rp nosuchrp --newdb y
[ ! -e "$T/data/x" ] && [ ! -e "$T/data/y" ] || fail "a refused restore changed the server"
[ -z "$(ls -A "$T/into" 2>/dev/null)" ] || fail "a refused --into restore wrote files"
# The database it holds restores.
"$B/cairn" restore "$U" full --to "$ADDR" --db mydb --newdb copy >/dev/null || fail "restore mydb"
[ -d "$T/data/copy" ] || fail "no restored database"
echo "restore scope: ok"
