/* The growable byte buffer (buf.h). */
#include "common/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

/* Room for n more bytes and the NUL. */
static void buf_reserve(struct cairn_buf *b, size_t n)
{
    if (b->len + n + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1)
        cap *= 2;
    b->p = cairn_xrealloc(b->p, cap);
    b->cap = cap;
}

void cairn_buf_add(struct cairn_buf *b, const void *data, size_t len)
{
    buf_reserve(b, len);
    if (len > 0)
        memcpy(b->p + b->len, data, len);
    b->len += len;
    b->p[b->len] = 0;
}

void cairn_buf_addc(struct cairn_buf *b, uint8_t c)
{
    cairn_buf_add(b, &c, 1);
}

void cairn_buf_adds(struct cairn_buf *b, const char *s)
{
    cairn_buf_add(b, s, strlen(s));
}

/* Printed straight into the buffer, sized by a measuring pass: no fixed-size scratch. */
void cairn_buf_printf(struct cairn_buf *b, const char *fmt, ...)
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

void cairn_buf_free(struct cairn_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}
