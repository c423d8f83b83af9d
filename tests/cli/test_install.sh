#!/usr/bin/env bash
# `cmake --install` into a temporary prefix yields a usable libcairn: headers, static and
# shared libraries, pkg-config file; a C and a C++ consumer compile against it (by pkg-config
# alone) and run, linked to libcairn.so and, by `pkg-config --static`, to libcairn.a; the man
# pages cairn(1) and cairnd(8) are installed and render without warnings.
set -euo pipefail
: "${CAIRN_BIN:?}" "${CAIRN_SOURCE_DIR:?}"
. "$CAIRN_SOURCE_DIR/tests/harness/skips.sh"
command -v cc >/dev/null 2>&1 || missing "no C compiler (cc)"
command -v c++ >/dev/null 2>&1 || missing "no C++ compiler (c++, Debian package g++)"
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
#include <stdlib.h>
#include <string.h>
/* Names libcairn uses internally: a consumer's own definitions must not clash with them in a
 * static link (the installed libcairn.a has only the public symbols global). */
void *xmalloc(size_t n);
void *xmalloc(size_t n) { return malloc(n); }
int utf8_decode;
int pool_new;
int main(void)
{
    struct cairn_err err;
    free(xmalloc(1));
    (void)utf8_decode;
    (void)pool_new;
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
# static: libcairn.a and the libraries cairn.pc names for it
cc -std=c11 -Wall -Werror "$tmp/consumer.c" -o "$tmp/consumer-static" $(pkg-config --define-variable=prefix="$tmp/prefix" --cflags cairn) \
    "$libdir/libcairn.a" $(pkg-config --define-variable=prefix="$tmp/prefix" --static --libs cairn | sed 's/-lcairn\b//')
"$tmp/consumer-static"
# internal symbols stay hidden: libcairn.so exports and libcairn.a defines globally the same
# set, all of them cairn_ (the public API)
nm -D --defined-only "$libdir/libcairn.so" | awk '{print $3}' | sort >"$tmp/so.syms"
nm --defined-only "$libdir/libcairn.a" | awk 'NF == 3 && $2 ~ /[A-TV-Z]/ {print $3}' | sort >"$tmp/a.syms"
if ! cmp -s "$tmp/so.syms" "$tmp/a.syms" || grep -v '^cairn_' "$tmp/so.syms"; then
    echo "libcairn.so and libcairn.a do not expose exactly the cairn_ API:" >&2
    diff "$tmp/so.syms" "$tmp/a.syms" >&2 || true
    exit 1
fi

# Every public header, in C (pedantic) and in C++ (extern "C": the symbols link unmangled).
cat >"$tmp/headers.c" <<'C'
#include <cairn/common.h>
#include <cairn/digest.h>
#include <cairn/engine.h>
#include <cairn/err.h>
#include <cairn/io.h>
#include <cairn/log.h>
#include <cairn/influx.h>
#include <cairn/snapshot.h>
#include <cairn/state.h>
#include <cairn/storage.h>
#include <stdio.h>
#include <string.h>
/* Opens a file:// storage in the directory argv[1] and lists it (empty); the engine refuses
 * options without a source. */
int main(int argc, char **argv)
{
    struct cairn_err err;
    struct cairn_storage *st = NULL;
    struct cairn_backup_list l;
    struct cairn_engine_backup_opts bo;
    struct cairn_engine_backup_result br;
    char url[4096];
    if (argc != 2)
        return 2;
    memset(&bo, 0, sizeof bo);
    if (cairn_engine_backup(&bo, &br, &err) != CAIRN_E_INVALID) {
        fprintf(stderr, "engine: options without a source were not refused\n");
        return 1;
    }
    snprintf(url, sizeof url, "file://%s", argv[1]);
    if (cairn_storage_open(url, &st, &err) != CAIRN_OK) {
        fprintf(stderr, "open: %s\n", err.msg);
        return 1;
    }
    if (cairn_storage_list(st, &l, &err) != CAIRN_OK) {
        fprintf(stderr, "list: %s\n", err.msg);
        cairn_storage_free(st);
        return 1;
    }
    printf("%s %s %zu\n", cairn_version(), cairn_storage_url(st), l.count);
    cairn_backup_list_free(&l);
    cairn_storage_free(st);
    return l.count != 0 || strcmp(cairn_version(), CAIRN_VERSION_STRING) != 0;
}
C
cp "$tmp/headers.c" "$tmp/headers.cpp"
mkdir "$tmp/store"
pc() { pkg-config --define-variable=prefix="$tmp/prefix" "$@" cairn; }
cc -std=c11 -Wall -Wextra -pedantic -Werror "$tmp/headers.c" -o "$tmp/headers-c" $(pc --cflags --libs)
c++ -std=c++11 -Wall -Wextra -Werror -x c++ "$tmp/headers.cpp" -o "$tmp/headers-cxx" $(pc --cflags --libs)
LD_LIBRARY_PATH="$libdir" "$tmp/headers-c" "$tmp/store"
LD_LIBRARY_PATH="$libdir" "$tmp/headers-cxx" "$tmp/store"
# Without libcairn.so (a static-only install), `pkg-config --static` alone links libcairn.a.
rm "$libdir"/libcairn.so*
c++ -std=c++11 -Wall -Wextra -Werror -x c++ "$tmp/headers.cpp" -o "$tmp/headers-cxx-static" $(pc --cflags --static --libs)
cc -std=c11 -Wall -Werror "$tmp/headers.c" -o "$tmp/headers-c-static" $(pc --cflags --static --libs)
for exe in headers-cxx-static headers-c-static; do
    if readelf -d "$tmp/$exe" | grep -q 'NEEDED.*libcairn'; then
        echo "$exe needs libcairn.so: not a static link" >&2
        exit 1
    fi
    "$tmp/$exe" "$tmp/store"
done
"$tmp/prefix/bin/cairn" --version

# Man pages: generated from the programs' --help at build time (help2man), installed.
if [ ! -f "$CAIRN_BIN/man/cairn.1" ]; then
    command -v help2man >/dev/null 2>&1 && { echo "FAIL: help2man is here but no man pages were built"; exit 1; }
    missing "no help2man (Debian package help2man): no man pages to check"
fi
m1="$tmp/prefix/share/man/man1/cairn.1" m8="$tmp/prefix/share/man/man8/cairnd.8"
test -f "$m1" && test -f "$m8" || { echo "FAIL: man pages not installed"; exit 1; }
for want in '^\.SH COMMANDS' '^\.SS "cairn backup"' '^\.SS "cairn snapshot save"' \
    '^\.SH ENVIRONMENT' '^\.SH EXAMPLES' 'verification failed'; do
    grep -q "$want" "$m1" || { echo "FAIL: cairn.1 lacks $want"; exit 1; }
done
for want in '^\.SS "cairnd run"' '^\.SS "cairnd serve"' '^\.SH FILES' 'keep-last'; do
    grep -q "$want" "$m8" || { echo "FAIL: cairnd.8 lacks $want"; exit 1; }
done
if command -v groff >/dev/null 2>&1; then
    for page in "$m1" "$m8"; do
        warn=$(groff -man -ww -z "$page" 2>&1)
        [ -z "$warn" ] || { echo "FAIL: groff warns on $page: $warn"; exit 1; }
    done
fi
echo "1 passed, 0 failed"
