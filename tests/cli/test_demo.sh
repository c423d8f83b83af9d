#!/usr/bin/env bash
# The README's main job (scripts/demo.sh, run by `make demo`) works end to end with the
# binaries of this build.
set -euo pipefail
: "${CAIRN_BIN:?}" "${CAIRN_SOURCE_DIR:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
CAIRN_DEMO_DIR=$tmp/demo "$CAIRN_SOURCE_DIR/scripts/demo.sh" "$CAIRN_BIN" >"$tmp/out" 2>&1 || {
    cat "$tmp/out"
    exit 1
}
grep -q "demo: all steps passed" "$tmp/out"
grep -q "tampered copy refused with exit code 3" "$tmp/out"
echo "1 passed, 0 failed"
