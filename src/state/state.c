/* The scheduler state map and its versioned envelope codec (layout in cairn/state.h). */
#include "cairn/state.h"

#include <stdlib.h>
#include <string.h>

#include "cairn/digest.h"
#include "common/util.h"

static const uint8_t k_magic[8] = {'C', 'A', 'I', 'R', 'N', 'S', 'T', 0x1a};
#define HDR_LEN 16u
#define SUM_LEN 32u

struct entry {
    char *name;
    int64_t sec;
};

/* Sorted by name (bytewise) so encoding is canonical and lookups are binary searches. */
struct cairn_state {
    struct entry *v;
    size_t n, cap;
};

struct cairn_state *cairn_state_new(void)
{
    return xcalloc(1, sizeof(struct cairn_state));
}

struct cairn_state *cairn_state_dup(const struct cairn_state *st)
{
    struct cairn_state *d = cairn_state_new();
    if (st->n == 0)
        return d;
    d->v = xcalloc(st->n, sizeof(*d->v));
    d->cap = d->n = st->n;
    for (size_t i = 0; i < st->n; i++) {
        d->v[i].name = xstrdup(st->v[i].name);
        d->v[i].sec = st->v[i].sec;
    }
    return d;
}

void cairn_state_free(struct cairn_state *st)
{
    if (st == NULL)
        return;
    for (size_t i = 0; i < st->n; i++)
        free(st->v[i].name);
    free(st->v);
    free(st);
}

static int name_valid_len(const char *name, size_t len)
{
    if (len == 0 || len > CAIRN_STATE_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

int cairn_state_name_valid(const char *name)
{
    return name != NULL && name_valid_len(name, strlen(name));
}

/* Index of name, or the insertion point with *found = 0. */
static size_t find(const struct cairn_state *st, const char *name, int *found)
{
    size_t lo = 0, hi = st->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(st->v[mid].name, name);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = 0;
    return lo;
}

int cairn_state_get(const struct cairn_state *st, const char *name, int64_t *sec)
{
    int found;
    size_t i = find(st, name, &found);
    if (found && sec != NULL)
        *sec = st->v[i].sec;
    return found;
}

int cairn_state_update(struct cairn_state *st, const char *name, int64_t sec, struct cairn_err *err)
{
    if (!cairn_state_name_valid(name))
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "invalid schedule name '%s' (1..%d of A-Z a-z 0-9 . _ -)",
                             name ? name : "", CAIRN_STATE_NAME_MAX);
    int found;
    size_t i = find(st, name, &found);
    if (found) {
        if (sec <= st->v[i].sec)
            return 0;
        st->v[i].sec = sec;
        return 1;
    }
    if (st->n == st->cap) {
        st->cap = st->cap ? st->cap * 2 : 8;
        st->v = xrealloc(st->v, st->cap * sizeof(*st->v));
    }
    memmove(&st->v[i + 1], &st->v[i], (st->n - i) * sizeof(*st->v));
    st->v[i].name = xstrdup(name);
    st->v[i].sec = sec;
    st->n++;
    return 1;
}

int cairn_state_is_empty(const struct cairn_state *st)
{
    return st->n == 0;
}

size_t cairn_state_count(const struct cairn_state *st)
{
    return st->n;
}

const char *cairn_state_entry(const struct cairn_state *st, size_t i, int64_t *sec)
{
    if (i >= st->n)
        return NULL;
    if (sec != NULL)
        *sec = st->v[i].sec;
    return st->v[i].name;
}

static void put_le(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

int cairn_state_encode(const struct cairn_state *st, uint8_t **out, size_t *len,
                       struct cairn_err *err)
{
    *out = NULL;
    *len = 0;
    size_t plen = 4;
    for (size_t i = 0; i < st->n; i++) {
        size_t nl = strlen(st->v[i].name);
        if (!name_valid_len(st->v[i].name, nl))
            return cairn_err_set(err, CAIRN_E_INTERNAL, "state entry %zu has an invalid name", i);
        if (i > 0 && strcmp(st->v[i - 1].name, st->v[i].name) >= 0)
            return cairn_err_set(err, CAIRN_E_INTERNAL, "state entries out of order at %zu", i);
        plen += 2 + nl + 8;
    }
    if (plen > CAIRN_STATE_PAYLOAD_MAX)
        return cairn_err_set(err, CAIRN_E_INVALID, "state snapshot too large (%zu bytes)", plen);

    uint8_t *b = xmalloc(HDR_LEN + plen + SUM_LEN);
    memcpy(b, k_magic, 8);
    put_le(b + 8, CAIRN_STATE_ENVELOPE_VERSION, 2);
    put_le(b + 10, CAIRN_STATE_PAYLOAD_VERSION, 2);
    put_le(b + 12, plen, 4);
    uint8_t *p = b + HDR_LEN;
    put_le(p, st->n, 4);
    p += 4;
    for (size_t i = 0; i < st->n; i++) {
        size_t nl = strlen(st->v[i].name);
        put_le(p, nl, 2);
        memcpy(p + 2, st->v[i].name, nl);
        put_le(p + 2 + nl, (uint64_t)st->v[i].sec, 8);
        p += 2 + nl + 8;
    }
    cairn_sha256_oneshot(b, HDR_LEN + plen, b + HDR_LEN + plen);
    *out = b;
    *len = HDR_LEN + plen + SUM_LEN;
    return CAIRN_OK;
}

/* Payload v1 (see the header). Every malformation is CAIRN_E_CORRUPT. */
static int decode_v1(const uint8_t *p, size_t len, struct cairn_state *st, struct cairn_err *err)
{
    if (len < 4)
        return cairn_err_set(err, CAIRN_E_CORRUPT, "state payload v1: truncated entry count");
    uint64_t count = get_le(p, 4);
    size_t off = 4;
    /* Each entry takes at least 11 bytes: bound the count before allocating anything. */
    if (count > (len - 4) / 11)
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "state payload v1: %llu entries cannot fit in %zu bytes",
                             (unsigned long long)count, len);
    if (count > 0) {
        st->v = xcalloc(count, sizeof(*st->v));
        st->cap = count;
    }
    for (uint64_t i = 0; i < count; i++) {
        if (len - off < 2)
            return cairn_err_set(err, CAIRN_E_CORRUPT, "state payload v1: entry %llu truncated",
                                 (unsigned long long)i);
        size_t nl = get_le(p + off, 2);
        if (len - off - 2 < nl + 8)
            return cairn_err_set(err, CAIRN_E_CORRUPT, "state payload v1: entry %llu truncated",
                                 (unsigned long long)i);
        const char *name = (const char *)p + off + 2;
        if (!name_valid_len(name, nl))
            return cairn_err_set(err, CAIRN_E_CORRUPT,
                                 "state payload v1: entry %llu has an invalid name",
                                 (unsigned long long)i);
        char *copy = xmalloc(nl + 1);
        memcpy(copy, name, nl);
        copy[nl] = '\0';
        if (st->n > 0 && strcmp(st->v[st->n - 1].name, copy) >= 0) {
            free(copy);
            return cairn_err_set(err, CAIRN_E_CORRUPT,
                                 "state payload v1: entry %llu out of order or duplicated",
                                 (unsigned long long)i);
        }
        st->v[st->n].name = copy;
        st->v[st->n].sec = (int64_t)get_le(p + off + 2 + nl, 8);
        st->n++;
        off += 2 + nl + 8;
    }
    if (off != len)
        return cairn_err_set(err, CAIRN_E_CORRUPT, "state payload v1: %zu trailing bytes",
                             len - off);
    return CAIRN_OK;
}

/* One decoder per released payload version, indexed by version. A future v2 adds a
 * decode_v2 here and keeps decode_v1, upgrading old entries in memory. */
static int (*const k_decoders[CAIRN_STATE_PAYLOAD_VERSION + 1])(const uint8_t *, size_t,
                                                                struct cairn_state *,
                                                                struct cairn_err *) = {
    [1] = decode_v1,
};

int cairn_state_decode(const uint8_t *buf, size_t len, struct cairn_state **out,
                       unsigned *payload_version, struct cairn_err *err)
{
    *out = NULL;
    if (len < 8 || memcmp(buf, k_magic, 8) != 0)
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             len < 8 ? "state snapshot truncated: %zu bytes"
                                     : "not a cairn state snapshot (bad magic, %zu bytes)",
                             len);
    if (len < HDR_LEN)
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "state snapshot truncated: %zu bytes, header needs %u", len, HDR_LEN);
    unsigned env = (unsigned)get_le(buf + 8, 2);
    if (env == 0)
        return cairn_err_set(err, CAIRN_E_CORRUPT, "state snapshot envelope version 0 is invalid");
    if (env > CAIRN_STATE_ENVELOPE_VERSION)
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED,
                             "snapshot envelope version %u is newer than this cairnd supports "
                             "(max %d)",
                             env, CAIRN_STATE_ENVELOPE_VERSION);
    uint64_t plen = get_le(buf + 12, 4);
    if (plen > CAIRN_STATE_PAYLOAD_MAX)
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "state snapshot payload length %llu exceeds the %u byte limit",
                             (unsigned long long)plen, CAIRN_STATE_PAYLOAD_MAX);
    if (len < HDR_LEN + plen + SUM_LEN)
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "state snapshot truncated: %zu bytes, envelope needs %llu", len,
                             (unsigned long long)(HDR_LEN + plen + SUM_LEN));
    if (len > HDR_LEN + plen + SUM_LEN)
        return cairn_err_set(err, CAIRN_E_CORRUPT, "state snapshot has %llu trailing bytes",
                             (unsigned long long)(len - HDR_LEN - plen - SUM_LEN));
    uint8_t sum[SUM_LEN];
    cairn_sha256_oneshot(buf, HDR_LEN + plen, sum);
    if (memcmp(sum, buf + HDR_LEN + plen, SUM_LEN) != 0)
        return cairn_err_set(err, CAIRN_E_CORRUPT, "state snapshot checksum mismatch");

    unsigned ver = (unsigned)get_le(buf + 10, 2);
    if (ver == 0)
        return cairn_err_set(err, CAIRN_E_CORRUPT, "state snapshot payload version 0 is invalid");
    if (ver > CAIRN_STATE_PAYLOAD_VERSION)
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED,
                             "snapshot payload version %u is newer than this cairnd supports "
                             "(max %d)",
                             ver, CAIRN_STATE_PAYLOAD_VERSION);
    struct cairn_state *st = cairn_state_new();
    int rc = k_decoders[ver](buf + HDR_LEN, (size_t)plen, st, err);
    if (rc != CAIRN_OK) {
        cairn_state_free(st);
        return rc;
    }
    if (payload_version != NULL)
        *payload_version = ver;
    *out = st;
    return CAIRN_OK;
}
