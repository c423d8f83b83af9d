/* ustar streams through libarchive, shaped like Go's archive/tar output: 512-byte headers,
 * mode 0644, uid/gid 0 with uname/gname "root", data padded to 512 bytes and a trailer of two
 * zero blocks with no padding to a 10 KiB record. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "internal.h"

struct snap_tar_out {
    struct archive *a;
    struct cairn_writer *w;
    struct cairn_err werr; /* failure of w, reported instead of libarchive's text */
    int closed;
};

/* Never report failure to libarchive: 3.6 leaks its client buffer when a failed callback makes
 * the handle FATAL. A failure of w is kept in werr, later bytes are dropped, and every call
 * site checks werr (tar_check). */
static la_ssize_t tar_write_cb(struct archive *a, void *ctx, const void *buf, size_t len)
{
    struct snap_tar_out *t = ctx;
    (void)a;
    /* t->w NULL: freeing an unfinished tar, so no trailer may make it look whole */
    if (t->w != NULL && t->werr.code == 0)
        cairn_writer_write(t->w, buf, len, &t->werr);
    return (la_ssize_t)len;
}

static int tar_fail(struct archive *a, const struct cairn_err *werr, const char *what,
                    struct cairn_err *err)
{
    if (werr != NULL && werr->code != 0) {
        cairn_err_copy(err, werr);
        return werr->code;
    }
    return cairn_err_set(err, CAIRN_E_IO, "%s: %s", what,
                         archive_error_string(a) ? archive_error_string(a) : "tar error");
}

/* ok: libarchive's own verdict on the call; the writer's failure is checked as well. */
static int tar_check(struct snap_tar_out *t, int ok, const char *what, struct cairn_err *err)
{
    if (ok && t->werr.code == 0)
        return CAIRN_OK;
    return tar_fail(t->a, &t->werr, what, err);
}

struct snap_tar_out *snap_tar_out_new(struct cairn_writer *w)
{
    struct snap_tar_out *t = cairn_xcalloc(1, sizeof(*t));
    t->w = w;
    t->a = archive_write_new();
    if (t->a == NULL)
        abort();
    /* pax_restricted writes plain ustar unless a name or value does not fit. */
    archive_write_set_format_pax_restricted(t->a);
    /* No 10 KiB reblocking: file data reaches the socket in CAIRN_IO_BUFSIZE writes. The bytes
     * are the same (with bytes_in_last_block 1 the end was never padded to a block). */
    archive_write_set_bytes_per_block(t->a, 0);
    archive_write_set_bytes_in_last_block(t->a, 1);
    if (archive_write_open(t->a, t, NULL, tar_write_cb, NULL) != ARCHIVE_OK)
        abort(); /* cannot fail: no open callback, memory only */
    return t;
}

static int tar_copy_fd(struct snap_tar_out *t, int fd, uint64_t size, const char *path,
                       struct cairn_err *err)
{
    size_t cap = CAIRN_IO_BUFSIZE;
    uint8_t *buf = cairn_xmalloc(cap);
    int rc = CAIRN_OK;
    while (size > 0) {
        size_t want = size < cap ? (size_t)size : cap, got;
        rc = cairn_read_all(fd, buf, want, &got, path, err);
        if (rc != CAIRN_OK)
            break;
        if (got < want) {
            rc = cairn_err_set(err, CAIRN_E_IO, "'%s' shrank while being read", path);
            break;
        }
        rc = tar_check(t, archive_write_data(t->a, buf, got) == (la_ssize_t)got, "write tar data",
                       err);
        if (rc != CAIRN_OK)
            break;
        size -= got;
    }
    free(buf);
    return rc;
}

int snap_tar_add_file(struct snap_tar_out *t, const char *name, const char *path,
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
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, name);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_size(e, st.st_size);
    archive_entry_set_mtime(e, st.st_mtime, 0); /* ustar keeps whole seconds, as Go's */
    archive_entry_set_uid(e, 0);
    archive_entry_set_gid(e, 0);
    archive_entry_set_uname(e, "root");
    archive_entry_set_gname(e, "root");
    int rc = CAIRN_OK;
    rc = tar_check(t, archive_write_header(t->a, e) == ARCHIVE_OK, "write tar header", err);
    if (rc == CAIRN_OK)
        rc = tar_copy_fd(t, fd, (uint64_t)st.st_size, path, err);
    archive_entry_free(e);
    close(fd);
    return rc;
}

int snap_tar_out_close(struct snap_tar_out *t, struct cairn_err *err)
{
    int rc = tar_check(t, archive_write_close(t->a) == ARCHIVE_OK, "finish tar", err);
    if (rc != CAIRN_OK)
        return rc;
    t->closed = 1;
    return CAIRN_OK;
}

void snap_tar_out_free(struct snap_tar_out *t)
{
    if (t == NULL)
        return;
    if (!t->closed)
        t->w = NULL;
    archive_write_free(t->a);
    free(t);
}

/* ---- reading ---- */

struct tar_in {
    struct cairn_reader *src;
    uint8_t *buf;
    struct cairn_err rerr;
};

static la_ssize_t tar_read_cb(struct archive *a, void *ctx, const void **out)
{
    struct tar_in *in = ctx;
    size_t got;
    (void)a;
    if (cairn_reader_read(in->src, in->buf, CAIRN_IO_BUFSIZE, &got, &in->rerr) != CAIRN_OK)
        return -1;
    *out = in->buf;
    return (la_ssize_t)got;
}

/* A reader over the current entry's data. */
struct entry_reader {
    struct cairn_reader base;
    struct archive *a;
    struct tar_in *in;
};

static int entry_read(struct cairn_reader *r, void *buf, size_t cap, size_t *got,
                      struct cairn_err *err)
{
    struct entry_reader *e = (struct entry_reader *)r;
    la_ssize_t n = archive_read_data(e->a, buf, cap);
    if (n < 0)
        return tar_fail(e->a, &e->in->rerr, "read tar data", err);
    *got = (size_t)n;
    return CAIRN_OK;
}

static const struct cairn_reader_ops entry_reader_ops = {"tar entry", entry_read, NULL};

int snap_tar_each(struct cairn_reader *r, snap_tar_entry_fn cb, void *ctx, struct cairn_err *err)
{
    struct tar_in in = {r, cairn_xmalloc(CAIRN_IO_BUFSIZE), {0}};
    struct archive *a = archive_read_new();
    int rc = CAIRN_OK;
    archive_read_support_format_tar(a);
    if (archive_read_open(a, &in, NULL, tar_read_cb, NULL) != ARCHIVE_OK) {
        rc = tar_fail(a, &in.rerr, "read tar", err);
        goto out;
    }
    for (;;) {
        struct archive_entry *e;
        int ar = archive_read_next_header(a, &e);
        if (ar == ARCHIVE_EOF)
            break;
        if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN) {
            rc = tar_fail(a, &in.rerr, "read tar", err);
            cairn_err_wrap(err, rc, "invalid tar stream");
            if (rc == CAIRN_E_IO && in.rerr.code == 0)
                rc = err != NULL ? (err->code = CAIRN_E_CORRUPT) : CAIRN_E_CORRUPT;
            goto out;
        }
        if (archive_entry_filetype(e) != AE_IFREG)
            continue;
        /* A sparse entry expands holes to zeros when read: a few bytes sent could become
         * terabytes written. Go's tar writer (influxd) never makes them. */
        if (archive_entry_sparse_count(e) > 0) {
            rc = cairn_err_set(err, CAIRN_E_CORRUPT,
                               "invalid tar stream: sparse entry '%s' refused (%lld bytes "
                               "declared)",
                               archive_entry_pathname(e), (long long)archive_entry_size(e));
            goto out;
        }
        struct entry_reader er;
        cairn_reader_init(&er.base, &entry_reader_ops, NULL);
        er.a = a;
        er.in = &in;
        rc = cb(ctx, archive_entry_pathname(e), (int64_t)archive_entry_mtime(e),
                (uint64_t)archive_entry_size(e), &er.base, err);
        if (rc != CAIRN_OK)
            goto out;
    }
out:
    archive_read_free(a);
    free(in.buf);
    return rc;
}

/* ---- renaming copy ---- */

struct rename_ctx {
    struct snap_tar_out *out;
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
    char *db = c->db ? cairn_xstrdup(c->db) : cairn_xasprintf("%.*s", (int)(p1 - name), name);
    char *rp = c->rp ? cairn_xstrdup(c->rp) : cairn_xasprintf("%.*s", (int)(p2 - p1 - 1), p1 + 1);
    char *nn = cairn_xasprintf("%s/%s/%llu/%s", db, rp, (unsigned long long)c->id, p3 + 1);
    free(db);
    free(rp);
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, nn);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_size(e, (la_int64_t)size);
    archive_entry_set_mtime(e, (time_t)mtime, 0);
    archive_entry_set_uname(e, "root");
    archive_entry_set_gname(e, "root");
    int rc = CAIRN_OK;
    rc = tar_check(c->out, archive_write_header(c->out->a, e) == ARCHIVE_OK, "write tar header",
                   err);
    if (rc != CAIRN_OK)
        goto out;
    uint8_t *buf = cairn_xmalloc(CAIRN_IO_BUFSIZE);
    uint64_t left = size;
    while (left > 0) {
        size_t got;
        rc = cairn_reader_read(data, buf, CAIRN_IO_BUFSIZE, &got, err);
        if (rc != CAIRN_OK)
            break;
        if (got == 0) {
            rc = cairn_err_set(err, CAIRN_E_CORRUPT, "tar entry '%s' is truncated", name);
            break;
        }
        rc = tar_check(c->out, archive_write_data(c->out->a, buf, got) == (la_ssize_t)got,
                       "write tar data", err);
        if (rc != CAIRN_OK)
            break;
        left -= got;
    }
    free(buf);
out:
    archive_entry_free(e);
    free(nn);
    return rc;
}

int snap_tar_rename(struct cairn_reader *r, struct cairn_writer *w, const char *db, const char *rp,
                    uint64_t id, struct cairn_err *err)
{
    struct rename_ctx c = {snap_tar_out_new(w), db, rp, id};
    int rc = snap_tar_each(r, rename_entry, &c, err);
    if (rc == CAIRN_OK)
        rc = snap_tar_out_close(c.out, err);
    snap_tar_out_free(c.out);
    return rc;
}
