/* TCP to a Redis server with bounded waits: every wait is a poll() limited by the idle timeout
 * and cut into slices so a cancel flag is seen within REDIS_CANCEL_POLL ms. The service module
 * has the same kind of helpers (src/influx/net.c) but is a peer layer, so they are not
 * shared; a common home for them would serve both. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "internal.h"

static int cancelled(const struct redis_conn *c)
{
    return cancel_requested(c->cancel);
}

/* Wait for events on fd for at most timeout_ms of silence. */
static int conn_wait(struct redis_conn *c, short events, int timeout_ms, const char *what,
                     struct cairn_err *err)
{
    uint64_t end = mono_ns() + (uint64_t)timeout_ms * 1000000u;
    for (;;) {
        if (cancelled(c))
            return cairn_err_set(err, CAIRN_E_CANCELLED, "redis %s: %s: cancelled", c->addr, what);
        uint64_t now = mono_ns();
        if (now >= end)
            return cairn_err_set(err, CAIRN_E_TIMEOUT, "redis %s: %s: no progress for %d ms",
                                 c->addr, what, timeout_ms);
        uint64_t left = (end - now) / 1000000u + 1;
        struct pollfd p = {c->fd, events, 0};
        int n = poll(&p, 1, left < REDIS_CANCEL_POLL ? (int)left : REDIS_CANCEL_POLL);
        if (n < 0 && errno != EINTR)
            return cairn_err_sys(err, CAIRN_E_NETWORK, errno, "redis %s: %s: poll", c->addr, what);
        if (n > 0)
            return CAIRN_OK;
    }
}

/* Try each address of host:port until one connects (non-blocking connect, bounded wait). */
static int conn_dial(struct redis_conn *c, const char *host, const char *port, int timeout_ms,
                     struct cairn_err *err)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai != 0)
        return cairn_err_set(err, CAIRN_E_NETWORK, "redis %s: resolve '%s': %s", c->addr, host,
                             gai_strerror(gai));
    int rc = cairn_err_set(err, CAIRN_E_NETWORK, "redis %s: no address", c->addr);
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        c->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (c->fd < 0) {
            rc = cairn_err_sys(err, CAIRN_E_NETWORK, errno, "redis %s: socket", c->addr);
            continue;
        }
        rc = CAIRN_OK;
        if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            if (errno != EINPROGRESS)
                rc = cairn_err_sys(err, CAIRN_E_NETWORK, errno, "redis %s: connect", c->addr);
            else
                rc = conn_wait(c, POLLOUT, timeout_ms, "connect", err);
            int soerr = 0;
            socklen_t sl = sizeof(soerr);
            if (rc == CAIRN_OK && getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 &&
                soerr != 0)
                rc = cairn_err_sys(err, CAIRN_E_NETWORK, soerr, "redis %s: connect", c->addr);
        }
        if (rc == CAIRN_OK)
            break;
        close(c->fd);
        c->fd = -1;
        if (rc == CAIRN_E_CANCELLED)
            break;
    }
    freeaddrinfo(res);
    return rc;
}

int redis_conn_open(struct redis_conn *c, const char *host, unsigned port, int connect_timeout_ms,
                    int io_timeout_ms, const volatile int *cancel, struct cairn_err *err)
{
    char ps[16];
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->io_timeout_ms = io_timeout_ms;
    c->cancel = cancel;
    snprintf(ps, sizeof(ps), "%u", port);
    snprintf(c->addr, sizeof(c->addr), strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, ps);
    int rc = conn_dial(c, host, ps, connect_timeout_ms, err);
    if (rc != CAIRN_OK)
        return rc;
    /* Back to blocking: every transfer below waits in poll() first and uses MSG_DONTWAIT. */
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) & ~O_NONBLOCK);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return CAIRN_OK;
}

void redis_conn_close(struct redis_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->pos = c->len = 0;
}

int redis_conn_send(struct redis_conn *c, const void *data, size_t len, struct cairn_err *err)
{
    const uint8_t *p = data;
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return cairn_err_sys(err, CAIRN_E_NETWORK, errno, "redis %s: send", c->addr);
        int rc = conn_wait(c, POLLOUT, c->io_timeout_ms, "send", err);
        if (rc != CAIRN_OK)
            return rc;
    }
    return CAIRN_OK;
}

/* One recv of at most cap bytes into p, after waiting for data. */
static int conn_recv(struct redis_conn *c, void *p, size_t cap, size_t *got, struct cairn_err *err)
{
    for (;;) {
        if (cancelled(c))
            return cairn_err_set(err, CAIRN_E_CANCELLED, "redis %s: cancelled", c->addr);
        ssize_t n = recv(c->fd, p, cap, MSG_DONTWAIT);
        if (n >= 0) {
            *got = (size_t)n;
            return CAIRN_OK;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return cairn_err_sys(err, CAIRN_E_NETWORK, errno, "redis %s: receive", c->addr);
        int rc = conn_wait(c, POLLIN, c->io_timeout_ms, "receive", err);
        if (rc != CAIRN_OK)
            return rc;
    }
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
