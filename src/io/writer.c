/* Generic writer chain plus the basic sinks (fd, atomic file, memory, discard) and the
 * SHA-256 observer stage. */
#define _GNU_SOURCE
#include "cairn/digest.h"
#include "cairn/io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"

void cairn_writer_init(struct cairn_writer *w, const struct cairn_writer_ops *ops,
                       struct cairn_writer *next)
{
    memset(w, 0, sizeof(*w));
    w->ops = ops;
    w->next = next;
}

static int writer_fail(struct cairn_writer *w, struct cairn_err *err)
{
    w->state = CAIRN_IO_FAILED;
    if (err != NULL)
        cairn_err_copy(&w->err, err);
    else
        cairn_err_set(&w->err, CAIRN_E_IO, "%s stage failed", w->ops->name);
    return w->err.code ? w->err.code : CAIRN_E_IO;
}

int cairn_writer_write(struct cairn_writer *w, const void *buf, size_t len, struct cairn_err *err)
{
    if (w->state == CAIRN_IO_FAILED) {
        cairn_err_copy(err, &w->err);
        return w->err.code;
    }
    if (w->state == CAIRN_IO_CLOSED)
        return cairn_err_set(err, CAIRN_E_INTERNAL, "write to closed %s stage", w->ops->name);
    if (len == 0)
        return CAIRN_OK;
    struct cairn_err local;
    cairn_err_clear(&local);
    int rc = w->ops->write(w, buf, len, &local);
    if (rc != CAIRN_OK) {
        if (local.code == 0)
            cairn_err_set(&local, rc, "%s stage failed", w->ops->name);
        writer_fail(w, &local);
        cairn_err_copy(err, &local);
        return rc;
    }
    w->bytes += len;
    return CAIRN_OK;
}

int cairn_writer_close(struct cairn_writer *w, struct cairn_err *err)
{
    if (w->state == CAIRN_IO_CLOSED)
        return CAIRN_OK;
    if (w->state == CAIRN_IO_FAILED) {
        cairn_err_copy(err, &w->err);
        return w->err.code;
    }
    struct cairn_err local;
    cairn_err_clear(&local);
    int rc = w->ops->finish ? w->ops->finish(w, &local) : CAIRN_OK;
    if (rc == CAIRN_OK && w->next != NULL)
        rc = cairn_writer_close(w->next, &local);
    if (rc != CAIRN_OK) {
        writer_fail(w, &local);
        cairn_err_copy(err, &local);
        return rc;
    }
    w->state = CAIRN_IO_CLOSED;
    return CAIRN_OK;
}

void cairn_writer_free(struct cairn_writer *w)
{
    /* Each sink knows whether its own finish committed; an uncommitted sink aborts in free. */
    while (w != NULL) {
        struct cairn_writer *next = w->next;
        if (w->ops->free != NULL)
            w->ops->free(w);
        else
            free(w);
        w = next;
    }
}

/* ---- borrow: a pass-through whose target is not part of the chain ---- */

struct borrow_writer {
    struct cairn_writer base; /* base.next stays NULL: close and free stop here */
    struct cairn_writer *target;
};

static int borrow_write(struct cairn_writer *w, const void *buf, size_t len, struct cairn_err *err)
{
    return cairn_writer_write(((struct borrow_writer *)w)->target, buf, len, err);
}

static const struct cairn_writer_ops borrow_writer_ops = {"borrow", borrow_write, NULL, NULL};

struct cairn_writer *cairn_writer_borrow(struct cairn_writer *w)
{
    struct borrow_writer *b = xcalloc(1, sizeof(*b));
    cairn_writer_init(&b->base, &borrow_writer_ops, NULL);
    b->target = w;
    return &b->base;
}

/* ---- fd sink ---- */

struct fd_writer {
    struct cairn_writer base;
    int fd;
    int own;
};

static int fd_write(struct cairn_writer *w, const void *buf, size_t len, struct cairn_err *err)
{
    struct fd_writer *f = (struct fd_writer *)w;
    return write_all(f->fd, buf, len, "output", err);
}

static void fd_writer_free(struct cairn_writer *w)
{
    struct fd_writer *f = (struct fd_writer *)w;
    if (f->own)
        close(f->fd);
    free(f);
}

static const struct cairn_writer_ops fd_writer_ops = {"fd", fd_write, NULL, fd_writer_free};

struct cairn_writer *cairn_fd_writer_new(int fd, int own_fd)
{
    struct fd_writer *f = xcalloc(1, sizeof(*f));
    cairn_writer_init(&f->base, &fd_writer_ops, NULL);
    f->fd = fd;
    f->own = own_fd;
    return &f->base;
}

/* ---- atomic file sink: temp in the same directory, fsync, rename, fsync dir ---- */

struct atomic_writer {
    struct cairn_writer base;
    int fd;
    int replace;
    char *path;
    char *tmp;
    struct writeback wb;
};

static int atomic_write(struct cairn_writer *w, const void *buf, size_t len, struct cairn_err *err)
{
    struct atomic_writer *a = (struct atomic_writer *)w;
    int rc = write_all(a->fd, buf, len, a->tmp, err);
    if (rc == CAIRN_OK)
        writeback(a->fd, &a->wb, len);
    return rc;
}

static int atomic_finish(struct cairn_writer *w, struct cairn_err *err)
{
    struct atomic_writer *a = (struct atomic_writer *)w;
    char dir[4096];
    if (fsync(a->fd) != 0)
        return cairn_err_sys(err, 0, errno, "fsync '%s'", a->tmp);
    if (close(a->fd) != 0) {
        a->fd = -1;
        return cairn_err_sys(err, 0, errno, "close '%s'", a->tmp);
    }
    a->fd = -1;
    if (a->replace) {
        if (rename(a->tmp, a->path) != 0)
            return cairn_err_sys(err, 0, errno, "rename '%s' to '%s'", a->tmp, a->path);
    } else if (renameat2(AT_FDCWD, a->tmp, AT_FDCWD, a->path, RENAME_NOREPLACE) != 0) {
        /* Some file systems (and old kernels) lack RENAME_NOREPLACE: fall back to link(2),
         * which also refuses to replace. */
        if (errno != EINVAL && errno != ENOSYS)
            return cairn_err_sys(err, 0, errno, "rename '%s' to '%s'", a->tmp, a->path);
        if (link(a->tmp, a->path) != 0)
            return cairn_err_sys(err, 0, errno, "link '%s' to '%s'", a->tmp, a->path);
        unlink(a->tmp);
    }
    free(a->tmp);
    a->tmp = NULL;
    path_dirname(a->path, dir, sizeof(dir));
    return fsync_dir(dir, err);
}

static void atomic_free(struct cairn_writer *w)
{
    struct atomic_writer *a = (struct atomic_writer *)w;
    if (a->fd >= 0)
        close(a->fd);
    if (a->tmp != NULL)
        unlink(a->tmp); /* not committed: leave no debris */
    free(a->tmp);
    free(a->path);
    free(a);
}

static const struct cairn_writer_ops atomic_writer_ops = {"file", atomic_write, atomic_finish,
                                                          atomic_free};

int cairn_atomic_file_writer_open(const char *path, int mode, int replace,
                                  struct cairn_writer **out, struct cairn_err *err)
{
    *out = NULL;
    if (!replace && access(path, F_OK) == 0)
        return cairn_err_set(err, CAIRN_E_EXISTS, "'%s' already exists", path);
    char dir[4096];
    path_dirname(path, dir, sizeof(dir));
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char *tmp = xasprintf("%s/.%s.tmp.XXXXXX", dir, base);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        int rc = cairn_err_sys(err, 0, errno, "create temporary file in '%s'", dir);
        free(tmp);
        return rc;
    }
    if (fchmod(fd, (mode_t)mode) != 0) {
        int rc = cairn_err_sys(err, 0, errno, "chmod '%s'", tmp);
        close(fd);
        unlink(tmp);
        free(tmp);
        return rc;
    }
    struct atomic_writer *a = xcalloc(1, sizeof(*a));
    cairn_writer_init(&a->base, &atomic_writer_ops, NULL);
    a->fd = fd;
    a->replace = replace;
    a->path = xstrdup(path);
    a->tmp = tmp;
    *out = &a->base;
    return CAIRN_OK;
}

/* ---- memory and discard sinks ---- */

struct mem_writer {
    struct cairn_writer base;
    uint8_t *data;
    size_t len, cap, max;
};

static int mem_write(struct cairn_writer *w, const void *buf, size_t len, struct cairn_err *err)
{
    struct mem_writer *m = (struct mem_writer *)w;
    if (len > m->max - m->len)
        return cairn_err_set(err, CAIRN_E_INVALID, "in-memory output exceeds %zu bytes", m->max);
    if (m->len + len > m->cap) {
        size_t cap = m->cap ? m->cap : 4096;
        while (cap < m->len + len)
            cap *= 2;
        m->data = xrealloc(m->data, cap);
        m->cap = cap;
    }
    memcpy(m->data + m->len, buf, len);
    m->len += len;
    return CAIRN_OK;
}

static void mem_free(struct cairn_writer *w)
{
    struct mem_writer *m = (struct mem_writer *)w;
    free(m->data);
    free(m);
}

static const struct cairn_writer_ops mem_writer_ops = {"memory", mem_write, NULL, mem_free};

struct cairn_writer *cairn_mem_writer_new(size_t max_size)
{
    struct mem_writer *m = xcalloc(1, sizeof(*m));
    cairn_writer_init(&m->base, &mem_writer_ops, NULL);
    m->max = max_size;
    return &m->base;
}

const uint8_t *cairn_mem_writer_data(struct cairn_writer *w, size_t *len)
{
    struct mem_writer *m = (struct mem_writer *)w;
    *len = m->len;
    return m->data;
}

static int discard_write(struct cairn_writer *w, const void *buf, size_t len, struct cairn_err *err)
{
    (void)w, (void)buf, (void)len, (void)err;
    return CAIRN_OK;
}

static const struct cairn_writer_ops discard_writer_ops = {"discard", discard_write, NULL, NULL};

struct cairn_writer *cairn_discard_writer_new(void)
{
    struct cairn_writer *w = xcalloc(1, sizeof(*w));
    cairn_writer_init(w, &discard_writer_ops, NULL);
    return w;
}

/* ---- SHA-256 observer ---- */

struct hash_writer {
    struct cairn_writer base;
    struct cairn_sha256 h;
    uint8_t digest[32];
    int done;
};

static int hash_write(struct cairn_writer *w, const void *buf, size_t len, struct cairn_err *err)
{
    struct hash_writer *h = (struct hash_writer *)w;
    cairn_sha256_update(&h->h, buf, len);
    return w->next ? cairn_writer_write(w->next, buf, len, err) : CAIRN_OK;
}

static int hash_finish(struct cairn_writer *w, struct cairn_err *err)
{
    (void)err;
    struct hash_writer *h = (struct hash_writer *)w;
    cairn_sha256_peek(&h->h, h->digest);
    h->done = 1;
    return CAIRN_OK;
}

static void hash_free(struct cairn_writer *w)
{
    struct hash_writer *h = (struct hash_writer *)w;
    cairn_sha256_free(&h->h);
    free(h);
}

static const struct cairn_writer_ops hash_writer_ops = {"sha256", hash_write, hash_finish,
                                                        hash_free};

struct cairn_writer *cairn_hash_writer_new(struct cairn_writer *next)
{
    struct hash_writer *h = xcalloc(1, sizeof(*h));
    cairn_writer_init(&h->base, &hash_writer_ops, next);
    cairn_sha256_init(&h->h);
    return &h->base;
}

struct cairn_writer *cairn_hash_writer_new_keyed(struct cairn_writer *next, const uint8_t key[32])
{
    struct hash_writer *h = xcalloc(1, sizeof(*h));
    cairn_writer_init(&h->base, &hash_writer_ops, next);
    cairn_sha256_init_keyed(&h->h, key);
    return &h->base;
}

void cairn_hash_writer_digest(struct cairn_writer *w, uint8_t out[32])
{
    struct hash_writer *h = (struct hash_writer *)w;
    if (h->done)
        memcpy(out, h->digest, 32);
    else
        cairn_sha256_peek(&h->h, out);
}
