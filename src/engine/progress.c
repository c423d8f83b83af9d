/* The engine's progress reports and its cancel check, and the writer stage that does both for
 * every byte a backup or restore moves. */
#include <limits.h>
#include <stdlib.h>

#include "common/util.h"
#include "internal.h"

void engine_progress_report(struct engine_progress *p, const char *phase, const char *item,
                            uint64_t bytes, int finished)
{
    if (p->fn == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    if (finished)
        p->done++;
    struct cairn_engine_progress ev = {phase, item, bytes, p->done, p->total, p->bytes_total};
    p->fn(p->ctx, &ev);
    pthread_mutex_unlock(&p->mu);
}

void engine_path_progress(void *arg, uint64_t bytes)
{
    engine_progress_report(arg, "file", NULL, bytes, 0);
}

void engine_path_plan(void *arg, uint64_t files, uint64_t bytes)
{
    struct engine_progress *p = arg;
    pthread_mutex_lock(&p->mu);
    p->total = files > UINT_MAX ? UINT_MAX : (unsigned)files;
    p->bytes_total = bytes;
    pthread_mutex_unlock(&p->mu);
    engine_progress_report(p, "file", NULL, 0, 0);
}

void engine_path_file_done(void *arg)
{
    engine_progress_report(arg, "file", NULL, 0, 1);
}

struct progress_writer {
    struct cairn_writer base;
    struct engine_progress *p;
    const char *phase, *item;
};

static int progress_write(struct cairn_writer *w, const void *buf, size_t len,
                          struct cairn_err *err)
{
    struct progress_writer *pw = (struct progress_writer *)w;
    if (cancel_requested(pw->p->cancel))
        return cairn_err_set(err, CAIRN_E_CANCELLED, "cancelled");
    int rc = cairn_writer_write(w->next, buf, len, err);
    if (rc == CAIRN_OK)
        engine_progress_report(pw->p, pw->phase, pw->item, len, 0);
    return rc;
}

static const struct cairn_writer_ops progress_writer_ops = {"progress", progress_write, NULL, NULL};

struct cairn_writer *engine_progress_writer_new(struct cairn_writer *next,
                                                struct engine_progress *p, const char *phase,
                                                const char *item)
{
    struct progress_writer *pw = xcalloc(1, sizeof(*pw));
    cairn_writer_init(&pw->base, &progress_writer_ops, next);
    pw->p = p;
    pw->phase = phase;
    pw->item = item;
    return &pw->base;
}
