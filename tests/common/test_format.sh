#!/usr/bin/env bash
# The tree follows the checked-in .clang-format (`make format` applies it): every tracked C
# source and header is already formatted. One clang-format call checks all files (one process
# per file cost minutes under load); its diagnostics name the files that differ.
set -euo pipefail
cd "$CAIRN_SOURCE_DIR"
source tests/harness/skips.sh
command -v clang-format >/dev/null || missing "clang-format not installed (scripts/deps.sh test)"
[ -e .git ] || skip "not a git checkout, no list of tracked files"
files=()
while IFS= read -r -d '' f; do
    files+=("$f")
done < <(git ls-files -z '*.c' '*.h')
[ ${#files[@]} -gt 0 ] || { echo "FAIL: git ls-files found no C files"; exit 1; }
rc=0
out=$(clang-format --dry-run --Werror "${files[@]}" 2>&1) || rc=$?
if [ "$rc" -ne 0 ]; then
    bad=$(sed -n -E 's/^(.*):[0-9]+:[0-9]+: (error|warning): .*/\1/p' <<<"$out" | sort -u | tr '\n' ' ')
    bad=${bad% }
    echo "FAIL: not formatted (run make format): ${bad:-(clang-format exit $rc)}"
    head -20 <<<"$out"
    exit 1
fi
echo "PASS: ${#files[@]} files formatted"
