/* The snapshot server: one listener, one thread per connection up to a cap, one request per
 * connection, dispatched on the type byte as InfluxDB 1.6 does. Every read and write has a
 * deadline; malformed requests are logged with the peer address and the connection closed. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cairn/log.h"
#include "common/util.h"
#include "internal.h"

#define LOGC "snapshot"

struct conn {
    struct cairn_snap_server *srv;
    int fd;
    size_t slot;
    char peer[80];
};

struct cairn_snap_server {
    int lfd;
    int stop_pipe[2];
    char addr[96];
    struct cairn_snap_provider prov;
    struct cairn_snap_server_opts opts;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned active;
    int *conn_fds; /* slot -> fd of open connections, -1 when free (for shutdown) */
};

static void format_sockaddr(const struct sockaddr *sa, socklen_t len, char *out, size_t cap)
{
    char host[64], port[16];
    if (getnameinfo(sa, len, host, sizeof(host), port, sizeof(port),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(out, cap, "?");
        return;
    }
    snprintf(out, cap, sa->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
}

int cairn_snap_server_new(const struct cairn_snap_server_opts *opts,
                          const struct cairn_snap_provider *provider,
                          struct cairn_snap_server **out, struct cairn_err *err)
{
    struct cairn_snap_server *s = cairn_xcalloc(1, sizeof(*s));
    s->prov = *provider;
    s->lfd = -1;
    s->stop_pipe[0] = s->stop_pipe[1] = -1;
    if (opts != NULL)
        s->opts = *opts;
    if (s->opts.listen == NULL)
        s->opts.listen = "127.0.0.1:8088";
    if (s->opts.max_conns == 0)
        s->opts.max_conns = 64;
    if (s->opts.idle_timeout_ms <= 0)
        s->opts.idle_timeout_ms = 30000;
    if (s->opts.request_timeout_ms <= 0)
        s->opts.request_timeout_ms = 30000;
    if (s->opts.max_upload == 0)
        s->opts.max_upload = 256u << 20;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->conn_fds = cairn_xmalloc(s->opts.max_conns * sizeof(int));
    for (unsigned i = 0; i < s->opts.max_conns; i++)
        s->conn_fds[i] = -1;

    char host[256], port[16];
    struct addrinfo hints = {0}, *res = NULL;
    int rc = snap_split_addr(s->opts.listen, host, sizeof(host), port, sizeof(port), err);
    if (rc != CAIRN_OK)
        goto fail;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int gai = getaddrinfo(host[0] ? host : "127.0.0.1", port, &hints, &res);
    if (gai != 0) {
        rc = cairn_err_set(err, CAIRN_E_INVALID, "listen address '%s': %s", s->opts.listen,
                           gai_strerror(gai));
        goto fail;
    }
    s->lfd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (s->lfd < 0 || setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(s->lfd, res->ai_addr, res->ai_addrlen) != 0 || listen(s->lfd, 512) != 0) {
        rc = cairn_err_sys(err, CAIRN_E_NETWORK, errno, "listen on %s", s->opts.listen);
        freeaddrinfo(res);
        goto fail;
    }
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    getsockname(s->lfd, (struct sockaddr *)&ss, &sl);
    format_sockaddr((struct sockaddr *)&ss, sl, s->addr, sizeof(s->addr));
    if (pipe2(s->stop_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        rc = cairn_err_sys(err, CAIRN_E_IO, errno, "pipe");
        goto fail;
    }
    *out = s;
    return CAIRN_OK;
fail:
    cairn_snap_server_free(s);
    return rc;
}

const char *cairn_snap_server_address(const struct cairn_snap_server *s)
{
    return s->addr;
}

void cairn_snap_server_stop(struct cairn_snap_server *s)
{
    int saved = errno;
    ssize_t n = write(s->stop_pipe[1], "x", 1);
    (void)n;
    errno = saved;
}

void cairn_snap_server_free(struct cairn_snap_server *s)
{
    if (s == NULL)
        return;
    if (s->lfd >= 0)
        close(s->lfd);
    for (int i = 0; i < 2; i++)
        if (s->stop_pipe[i] >= 0)
            close(s->stop_pipe[i]);
    if (s->prov.free != NULL)
        s->prov.free(s->prov.ctx);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->conn_fds);
    free(s);
}

/* ---- one connection ---- */

struct req_io {
    struct conn *c;
    uint64_t deadline;
    uint8_t *buf; /* bytes read so far past the type byte */
    size_t len, cap;
};

static int read_exact(struct req_io *io, void *dst, size_t n, struct cairn_err *err)
{
    uint8_t *p = dst;
    while (n > 0) {
        size_t got;
        int rc = snap_read_some(io->c->fd, p, n, &got, io->c->srv->opts.idle_timeout_ms,
                                io->deadline, err);
        if (rc != CAIRN_OK)
            return rc;
        if (got == 0)
            return cairn_err_set(err, CAIRN_E_PROTOCOL, "EOF");
        p += got;
        n -= got;
    }
    return CAIRN_OK;
}

/* Read until buf holds one complete JSON object; returns its length. */
static int read_json(struct req_io *io, size_t *json_len, struct cairn_err *err)
{
    for (;;) {
        size_t end;
        int sr = cairn_snap_json_scan(io->buf, io->len, &end);
        if (sr == 1) {
            *json_len = end;
            return CAIRN_OK;
        }
        if (sr < 0)
            return cairn_err_set(err, CAIRN_E_PROTOCOL, "invalid character in JSON request");
        if (io->len >= CAIRN_SNAP_MAX_JSON)
            return cairn_err_set(err, CAIRN_E_PROTOCOL, "JSON request exceeds %u bytes",
                                 CAIRN_SNAP_MAX_JSON);
        size_t got;
        int rc = snap_read_some(io->c->fd, io->buf + io->len, CAIRN_SNAP_MAX_JSON - io->len, &got,
                                io->c->srv->opts.idle_timeout_ms, io->deadline, err);
        if (rc != CAIRN_OK)
            return rc;
        if (got == 0)
            return cairn_err_set(err, CAIRN_E_PROTOCOL, io->len ? "unexpected EOF" : "EOF");
        io->len += got;
    }
}

static int reply(struct conn *c, const void *buf, size_t len, struct cairn_err *err)
{
    return snap_write_full(c->fd, buf, len, c->srv->opts.idle_timeout_ms, err);
}

static int serve_meta(struct conn *c, struct cairn_err *err)
{
    uint8_t *blob = NULL;
    size_t len = 0;
    int rc = c->srv->prov.meta_data(c->srv->prov.ctx, &blob, &len, err);
    if (rc != CAIRN_OK)
        return rc;
    struct sbuf b = {0};
    uint8_t hdr[16];
    snap_u64be_put(hdr, CAIRN_SNAP_META_MAGIC);
    snap_u64be_put(hdr + 8, len);
    sbuf_add(&b, hdr, 16);
    sbuf_add(&b, blob, len);
    snap_u64be_put(hdr, 5); /* OSS influxd never sets Node: its JSON is "null\n" */
    sbuf_add(&b, hdr, 8);
    sbuf_adds(&b, "null\n");
    free(blob);
    rc = reply(c, b.p, b.len, err);
    sbuf_free(&b);
    return rc;
}

static int serve_paths(struct conn *c, const struct cairn_snap_request *req, int with_rp,
                       struct cairn_err *err)
{
    char **paths = NULL;
    size_t n = 0;
    int rc = c->srv->prov.shard_paths(c->srv->prov.ctx, req->backup_db,
                                      with_rp ? req->backup_rp : NULL, &paths, &n, err);
    if (rc != CAIRN_OK)
        return rc;
    struct sbuf b = {0};
    sbuf_adds(&b, "{\"Paths\":");
    if (n == 0)
        sbuf_adds(&b, "null");
    for (size_t i = 0; i < n; i++) {
        sbuf_addc(&b, i == 0 ? '[' : ',');
        snap_json_string(&b, paths[i]);
        free(paths[i]);
    }
    free(paths);
    if (n > 0)
        sbuf_addc(&b, ']');
    sbuf_adds(&b, "}\n");
    rc = reply(c, b.p, b.len, err);
    sbuf_free(&b);
    return rc;
}

static int serve_shard(struct conn *c, const struct cairn_snap_request *req, int export,
                       struct cairn_err *err)
{
    const struct cairn_snap_provider *p = &c->srv->prov;
    if (export && p->shard_export == NULL)
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED,
                             "shard export is not supported by "
                             "this provider");
    struct cairn_writer *w = snap_sock_writer_new(c->fd, c->srv->opts.idle_timeout_ms);
    int rc = export ? p->shard_export(p->ctx, req->shard_id, &req->export_start, &req->export_end,
                                      w, err)
                    : p->shard_backup(p->ctx, req->shard_id, &req->since, w, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(w, err);
    cairn_writer_free(w);
    return rc;
}

static int serve_meta_update(struct conn *c, struct req_io *io, size_t json_len,
                             const struct cairn_snap_request *req, struct cairn_err *err)
{
    const struct cairn_snap_server_opts *o = &c->srv->opts;
    if (c->srv->prov.meta_import == NULL)
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED, "restore is not supported here");
    if (req->upload_size < 0 || (uint64_t)req->upload_size > o->max_upload)
        return cairn_err_set(err, CAIRN_E_PROTOCOL, "upload size %lld outside 0..%llu",
                             (long long)req->upload_size, (unsigned long long)o->max_upload);
    size_t size = (size_t)req->upload_size;
    /* The Go client sends JSON, '\n', then the blob: skip the newline, then read exactly
     * UploadSize bytes however they are segmented (1.6 itself did one read and lost data). */
    size_t have = io->len - json_len, off = json_len;
    if (have == 0) {
        uint8_t nl;
        int rc = read_exact(io, &nl, 1, err);
        if (rc != CAIRN_OK)
            return rc;
        if (nl != '\n') {
            io->buf[io->len++] = nl;
            have = 1;
        }
    } else if (io->buf[off] == '\n') {
        off++, have--;
    }
    if (have > size)
        return cairn_err_set(err, CAIRN_E_PROTOCOL, "%zu bytes beyond the %zu-byte upload",
                             have - size, size);
    uint8_t *blob = cairn_xmalloc(size ? size : 1);
    memcpy(blob, io->buf + off, have);
    int rc = read_exact(io, blob + have, size - have, err);
    if (rc != CAIRN_OK) {
        free(blob);
        cairn_err_wrap(err, "read upload");
        return rc;
    }
    struct cairn_snap_idmap map = {0};
    struct cairn_err ierr = {0};
    rc = c->srv->prov.meta_import(c->srv->prov.ctx, blob, size, req, &map, &ierr);
    free(blob);
    if (rc != CAIRN_OK && rc != CAIRN_E_CORRUPT && rc != CAIRN_E_EXISTS && rc != CAIRN_E_NOTFOUND) {
        cairn_err_copy(err, &ierr); /* commit failed: no reply at all, as influxd */
        return rc;
    }
    if (rc != CAIRN_OK)
        cairn_warn(LOGC, "peer %s: metastore upload refused: %s", c->peer, ierr.msg);
    struct sbuf b = {0};
    uint8_t u[8];
    snap_u64be_put(u, CAIRN_SNAP_META_MAGIC);
    sbuf_add(&b, u, 8);
    snap_u64be_put(u, map.n);
    sbuf_add(&b, u, 8);
    for (size_t i = 0; i < map.n; i++) {
        snap_u64be_put(u, map.pairs[i][0]);
        sbuf_add(&b, u, 8);
        snap_u64be_put(u, map.pairs[i][1]);
        sbuf_add(&b, u, 8);
    }
    cairn_snap_idmap_free(&map);
    int wrc = reply(c, b.p, b.len, err);
    sbuf_free(&b);
    return wrc;
}

static int serve_shard_update(struct conn *c, struct req_io *io, struct cairn_err *err)
{
    if (c->srv->prov.shard_import == NULL)
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED, "restore is not supported here");
    uint8_t idb[8];
    int rc = read_exact(io, idb, 8, err);
    if (rc != CAIRN_OK) {
        cairn_err_wrap(err, "read shard id");
        return rc;
    }
    uint64_t id = snap_u64be_get(idb);
    struct cairn_reader *r = snap_sock_reader_new(c->fd, c->srv->opts.idle_timeout_ms, NULL, 0);
    rc = c->srv->prov.shard_import(c->srv->prov.ctx, id, r, err);
    cairn_reader_free(r);
    if (rc == CAIRN_OK)
        cairn_info(LOGC, "peer %s: restored shard %llu", c->peer, (unsigned long long)id);
    return rc;
}

static void handle(struct conn *c)
{
    struct cairn_snap_server *s = c->srv;
    struct cairn_err err = {0};
    struct req_io io = {c, cairn_mono_ns() + (uint64_t)s->opts.request_timeout_ms * 1000000u,
                        cairn_xmalloc(CAIRN_SNAP_MAX_JSON + 1), 0, CAIRN_SNAP_MAX_JSON};
    struct cairn_snap_request req;
    cairn_snap_request_init(&req);
    uint8_t hdr[2];
    const char *stage = "read request";
    int rc = read_exact(&io, hdr, 1, &err);
    if (rc == CAIRN_OK && hdr[0] != CAIRN_SNAP_MUX_HEADER) {
        cairn_warn(LOGC, "peer %s: tcp.Mux: handler not registered: %u", c->peer, hdr[0]);
        goto out;
    }
    if (rc == CAIRN_OK)
        rc = read_exact(&io, hdr + 1, 1, &err);
    if (rc != CAIRN_OK)
        goto fail;
    uint64_t t0 = cairn_mono_ns();
    if (hdr[1] == CAIRN_SNAP_SHARD_UPDATE) {
        stage = "shard upload";
        rc = serve_shard_update(c, &io, &err);
        goto done;
    }
    size_t json_len = 0;
    rc = read_json(&io, &json_len, &err);
    if (rc == CAIRN_OK)
        rc = cairn_snap_request_decode((const char *)io.buf, json_len, &req, &err);
    if (rc != CAIRN_OK)
        goto fail;
    switch (hdr[1]) {
    case CAIRN_SNAP_SHARD_BACKUP:
    case CAIRN_SNAP_SHARD_EXPORT:
        stage = hdr[1] == CAIRN_SNAP_SHARD_BACKUP ? "shard backup" : "shard export";
        rc = serve_shard(c, &req, hdr[1] == CAIRN_SNAP_SHARD_EXPORT, &err);
        break;
    case CAIRN_SNAP_METASTORE_BACKUP:
        stage = "metastore backup";
        rc = serve_meta(c, &err);
        break;
    case CAIRN_SNAP_DATABASE_INFO:
    case CAIRN_SNAP_RP_INFO:
        stage = hdr[1] == CAIRN_SNAP_DATABASE_INFO ? "database info" : "retention policy info";
        rc = serve_paths(c, &req, hdr[1] == CAIRN_SNAP_RP_INFO, &err);
        break;
    case CAIRN_SNAP_META_UPDATE:
        stage = "metastore upload";
        rc = serve_meta_update(c, &io, json_len, &req, &err);
        break;
    default: cairn_warn(LOGC, "peer %s: request type unknown: %u", c->peer, req.type); goto out;
    }
done:
    if (rc == CAIRN_OK) {
        cairn_info(LOGC, "peer %s: %s done in %.3f s", c->peer, stage,
                   (double)(cairn_mono_ns() - t0) / 1e9);
        goto out;
    }
fail:
    cairn_warn(LOGC, "peer %s: %s: %s", c->peer, stage, err.msg);
out:
    cairn_snap_request_clear(&req);
    free(io.buf);
}

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    struct cairn_snap_server *s = c->srv;
    handle(c);
    pthread_mutex_lock(&s->mu);
    s->conn_fds[c->slot] = -1;
    close(c->fd); /* under the lock: stop() may shutdown() slots it sees */
    s->active--;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    free(c);
    return NULL;
}

static void accept_one(struct cairn_snap_server *s)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int fd = accept4(s->lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
            cairn_warn(LOGC, "accept: %s", strerror(errno));
        if (errno == EMFILE || errno == ENFILE)
            usleep(100000); /* let connections finish instead of spinning */
        return;
    }
    struct conn *c = cairn_xcalloc(1, sizeof(*c));
    c->srv = s;
    c->fd = fd;
    format_sockaddr((struct sockaddr *)&ss, sl, c->peer, sizeof(c->peer));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    pthread_mutex_lock(&s->mu);
    if (s->active >= s->opts.max_conns) {
        pthread_mutex_unlock(&s->mu);
        cairn_warn(LOGC, "peer %s: refused: %u connections open (max-conns)", c->peer,
                   s->opts.max_conns);
        close(fd);
        free(c);
        return;
    }
    size_t slot = 0;
    while (s->conn_fds[slot] >= 0)
        slot++;
    c->slot = slot;
    s->conn_fds[slot] = fd;
    s->active++;
    pthread_mutex_unlock(&s->mu);

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 512u * 1024u);
    pthread_t th;
    int e = pthread_create(&th, &attr, conn_main, c);
    pthread_attr_destroy(&attr);
    if (e != 0) {
        cairn_warn(LOGC, "peer %s: cannot start a thread: %s", c->peer, strerror(e));
        pthread_mutex_lock(&s->mu);
        s->conn_fds[slot] = -1;
        s->active--;
        pthread_mutex_unlock(&s->mu);
        close(fd);
        free(c);
    }
}

int cairn_snap_server_run(struct cairn_snap_server *s, struct cairn_err *err)
{
    (void)err;
    cairn_info(LOGC, "listening on %s (max %u connections)", s->addr, s->opts.max_conns);
    for (;;) {
        struct pollfd p[2] = {{s->lfd, POLLIN, 0}, {s->stop_pipe[0], POLLIN, 0}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return cairn_err_sys(err, CAIRN_E_IO, errno, "poll");
        }
        if (p[1].revents)
            break;
        if (p[0].revents)
            accept_one(s);
    }
    /* Give open requests a moment, then cut them off: their threads see EOF/EPIPE. */
    pthread_mutex_lock(&s->mu);
    uint64_t until = cairn_mono_ns() + 5000000000ull;
    while (s->active > 0 && cairn_mono_ns() < until) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    for (unsigned i = 0; i < s->opts.max_conns; i++)
        if (s->conn_fds[i] >= 0)
            shutdown(s->conn_fds[i], SHUT_RDWR);
    while (s->active > 0)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    cairn_info(LOGC, "stopped");
    return CAIRN_OK;
}
