/* cairn: snapshot sources, selected by URL (the twin of the storage driver registry).
 *
 * A source driver takes an application-consistent snapshot of one service and streams it into
 * a started backup handle (storage.h), and restores a backup to the service or into a
 * directory. The engine (engine.h) opens the storage, names and starts the backup, calls the
 * driver, and ends the backup only when the driver succeeded (the MANIFEST lands last), so a
 * failed snapshot never looks complete.
 *
 * Credentials: a URL's user-info password (user:password@) is read by the driver at open and
 * replaced by "***" in the URL cairn_source_url returns, which is the only form that reaches
 * logs, errors, metrics and MANIFESTs. Drivers never put a secret in an error message.
 *
 * Threads: a source handle is used by one thread at a time; the registry is thread-safe.
 * Signals: sources that write to pipes or sockets expect SIGPIPE to be ignored, as the cairn
 * programs do (and as libcurl asks of its callers).
 */
#ifndef CAIRN_SOURCE_H
#define CAIRN_SOURCE_H

#include <stdint.h>

#include "cairn/common.h"
#include "cairn/err.h"
#include "cairn/storage.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What to take or restore of a source that holds databases (influxdb://). A driver without
 * CAIRN_SOURCE_SELECT in its flags is never given one with a field set: the engine refuses
 * such a backup or restore first. Read when the backup or restore runs (the engine may turn
 * an incremental backup into a full one after the open). */
struct cairn_source_select {
    const char *db; /* only this database (NULL: every one but _internal) */
    const char *rp; /* only this retention policy of db (NULL: every one) */
    /* Backup: incremental, only shard files modified after since. */
    int has_since;
    int64_t since_sec;
    long since_nsec;
    /* Backup: only the points with start <= time <= end; a side without has_ is open. */
    int has_start, has_end;
    int64_t start_sec, end_sec;
    long start_nsec, end_nsec;
    /* Restore to the service: db (and rp) under these names. */
    const char *newdb, *newrp;
};

/* Progress by item, for drivers that move several (InfluxDB: the metastore, then shards):
 * bytes moved since the previous call, in phase ("meta", "shard", "apply") and item (may be
 * NULL); finished: the item is done; total_add: more items now known to come. */
struct cairn_source_item {
    const char *phase, *item;
    uint64_t bytes;
    int finished;
    unsigned total_add;
};

/* Options common to all sources; zero-initialise and set what you need. Strings are
 * borrowed for the handle's life. */
struct cairn_source_opts {
    const volatile int *cancel; /* nonzero: stop soon with CAIRN_E_CANCELLED */
    int64_t timeout_ms;    /* the whole snapshot or restore, for every driver (the handle cancels
                            * it and fails with CAIRN_E_TIMEOUT); 0: none */
    const char *ca_file;   /* TLS: CA bundle for the server's certificate */
    const char *cert_file; /* TLS: client certificate (etcds://) */
    const char *key_file;  /* TLS: client key */
    const char *password_file;   /* a secret kept in a file (first line) instead of the URL */
    const char *restore_command; /* exec: the command a restore feeds the stream to */
    /* Called with the bytes taken from the source so far (monotonic). May be NULL. */
    void (*progress)(void *arg, uint64_t bytes);
    void *progress_arg;
    /* Drivers that move several items report them here instead (progress_arg too); called
     * from several threads at once. May be NULL. */
    void (*item_progress)(void *arg, const struct cairn_source_item *it);
    int tls;                     /* TLS without files (the system's CAs): --tls */
    const char *tls_server_name; /* the name the server's certificate must carry */
    int connect_timeout_ms;      /* per connection; 0: the driver's default */
    int io_timeout_ms;           /* no byte moving for this long fails; 0: the driver's
                                  * default (60 s; exec: none, a command may think quietly) */
    unsigned parallelism;        /* transfers at once where there are several; 0: default */
    const struct cairn_source_select *select; /* NULL: everything (see above) */
    /* Filled by drivers that count: databases and items (shards) taken or restored. */
    unsigned *databases, *items;
};

/* cairn_source_driver.flags */
#define CAIRN_SOURCE_SELECT 1u /* takes cairn_source_select (db, rp, since, window, newdb) */

struct cairn_source_driver {
    const char *scheme;      /* the URL scheme, "etcd" for etcd://... */
    const char *description; /* one line for --help */
    /* Parse url and remember what backup/restore need; do not connect yet. */
    int (*open)(const char *url, const struct cairn_source_opts *o, void **state,
                struct cairn_err *err);
    /* Take a snapshot into b (started, writable; borrowed): add its files and set its kind,
     * meta and scope. Return CAIRN_OK only when every byte was checked (the service's own
     * checksum where it has one). The engine ends or aborts b. */
    int (*backup)(void *state, struct cairn_backup *b, struct cairn_err *err);
    /* Restore b (read-only, verified by the reader as it streams; borrowed). into == NULL:
     * restore to the service itself; else write the files the service loads into that new
     * directory. NULL when the driver cannot restore. */
    int (*restore)(void *state, struct cairn_backup *b, const char *into, struct cairn_err *err);
    void (*free)(void *state);
    unsigned flags; /* CAIRN_SOURCE_* */
    /* Optional, for incremental backups (a select with has_since): the scope the backup
     * will record (new reference), so the engine can choose its parent, the newest
     * complete backup of the same kind (the scheme) and source whose scope covers it. */
    struct json_t *(*scope)(void *state);
    /* Optional: the source as MANIFESTs record it and parents are matched on (a string owned
     * by the state); NULL: the redacted URL. */
    const char *(*recorded)(void *state);
    /* Optional: restore a chain of backups, base first, each complete and verified, instead
     * of restore (which then sees single backups only). */
    int (*restore_chain)(void *state, struct cairn_backup *const *chain, size_t n, const char *into,
                         struct cairn_err *err);
};

/* Register a driver for "<scheme>:..." URLs. Built-ins: see cairn_source_drivers; the
 * influxdb:// driver is the engine's (it is built on cairn/influx.h, which this layer may
 * not use) and is registered by the first cairn_engine_backup or cairn_engine_restore.
 * CAIRN_E_EXISTS when the scheme is taken. The struct must outlive its use. */
CAIRN_API int cairn_source_register(const struct cairn_source_driver *drv, struct cairn_err *err);
CAIRN_API const struct cairn_source_driver *cairn_source_driver_find(const char *scheme);
/* The driver of url's scheme (RFC 3986: a letter, then letters, digits, '+', '-', '.',
 * before ':'), or NULL when url has no scheme or no driver serves it. */
CAIRN_API const struct cairn_source_driver *cairn_source_driver_for(const char *url);
/* Call fn for every registered driver (built-ins first), for --help listings. */
CAIRN_API void cairn_source_drivers(void (*fn)(void *arg, const struct cairn_source_driver *d),
                                    void *arg);

struct cairn_source;

/* Open url with the driver its scheme names. CAIRN_E_INVALID for a URL without a scheme,
 * CAIRN_E_UNSUPPORTED for an unknown scheme. o may be NULL (defaults). */
CAIRN_API int cairn_source_open(const char *url, const struct cairn_source_opts *o,
                                struct cairn_source **out, struct cairn_err *err);
/* The URL without credentials: what logs, errors and MANIFESTs show. */
CAIRN_API const char *cairn_source_url(const struct cairn_source *s);
CAIRN_API const char *cairn_source_scheme(const struct cairn_source *s);
CAIRN_API int cairn_source_backup(struct cairn_source *s, struct cairn_backup *b,
                                  struct cairn_err *err);
CAIRN_API int cairn_source_restore(struct cairn_source *s, struct cairn_backup *b, const char *into,
                                   struct cairn_err *err);
/* The driver of an open source. */
CAIRN_API const struct cairn_source_driver *cairn_source_driver_of(const struct cairn_source *s);
/* The source as MANIFESTs record it (the driver's recorded(), else cairn_source_url). */
CAIRN_API const char *cairn_source_recorded(const struct cairn_source *s);
/* The driver's scope (new reference), or NULL when it has none. */
CAIRN_API struct json_t *cairn_source_scope(struct cairn_source *s);
/* Restore a chain, base first (n == 1 through restore when the driver has no
 * restore_chain). */
CAIRN_API int cairn_source_restore_chain(struct cairn_source *s, struct cairn_backup *const *chain,
                                         size_t n, const char *into, struct cairn_err *err);
CAIRN_API void cairn_source_free(struct cairn_source *s);

/* Copy url into out (cap bytes) with any user-info's password replaced by "***" and
 * "password=" / "token=" query values likewise. Returns CAIRN_E_INVALID when it does not fit. */
CAIRN_API int cairn_source_redact(const char *url, char *out, size_t cap);

#ifdef __cplusplus
}
#endif

#endif
