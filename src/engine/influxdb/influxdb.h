/* Private to the influxdb:// source driver: its state and what backup.c and restore.c
 * share. The driver lives in the engine, the one layer that may use both the source registry
 * and the InfluxDB protocol module (docs/ARCHITECTURE.md: influx and source are peers that
 * include none of each other); engine_sources_init registers it. */
#ifndef CAIRN_ENGINE_INFLUXDB_H
#define CAIRN_ENGINE_INFLUXDB_H

#include <jansson.h>

#include "cairn/influx.h"
#include "cairn/io.h"
#include "cairn/source.h"

#define INFLUXDB_KIND      "influxdb" /* the kind of its backups */
#define INFLUXDB_META_FILE "meta"     /* the metastore envelope */

struct influxdb_src {
    char *addr; /* HOST:PORT, what the MANIFEST records */
    struct cairn_source_opts o;
    struct cairn_tls *tls; /* NULL: plain */
    struct cairn_influx_client client;
};

/* The options' select, or an empty one. */
const struct cairn_source_select *influxdb_select(const struct influxdb_src *s);
/* 1 when the options' cancel flag (may be NULL) is set (read atomically). */
int influxdb_cancelled(const struct influxdb_src *s);
/* Report an item's progress through the options' item_progress (when set). */
void influxdb_report(const struct influxdb_src *s, const char *phase, const char *item,
                     uint64_t bytes, int finished, unsigned total_add);
/* A stage over next (taken) reporting the bytes written in phase/item and failing with
 * CAIRN_E_CANCELLED once the cancel flag is set; phase and item must outlive it. */
struct cairn_writer *influxdb_progress_writer(const struct influxdb_src *s,
                                              struct cairn_writer *next, const char *phase,
                                              const char *item);

extern const struct cairn_source_driver engine_influxdb_driver;

int influxdb_backup(void *state, struct cairn_backup *b, struct cairn_err *err);
int influxdb_restore_chain(void *state, struct cairn_backup *const *chain, size_t n,
                           const char *into, struct cairn_err *err);

#endif
