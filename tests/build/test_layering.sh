#!/usr/bin/env bash
# The layering of docs/ARCHITECTURE.md holds: no file under src/ or include/cairn/ includes a
# module it may not use. Each "#include" (quoted, or <cairn/...>) is mapped to the module that
# owns the header: src/<module>/... by folder, include/cairn/X.h by the table below, a plain
# "x.h" to the including file's own module. Then the rules table decides. A new folder under
# src/ fails until it is placed here. Run first on a small tree with known violations, which
# must each be reported, so the checker cannot pass by seeing nothing.
set -euo pipefail
: "${CAIRN_SOURCE_DIR:?}"

# Who may include whom (a module may always include itself). Layers, low to high:
#   common -> io -> archive | storage | state (peers: none includes another) -> influx | source
#   -> engine (the InfluxDB backup/restore engine) -> programs (progs, cli, daemon). sched and
#   metrics are daemon-private: outside them, only the daemon includes them.
declare -A may=(
    [common]=""
    [io]="common"
    [archive]="common io"
    [storage]="common io"
    [state]="common io"
    [influx]="common io archive storage state"
    [source]="common io archive storage state"
    [engine]="common io archive storage influx source"
    [metrics]="common io archive storage state influx source engine"
    [sched]="common io archive storage state influx source engine metrics"
    [progs]="common io archive storage state influx source engine"
    [cli]="common io archive storage state influx source engine progs"
    [daemon]="common io archive storage state influx source engine progs sched metrics"
)
# The module each public header belongs to (the one whose sources implement it).
declare -A public=(
    [common.h]=common [err.h]=common [log.h]=common [digest.h]=common
    [io.h]=io [snapshot.h]=archive [storage.h]=storage [repo.h]=storage [state.h]=state
    [influx.h]=influx [engine.h]=engine [source.h]=source
)

# module_of ROOT FILE: the module owning FILE (a path under ROOT), or "" when none.
module_of() {
    local rel=${2#"$1"/}
    case $rel in
    include/cairn/*) echo "${public[${rel#include/cairn/}]:-}" ;;
    src/*/*)
        rel=${rel#src/}
        echo "${rel%%/*}"
        ;;
    *) echo "" ;;
    esac
}

# check ROOT: prints one line per violation; returns 1 when there was any.
check() {
    local root=$1 bad=0 f m inc target tm dir
    while IFS= read -r f; do
        m=$(module_of "$root" "$f")
        if [ -z "$m" ] || [ -z "${may[$m]+set}" ]; then
            echo "$f: not in a known module: place it in tests/build/test_layering.sh"
            bad=1
            continue
        fi
        while IFS= read -r inc; do
            dir=$(dirname "$f")
            if [ -e "$dir/$inc" ]; then
                target=$(realpath -m "$dir/$inc")
            elif [ -e "$root/src/$inc" ]; then
                target=$root/src/$inc
            elif [ -e "$root/include/$inc" ]; then
                target=$root/include/$inc
            else
                echo "$f: includes \"$inc\", which is not in the tree"
                bad=1
                continue
            fi
            tm=$(module_of "$root" "$target")
            [ "$tm" = "$m" ] && continue
            case " ${may[$m]} " in
            *" $tm "*) ;;
            *)
                echo "$f: $m includes \"$inc\" ($tm)"
                bad=1
                ;;
            esac
        done < <(sed -nE 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*("([^"]+)"|<(cairn\/[^>]+)>).*/\2\3/p' "$f")
    done < <(find "$root/src" "$root/include/cairn" -name '*.[ch]' | sort)
    return $bad
}

# The checker on a tree with four violations and two allowed includes.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/src/io" "$tmp/src/storage/s3" "$tmp/src/sched" "$tmp/src/daemon" \
    "$tmp/src/influx" "$tmp/src/engine" "$tmp/include/cairn"
touch "$tmp/include/cairn/io.h" "$tmp/include/cairn/influx.h" "$tmp/include/cairn/engine.h" \
    "$tmp/src/sched/sched.h" "$tmp/src/storage/s3/xml.h" "$tmp/src/daemon/x.c"
printf '#include "cairn/influx.h"\n' >"$tmp/src/io/a.c"      # io below influx
printf '#include "sched/sched.h"\n#include "xml.h"\n' >"$tmp/src/storage/s3/b.c" # daemon-private
printf '#include "../daemon/x.c"\n' >"$tmp/src/sched/c.c"     # sched above daemon
printf '#include <cairn/engine.h>\n' >"$tmp/src/influx/d.c"  # influx below engine
printf '#include "cairn/influx.h"\n' >"$tmp/src/engine/e.c"  # engine above influx: fine
if out=$(check "$tmp"); then
    echo "FAIL: the checker found nothing in a tree with violations" >&2
    exit 1
fi
echo "$out"
for want in 'src/io/a.c: io includes "cairn/influx.h" (influx)' \
    'src/storage/s3/b.c: storage includes "sched/sched.h" (sched)' \
    'src/sched/c.c: sched includes "../daemon/x.c" (daemon)' \
    'src/influx/d.c: influx includes "cairn/engine.h" (engine)'; do
    grep -qF "$tmp/$want" <<<"$out" || {
        echo "FAIL: the checker missed: $want" >&2
        exit 1
    }
done
[ "$(wc -l <<<"$out")" -eq 4 ] || {
    echo "FAIL: the checker reported more than the four violations" >&2
    exit 1
}

if ! check "$(realpath "$CAIRN_SOURCE_DIR")"; then
    echo "FAIL: the includes above break the layering (docs/ARCHITECTURE.md)" >&2
    exit 1
fi
echo "1 passed, 0 failed"
