/* redis_snapshot: the replica handshake and the RDB transfer (redis.h says what and why;
 * /work/shared/spec/redis-replication-rdb.md has the protocol notes, from Redis's
 * src/replication.c and src/redis-cli.c). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/log.h"
#include "common/buf.h"
#include "common/util.h"
#include "internal.h"
#include "redis.h"

#define REDIS_EOF_MARK 40           /* RDB_EOF_MARK_SIZE: the diskless form's end marker */
#define REDIS_CHUNK    (128u << 10) /* RDB bytes per read */
#define REDIS_PROGRESS (1u << 20)   /* report progress about once per MiB */
#define REDIS_EXCERPT  120          /* bytes of a reply quoted in a message */

/* Append one command as a RESP array of bulk strings. */
static void resp_cmd(struct buf *b, int argc, const char *const *argv)
{
    buf_printf(b, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++) {
        size_t n = strlen(argv[i]);
        buf_printf(b, "$%zu\r\n", n);
        buf_add(b, argv[i], n);
        buf_add(b, "\r\n", 2);
    }
}

/* A short escaped excerpt of peer text for a message. */
static const char *excerpt(char *q, size_t cap, const char *s, size_t n)
{
    size_t k = n > REDIS_EXCERPT ? REDIS_EXCERPT : n;
    str_escape(q, cap - 4, s, k);
    if (k < n)
        strcat(q, "...");
    return q;
}

static int starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* An error reply ("-CODE text") to what: refused credentials or permissions are DENIED,
 * anything else is a PROTOCOL error quoting the reply. */
static int reply_error(struct redis_conn *c, const char *what, const char *line, size_t n,
                       int have_password, struct cairn_err *err)
{
    char q[REDIS_EXCERPT * 4 + 8];
    excerpt(q, sizeof(q), line + 1, n - 1);
    if (starts(line, "-NOAUTH") || starts(line, "-WRONGPASS") || starts(line, "-NOPERM"))
        return cairn_err_set(err, CAIRN_E_DENIED, "redis %s: %s refused: %s%s", c->addr, what, q,
                             starts(line, "-NOAUTH") && !have_password ? " (no password was given)"
                                                                       : "");
    return cairn_err_set(err, CAIRN_E_PROTOCOL, "redis %s: %s refused: %s", c->addr, what, q);
}

static int unexpected(struct redis_conn *c, const char *what, const char *line, size_t n,
                      struct cairn_err *err)
{
    char q[REDIS_EXCERPT * 4 + 8];
    return cairn_err_set(err, CAIRN_E_PROTOCOL, "redis %s: unexpected reply %s: \"%s\"", c->addr,
                         what, excerpt(q, sizeof(q), line, n));
}

/* Read the "+OK" (any simple string) that answers what. optional: an error reply is logged
 * and ignored (REPLCONF rdb-only on a server older than 7.0). */
static int expect_ok(struct redis_conn *c, const char *what, int optional, int have_password,
                     struct cairn_err *err)
{
    char line[REDIS_LINE_MAX];
    size_t n;
    int rc = redis_conn_line(c, line, sizeof(line), &n, err);
    if (rc != CAIRN_OK)
        return rc;
    if (n > 0 && line[0] == '+')
        return CAIRN_OK;
    if (n > 0 && line[0] == '-') {
        if (!optional)
            return reply_error(c, what, line, n, have_password, err);
        char q[REDIS_EXCERPT * 4 + 8];
        cairn_debug("redis", "redis %s: %s refused, going on without it: %s", c->addr, what,
                    excerpt(q, sizeof(q), line + 1, n - 1));
        return CAIRN_OK;
    }
    char w[64];
    snprintf(w, sizeof(w), "to %s", what);
    return unexpected(c, w, line, n, err);
}

/* AUTH, then the REPLCONFs a replica that only wants the RDB sends (redis-cli --rdb), written
 * back to back, then every reply read: the master refuses PSYNC while replies are pending.
 * The password goes to the socket straight from the caller's string: no buffer of ours holds
 * a copy (a growing buffer would leave old copies in freed memory). */
static int handshake(struct redis_conn *c, const struct redis_conn_opts *o, struct cairn_err *err)
{
    struct buf b = {0};
    const char *pw = o->password;
    int rc = CAIRN_OK;
    if (pw != NULL) {
        int have_user = o->user != NULL && o->user[0] != 0;
        buf_printf(&b, "*%d\r\n$4\r\nAUTH\r\n", have_user ? 3 : 2);
        if (have_user)
            buf_printf(&b, "$%zu\r\n%s\r\n", strlen(o->user), o->user);
        buf_printf(&b, "$%zu\r\n", strlen(pw));
        rc = redis_conn_send(c, b.p, b.len, err);
        if (rc == CAIRN_OK)
            rc = redis_conn_send(c, pw, strlen(pw), err);
        b.len = 0;
        buf_add(&b, "\r\n", 2);
    }
    const char *port[] = {"REPLCONF", "listening-port", "0"};
    const char *capa[] = {"REPLCONF", "capa", "eof", "capa", "psync2"};
    const char *rdb_only[] = {"REPLCONF", "rdb-only", "1"};
    resp_cmd(&b, 3, port);
    resp_cmd(&b, 5, capa);
    resp_cmd(&b, 3, rdb_only);
    if (rc == CAIRN_OK)
        rc = redis_conn_send(c, b.p, b.len, err);
    buf_free(&b);
    if (rc == CAIRN_OK && pw != NULL)
        rc = expect_ok(c, "AUTH", 0, 1, err);
    if (rc == CAIRN_OK)
        rc = expect_ok(c, "REPLCONF listening-port", 0, pw != NULL, err);
    if (rc == CAIRN_OK)
        rc = expect_ok(c, "REPLCONF capa", 0, pw != NULL, err);
    if (rc == CAIRN_OK)
        rc = expect_ok(c, "REPLCONF rdb-only", 1, pw != NULL, err);
    return rc;
}

/* The next line that is not a keepalive: the master writes a bare "\n" every second while it
 * prepares the RDB, before +FULLRESYNC and between it and the "$" line. */
static int next_line(struct redis_conn *c, char *line, size_t cap, size_t *n, struct cairn_err *err)
{
    int rc;
    for (;;) {
        rc = redis_conn_line(c, line, cap, n, err);
        if (rc != CAIRN_OK || *n > 0)
            return rc;
        c->keepalives++;
    }
}

/* Ask for a full resync and return the line that announces the RDB ("$..."): PSYNC ? -1,
 * then +FULLRESYNC REPLID OFFSET; if PSYNC is refused (an old server, an ACL user allowed
 * only SYNC), SYNC, which answers with the "$" line directly. */
static int request_sync(struct redis_conn *c, int have_password, char *line, size_t cap, size_t *n,
                        struct cairn_err *err)
{
    static const char psync[] = "*3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\n";
    static const char sync[] = "*1\r\n$4\r\nSYNC\r\n";
    int rc = redis_conn_send(c, psync, sizeof(psync) - 1, err);
    if (rc == CAIRN_OK)
        rc = next_line(c, line, cap, n, err);
    if (rc != CAIRN_OK)
        return rc;
    if (starts(line, "+FULLRESYNC ")) {
        cairn_debug("redis", "redis %s: %s", c->addr, line + 1);
        return next_line(c, line, cap, n, err);
    }
    if (starts(line, "+CONTINUE"))
        return cairn_err_set(err, CAIRN_E_PROTOCOL,
                             "redis %s: the server offered a partial resync (+CONTINUE) to "
                             "PSYNC ? -1, which asks for a full one",
                             c->addr);
    if (line[0] != '-')
        return unexpected(c, "to PSYNC", line, *n, err);
    char q[REDIS_EXCERPT * 4 + 8];
    cairn_info("redis", "redis %s: PSYNC refused (%s), trying SYNC", c->addr,
               excerpt(q, sizeof(q), line + 1, *n - 1));
    rc = redis_conn_send(c, sync, sizeof(sync) - 1, err);
    if (rc == CAIRN_OK)
        rc = next_line(c, line, cap, n, err);
    if (rc == CAIRN_OK && line[0] == '-')
        rc = reply_error(c, "SYNC", line, *n, have_password, err);
    return rc;
}

/* Where the RDB's bytes go: the framing check, out, progress. */
struct xfer {
    struct redis_conn *c;
    const struct redis_conn_opts *o;
    struct cairn_writer *out;
    struct redis_rdb_check check;
    uint64_t done, total, reported;
    uint8_t *buf; /* REDIS_CHUNK + REDIS_EOF_MARK bytes */
};

static int deliver(struct xfer *x, const uint8_t *p, size_t n, struct cairn_err *err)
{
    if (n == 0)
        return CAIRN_OK;
    int rc = redis_rdb_check_feed(&x->check, p, n, err);
    if (rc != CAIRN_OK)
        return cairn_err_wrap(err, rc, "redis %s", x->c->addr);
    rc = cairn_writer_write(x->out, p, n, err);
    if (rc != CAIRN_OK)
        return cairn_err_wrap(err, rc, "redis %s: writing the RDB", x->c->addr);
    x->done += n;
    if (x->o->progress != NULL && x->done - x->reported >= REDIS_PROGRESS) {
        x->reported = x->done;
        x->o->progress(x->o->progress_ctx, x->done, x->total);
    }
    return CAIRN_OK;
}

/* The disk-based form: exactly len bytes, read no further. */
static int copy_sized(struct xfer *x, uint64_t len, struct cairn_err *err)
{
    while (x->done < len) {
        uint64_t left = len - x->done;
        size_t want = left < REDIS_CHUNK ? (size_t)left : REDIS_CHUNK, got = 0;
        int rc = redis_conn_read(x->c, x->buf, want, &got, err);
        if (rc != CAIRN_OK)
            return rc;
        if (got == 0)
            return cairn_err_set(err, CAIRN_E_NETWORK,
                                 "redis %s: connection closed after %" PRIu64 " of %" PRIu64
                                 " RDB bytes (truncated)",
                                 x->c->addr, x->done, len);
        rc = deliver(x, x->buf, got, err);
        if (rc != CAIRN_OK)
            return rc;
    }
    return CAIRN_OK;
}

/* The diskless form: the RDB ends where the 40-byte mark arrives. The last 40 bytes read are
 * held back until more data shows they are not the mark. */
static int copy_marked(struct xfer *x, const char *mark, struct cairn_err *err)
{
    size_t held = 0;
    for (;;) {
        size_t got = 0;
        int rc = redis_conn_read(x->c, x->buf + held, REDIS_CHUNK, &got, err);
        if (rc != CAIRN_OK)
            return rc;
        if (got == 0)
            return cairn_err_set(err, CAIRN_E_NETWORK,
                                 "redis %s: connection closed after %" PRIu64
                                 " RDB bytes, before the end-of-RDB mark (truncated)",
                                 x->c->addr, x->done + held);
        size_t have = held + got;
        if (have >= REDIS_EOF_MARK &&
            memcmp(x->buf + have - REDIS_EOF_MARK, mark, REDIS_EOF_MARK) == 0)
            return deliver(x, x->buf, have - REDIS_EOF_MARK, err);
        held = have < REDIS_EOF_MARK ? have : REDIS_EOF_MARK;
        rc = deliver(x, x->buf, have - held, err);
        if (rc != CAIRN_OK)
            return rc;
        memmove(x->buf, x->buf + have - held, held);
    }
}

/* The "$" line: "$EOF:<40-byte mark>" or "$<length>". */
static int transfer(struct xfer *x, const char *line, size_t n, struct cairn_err *err)
{
    if (starts(line, "$EOF:")) {
        if (n < 5 + REDIS_EOF_MARK)
            return unexpected(x->c, "where the RDB's end mark was expected", line, n, err);
        cairn_debug("redis", "redis %s: diskless transfer, end mark %.40s", x->c->addr, line + 5);
        return copy_marked(x, line + 5, err);
    }
    uint64_t len = 0;
    size_t i = 1;
    for (; line[0] == '$' && i < n && line[i] >= '0' && line[i] <= '9' && i < 20; i++)
        len = len * 10 + (uint64_t)(line[i] - '0');
    if (line[0] != '$' || i == 1 || i != n)
        return unexpected(x->c, "where the RDB's length was expected", line, n, err);
    cairn_debug("redis", "redis %s: disk-based transfer of %" PRIu64 " bytes", x->c->addr, len);
    x->total = len;
    return copy_sized(x, len, err);
}

/* Connect, authenticate, handshake, request the sync and copy the RDB; the connection is
 * closed on every path. */
static int fetch(struct xfer *x, struct cairn_err *err)
{
    const struct redis_conn_opts *o = x->o;
    const char *host = o->host != NULL && o->host[0] ? o->host : "127.0.0.1";
    int rc = redis_conn_open(x->c, host, o->port ? o->port : 6379, o->tls,
                             o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 10000,
                             o->io_timeout_ms > 0 ? o->io_timeout_ms : 60000, o->cancel, err);
    if (rc != CAIRN_OK)
        return rc;
    char line[REDIS_LINE_MAX];
    size_t n = 0;
    rc = handshake(x->c, o, err);
    if (rc == CAIRN_OK)
        rc = request_sync(x->c, o->password != NULL, line, sizeof(line), &n, err);
    if (rc == CAIRN_OK && x->c->keepalives > 0)
        cairn_debug("redis", "redis %s: skipped %u keepalive newlines while the RDB was prepared",
                    x->c->addr, x->c->keepalives);
    if (rc == CAIRN_OK)
        rc = transfer(x, line, n, err);
    redis_conn_close(x->c);
    return rc;
}

int redis_snapshot(const struct redis_conn_opts *o, struct cairn_writer *out, uint64_t *bytes,
                   struct cairn_err *err)
{
    if (bytes != NULL)
        *bytes = 0;
    if (o->port > 65535)
        return cairn_err_set(err, CAIRN_E_INVALID, "redis: port %u is out of range", o->port);
    if (o->user != NULL && o->user[0] && o->password == NULL)
        return cairn_err_set(err, CAIRN_E_INVALID, "redis: ACL user '%s' given without a password",
                             o->user);
    struct redis_conn *c = xcalloc(1, sizeof(*c));
    struct xfer x = {.c = c, .o = o, .out = out};
    redis_rdb_check_init(&x.check);
    x.buf = xmalloc(REDIS_CHUNK + REDIS_EOF_MARK);
    uint64_t t0 = mono_ns();
    int rc = fetch(&x, err);
    int has_crc = 0;
    if (rc == CAIRN_OK) {
        rc = redis_rdb_check_finish(&x.check, &has_crc, err);
        if (rc != CAIRN_OK)
            cairn_err_wrap(err, rc, "redis %s", c->addr);
    }
    if (rc == CAIRN_OK && o->progress != NULL)
        o->progress(o->progress_ctx, x.done, x.done);
    if (rc == CAIRN_OK && !has_crc)
        cairn_warn("redis",
                   "redis %s: the RDB has no checksum (the server saves with rdbchecksum no): "
                   "its framing was checked, its contents could not be",
                   c->addr);
    if (rc == CAIRN_OK)
        cairn_info("redis", "redis %s: RDB version %d, %" PRIu64 " bytes in %.2f s%s", c->addr,
                   x.check.version, x.done, (double)(mono_ns() - t0) / 1e9,
                   has_crc ? ", CRC-64 verified" : "");
    if (bytes != NULL)
        *bytes = x.done;
    free(x.buf);
    free(c);
    return rc;
}
