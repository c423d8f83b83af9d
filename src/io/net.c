/* TCP helpers with deadlines (net.h): every wait is bounded, so a silent peer can never hold a
 * thread for ever. Sockets stay blocking; each transfer uses MSG_DONTWAIT after poll(). */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "net.h"

int net_split_addr(const char *addr, char *host, size_t hcap, char *port, size_t pcap,
                   struct cairn_err *err)
{
    const char *colon;
    size_t hl;
    const char *h = addr;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (close == NULL || close[1] != ':')
            goto bad;
        h = addr + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL)
            goto bad;
        hl = (size_t)(colon - addr);
    }
    if (hl >= hcap || strlen(colon + 1) >= pcap || colon[1] == '\0')
        goto bad;
    for (const char *p = colon + 1; *p; p++)
        if (*p < '0' || *p > '9')
            goto bad;
    memcpy(host, h, hl);
    host[hl] = 0;
    snprintf(port, pcap, "%s", colon + 1);
    return CAIRN_OK;
bad:
    return cairn_err_set(err, CAIRN_E_INVALID, "invalid address '%s': expected HOST:PORT", addr);
}

int net_wait(int fd, short events, int timeout_ms, uint64_t deadline_ns, const volatile int *cancel,
             const char *what, struct cairn_err *err)
{
    /* With a cancel flag the idle timeout is kept as a deadline and polled in slices. */
    uint64_t idle_end = mono_ns() + (uint64_t)timeout_ms * 1000000u;
    for (;;) {
        int wait = timeout_ms;
        if (cancel != NULL) {
            if (cancel_requested(cancel))
                return cairn_err_set(err, CAIRN_E_CANCELLED, "%s: cancelled", what);
            uint64_t now = mono_ns();
            if (now >= idle_end)
                return cairn_err_set(err, CAIRN_E_TIMEOUT, "%s: no progress for %d ms", what,
                                     timeout_ms);
            uint64_t left = (idle_end - now) / 1000000u + 1;
            wait = left < NET_CANCEL_POLL_MS ? (int)left : NET_CANCEL_POLL_MS;
        }
        if (deadline_ns != 0) {
            uint64_t now = mono_ns();
            if (now >= deadline_ns)
                return cairn_err_set(err, CAIRN_E_TIMEOUT, "%s: deadline exceeded", what);
            uint64_t left = (deadline_ns - now) / 1000000u + 1;
            if (left < (uint64_t)wait)
                wait = (int)left;
        }
        struct pollfd p = {fd, events, 0};
        int n = poll(&p, 1, wait);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return cairn_err_sys(err, CAIRN_E_NETWORK, errno, "%s: poll", what);
        }
        if (n == 0) {
            if (cancel != NULL || (deadline_ns != 0 && mono_ns() < deadline_ns))
                continue;
            return cairn_err_set(err, CAIRN_E_TIMEOUT, "%s: no progress for %d ms", what,
                                 timeout_ms);
        }
        return CAIRN_OK;
    }
}

int net_read_some_fd(int fd, void *buf, size_t cap, size_t *got, int timeout_ms,
                     uint64_t deadline_ns, const volatile int *cancel, struct cairn_err *err)
{
    for (;;) {
        ssize_t n = recv(fd, buf, cap, MSG_DONTWAIT);
        if (n >= 0) {
            *got = (size_t)n;
            return CAIRN_OK;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return cairn_err_sys(err, CAIRN_E_NETWORK, errno, "read from peer");
        int rc = net_wait(fd, POLLIN, timeout_ms, deadline_ns, cancel, "read from peer", err);
        if (rc != CAIRN_OK)
            return rc;
    }
}

int net_dial(const char *addr, int timeout_ms, const volatile int *cancel, int *out,
             struct cairn_err *err)
{
    char host[256], port[16];
    int rc = net_split_addr(addr, host, sizeof(host), port, sizeof(port), err);
    if (rc != CAIRN_OK)
        return rc;
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
    if (gai != 0)
        return cairn_err_set(err, CAIRN_E_NETWORK, "resolve '%s': %s", addr, gai_strerror(gai));
    rc = cairn_err_set(err, CAIRN_E_NETWORK, "connect %s: no address", addr);
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            rc = cairn_err_sys(err, CAIRN_E_NETWORK, errno, "socket");
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            if (errno != EINPROGRESS) {
                rc = cairn_err_sys(err, CAIRN_E_NETWORK, errno, "connect %s", addr);
                close(fd);
                continue;
            }
            rc = net_wait(fd, POLLOUT, timeout_ms, 0, cancel, "connect", err);
            int soerr = 0;
            socklen_t sl = sizeof(soerr);
            if (rc == CAIRN_OK && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 &&
                soerr != 0)
                rc = cairn_err_sys(err, CAIRN_E_NETWORK, soerr, "connect %s", addr);
            if (rc == CAIRN_E_CANCELLED) {
                close(fd);
                break;
            }
            if (rc != CAIRN_OK) {
                if (rc == CAIRN_E_TIMEOUT)
                    cairn_err_wrap(err, rc, "connect %s", addr);
                close(fd);
                continue;
            }
        }
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        *out = fd;
        rc = CAIRN_OK;
        break;
    }
    freeaddrinfo(res);
    return rc;
}

/* ---- stages ---- */

struct conn_writer {
    struct cairn_writer base;
    struct net_conn *c;
    int timeout_ms;
    const volatile int *cancel;
};

static int conn_write(struct cairn_writer *w, const void *buf, size_t len, struct cairn_err *err)
{
    struct conn_writer *s = (struct conn_writer *)w;
    return net_conn_write_full(s->c, buf, len, s->timeout_ms, 0, s->cancel, err);
}

static const struct cairn_writer_ops conn_writer_ops = {"socket", conn_write, NULL, NULL};

struct cairn_writer *net_conn_writer_new(struct net_conn *c, int timeout_ms,
                                         const volatile int *cancel)
{
    struct conn_writer *s = xcalloc(1, sizeof(*s));
    cairn_writer_init(&s->base, &conn_writer_ops, NULL);
    s->c = c;
    s->timeout_ms = timeout_ms;
    s->cancel = cancel;
    return &s->base;
}
