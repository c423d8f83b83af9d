#!/usr/bin/env bash
# The tree follows the checked-in .clang-format (`make format` applies it): every tracked C
# source and header is already formatted.
set -euo pipefail
cd "$CAIRN_SOURCE_DIR"
source tests/harness/skips.sh
command -v clang-format >/dev/null || missing "clang-format not installed (scripts/deps.sh test)"
[ -e .git ] || skip "not a git checkout, no list of tracked files"
bad=()
while IFS= read -r f; do
    clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done < <(git ls-files '*.c' '*.h')
if [ ${#bad[@]} -gt 0 ]; then
    echo "FAIL: not formatted (run make format): ${bad[*]}"
    clang-format --dry-run "${bad[0]}" 2>&1 | head -20
    exit 1
fi
echo "PASS: $(git ls-files '*.c' '*.h' | wc -l) files formatted"
