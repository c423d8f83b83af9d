/* Minimal S3 XML extraction; see xml.h. */
#include "xml.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

/* Find needle in [p, end). */
static const char *find(const char *p, const char *end, const char *needle, size_t nlen)
{
    while ((size_t)(end - p) >= nlen) {
        const char *q = memchr(p, needle[0], (size_t)(end - p) - nlen + 1);
        if (q == NULL)
            return NULL;
        if (memcmp(q, needle, nlen) == 0)
            return q;
        p = q + 1;
    }
    return NULL;
}

int s3_xml_next(const char **pos, const char *end, const char *tag, struct xml_span *inner)
{
    size_t tlen = strlen(tag);
    if (tlen == 0 || tlen > 64)
        return 0;
    char open[70], close[70];
    open[0] = '<';
    memcpy(open + 1, tag, tlen);
    close[0] = '<';
    close[1] = '/';
    memcpy(close + 2, tag, tlen);
    close[tlen + 2] = '>';
    const char *p = *pos;
    while (p < end) {
        const char *q = find(p, end, open, tlen + 1);
        if (q == NULL)
            return 0;
        const char *after = q + tlen + 1;
        if (after < end && *after == '>') {
            const char *c = find(after + 1, end, close, tlen + 3);
            if (c == NULL)
                return 0;
            inner->p = after + 1;
            inner->len = (size_t)(c - (after + 1));
            *pos = c + tlen + 3;
            return 1;
        }
        if (end - after >= 2 && after[0] == '/' && after[1] == '>') {
            inner->p = after;
            inner->len = 0;
            *pos = after + 2;
            return 1;
        }
        p = q + 1; /* a longer tag with the same prefix, e.g. <KeyCount> for <Key> */
    }
    return 0;
}

char *s3_xml_text(struct xml_span s)
{
    /* Decoded text is never longer than the source (an entity is >= 4 bytes, UTF-8 <= 4). */
    char *out = xmalloc(s.len + 1);
    size_t o = 0;
    for (size_t i = 0; i < s.len;) {
        char c = s.p[i];
        if (c == '<') {
            free(out);
            return NULL; /* nested markup: not a text element */
        }
        if (c != '&') {
            out[o++] = c;
            i++;
            continue;
        }
        const char *semi = memchr(s.p + i, ';', s.len - i < 12 ? s.len - i : 12);
        if (semi == NULL) {
            free(out);
            return NULL;
        }
        size_t n = (size_t)(semi - (s.p + i)) + 1; /* whole entity incl. & and ; */
        const char *e = s.p + i + 1;
        size_t elen = n - 2;
        if (elen == 3 && memcmp(e, "amp", 3) == 0)
            out[o++] = '&';
        else if (elen == 2 && memcmp(e, "lt", 2) == 0)
            out[o++] = '<';
        else if (elen == 2 && memcmp(e, "gt", 2) == 0)
            out[o++] = '>';
        else if (elen == 4 && memcmp(e, "quot", 4) == 0)
            out[o++] = '"';
        else if (elen == 4 && memcmp(e, "apos", 4) == 0)
            out[o++] = '\'';
        else if (elen >= 2 && e[0] == '#') {
            int hex = e[1] == 'x' || e[1] == 'X';
            const char *digits = e + (hex ? 2 : 1), *dend = e + elen;
            char *stop = NULL;
            unsigned long cp = 0;
            if (digits < dend && isxdigit((unsigned char)*digits))
                cp = strtoul(digits, &stop, hex ? 16 : 10); /* stops at ';' */
            if (stop != dend || cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
                free(out);
                return NULL;
            }
            o += utf8_encode((uint32_t)cp, out + o);
        } else {
            free(out);
            return NULL;
        }
        i += n;
    }
    out[o] = '\0';
    return out;
}

char *s3_xml_get(const char *p, const char *end, const char *tag)
{
    struct xml_span s;
    if (!s3_xml_next(&p, end, tag, &s))
        return NULL;
    return s3_xml_text(s);
}

char *s3_xml_escape(const char *s)
{
    size_t n = 0;
    for (const char *p = s; *p; p++)
        n += (*p == '&') ? 5 : (*p == '<' || *p == '>') ? 4 : (*p == '"' || *p == '\'') ? 6 : 1;
    char *out = xmalloc(n + 1), *o = out;
    for (const char *p = s; *p; p++) {
        const char *rep = NULL;
        switch (*p) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        case '\'': rep = "&apos;"; break;
        }
        if (rep != NULL) {
            size_t l = strlen(rep);
            memcpy(o, rep, l);
            o += l;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
    return out;
}
