/* Snapshot client: the requests `influxd backup` / `influxd restore` send, with connect and
 * idle timeouts, and stricter checks of what comes back. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "internal.h"

#define LIST_MAX (64u << 20)

static int ctimeout(const struct cairn_influx_client *c)
{
    return c->connect_timeout_ms > 0 ? c->connect_timeout_ms : 10000;
}

static int iotimeout(const struct cairn_influx_client *c)
{
    return c->io_timeout_ms > 0 ? c->io_timeout_ms : 60000;
}

/* Connect (and handshake when c->tls is set). */
static int dial(const struct cairn_influx_client *c, struct net_conn *sc, struct cairn_err *err)
{
    sc->fd = -1;
    sc->ssl = NULL;
    int rc = net_dial(c->addr, ctimeout(c), c->cancel, &sc->fd, err);
    if (rc != CAIRN_OK || c->tls == NULL)
        return rc;
    char host[256], port[16];
    rc = net_split_addr(c->addr, host, sizeof(host), port, sizeof(port), err);
    if (rc == CAIRN_OK)
        rc = net_conn_tls(sc, c->tls, host, ctimeout(c), 0, c->cancel, err);
    if (rc != CAIRN_OK) {
        net_conn_close(sc);
        cairn_err_wrap(err, rc, "%s", c->addr);
    }
    return rc;
}

/* Connect and send mux byte, type byte and the request JSON (plus extra bytes, in the same
 * write). */
static int send_request(const struct cairn_influx_client *c, const struct cairn_influx_request *req,
                        uint8_t type, const void *extra, size_t extra_len, struct net_conn *sc,
                        struct cairn_err *err)
{
    int rc = dial(c, sc, err);
    if (rc != CAIRN_OK)
        return rc;
    size_t jlen;
    char *json = cairn_influx_request_encode(req, &jlen);
    struct buf b = {0};
    uint8_t hdr[2] = {CAIRN_INFLUX_MUX_HEADER, type};
    buf_add(&b, hdr, 2);
    buf_add(&b, json, jlen);
    if (extra_len > 0)
        buf_add(&b, extra, extra_len);
    free(json);
    rc = net_conn_write_full(sc, b.p, b.len, iotimeout(c), 0, c->cancel, err);
    buf_free(&b);
    if (rc != CAIRN_OK) {
        net_conn_close(sc);
        cairn_err_wrap(err, rc, "send request to %s", c->addr);
        return rc;
    }
    return CAIRN_OK;
}

/* Read the whole response (at most max bytes). */
static int read_reply(const struct cairn_influx_client *c, struct net_conn *sc, size_t max,
                      struct buf *out, struct cairn_err *err)
{
    uint8_t buf[16384];
    for (;;) {
        size_t got;
        int rc = net_conn_read_some(sc, buf, sizeof(buf), &got, iotimeout(c), 0, c->cancel, err);
        if (rc != CAIRN_OK) {
            cairn_err_wrap(err, rc, "%s", c->addr);
            return rc;
        }
        if (got == 0)
            return CAIRN_OK;
        if (out->len + got > max)
            return cairn_err_set(err, CAIRN_E_PROTOCOL, "%s: reply exceeds %zu bytes", c->addr,
                                 max);
        buf_add(out, buf, got);
    }
}

/* A cairnd refusal ("cairnd: refused: why\n") as CAIRN_E_DENIED (exit 9), printable ASCII only; 0
 * when the reply is something else. */
static int refused(const struct cairn_influx_client *c, const struct buf *b, const char *what,
                   struct cairn_err *err)
{
    static const char pre[] = "cairnd: refused: ";
    if (b->len < sizeof(pre) - 1 || memcmp(b->p, pre, sizeof(pre) - 1) != 0)
        return 0;
    char why[400];
    size_t n = 0;
    for (size_t i = sizeof(pre) - 1; i < b->len && b->p[i] != '\n' && n + 1 < sizeof(why); i++)
        why[n++] = b->p[i] >= 0x20 && b->p[i] < 0x7f ? (char)b->p[i] : '?';
    why[n] = 0;
    return cairn_err_set(err, CAIRN_E_DENIED, "%s refused the %s: %s", c->addr, what, why);
}

int cairn_influx_metastore_backup(const struct cairn_influx_client *c, struct cairn_writer *out,
                                  uint64_t *bytes, struct cairn_err *err)
{
    struct cairn_influx_request req;
    cairn_influx_request_init(&req);
    req.type = CAIRN_INFLUX_METASTORE_BACKUP;
    struct net_conn sc;
    int rc = send_request(c, &req, req.type, NULL, 0, &sc, err);
    cairn_influx_request_clear(&req);
    if (rc != CAIRN_OK)
        return rc;
    /* Validate as it streams: magic, metaLen bytes, nodeLen, nodeLen bytes, then EOF. */
    uint8_t buf[65536], hdr[16];
    size_t hdr_have = 0;
    uint64_t total = 0, left = 0;
    int part = 0; /* 0 header, 1 meta, 2 node length, 3 node, 4 done */
    for (;;) {
        size_t got;
        rc = net_conn_read_some(&sc, buf, sizeof(buf), &got, iotimeout(c), 0, c->cancel, err);
        if (rc != CAIRN_OK) {
            cairn_err_wrap(err, rc, "metastore backup from %s", c->addr);
            goto out;
        }
        if (got == 0)
            break;
        for (size_t i = 0; i < got;) {
            if (part == 0 || part == 2) {
                size_t need = (part == 0 ? 16 : 8) - hdr_have;
                size_t n = got - i < need ? got - i : need;
                memcpy(hdr + hdr_have, buf + i, n);
                hdr_have += n;
                i += n;
                if (hdr_have < (part == 0 ? 16u : 8u))
                    continue;
                if (part == 0 && influx_u64be_get(hdr) != CAIRN_INFLUX_META_MAGIC) {
                    /* cairnd's one-line refusal (TLS required, ...) says more than "no magic" */
                    struct buf rb = {0};
                    buf_add(&rb, hdr, sizeof(hdr));
                    buf_add(&rb, buf + i, got - i);
                    rc = refused(c, &rb, "backup", err);
                    buf_free(&rb);
                    if (rc == 0)
                        rc = cairn_err_set(err, CAIRN_E_PROTOCOL,
                                           "%s: invalid metadata received "
                                           "(no 0x59590101 magic); is it the snapshot port?",
                                           c->addr);
                    goto out;
                }
                left = influx_u64be_get(part == 0 ? hdr + 8 : hdr);
                hdr_have = 0;
                part++;
            } else if (part == 1 || part == 3) {
                size_t n = (uint64_t)(got - i) < left ? got - i : (size_t)left;
                i += n;
                left -= n;
            } else {
                rc = cairn_err_set(err, CAIRN_E_PROTOCOL,
                                   "%s: bytes after the metastore "
                                   "response",
                                   c->addr);
                goto out;
            }
            if ((part == 1 || part == 3) && left == 0)
                part++;
        }
        rc = cairn_writer_write(out, buf, got, err);
        if (rc != CAIRN_OK)
            goto out;
        total += got;
    }
    if (part != 4)
        rc = cairn_err_set(err, CAIRN_E_PROTOCOL,
                           "%s: metastore response truncated after %llu "
                           "bytes",
                           c->addr, (unsigned long long)total);
    else if (bytes != NULL)
        *bytes = total;
out:
    net_conn_close(&sc);
    return rc;
}

void cairn_influx_shard_refs_free(struct cairn_influx_shard_ref *refs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(refs[i].db);
        free(refs[i].rp);
    }
    free(refs);
}

static int parse_paths(const char *addr, const struct buf *b, struct cairn_influx_shard_ref **refs,
                       size_t *n, struct cairn_err *err)
{
    json_error_t jerr;
    json_t *root = json_loadb((const char *)b->p, b->len, 0, &jerr);
    if (root == NULL || !json_is_object(root)) {
        json_decref(root);
        return cairn_err_set(err, CAIRN_E_PROTOCOL, "%s: invalid shard list: %s", addr,
                             root ? "not an object" : jerr.text);
    }
    json_t *paths = NULL;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (strcasecmp(key, "Paths") == 0)
            paths = v;
    }
    int rc = CAIRN_OK;
    if (paths != NULL && !json_is_null(paths) && !json_is_array(paths)) {
        rc = cairn_err_set(err, CAIRN_E_PROTOCOL, "%s: Paths is not a list", addr);
        goto out;
    }
    size_t np = paths && json_is_array(paths) ? json_array_size(paths) : 0;
    *refs = xcalloc(np ? np : 1, sizeof(**refs));
    *n = 0;
    for (size_t i = 0; i < np; i++) {
        const char *s = json_string_value(json_array_get(paths, i));
        const char *a = s ? strchr(s, '/') : NULL, *b2 = a ? strchr(a + 1, '/') : NULL;
        uint64_t id = 0;
        if (b2 == NULL || strchr(b2 + 1, '/') != NULL || b2[1] == '\0' || a == s || b2 == a + 1 ||
            influx_parse_id(b2 + 1, &id) != 0) {
            rc = cairn_err_set(err, CAIRN_E_PROTOCOL, "%s: invalid shard path '%s'", addr,
                               s ? s : "(not a string)");
            cairn_influx_shard_refs_free(*refs, *n);
            *refs = NULL;
            *n = 0;
            goto out;
        }
        struct cairn_influx_shard_ref *r = &(*refs)[(*n)++];
        r->db = xasprintf("%.*s", (int)(a - s), s);
        r->rp = xasprintf("%.*s", (int)(b2 - a - 1), a + 1);
        r->id = id;
    }
out:
    json_decref(root);
    return rc;
}

int cairn_influx_shard_list(const struct cairn_influx_client *c, const char *db, const char *rp,
                            struct cairn_influx_shard_ref **refs, size_t *n, struct cairn_err *err)
{
    *refs = NULL;
    *n = 0;
    struct cairn_influx_request req;
    cairn_influx_request_init(&req);
    req.type = rp != NULL ? CAIRN_INFLUX_RP_INFO : CAIRN_INFLUX_DATABASE_INFO;
    free(req.backup_db);
    req.backup_db = xstrdup(db ? db : "");
    if (rp != NULL) {
        free(req.backup_rp);
        req.backup_rp = xstrdup(rp);
    }
    struct net_conn sc;
    struct buf b = {0};
    int rc = send_request(c, &req, req.type, NULL, 0, &sc, err);
    if (rc == CAIRN_OK) {
        rc = read_reply(c, &sc, LIST_MAX, &b, err);
        net_conn_close(&sc);
    }
    if (rc == CAIRN_OK && b.len == 0)
        rc = rp != NULL ? cairn_err_set(err, CAIRN_E_NOTFOUND,
                                        "%s: retention policy not found: "
                                        "%s.%s",
                                        c->addr, db ? db : "", rp)
                        : cairn_err_set(err, CAIRN_E_NOTFOUND, "%s: database not found: %s",
                                        c->addr, db ? db : "");
    if (rc == CAIRN_OK)
        rc = parse_paths(c->addr, &b, refs, n, err);
    buf_free(&b);
    cairn_influx_request_clear(&req);
    return rc;
}

/* Send req (types 0 and 5) and copy the shard's tar stream into out, checking that it ends
 * as a tar does. */
static int shard_request(const struct cairn_influx_client *c, struct cairn_influx_request *req,
                         struct cairn_writer *out, uint64_t *bytes, struct cairn_err *err)
{
    uint64_t shard_id = req->shard_id;
    struct net_conn sc;
    int rc = send_request(c, req, req->type, NULL, 0, &sc, err);
    if (rc != CAIRN_OK)
        return rc;
    size_t cap = CAIRN_IO_BUFSIZE;
    uint8_t *buf = xmalloc(cap);
    uint64_t total = 0, zeros = 0; /* length of the run of zero bytes at the end */
    for (;;) {
        size_t got;
        rc = net_conn_read_some(&sc, buf, cap, &got, iotimeout(c), 0, c->cancel, err);
        if (rc != CAIRN_OK) {
            cairn_err_wrap(err, rc, "shard %llu from %s", (unsigned long long)shard_id, c->addr);
            break;
        }
        if (got == 0)
            break;
        size_t z = 0;
        while (z < got && buf[got - 1 - z] == 0)
            z++;
        zeros = z == got ? zeros + got : z;
        total += got;
        rc = cairn_writer_write(out, buf, got, err);
        if (rc != CAIRN_OK)
            break;
    }
    free(buf);
    net_conn_close(&sc);
    if (rc != CAIRN_OK)
        return rc;
    if (total == 0)
        return cairn_err_set(err, CAIRN_E_NOTFOUND,
                             "%s closed without sending shard %llu "
                             "(missing shard, or the server failed to read it: see its log)",
                             c->addr, (unsigned long long)shard_id);
    /* A tar ends with two zero blocks; anything else was cut off. */
    if (total % 512 != 0 || zeros < 1024)
        return cairn_err_set(err, CAIRN_E_PROTOCOL,
                             "shard %llu from %s: tar stream truncated "
                             "after %llu bytes",
                             (unsigned long long)shard_id, c->addr, (unsigned long long)total);
    if (bytes != NULL)
        *bytes = total;
    return CAIRN_OK;
}

static void shard_req_init(struct cairn_influx_request *req, uint8_t type, const char *db,
                           const char *rp, uint64_t shard_id)
{
    cairn_influx_request_init(req);
    req->type = type;
    free(req->backup_db);
    free(req->backup_rp);
    req->backup_db = xstrdup(db ? db : "");
    req->backup_rp = xstrdup(rp ? rp : "");
    req->shard_id = shard_id;
}

int cairn_influx_shard_backup(const struct cairn_influx_client *c, const char *db, const char *rp,
                              uint64_t shard_id, const struct cairn_influx_time *since,
                              struct cairn_writer *out, uint64_t *bytes, struct cairn_err *err)
{
    struct cairn_influx_request req;
    shard_req_init(&req, CAIRN_INFLUX_SHARD_BACKUP, db, rp, shard_id);
    if (since != NULL)
        req.since = *since;
    int rc = shard_request(c, &req, out, bytes, err);
    cairn_influx_request_clear(&req);
    return rc;
}

int cairn_influx_shard_export(const struct cairn_influx_client *c, const char *db, const char *rp,
                              uint64_t shard_id, const struct cairn_influx_time *start,
                              const struct cairn_influx_time *end, struct cairn_writer *out,
                              uint64_t *bytes, struct cairn_err *err)
{
    struct cairn_influx_request req;
    shard_req_init(&req, CAIRN_INFLUX_SHARD_EXPORT, db, rp, shard_id);
    req.export_start = *start;
    req.export_end = *end;
    /* The reply is spooled, then cut to the window: influxd's keeps whole blocks across the
     * window's edges (see export.c). */
    int fd = -1;
    int rc = tmpfile_open(NULL, &fd, err);
    if (rc != CAIRN_OK) {
        cairn_influx_request_clear(&req);
        return rc;
    }
    struct cairn_writer *spool = cairn_fd_writer_new(fd, 0);
    rc = shard_request(c, &req, spool, NULL, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(spool, err);
    cairn_writer_free(spool);
    cairn_influx_request_clear(&req);
    if (rc == CAIRN_OK && lseek(fd, 0, SEEK_SET) != 0)
        rc = cairn_err_sys(err, CAIRN_E_IO, errno, "rewind the spooled shard %llu",
                           (unsigned long long)shard_id);
    if (rc == CAIRN_OK) {
        struct cairn_reader *r = cairn_fd_reader_new(fd, 0);
        struct cairn_writer *w = cairn_writer_borrow(out);
        rc = influx_tar_export(r, w, influx_time_ns(start, INT64_MIN),
                               influx_time_ns(end, INT64_MAX), NULL, err);
        if (rc == CAIRN_OK)
            rc = cairn_writer_close(w, err);
        if (rc == CAIRN_OK && bytes != NULL)
            *bytes = w->bytes;
        cairn_writer_free(w);
        cairn_reader_free(r);
        if (rc != CAIRN_OK)
            cairn_err_wrap(err, rc, "shard %llu from %s", (unsigned long long)shard_id, c->addr);
    }
    close(fd);
    return rc;
}

int cairn_influx_meta_upload(const struct cairn_influx_client *c, const char *db, const char *newdb,
                             const char *rp, const char *newrp, const uint8_t *blob, size_t len,
                             struct cairn_influx_idmap *map, struct cairn_err *err)
{
    struct cairn_influx_request req;
    cairn_influx_request_init(&req);
    req.type = CAIRN_INFLUX_META_UPDATE;
    const char *vals[4] = {db, newdb, rp, newrp};
    char **dst[4] = {&req.backup_db, &req.restore_db, &req.backup_rp, &req.restore_rp};
    for (int i = 0; i < 4; i++)
        if (vals[i] != NULL) {
            free(*dst[i]);
            *dst[i] = xstrdup(vals[i]);
        }
    req.upload_size = (int64_t)len;
    struct net_conn sc;
    struct buf b = {0};
    /* JSON + '\n' + blob in one write: 1.6 servers read the blob with a single Read. */
    int rc = send_request(c, &req, req.type, blob, len, &sc, err);
    cairn_influx_request_clear(&req);
    if (rc != CAIRN_OK)
        return rc;
    rc = read_reply(c, &sc, LIST_MAX, &b, err);
    net_conn_close(&sc);
    memset(map, 0, sizeof(*map));
    if (rc != CAIRN_OK)
        goto out;
    if ((rc = refused(c, &b, "restore", err)) != 0)
        goto out;
    if (b.len < 16) {
        rc = cairn_err_set(err, CAIRN_E_PROTOCOL,
                           "updating metadata on %s failed: %zu-byte "
                           "reply (see the server log)",
                           c->addr, b.len);
        goto out;
    }
    uint64_t npairs = influx_u64be_get(b.p + 8);
    if (influx_u64be_get(b.p) != CAIRN_INFLUX_META_MAGIC || npairs > (b.len - 16) / 16 ||
        b.len - 16 != npairs * 16) {
        rc = cairn_err_set(err, CAIRN_E_PROTOCOL,
                           "updating metadata on %s: malformed ID map "
                           "(%zu bytes)",
                           c->addr, b.len);
        goto out;
    }
    if (npairs == 0) {
        rc = cairn_err_set(err, CAIRN_E_EXISTS,
                           "%s did not change its metadata: the database "
                           "may already exist, or has no shards",
                           c->addr);
        goto out;
    }
    map->pairs = xmalloc(npairs * sizeof(*map->pairs));
    map->n = npairs;
    for (uint64_t i = 0; i < npairs; i++) {
        map->pairs[i][0] = influx_u64be_get(b.p + 16 + 16 * i);
        map->pairs[i][1] = influx_u64be_get(b.p + 24 + 16 * i);
    }
out:
    buf_free(&b);
    return rc;
}

int cairn_influx_shard_upload(const struct cairn_influx_client *c, uint64_t new_id, const char *db,
                              const char *rp, struct cairn_reader *src, uint64_t *bytes,
                              struct cairn_err *err)
{
    struct net_conn sc;
    int rc = dial(c, &sc, err);
    if (rc != CAIRN_OK)
        return rc;
    uint8_t hdr[10] = {CAIRN_INFLUX_MUX_HEADER, CAIRN_INFLUX_SHARD_UPDATE};
    influx_u64be_put(hdr + 2, new_id);
    struct cairn_writer *w = net_conn_writer_new(&sc, iotimeout(c), c->cancel);
    rc = cairn_writer_write(w, hdr, sizeof(hdr), err);
    if (rc == CAIRN_OK)
        rc = influx_tar_rename(src, w, db, rp, new_id, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(w, err);
    if (rc == CAIRN_OK && bytes != NULL)
        *bytes = w->bytes;
    cairn_writer_free(w);
    if (rc == CAIRN_OK) {
        /* No reply exists; waiting for the server's close at least orders shard uploads
         * after the server finished reading (cairnd installs before closing). */
        struct buf b = {0};
        rc = net_conn_end_write(&sc, iotimeout(c), 0, c->cancel, err);
        if (rc == CAIRN_OK)
            rc = read_reply(c, &sc, 4096, &b, err);
        if (rc == CAIRN_OK)
            rc = refused(c, &b, "restore", err);
        buf_free(&b);
    }
    net_conn_close(&sc);
    if (rc != CAIRN_OK)
        cairn_err_wrap(err, rc, "upload shard %llu", (unsigned long long)new_id);
    return rc;
}
