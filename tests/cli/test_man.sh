#!/usr/bin/env bash
# Every man page renders with `man -l` without a warning (groff -ww through man --warnings):
# cairn(1), cairnd(8), one page per command (cairn-backup(1), cairn-snapshot-save(1),
# cairnd-run(8), ...) and cairnd.conf(5); every command of `cairn help --commands` has its
# page and `cmake --install` installs them all, with the bash and zsh completions. The bash
# completion completes commands, verbs and options (from `cairn help --options CMD`).
set -euo pipefail
: "${CAIRN_BIN:?}" "${CAIRN_SOURCE_DIR:?}"
. "$CAIRN_SOURCE_DIR/tests/harness/skips.sh"
command -v man >/dev/null 2>&1 || missing "man (Debian package man-db)"
command -v scdoc >/dev/null 2>&1 || missing "scdoc (Debian package scdoc)"
fail() { echo "FAIL: $*"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
P="$CAIRN_BIN/man/pages"
pages=("$CAIRN_BIN/man/cairn.1" "$CAIRN_BIN/man/cairnd.8" "$P"/man1/*.1 "$P"/man5/*.5 "$P"/man8/*.8)
for c in $("$CAIRN_BIN/cairn" help --commands); do
    [ "$c" = version ] || [ -f "$P/man1/cairn-$c.1" ] || fail "no page cairn-$c(1)"
done
for c in $("$CAIRN_BIN/cairnd" help --commands); do
    [ "$c" = version ] || [ -f "$P/man8/cairnd-$c.8" ] || fail "no page cairnd-$c(8)"
done
[ -f "$P/man5/cairnd.conf.5" ] || fail "no cairnd.conf(5)"
n=0
for page in "${pages[@]}"; do
    out=$(MANWIDTH=80 LC_ALL=C.UTF-8 man --warnings -l "$page" 2>"$tmp/warn") || fail "man -l $page"
    [ -s "$tmp/warn" ] && fail "man warns on $page: $(head -3 "$tmp/warn")"
    grep -q "^NAME" <<<"$out" || fail "$page has no NAME section"
    n=$((n + 1))
done
MANWIDTH=80 man -l "$P/man1/cairn-backup.1" 2>/dev/null | grep -q "cairn backup --from etcd://" ||
    fail "cairn-backup(1) lacks the help's examples"
MANWIDTH=80 man -l "$P/man5/cairnd.conf.5" 2>/dev/null | grep -q "keep-last" ||
    fail "cairnd.conf(5) lacks the example's keys"

# Installed, with the completions.
cmake --install "$CAIRN_BIN" --prefix "$tmp/prefix" >/dev/null
for f in share/man/man1/cairn-backup.1 share/man/man1/cairn-snapshot-save.1 \
    share/man/man5/cairnd.conf.5 share/man/man8/cairnd-run.8 \
    share/bash-completion/completions/cairn share/bash-completion/completions/cairnd \
    share/zsh/vendor-completions/_cairn; do
    [ -f "$tmp/prefix/$f" ] || fail "not installed: $f"
done

# The bash completion, driven as bash drives it.
complete_words() { # complete_words WORD... : what bash offers for the last word
    PATH="$CAIRN_BIN:$PATH" bash -c '
        source "$1"; shift
        COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
        _cairn_complete; printf "%s\n" "${COMPREPLY[@]}"' _ \
        "$CAIRN_SOURCE_DIR/dist/completions/cairn.bash" "$@"
}
complete_words cairn bac | grep -qx backup || fail "bash: cairn bac -> backup"
complete_words cairn backup --fr | grep -qx -- --from= || fail "bash: --fr -> --from="
complete_words cairn snapshot ver | grep -qx verify || fail "bash: snapshot ver -> verify"
complete_words cairn list --js | grep -qx -- --json || fail "bash: list --js -> --json"
complete_words cairnd ru | grep -qx run || fail "bash: cairnd ru -> run"
complete_words cairn key pa | grep -qx passwd || fail "bash: key pa -> passwd"
[ "$("$CAIRN_BIN/cairn" help --verbs list)" = "" ] || fail "help --verbs list: not a verb command"
if command -v zsh >/dev/null 2>&1; then
    zsh -n "$CAIRN_SOURCE_DIR/dist/completions/_cairn" || fail "zsh: _cairn does not parse"
fi
echo "$n man pages render without warnings; installed with the completions: ok"
