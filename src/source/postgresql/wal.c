/* PostgreSQL: the WAL a base backup needs, streamed as `pg_basebackup -X stream` does. A
 * second replication connection creates a TEMPORARY physical slot with RESERVE_WAL before the
 * backup starts (so no segment from the backup's start on can be recycled), then, on a
 * thread, streams from the start LSN rounded down to its segment (START_REPLICATION ...
 * PHYSICAL) until it holds every byte up to the backup's end LSN. The WAL goes into
 * pg_wal.tar, one member per segment named as in pg_wal/, the last one padded with zeros to
 * the segment size (pg_basebackup pads it the same way). The slot goes with the connection. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "archive/tar.h"
#include "common/util.h"
#include "pg.h"

struct pg_wal {
    const struct pg_params *p;
    PGconn *c;
    char slot[64];
    struct cairn_writer *w; /* pg_wal.tar in the backup */
    struct tar_writer tw;
    uint64_t seg_size;
    pthread_t th;
    int thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int go;       /* pg_wal_start was called */
    int stop;     /* atomic: the end is known (or the backup was abandoned) */
    uint64_t end; /* under mu; 0: abandon */
    uint64_t start;
    uint32_t tli;
    uint64_t pos; /* the next WAL byte expected */
    int member;   /* a segment's member is open */
    int rc;
    int done; /* atomic: the thread has ended, rc is final */
    struct cairn_err err;
};

static void be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t rd64(const char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | (uint8_t)p[i];
    return v;
}

/* XLogFileName: timeline, then the segment number split at 4 GiB of WAL. */
static void seg_name(const struct pg_wal *w, uint64_t segno, char out[32])
{
    uint64_t per = 0x100000000ull / w->seg_size;
    snprintf(out, 32, "%08X%08X%08X", w->tli, (unsigned)(segno / per), (unsigned)(segno % per));
}

/* The standby status update: written and flushed up to pos (which lets the slot move on). */
static int reply(struct pg_wal *w, struct cairn_err *err)
{
    uint8_t m[34];
    m[0] = 'r';
    be64(m + 1, w->pos);
    be64(m + 9, w->pos);
    be64(m + 17, 0);
    be64(m + 25, (now_ms() - 946684800000ull) * 1000u); /* microseconds since 2000 */
    m[33] = 0;
    if (PQputCopyData(w->c, (const char *)m, sizeof(m)) != 1 || PQflush(w->c) != 0)
        return pg_fail(w->p, w->c, NULL, "WAL stream: status update", err);
    return CAIRN_OK;
}

static int wal_bytes(struct pg_wal *w, uint64_t at, const uint8_t *d, size_t n,
                     struct cairn_err *err)
{
    if (at != w->pos) {
        char a[24], b[24];
        pg_lsn_format(w->pos, a);
        pg_lsn_format(at, b);
        return cairn_err_set(err, CAIRN_E_PROTOCOL, "%s: WAL stream: expected %s, got %s",
                             w->p->where, a, b);
    }
    while (n > 0) {
        int rc = CAIRN_OK;
        if (!w->member) {
            char name[32];
            seg_name(w, w->pos / w->seg_size, name);
            rc = tar_writer_begin(&w->tw, name, w->seg_size, err);
            w->member = rc == CAIRN_OK;
        }
        uint64_t room = w->seg_size - w->pos % w->seg_size;
        size_t k = n < room ? n : (size_t)room;
        if (rc == CAIRN_OK)
            rc = tar_writer_data(&w->tw, d, k, err);
        w->pos += k, d += k, n -= k;
        if (rc == CAIRN_OK && w->pos % w->seg_size == 0) {
            rc = tar_writer_end(&w->tw, err);
            w->member = 0;
        }
        if (rc != CAIRN_OK)
            return cairn_err_wrap(err, rc, "%s: " PG_WAL_TAR, w->p->where);
    }
    return CAIRN_OK;
}

/* One message of the stream: XLogData ('w') or a keepalive ('k'). */
static int wal_message(struct pg_wal *w, const char *m, int len, struct cairn_err *err)
{
    if (m[0] == 'w' && len >= 25)
        return wal_bytes(w, rd64(m + 1), (const uint8_t *)m + 25, (size_t)len - 25, err);
    if (m[0] == 'k' && len >= 18)
        return m[17] ? reply(w, err) : CAIRN_OK;
    return cairn_err_set(err, CAIRN_E_PROTOCOL,
                         "%s: WAL stream: unexpected message type 0x%02x of %d bytes", w->p->where,
                         (uint8_t)m[0], len);
}

/* On a timeline after the first, its history file goes first into pg_wal.tar, as
 * pg_basebackup fetches it: recovery reads it to follow the timeline's ancestry. */
static int wal_history(struct pg_wal *w, struct cairn_err *err)
{
    char cmd[64], want[32];
    snprintf(cmd, sizeof(cmd), "TIMELINE_HISTORY %u", w->tli);
    snprintf(want, sizeof(want), "%08X.history", w->tli);
    PGresult *r = NULL;
    int rc = pg_command(w->p, w->c, cmd, &r, err);
    if (rc == CAIRN_OK &&
        (PQntuples(r) != 1 || PQnfields(r) != 2 || strcmp(PQgetvalue(r, 0, 0), want) != 0))
        rc = cairn_err_set(err, CAIRN_E_PROTOCOL, "%s: %s: unexpected reply", w->p->where, cmd);
    if (rc == CAIRN_OK) {
        size_t n = (size_t)PQgetlength(r, 0, 1);
        rc = tar_writer_begin(&w->tw, want, n, err);
        if (rc == CAIRN_OK)
            rc = tar_writer_data(&w->tw, PQgetvalue(r, 0, 1), n, err);
        if (rc == CAIRN_OK)
            rc = tar_writer_end(&w->tw, err);
    }
    PQclear(r);
    return rc;
}

/* Stream until pos reaches the end the main thread sets. */
static int wal_stream(struct pg_wal *w, struct cairn_err *err)
{
    char cmd[160], lsn[24];
    if (w->tli > 1) {
        int rc = wal_history(w, err);
        if (rc != CAIRN_OK)
            return rc;
    }
    pg_lsn_format(w->start - w->start % w->seg_size, lsn);
    snprintf(cmd, sizeof(cmd), "START_REPLICATION SLOT \"%s\" PHYSICAL %s TIMELINE %u", w->slot,
             lsn, w->tli);
    w->pos = w->start - w->start % w->seg_size;
    PGresult *r = NULL;
    int rc = pg_command(w->p, w->c, cmd, &r, err);
    if (rc == CAIRN_OK && PQresultStatus(r) != PGRES_COPY_BOTH)
        rc = cairn_err_set(err, CAIRN_E_PROTOCOL, "%s: START_REPLICATION did not start a stream",
                           w->p->where);
    PQclear(r);
    uint64_t end = 0;
    int known = 0;
    while (rc == CAIRN_OK) {
        if (!known && __atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
            pthread_mutex_lock(&w->mu);
            end = w->end;
            pthread_mutex_unlock(&w->mu);
            known = 1;
            if (end == 0)
                return cairn_err_set(err, CAIRN_E_CANCELLED, "%s: WAL stream abandoned",
                                     w->p->where);
        }
        if (known && w->pos >= end)
            return CAIRN_OK;
        char *m = NULL;
        int len = 0;
        /* Once the end is known, wait for the WAL up to it without waking again. */
        rc = pg_copy_next(w->p, w->c, "WAL stream", known ? NULL : &w->stop, &m, &len, err);
        if (rc == CAIRN_OK && m == NULL &&
            (known || !__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE))) {
            char at[24];
            pg_lsn_format(w->pos, at);
            rc = cairn_err_set(err, CAIRN_E_NETWORK,
                               "%s: the WAL stream ended at %s, before the backup's end (a "
                               "timeline switch or a server shutdown)",
                               w->p->where, at);
        }
        if (rc == CAIRN_OK && m != NULL)
            rc = wal_message(w, m, len, err);
        PQfreemem(m);
    }
    return rc;
}

/* Pad the last segment, end the tar, commit the file. */
static int wal_close(struct pg_wal *w, struct cairn_err *err)
{
    static const uint8_t zeros[8192];
    int rc = CAIRN_OK;
    while (rc == CAIRN_OK && w->member) {
        uint64_t room = w->seg_size - w->pos % w->seg_size;
        size_t k = room < sizeof(zeros) ? (size_t)room : sizeof(zeros);
        rc = tar_writer_data(&w->tw, zeros, k, err);
        w->pos += k;
        if (rc == CAIRN_OK && w->pos % w->seg_size == 0) {
            rc = tar_writer_end(&w->tw, err);
            w->member = 0;
        }
    }
    if (rc == CAIRN_OK)
        rc = tar_writer_finish(&w->tw, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(w->w, err);
    return rc;
}

static void *wal_main(void *arg)
{
    struct pg_wal *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->go && !w->stop)
        pthread_cond_wait(&w->cv, &w->mu);
    int go = w->go;
    pthread_mutex_unlock(&w->mu);
    if (!go) {
        w->rc = cairn_err_set(&w->err, CAIRN_E_CANCELLED, "%s: WAL stream abandoned", w->p->where);
        __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
        return NULL;
    }
    w->rc = wal_stream(w, &w->err);
    if (w->rc == CAIRN_OK)
        w->rc = wal_close(w, &w->err);
    PQfinish(w->c); /* the temporary slot goes with it */
    w->c = NULL;
    __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void wal_free(struct pg_wal *w)
{
    if (w->c != NULL)
        PQfinish(w->c);
    cairn_writer_free(w->w); /* unclosed after a failure: discarded */
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}

int pg_wal_open(const struct pg_params *p, struct cairn_backup *b, uint64_t seg_size,
                struct pg_wal **out, struct cairn_err *err)
{
    *out = NULL;
    struct pg_wal *w = xcalloc(1, sizeof(*w));
    w->p = p;
    w->seg_size = seg_size;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    int rc = pg_connect(p, &w->c, err);
    PGresult *r = NULL;
    if (rc == CAIRN_OK) {
        char cmd[128];
        snprintf(w->slot, sizeof(w->slot), "cairn_%d", PQbackendPID(w->c));
        snprintf(cmd, sizeof(cmd),
                 "CREATE_REPLICATION_SLOT \"%s\" TEMPORARY PHYSICAL (RESERVE_WAL)", w->slot);
        rc = pg_command(p, w->c, cmd, &r, err);
        PQclear(r);
    }
    struct cairn_file_opts fo = {.compression = CAIRN_COMPRESS_AUTO, .level = 1};
    if (rc == CAIRN_OK)
        rc = cairn_backup_add_file_opts(b, PG_WAL_TAR, -1, &fo, &w->w, err);
    if (rc == CAIRN_OK) {
        tar_writer_init(&w->tw, w->w, (int64_t)(now_ms() / 1000));
        if (pthread_create(&w->th, NULL, wal_main, w) != 0)
            rc = cairn_err_set(err, CAIRN_E_INTERNAL, "%s: cannot start the WAL thread", p->where);
        else
            w->thread = 1;
    }
    if (rc != CAIRN_OK) {
        wal_free(w);
        return rc;
    }
    *out = w;
    return CAIRN_OK;
}

int pg_wal_start(struct pg_wal *w, uint64_t start, uint32_t tli, struct cairn_err *err)
{
    (void)err;
    pthread_mutex_lock(&w->mu);
    w->start = start;
    w->tli = tli;
    w->go = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return CAIRN_OK;
}

int pg_wal_failed(const struct pg_wal *w)
{
    return __atomic_load_n(&w->done, __ATOMIC_ACQUIRE) && w->rc != CAIRN_OK;
}

int pg_wal_finish(struct pg_wal *w, uint64_t end, struct cairn_err *err)
{
    pthread_mutex_lock(&w->mu);
    w->end = end;
    __atomic_store_n(&w->stop, 1, __ATOMIC_RELEASE);
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    if (w->thread)
        pthread_join(w->th, NULL);
    int rc = w->rc;
    if (rc != CAIRN_OK)
        cairn_err_copy(err, &w->err);
    wal_free(w);
    return rc;
}
