/* The gear-hash chunker (FastCDC, normalized chunking). Per byte: fp = (fp << 1) + gear[b];
 * a cut when the top bits of fp selected by the mask are all zero. The top bits depend on
 * the last 64 bytes, which is the window; the first min bytes of a chunk are not hashed
 * (sub-minimum skipping), so the hash restarts from zero at min. */
#include <string.h>

#include <openssl/sha.h>

#include "chunker.h"

static unsigned log2u(uint32_t v)
{
    unsigned b = 0;
    while ((1u << (b + 1)) <= v && b < 31)
        b++;
    return b;
}

static uint64_t top_mask(unsigned bits)
{
    return bits >= 64 ? ~0ull : ((1ull << bits) - 1) << (64 - bits);
}

int chunker_params_check(const struct chunker_params *p)
{
    if (p->min < CHUNKER_MIN_FLOOR || p->min >= p->avg || p->avg > p->max ||
        p->max > CHUNKER_MAX_CEIL || p->avg < 64u * 1024u || (p->avg & (p->avg - 1)) != 0)
        return -1;
    return 0;
}

void chunker_init(struct chunker *c, const struct chunker_params *p, const uint8_t seed[32])
{
    memset(c, 0, sizeof(*c));
    uint8_t in[33], d[SHA256_DIGEST_LENGTH];
    memcpy(in, seed, 32);
    for (unsigned i = 0; i < 256; i++) {
        in[32] = (uint8_t)i;
        SHA256(in, sizeof(in), d);
        uint64_t v = 0;
        for (int k = 7; k >= 0; k--)
            v = (v << 8) | d[k];
        c->gear[i] = v;
    }
    unsigned bits = log2u(p->avg);
    c->mask_s = top_mask(bits + CHUNKER_LEVEL);
    c->mask_l = top_mask(bits - CHUNKER_LEVEL);
    c->min = p->min;
    c->avg = p->avg;
    c->max = p->max;
}

void chunker_reset(struct chunker *c)
{
    c->fp = 0;
    c->len = 0;
}

/* Hash p[i..end) with mask m; returns the index after the cut byte, or end. */
static inline size_t scan(const uint64_t *gear, uint64_t *fpp, uint64_t m, const uint8_t *p,
                          size_t i, size_t end, int *hit)
{
    uint64_t fp = *fpp;
    /* Unrolled by four: the test is a single and + branch the predictor gets right. */
    for (; i + 4 <= end; i += 4) {
        fp = (fp << 1) + gear[p[i]];
        if (!(fp & m)) {
            *hit = 1;
            *fpp = fp;
            return i + 1;
        }
        fp = (fp << 1) + gear[p[i + 1]];
        if (!(fp & m)) {
            *hit = 1;
            *fpp = fp;
            return i + 2;
        }
        fp = (fp << 1) + gear[p[i + 2]];
        if (!(fp & m)) {
            *hit = 1;
            *fpp = fp;
            return i + 3;
        }
        fp = (fp << 1) + gear[p[i + 3]];
        if (!(fp & m)) {
            *hit = 1;
            *fpp = fp;
            return i + 4;
        }
    }
    for (; i < end; i++) {
        fp = (fp << 1) + gear[p[i]];
        if (!(fp & m)) {
            *hit = 1;
            *fpp = fp;
            return i + 1;
        }
    }
    *fpp = fp;
    return end;
}

size_t chunker_push(struct chunker *c, const uint8_t *p, size_t n, int *cut)
{
    *cut = 0;
    size_t i = 0;
    if (c->len < c->min) { /* not hashed */
        uint64_t k = c->min - c->len;
        if (k >= n) {
            c->len += n;
            return n;
        }
        i = (size_t)k;
        c->len = c->min;
        c->fp = 0;
    }
    int hit = 0;
    if (c->len < c->avg) {
        uint64_t room = c->avg - c->len;
        size_t end = room < n - i ? i + (size_t)room : n;
        size_t j = scan(c->gear, &c->fp, c->mask_s, p, i, end, &hit);
        c->len += j - i;
        i = j;
    }
    if (!hit && i < n) {
        uint64_t room = c->max - c->len;
        size_t end = room < n - i ? i + (size_t)room : n;
        size_t j = scan(c->gear, &c->fp, c->mask_l, p, i, end, &hit);
        c->len += j - i;
        i = j;
    }
    if (hit || c->len >= c->max) {
        *cut = 1;
        chunker_reset(c);
    }
    return i;
}
