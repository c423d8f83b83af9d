/* Pipe stage: hands the bytes to a helper thread that writes them into `next`, so the stages
 * below (compression, hashing, the sink) run on a second core while the caller reads and runs
 * the stages above. A ring of PIPE_BUFS buffers of CAIRN_IO_BUFSIZE bounds the memory; the
 * caller blocks while all are full, the helper while all are empty. */
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/io.h"
#include "common/util.h"

#define PIPE_BUFS 3

struct pipe_buf {
    uint8_t *data;
    size_t len;
};

struct pipe_writer {
    struct cairn_writer base;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct pipe_buf bufs[PIPE_BUFS];
    unsigned head;  /* oldest full buffer (the helper's next) */
    unsigned count; /* full buffers */
    size_t fill;    /* bytes in the buffer being filled, bufs[(head + count) % PIPE_BUFS] */
    int closing;    /* no more buffers will come */
    int abandon;    /* freed unclosed: drop what is queued */
    int failed;     /* the helper's write into next failed: err holds why */
    int exited;
    struct cairn_err err;
};

static void *pipe_main(void *arg)
{
    struct pipe_writer *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->count == 0 && !p->closing)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->count == 0 || p->abandon)
            break;
        struct pipe_buf *b = &p->bufs[p->head];
        pthread_mutex_unlock(&p->mu);
        struct cairn_err e;
        cairn_err_clear(&e);
        int rc = cairn_writer_write(p->base.next, b->data, b->len, &e);
        pthread_mutex_lock(&p->mu);
        if (rc != CAIRN_OK) {
            cairn_err_copy(&p->err, &e);
            p->failed = 1;
            p->count = 0; /* drop the rest: the stream is broken */
            pthread_cond_broadcast(&p->cv);
            break;
        }
        p->head = (p->head + 1) % PIPE_BUFS;
        p->count--;
        pthread_cond_broadcast(&p->cv);
    }
    p->exited = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Queue the buffer being filled; waits for a free one. Caller holds mu. */
static int pipe_push_locked(struct pipe_writer *p, struct cairn_err *err)
{
    p->bufs[(p->head + p->count) % PIPE_BUFS].len = p->fill;
    p->count++;
    p->fill = 0;
    pthread_cond_broadcast(&p->cv);
    while (p->count == PIPE_BUFS && !p->failed)
        pthread_cond_wait(&p->cv, &p->mu);
    if (p->failed) {
        cairn_err_copy(err, &p->err);
        return p->err.code ? p->err.code : CAIRN_E_IO;
    }
    return CAIRN_OK;
}

static int pipe_write(struct cairn_writer *w, const void *buf, size_t len, struct cairn_err *err)
{
    struct pipe_writer *p = (struct pipe_writer *)w;
    const uint8_t *src = buf;
    int rc = CAIRN_OK;
    pthread_mutex_lock(&p->mu);
    while (len > 0 && rc == CAIRN_OK) {
        if (p->failed) {
            cairn_err_copy(err, &p->err);
            rc = p->err.code ? p->err.code : CAIRN_E_IO;
            break;
        }
        /* The fill buffer belongs to the caller alone: copy without the lock. */
        struct pipe_buf *b = &p->bufs[(p->head + p->count) % PIPE_BUFS];
        size_t n = CAIRN_IO_BUFSIZE - p->fill < len ? CAIRN_IO_BUFSIZE - p->fill : len;
        size_t at = p->fill;
        pthread_mutex_unlock(&p->mu);
        memcpy(b->data + at, src, n);
        pthread_mutex_lock(&p->mu);
        p->fill += n;
        src += n;
        len -= n;
        if (p->fill == CAIRN_IO_BUFSIZE)
            rc = pipe_push_locked(p, err);
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

/* Stop the helper after it wrote everything queued (or failed, or right away when abandon);
 * idempotent. */
static void pipe_join(struct pipe_writer *p, int abandon)
{
    pthread_mutex_lock(&p->mu);
    p->closing = 1;
    p->abandon |= abandon;
    pthread_cond_broadcast(&p->cv);
    int joined = p->exited == 2;
    if (!joined)
        while (!p->exited)
            pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
    if (!joined) {
        pthread_join(p->thread, NULL);
        p->exited = 2;
    }
}

static int pipe_finish(struct cairn_writer *w, struct cairn_err *err)
{
    struct pipe_writer *p = (struct pipe_writer *)w;
    int rc = CAIRN_OK;
    pthread_mutex_lock(&p->mu);
    if (p->fill > 0 && !p->failed)
        rc = pipe_push_locked(p, err);
    pthread_mutex_unlock(&p->mu);
    pipe_join(p, 0);
    if (rc == CAIRN_OK && p->failed) {
        cairn_err_copy(err, &p->err);
        rc = p->err.code ? p->err.code : CAIRN_E_IO;
    }
    return rc; /* the generic close then closes next, on this thread */
}

static void pipe_free(struct cairn_writer *w)
{
    struct pipe_writer *p = (struct pipe_writer *)w;
    /* Unclosed: the helper stops after its current buffer; next is freed (and aborts) after
     * this stage. */
    pipe_join(p, 1);
    for (unsigned i = 0; i < PIPE_BUFS; i++)
        free(p->bufs[i].data);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static const struct cairn_writer_ops pipe_writer_ops = {"pipe", pipe_write, pipe_finish, pipe_free};

struct cairn_writer *cairn_pipe_writer_new(struct cairn_writer *next)
{
    struct pipe_writer *p = xcalloc(1, sizeof(*p));
    cairn_writer_init(&p->base, &pipe_writer_ops, next);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    for (unsigned i = 0; i < PIPE_BUFS; i++)
        p->bufs[i].data = xmalloc(CAIRN_IO_BUFSIZE);
    if (pthread_create(&p->thread, NULL, pipe_main, p) != 0)
        abort();
    return &p->base;
}

/* ---- read-ahead ----
 * The reader's mirror: a helper thread reads src (and so runs src's stages, such as
 * decryption) into a ring of PIPE_BUFS buffers while the caller runs the stages above. An
 * error of src reaches the caller after the bytes read before it, in order. */

struct pipe_reader {
    struct cairn_reader base;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct pipe_buf bufs[PIPE_BUFS];
    unsigned head;  /* oldest full buffer (the caller's next) */
    unsigned count; /* full buffers */
    size_t off;     /* bytes of bufs[head] already returned */
    int end;        /* src ended (eof, or failed: err says why) after the queued buffers */
    int failed;
    int stop; /* freed: the helper stops after its current read */
    struct cairn_err err;
};

static void *pipe_reader_main(void *arg)
{
    struct pipe_reader *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        while (p->count == PIPE_BUFS && !p->stop)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->stop)
            break;
        /* The buffer after the full ones belongs to the helper alone. */
        struct pipe_buf *b = &p->bufs[(p->head + p->count) % PIPE_BUFS];
        pthread_mutex_unlock(&p->mu);
        struct cairn_err e;
        cairn_err_clear(&e);
        size_t got = 0;
        int rc = CAIRN_OK;
        b->len = 0;
        do { /* fill it: fewer, larger hand-overs */
            rc = cairn_reader_read(p->base.next, b->data + b->len, CAIRN_IO_BUFSIZE - b->len, &got,
                                   &e);
            b->len += got;
        } while (rc == CAIRN_OK && got > 0 && b->len < CAIRN_IO_BUFSIZE);
        pthread_mutex_lock(&p->mu);
        if (b->len > 0) {
            p->count++;
            pthread_cond_broadcast(&p->cv);
        }
        if (rc != CAIRN_OK || got == 0) {
            if (rc != CAIRN_OK) {
                cairn_err_copy(&p->err, &e);
                p->failed = 1;
            }
            break;
        }
    }
    p->end = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static int pipe_read(struct cairn_reader *r, void *buf, size_t cap, size_t *got,
                     struct cairn_err *err)
{
    struct pipe_reader *p = (struct pipe_reader *)r;
    pthread_mutex_lock(&p->mu);
    while (p->count == 0 && !p->end)
        pthread_cond_wait(&p->cv, &p->mu);
    if (p->count == 0) {
        int failed = p->failed;
        if (failed)
            cairn_err_copy(err, &p->err);
        pthread_mutex_unlock(&p->mu);
        *got = 0;
        return failed ? (p->err.code ? p->err.code : CAIRN_E_IO) : CAIRN_OK;
    }
    /* A full buffer is not touched by the helper until it is handed back: copy unlocked. */
    struct pipe_buf *b = &p->bufs[p->head];
    pthread_mutex_unlock(&p->mu);
    size_t n = b->len - p->off < cap ? b->len - p->off : cap;
    memcpy(buf, b->data + p->off, n);
    p->off += n;
    if (p->off == b->len) {
        pthread_mutex_lock(&p->mu);
        p->off = 0;
        p->head = (p->head + 1) % PIPE_BUFS;
        p->count--;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    *got = n;
    return CAIRN_OK;
}

static void pipe_reader_free(struct cairn_reader *r)
{
    struct pipe_reader *p = (struct pipe_reader *)r;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL); /* before src is freed, after this stage */
    for (unsigned i = 0; i < PIPE_BUFS; i++) {
        OPENSSL_cleanse(p->bufs[i].data, CAIRN_IO_BUFSIZE);
        free(p->bufs[i].data);
    }
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static const struct cairn_reader_ops pipe_reader_ops = {"pipe", pipe_read, pipe_reader_free, NULL};

struct cairn_reader *cairn_pipe_reader_new(struct cairn_reader *src)
{
    struct pipe_reader *p = xcalloc(1, sizeof(*p));
    cairn_reader_init(&p->base, &pipe_reader_ops, src);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    for (unsigned i = 0; i < PIPE_BUFS; i++)
        p->bufs[i].data = xmalloc(CAIRN_IO_BUFSIZE);
    if (pthread_create(&p->thread, NULL, pipe_reader_main, p) != 0)
        abort();
    return &p->base;
}
