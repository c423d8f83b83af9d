/* SHA256SUMS: writing, and checking with the reference reader's exact rules (bufio.Scanner
 * lines, fmt.Sscanf("%x  %s") per line), so archives Go accepts pass and the rest fail with
 * Go's messages. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "archive/internal.h"
#include "cairn/digest.h"
#include "common/util.h"

void archive_quote_n(const char *s, size_t len, char *out, size_t cap)
{
    size_t o = 0, i = 0;
    const unsigned char *p = (const unsigned char *)s;
#define PUT(...) (o += (size_t)snprintf(out + o, o < cap ? cap - o : 0, __VA_ARGS__))
    PUT("\"");
    for (; i < len && o + 8 < cap; i++) {
        unsigned char c = p[i];
        if (c == '"' || c == '\\')
            PUT("\\%c", c);
        else if (c == '\n')
            PUT("\\n");
        else if (c == '\t')
            PUT("\\t");
        else if (c == '\r')
            PUT("\\r");
        else if (c < 0x20 || c == 0x7f || c >= 0x80)
            PUT("\\x%02x", c);
        else
            PUT("%c", c);
    }
    if (i < len)
        PUT("...");
    PUT("\"");
#undef PUT
    out[cap - 1] = 0;
}

void archive_quote(const char *s, char *out, size_t cap)
{
    archive_quote_n(s, strlen(s), out, cap);
}

void archive_sums_encode(const uint8_t meta[32], const uint8_t state[32], char **out, size_t *len)
{
    char hm[65], hs[65];
    cairn_hex_encode(meta, 32, hm);
    cairn_hex_encode(state, 32, hs);
    *out = xasprintf("%s  meta.json\n%s  state.bin\n", hm, hs);
    *len = strlen(*out);
}

/* ---- a rune scanner over one line, as fmt's ss reads it ---- */
struct scan {
    const uint8_t *s;
    size_t len, pos;
};

#define SCAN_EOF (-1)

static long scan_rune(struct scan *sc, size_t *width)
{
    if (sc->pos >= sc->len) {
        *width = 0;
        return SCAN_EOF;
    }
    const uint8_t *b = sc->s + sc->pos;
    size_t n = sc->len - sc->pos;
    long r = 0xfffd;
    size_t w = 1;
    if (b[0] < 0x80) {
        r = b[0];
    } else {
        size_t need = b[0] >= 0xc2 && b[0] <= 0xdf   ? 1
                      : b[0] >= 0xe0 && b[0] <= 0xef ? 2
                      : b[0] >= 0xf0 && b[0] <= 0xf4 ? 3
                                                     : 0;
        long v = need == 1 ? (b[0] & 0x1f) : need == 2 ? (b[0] & 0x0f) : (b[0] & 0x07);
        long min = need == 1 ? 0x80 : need == 2 ? 0x800 : 0x10000;
        int ok = need > 0 && n > need;
        for (size_t i = 1; ok && i <= need; i++) {
            ok = (b[i] & 0xc0) == 0x80;
            v = v << 6 | (b[i] & 0x3f);
        }
        if (ok && v >= min && v <= 0x10ffff && !(v >= 0xd800 && v <= 0xdfff)) {
            r = v;
            w = need + 1;
        }
    }
    *width = w;
    return r;
}

static long scan_get(struct scan *sc)
{
    size_t w;
    long r = scan_rune(sc, &w);
    sc->pos += w;
    return r;
}

static long scan_peek(struct scan *sc)
{
    size_t w;
    return scan_rune(sc, &w);
}

/* fmt's isSpace table. */
static int go_space(long r)
{
    return (r >= 0x09 && r <= 0x0d) || r == 0x20 || r == 0x85 || r == 0xa0 || r == 0x1680 ||
           (r >= 0x2000 && r <= 0x200a) || r == 0x2028 || r == 0x2029 || r == 0x202f ||
           r == 0x205f || r == 0x3000;
}

static int hexdig(long r)
{
    return r >= '0' && r <= '9'   ? (int)(r - '0')
           : r >= 'a' && r <= 'f' ? (int)(r - 'a' + 10)
           : r >= 'A' && r <= 'F' ? (int)(r - 'A' + 10)
                                  : -1;
}

static void skip_space(struct scan *sc)
{
    while (sc->pos < sc->len && go_space(scan_peek(sc)))
        scan_get(sc);
}

/* fmt.Sscanf(line, "%x  %s", &digest, &name). Returns 0 or sets err (Go's texts). The name
 * is every byte up to a space, NUL included, as in Go: *name_len, not strlen, is its length. */
static int scan_line(struct scan *sc, uint8_t *digest, size_t *dlen, size_t dcap, char **name,
                     size_t *name_len, struct cairn_err *err)
{
    *dlen = 0;
    skip_space(sc);
    if (scan_peek(sc) == SCAN_EOF)
        return cairn_err_set(err, CAIRN_E_CORRUPT, "EOF");
    for (;;) {
        long r1 = scan_peek(sc);
        int v1 = hexdig(r1);
        if (r1 == SCAN_EOF || v1 < 0)
            break;
        scan_get(sc);
        long r2 = scan_get(sc);
        if (r2 == SCAN_EOF)
            return cairn_err_set(err, CAIRN_E_CORRUPT, "unexpected EOF");
        int v2 = hexdig(r2);
        if (v2 < 0)
            return cairn_err_set(err, CAIRN_E_CORRUPT, "illegal hex digit");
        if (*dlen < dcap)
            digest[*dlen] = (uint8_t)(v1 << 4 | v2);
        (*dlen)++;
    }
    if (*dlen == 0)
        return cairn_err_set(err, CAIRN_E_CORRUPT, "no hex data for %%x string");
    /* "  " in the format: at least one space in the input, or its end. */
    long c = scan_peek(sc);
    if (c != SCAN_EOF && !go_space(c))
        return cairn_err_set(err, CAIRN_E_CORRUPT, "expected space in input to match format");
    skip_space(sc);
    if (scan_peek(sc) == SCAN_EOF)
        return cairn_err_set(err, CAIRN_E_CORRUPT, "EOF");
    size_t start = sc->pos;
    while (sc->pos < sc->len && !go_space(scan_peek(sc)))
        scan_get(sc);
    size_t n = sc->pos - start;
    *name = xmalloc(n + 1);
    memcpy(*name, sc->s + start, n);
    (*name)[n] = 0;
    *name_len = n;
    return CAIRN_OK;
}

int archive_sums_verify(const uint8_t *text, size_t len, const uint8_t meta[32],
                        const uint8_t state[32], struct cairn_err *err)
{
    static const char *names[2] = {"meta.json", "state.bin"};
    const uint8_t *want[2] = {meta, state};
    int seen[2] = {0, 0};
    size_t off = 0;
    while (off < len) {
        /* bufio.ScanLines: split at '\n', drop one trailing '\r'; a last line without '\n'
         * counts; a line over 64 KiB is an error. */
        const uint8_t *nl = memchr(text + off, '\n', len - off);
        size_t end = nl ? (size_t)(nl - text) : len;
        size_t llen = end - off;
        if (llen >= 65536)
            return cairn_err_set(err, CAIRN_E_CORRUPT, "bufio.Scanner: token too long");
        if (llen > 0 && text[off + llen - 1] == '\r')
            llen--;
        struct scan sc = {text + off, llen, 0};
        off = nl ? end + 1 : len;
        uint8_t digest[32];
        size_t dlen;
        char *name = NULL;
        size_t nlen = 0;
        int rc = scan_line(&sc, digest, &dlen, sizeof(digest), &name, &nlen, err);
        if (rc != CAIRN_OK)
            return rc;
        /* Exact bytes, as Go's map lookup: "meta.json\x00" is another name. */
        int which = -1;
        for (int i = 0; i < 2; i++)
            if (nlen == strlen(names[i]) && memcmp(name, names[i], nlen) == 0)
                which = i;
        char q[160];
        archive_quote_n(name, nlen, q, sizeof(q));
        free(name);
        if (which < 0)
            return cairn_err_set(err, CAIRN_E_CORRUPT, "list missing hash for %s", q);
        if (dlen != 32 || memcmp(digest, want[which], 32) != 0)
            return cairn_err_set(err, CAIRN_E_CORRUPT, "hash check failed for %s", q);
        seen[which] = 1;
    }
    for (int i = 0; i < 2; i++)
        if (!seen[i])
            return cairn_err_set(err, CAIRN_E_CORRUPT, "file missing for \"%s\"", names[i]);
    return CAIRN_OK;
}
