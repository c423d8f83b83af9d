#!/usr/bin/env bash
# cairnd end to end on embedded defaults: serve a sample data directory with the snapshot
# protocol, back it up on a schedule (every 5 s, state in the embedded SQLite store) into
# local storage, scrape the metrics, stop cleanly, then list and verify the backups.
set -euo pipefail
build=${1:-build}
d=$(mktemp -d /tmp/cairn-demo-XXXXXX)
serve_pid=""
run_pid=""
cleanup() {
    [ -n "$run_pid" ] && kill "$run_pid" 2>/dev/null || true
    [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$d"
}
trap cleanup EXIT
wait_until() { # SECONDS CMD...
    local end=$((SECONDS + $1)); shift
    until "$@"; do [ $SECONDS -lt $end ] || { echo "demo: timed out: $*" >&2; return 1; }; sleep 0.2; done
}

mkdir -p "$d/data/telegraf/autogen/1" "$d/data/telegraf/autogen/2"
for f in 1/000000001-000000001.tsm 1/000000002-000000001.tsm 2/000000003-000000001.tsm; do
    head -c 2000000 /dev/urandom >"$d/data/telegraf/autogen/$f"
done
"$build/cairnd" serve --data "$d/data" --listen 127.0.0.1:0 >"$d/serve.out" 2>"$d/serve.log" &
serve_pid=$!
wait_until 20 grep -qs "listening on" "$d/serve.out"
addr=$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$d/serve.out" | head -n 1)

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
echo "demo: cairnd serve on $addr; cairnd run backs it up every 5 s into file://$d/backups"
"$build/cairnd" run --config "$d/cairnd.conf" 2>"$d/run.log" &
run_pid=$!
complete() { [ "$(ls "$d"/backups/*/MANIFEST 2>/dev/null | wc -l)" -ge "$1" ]; }
wait_until 30 complete 2
port=$(sed -n 's/.*metrics on http:\/\/127.0.0.1:\([0-9]*\)\/metrics.*/\1/p' "$d/run.log" | head -n 1)
if command -v curl >/dev/null && [ -n "$port" ]; then
    echo "demo: metrics (excerpt):"
    curl -fsS "http://127.0.0.1:$port/metrics" | grep -E '^cairn_(backups_succeeded_total|snapshot_saves_total|backup_bytes_total)' | sed 's/^/  /'
fi
kill -TERM "$run_pid"
wait "$run_pid"
run_pid=""
echo "demo: cairnd stopped cleanly; its log:"
sed 's/^/  /' "$d/run.log" | tail -n 8
"$build/cairn" list "file://$d/backups"
newest=$(ls "$d/backups" | tail -n 1)
"$build/cairn" verify "file://$d/backups" "$newest"
echo "demo: cairnd OK"
