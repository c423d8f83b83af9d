#!/usr/bin/env bash
# Private by default: under umask 022 every file and directory cairn and cairnd create is
# 0600 / 0700 -- storage (file driver), restored and extracted outputs, snapshot files and
# their temporaries, the SQLite state and its directory, and what cairnd serve writes into
# its data directory on an online restore. The test lists every path that appeared and
# checks each one.
set -euo pipefail
source "$(dirname "$0")/../sched/cairnd_lib.sh"
umask 022

# Inputs, made by the test (not checked).
mkdir -p "$T/in/files/sub" "$T/in/data/mydb/autogen/1" "$T/tmp"
echo hello >"$T/in/files/a.txt"
head -c 300000 /dev/urandom >"$T/in/files/sub/b.bin"
head -c 200000 /dev/urandom >"$T/in/data/mydb/autogen/1/000000001-000000001.tsm"
head -c 100000 /dev/urandom >"$T/in/state.bin"
(cd "$T" && find in tmp | sort) >"$T/before"
export TMPDIR=$T/tmp
O=$T/out

# Storage, written by put (into a location that cairn init created) and backup.
init_location "file://$O/store"
init_location "file://$O/store2"
init_location "file://$O/sched"
init_location "file://$O/influx"
"$B/cairn" put "file://$O/store" b1 "$T/in/files" >/dev/null || fail "put"
"$B/cairn" backup --from "$T/in/files" --to "file://$O/store2" --name b2 >/dev/null || fail "backup"
# Restored and extracted outputs.
"$B/cairn" get "file://$O/store" b1 "$O/got" >/dev/null || fail "get"
"$B/cairn" restore "file://$O/store2" b2 --into "$O/restored" >/dev/null || fail "restore --into"
"$B/cairn" snapshot save "$T/in/state.bin" "$O/s.snap" --index 7 --term 2 >/dev/null || fail "save"
"$B/cairn" snapshot extract "$O/s.snap" "$O/state.out" >/dev/null || fail "extract"

# A snapshot streamed from a pipe: its temporary file is checked while it is being written.
mkfifo "$T/fifo"
"$B/cairn" snapshot save - "$O/p.snap" --size 200000 --index 1 --term 1 <"$T/fifo" \
    >/dev/null 2>"$T/save.err" &
SAVE_PID=$!
exec 3>"$T/fifo"
head -c 100000 /dev/urandom >&3
tmp_of() { compgen -G "$O/.p.snap.tmp.*" >/dev/null; }
wait_for 120 tmp_of || fail "no temporary file for p.snap"
for f in "$O"/.p.snap.tmp.*; do
    [ "$(stat -c %a "$f")" = 600 ] || fail "temporary $f has mode $(stat -c %a "$f")"
done
head -c 100000 /dev/urandom >&3
exec 3>&-
wait "$SAVE_PID" || fail "streamed save: $(cat "$T/save.err")"

# cairnd: a SQLite state in a directory it creates; cairnd serve backed up, an InfluxDB-style
# backup restored into the legacy layout and back online (new shard directories + meta).
cat >"$T/cairnd.conf" <<CONF
[cairnd]
state-dir = $O/state/deep
metrics-listen = off

[schedule files]
source = $T/in/files
to = file://$O/sched
every = 1h
keep-last = 2
CONF
"$B/cairnd" run --config "$T/cairnd.conf" --dry-run >/dev/null || fail "cairnd run --dry-run"
[ -f "$O/state/deep/state.db" ] || fail "no state.db: $(ls -la "$O/state/deep")"
start_serve "$T/in/data" --allow-restore
"$B/cairn" backup --from "$ADDR" --to "file://$O/influx" --name i1 >/dev/null || fail "influx backup"
"$B/cairn" restore "file://$O/influx" i1 --into "$O/legacy" >/dev/null || fail "restore --into (influx)"
"$B/cairn" restore "file://$O/influx" i1 --to "$ADDR" --db mydb --newdb copy >/dev/null ||
    fail "online restore"
kill "$SERVE_PID"
wait "$SERVE_PID" 2>/dev/null || true
SERVE_PID=""

[ "$(stat -c %a "$T/in/files/a.txt")" = 644 ] || fail "umask 022 not in effect"

# Every path that appeared, with its mode.
(cd "$T" && find in tmp out | sort) >"$T/after"
comm -13 "$T/before" "$T/after" >"$T/new"
[ "$(wc -l <"$T/new")" -gt 30 ] || fail "too few new paths: $(cat "$T/new")"
bad=0
checked=0
while IFS= read -r p; do
    mode=$(stat -c %a "$T/$p")
    if [ -d "$T/$p" ]; then want=700; else want=600; fi
    # A local tree is restored as it was: each path keeps its source's mode.
    case $p in
    out/got | out/restored) want=$(stat -c %a "$T/in/files") ;;
    out/got/* | out/restored/*) want=$(stat -c %a "$T/in/files/${p#out/*/}") ;;
    esac
    if [ "$mode" != "$want" ]; then
        echo "  $p: mode $mode, want $want" >&2
        bad=$((bad + 1))
    fi
    checked=$((checked + 1))
done <"$T/new"
grep -q '^out/state/deep/state.db$' "$T/new" || fail "state.db not listed"
grep -q '^in/data/copy/' "$T/new" || fail "online restore wrote no shard: $(cat "$T/new")"
[ $bad -eq 0 ] || fail "$bad of $checked created paths are not private"
echo "$checked created paths checked: all 0600 files / 0700 directories"

# A key file others can read is refused, as ssh does: exit 2, naming the file and the fix.
head -c 32 /dev/urandom >"$T/key"
chmod 640 "$T/key"
expect_fail 2 "chmod 600 '$T/key'" "$B/cairn" snapshot save "$T/in/state.bin" "$T/k.snap" \
    --index 1 --term 1 --seal hmac --seal-key "$T/key"
expect_fail 2 "readable by group or others" "$B/cairn" put "file://$O/store" k1 "$T/in/files" \
    --seal-key "$T/key"
[ ! -e "$T/k.snap" ] && [ ! -e "$O/store/k1" ] || fail "a refused key still wrote output"
chmod 600 "$T/key"
"$B/cairn" snapshot save "$T/in/state.bin" "$T/k.snap" --index 1 --term 1 --seal hmac \
    --seal-key "$T/key" >/dev/null || fail "a 0600 key is refused"
echo "loose key files refused with exit 2"
