/* What the engine's backup and restore share: the cancel flag, the progress and cancel stage,
 * and the identity (kind, source, scope) of an influxdb backup. Not installed. */
#ifndef CAIRN_ENGINE_INTERNAL_H
#define CAIRN_ENGINE_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <stdint.h>

#include "cairn/engine.h"
#include "cairn/io.h"
#include "cairn/source.h"
#include "cairn/storage.h"

#define ENGINE_LOGC "backup"   /* the log component of backups and restores */
#define ENGINE_KIND "influxdb" /* the kind of a snapshot-service backup (old scopes) */

/* 1 when the flag (may be NULL) asks to stop. It is set from signal handlers and other
 * threads, so it is read atomically. */

/* The caller's progress callback, serialised, with the counts it reports. Initialise mu with
 * PTHREAD_MUTEX_INITIALIZER. */
struct engine_progress {
    pthread_mutex_t mu;
    cairn_engine_progress_fn fn; /* may be NULL: nothing is reported */
    void *ctx;
    const volatile int *cancel;
    unsigned done, total;
    uint64_t bytes_total; /* 0: not known */
};

/* Report bytes moved (a delta) in phase/item; finished counts one more item done. */
void engine_progress_report(struct engine_progress *p, const char *phase, const char *item,
                            uint64_t bytes, int finished);
/* A stage over next that reports the bytes written through it and fails with
 * CAIRN_E_CANCELLED once p's cancel flag is set. Like every stage it takes next; phase and
 * item must outlive it. */
struct cairn_writer *engine_progress_writer_new(struct cairn_writer *next,
                                                struct engine_progress *p, const char *phase,
                                                const char *item);
/* cairn_path_opts.progress for a struct engine_progress (arg): phase "file". */
void engine_path_progress(void *arg, uint64_t bytes);
/* cairn_path_opts.plan and .file_done for a struct engine_progress: the totals, a file done. */
void engine_path_plan(void *arg, uint64_t files, uint64_t bytes);
void engine_path_file_done(void *arg);

/* The part of the source an influxdb backup holds: {"db": NAME|null, "rp": NAME|null}, null
 * meaning every one (every database but _internal). New reference. */
json_t *engine_scope_new(const char *db, const char *rp);
/* b's scope, new reference; MANIFESTs older than scopes give it from their meta. NULL: none
 * known. */
json_t *engine_scope_of(struct cairn_backup *b);
/* 1 when a backup of scope parent holds everything a backup of scope child does. */
int engine_scope_covers(const json_t *parent, const json_t *child);
/* "influxdb backup of HOST:PORT (database 'x', all retention policies)", for messages;
 * the caller frees it. */
char *engine_identity_text(const char *kind, const char *source, const json_t *scope);

/* Register the engine's source drivers (influxdb://) once; every entry point calls it. */
void engine_sources_init(void);
/* "file:///path" as /path (in buf), else source. */
const char *engine_source_plain(const char *source, char *buf, size_t cap);
/* The URL a source is opened with: a bare HOST:PORT (no driver's scheme, no "://") is an
 * InfluxDB snapshot service, influxdb://HOST:PORT (in buf); else source. */
const char *engine_source_url(const char *source, char *buf, size_t cap);
/* res->files and res->bytes of the complete backup res->name (the cancel flag is dropped
 * first: the backup is done). */
int engine_backup_summary(struct cairn_storage *st, struct cairn_engine_backup_result *res,
                          struct cairn_err *err);
/* With sel->has_since, find the parent (res->parent): the newest complete backup of kind and
 * source whose scope covers scope; with none and full_if_no_parent, sel becomes a full
 * backup (res->full_no_parent), else CAIRN_E_NOTFOUND. */
int engine_choose_parent(struct cairn_storage *st, const char *kind, const char *source,
                         const json_t *scope, int full_if_no_parent,
                         struct cairn_source_select *sel, struct cairn_engine_backup_result *res,
                         struct cairn_err *err);
/* A backup through the source driver of o->source (a bare HOST:PORT: influxdb://) into st. */
int engine_backup_source(struct cairn_storage *st, const struct cairn_engine_backup_opts *o,
                         struct engine_progress *prog, struct cairn_engine_backup_result *res,
                         struct cairn_err *err);
/* Restore a checked chain (base first) into o->into_dir or to o->target through the driver
 * of its kind or of the target. */
int engine_restore_source(struct cairn_backup *const *chain, size_t n,
                          const struct cairn_engine_restore_opts *o, struct engine_progress *prog,
                          struct cairn_engine_restore_result *res, struct cairn_err *err);

#endif
