/* The archive check that runs beside the download (hashi.h): a writer stage whose bytes go to
 * the next stage and, through a ring, to cairn_snapshot_verify on a helper thread. The reader
 * pulls, the download pushes: the ring joins the two with bounded memory, and a full ring
 * makes the download wait for the check (so the check can never fall behind by more than the
 * ring). */
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "source/hashi/hashi.h"

#define RING_SIZE (1u << 20)

struct check {
    struct cairn_writer base; /* next: where the bytes are stored */
    struct cairn_reader in;   /* the ring, as the archive reader sees it */
    struct cairn_snapshot_read_opts ro;
    const char *what;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint8_t *ring;
    size_t head, len; /* bytes waiting: ring[head..head+len) modulo RING_SIZE */
    int eof;          /* the writer side has closed */
    int stop;         /* the writer side gave up: the reader stops */
    int done;         /* the reader has returned */
    int rc;           /* its verdict */
    struct cairn_err err;
    struct cairn_snapshot_info info;
    int joined;
};

static int ring_read(struct cairn_reader *r, void *buf, size_t cap, size_t *got,
                     struct cairn_err *err)
{
    struct check *c = (struct check *)((char *)r - offsetof(struct check, in));
    pthread_mutex_lock(&c->mu);
    while (c->len == 0 && !c->eof && !c->stop)
        pthread_cond_wait(&c->cv, &c->mu);
    int rc = CAIRN_OK;
    *got = 0;
    if (c->stop) {
        rc = cairn_err_set(err, CAIRN_E_CANCELLED, "%s: the transfer stopped", c->what);
    } else if (c->len > 0) {
        size_t n = c->len < cap ? c->len : cap;
        if (n > RING_SIZE - c->head)
            n = RING_SIZE - c->head;
        memcpy(buf, c->ring + c->head, n);
        c->head = (c->head + n) % RING_SIZE;
        c->len -= n;
        *got = n;
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static const struct cairn_reader_ops ring_reader_ops = {"snapshot-check", ring_read, NULL, NULL};

static void *check_main(void *arg)
{
    struct check *c = arg;
    struct cairn_err e;
    cairn_err_clear(&e);
    int rc = cairn_snapshot_verify(&c->in, &c->ro, &c->info, &e);
    pthread_mutex_lock(&c->mu);
    c->rc = rc;
    c->err = e;
    c->done = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* The reader's failure, as the stream's: "<what>: not a valid snapshot archive: ...". */
static int verdict(struct check *c, struct cairn_err *err)
{
    if (c->rc == CAIRN_OK)
        return CAIRN_OK;
    return cairn_err_set(err, c->rc, "%s: not a valid snapshot archive: %s", c->what, c->err.msg);
}

static int check_write(struct cairn_writer *w, const void *buf, size_t len, struct cairn_err *err)
{
    struct check *c = (struct check *)w;
    int rc = cairn_writer_write(w->next, buf, len, err);
    const uint8_t *p = buf;
    pthread_mutex_lock(&c->mu);
    while (rc == CAIRN_OK && len > 0) {
        while (c->len == RING_SIZE && !c->done)
            pthread_cond_wait(&c->cv, &c->mu);
        if (c->done) {
            /* Damage found (or the archive ended before the stream did: the reader reads to
             * the end, so bytes after its verdict are bytes it has refused) */
            if (c->rc == CAIRN_OK)
                c->rc = cairn_err_set(&c->err, CAIRN_E_CORRUPT, "bytes after the archive end");
            rc = verdict(c, err);
            break;
        }
        size_t tail = (c->head + c->len) % RING_SIZE;
        size_t n = RING_SIZE - c->len;
        if (n > RING_SIZE - tail)
            n = RING_SIZE - tail;
        if (n > len)
            n = len;
        memcpy(c->ring + tail, p, n);
        c->len += n;
        p += n;
        len -= n;
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static void join(struct check *c, int stop)
{
    if (c->joined)
        return;
    pthread_mutex_lock(&c->mu);
    if (stop)
        c->stop = 1;
    else
        c->eof = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    c->joined = 1;
}

static int check_finish(struct cairn_writer *w, struct cairn_err *err)
{
    struct check *c = (struct check *)w;
    join(c, 0);
    return verdict(c, err);
}

static void check_free(struct cairn_writer *w)
{
    struct check *c = (struct check *)w;
    join(c, 1);
    cairn_snapshot_info_free(&c->info);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c->ring);
    free(c);
}

static const struct cairn_writer_ops check_ops = {"snapshot-check", check_write, check_finish,
                                                  check_free};

struct cairn_writer *hashi_check_new(struct cairn_writer *next,
                                     const struct cairn_snapshot_read_opts *ro, const char *what)
{
    struct check *c = xcalloc(1, sizeof(*c));
    cairn_writer_init(&c->base, &check_ops, next);
    cairn_reader_init(&c->in, &ring_reader_ops, NULL);
    c->ro = *ro;
    c->what = what;
    c->ring = xmalloc(RING_SIZE);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    if (pthread_create(&c->thread, NULL, check_main, c) != 0)
        abort();
    return &c->base;
}

const struct cairn_snapshot_info *hashi_check_info(struct cairn_writer *w)
{
    return &((struct check *)w)->info;
}
