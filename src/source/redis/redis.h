/* The Redis source's protocol core (internal, not installed): take an RDB snapshot of a live
 * Redis server the way a replica does, and verify it. The source driver (issue 15) wraps it.
 *
 * redis_snapshot connects over TCP or TLS (io/net.h), authenticates (AUTH
 * PASSWORD, or AUTH USER PASSWORD for an ACL user), announces itself as an RDB-only replica
 * (REPLCONF listening-port 0, capa eof capa psync2, rdb-only 1, as redis-cli --rdb does), asks
 * for a full resync (PSYNC ? -1, falling back to SYNC when PSYNC is refused), and copies the
 * RDB to a writer in either transfer form: disk-based ("$LEN" then LEN bytes) or diskless
 * ("$EOF:MARK" then the RDB then the 40-byte MARK). It stops reading at the RDB's end (it never
 * reads the replication stream) and closes the connection, then checks the RDB's framing: the
 * "REDIS00xx" magic, the EOF opcode, and the CRC-64 trailer. docs/ARCHITECTURE.md places the
 * module; /work/shared/spec/redis-replication-rdb.md has the protocol notes it follows.
 */
#ifndef CAIRN_SOURCE_REDIS_H
#define CAIRN_SOURCE_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include "cairn/err.h"
#include "cairn/io.h"
#include "io/net.h"

/* done: RDB bytes copied so far; total: the RDB's size, or 0 while it is not known (the
 * diskless form announces no length). Called about once per MiB and once at the end. */
typedef void (*redis_progress_fn)(void *ctx, uint64_t done, uint64_t total);

struct redis_conn_opts {
    const char *host;           /* name or address (IPv6 without brackets); NULL or "": 127.0.0.1 */
    unsigned port;              /* 0: 6379 */
    const char *user;           /* ACL user; NULL or "": AUTH with the password alone */
    const char *password;       /* NULL: no AUTH. Never logged nor put in an error message */
    const struct tls_opts *tls; /* NULL: plain TCP; else TLS, the server's certificate verified
                                 * (rediss://) */
    int connect_timeout_ms;     /* 0: 10000; the TLS handshake included */
    /* Longest silence while reading or writing; 0: 60000. The master sends a newline every
     * second while it prepares the RDB on disk, so a slow BGSAVE does not trip it. */
    int io_timeout_ms;
    const volatile int *cancel; /* may be NULL; nonzero stops with CAIRN_E_CANCELLED */
    redis_progress_fn progress; /* may be NULL */
    void *progress_ctx;
};

/* Copy one RDB snapshot of the server into out and verify it; *bytes (may be NULL) gets the
 * RDB's size. out is borrowed: it is written to, never closed or freed. On failure out may
 * have received part of the RDB: the caller discards it (frees without closing). Errors:
 * CAIRN_E_NETWORK (refused, unreachable, reset, or the stream cut short: "truncated"),
 * CAIRN_E_TIMEOUT, CAIRN_E_DENIED (-NOAUTH, -WRONGPASS, -NOPERM), CAIRN_E_PROTOCOL (an
 * unexpected reply, quoted), CAIRN_E_CORRUPT (bad magic or framing, CRC-64 mismatch),
 * CAIRN_E_CANCELLED, or out's own error. Messages name the server as "redis HOST:PORT". */
int redis_snapshot(const struct redis_conn_opts *o, struct cairn_writer *out, uint64_t *bytes,
                   struct cairn_err *err);

/* CRC-64/Jones as Redis computes it (src/crc64.c): polynomial 0xad93d23594c935a9, reflected
 * input and output, initial value 0, no final xor. Start with crc = 0 and chain calls;
 * redis_crc64(0, "123456789", 9) == 0xe9c6d914c4b8d9ca. */
uint64_t redis_crc64(uint64_t crc, const void *data, size_t len);

/* Streaming check of an RDB's framing, fed the RDB's bytes in order in any pieces: the magic
 * "REDIS" + 4 digits (checked as soon as 9 bytes are in), then at the end the EOF opcode 0xff
 * and the 8-byte little-endian CRC-64 of everything before it. */
struct redis_rdb_check {
    uint64_t crc;    /* of every byte fed except the last 8 */
    uint64_t total;  /* bytes fed */
    uint8_t head[9]; /* the first bytes, for the magic */
    uint8_t tail[8]; /* the last bytes fed (tail_len of them), not yet in crc */
    size_t tail_len;
    uint8_t last; /* the last byte taken into crc: the EOF opcode in a whole RDB */
    int version;  /* RDB format version from the magic (10 for Redis 7.0), 0 before */
};
void redis_rdb_check_init(struct redis_rdb_check *k);
/* CAIRN_E_CORRUPT when the first 9 bytes are not an RDB magic (quoted in the message). */
int redis_rdb_check_feed(struct redis_rdb_check *k, const void *data, size_t len,
                         struct cairn_err *err);
/* After the last byte: CAIRN_E_CORRUPT for a too short RDB, a missing EOF opcode or a checksum
 * mismatch. *has_crc = 0 when the trailer is zero: the server saves with rdbchecksum no, and
 * nothing could be verified beyond the framing. */
int redis_rdb_check_finish(struct redis_rdb_check *k, int *has_crc, struct cairn_err *err);

#endif
