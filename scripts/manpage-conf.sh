#!/usr/bin/env bash
# cairnd.conf(5): man/cairnd.conf.5.scd with docs/cairnd.conf.example (every key, commented)
# inserted as its EXAMPLE section, rendered by scdoc, so the page and the example never differ.
#   scripts/manpage-conf.sh SOURCE_DIR OUT
set -euo pipefail
src=$1 out=$2
mkdir -p "$(dirname "$out")"
awk -v ex="$src/docs/cairnd.conf.example" '
    $0 == "@EXAMPLE@" { while ((getline l < ex) > 0) { gsub(/\t/, "        ", l); print l } next }
    { print }' "$src/man/cairnd.conf.5.scd" | scdoc >"$out.tmp"
mv "$out.tmp" "$out"
