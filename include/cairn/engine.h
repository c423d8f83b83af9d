/* cairn: the engine, one entry point for taking and one for restoring InfluxDB-style backups.
 *
 * Both `cairn backup` / `cairn restore` and the cairnd scheduler call these two functions, so
 * a scheduled backup is byte for byte what the command line takes. The engine sits above the
 * snapshot protocol (cairn/influx.h) and backup storage (cairn/storage.h) and uses only them.
 *
 * Ownership: neither function is given a writer or reader. Each opens the storage,
 * connections, files and streams it needs and closes and frees them before it returns; what
 * the options point to (strings, tls, cancel, progress_ctx) is only borrowed for the call.
 * Inside, a stream goes only to calls that borrow it (cairn_backup_get_stream,
 * cairn_influx_shard_backup, cairn_influx_shard_upload write or read it, never close or free
 * it); the progress stage put over a stream the engine opened takes it, as every stage does.
 * err may be NULL: the code returned is the same.
 *
 * Names: a backup without opts->name gets the default name of cairn_storage_start_auto
 * ("YYYYMMDDTHHMMSS.mmmZ"); backup names made from a time have one home,
 * cairn_backup_name_make (cairn/storage.h).
 *
 * A backup's source is a URL whose scheme names a source driver (cairn/source.h: influxdb://,
 * etcd://, redis://, exec:..., docs/SOURCES.md) or a local file/directory path ("file:///path"
 * or a path). A source without a driver's scheme is a local path when it starts with '/' or
 * '.', or names an existing file; anything else is HOST:PORT of a snapshot service, opened as
 * influxdb://HOST:PORT (cairnd serve or a real influxd 1.5+ speaking the 1.6 snapshotter
 * protocol; IPv6 as [addr]:port). Every source but a local path goes through its driver's
 * vtable; the InfluxDB driver is the engine's own (src/engine/influxdb), registered by the
 * first call of either entry point. A driver's backup is restored by the driver its kind
 * names: into_dir for the files the service loads, or target, a URL of that driver.
 *
 * Service backups store, in a new backup of kind "influxdb":
 *   meta           the raw metastore response (0x59590101 envelope: meta.Data + node JSON)
 *   s<ID>.tar      one ustar stream per shard, as the service sent it
 * and the MANIFEST's meta records the source, the since time, the databases, retention
 * policies and shard ids (see docs/PROTOCOL.md). Its scope records the filters,
 * {"db": NAME|null, "rp": NAME|null} (docs/STORAGE.md). With has_since the backup is
 * incremental: only files modified after `since` are in the shard tars and the MANIFEST records
 * as parent the newest complete backup (by creation time) in the same storage of the same kind
 * and source (as given) whose scope covers this one's (the same, or all databases, or the same
 * database with every retention policy). With none the backup fails with CAIRN_E_NOTFOUND, or, with
 * full_if_no_parent, is taken in full.
 */
#ifndef CAIRN_ENGINE_H
#define CAIRN_ENGINE_H

#include <stdint.h>

#include "cairn/common.h"
#include "cairn/err.h"

#ifdef __cplusplus
extern "C" {
#endif

struct cairn_influx_tls_opts; /* cairn/influx.h */

#define CAIRN_ENGINE_NAME_MAX 128

/* Progress report; called from worker threads, possibly concurrently (serialise inside). */
struct cairn_engine_progress {
    const char *phase;    /* "meta", "shard", "verify", "apply" */
    const char *item;     /* e.g. "mydb/autogen/3"; may be NULL */
    uint64_t bytes;       /* bytes moved since the previous call (a delta) */
    unsigned items_done;  /* shards (or files) finished so far */
    unsigned items_total; /* 0 when not known yet */
    uint64_t bytes_total; /* bytes the whole run moves; 0 when not known */
};
typedef void (*cairn_engine_progress_fn)(void *ctx, const struct cairn_engine_progress *p);

struct cairn_repo_secret;

struct cairn_engine_backup_opts {
    const char *source;      /* "HOST:PORT" or a local path (see above) */
    const char *storage_url; /* file:///dir, s3://bucket/prefix, ... */
    const char *name;        /* NULL: the UTC start time "YYYYMMDDTHHMMSS.mmmZ", unique in the
                              * location (cairn_storage_start_auto); else at most 127 chars */
    const char *db;          /* NULL: every database except _internal */
    const char *rp;          /* NULL: every retention policy (needs db) */
    int has_since;           /* incremental: only files modified after since */
    int64_t since_sec;       /* Unix seconds */
    long since_nsec;
    /* A time-bounded backup of an InfluxDB source: only the points whose time is in [start,
     * end] (shard exports, request 5, each TSM file cut to exactly those points); without
     * has_start (has_end) the window is open on that side. Not with has_since. The scope
     * records the window, so such a backup is never the parent of an incremental one. */
    int has_start, has_end;
    int64_t start_sec, end_sec; /* Unix seconds */
    long start_nsec, end_nsec;
    /* has_since and no parent of the same source and scope: take a full backup, not fail */
    int full_if_no_parent;
    unsigned parallelism;              /* concurrent shard downloads; 0 = 4 */
    int connect_timeout_ms;            /* 0 = 10000 */
    int io_timeout_ms;                 /* idle read/write timeout per connection; 0 = 60000 */
    cairn_engine_progress_fn progress; /* may be NULL */
    void *progress_ctx;
    const volatile int *cancel; /* may be NULL; nonzero stops with CAIRN_E_CANCELLED */
    /* Wait this long for a conflicting storage lock (a prune, an rm) to go; 0: see
     * cairn_storage_set_lock_wait. */
    int64_t lock_wait_ms;
    const struct cairn_influx_tls_opts *tls; /* a HOST:PORT source over TLS; NULL: plain */
    const char *password_file; /* a source driver's secret kept in a file (cairn/source.h) */
    int64_t source_timeout_ms; /* a source driver's whole snapshot; 0: no limit */
    /* The storage's repository key (cairn/repo.h, cairn_storage_set_secret); NULL: none. */
    const struct cairn_repo_secret *secret;
    /* Checked right before the MANIFEST is written (cairn_storage_set_commit_check); NULL:
     * none. */
    int (*commit_check)(void *ctx, struct cairn_err *err);
    void *commit_check_ctx;
    uint64_t rate_limit; /* upload bytes per second (cairn_storage_set_rate_limit); 0: off */
    /* A local path into a deduplicating repository: read every file, even those unchanged
     * since the parent backup (struct cairn_path_opts force_read). */
    int force_read;
};

struct cairn_engine_backup_result {
    char name[CAIRN_ENGINE_NAME_MAX];
    char parent[CAIRN_ENGINE_NAME_MAX]; /* "" for a full backup */
    unsigned databases;
    unsigned shards;
    uint64_t files; /* files stored, meta included */
    uint64_t bytes; /* logical bytes stored (before compression) */
    double seconds;
    /* Local paths: files gone before they were read (skipped), and changed while read. */
    uint64_t vanished, changed;
    /* Local paths: files not read because unchanged since the parent backup, and their bytes
     * (struct cairn_path_stats). */
    uint64_t unchanged_files, unchanged_bytes;
    int full_no_parent; /* has_since, no parent, full_if_no_parent: a full backup was taken */
};

/* Take one backup. On failure nothing that looks complete is left behind (no MANIFEST). */
CAIRN_API int cairn_engine_backup(const struct cairn_engine_backup_opts *opts,
                                  struct cairn_engine_backup_result *res, struct cairn_err *err);

struct cairn_engine_restore_opts {
    const char *storage_url;
    const char *name; /* backup to restore; incremental chains are followed to the base */
    /* Exactly one target: */
    const char *target;     /* online: "HOST:PORT" of cairnd serve or influxd (requests 6, 7) */
    const char *into_dir;   /* offline: legacy `influxd backup` layout for `influxd restore` */
    const char *db;         /* source database (NULL: all; needed for newdb/rp) */
    const char *newdb;      /* online only: restore db under this name */
    const char *rp;         /* online only: single retention policy ... */
    const char *newrp;      /* ... renamed to this (NULL: same name) */
    int connect_timeout_ms; /* 0 = 10000 */
    int io_timeout_ms;      /* 0 = 60000 */
    cairn_engine_progress_fn progress;
    void *progress_ctx;
    const volatile int *cancel;
    int force; /* a local-path backup into a non-empty into_dir, replacing same-named files */
    const struct cairn_influx_tls_opts *tls; /* an online target over TLS; NULL: plain */
    const char *password_file;               /* a source driver's secret kept in a file */
    int64_t source_timeout_ms;               /* a source driver's whole restore; 0: none */
    const struct cairn_repo_secret *secret;  /* the storage's repository key; NULL: none */
    /* A local-path backup only (struct cairn_path_opts): NULL-terminated pattern lists, owners
     * by number, POSIX ACLs. */
    const char *const *include;
    const char *const *exclude;
    int numeric_owner;
    int acls;
};

struct cairn_engine_restore_result {
    unsigned backups; /* backups in the applied chain (1 for a full backup) */
    unsigned databases;
    unsigned shards; /* shard streams applied */
    uint64_t bytes;
    double seconds;
};

/* Check every link of the chain (each parent exists, is complete and has its child's kind,
 * source and covers its scope: CAIRN_E_NOTFOUND / CAIRN_E_CORRUPT otherwise, nothing applied),
 * verify the whole chain (every file's size and SHA-256), then apply it. Offline restores write
 * into a temporary directory inside into_dir and move files into place only when all are
 * written; nothing is applied when verification fails. A backup of a local path is restored
 * into a temporary directory beside into_dir and renamed into place once every file verified
 * (cairn_backup_restore_path): on failure or cancellation into_dir is as it was. */
CAIRN_API int cairn_engine_restore(const struct cairn_engine_restore_opts *opts,
                                   struct cairn_engine_restore_result *res, struct cairn_err *err);

#ifdef __cplusplus
}
#endif

#endif
