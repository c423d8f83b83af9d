#!/usr/bin/env bash
# `cmake --install` into a temporary prefix yields a usable libcairn: headers, static and
# shared libraries, pkg-config file; a consumer compiles against it and runs.
set -euo pipefail
: "${CAIRN_BIN:?}" "${CAIRN_SOURCE_DIR:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$CAIRN_BIN" --prefix "$tmp/prefix" >/dev/null
test -x "$tmp/prefix/bin/cairn"
test -x "$tmp/prefix/bin/cairnd"
test -f "$tmp/prefix/include/cairn/err.h"
libdir=$(realpath "$(dirname "$(find "$tmp/prefix" -name cairn.pc | head -n1)")/..")
cat >"$tmp/consumer.c" <<'C'
#include <cairn/digest.h>
#include <cairn/err.h>
#include <cairn/io.h>
#include <stdio.h>
#include <string.h>
int main(void)
{
    struct cairn_err err;
    struct cairn_writer *w = cairn_hash_writer_new(cairn_discard_writer_new());
    if (cairn_writer_write(w, "abc", 3, &err) || cairn_writer_close(w, &err))
        return 1;
    unsigned char d[32];
    char hex[65];
    cairn_hash_writer_digest(w, d);
    cairn_hex_encode(d, 32, hex);
    cairn_writer_free(w);
    printf("%s %s\n", cairn_version(), hex);
    return strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") != 0;
}
C
export PKG_CONFIG_PATH="$libdir/pkgconfig"
# shared
cc -std=c11 -Wall -Werror "$tmp/consumer.c" -o "$tmp/consumer" $(pkg-config --define-variable=prefix="$tmp/prefix" --cflags --libs cairn)
LD_LIBRARY_PATH="$libdir" "$tmp/consumer"
# static
cc -std=c11 -Wall -Werror "$tmp/consumer.c" -o "$tmp/consumer-static" $(pkg-config --define-variable=prefix="$tmp/prefix" --cflags cairn) \
    "$libdir/libcairn.a" $(pkg-config --libs $(sed -n 's/^Requires.private: //p' "$libdir/pkgconfig/cairn.pc")) -lpthread -lm
"$tmp/consumer-static"
# internal symbols stay hidden in the shared library
if nm -D --defined-only "$libdir/libcairn.so" | grep -q ' cairn_xmalloc$'; then
    echo "internal symbol cairn_xmalloc is exported" >&2
    exit 1
fi
"$tmp/prefix/bin/cairn" --version
echo "1 passed, 0 failed"
