#!/usr/bin/env bash
# cairnd serve backs up a data directory it cannot write (a read-only file system snapshot):
# it used to create .cairn-snap inside it, fail, and the client blamed "missing shard?".
set -euo pipefail
source "$(dirname "$0")/../sched/cairnd_lib.sh"
source "$(dirname "$0")/../harness/skips.sh"
MNT=""
extra_cleanup() { [ -z "$MNT" ] || umount "$MNT" 2>/dev/null || true; }

mkdir -p "$T/data/mydb/autogen/1" "$T/data/mydb/autogen/2"
head -c 200000 /dev/urandom >"$T/data/mydb/autogen/1/000000001-000000001.tsm"
head -c 100000 /dev/urandom >"$T/data/mydb/autogen/2/000000001-000000001.tsm"
if [ "$(id -u)" = 0 ]; then
    # Root writes through any mode bits: a read-only bind mount is the real thing.
    mkdir "$T/ro"
    mount --bind "$T/data" "$T/ro" 2>/dev/null || skip "cannot bind-mount (needs CAP_SYS_ADMIN)"
    MNT=$T/ro
    mount -o remount,bind,ro "$T/ro" 2>/dev/null || skip "cannot remount read-only"
    DATA=$T/ro
else
    chmod -R a-w "$T/data"
    DATA=$T/data
fi
touch "$DATA/probe" 2>/dev/null && fail "the data directory is writable"

start_serve "$DATA"
init_location "file://$T/store"
"$B/cairn" backup --from "$ADDR" --to "file://$T/store" --name ro >"$T/b.out" 2>"$T/b.err" ||
    fail "backup of a read-only data directory: $(cat "$T/b.err") $(tail -5 "$T/serve.log")"
[ ! -e "$DATA/.cairn-snap" ] || fail ".cairn-snap created"
"$B/cairn" verify "file://$T/store" ro >/dev/null || fail "verify"
"$B/cairn" restore "file://$T/store" ro --into "$T/legacy" >/dev/null || fail "restore --into"
ls "$T/legacy" | grep -q '^mydb.autogen.00001.00$' || fail "shard 1 missing: $(ls "$T/legacy")"
ls "$T/legacy" | grep -q '^mydb.autogen.00002.00$' || fail "shard 2 missing: $(ls "$T/legacy")"
# The shard's bytes are the data directory's.
mkdir "$T/x"
tar -xf "$T/legacy/mydb.autogen.00001.00" -C "$T/x"
cmp "$T/x/mydb/autogen/1/000000001-000000001.tsm" "$T/data/mydb/autogen/1/000000001-000000001.tsm" ||
    fail "shard 1 differs"
[ "$(id -u)" = 0 ] || chmod -R u+w "$T/data"
echo "read-only data directory served"
