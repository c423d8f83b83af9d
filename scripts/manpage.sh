#!/usr/bin/env bash
# Write the man page of a cairn program from its own --help texts, so the page never drifts
# from the program: help2man renders `PROG --help` (usage, commands, exit codes) and
# `PROG --version`; every command's `PROG CMD --help` (and every snapshot verb's) follows in
# a COMMANDS section, verbatim; man/PROG.h2m adds the hand-written sections (FILES,
# ENVIRONMENT, SEE ALSO).
#   scripts/manpage.sh BINARY SECTION OUT
set -euo pipefail
bin=$1 section=$2 out=$3
here=$(cd "$(dirname "$0")/.." && pwd)
name=$(basename "$bin")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# roff-safe verbatim text: backslashes doubled, a leading dot or quote escaped.
verbatim() { sed -e 's/\\/\\\\/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"; }
# A command's help without the exit-code table, which the page gives once.
no_codes() { awk '/^Exit codes:/{skip=1; next} skip && /^$/{skip=0; next} !skip'; }

commands=$("$bin" --help | awk '/^Commands:/{on=1; next} on && /^  [a-z]/{print $1} on && /^$/{on=0}')
{
    echo "[COMMANDS]"
    for c in $commands; do
        [ "$c" = version ] && continue
        echo ".SS \"$name $c\""
        echo ".nf"
        "$bin" "$c" --help 2>&1 | no_codes | verbatim
        echo ".fi"
        if [ "$name $c" = "cairn snapshot" ]; then
            for v in save inspect verify extract; do
                echo ".SS \"$name $c $v\""
                echo ".nf"
                "$bin" "$c" "$v" --help 2>&1 | no_codes | verbatim
                echo ".fi"
            done
        fi
    done
} >"$work/commands.h2m"
includes=(--include "$work/commands.h2m")
[ -f "$here/man/$name.h2m" ] && includes+=(--include "$here/man/$name.h2m")
help2man --no-info --section "$section" --source cairn \
    --name "$("$bin" --help | sed -n '3p' | sed -e "s/^$name //" -e 's/\.$//')" \
    "${includes[@]}" --output "$out.tmp" "$bin"
mv "$out.tmp" "$out"
