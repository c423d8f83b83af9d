#!/usr/bin/env bash
# One man page per command, from the command's own --help (so it never drifts): cairn-backup(1),
# cairn-snapshot-save(1), ..., cairnd-serve(8), cairnd-run(8), written as scdoc and rendered
# by scdoc into OUTDIR/manSECTION/. cairn(1) and cairnd(8) (scripts/manpage.sh) list them all.
#   scripts/manpage-cmd.sh BINARY SECTION OUTDIR
set -euo pipefail
bin=$1 section=$2 outdir=$3
name=$(basename "$bin")
mkdir -p "$outdir/man$section"
# scdoc text: * _ \ are markup; the help goes in a literal block, where nothing is.
top=$("$bin" --help)
commands=$(awk '/^Commands:/{on=1; next} on && /^  [a-z]/{print $1} on && /^$/{on=0}' <<<"$top")
summary() { awk -v c="$1" '$1 == c {$1=""; sub(/^ +/, ""); print}' <<<"$top" | head -n 1; }
page() { # page PAGE-NAME "CMD [VERB]" SUMMARY
    local page=$1 cmd=$2 what=$3 scd help
    scd=$(mktemp)
    {
        printf '%s(%s)\n\n# NAME\n\n%s - %s\n\n# SYNOPSIS\n\n```\n' "$page" "$section" "$page" "$what"
        # shellcheck disable=SC2086
        help=$("$bin" $cmd --help)
        awk '/^usage:/{on=1} on && /^$/{on=0; done=1} on && !done' <<<"$help" |
            sed 's/^usage: //; s/^       //'
        printf '```\n\n# DESCRIPTION\n\n```\n'
        awk 'p && /^Exit codes:/{stop=1} p && !stop {print} /^$/{p=1}' <<<"$help" |
            sed -e 's/\t/        /g'
        printf '```\n\n# EXIT STATUS\n\nAs for every command: see *%s*(%s) and docs/CLI.md. 0 is success, 2 a\nusage error; under *--json* the code is also the error object'"'"'s _exit_.\n\n' "$name" "$section"
        printf '# SEE ALSO\n\n*%s*(%s), *cairn*(1), *cairnd*(8), *cairnd.conf*(5)\n' "$name" "$section"
    } >"$scd"
    scdoc <"$scd" >"$outdir/man$section/$page.$section.tmp"
    mv "$outdir/man$section/$page.$section.tmp" "$outdir/man$section/$page.$section"
    rm -f "$scd"
}
for c in $commands; do
    [ "$c" = version ] && continue
    page "$name-$c" "$c" "$(summary "$c")"
done
if [ "$name" = cairn ]; then
    for v in save inspect verify extract; do
        page "cairn-snapshot-$v" "snapshot $v" "$(summary snapshot) ($v)"
    done
fi
