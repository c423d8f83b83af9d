/* The block encodings of InfluxDB 1.x TSM files (tsdb/engine/tsm1: timestamp.go, int.go,
 * float.go, bool.go, string.go, simple8b): enough to decode every block a 1.x server writes
 * and to encode a block again, with the simplest encoding each decoder reads (raw timestamps
 * and integers, Gorilla floats, bit-packed booleans, snappy strings as literals). Decoders
 * check every length against the block: a damaged block is CAIRN_E_CORRUPT, never a read
 * past its end. */
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "tsm.h"

#define TS_RAW    0
#define TS_PACKED 1
#define TS_RLE    2
#define INT_RAW   0
#define INT_PACK  1
#define INT_RLE   2
#define FLOAT_END 0x7FF8000000000001ull /* Go's NaN: the end of a Gorilla stream */

static int bad(struct cairn_err *err, const char *what)
{
    return cairn_err_set(err, CAIRN_E_CORRUPT, "TSM block: %s", what);
}

static uint64_t be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void put_be64(struct buf *b, uint64_t v)
{
    uint8_t p[8];
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
    buf_add(b, p, 8);
}

static int grow(struct tsm_values *v, size_t n, struct cairn_err *err)
{
    if (n > TSM_MAX_VALUES)
        return bad(err, "more values than a block may hold");
    if (n > v->cap) {
        size_t cap = v->cap ? v->cap : 1024;
        while (cap < n)
            cap *= 2;
        v->u = xrealloc(v->u, cap * sizeof(*v->u));
        v->cap = cap;
    }
    return CAIRN_OK;
}

/* ---- simple8b (jwilder/encoding): 4-bit selector, values from the low bits up ---- */
static const uint8_t s8b_n[16] = {240, 120, 60, 30, 20, 15, 12, 10, 8, 7, 6, 5, 4, 3, 2, 1};
static const uint8_t s8b_bits[16] = {0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20, 30, 60};

/* Append the values of the 8-byte words in p[0..len) to v (from index v->n). */
static int s8b_decode(const uint8_t *p, size_t len, struct tsm_values *v, struct cairn_err *err)
{
    if (len % 8 != 0)
        return bad(err, "simple8b data is not whole words");
    for (size_t off = 0; off < len; off += 8) {
        uint64_t w = be64(p + off);
        unsigned sel = (unsigned)(w >> 60), n = s8b_n[sel], bits = s8b_bits[sel];
        int rc = grow(v, v->n + n, err);
        if (rc != CAIRN_OK)
            return rc;
        uint64_t mask = bits ? (1ull << bits) - 1 : 0;
        for (unsigned i = 0; i < n; i++)
            v->u[v->n++] = bits ? (w >> (i * bits)) & mask : 1;
    }
    return CAIRN_OK;
}

/* ---- timestamps ---- */

int tsm_decode_times(const uint8_t *p, size_t len, struct tsm_values *t, struct cairn_err *err)
{
    t->n = 0;
    if (len == 0)
        return CAIRN_OK;
    unsigned enc = p[0] >> 4;
    uint64_t div = 1;
    for (unsigned i = 0; i < (p[0] & 15u); i++)
        div *= 10;
    int rc;
    if (enc == TS_RAW) {
        if ((len - 1) % 8 != 0)
            return bad(err, "raw timestamps are not whole words");
        if ((rc = grow(t, (len - 1) / 8, err)) != CAIRN_OK)
            return rc;
        for (size_t off = 1; off < len; off += 8, t->n++)
            t->u[t->n] = be64(p + off) + (t->n ? t->u[t->n - 1] : 0);
        return CAIRN_OK;
    }
    if (len < 9)
        return bad(err, "timestamps too short");
    uint64_t first = be64(p + 1);
    if (enc == TS_PACKED) {
        if ((rc = grow(t, 1, err)) != CAIRN_OK)
            return rc;
        t->u[t->n++] = first;
        if ((rc = s8b_decode(p + 9, len - 9, t, err)) != CAIRN_OK)
            return rc;
        for (size_t i = 1; i < t->n; i++)
            t->u[i] = t->u[i - 1] + t->u[i] * div;
        return CAIRN_OK;
    }
    if (enc != TS_RLE)
        return bad(err, "unknown timestamp encoding");
    uint64_t delta, count;
    size_t a = pb_uvarint(p + 9, len - 9, &delta),
           b = a ? pb_uvarint(p + 9 + a, len - 9 - a, &count) : 0;
    if (b == 0)
        return bad(err, "invalid run-length timestamps");
    if ((rc = grow(t, count, err)) != CAIRN_OK)
        return rc;
    for (t->n = 0; t->n < count; t->n++)
        t->u[t->n] = first + t->n * delta * div;
    return CAIRN_OK;
}

/* Raw: the first time, then the differences, 8 bytes each. */
void tsm_encode_times(const uint64_t *t, size_t n, struct buf *out)
{
    buf_addc(out, TS_RAW << 4);
    for (size_t i = 0; i < n; i++)
        put_be64(out, i ? t[i] - t[i - 1] : t[0]);
}

/* ---- integers and unsigned: zigzag deltas ---- */

static uint64_t zz_enc(int64_t x)
{
    return ((uint64_t)x << 1) ^ (uint64_t)(x >> 63);
}

static int64_t zz_dec(uint64_t v)
{
    return (int64_t)((v >> 1) ^ (uint64_t)(-(int64_t)(v & 1)));
}

static int decode_ints(const uint8_t *p, size_t len, struct tsm_values *v, struct cairn_err *err)
{
    v->n = 0;
    if (len == 0)
        return CAIRN_OK;
    unsigned enc = p[0] >> 4;
    int rc;
    if (enc == INT_RLE) {
        uint64_t delta, count;
        size_t a = len >= 9 ? pb_uvarint(p + 9, len - 9, &delta) : 0;
        size_t b = a ? pb_uvarint(p + 9 + a, len - 9 - a, &count) : 0;
        if (b == 0 || count >= TSM_MAX_VALUES)
            return bad(err, "invalid run-length integers");
        if ((rc = grow(v, count + 1, err)) != CAIRN_OK)
            return rc;
        int64_t first = zz_dec(be64(p + 1)), d = zz_dec(delta);
        for (v->n = 0; v->n <= count; v->n++)
            v->u[v->n] = (uint64_t)first + (uint64_t)v->n * (uint64_t)d;
        return CAIRN_OK;
    }
    if (enc != INT_RAW && enc != INT_PACK)
        return bad(err, "unknown integer encoding");
    if ((len - 1) % 8 != 0 || len < 9)
        return bad(err, "integers are not whole words");
    if (enc == INT_RAW) {
        if ((rc = grow(v, (len - 1) / 8, err)) != CAIRN_OK)
            return rc;
        for (size_t off = 1; off < len; off += 8, v->n++)
            v->u[v->n] = be64(p + off);
    } else {
        if ((rc = grow(v, 1, err)) != CAIRN_OK)
            return rc;
        v->u[v->n++] = be64(p + 1);
        if ((rc = s8b_decode(p + 9, len - 9, v, err)) != CAIRN_OK)
            return rc;
    }
    uint64_t prev = 0;
    for (size_t i = 0; i < v->n; i++)
        v->u[i] = prev = prev + (uint64_t)zz_dec(v->u[i]);
    return CAIRN_OK;
}

static void encode_ints(const uint64_t *u, size_t n, struct buf *out)
{
    buf_addc(out, INT_RAW << 4);
    for (size_t i = 0; i < n; i++)
        put_be64(out, zz_enc((int64_t)(u[i] - (i ? u[i - 1] : 0))));
}

/* ---- floats: Gorilla XOR, bits most significant first ---- */

struct bits_in {
    const uint8_t *p;
    size_t len, pos; /* in bits */
};

static int read_bits(struct bits_in *r, unsigned n, uint64_t *v)
{
    if (r->pos + n > r->len * 8)
        return -1;
    uint64_t x = 0;
    for (unsigned i = 0; i < n; i++, r->pos++)
        x = x << 1 | ((r->p[r->pos >> 3] >> (7 - (r->pos & 7))) & 1u);
    *v = x;
    return 0;
}

struct bits_out {
    struct buf *b;
    uint8_t cur;
    unsigned used;
};

static void write_bits(struct bits_out *w, uint64_t v, unsigned n)
{
    while (n > 0) {
        n--;
        w->cur = (uint8_t)(w->cur << 1 | ((v >> n) & 1u));
        if (++w->used == 8) {
            buf_addc(w->b, w->cur);
            w->cur = 0;
            w->used = 0;
        }
    }
}

static int decode_floats(const uint8_t *p, size_t len, struct tsm_values *v, struct cairn_err *err)
{
    v->n = 0;
    if (len == 0)
        return CAIRN_OK;
    if (p[0] >> 4 != 1)
        return bad(err, "unknown float encoding");
    struct bits_in r = {p + 1, len - 1, 0};
    uint64_t val, leading = 0, trailing = 0, bit, x;
    if (read_bits(&r, 64, &val) != 0)
        return bad(err, "floats too short");
    int rc;
    while (val != FLOAT_END) {
        if ((rc = grow(v, v->n + 1, err)) != CAIRN_OK)
            return rc;
        v->u[v->n++] = val;
        if (read_bits(&r, 1, &bit) != 0)
            return bad(err, "float stream cut short");
        if (bit == 0)
            continue; /* the same value again */
        if (read_bits(&r, 1, &bit) != 0)
            return bad(err, "float stream cut short");
        if (bit == 1) {
            uint64_t sig;
            if (read_bits(&r, 5, &leading) != 0 || read_bits(&r, 6, &sig) != 0)
                return bad(err, "float stream cut short");
            if (sig == 0)
                sig = 64;
            if (leading + sig > 64)
                return bad(err, "invalid float bit counts");
            trailing = 64 - leading - sig;
        }
        if (read_bits(&r, (unsigned)(64 - leading - trailing), &x) != 0)
            return bad(err, "float stream cut short");
        val ^= trailing < 64 ? x << trailing : 0;
    }
    return CAIRN_OK;
}

static void encode_floats(const uint64_t *u, size_t n, struct buf *out)
{
    buf_addc(out, 1 << 4);
    struct bits_out w = {out, 0, 0};
    uint64_t prev = 0;
    unsigned lead = 64, trail = 0; /* 64: no counts set yet */
    for (size_t i = 0; i <= n; i++) {
        uint64_t v = i < n ? u[i] : FLOAT_END;
        if (i == 0) {
            write_bits(&w, v, 64);
            prev = v;
            continue;
        }
        uint64_t d = v ^ prev;
        prev = v;
        if (d == 0) {
            write_bits(&w, 0, 1);
            continue;
        }
        unsigned l = (unsigned)__builtin_clzll(d), t = (unsigned)__builtin_ctzll(d);
        if (l > 31)
            l = 31; /* five bits for the count */
        if (lead != 64 && l >= lead && t >= trail) {
            write_bits(&w, 2, 2); /* '10': the previous counts */
            write_bits(&w, d >> trail, 64 - lead - trail);
            continue;
        }
        lead = l;
        trail = t;
        unsigned sig = 64 - l - t;
        write_bits(&w, 3, 2); /* '11': new counts */
        write_bits(&w, l, 5);
        write_bits(&w, sig == 64 ? 0 : sig, 6);
        write_bits(&w, d >> t, sig);
    }
    if (w.used > 0)
        write_bits(&w, 0, 8 - w.used);
}

/* ---- booleans: a count, then bits most significant first ---- */

static int decode_bools(const uint8_t *p, size_t len, struct tsm_values *v, struct cairn_err *err)
{
    v->n = 0;
    if (len == 0)
        return CAIRN_OK;
    uint64_t count;
    size_t a = pb_uvarint(p + 1, len - 1, &count);
    if (a == 0)
        return bad(err, "invalid boolean count");
    size_t bits = (len - 1 - a) * 8;
    if (count > bits)
        count = bits; /* as BooleanDecoder */
    int rc = grow(v, count, err);
    if (rc != CAIRN_OK)
        return rc;
    const uint8_t *b = p + 1 + a;
    for (v->n = 0; v->n < count; v->n++)
        v->u[v->n] = (b[v->n >> 3] >> (7 - (v->n & 7))) & 1u;
    return CAIRN_OK;
}

static void encode_bools(const uint64_t *u, size_t n, struct buf *out)
{
    buf_addc(out, 1 << 4);
    buf_add_uvarint(out, n);
    struct bits_out w = {out, 0, 0};
    for (size_t i = 0; i < n; i++)
        write_bits(&w, u[i] & 1u, 1);
    if (w.used > 0)
        write_bits(&w, 0, 8 - w.used);
}

/* ---- strings: snappy (block format) of <uvarint length><bytes>... ---- */

static int snappy_decode(const uint8_t *p, size_t len, struct buf *out, struct cairn_err *err)
{
    uint64_t want;
    size_t i = pb_uvarint(p, len, &want);
    if (i == 0 || want > TSM_MAX_BLOCK)
        return bad(err, "invalid snappy length");
    out->len = 0;
    buf_add(out, "", 0);
    while (i < len) {
        uint8_t tag = p[i++];
        uint64_t n, off = 0;
        if ((tag & 3) == 0) { /* literal */
            n = tag >> 2;
            if (n >= 60) {
                unsigned k = (unsigned)n - 59;
                if (len - i < k)
                    return bad(err, "snappy literal length cut short");
                n = 0;
                for (unsigned j = 0; j < k; j++)
                    n |= (uint64_t)p[i++] << (8 * j);
            }
            n++;
            if (len - i < n || out->len + n > want)
                return bad(err, "snappy literal overruns");
            buf_add(out, p + i, n);
            i += n;
            continue;
        }
        unsigned k = (tag & 3) == 1 ? 1 : (tag & 3) == 2 ? 2 : 4;
        if (len - i < k)
            return bad(err, "snappy copy cut short");
        if (k == 1) {
            n = 4 + ((tag >> 2) & 7);
            off = (uint64_t)(tag >> 5) << 8 | p[i];
        } else {
            n = 1 + (tag >> 2);
            for (unsigned j = 0; j < k; j++)
                off |= (uint64_t)p[i + j] << (8 * j);
        }
        i += k;
        if (off == 0 || off > out->len || out->len + n > want)
            return bad(err, "invalid snappy copy");
        for (uint64_t j = 0; j < n; j++)
            buf_addc(out, out->p[out->len - off]);
    }
    if (out->len != want)
        return bad(err, "snappy data shorter than declared");
    return CAIRN_OK;
}

/* Literals only: valid snappy, no compression (a boundary block is small). */
static void snappy_encode(const uint8_t *p, size_t len, struct buf *out)
{
    buf_add_uvarint(out, len);
    while (len > 0) {
        size_t n = len < 65536 ? len : 65536;
        buf_addc(out, 61 << 2); /* literal, length-1 in 2 bytes */
        buf_addc(out, (uint8_t)((n - 1) & 0xff));
        buf_addc(out, (uint8_t)((n - 1) >> 8));
        buf_add(out, p, n);
        p += n;
        len -= n;
    }
}

/* v->u[i] is the offset of string i's length varint in v->str. */
static int decode_strings(const uint8_t *p, size_t len, struct tsm_values *v, struct cairn_err *err)
{
    v->n = 0;
    if (len == 0)
        return CAIRN_OK;
    if (p[0] >> 4 != 1)
        return bad(err, "unknown string encoding");
    int rc = snappy_decode(p + 1, len - 1, &v->str, err);
    for (size_t off = 0; rc == CAIRN_OK && off < v->str.len;) {
        uint64_t sl;
        size_t a = pb_uvarint(v->str.p + off, v->str.len - off, &sl);
        if (a == 0 || sl > v->str.len - off - a)
            return bad(err, "invalid string length");
        if ((rc = grow(v, v->n + 1, err)) == CAIRN_OK)
            v->u[v->n++] = off;
        off += a + sl;
    }
    return rc;
}

static void encode_strings(const struct tsm_values *v, size_t lo, size_t hi, struct buf *out)
{
    size_t a = v->u[lo], b = hi < v->n ? v->u[hi] : v->str.len;
    buf_addc(out, 1 << 4);
    snappy_encode(v->str.p + a, b - a, out);
}

/* ---- blocks ---- */

int tsm_decode_values(uint8_t type, const uint8_t *p, size_t len, struct tsm_values *v,
                      struct cairn_err *err)
{
    switch (type) {
    case TSM_FLOAT: return decode_floats(p, len, v, err);
    case TSM_INTEGER:
    case TSM_UNSIGNED: return decode_ints(p, len, v, err);
    case TSM_BOOLEAN: return decode_bools(p, len, v, err);
    case TSM_STRING: return decode_strings(p, len, v, err);
    default: return bad(err, "unknown block type");
    }
}

void tsm_encode_values(uint8_t type, const struct tsm_values *v, size_t lo, size_t hi,
                       struct buf *out)
{
    switch (type) {
    case TSM_FLOAT: encode_floats(v->u + lo, hi - lo, out); break;
    case TSM_INTEGER:
    case TSM_UNSIGNED: encode_ints(v->u + lo, hi - lo, out); break;
    case TSM_BOOLEAN: encode_bools(v->u + lo, hi - lo, out); break;
    default: encode_strings(v, lo, hi, out); break;
    }
}

void tsm_values_free(struct tsm_values *v)
{
    free(v->u);
    buf_free(&v->str);
    memset(v, 0, sizeof(*v));
}
