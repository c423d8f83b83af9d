/* The snapshot server: one listener, one thread per connection up to a cap, one request per
 * connection, dispatched on the type byte as InfluxDB 1.6 does. Every read and write has an
 * idle timeout and every request a whole deadline; malformed requests are logged with the
 * peer address and the connection closed. Bounds against hostile clients: a per-address
 * connection cap, slow connections dropped when the slots are needed, uploads streamed to an
 * unnamed file (memory does not follow a declared size) and a memory budget for imports.
 * Restore uploads (the only writes) are refused unless the server allows them. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cairn/log.h"
#include "common/util.h"
#include "internal.h"

#define LOGC "snapshot"
/* A connection younger than this is never dropped as slow. */
#define SLOW_GRACE_NS 2000000000ull
/* How long a new connection waits for a dropped one to leave. */
#define ADMIT_WAIT_NS 2000000000ull
#define REFUSED       "cairnd: refused: "

struct conn {
    struct cairn_influx_server *srv;
    struct net_conn io; /* plain, or TLS once handle() saw a handshake */
    size_t slot;
    uint64_t start_ns, deadline; /* deadline: the whole request */
    _Atomic uint64_t progress;   /* bytes moved either way, for the slow-client test */
    atomic_int dropped;          /* shut down to make room for another client */
    int refused;                 /* answered with a refusal (logged already) */
    char peer[80];
    char host[64];
};

struct cairn_influx_server {
    int lfd;
    int stop_pipe[2];
    char addr[96];
    struct cairn_influx_provider prov;
    struct cairn_influx_server_opts opts;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a connection ended or memory budget was released */
    unsigned active;
    struct conn **conns;  /* slot -> open connection, NULL when free; under mu */
    uint64_t budget_used; /* bytes of imports in memory, under mu */
};

/* "host:port" into out; the host alone into host (the per-address limit's key). */
static void format_sockaddr(const struct sockaddr *sa, socklen_t len, char *out, size_t cap,
                            char *host, size_t hcap)
{
    char port[16];
    if (getnameinfo(sa, len, host, hcap, port, sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV) !=
        0) {
        snprintf(out, cap, "?");
        snprintf(host, hcap, "?");
        return;
    }
    snprintf(out, cap, sa->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
}

/* Wait on the server's condition until deadline_ns (monotonic); 0 when woken, -1 past it. */
static int cv_wait_until(struct cairn_influx_server *s, uint64_t deadline_ns)
{
    uint64_t now = mono_ns();
    if (now >= deadline_ns)
        return -1;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t t = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec + (deadline_ns - now);
    ts.tv_sec = (time_t)(t / 1000000000u);
    ts.tv_nsec = (long)(t % 1000000000u);
    pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    return 0;
}

int cairn_influx_server_new(const struct cairn_influx_server_opts *opts,
                            const struct cairn_influx_provider *provider,
                            struct cairn_influx_server **out, struct cairn_err *err)
{
    *out = NULL;
    struct cairn_influx_server *s = xcalloc(1, sizeof(*s));
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
    if (s->opts.request_deadline_ms <= 0)
        s->opts.request_deadline_ms = 3600000;
    if (s->opts.max_per_addr == 0)
        s->opts.max_per_addr = s->opts.max_conns < 16 ? s->opts.max_conns : 16;
    if (s->opts.mem_budget == 0)
        s->opts.mem_budget = 64u << 20;
    if (s->opts.slow_rate == 0)
        s->opts.slow_rate = 1024;
    if (s->opts.staging_dir == NULL)
        s->opts.staging_dir = "/tmp";
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    s->conns = xcalloc(s->opts.max_conns, sizeof(*s->conns));

    char host[256], port[16];
    struct addrinfo hints = {0}, *res = NULL;
    int rc = net_split_addr(s->opts.listen, host, sizeof(host), port, sizeof(port), err);
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
    char lhost[64];
    format_sockaddr((struct sockaddr *)&ss, sl, s->addr, sizeof(s->addr), lhost, sizeof(lhost));
    if (pipe2(s->stop_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        rc = cairn_err_sys(err, CAIRN_E_IO, errno, "pipe");
        goto fail;
    }
    *out = s;
    return CAIRN_OK;
fail:
    cairn_influx_server_free(s);
    return rc;
}

const char *cairn_influx_server_address(const struct cairn_influx_server *s)
{
    return s->addr;
}

void cairn_influx_server_stop(struct cairn_influx_server *s)
{
    int saved = errno;
    ssize_t n = write(s->stop_pipe[1], "x", 1);
    (void)n;
    errno = saved;
}

void cairn_influx_server_free(struct cairn_influx_server *s)
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
    free(s->conns);
    free(s);
}

/* ---- connection I/O ----
 * Every byte to and from a peer goes through conn_read and conn_write (plain or TLS, see
 * influx_conn_*): each wait is bounded by the idle timeout and by the request's deadline, and
 * every byte counts as progress for the slow-client test. */

static int conn_read(struct conn *c, void *buf, size_t cap, size_t *got, uint64_t deadline,
                     struct cairn_err *err)
{
    int rc = net_conn_read_some(&c->io, buf, cap, got, c->srv->opts.idle_timeout_ms, deadline, NULL,
                                err);
    if (rc == CAIRN_OK)
        atomic_fetch_add(&c->progress, *got);
    return rc;
}

static int conn_write(struct conn *c, const void *buf, size_t len, struct cairn_err *err)
{
    const uint8_t *p = buf;
    while (len > 0) {
        size_t n;
        int rc = net_conn_write_some(&c->io, p, len, &n, c->srv->opts.idle_timeout_ms, c->deadline,
                                     NULL, err);
        if (rc != CAIRN_OK)
            return rc;
        p += n;
        len -= n;
        atomic_fetch_add(&c->progress, (uint64_t)n);
    }
    return CAIRN_OK;
}

struct conn_writer {
    struct cairn_writer base;
    struct conn *c;
};

static int cw_write(struct cairn_writer *w, const void *buf, size_t len, struct cairn_err *err)
{
    return conn_write(((struct conn_writer *)w)->c, buf, len, err);
}

static const struct cairn_writer_ops conn_writer_ops = {"connection", cw_write, NULL, NULL};

struct conn_reader {
    struct cairn_reader base;
    struct conn *c;
};

static int cr_read(struct cairn_reader *r, void *buf, size_t cap, size_t *got,
                   struct cairn_err *err)
{
    struct conn *c = ((struct conn_reader *)r)->c;
    return conn_read(c, buf, cap, got, c->deadline, err);
}

static const struct cairn_reader_ops conn_reader_ops = {"connection", cr_read, NULL};

/* ---- one connection ---- */

struct req_io {
    struct conn *c;
    uint64_t deadline; /* for the request header: the header timeout or the whole deadline */
    uint8_t *buf;      /* bytes read so far past the type byte; later the copy buffer */
    size_t len, cap;
};

static int read_exact(struct req_io *io, void *dst, size_t n, struct cairn_err *err)
{
    uint8_t *p = dst;
    while (n > 0) {
        size_t got;
        int rc = conn_read(io->c, p, n, &got, io->deadline, err);
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
        int sr = cairn_influx_json_scan(io->buf, io->len, &end);
        if (sr == 1) {
            *json_len = end;
            return CAIRN_OK;
        }
        if (sr < 0)
            return cairn_err_set(err, CAIRN_E_PROTOCOL, "invalid character in JSON request");
        if (io->len >= CAIRN_INFLUX_MAX_JSON)
            return cairn_err_set(err, CAIRN_E_PROTOCOL, "JSON request exceeds %u bytes",
                                 CAIRN_INFLUX_MAX_JSON);
        size_t got;
        int rc = conn_read(io->c, io->buf + io->len, CAIRN_INFLUX_MAX_JSON - io->len, &got,
                           io->deadline, err);
        if (rc != CAIRN_OK)
            return rc;
        if (got == 0)
            return cairn_err_set(err, CAIRN_E_PROTOCOL, io->len ? "unexpected EOF" : "EOF");
        io->len += got;
    }
}

static int reply(struct conn *c, const void *buf, size_t len, struct cairn_err *err)
{
    return conn_write(c, buf, len, err);
}

/* Refuse a request with a log line and a one-line text reply ("cairnd: refused: why"),
 * which cairn's client reports and influxd's rejects as a bad reply. The rest of the upload
 * is drained briefly so the reply is not lost to a reset. */
static void refuse(struct conn *c, const char *stage, const char *why)
{
    cairn_warn(LOGC, "peer %s: %s refused: %s", c->peer, stage, why);
    c->refused = 1;
    char msg[512];
    int n = snprintf(msg, sizeof(msg), REFUSED "%s\n", why);
    struct cairn_err ignored = {0};
    if (conn_write(c, msg, (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1, &ignored) !=
        CAIRN_OK)
        return;
    uint64_t until = mono_ns() + 2000000000ull;
    if (until > c->deadline)
        until = c->deadline;
    if (net_conn_end_write(&c->io, c->srv->opts.idle_timeout_ms, until, NULL, &ignored) != CAIRN_OK)
        return;
    uint8_t buf[4096];
    size_t got = 1, total = 0;
    while (got > 0 && total < (1u << 20) &&
           conn_read(c, buf, sizeof(buf), &got, until, &ignored) == CAIRN_OK)
        total += got;
}

static int serve_meta(struct conn *c, struct cairn_err *err)
{
    uint8_t *blob = NULL;
    size_t len = 0;
    int rc = c->srv->prov.meta_data(c->srv->prov.ctx, &blob, &len, err);
    if (rc != CAIRN_OK)
        return rc;
    struct buf b = {0};
    uint8_t hdr[16];
    influx_u64be_put(hdr, CAIRN_INFLUX_META_MAGIC);
    influx_u64be_put(hdr + 8, len);
    buf_add(&b, hdr, 16);
    buf_add(&b, blob, len);
    influx_u64be_put(hdr, 5); /* OSS influxd never sets Node: its JSON is "null\n" */
    buf_add(&b, hdr, 8);
    buf_adds(&b, "null\n");
    free(blob);
    rc = reply(c, b.p, b.len, err);
    buf_free(&b);
    return rc;
}

static int serve_paths(struct conn *c, const struct cairn_influx_request *req, int with_rp,
                       struct cairn_err *err)
{
    char **paths = NULL;
    size_t n = 0;
    int rc = c->srv->prov.shard_paths(c->srv->prov.ctx, req->backup_db,
                                      with_rp ? req->backup_rp : NULL, &paths, &n, err);
    if (rc != CAIRN_OK)
        return rc;
    struct buf b = {0};
    buf_adds(&b, "{\"Paths\":");
    if (n == 0)
        buf_adds(&b, "null");
    for (size_t i = 0; i < n; i++) {
        buf_addc(&b, i == 0 ? '[' : ',');
        buf_json_string(&b, paths[i], 0);
        free(paths[i]);
    }
    free(paths);
    if (n > 0)
        buf_addc(&b, ']');
    buf_adds(&b, "}\n");
    rc = reply(c, b.p, b.len, err);
    buf_free(&b);
    return rc;
}

static int serve_shard(struct conn *c, const struct cairn_influx_request *req, int export,
                       struct cairn_err *err)
{
    const struct cairn_influx_provider *p = &c->srv->prov;
    if (export && p->shard_export == NULL)
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED,
                             "shard export is not supported by "
                             "this provider");
    if (export && influx_time_ns(&req->export_start, INT64_MIN) >
                      influx_time_ns(&req->export_end, INT64_MAX)) {
        char a[64], b[64];
        influx_time_format(&req->export_start, a, sizeof(a));
        influx_time_format(&req->export_end, b, sizeof(b));
        return cairn_err_set(err, CAIRN_E_INVALID, "export window starts (%s) after it ends (%s)",
                             a, b);
    }
    struct conn_writer *cw = xcalloc(1, sizeof(*cw));
    cairn_writer_init(&cw->base, &conn_writer_ops, NULL);
    cw->c = c;
    struct cairn_writer *w = &cw->base;
    int rc = export ? p->shard_export(p->ctx, req->shard_id, &req->export_start, &req->export_end,
                                      w, err)
                    : p->shard_backup(p->ctx, req->shard_id, &req->since, w, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(w, err);
    cairn_writer_free(w);
    return rc;
}

/* ---- memory budget ---- */

/* Take n bytes of the import budget, waiting (up to the request's deadline) while other
 * imports hold it; one import larger than the whole budget runs when it is alone. */
static int budget_take(struct conn *c, uint64_t n, struct cairn_err *err)
{
    struct cairn_influx_server *s = c->srv;
    int rc = CAIRN_OK;
    pthread_mutex_lock(&s->mu);
    while (s->budget_used > 0 && s->budget_used + n > s->opts.mem_budget) {
        if (atomic_load(&c->dropped) || cv_wait_until(s, c->deadline) != 0) {
            rc = cairn_err_set(err, CAIRN_E_TIMEOUT,
                               "memory budget (%llu bytes) still in use by other uploads",
                               (unsigned long long)s->opts.mem_budget);
            break;
        }
    }
    if (rc == CAIRN_OK)
        s->budget_used += n;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static void budget_give(struct cairn_influx_server *s, uint64_t n)
{
    pthread_mutex_lock(&s->mu);
    s->budget_used -= n;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* ---- restore uploads ---- */

/* An unnamed file in the staging directory: gone when closed, whatever happens. */
static int staging_file(struct conn *c, int *out, struct cairn_err *err)
{
    const char *dir = c->srv->opts.staging_dir;
    int rc = mkdir_p(dir, 0700, err);
    if (rc != CAIRN_OK)
        return rc;
    return tmpfile_open(dir, out, err);
}

static int write_fd(int fd, const uint8_t *p, size_t n, struct cairn_err *err)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return cairn_err_sys(err, 0, errno, "write the upload file");
        p += w;
        n -= (size_t)w;
    }
    return CAIRN_OK;
}

/* Receive size bytes (the first `have` already in io->buf at off) into fd, reusing io->buf
 * as the copy buffer: memory stays the same whatever size the peer declared. */
static int receive_upload(struct req_io *io, size_t off, size_t have, uint64_t size, int fd,
                          struct cairn_err *err)
{
    int rc = write_fd(fd, io->buf + off, have, err);
    for (uint64_t left = size - have; rc == CAIRN_OK && left > 0;) {
        size_t got;
        size_t want = left < CAIRN_INFLUX_MAX_JSON ? (size_t)left : CAIRN_INFLUX_MAX_JSON;
        rc = conn_read(io->c, io->buf, want, &got, io->c->deadline, err);
        if (rc == CAIRN_OK && got == 0)
            rc = cairn_err_set(err, CAIRN_E_PROTOCOL, "EOF after %llu of %llu bytes",
                               (unsigned long long)(size - left), (unsigned long long)size);
        if (rc == CAIRN_OK)
            rc = write_fd(fd, io->buf, got, err);
        left -= rc == CAIRN_OK ? got : 0;
    }
    return rc;
}

/* Import the received blob: mapped from its file, under the memory budget (the mapping and
 * the decoded copy, about twice its size). */
static int import_upload(struct conn *c, int fd, size_t size,
                         const struct cairn_influx_request *req, struct cairn_influx_idmap *map,
                         struct cairn_err *ierr)
{
    int rc = budget_take(c, 2 * (uint64_t)size, ierr);
    if (rc != CAIRN_OK)
        return rc;
    static const uint8_t empty[1];
    const uint8_t *blob = empty;
    void *m = NULL;
    if (size > 0) {
        m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED)
            rc = cairn_err_sys(ierr, CAIRN_E_IO, errno, "map the upload file");
        blob = m;
    }
    if (rc == CAIRN_OK)
        rc = c->srv->prov.meta_import(c->srv->prov.ctx, blob, size, req, map, ierr);
    if (m != NULL && m != MAP_FAILED)
        munmap(m, size);
    budget_give(c->srv, 2 * (uint64_t)size);
    return rc;
}

static int serve_meta_update(struct conn *c, struct req_io *io, size_t json_len,
                             const struct cairn_influx_request *req, struct cairn_err *err)
{
    const struct cairn_influx_server_opts *o = &c->srv->opts;
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
    int fd = -1;
    int rc = staging_file(c, &fd, err);
    if (rc != CAIRN_OK)
        return rc;
    rc = receive_upload(io, off, have, size, fd, err);
    if (rc != CAIRN_OK) {
        close(fd);
        cairn_err_wrap(err, rc, "read upload");
        return rc;
    }
    struct cairn_influx_idmap map = {0};
    struct cairn_err ierr = {0};
    rc = import_upload(c, fd, size, req, &map, &ierr);
    close(fd);
    if (rc != CAIRN_OK && rc != CAIRN_E_CORRUPT && rc != CAIRN_E_EXISTS && rc != CAIRN_E_NOTFOUND) {
        cairn_err_copy(err, &ierr); /* commit failed: no reply at all, as influxd */
        return rc;
    }
    if (rc != CAIRN_OK)
        cairn_warn(LOGC, "peer %s: metastore upload refused: %s", c->peer, ierr.msg);
    struct buf b = {0};
    uint8_t u[8];
    influx_u64be_put(u, CAIRN_INFLUX_META_MAGIC);
    buf_add(&b, u, 8);
    influx_u64be_put(u, map.n);
    buf_add(&b, u, 8);
    for (size_t i = 0; i < map.n; i++) {
        influx_u64be_put(u, map.pairs[i][0]);
        buf_add(&b, u, 8);
        influx_u64be_put(u, map.pairs[i][1]);
        buf_add(&b, u, 8);
    }
    cairn_influx_idmap_free(&map);
    int wrc = reply(c, b.p, b.len, err);
    buf_free(&b);
    return wrc;
}

/* Refuses (and answers) an upload that would replace a shard's files: 0 to go on, or an
 * error; c->refused says whether it refused. */
static int refuse_overwrite(struct conn *c, uint64_t id, struct cairn_err *err)
{
    const struct cairn_influx_provider *p = &c->srv->prov;
    if (c->srv->opts.allow_overwrite)
        return 0;
    int has = p->shard_has_files ? p->shard_has_files(p->ctx, id, err) : 1;
    if (has == CAIRN_E_NOTFOUND)
        return 0; /* shard_import reports it, as before */
    if (has < 0)
        return has;
    if (has == 0)
        return 0;
    char why[200];
    snprintf(why, sizeof(why),
             "shard %llu already holds files; start cairnd serve with --allow-overwrite to "
             "replace them",
             (unsigned long long)id);
    refuse(c, "shard upload", why);
    return 0;
}

static int serve_shard_update(struct conn *c, struct req_io *io, struct cairn_err *err)
{
    if (c->srv->prov.shard_import == NULL)
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED, "restore is not supported here");
    uint8_t idb[8];
    int rc = read_exact(io, idb, 8, err);
    if (rc != CAIRN_OK) {
        cairn_err_wrap(err, rc, "read shard id");
        return rc;
    }
    uint64_t id = influx_u64be_get(idb);
    rc = refuse_overwrite(c, id, err);
    if (rc != CAIRN_OK || c->refused)
        return rc;
    /* The tar is read through the connection: bounded by the request's deadline. */
    struct conn_reader *cr = xcalloc(1, sizeof(*cr));
    cairn_reader_init(&cr->base, &conn_reader_ops, NULL);
    cr->c = c;
    rc = c->srv->prov.shard_import(c->srv->prov.ctx, id, &cr->base, err);
    cairn_reader_free(&cr->base);
    if (rc == CAIRN_OK)
        cairn_info(LOGC, "peer %s: restored shard %llu", c->peer, (unsigned long long)id);
    return rc;
}

/* Requests that write are refused unless the server allows restores. */
static void refuse_write(struct conn *c, uint8_t type)
{
    if ((type == CAIRN_INFLUX_META_UPDATE || type == CAIRN_INFLUX_SHARD_UPDATE) &&
        !c->srv->opts.allow_restore)
        refuse(c, type == CAIRN_INFLUX_META_UPDATE ? "metastore upload" : "shard upload",
               "restore uploads are disabled; start cairnd serve with --allow-restore");
}

/* With TLS configured: a connection opening with a TLS handshake record gets TLS (and its
 * client certificate checked when a CA was given); any other is plain, served only with
 * allow_plain. The handshake counts against the request timeout. Logged when refused. */
static int start_tls(struct conn *c, uint64_t deadline)
{
    struct cairn_influx_server *s = c->srv;
    struct cairn_err err = {0};
    uint8_t first = 0;
    int rc;
    for (;;) {
        rc = net_wait(c->io.fd, POLLIN, s->opts.idle_timeout_ms, deadline, NULL, "read request",
                      &err);
        if (rc != CAIRN_OK)
            break;
        ssize_t n = recv(c->io.fd, &first, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n == 1)
            break;
        if (n == 0)
            return CAIRN_E_NETWORK; /* closed before a byte: nothing to log */
        if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) {
            rc = cairn_err_sys(&err, CAIRN_E_NETWORK, errno, "read request");
            break;
        }
    }
    if (rc == CAIRN_OK && first != 0x16) { /* TLS record type 22: handshake */
        if (s->opts.allow_plain)
            return CAIRN_OK;
        refuse(c, "plain connection", "TLS is required (cairnd serve --tls-cert)");
        return CAIRN_E_DENIED;
    }
    if (rc == CAIRN_OK)
        rc = net_conn_tls(&c->io, s->opts.tls, NULL, s->opts.idle_timeout_ms, deadline, NULL, &err);
    if (rc != CAIRN_OK) {
        cairn_warn(LOGC, "peer %s: TLS handshake failed: %s", c->peer, err.msg);
        return rc;
    }
    char subject[256];
    net_conn_peer_subject(&c->io, subject, sizeof(subject));
    if (subject[0] != '\0')
        cairn_info(LOGC, "peer %s: TLS client certificate %s", c->peer, subject);
    return CAIRN_OK;
}

static void handle(struct conn *c)
{
    struct cairn_influx_server *s = c->srv;
    struct cairn_err err = {0};
    uint64_t hdr_deadline = c->start_ns + (uint64_t)s->opts.request_timeout_ms * 1000000u;
    struct req_io io = {c, hdr_deadline < c->deadline ? hdr_deadline : c->deadline,
                        xmalloc(CAIRN_INFLUX_MAX_JSON + 1), 0, CAIRN_INFLUX_MAX_JSON};
    struct cairn_influx_request req;
    cairn_influx_request_init(&req);
    uint8_t hdr[2];
    const char *stage = "read request";
    if (s->opts.tls != NULL && start_tls(c, io.deadline) != CAIRN_OK)
        goto out;
    int rc = read_exact(&io, hdr, 1, &err);
    if (rc == CAIRN_OK && hdr[0] != CAIRN_INFLUX_MUX_HEADER) {
        cairn_warn(LOGC, "peer %s: tcp.Mux: handler not registered: %u", c->peer, hdr[0]);
        goto out;
    }
    if (rc == CAIRN_OK)
        rc = read_exact(&io, hdr + 1, 1, &err);
    if (rc != CAIRN_OK)
        goto fail;
    refuse_write(c, hdr[1]);
    if (c->refused)
        goto out;
    uint64_t t0 = mono_ns();
    if (hdr[1] == CAIRN_INFLUX_SHARD_UPDATE) {
        stage = "shard upload";
        rc = serve_shard_update(c, &io, &err);
        if (c->refused)
            goto out;
        goto done;
    }
    size_t json_len = 0;
    rc = read_json(&io, &json_len, &err);
    if (rc == CAIRN_OK)
        rc = cairn_influx_request_decode((const char *)io.buf, json_len, &req, &err);
    if (rc != CAIRN_OK)
        goto fail;
    switch (hdr[1]) {
    case CAIRN_INFLUX_SHARD_BACKUP:
    case CAIRN_INFLUX_SHARD_EXPORT:
        stage = hdr[1] == CAIRN_INFLUX_SHARD_BACKUP ? "shard backup" : "shard export";
        rc = serve_shard(c, &req, hdr[1] == CAIRN_INFLUX_SHARD_EXPORT, &err);
        break;
    case CAIRN_INFLUX_METASTORE_BACKUP:
        stage = "metastore backup";
        rc = serve_meta(c, &err);
        break;
    case CAIRN_INFLUX_DATABASE_INFO:
    case CAIRN_INFLUX_RP_INFO:
        stage = hdr[1] == CAIRN_INFLUX_DATABASE_INFO ? "database info" : "retention policy info";
        rc = serve_paths(c, &req, hdr[1] == CAIRN_INFLUX_RP_INFO, &err);
        break;
    case CAIRN_INFLUX_META_UPDATE:
        stage = "metastore upload";
        rc = serve_meta_update(c, &io, json_len, &req, &err);
        break;
    default: cairn_warn(LOGC, "peer %s: request type unknown: %u", c->peer, req.type); goto out;
    }
done:
    if (rc == CAIRN_OK) {
        cairn_info(LOGC, "peer %s: %s done in %.3f s", c->peer, stage,
                   (double)(mono_ns() - t0) / 1e9);
        goto out;
    }
fail:
    cairn_warn(LOGC, "peer %s: %s: %s%s", c->peer, stage, err.msg,
               atomic_load(&c->dropped) ? " (dropped as slow)" : "");
out:
    cairn_influx_request_clear(&req);
    free(io.buf);
}

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    struct cairn_influx_server *s = c->srv;
    handle(c);
    if (c->io.ssl != NULL) { /* the end of a TLS reply: without it the client sees truncation */
        struct cairn_err ignored;
        net_conn_end_write(&c->io, s->opts.idle_timeout_ms, c->deadline, NULL, &ignored);
    }
    pthread_mutex_lock(&s->mu);
    s->conns[c->slot] = NULL;
    net_conn_close(&c->io); /* under the lock: stop() and drops may shutdown() slots they see */
    s->active--;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    free(c);
    return NULL;
}

/* ---- admission ---- */

/* The slowest connection (from host, or any when NULL) that has moved fewer than
 * --slow-rate bytes per second since it was accepted, after a grace period; NULL when none
 * is that slow or dropping is off. Under s->mu. */
static struct conn *slowest(struct cairn_influx_server *s, const char *host, uint64_t now)
{
    struct conn *best = NULL;
    double best_rate = 0;
    if (s->opts.slow_rate < 0)
        return NULL;
    for (unsigned i = 0; i < s->opts.max_conns; i++) {
        struct conn *c = s->conns[i];
        if (c == NULL || atomic_load(&c->dropped) || (host && strcmp(c->host, host) != 0) ||
            now - c->start_ns < SLOW_GRACE_NS)
            continue;
        double rate = (double)atomic_load(&c->progress) / ((double)(now - c->start_ns) / 1e9);
        if (rate < (double)s->opts.slow_rate && (best == NULL || rate < best_rate))
            best = c, best_rate = rate;
    }
    return best;
}

/* Connections open (all, or from host), less those already dropped and about to leave. */
static unsigned count_live(const struct cairn_influx_server *s, const char *host, unsigned *all)
{
    unsigned same = 0;
    *all = 0;
    for (unsigned i = 0; i < s->opts.max_conns; i++) {
        const struct conn *c = s->conns[i];
        if (c == NULL || atomic_load(&c->dropped))
            continue;
        (*all)++;
        same += strcmp(c->host, host) == 0;
    }
    return same;
}

/* Find a slot for nc, dropping the slowest connection when the server or nc's address is
 * full. NULL when admitted, else why not. Under s->mu. */
static const char *admit(struct cairn_influx_server *s, struct conn *nc)
{
    uint64_t until = nc->start_ns + ADMIT_WAIT_NS;
    for (;;) {
        unsigned all, same = count_live(s, nc->host, &all);
        int host_full = same >= s->opts.max_per_addr;
        if (s->active < s->opts.max_conns && !host_full)
            break;
        if (all >= s->opts.max_conns || host_full) {
            struct conn *v = slowest(s, host_full ? nc->host : NULL, mono_ns());
            if (v == NULL)
                return host_full ? "max-conns-per-addr" : "max-conns";
            atomic_store(&v->dropped, 1);
            shutdown(v->io.fd, SHUT_RDWR);
            pthread_cond_broadcast(&s->cv); /* a budget wait notices too */
            cairn_warn(LOGC, "peer %s: dropped: %llu bytes in %.1f s is too slow while %s waits",
                       v->peer, (unsigned long long)atomic_load(&v->progress),
                       (double)(mono_ns() - v->start_ns) / 1e9, nc->peer);
        }
        if (cv_wait_until(s, until) != 0)
            return "max-conns: a dropped connection did not leave in time";
    }
    size_t slot = 0;
    while (s->conns[slot] != NULL)
        slot++;
    nc->slot = slot;
    s->conns[slot] = nc;
    s->active++;
    return NULL;
}

static void accept_one(struct cairn_influx_server *s)
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
    struct conn *c = xcalloc(1, sizeof(*c));
    c->srv = s;
    c->io.fd = fd;
    c->start_ns = mono_ns();
    c->deadline = c->start_ns + (uint64_t)s->opts.request_deadline_ms * 1000000u;
    format_sockaddr((struct sockaddr *)&ss, sl, c->peer, sizeof(c->peer), c->host, sizeof(c->host));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    pthread_mutex_lock(&s->mu);
    const char *why = admit(s, c);
    pthread_mutex_unlock(&s->mu);
    if (why != NULL) {
        if (strncmp(why, "max-conns-per-addr", 18) == 0)
            cairn_warn(LOGC, "peer %s: refused: %u connections open from %s (%s)", c->peer,
                       s->opts.max_per_addr, c->host, why);
        else
            cairn_warn(LOGC, "peer %s: refused: %u connections open (%s)", c->peer,
                       s->opts.max_conns, why);
        close(fd);
        free(c);
        return;
    }
    size_t slot = c->slot;

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
        s->conns[slot] = NULL;
        s->active--;
        pthread_mutex_unlock(&s->mu);
        close(fd);
        free(c);
    }
}

int cairn_influx_server_run(struct cairn_influx_server *s, struct cairn_err *err)
{
    (void)err;
    cairn_info(LOGC, "listening on %s (max %u connections%s%s%s)", s->addr, s->opts.max_conns,
               s->opts.tls ? ", TLS" : "",
               tls_verifies_clients(s->opts.tls) ? " with client certificates" : "",
               s->opts.tls && s->opts.allow_plain ? ", plain too" : "");
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
    uint64_t until = mono_ns() + 5000000000ull;
    while (s->active > 0 && cv_wait_until(s, until) == 0) {
    }
    for (unsigned i = 0; i < s->opts.max_conns; i++)
        if (s->conns[i] != NULL)
            shutdown(s->conns[i]->io.fd, SHUT_RDWR);
    while (s->active > 0)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    cairn_info(LOGC, "stopped");
    return CAIRN_OK;
}
