/* Generic reader chain plus fd/file/memory sources, the SHA-256 observer and a length limit. */
#include "cairn/digest.h"
#include "cairn/io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"

void cairn_reader_init(struct cairn_reader *r, const struct cairn_reader_ops *ops,
                       struct cairn_reader *next)
{
    memset(r, 0, sizeof(*r));
    r->ops = ops;
    r->next = next;
}

int cairn_reader_read(struct cairn_reader *r, void *buf, size_t cap, size_t *got,
                      struct cairn_err *err)
{
    *got = 0;
    if (r->failed) {
        cairn_err_copy(err, &r->err);
        return r->err.code;
    }
    if (r->eof || cap == 0)
        return CAIRN_OK;
    struct cairn_err local;
    cairn_err_clear(&local);
    int rc = r->ops->read(r, buf, cap, got, &local);
    if (rc != CAIRN_OK) {
        if (local.code == 0)
            cairn_err_set(&local, rc, "%s stage failed", r->ops->name);
        r->failed = 1;
        cairn_err_copy(&r->err, &local);
        cairn_err_copy(err, &local);
        *got = 0;
        return rc;
    }
    if (*got == 0)
        r->eof = 1;
    r->bytes += *got;
    return CAIRN_OK;
}

int cairn_reader_read_full(struct cairn_reader *r, void *buf, size_t len, const char *what,
                           struct cairn_err *err)
{
    size_t off = 0;
    while (off < len) {
        size_t got;
        int rc = cairn_reader_read(r, (char *)buf + off, len - off, &got, err);
        if (rc != CAIRN_OK)
            return rc;
        if (got == 0)
            return cairn_err_set(err, CAIRN_E_CORRUPT, "unexpected end of %s (%zu of %zu bytes)",
                                 what, off, len);
        off += got;
    }
    return CAIRN_OK;
}

uint64_t cairn_reader_consumed(const struct cairn_reader *r)
{
    if (r->ops->consumed != NULL)
        return r->ops->consumed(r);
    return r->next != NULL ? r->next->bytes : 0;
}

void cairn_reader_free(struct cairn_reader *r)
{
    while (r != NULL) {
        struct cairn_reader *next = r->next;
        if (r->ops->free != NULL)
            r->ops->free(r);
        else
            free(r);
        r = next;
    }
}

/* ---- fd / file source ---- */

struct fd_reader {
    struct cairn_reader base;
    int fd;
    int own;
};

static int fd_read(struct cairn_reader *r, void *buf, size_t cap, size_t *got,
                   struct cairn_err *err)
{
    struct fd_reader *f = (struct fd_reader *)r;
    for (;;) {
        ssize_t n = read(f->fd, buf, cap);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return cairn_err_sys(err, 0, errno, "read input");
        }
        *got = (size_t)n;
        return CAIRN_OK;
    }
}

static void fd_reader_free(struct cairn_reader *r)
{
    struct fd_reader *f = (struct fd_reader *)r;
    if (f->own)
        close(f->fd);
    free(f);
}

static const struct cairn_reader_ops fd_reader_ops = {"fd", fd_read, fd_reader_free};

struct cairn_reader *cairn_fd_reader_new(int fd, int own_fd)
{
    struct fd_reader *f = xcalloc(1, sizeof(*f));
    cairn_reader_init(&f->base, &fd_reader_ops, NULL);
    f->fd = fd;
    f->own = own_fd;
    return &f->base;
}

int cairn_file_reader_open(const char *path, struct cairn_reader **out, struct cairn_err *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cairn_err_sys(err, 0, errno, "open '%s'", path);
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    *out = cairn_fd_reader_new(fd, 1);
    return CAIRN_OK;
}

/* ---- memory source ---- */

struct mem_reader {
    struct cairn_reader base;
    const uint8_t *data;
    size_t len, off;
};

static int mem_read(struct cairn_reader *r, void *buf, size_t cap, size_t *got,
                    struct cairn_err *err)
{
    (void)err;
    struct mem_reader *m = (struct mem_reader *)r;
    size_t n = m->len - m->off < cap ? m->len - m->off : cap;
    memcpy(buf, m->data + m->off, n);
    m->off += n;
    *got = n;
    return CAIRN_OK;
}

static const struct cairn_reader_ops mem_reader_ops = {"memory", mem_read, NULL};

struct cairn_reader *cairn_mem_reader_new(const void *data, size_t len)
{
    struct mem_reader *m = xcalloc(1, sizeof(*m));
    cairn_reader_init(&m->base, &mem_reader_ops, NULL);
    m->data = data;
    m->len = len;
    return &m->base;
}

/* ---- SHA-256 observer ---- */

struct hash_reader {
    struct cairn_reader base;
    struct cairn_sha256 h;
};

static int hash_read(struct cairn_reader *r, void *buf, size_t cap, size_t *got,
                     struct cairn_err *err)
{
    struct hash_reader *h = (struct hash_reader *)r;
    int rc = cairn_reader_read(r->next, buf, cap, got, err);
    if (rc == CAIRN_OK)
        cairn_sha256_update(&h->h, buf, *got);
    return rc;
}

static void hash_reader_free(struct cairn_reader *r)
{
    struct hash_reader *h = (struct hash_reader *)r;
    cairn_sha256_free(&h->h);
    free(h);
}

static const struct cairn_reader_ops hash_reader_ops = {"sha256", hash_read, hash_reader_free};

struct cairn_reader *cairn_hash_reader_new(struct cairn_reader *src)
{
    struct hash_reader *h = xcalloc(1, sizeof(*h));
    cairn_reader_init(&h->base, &hash_reader_ops, src);
    cairn_sha256_init(&h->h);
    return &h->base;
}

struct cairn_reader *cairn_hash_reader_new_keyed(struct cairn_reader *src, const uint8_t key[32])
{
    struct hash_reader *h = xcalloc(1, sizeof(*h));
    cairn_reader_init(&h->base, &hash_reader_ops, src);
    cairn_sha256_init_keyed(&h->h, key);
    return &h->base;
}

void cairn_hash_reader_digest(struct cairn_reader *r, uint8_t out[32])
{
    cairn_sha256_peek(&((struct hash_reader *)r)->h, out);
}

/* ---- borrow: a pass-through whose source is not part of the chain ---- */

struct borrow_reader {
    struct cairn_reader base; /* base.next stays NULL: free stops here */
    struct cairn_reader *source;
};

static int borrow_read(struct cairn_reader *r, void *buf, size_t cap, size_t *got,
                       struct cairn_err *err)
{
    return cairn_reader_read(((struct borrow_reader *)r)->source, buf, cap, got, err);
}

static const struct cairn_reader_ops borrow_reader_ops = {"borrow", borrow_read, NULL, NULL};

struct cairn_reader *cairn_reader_borrow(struct cairn_reader *r)
{
    struct borrow_reader *b = xcalloc(1, sizeof(*b));
    cairn_reader_init(&b->base, &borrow_reader_ops, NULL);
    b->source = r;
    return &b->base;
}

/* ---- limit ---- */

struct limit_reader {
    struct cairn_reader base;
    uint64_t left;
};

static int limit_read(struct cairn_reader *r, void *buf, size_t cap, size_t *got,
                      struct cairn_err *err)
{
    struct limit_reader *l = (struct limit_reader *)r;
    if (l->left == 0) {
        *got = 0;
        return CAIRN_OK;
    }
    if (cap > l->left)
        cap = (size_t)l->left;
    int rc = cairn_reader_read(r->next, buf, cap, got, err);
    if (rc == CAIRN_OK)
        l->left -= *got;
    return rc;
}

static const struct cairn_reader_ops limit_reader_ops = {"limit", limit_read, NULL};

struct cairn_reader *cairn_limit_reader_new(struct cairn_reader *src, uint64_t limit)
{
    struct limit_reader *l = xcalloc(1, sizeof(*l));
    cairn_reader_init(&l->base, &limit_reader_ops, src);
    l->left = limit;
    return &l->base;
}

int cairn_copy(struct cairn_reader *r, struct cairn_writer *w, uint64_t *copied,
               struct cairn_err *err)
{
    uint8_t *buf = xmalloc(CAIRN_IO_BUFSIZE);
    uint64_t total = 0;
    int rc;
    for (;;) {
        size_t got;
        rc = cairn_reader_read(r, buf, CAIRN_IO_BUFSIZE, &got, err);
        if (rc != CAIRN_OK || got == 0)
            break;
        rc = cairn_writer_write(w, buf, got, err);
        if (rc != CAIRN_OK)
            break;
        total += got;
    }
    free(buf);
    if (copied != NULL)
        *copied = total;
    return rc;
}
