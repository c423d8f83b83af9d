/* Private to src/source/redis: the connection with deadlines the protocol code reads from. */
#ifndef CAIRN_SOURCE_REDIS_INTERNAL_H
#define CAIRN_SOURCE_REDIS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "cairn/err.h"
#include "io/net.h"

#define REDIS_LINE_MAX 512  /* longest reply line we accept (+FULLRESYNC is ~60 bytes) */
#define REDIS_BUF      4096 /* read-ahead for reply lines */

/* io's connection (plain or TLS), every wait bounded by io_timeout_ms (idle time) and watching
 * the cancel flag. Reply lines are read through a small buffer; the RDB is
 * read with redis_conn_read, which empties that buffer first and then reads straight into the
 * caller's memory, never more than asked (so reading the RDB stops at its last byte). */
struct redis_conn {
    struct net_conn nc;
    char addr[300]; /* "HOST:PORT" ("[v6]:PORT"), for messages */
    int io_timeout_ms;
    const volatile int *cancel;
    uint8_t buf[REDIS_BUF];
    size_t pos, len;     /* unread bytes are buf[pos, len) */
    unsigned keepalives; /* bare newlines the protocol code skipped (for the debug log) */
};

/* Connect, then with tls (NULL: plain TCP) shake hands, verifying the server's certificate;
 * messages say "redis HOST:PORT: ...". On failure c is closed. */
int redis_conn_open(struct redis_conn *c, const char *host, unsigned port,
                    const struct tls_opts *tls, int connect_timeout_ms, int io_timeout_ms,
                    const volatile int *cancel, struct cairn_err *err);
void redis_conn_close(struct redis_conn *c);
int redis_conn_send(struct redis_conn *c, const void *data, size_t len, struct cairn_err *err);
/* One line, without its "\n" or "\r\n", NUL-terminated in line (cap bytes); an empty line is a
 * keepalive. The connection ending first is CAIRN_E_NETWORK, a longer line CAIRN_E_PROTOCOL. */
int redis_conn_line(struct redis_conn *c, char *line, size_t cap, size_t *len,
                    struct cairn_err *err);
/* Up to cap bytes; *got == 0 only when the peer closed the connection. */
int redis_conn_read(struct redis_conn *c, void *data, size_t cap, size_t *got,
                    struct cairn_err *err);

#endif
