/* Shard tar streams: InfluxDB's conventions over the archive module's tar layer
 * (archive/tar.h), which writes what Go's archive/tar writes and reads what it reads. Members
 * are regular files, mode 0644, owner root (uid/gid 0), the file's mtime; the stream ends with
 * two zero blocks and no padding to a 10 KiB record, as influxd's. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "archive/tar.h"
#include "common/util.h"
#include "internal.h"

struct influx_tar_out {
    struct tar_writer tw;
};

struct influx_tar_out *influx_tar_out_new(struct cairn_writer *w)
{
    struct influx_tar_out *t = xcalloc(1, sizeof(*t));
    tar_writer_init(&t->tw, w, 0);
    return t;
}

/* The header of an entry as influxd's readers expect it. */
static int add_member(struct influx_tar_out *t, const char *name, uint64_t size, int64_t mtime,
                      struct cairn_err *err)
{
    struct tar_member m = {name, size, mtime, 0644, "root", "root"};
    return tar_writer_add(&t->tw, &m, err);
}

static int copy_fd(struct influx_tar_out *t, int fd, uint64_t size, const char *path,
                   struct cairn_err *err)
{
    size_t cap = CAIRN_IO_BUFSIZE;
    uint8_t *buf = xmalloc(cap);
    int rc = CAIRN_OK;
    while (size > 0) {
        size_t want = size < cap ? (size_t)size : cap, got;
        rc = read_all(fd, buf, want, &got, path, err);
        if (rc != CAIRN_OK)
            break;
        if (got < want) {
            rc = cairn_err_set(err, CAIRN_E_IO, "'%s' shrank while being read", path);
            break;
        }
        if ((rc = tar_writer_data(&t->tw, buf, got, err)) != CAIRN_OK)
            break;
        size -= got;
    }
    free(buf);
    return rc;
}

int influx_tar_add_fd(struct influx_tar_out *t, const char *name, int fd, uint64_t size,
                      int64_t mtime, const char *what, struct cairn_err *err)
{
    int rc = add_member(t, name, size, mtime, err);
    if (rc == CAIRN_OK)
        rc = copy_fd(t, fd, size, what, err);
    return rc == CAIRN_OK ? tar_writer_end(&t->tw, err) : rc;
}

int influx_tar_add_file(struct influx_tar_out *t, const char *name, const char *path,
                        struct cairn_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cairn_err_sys(err, 0, errno, "open '%s'", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return cairn_err_sys(err, 0, e, "stat '%s'", path);
    }
    /* whole seconds, as Go's writer rounds them */
    int rc = influx_tar_add_fd(t, name, fd, (uint64_t)st.st_size, (int64_t)st.st_mtime, path, err);
    close(fd);
    return rc;
}

int influx_tar_out_close(struct influx_tar_out *t, struct cairn_err *err)
{
    return tar_writer_finish(&t->tw, err);
}

/* Unclosed, nothing more is written: no end marker makes a cut stream look whole. */
void influx_tar_out_free(struct influx_tar_out *t)
{
    free(t);
}

/* ---- reading ---- */

/* A reader over the current entry's data. */
struct entry_reader {
    struct cairn_reader base;
    struct tar_reader *t;
};

static int entry_read(struct cairn_reader *r, void *buf, size_t cap, size_t *got,
                      struct cairn_err *err)
{
    return tar_reader_read(((struct entry_reader *)r)->t, buf, cap, got, err);
}

static const struct cairn_reader_ops entry_reader_ops = {"tar entry", entry_read, NULL};

/* A format error as the protocol reports it; the source's own failures keep their text. */
static int each_fail(int rc, const struct tar_entry *e, struct cairn_err *err)
{
    if (e != NULL && e->sparse) /* a few bytes sent could become terabytes written */
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "invalid tar stream: sparse entry '%s' refused (%llu bytes "
                             "declared)",
                             e->name, (unsigned long long)e->size);
    return rc == CAIRN_E_CORRUPT ? cairn_err_wrap(err, rc, "invalid tar stream") : rc;
}

int influx_tar_each(struct cairn_reader *r, influx_tar_entry_fn cb, void *ctx,
                    struct cairn_err *err)
{
    /* Nothing after the end marker matters here: read r a buffer at a time. */
    struct tar_reader *t = tar_reader_new(r, TAR_READ_AHEAD | TAR_READ_WHOLE_PADDING);
    int rc;
    for (;;) {
        const struct tar_entry *e;
        if ((rc = tar_reader_next(t, &e, err)) != CAIRN_OK) {
            rc = each_fail(rc, e, err);
            break;
        }
        if (e == NULL)
            break;
        if (e->typeflag != '0' && e->typeflag != '7') /* regular and contiguous files only */
            continue;
        struct entry_reader er;
        cairn_reader_init(&er.base, &entry_reader_ops, NULL);
        er.t = t;
        if ((rc = cb(ctx, e->name, e->mtime, e->size, &er.base, err)) != CAIRN_OK)
            break;
    }
    tar_reader_free(t);
    return rc;
}

/* ---- renaming copy ---- */

struct rename_ctx {
    struct influx_tar_out *out;
    const char *db, *rp;
    uint64_t id;
};

static int rename_entry(void *vctx, const char *name, int64_t mtime, uint64_t size,
                        struct cairn_reader *data, struct cairn_err *err)
{
    struct rename_ctx *c = vctx;
    /* <db>/<rp>/<id>/<rest>: keep <rest>, replace the first three parts. */
    const char *p1 = strchr(name, '/'), *p2 = p1 ? strchr(p1 + 1, '/') : NULL;
    const char *p3 = p2 ? strchr(p2 + 1, '/') : NULL;
    if (p3 == NULL || p3[1] == '\0')
        return cairn_err_set(err, CAIRN_E_CORRUPT, "tar entry '%s' is not <db>/<rp>/<id>/<file>",
                             name);
    char *db = c->db ? xstrdup(c->db) : xasprintf("%.*s", (int)(p1 - name), name);
    char *rp = c->rp ? xstrdup(c->rp) : xasprintf("%.*s", (int)(p2 - p1 - 1), p1 + 1);
    char *nn = xasprintf("%s/%s/%llu/%s", db, rp, (unsigned long long)c->id, p3 + 1);
    free(db);
    free(rp);
    int rc = add_member(c->out, nn, size, mtime, err);
    free(nn);
    if (rc != CAIRN_OK)
        return rc;
    uint8_t *buf = xmalloc(CAIRN_IO_BUFSIZE);
    for (uint64_t left = size; left > 0;) {
        size_t got;
        if ((rc = cairn_reader_read(data, buf, CAIRN_IO_BUFSIZE, &got, err)) != CAIRN_OK)
            break;
        if (got == 0) {
            rc = cairn_err_set(err, CAIRN_E_CORRUPT, "tar entry '%s' is truncated", name);
            break;
        }
        if ((rc = tar_writer_data(&c->out->tw, buf, got, err)) != CAIRN_OK)
            break;
        left -= got;
    }
    free(buf);
    return rc == CAIRN_OK ? tar_writer_end(&c->out->tw, err) : rc;
}

int influx_tar_rename(struct cairn_reader *r, struct cairn_writer *w, const char *db,
                      const char *rp, uint64_t id, struct cairn_err *err)
{
    struct rename_ctx c = {influx_tar_out_new(w), db, rp, id};
    int rc = influx_tar_each(r, rename_entry, &c, err);
    if (rc == CAIRN_OK)
        rc = influx_tar_out_close(c.out, err);
    influx_tar_out_free(c.out);
    return rc;
}
