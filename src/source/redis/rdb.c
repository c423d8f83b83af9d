/* Streaming check of an RDB file's framing (Redis src/rdb.c, rdbSaveRio): "REDIS%04d", the
 * body, the EOF opcode 0xff, then the CRC-64 of everything from the 'R' through the 0xff as 8
 * little-endian bytes (all zero when the server runs with rdbchecksum no). The body itself is
 * not parsed: the checksum covers it, and `redis-check-rdb` exists for deeper checks. */
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "redis.h"

#define RDB_OPCODE_EOF  0xff
#define RDB_MAGIC_LEN   9 /* "REDIS" + 4 digits */
#define RDB_MIN_VERSION 5 /* the first with a checksum trailer (Redis 2.6) */

void redis_rdb_check_init(struct redis_rdb_check *k)
{
    memset(k, 0, sizeof(*k));
}

static void take(struct redis_rdb_check *k, const uint8_t *p, size_t n)
{
    if (n == 0)
        return;
    k->crc = redis_crc64(k->crc, p, n);
    k->last = p[n - 1];
}

static int check_magic(struct redis_rdb_check *k, struct cairn_err *err)
{
    const uint8_t *h = k->head;
    int ok = memcmp(h, "REDIS", 5) == 0;
    for (int i = 5; ok && i < RDB_MAGIC_LEN; i++)
        ok = h[i] >= '0' && h[i] <= '9';
    if (!ok) {
        char q[64];
        str_escape(q, sizeof(q), (const char *)h, RDB_MAGIC_LEN);
        return cairn_err_set(err, CAIRN_E_CORRUPT, "not an RDB file: it starts with \"%s\"", q);
    }
    k->version = (h[5] - '0') * 1000 + (h[6] - '0') * 100 + (h[7] - '0') * 10 + (h[8] - '0');
    if (k->version < RDB_MIN_VERSION)
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED,
                             "RDB format version %d has no checksum (before Redis 2.6)",
                             k->version);
    return CAIRN_OK;
}

int redis_rdb_check_feed(struct redis_rdb_check *k, const void *data, size_t len,
                         struct cairn_err *err)
{
    const uint8_t *p = data;
    if (k->total < RDB_MAGIC_LEN) {
        size_t n = RDB_MAGIC_LEN - (size_t)k->total;
        if (n > len)
            n = len;
        memcpy(k->head + k->total, p, n);
        if (k->total + n == RDB_MAGIC_LEN) {
            int rc = check_magic(k, err);
            if (rc != CAIRN_OK)
                return rc;
        }
    }
    k->total += len;
    /* Hold the latest 8 bytes back from the CRC: they may be the trailer. */
    if (len >= sizeof(k->tail)) {
        take(k, k->tail, k->tail_len);
        take(k, p, len - sizeof(k->tail));
        memcpy(k->tail, p + len - sizeof(k->tail), sizeof(k->tail));
        k->tail_len = sizeof(k->tail);
        return CAIRN_OK;
    }
    if (k->tail_len + len > sizeof(k->tail)) {
        size_t drop = k->tail_len + len - sizeof(k->tail);
        take(k, k->tail, drop);
        memmove(k->tail, k->tail + drop, k->tail_len - drop);
        k->tail_len -= drop;
    }
    memcpy(k->tail + k->tail_len, p, len);
    k->tail_len += len;
    return CAIRN_OK;
}

int redis_rdb_check_finish(struct redis_rdb_check *k, int *has_crc, struct cairn_err *err)
{
    *has_crc = 0;
    /* magic, at least the EOF opcode, the trailer */
    if (k->total < RDB_MAGIC_LEN + 1 + sizeof(k->tail))
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "RDB of %llu bytes is too short to be whole (truncated)",
                             (unsigned long long)k->total);
    if (k->last != RDB_OPCODE_EOF)
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "RDB does not end with the EOF opcode (0xff) before its checksum "
                             "(truncated or corrupt)");
    uint64_t stored = 0;
    for (int i = 7; i >= 0; i--)
        stored = stored << 8 | k->tail[i];
    if (stored == 0)
        return CAIRN_OK; /* saved with rdbchecksum no: the loader skips the check too */
    if (stored != k->crc)
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "RDB checksum mismatch: the trailer says %016llx, the data gives "
                             "%016llx (CRC-64 over %llu bytes)",
                             (unsigned long long)stored, (unsigned long long)k->crc,
                             (unsigned long long)(k->total - sizeof(k->tail)));
    *has_crc = 1;
    return CAIRN_OK;
}
