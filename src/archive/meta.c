/* meta.json: Go-compatible encoding and decoding of raft.SnapshotMeta.
 *
 * Hand-written rather than jansson because the bytes and the acceptance rules must be Go's:
 * the encoder escapes < > & U+2028 U+2029 and invalid UTF-8 as encoding/json does (jansson
 * cannot), and the decoder needs the full uint64 range, case-insensitive keys with Go's folding,
 * "last duplicate wins" merging into existing values, invalid UTF-8 turned into U+FFFD, and
 * rejection of "-0" or "1e2" in integer fields, none of which jansson's model exposes. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/digest.h"
#include "cairn/snapshot.h"
#include "common/buf.h"
#include "common/util.h"

/* ---------------------------------------------------------------- UTF-8 */

/* Go's utf8.DecodeRune: returns the length; invalid input gives U+FFFD with length 1. */
static size_t go_decode_rune(const uint8_t *s, size_t n, uint32_t *r)
{
    size_t len = utf8_decode(s, n, r);
    if (len == 0)
        *r = 0xfffd, len = 1;
    return len;
}

/* ---------------------------------------------------------------- encoder */

void cairn_snapshot_meta_encode(const struct cairn_snapshot_meta *m, char **out, size_t *len)
{
    struct buf b = {0};
    buf_printf(&b, "{\"Version\":%lld,\"ID\":", (long long)m->version);
    buf_json_string(&b, m->id, BUF_JSON_SHORT_BF);
    buf_printf(&b, ",\"Index\":%llu,\"Term\":%llu,\"Peers\":", (unsigned long long)m->index,
               (unsigned long long)m->term);
    if (m->peers == NULL) {
        buf_adds(&b, "null");
    } else {
        char *enc = xmalloc(4 * ((m->peers_len + 2) / 3) + 1);
        size_t n = cairn_base64_encode(m->peers, m->peers_len, enc);
        buf_add(&b, "\"", 1);
        buf_add(&b, enc, n);
        buf_add(&b, "\"", 1);
        free(enc);
    }
    buf_adds(&b, ",\"Configuration\":{\"Servers\":");
    if (m->nservers == 0) {
        buf_adds(&b, "null");
    } else {
        buf_add(&b, "[", 1);
        for (size_t i = 0; i < m->nservers; i++) {
            buf_printf(&b, "%s{\"Suffrage\":%lld,\"ID\":", i ? "," : "",
                       (long long)m->servers[i].suffrage);
            buf_json_string(&b, m->servers[i].id, BUF_JSON_SHORT_BF);
            buf_adds(&b, ",\"Address\":");
            buf_json_string(&b, m->servers[i].address, BUF_JSON_SHORT_BF);
            buf_add(&b, "}", 1);
        }
        buf_add(&b, "]", 1);
    }
    buf_printf(&b, "},\"ConfigurationIndex\":%llu,\"Size\":%lld}\n",
               (unsigned long long)m->configuration_index, (long long)m->size);
    *out = (char *)b.p;
    *len = b.len;
}

void cairn_snapshot_meta_free(struct cairn_snapshot_meta *m)
{
    if (m == NULL)
        return;
    free(m->id);
    free(m->peers);
    for (size_t i = 0; i < m->nservers; i++) {
        free(m->servers[i].id);
        free(m->servers[i].address);
    }
    free(m->servers);
    memset(m, 0, sizeof(*m));
}

/* ---------------------------------------------------------------- decoder */

#define MAX_DEPTH 10000 /* encoding/json's maxNestingDepth */

struct jp {
    const uint8_t *s;
    size_t len, pos;
    int depth;
    struct cairn_err *err;
    int syntax; /* a syntax error was recorded: stop */
    int typed;  /* a type error was recorded: keep going, report it at the end */
    struct cairn_err type_err;
};

static void quote_char(uint8_t c, char *out, size_t cap)
{
    if (c == '\'')
        snprintf(out, cap, "'\\''");
    else if (c >= 0x20 && c < 0x7f)
        snprintf(out, cap, "'%c'", c);
    else if (c == '\n' || c == '\r' || c == '\t')
        snprintf(out, cap, "'\\%c'", c == '\n' ? 'n' : c == '\r' ? 'r' : 't');
    else
        snprintf(out, cap, "'\\x%02x'", c);
}

static int jp_syntax(struct jp *p, const char *context)
{
    if (p->pos >= p->len)
        cairn_err_set(p->err, CAIRN_E_CORRUPT, "unexpected end of JSON input");
    else {
        char q[16];
        quote_char(p->s[p->pos], q, sizeof(q));
        cairn_err_set(p->err, CAIRN_E_CORRUPT, "invalid character %s %s", q, context);
    }
    p->syntax = 1;
    return -1;
}

static void jp_type(struct jp *p, const char *what, const char *field, const char *gotype)
{
    if (!p->typed)
        cairn_err_set(&p->type_err, CAIRN_E_CORRUPT,
                      "json: cannot unmarshal %s into Go struct field %s of type %s", what, field,
                      gotype);
    p->typed = 1;
}

static void jp_ws(struct jp *p)
{
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
                               p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
        p->pos++;
}

/* After an element: ',' means another follows (1), close ends the container (0), anything
 * else is a syntax error (-1) with Go's text. */
static int jp_next(struct jp *p, char close, const char *context)
{
    jp_ws(p);
    if (p->pos < p->len && p->s[p->pos] == ',') {
        p->pos++;
        return 1;
    }
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
        return 0;
    }
    return jp_syntax(p, context);
}

static int hexval(uint8_t c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* A string at p->pos; *out (may be NULL) gets Go's unquoted value, malloc'd. Long (90 lines)
 * because it is one pass over Go's whole string grammar (escapes, surrogate pairs, invalid UTF-8
 * as U+FFFD): the rules are easier to check against encoding/json side by side. */
static int jp_string(struct jp *p, char **out, size_t *out_len)
{
    struct buf b = {0};
    p->pos++; /* opening quote */
    for (;;) {
        if (p->pos >= p->len)
            goto bad;
        uint8_t c = p->s[p->pos];
        if (c == '"') {
            p->pos++;
            break;
        }
        if (c < 0x20) {
            jp_syntax(p, "in string literal");
            goto fail;
        }
        if (c == '\\') {
            p->pos++;
            if (p->pos >= p->len)
                goto bad;
            c = p->s[p->pos];
            const char *simple = strchr("\"\\/bfnrt", c);
            if (c != 0 && simple != NULL) {
                static const char map[] = "\"\\/\b\f\n\r\t";
                char ch = map[simple - "\"\\/bfnrt"];
                buf_add(&b, &ch, 1);
                p->pos++;
                continue;
            }
            if (c != 'u') {
                jp_syntax(p, "in string escape code");
                goto fail;
            }
            uint32_t r = 0;
            for (int i = 0; i < 4; i++) {
                p->pos++;
                if (p->pos >= p->len)
                    goto bad;
                int h = hexval(p->s[p->pos]);
                if (h < 0) {
                    jp_syntax(p, "in \\u hexadecimal character escape");
                    goto fail;
                }
                r = r << 4 | (uint32_t)h;
            }
            p->pos++;
            if (r >= 0xd800 && r < 0xe000) {
                /* A high surrogate followed by an escaped low one makes a pair; anything else
                 * becomes U+FFFD (Go's unquote). */
                uint32_t r2 = 0;
                int ok = r < 0xdc00 && p->pos + 6 <= p->len && p->s[p->pos] == '\\' &&
                         p->s[p->pos + 1] == 'u';
                for (int i = 0; ok && i < 4; i++) {
                    int h = hexval(p->s[p->pos + 2 + i]);
                    ok = h >= 0;
                    r2 = r2 << 4 | (uint32_t)(h < 0 ? 0 : h);
                }
                if (ok && r2 >= 0xdc00 && r2 < 0xe000) {
                    r = 0x10000 + ((r - 0xd800) << 10) + (r2 - 0xdc00);
                    p->pos += 6;
                } else {
                    r = 0xfffd;
                }
            }
            char enc[4];
            buf_add(&b, enc, utf8_encode(r, enc));
            continue;
        }
        uint32_t r;
        size_t n = go_decode_rune(p->s + p->pos, p->len - p->pos, &r);
        if (r == 0xfffd && n == 1)
            buf_add(&b, "\xef\xbf\xbd", 3);
        else
            buf_add(&b, p->s + p->pos, n);
        p->pos += n;
    }
    if (out != NULL) {
        if (b.p == NULL)
            b.p = (uint8_t *)xstrdup("");
        *out = (char *)b.p;
        if (out_len)
            *out_len = b.len;
    } else {
        free(b.p);
    }
    return 0;
bad:
    jp_syntax(p, "");
fail:
    free(b.p);
    return -1;
}

/* A number literal at p->pos (syntax only); [*start, *end) is its text. */
static int jp_number(struct jp *p, size_t *start, size_t *end)
{
    *start = p->pos;
    if (p->s[p->pos] == '-')
        p->pos++;
    if (p->pos >= p->len)
        return jp_syntax(p, "in numeric literal");
    if (p->s[p->pos] == '0') {
        p->pos++;
    } else if (p->s[p->pos] >= '1' && p->s[p->pos] <= '9') {
        while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
            p->pos++;
    } else {
        return jp_syntax(p, "in numeric literal");
    }
    if (p->pos < p->len && p->s[p->pos] == '.') {
        p->pos++;
        if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '9')
            return jp_syntax(p, "after decimal point in numeric literal");
        while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
            p->pos++;
    }
    if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        p->pos++;
        if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-'))
            p->pos++;
        if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '9')
            return jp_syntax(p, "in exponent of numeric literal");
        while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
            p->pos++;
    }
    *end = p->pos;
    return 0;
}

static int jp_literal(struct jp *p, const char *word)
{
    for (size_t i = 0; word[i]; i++, p->pos++) {
        if (p->pos >= p->len || p->s[p->pos] != (uint8_t)word[i]) {
            char ctx[48];
            snprintf(ctx, sizeof(ctx), "in literal %s (expecting '%c')", word, word[i]);
            return jp_syntax(p, ctx);
        }
    }
    return 0;
}

/* Skip any value iteratively (bounded by MAX_DEPTH without recursion). Kinds: 's' string,
 * 'n' number, 'b' bool, 'z' null, 'o' object, 'a' array. Long (100 lines): one explicit
 * stack machine, whose state would only be scattered by splitting it. */
static int jp_skip(struct jp *p, char *kind)
{
    uint8_t stack[MAX_DEPTH / 8 + 1]; /* bit set: 1 = inside an object */
    int base = p->depth, top = 0;
    int expect_key = 0;
    for (;;) {
        jp_ws(p);
        if (p->pos >= p->len)
            return jp_syntax(p, "");
        uint8_t c = p->s[p->pos];
        if (expect_key) {
            if (c != '"')
                return jp_syntax(p, "looking for beginning of object key string");
            if (jp_string(p, NULL, NULL) != 0)
                return -1;
            jp_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':')
                return jp_syntax(p, "after object key");
            p->pos++;
            expect_key = 0;
            continue;
        }
        int opened = 0;
        if (c == '{' || c == '[') {
            if (p->depth + 1 > MAX_DEPTH) {
                cairn_err_set(p->err, CAIRN_E_CORRUPT, "exceeded max depth");
                p->syntax = 1;
                return -1;
            }
            if (top == 0 && kind)
                *kind = c == '{' ? 'o' : 'a';
            p->depth++;
            int d = p->depth - base - 1;
            if (c == '{')
                stack[d / 8] |= (uint8_t)(1u << (d % 8));
            else
                stack[d / 8] &= (uint8_t) ~(1u << (d % 8));
            top++;
            p->pos++;
            jp_ws(p);
            if (p->pos < p->len && p->s[p->pos] == (c == '{' ? '}' : ']')) {
                p->pos++;
                p->depth--;
                top--;
            } else if (c == '{') {
                expect_key = 1;
                continue;
            } else {
                continue;
            }
            opened = 1;
        }
        if (!opened) {
            char k;
            if (c == '"') {
                k = 's';
                if (jp_string(p, NULL, NULL) != 0)
                    return -1;
            } else if (c == '-' || (c >= '0' && c <= '9')) {
                size_t a, b;
                k = 'n';
                if (jp_number(p, &a, &b) != 0)
                    return -1;
            } else if (c == 't' || c == 'f') {
                k = 'b';
                if (jp_literal(p, c == 't' ? "true" : "false") != 0)
                    return -1;
            } else if (c == 'n') {
                k = 'z';
                if (jp_literal(p, "null") != 0)
                    return -1;
            } else {
                return jp_syntax(p, "looking for beginning of value");
            }
            if (top == 0 && kind)
                *kind = k;
        }
        /* After a complete value: close containers or move to the next element. */
        for (;;) {
            if (top == 0)
                return 0;
            int d = p->depth - base - 1;
            int in_obj = (stack[d / 8] >> (d % 8)) & 1;
            jp_ws(p);
            if (p->pos >= p->len)
                return jp_syntax(p, "");
            c = p->s[p->pos];
            if (c == ',') {
                p->pos++;
                expect_key = in_obj;
                break;
            }
            if (c == (in_obj ? '}' : ']')) {
                p->pos++;
                p->depth--;
                top--;
                continue;
            }
            return jp_syntax(p, in_obj ? "after object key:value pair" : "after array element");
        }
    }
}

static const char *kind_name(char k)
{
    switch (k) {
    case 's': return "string";
    case 'n': return "number";
    case 'b': return "bool";
    case 'o': return "object";
    default: return "array";
    }
}

/* Peek the kind of the next value without consuming it. */
static char jp_peek(struct jp *p)
{
    jp_ws(p);
    if (p->pos >= p->len)
        return 0;
    switch (p->s[p->pos]) {
    case '"': return 's';
    case '{': return 'o';
    case '[': return 'a';
    case 't':
    case 'f': return 'b';
    case 'n': return 'z';
    case '-': return 'n';
    default: return p->s[p->pos] >= '0' && p->s[p->pos] <= '9' ? 'n' : '?';
    }
}

/* Skip a value of the wrong kind, recording Go's UnmarshalTypeError. */
static int jp_mismatch(struct jp *p, const char *field, const char *gotype)
{
    char k = 0;
    size_t start = p->pos;
    if (jp_skip(p, &k) != 0)
        return -1;
    if (k == 'z')
        return 0; /* null leaves the field alone */
    if (k == 'n') {
        char what[96];
        size_t n = p->pos - start;
        snprintf(what, sizeof(what), "number %.*s", (int)(n > 60 ? 60 : n),
                 (const char *)p->s + start);
        jp_type(p, what, field, gotype);
    } else {
        jp_type(p, kind_name(k), field, gotype);
    }
    return 0;
}

/* Integers: strconv.ParseInt/ParseUint on the literal text (no fraction, exponent, "-0" for
 * unsigned, or overflow). */
static int jp_int(struct jp *p, int is_signed, const char *field, const char *gotype, int64_t *si,
                  uint64_t *ui)
{
    if (jp_peek(p) != 'n')
        return jp_mismatch(p, field, gotype);
    size_t a, b;
    if (jp_number(p, &a, &b) != 0)
        return -1;
    const uint8_t *t = p->s + a;
    size_t n = b - a, i = 0;
    int neg = t[0] == '-', ok = 1;
    if (neg)
        i = 1;
    uint64_t x = 0;
    for (; i < n && ok; i++) {
        if (t[i] < '0' || t[i] > '9' || x > (UINT64_MAX - (uint64_t)(t[i] - '0')) / 10)
            ok = 0;
        else
            x = x * 10 + (uint64_t)(t[i] - '0');
    }
    if (ok && is_signed)
        ok = x <= (uint64_t)INT64_MAX + (uint64_t)neg;
    if (ok && !is_signed)
        ok = !neg;
    if (!ok) {
        char what[96];
        snprintf(what, sizeof(what), "number %.*s", (int)(n > 60 ? 60 : n), (const char *)t);
        jp_type(p, what, field, gotype);
        return 0;
    }
    if (is_signed)
        *si = neg ? (int64_t)(0 - x) : (int64_t)x;
    else
        *ui = x;
    return 0;
}

static int jp_str_field(struct jp *p, char **dst, const char *field, const char *gotype)
{
    if (jp_peek(p) != 's')
        return jp_mismatch(p, field, gotype);
    char *s;
    if (jp_string(p, &s, NULL) != 0)
        return -1;
    free(*dst);
    *dst = s;
    return 0;
}

/* Go's []byte: a base64 string (StdEncoding, which skips \r and \n), null, or an array of
 * uint8 numbers. Long (83 lines): the three forms Go accepts, each checked as Go does. */
static int jp_bytes(struct jp *p, uint8_t **dst, size_t *dst_len)
{
    const char *field = "SnapshotMeta.Peers";
    char k = jp_peek(p);
    if (k == 'z') {
        if (jp_literal(p, "null") != 0)
            return -1;
        free(*dst);
        *dst = NULL;
        *dst_len = 0;
        return 0;
    }
    if (k == 's') {
        char *s;
        size_t n;
        if (jp_string(p, &s, &n) != 0)
            return -1;
        size_t w = 0;
        for (size_t i = 0; i < n; i++)
            if (s[i] != '\r' && s[i] != '\n')
                s[w++] = s[i];
        uint8_t *out = xmalloc(w / 4 * 3 + 3);
        size_t olen = 0;
        if (cairn_base64_decode(s, w, out, w / 4 * 3 + 3, &olen) != 0) {
            free(out);
            free(s);
            if (!p->typed)
                cairn_err_set(&p->type_err, CAIRN_E_CORRUPT, "illegal base64 data in %s", field);
            p->typed = 1;
            return 0;
        }
        free(s);
        free(*dst);
        *dst = out;
        *dst_len = olen;
        return 0;
    }
    if (k == 'a') {
        struct buf b = {0};
        p->pos++;
        if (++p->depth > MAX_DEPTH) {
            free(b.p);
            cairn_err_set(p->err, CAIRN_E_CORRUPT, "exceeded max depth");
            p->syntax = 1;
            return -1;
        }
        jp_ws(p);
        int first = 1;
        for (;;) {
            jp_ws(p);
            if (p->pos < p->len && p->s[p->pos] == ']' && first) {
                p->pos++;
                break;
            }
            uint64_t v = 0;
            size_t before = p->pos;
            if (jp_int(p, 0, "SnapshotMeta.Peers", "uint8", NULL, &v) != 0) {
                free(b.p);
                return -1;
            }
            if (v > 255) {
                char what[64];
                snprintf(what, sizeof(what), "number %.*s", (int)(p->pos - before),
                         (const char *)p->s + before);
                jp_type(p, what, field, "uint8");
            }
            uint8_t byte = (uint8_t)v;
            buf_add(&b, &byte, 1);
            first = 0;
            int more = jp_next(p, ']', "after array element");
            if (more < 0) {
                free(b.p);
                return -1;
            }
            if (!more)
                break;
        }
        p->depth--;
        free(*dst);
        *dst = b.p ? b.p : xmalloc(1);
        *dst_len = b.len;
        return 0;
    }
    return jp_mismatch(p, field, "[]uint8");
}

/* Go's case-insensitive key match (appendFoldedName: ASCII case, U+017F ~ 's', U+212A ~ 'k'). */
static int key_matches(const char *key, size_t klen, const char *field)
{
    const uint8_t *k = (const uint8_t *)key;
    size_t i = 0, j = 0, flen = strlen(field);
    while (i < klen && j < flen) {
        uint8_t f = (uint8_t)field[j];
        if (f >= 'a' && f <= 'z')
            f = (uint8_t)(f - 32);
        if (k[i] < 0x80) {
            uint8_t c = k[i] >= 'a' && k[i] <= 'z' ? (uint8_t)(k[i] - 32) : k[i];
            if (c != f)
                return 0;
            i++;
        } else if (klen - i >= 2 && k[i] == 0xc5 && k[i + 1] == 0xbf && f == 'S') {
            i += 2;
        } else if (klen - i >= 3 && k[i] == 0xe2 && k[i + 1] == 0x84 && k[i + 2] == 0xaa &&
                   f == 'K') {
            i += 3;
        } else {
            return 0;
        }
        j++;
    }
    return i == klen && j == flen;
}

/* Iterate an object: calls field(p, key, klen, ctx) positioned at each value. */
typedef int (*field_fn)(struct jp *p, const char *key, size_t klen, void *ctx);

static int jp_object(struct jp *p, field_fn fn, void *ctx)
{
    p->pos++; /* '{' */
    if (++p->depth > MAX_DEPTH) {
        cairn_err_set(p->err, CAIRN_E_CORRUPT, "exceeded max depth");
        p->syntax = 1;
        return -1;
    }
    jp_ws(p);
    if (p->pos < p->len && p->s[p->pos] == '}') {
        p->pos++;
        p->depth--;
        return 0;
    }
    for (;;) {
        jp_ws(p);
        if (p->pos >= p->len || p->s[p->pos] != '"')
            return jp_syntax(p, "looking for beginning of object key string");
        char *key;
        size_t klen;
        if (jp_string(p, &key, &klen) != 0)
            return -1;
        jp_ws(p);
        if (p->pos >= p->len || p->s[p->pos] != ':') {
            free(key);
            return jp_syntax(p, "after object key");
        }
        p->pos++;
        jp_ws(p);
        int rc = fn(p, key, klen, ctx);
        free(key);
        if (rc != 0)
            return -1;
        int more = jp_next(p, '}', "after object key:value pair");
        if (more < 0)
            return -1;
        if (!more) {
            p->depth--;
            return 0;
        }
    }
}

static int server_field(struct jp *p, const char *key, size_t klen, void *ctx)
{
    struct cairn_snapshot_server *s = ctx;
    if (key_matches(key, klen, "Suffrage"))
        return jp_int(p, 1, "SnapshotMeta.Configuration.Servers.Suffrage", "raft.ServerSuffrage",
                      &s->suffrage, NULL);
    if (key_matches(key, klen, "ID"))
        return jp_str_field(p, &s->id, "SnapshotMeta.Configuration.Servers.ID", "raft.ServerID");
    if (key_matches(key, klen, "Address"))
        return jp_str_field(p, &s->address, "SnapshotMeta.Configuration.Servers.Address",
                            "raft.ServerAddress");
    return jp_skip(p, NULL);
}

static void free_servers_from(struct cairn_snapshot_meta *m, size_t from)
{
    for (size_t i = from; i < m->nservers; i++) {
        free(m->servers[i].id);
        free(m->servers[i].address);
    }
    m->nservers = from;
    if (from == 0) {
        free(m->servers);
        m->servers = NULL;
    }
}

/* Go decodes a JSON array into an existing slice element by element (merging into the old
 * elements), then truncates it; null sets it to nil. */
static int jp_servers(struct jp *p, struct cairn_snapshot_meta *m)
{
    const char *field = "SnapshotMeta.Configuration.Servers";
    char k = jp_peek(p);
    if (k == 'z') {
        if (jp_literal(p, "null") != 0)
            return -1;
        free_servers_from(m, 0);
        return 0;
    }
    if (k != 'a')
        return jp_mismatch(p, field, "[]raft.Server");
    p->pos++;
    if (++p->depth > MAX_DEPTH) {
        cairn_err_set(p->err, CAIRN_E_CORRUPT, "exceeded max depth");
        p->syntax = 1;
        return -1;
    }
    size_t i = 0, cap = m->nservers;
    jp_ws(p);
    if (p->pos < p->len && p->s[p->pos] == ']') {
        p->pos++;
    } else {
        for (;;) {
            if (i == cap) {
                cap = cap ? cap * 2 : 4;
                m->servers = xrealloc(m->servers, cap * sizeof(*m->servers));
            }
            if (i >= m->nservers) {
                memset(&m->servers[i], 0, sizeof(m->servers[i]));
                m->nservers = i + 1;
            }
            char ek = jp_peek(p);
            int rc;
            if (ek == 'o')
                rc = jp_object(p, server_field, &m->servers[i]);
            else
                rc = jp_mismatch(p, field, "raft.Server");
            if (rc != 0)
                return -1;
            i++;
            int more = jp_next(p, ']', "after array element");
            if (more < 0)
                return -1;
            if (!more)
                break;
        }
    }
    p->depth--;
    free_servers_from(m, i); /* [] and null both leave no servers; both encode as null */
    return 0;
}

static int config_field(struct jp *p, const char *key, size_t klen, void *ctx)
{
    if (key_matches(key, klen, "Servers"))
        return jp_servers(p, ctx);
    return jp_skip(p, NULL);
}

static int meta_field(struct jp *p, const char *key, size_t klen, void *ctx)
{
    struct cairn_snapshot_meta *m = ctx;
    if (key_matches(key, klen, "Version"))
        return jp_int(p, 1, "SnapshotMeta.Version", "raft.SnapshotVersion", &m->version, NULL);
    if (key_matches(key, klen, "ID"))
        return jp_str_field(p, &m->id, "SnapshotMeta.ID", "string");
    if (key_matches(key, klen, "Index"))
        return jp_int(p, 0, "SnapshotMeta.Index", "uint64", NULL, &m->index);
    if (key_matches(key, klen, "Term"))
        return jp_int(p, 0, "SnapshotMeta.Term", "uint64", NULL, &m->term);
    if (key_matches(key, klen, "Peers"))
        return jp_bytes(p, &m->peers, &m->peers_len);
    if (key_matches(key, klen, "Configuration")) {
        if (jp_peek(p) != 'o')
            return jp_mismatch(p, "SnapshotMeta.Configuration", "raft.Configuration");
        return jp_object(p, config_field, m);
    }
    if (key_matches(key, klen, "ConfigurationIndex"))
        return jp_int(p, 0, "SnapshotMeta.ConfigurationIndex", "uint64", NULL,
                      &m->configuration_index);
    if (key_matches(key, klen, "Size"))
        return jp_int(p, 1, "SnapshotMeta.Size", "int64", &m->size, NULL);
    return jp_skip(p, NULL);
}

int cairn_snapshot_meta_decode(const char *json, size_t len, struct cairn_snapshot_meta *m,
                               struct cairn_err *err)
{
    memset(m, 0, sizeof(*m));
    struct jp p = {(const uint8_t *)json, len, 0, 0, err, 0, 0, {0}};
    jp_ws(&p);
    int rc;
    if (jp_peek(&p) == 'o') {
        rc = jp_object(&p, meta_field, m);
    } else {
        char k = 0;
        rc = jp_skip(&p, &k);
        if (rc == 0 && k != 'z' && !p.typed) {
            cairn_err_set(&p.type_err, CAIRN_E_CORRUPT,
                          "json: cannot unmarshal %s into Go value of type raft.SnapshotMeta",
                          kind_name(k));
            p.typed = 1;
        }
    }
    if (rc == 0) {
        jp_ws(&p);
        if (p.pos < p.len)
            rc = jp_syntax(&p, "after top-level value");
    }
    if (rc == 0 && p.typed) {
        cairn_err_copy(err, &p.type_err);
        rc = -1;
    }
    if (rc != 0) {
        cairn_snapshot_meta_free(m);
        return CAIRN_E_CORRUPT;
    }
    return CAIRN_OK;
}
