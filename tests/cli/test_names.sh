#!/usr/bin/env bash
# Backup names: two backups with default names started in the same second both complete
# under distinct names; an over-long or invalid --name is refused (exit 2), never truncated.
set -euo pipefail
source "$(dirname "$0")/../sched/cairnd_lib.sh"

mkdir -p "$T/src"
echo hello >"$T/src/a.txt"
U=file://$T/store
init_location "$U"

# Pairs of concurrent backups until one pair started in the same second (nearly always the
# first); every backup of every pair must succeed.
same=0
for round in $(seq 1 20); do
    "$B/cairn" backup --from "$T/src" --to "$U" --json >"$T/a.json" 2>"$T/a.err" &
    pa=$!
    "$B/cairn" backup --from "$T/src" --to "$U" --json >"$T/b.json" 2>"$T/b.err" &
    pb=$!
    ra=0 rb=0
    wait $pa || ra=$?
    wait $pb || rb=$?
    [ $ra -eq 0 ] && [ $rb -eq 0 ] ||
        fail "round $round: exits $ra/$rb: $(cat "$T/a.err" "$T/b.err")"
    na=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["name"])' "$T/a.json")
    nb=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["name"])' "$T/b.json")
    [ "$na" != "$nb" ] || fail "round $round: both named $na"
    if [ "${na:0:15}" = "${nb:0:15}" ]; then
        same=$((same + 1))
        break
    fi
done
[ $same -ge 1 ] || fail "no pair started in the same second in 20 rounds"
echo "same-second pair: $na $nb"
# Names sort by time and every backup is complete.
"$B/cairn" list "$U" --json >"$T/list.json"
python3 - "$T/list.json" <<'PY' || fail "list: $(cat "$T/list.json")"
import json, re, sys
items = json.load(open(sys.argv[1]))["backups"]
assert len(items) >= 2 and all(i["status"] == "complete" for i in items), items
assert all(re.fullmatch(r"\d{8}T\d{6}\.\d{3}Z", i["name"]) for i in items), items
PY

# Put with NAME auto: the same.
"$B/cairn" put "$U" auto "$T/src" >"$T/p1" &
p1=$!
"$B/cairn" put "$U" auto "$T/src" >"$T/p2" || fail "put auto"
wait $p1 || fail "concurrent put auto"
[ "$(cat "$T/p1")" != "$(cat "$T/p2")" ] || fail "put auto: same name"

# Over-long and invalid names are errors, and nothing is stored under a cut name.
long=$(printf 'n%.0s' $(seq 1 150))
expect_fail 2 "at most 127" "$B/cairn" backup --from "$T/src" --to "$U" --name "$long"
expect_fail 2 "invalid backup name" "$B/cairn" backup --from "$T/src" --to "$U" --name "a/b"
long201=$(printf 'p%.0s' $(seq 1 201))
expect_fail 2 "at most 200" "$B/cairn" put "$U" "$long201" "$T/src"
ls "$T/store" | grep -q '^nnn\|^ppp' && fail "a truncated name was stored: $(ls "$T/store")"
# 127 characters are fine.
ok=$(printf 'k%.0s' $(seq 1 127))
"$B/cairn" backup --from "$T/src" --to "$U" --name "$ok" >/dev/null || fail "127-character name"
echo "names: ok"
