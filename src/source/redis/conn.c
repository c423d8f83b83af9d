/* The connection to a Redis server: io's TCP and TLS connection (io/net.h) with the idle
 * timeout and cancel flag of the options, a small read-ahead for reply lines, and messages
 * that name the server ("redis HOST:PORT: ..."). */
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "internal.h"

int redis_conn_open(struct redis_conn *c, const char *host, unsigned port,
                    const struct tls_opts *tls, int connect_timeout_ms, int io_timeout_ms,
                    const volatile int *cancel, struct cairn_err *err)
{
    memset(c, 0, sizeof(*c));
    c->nc.fd = -1;
    c->io_timeout_ms = io_timeout_ms;
    c->cancel = cancel;
    snprintf(c->addr, sizeof(c->addr), strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, port);
    int rc = net_dial(c->addr, connect_timeout_ms, cancel, &c->nc.fd, err);
    if (rc != CAIRN_OK || tls == NULL)
        return rc == CAIRN_OK ? rc : cairn_err_wrap(err, rc, "redis %s", c->addr);
    struct cairn_tls *t = NULL;
    rc = tls_client_new(tls, &t, err);
    /* The handshake is part of connecting: bounded by the connect timeout. The session keeps
     * its own reference to the context, so ours goes at once. */
    if (rc == CAIRN_OK)
        rc = net_conn_tls(&c->nc, t, host, connect_timeout_ms, 0, cancel, err);
    tls_free(t);
    if (rc != CAIRN_OK) {
        net_conn_close(&c->nc);
        return cairn_err_wrap(err, rc, "redis %s (TLS)", c->addr);
    }
    return CAIRN_OK;
}

void redis_conn_close(struct redis_conn *c)
{
    net_conn_close(&c->nc);
    c->pos = c->len = 0;
}

int redis_conn_send(struct redis_conn *c, const void *data, size_t len, struct cairn_err *err)
{
    int rc = net_conn_write_full(&c->nc, data, len, c->io_timeout_ms, 0, c->cancel, err);
    return rc == CAIRN_OK ? rc : cairn_err_wrap(err, rc, "redis %s", c->addr);
}

/* One read of at most cap bytes into p. The cancel flag is looked at before each read too:
 * net_conn_read_some sees it only while it waits, and a fast stream never waits. */
static int conn_recv(struct redis_conn *c, void *p, size_t cap, size_t *got, struct cairn_err *err)
{
    if (cancel_requested(c->cancel))
        return cairn_err_set(err, CAIRN_E_CANCELLED, "redis %s: cancelled", c->addr);
    int rc = net_conn_read_some(&c->nc, p, cap, got, c->io_timeout_ms, 0, c->cancel, err);
    return rc == CAIRN_OK ? rc : cairn_err_wrap(err, rc, "redis %s", c->addr);
}

int redis_conn_read(struct redis_conn *c, void *data, size_t cap, size_t *got,
                    struct cairn_err *err)
{
    if (c->pos < c->len) {
        size_t n = c->len - c->pos;
        if (n > cap)
            n = cap;
        memcpy(data, c->buf + c->pos, n);
        c->pos += n;
        *got = n;
        return CAIRN_OK;
    }
    return conn_recv(c, data, cap, got, err);
}

int redis_conn_line(struct redis_conn *c, char *line, size_t cap, size_t *len,
                    struct cairn_err *err)
{
    size_t n = 0;
    for (;;) {
        while (c->pos < c->len) {
            uint8_t ch = c->buf[c->pos++];
            if (ch == '\n') {
                if (n > 0 && line[n - 1] == '\r')
                    n--;
                line[n] = 0;
                *len = n;
                return CAIRN_OK;
            }
            if (n + 1 >= cap) {
                line[n] = 0;
                char q[80];
                str_escape(q, sizeof(q), line, n < 48 ? n : 48);
                return cairn_err_set(err, CAIRN_E_PROTOCOL,
                                     "redis %s: reply line longer than %zu bytes: \"%s...\"",
                                     c->addr, cap - 1, q);
            }
            line[n++] = (char)ch;
        }
        size_t got = 0;
        int rc = conn_recv(c, c->buf, sizeof(c->buf), &got, err);
        if (rc != CAIRN_OK)
            return rc;
        if (got == 0)
            return cairn_err_set(err, CAIRN_E_NETWORK,
                                 "redis %s: connection closed by the server while waiting for "
                                 "a reply",
                                 c->addr);
        c->pos = 0;
        c->len = got;
    }
}
