#!/usr/bin/env bash
# SIGKILL of `cairn put` into file storage at random points: the interrupted backup never lists
# as complete, an earlier backup is never changed, and prune cleans up the debris.
set -euo pipefail
C="$CAIRN_BIN/cairn"
tmp=$(mktemp -d /tmp/cairn-crash-XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

mkdir -p "$tmp/src/sub"
for i in $(seq 1 40); do head -c $((1024 * 1024 + i)) /dev/urandom >"$tmp/src/f$i"; done
for i in $(seq 1 20); do head -c $((4096 * i)) /dev/urandom >"$tmp/src/sub/s$i"; done
store="$tmp/store"
source "$(dirname "$0")/../harness/repo.sh"
init_location "$store"
base=20260101T000000Z-base

"$C" put "$store" "$base" "$tmp/src" >/dev/null
(cd "$store/$base" && sha256sum -- * | sort) >"$tmp/base.sum"

# How long a whole backup takes, to spread the kills over it.
t0=$(date +%s%N)
"$C" put "$store" 20251231T000000Z-probe "$tmp/src" >/dev/null
t1=$(date +%s%N)
"$C" rm "$store" 20251231T000000Z-probe >/dev/null
dur_us=$(((t1 - t0) / 1000))
echo "full backup takes ${dur_us} us"

status_of() { # name -> status or "absent"
    "$C" list "$store" --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
s = [b["status"] for b in d["backups"] if b["name"] == sys.argv[1]]
print(s[0] if s else "absent")' "$1"
}

midway=0
for i in 1 2 3 4 5 6 7 8; do
    name="20251201T00000${i}Z-crash"
    delay_us=$((RANDOM * RANDOM % (dur_us * 9 / 10 + 1)))
    "$C" put "$store" "$name" "$tmp/src" >/dev/null 2>&1 &
    pid=$!
    pids+=("$pid")
    sleep "$(printf '0.%06d' "$delay_us")" 2>/dev/null || sleep 0
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null && exited=0 || exited=$?
    st=$(status_of "$name")
    echo "kill after ${delay_us} us: exit=$exited status=$st"
    if [ "$exited" = 137 ]; then
        # Killed mid-way: must not look complete unless the MANIFEST had already been renamed
        # into place (then it must verify).
        if [ "$st" = complete ]; then
            "$C" verify "$store" "$name" >/dev/null
        else
            midway=$((midway + 1))
        fi
    fi
    [ "$st" != corrupt ] || { echo "FAIL: $name is corrupt"; exit 1; }
    # The earlier backup is untouched.
    (cd "$store/$base" && sha256sum -- * | sort) | cmp -s - "$tmp/base.sum" ||
        { echo "FAIL: earlier backup changed"; exit 1; }
    "$C" verify "$store" "$base" >/dev/null
done
echo "$midway kills landed mid-backup"
[ "$midway" -ge 1 ] || { echo "FAIL: no kill landed mid-backup"; exit 1; }

# Prune removes the interrupted (incomplete, sorting before the newest complete) ones and
# keeps the complete base. Retention goes by creation time, and the base was created first:
# keep every complete backup (the crash runs that completed too) so that the check is about
# the debris.
"$C" list "$store"
complete=$("$C" list "$store" --json | python3 -c 'import json,sys; print(" ".join(b["name"] for b in json.load(sys.stdin)["backups"] if b["status"] == "complete"))')
"$C" prune "$store" --keep-last 100
left=$("$C" list "$store" --json | python3 -c 'import json,sys; print(" ".join(b["name"] for b in json.load(sys.stdin)["backups"]))')
[ "$left" = "$complete" ] || { echo "FAIL: after prune: $left, want $complete"; exit 1; }
case " $left " in *" $base "*) ;; *) echo "FAIL: base removed"; exit 1 ;; esac
"$C" get "$store" "$base" "$tmp/restored" >/dev/null
diff -r "$tmp/src" "$tmp/restored"
echo "crash test passed"
