#!/usr/bin/env bash
# The main job end to end on embedded defaults (local file storage, SQLite state), using the
# binaries in BUILD (default build/). Everything it makes stays in $CAIRN_DEMO_DIR (default
# ./demo-out) so you can look at it afterwards; a rerun starts afresh.
#   1. a raft snapshot archive: save, inspect, verify, and a tampered copy refused
#   2. cairnd serve: a sample InfluxDB-style data directory over the snapshot protocol
#   3. cairnd run: a schedule backs it up every 5 s into file storage (state in SQLite),
#      metrics scraped, clean stop on SIGTERM
#   4. cairn list / verify / restore --into of the newest backup
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
d=${CAIRN_DEMO_DIR:-$PWD/demo-out}
rm -rf "$d"
mkdir -p "$d"
d=$(cd "$d" && pwd)
serve_pid=""
run_pid=""
cleanup() {
    [ -n "$run_pid" ] && kill "$run_pid" 2>/dev/null || true
    [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT
wait_until() { # SECONDS CMD...
    local end=$((SECONDS + $1))
    shift
    until "$@"; do
        [ $SECONDS -lt $end ] || { echo "demo: timed out waiting for: $*" >&2; return 1; }
        sleep 0.2
    done
}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
cairn=$build/cairn
cairnd=$build/cairnd

step "1. snapshot archive (Consul/Vault format)"
head -c 3000000 /dev/urandom >"$d/state.bin"
"$cairn" snapshot save "$d/state.bin" "$d/state.snap" --index 42 --term 3
"$cairn" snapshot inspect "$d/state.snap"
"$cairn" snapshot verify "$d/state.snap"
cp "$d/state.snap" "$d/tampered.snap"
# XOR one byte with 0xff so the copy differs for certain (writing a fixed value would leave it
# unchanged whenever the byte already has that value).
byte=$(od -An -tu1 -j2000 -N1 "$d/tampered.snap" | tr -d ' ')
printf "\\$(printf '%03o' $((byte ^ 0xff)))" | dd of="$d/tampered.snap" bs=1 seek=2000 conv=notrunc status=none
cmp -s "$d/state.snap" "$d/tampered.snap" && { echo "demo: the tampered copy is unchanged" >&2; exit 1; }
if "$cairn" snapshot verify "$d/tampered.snap"; then
    echo "demo: a tampered archive was accepted" >&2
    exit 1
else
    echo "demo: tampered copy refused with exit code $?"
fi

step "2. cairnd serve: a sample data directory over the InfluxDB 1.6 snapshot protocol"
mkdir -p "$d/data/telegraf/autogen/1" "$d/data/telegraf/autogen/2" "$d/data/telegraf/weekly/3"
for f in autogen/1/000000001-000000001.tsm autogen/1/000000002-000000001.tsm \
    autogen/2/000000003-000000001.tsm weekly/3/000000001-000000001.tsm; do
    head -c 2000000 /dev/urandom >"$d/data/telegraf/$f"
done
"$cairnd" serve --data "$d/data" --listen 127.0.0.1:0 >"$d/serve.out" 2>"$d/serve.log" &
serve_pid=$!
wait_until 120 grep -qs "listening on" "$d/serve.out"
addr=$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$d/serve.out" | head -n 1)
echo "demo: cairnd serve listening on $addr"

step "3. cairnd run: scheduled backups every 5 s into file://$d/backups (state in SQLite)"
# A location is a repository before its first backup (docs/SECURITY.md: encrypted with a key
# file or password; the demo keeps it plain and says so).
"$cairn" init --no-encryption "file://$d/backups"
cat >"$d/cairnd.conf" <<CONF
[cairnd]
state-dir = $d/state
metrics-listen = 127.0.0.1:0

[schedule demo]
source = $addr
to = file://$d/backups
every = 5s
keep-last = 2
CONF
"$cairnd" run --config "$d/cairnd.conf" 2>"$d/run.log" &
run_pid=$!
complete() { [ "$(ls "$d"/backups/*/MANIFEST 2>/dev/null | wc -l)" -ge "$1" ]; }
wait_until 300 complete 2
port=$(sed -n 's/.*metrics on http:\/\/127.0.0.1:\([0-9]*\)\/metrics.*/\1/p' "$d/run.log" | head -n 1)
if command -v curl >/dev/null && [ -n "$port" ]; then
    echo "demo: metrics (excerpt):"
    curl -fsS "http://127.0.0.1:$port/metrics" |
        grep -E '^cairn_(backups_succeeded_total|snapshot_saves_total|backup_bytes_total)' | sed 's/^/  /'
fi
kill -TERM "$run_pid"
wait "$run_pid"
run_pid=""
echo "demo: cairnd stopped cleanly; the end of its log:"
tail -n 6 "$d/run.log" | sed 's/^/  /'

step "4. list, verify and restore the newest backup"
"$cairn" list "file://$d/backups"
newest=$(ls "$d/backups" | tail -n 1)
"$cairn" verify "file://$d/backups" "$newest"
"$cairn" restore "file://$d/backups" "$newest" --into "$d/restored"
echo "demo: restored in the influxd backup layout (for 'influxd restore'):"
ls -l "$d/restored" | sed 's/^/  /'

kill "$serve_pid"
wait "$serve_pid" 2>/dev/null || true
serve_pid=""
printf '\ndemo: all steps passed; everything is in %s\n' "$d"
