/* The growable byte buffer (buf.h). */
#include "common/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

/* Room for n more bytes and the NUL. */
static void buf_reserve(struct buf *b, size_t n)
{
    if (b->len + n + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1)
        cap *= 2;
    b->p = xrealloc(b->p, cap);
    b->cap = cap;
}

void buf_add(struct buf *b, const void *data, size_t len)
{
    buf_reserve(b, len);
    if (len > 0)
        memcpy(b->p + b->len, data, len);
    b->len += len;
    b->p[b->len] = 0;
}

void buf_addc(struct buf *b, uint8_t c)
{
    buf_add(b, &c, 1);
}

void buf_adds(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

/* Printed straight into the buffer, sized by a measuring pass: no fixed-size scratch. */
void buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf((char *)b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void buf_free(struct buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* The escape of an ASCII byte, or NULL when it stands for itself; tmp holds \u00XX. */
static const char *json_ascii_escape(uint8_t c, unsigned flags, char tmp[7])
{
    static const char hex[] = "0123456789abcdef";
    switch (c) {
    case '"': return "\\\"";
    case '\\': return "\\\\";
    case '\n': return "\\n";
    case '\r': return "\\r";
    case '\t': return "\\t";
    case '\b':
        if (flags & BUF_JSON_SHORT_BF)
            return "\\b";
        break;
    case '\f':
        if (flags & BUF_JSON_SHORT_BF)
            return "\\f";
        break;
    case '<':
    case '>':
    case '&': break;
    default:
        if (c >= 0x20)
            return NULL;
    }
    memcpy(tmp, "\\u00", 4);
    tmp[4] = hex[c >> 4], tmp[5] = hex[c & 15], tmp[6] = 0;
    return tmp;
}

void buf_json_string(struct buf *b, const char *str, unsigned flags)
{
    const uint8_t *s = (const uint8_t *)(str ? str : "");
    size_t n = strlen((const char *)s);
    buf_addc(b, '"');
    for (size_t i = 0; i < n;) {
        char tmp[7];
        uint32_t cp;
        size_t len = utf8_decode(s + i, n - i, &cp);
        const char *esc = len == 1 ? json_ascii_escape(s[i], flags, tmp) : NULL;
        if (len == 0)
            buf_adds(b, "\\ufffd"), len = 1;
        else if (esc)
            buf_adds(b, esc);
        else if (cp == 0x2028 || cp == 0x2029)
            buf_adds(b, cp == 0x2028 ? "\\u2028" : "\\u2029");
        else
            buf_add(b, s + i, len);
        i += len;
    }
    buf_addc(b, '"');
}
