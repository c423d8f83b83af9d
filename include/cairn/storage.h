/* cairn: backup storage (Vitess backupstorage shape, pgBackRest-style driver vtable).
 *
 * Two levels:
 *   struct cairn_storage  one location (a URL): list / start / open / remove backups. Reusable
 *                         after cairn_storage_disconnect() (connections are re-created lazily).
 *   struct cairn_backup   one backup (a "directory" of files plus a MANIFEST). Read-write
 *                         handles come from cairn_storage_start(); read-only handles from
 *                         cairn_storage_open_backup(). Each kind refuses the other's calls.
 *
 * Completeness rule: a backup is complete exactly when its MANIFEST exists and parses. The
 * MANIFEST is written last, atomically, by cairn_backup_end(), and only when every file was
 * stored without error. A crash or failure at any point leaves at worst an *incomplete*
 * backup (listed as such, removed by prune), never one that looks complete.
 *
 * URLs:
 *   file:///abs/path           or a plain absolute path "/abs/path"
 *   s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1&path_style=1
 *      other S3 options: part_size=8M (multipart part floor), parts=4 (parts in flight per
 *      file), retries=5 (attempts per request), insecure=1 (skip TLS verification).
 *      Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, region from
 *      the URL or AWS_REGION / AWS_DEFAULT_REGION (default us-east-1); otherwise the
 *      [AWS_PROFILE or default] section of AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials.
 *
 * Names: backup names and file names are single safe path components: 1..200 characters of
 * [A-Za-z0-9._+@=-], not starting with '.'; file names "MANIFEST*" are reserved. Names
 * sort by time when they start with a timestamp (see cairn_backup_name_now()).
 *
 * Threads: one cairn_backup may be used from many threads at once for add_file / put_stream
 * and for reading; a cairn_storage may be shared too. Every writer returned by add_file must be
 * closed (commit) or freed (discard); cairn_backup_end() waits for all of them.
 *
 * See docs/STORAGE.md for the MANIFEST format and the guarantees of each driver.
 */
#ifndef CAIRN_STORAGE_H
#define CAIRN_STORAGE_H

#include <stdint.h>

#include "cairn/common.h"
#include "cairn/err.h"
#include "cairn/io.h"

#ifdef __cplusplus
extern "C" {
#endif

struct json_t; /* jansson */

struct cairn_storage;
struct cairn_backup;

#define CAIRN_MANIFEST_NAME    "MANIFEST"
#define CAIRN_MANIFEST_VERSION 1
#define CAIRN_NAME_MAX         200
#define CAIRN_SEAL_KEY_LEN     32

/* ---- drivers ----
 * A driver stores opaque files under <location>/<backup>/<file>. It knows nothing of
 * MANIFESTs, statuses or read-only handles: the generic layer adds those, and says what a
 * write needs through write options, so a driver never looks at a name to decide how to
 * store it. All names passed in were validated with cairn_name_valid(). */

/* Write options for create (flags, or'ed). Every committed file is absent or complete to
 * readers of a live writer; these ask for more:
 *   ATOMIC   absent or complete even when the writing process dies during the commit, on
 *            every server (the MANIFEST header, which decides completeness). S3: uploaded
 *            to a temporary key and published by a server-side copy. A driver without
 *            CAIRN_STORAGE_FEATURE_ATOMIC_WRITE does its best.
 *   SYNC     durable once cairn_writer_close returns: it survives a machine crash (data
 *            files, the MANIFEST and its parts). Without it a driver may skip flushes (lock
 *            objects: a lock means nothing after a machine crash); it may always do more.
 *   REPLACE  an existing file of that name is replaced; without it CAIRN_E_EXISTS where
 *            the driver can tell (at commit at the latest; S3 cannot and always replaces).
 * File driver: temp file + rename always; fsync of file and directory unless the write is
 * REPLACE without SYNC (then buffered in memory, at most 4 KiB, and renamed over). */
#define CAIRN_STORAGE_WRITE_ATOMIC  0x1u
#define CAIRN_STORAGE_WRITE_SYNC    0x2u
#define CAIRN_STORAGE_WRITE_REPLACE 0x4u

struct cairn_storage_write_opts {
    unsigned flags; /* CAIRN_STORAGE_WRITE_* */
};

/* Driver features (the features field). */
#define CAIRN_STORAGE_FEATURE_ATOMIC_WRITE 0x1u /* create honours CAIRN_STORAGE_WRITE_ATOMIC */

struct cairn_storage_driver {
    const char *name; /* URL scheme, e.g. "file", "s3" */
    /* Parse url (scheme included) and create the driver state. No I/O needed yet. */
    int (*open)(const char *url, void **state, struct cairn_err *err);
    /* Call fn(arg, name) for every backup (any order; duplicates allowed). A missing location
     * is an empty list, not an error. fn returning non-zero stops the listing with that rc. */
    int (*list)(void *state, int (*fn)(void *arg, const char *name), void *arg,
                struct cairn_err *err);
    /* Reserve a new backup; CAIRN_E_EXISTS when it already exists. */
    int (*start)(void *state, const char *backup, struct cairn_err *err);
    /* Delete everything of a backup, in any order: the generic layer has deleted its MANIFEST
     * first (with remove_file). CAIRN_E_NOTFOUND when nothing exists. */
    int (*remove)(void *state, const char *backup, struct cairn_err *err);
    /* Writer for one new file. cairn_writer_close() commits it (the file is either absent or
     * complete to readers; durable with SYNC); freeing it unclosed discards it. size_hint is the
     * expected size or -1 when unknown (only used for sizing, e.g. S3 parts). opts (NULL:
     * no flags) says what else the write needs (see CAIRN_STORAGE_WRITE_*). Must be callable
     * from many threads at once. CAIRN_E_EXISTS if the file exists and opts has no REPLACE
     * (drivers may only detect this at commit). */
    int (*create)(void *state, const char *backup, const char *file, int64_t size_hint,
                  const struct cairn_storage_write_opts *opts, struct cairn_writer **w,
                  struct cairn_err *err);
    /* Reader over the stored bytes; CAIRN_E_NOTFOUND when absent. */
    int (*read)(void *state, const char *backup, const char *file, struct cairn_reader **r,
                struct cairn_err *err);
    /* Drop connections, sessions and cached credentials (cairn_storage_disconnect); the state
     * must stay usable and re-create them when next needed. May be NULL. */
    void (*disconnect)(void *state);
    void (*free)(void *state);
    /* cairn_storage_set_cancel: transfers in progress (reads and writes of file data) stop
     * with CAIRN_E_CANCELLED soon after *cancel becomes nonzero; removals are never cut
     * short. May be NULL (then only the generic checks between reads apply). */
    void (*set_cancel)(void *state, const volatile int *cancel);
    /* Lock objects (see "locks" below) live as files of the pseudo-backup CAIRN_LOCK_DIR,
     * which is never a valid backup name, so it is never listed as a backup. These two are
     * optional: a driver without them has no locks (every lock call succeeds without one),
     * and without remove_file a backup's MANIFEST is not removed before the rest (so an
     * interrupted remove may leave a backup that lists as complete with files missing).
     * Call fn(arg, file) for every file of backup; a missing backup is an empty list, a
     * missing location CAIRN_E_NOTFOUND. */
    int (*list_files)(void *state, const char *backup, int (*fn)(void *arg, const char *file),
                      void *arg, struct cairn_err *err);
    /* Delete one file; CAIRN_E_NOTFOUND when absent (drivers may not know: then CAIRN_OK). */
    int (*remove_file)(void *state, const char *backup, const char *file, struct cairn_err *err);
    /* CAIRN_STORAGE_FEATURE_* the driver provides. Without ATOMIC_WRITE a crash while a
     * backup ends may leave a MANIFEST cut short (listed as corrupt, not incomplete);
     * cairn_storage_register warns about it. */
    unsigned features;
    /* Read exactly len bytes at offset off of a file into buf (the chunk store reads one
     * chunk of a pack). CAIRN_E_NOTFOUND when absent, CAIRN_E_CORRUPT when the file is
     * shorter. May be NULL: the generic layer then reads through read and skips to off. */
    int (*read_at)(void *state, const char *backup, const char *file, uint64_t off, void *buf,
                   size_t len, struct cairn_err *err);
    /* Delete what killed writers left in backup besides its files (the file driver's
     * ".<file>.tmp.*", S3's "<file>.tmp" of a PUT not yet published by its copy). Called by prune's
     * garbage collection on the chunk store's pseudo-backups, which are never removed whole, under
     * the exclusive lock (no writer runs). May be NULL. */
    int (*sweep)(void *state, const char *backup, struct cairn_err *err);
};

/* Register a driver for URLs "<name>://...". Built-ins: "file", "s3". CAIRN_E_EXISTS when the
 * name is taken. The driver struct must outlive the process' use of it. Thread-safe. */
CAIRN_API int cairn_storage_register(const struct cairn_storage_driver *drv, struct cairn_err *err);
CAIRN_API const struct cairn_storage_driver *cairn_storage_driver_find(const char *name);

/* 1 when s is a valid backup or file name (see the header comment), else 0. */
CAIRN_API int cairn_name_valid(const char *s);
/* Backup names made from a time (the one place that knows the shape):
 * "YYYYMMDDTHHMMSSZ[-tag]" (UTC seconds; the scheduler's names, one per scheduled instant) or,
 * with with_ms, "YYYYMMDDTHHMMSS.mmmZ[-tag]" (default names: several a second). Names of one
 * shape sort by time. CAIRN_E_INVALID when out is too small (never truncated) or the result
 * is not a valid name. */
CAIRN_API int cairn_backup_name_make(int64_t unix_ms, int with_ms, const char *tag, char *out,
                                     size_t cap, struct cairn_err *err);
/* 1 when name has either shape above (with a real date): *unix_ms (may be NULL) gets its time
 * and *tag (may be NULL) what follows "Z-", or "" without a tag; else 0. */
CAIRN_API int cairn_backup_name_parse(const char *name, int64_t *unix_ms, const char **tag);
/* cairn_backup_name_make(now, with_ms = 0, tag, ...): "YYYYMMDDTHHMMSSZ[-tag]". */
CAIRN_API int cairn_backup_name_now(const char *tag, char *out, size_t cap, struct cairn_err *err);

/* ---- storage ---- */

/* Open a location by URL (no network I/O yet; S3 checks the bucket with HeadBucket at first
 * use). */
CAIRN_API int cairn_storage_open(const char *url, struct cairn_storage **st, struct cairn_err *err);
/* Drop st's connections and sessions (cached credentials too): st stays usable and re-creates
 * them lazily on its next operation; cairn_storage_free destroys it. For a long-lived handle
 * between operations (cairnd between runs); not while another thread is using st. */
CAIRN_API void cairn_storage_disconnect(struct cairn_storage *st);
CAIRN_API void cairn_storage_free(struct cairn_storage *st);
CAIRN_API const char *cairn_storage_url(const struct cairn_storage *st);
/* HMAC-SHA-256 key for sealing MANIFESTs written through st and checking those read (NULL
 * clears). With a key, an unsealed or mis-sealed MANIFEST is CAIRN_E_SEAL. */
CAIRN_API void cairn_storage_set_seal_key(struct cairn_storage *st,
                                          const uint8_t key[CAIRN_SEAL_KEY_LEN]);
/* Cancel flag (NULL clears), typically set by a SIGINT handler and read atomically: once
 * nonzero, reads of stored files (get, verify, restore) and the driver's transfers stop with
 * CAIRN_E_CANCELLED. Removing a backup (rm, prune, the cleanup of a failed backup) is never
 * cut short. Set it before the operations it should stop. */
CAIRN_API void cairn_storage_set_cancel(struct cairn_storage *st, const volatile int *cancel);
/* The shared lock a backup started through st takes waits up to ms for a conflicting lock
 * (a prune, an rm) to go, instead of failing at once with CAIRN_E_LOCKED; the cancel flag
 * ends the wait. 0 (the default): $CAIRN_LOCK_WAIT_MS, else no wait. */
CAIRN_API void cairn_storage_set_lock_wait(struct cairn_storage *st, int64_t ms);
/* Called by cairn_backup_end of every backup started through st right before its MANIFEST is
 * written: an error leaves the backup incomplete (cairnd's leader checks its lease token here,
 * so a deposed leader never completes a backup). cairn_backup_abort calls it too, and removes
 * nothing when it fails (the backup of that name may be the new leader's). NULL clears. */
typedef int (*cairn_storage_commit_check_fn)(void *ctx, struct cairn_err *err);
/* Upload at most bytes_per_sec (all the files written through st together, encrypted bytes
 * as stored; lock objects are not paced); 0: unlimited, the default. A token bucket: a burst
 * of a tenth of a second's worth, then the rate. Set before writing. */
CAIRN_API void cairn_storage_set_rate_limit(struct cairn_storage *st, uint64_t bytes_per_sec);
CAIRN_API void cairn_storage_set_commit_check(struct cairn_storage *st,
                                              cairn_storage_commit_check_fn fn, void *ctx);

enum cairn_backup_status {
    CAIRN_BACKUP_COMPLETE = 0,   /* MANIFEST present and valid */
    CAIRN_BACKUP_INCOMPLETE = 1, /* no MANIFEST: in progress, failed or crashed */
    CAIRN_BACKUP_CORRUPT = 2,    /* MANIFEST unreadable, invalid or its seal does not match */
};
CAIRN_API const char *cairn_backup_status_name(enum cairn_backup_status s);

struct cairn_backup_info {
    char *name;
    enum cairn_backup_status status;
    int64_t created; /* MANIFEST creation time (unix seconds), -1 when not complete */
    uint64_t size;   /* sum of stored file sizes from the MANIFEST (0 when not complete) */
    uint64_t files;  /* number of files in the MANIFEST */
    char *kind;      /* NULL when not complete */
    char *parent;    /* NULL when none */
    int sealed;      /* MANIFEST carries an HMAC seal */
    char *error;     /* why CORRUPT (NULL otherwise) */
    char *source;    /* MANIFEST source ("" when unset; NULL when not complete) */
    char *scope;     /* MANIFEST scope as compact JSON with sorted keys; NULL when not complete
                      * or not recorded (MANIFESTs written before scopes) */
    /* The files' bytes before compression and chunking (has_logical_size 0 when not complete,
     * or a split MANIFEST of a cairn before the header recorded them). */
    uint64_t logical_size;
    int has_logical_size;
    /* The files are chunk lists (MANIFEST version 3 or 4): size is then the lists' bytes,
     * and the chunks they name are shared with the location's other backups. */
    int deduplicated;
};

struct cairn_backup_list {
    size_t count;
    struct cairn_backup_info *items; /* sorted by name, ascending (oldest first) */
};

/* List every backup with its status (reads each MANIFEST; of a split one only its header,
 * so a damaged file-list part shows when the backup is opened or verified). A missing file
 * location (or S3 bucket) is CAIRN_E_NOTFOUND; an existing empty one (or an S3 prefix with
 * no object) is empty. */
CAIRN_API int cairn_storage_list(struct cairn_storage *st, struct cairn_backup_list *out,
                                 struct cairn_err *err);
CAIRN_API void cairn_backup_list_free(struct cairn_backup_list *l);

/* Start a new backup: a read-write handle. CAIRN_E_EXISTS when the name exists,
 * CAIRN_E_INVALID for an unsafe name. */
CAIRN_API int cairn_storage_start(struct cairn_storage *st, const char *name,
                                  struct cairn_backup **b, struct cairn_err *err);
/* Start a backup under a default name, "YYYYMMDDTHHMMSS.mmmZ[-tag]" for now (written to
 * name; cairn_backup_name_make with_ms): when another writer took that name, the next
 * millisecond's is tried, so two backups started in the same second never collide. */
CAIRN_API int cairn_storage_start_auto(struct cairn_storage *st, const char *tag, char *name,
                                       size_t cap, struct cairn_backup **b, struct cairn_err *err);
/* Open an existing backup read-only. A complete backup has its MANIFEST loaded (and checked
 * against the seal key); an incomplete one opens too (status INCOMPLETE, only read_file
 * works). A corrupt MANIFEST is CAIRN_E_CORRUPT (CAIRN_E_SEAL for a seal mismatch); a
 * missing backup CAIRN_E_NOTFOUND. */
CAIRN_API int cairn_storage_open_backup(struct cairn_storage *st, const char *name,
                                        struct cairn_backup **b, struct cairn_err *err);
/* Remove every file of a backup. CAIRN_E_NOTFOUND when it does not exist. */
CAIRN_API int cairn_storage_remove(struct cairn_storage *st, const char *name,
                                   struct cairn_err *err);

/* ---- backup handles ---- */

CAIRN_API const char *cairn_backup_name(const struct cairn_backup *b);
/* The URL of the storage location the backup lives in (its storage's cairn_storage_url). */
CAIRN_API const char *cairn_backup_url(const struct cairn_backup *b);
CAIRN_API int cairn_backup_read_only(const struct cairn_backup *b);
CAIRN_API enum cairn_backup_status cairn_backup_status(const struct cairn_backup *b);

/* Descriptive MANIFEST fields; read-write handles only, before cairn_backup_end().
 * kind: what the files are ("files", "influxdb", "snapshot"...), default "files".
 * source: where they came from (host:path, service URL). parent: the backup this one is
 * incremental to (NULL: full). meta: caller JSON object stored as "meta" (the handle takes
 * its own reference; put_path adds its "tree" key to it). */
CAIRN_API int cairn_backup_set_kind(struct cairn_backup *b, const char *kind,
                                    struct cairn_err *err);
CAIRN_API int cairn_backup_set_source(struct cairn_backup *b, const char *source,
                                      struct cairn_err *err);
CAIRN_API int cairn_backup_set_parent(struct cairn_backup *b, const char *parent,
                                      struct cairn_err *err);
CAIRN_API int cairn_backup_set_meta(struct cairn_backup *b, struct json_t *meta,
                                    struct cairn_err *err);
/* scope: which part of the source the backup holds, a JSON object (the handle keeps a copy;
 * NULL: none recorded). With kind and source it is the backup's identity: an incremental
 * backup's parent has the same three. Its keys are the kind's business (docs/STORAGE.md). */
CAIRN_API int cairn_backup_set_scope(struct cairn_backup *b, struct json_t *scope,
                                     struct cairn_err *err);

/* MANIFEST accessors (complete read-only handles; read-write handles see what was set). */
CAIRN_API const char *cairn_backup_kind(const struct cairn_backup *b);
CAIRN_API const char *cairn_backup_source(const struct cairn_backup *b);
CAIRN_API const char *cairn_backup_parent(const struct cairn_backup *b); /* NULL if none */
CAIRN_API int64_t cairn_backup_created(const struct cairn_backup *b);    /* unix seconds */
/* Borrowed; never NULL (an empty object when nothing was set). */
CAIRN_API struct json_t *cairn_backup_meta(const struct cairn_backup *b);
/* Borrowed; NULL when the MANIFEST records no scope (written before scopes existed). */
CAIRN_API struct json_t *cairn_backup_scope(const struct cairn_backup *b);

struct cairn_manifest_file {
    char *name;
    uint64_t size;                      /* stored bytes */
    char sha256[65];                    /* hex SHA-256 of the stored bytes */
    enum cairn_compression compression; /* NONE or ZSTD */
    uint64_t logical_size;              /* bytes before compression */
    char logical_sha256[65];
};
CAIRN_API size_t cairn_backup_file_count(const struct cairn_backup *b);
/* The sum of the stored sizes of a complete backup's files, from the MANIFEST header: a split
 * MANIFEST's file list is not loaded for it (the total of a progress display). 0 for a
 * read-write handle. */
CAIRN_API uint64_t cairn_backup_stored_size(const struct cairn_backup *b);
CAIRN_API const struct cairn_manifest_file *cairn_backup_file_at(const struct cairn_backup *b,
                                                                 size_t i);
CAIRN_API const struct cairn_manifest_file *cairn_backup_file_find(const struct cairn_backup *b,
                                                                   const char *name);

/* Options of a stored file. Zero-initialised means: no compression. */
struct cairn_file_opts {
    /* CAIRN_COMPRESS_NONE, CAIRN_COMPRESS_ZSTD, or CAIRN_COMPRESS_AUTO: zstd only when level 1
     * saves at least 1/8 on a sample of the first 256 KiB written (ZFS's rule per block), so
     * random, encrypted and already-compressed data (TSM: 3 %) is stored as is, with one hash
     * and no codec. The MANIFEST records the choice. */
    enum cairn_compression compression;
    int level;    /* zstd level, 0 = 3 */
    int threads;  /* zstd worker threads, 0 = 1 (none) */
    int pipeline; /* compress, hash and store on a helper thread while the caller reads and
                   * hashes the logical bytes (cairn_pipe_writer_new): for large files */
    /* The logical bytes' SHA-256 so far can be read while writing (cairn_backup_file_sha256),
     * so a caller checking a SHA-256 of its own over the same bytes (etcd's trailer) does not
     * hash them a second time. */
    int share_sha256;
};

/* Add a file: returns a writer taking the file's (logical) bytes. Thread-safe. Closing the
 * writer commits the file and records its sizes and SHA-256s for the MANIFEST; its error is
 * also recorded on the handle (per file), so it is reported again by cairn_backup_end() and
 * never lost. Freeing the writer unclosed discards the file and records "not committed".
 * size_hint: expected size in bytes, -1 unknown. Read-write handles only; CAIRN_E_EXISTS
 * when the file name was already added. opts may be NULL. */
CAIRN_API int cairn_backup_add_file(struct cairn_backup *b, const char *file, int64_t size_hint,
                                    struct cairn_writer **w, struct cairn_err *err);
CAIRN_API int cairn_backup_add_file_opts(struct cairn_backup *b, const char *file,
                                         int64_t size_hint, const struct cairn_file_opts *opts,
                                         struct cairn_writer **w, struct cairn_err *err);

/* The plain SHA-256 of the bytes written so far to w, a writer of cairn_backup_add_file_opts
 * with share_sha256 (out NULL: only whether it can be had). CAIRN_E_UNSUPPORTED for any other
 * writer and in an encrypted location (whose content hashes are keyed); the writer's own
 * error once it failed. Call it between writes, from the writing thread. */
CAIRN_API int cairn_backup_file_sha256(struct cairn_writer *w, uint8_t out[32],
                                       struct cairn_err *err);

/* Stream src (read to EOF, not freed) into the backup as file, compressing per opts and
 * hashing logical and stored bytes in the same pass. Bounded memory. Thread-safe. */
CAIRN_API int cairn_backup_put_stream(struct cairn_backup *b, const char *file,
                                      struct cairn_reader *src, int64_t size_hint,
                                      const struct cairn_file_opts *opts, struct cairn_err *err);

/* Barrier: wait until every writer from add_file was closed or freed, then return the
 * combined per-file errors ("file 'a': ...; file 'b': ..."). Only when there are none, write
 * the MANIFEST (atomically, last; sealed when the storage has a seal key). After success the
 * handle is read-only-like: further add_file calls fail. Calling it again after a failure
 * reports the same errors. */
CAIRN_API int cairn_backup_end(struct cairn_backup *b, struct cairn_err *err);
/* Remove everything written so far (waits for writers first). Read-write handles only. */
CAIRN_API int cairn_backup_abort(struct cairn_backup *b, struct cairn_err *err);
/* Frees the handle. An unfinished read-write handle is NOT aborted: its files stay as an
 * incomplete backup (call abort to remove them). Waits for outstanding writers. */
CAIRN_API void cairn_backup_free(struct cairn_backup *b);

/* Raw stored bytes of a file (read-only handles). Works on incomplete backups too. In a
 * deduplicating repository a file's stored bytes are its chunk list (docs/FORMAT.md). */
CAIRN_API int cairn_backup_read_file(struct cairn_backup *b, const char *file,
                                     struct cairn_reader **r, struct cairn_err *err);
/* The file's logical bytes: decompressed and verified against the MANIFEST while streaming
 * (stored size + SHA-256, logical size + SHA-256). A mismatch surfaces as CAIRN_E_CORRUPT
 * naming the backup and file at the latest on the read that returns EOF, so consume the
 * reader to the end before trusting the data. Complete read-only handles only. */
CAIRN_API int cairn_backup_get_file(struct cairn_backup *b, const char *file,
                                    struct cairn_reader **r, struct cairn_err *err);
/* get_file copied into dst (not closed); *copied (may be NULL) = logical bytes. */
CAIRN_API int cairn_backup_get_stream(struct cairn_backup *b, const char *file,
                                      struct cairn_writer *dst, uint64_t *copied,
                                      struct cairn_err *err);

/* Re-read every file of a complete backup and check it against the MANIFEST, `workers` files
 * at a time (0 = 4). Calls cb (may be NULL) once per file with its result, in MANIFEST order:
 * files finish out of order, and up to 4 * workers results wait for an earlier, slower one
 * (the reading pauses while that window is full, so memory does not grow with the number of
 * files). Calls are serialized but come from worker threads. Keeps going after failures and
 * returns the first failure's code (in MANIFEST order) with all failures combined in err
 * (CAIRN_E_CORRUPT for mismatches). After a cancel, the files not checked get no call. */
typedef void (*cairn_verify_cb)(void *arg, const struct cairn_manifest_file *f, int rc,
                                const struct cairn_err *file_err);
CAIRN_API int cairn_backup_verify(struct cairn_backup *b, unsigned workers, cairn_verify_cb cb,
                                  void *arg, struct cairn_err *err);

/* ---- local paths ---- */

/* What a local-path backup met in a live tree (see docs/STORAGE.md, "Live data"). */
struct cairn_path_stats {
    uint64_t vanished; /* files or directories gone between the walk and their read: skipped */
    uint64_t changed;  /* files whose size or mtime changed while read: stored as read */
    /* Restore only: entries recorded but not created as they were (a device node when not
     * root, an xattr or owner that could not be set, a hard link whose first link was not
     * restored); each one is logged as a warning. */
    uint64_t not_restored;
    /* Backup only: regular files not read because they match the parent backup's record (size,
     * mtime, ctime, inode; struct cairn_path_opts force_read), and their bytes. */
    uint64_t unchanged_files, unchanged_bytes;
};

struct cairn_path_opts {
    struct cairn_file_opts file; /* compression of every stored file */
    unsigned workers;            /* files transferred in parallel, 0 = 4 */
    /* Called from worker threads with bytes transferred since the last call (may be NULL); a
     * backup reports the bytes of files unchanged since its parent (not read) too. */
    void (*progress)(void *arg, uint64_t bytes);
    void *progress_arg;
    /* Restore only: into a non-empty directory, replacing files of the same name. */
    int force;
    /* Backup only: filled in when not NULL (also recorded in meta.tree). */
    struct cairn_path_stats *stats;
    /* May be NULL; nonzero (set by a signal handler) stops with CAIRN_E_CANCELLED: a backup
     * stops reading, a restore removes its temporary and leaves the target as it was. */
    const volatile int *cancel;
    /* Restore only: called once before the first file is written with the number of files
     * and their bytes, the totals of a progress display (progress_arg; may be NULL). */
    void (*plan)(void *arg, uint64_t files, uint64_t bytes);
    /* Called from worker threads each time one file is stored or restored (progress_arg; may
     * be NULL). */
    void (*file_done)(void *arg);
    /* Restore only: owners by uid/gid, never by user/group name (as root). */
    int numeric_owner;
    /* Restore only: POSIX ACLs (system.posix_acl_* xattrs, always recorded) are set too. */
    int acls;
    /* Restore only: fnmatch(3) patterns, NULL-terminated lists (NULL: none). An entry is
     * restored when it or a directory above it matches an include (or there is none) and
     * neither it nor a directory above it matches an exclude. A pattern without '/' matches a
     * name at any depth, one with '/' the path from the backup's root (a leading '/' is
     * optional). Directories above a restored entry are created. docs/STORAGE.md. */
    const char *const *include;
    const char *const *exclude;
    /* Backup only. In a deduplicating repository (a chunker in its config) a backup of b's
     * kind, source and scope (cairn_backup_set_*, set before put_path) has a parent: the
     * newest complete backup of the same three. A regular file whose size, mtime, ctime and
     * inode match the parent's tree line is not read again; its MANIFEST entry is the parent's
     * chunk list, referenced by the new MANIFEST too (restic's rule; docs/STORAGE.md). Set
     * force_read to read every file. Per-file storage always reads every file. */
    int force_read;
};

/* One entry of a local-path backup's tree (cairn_backup_tree_each). */
struct cairn_tree_entry {
    const char *path; /* relative to the backup's root: raw bytes (any but NUL), NUL-ended */
    const char *type; /* "dir", "file", "symlink", "hardlink", "fifo", "chr", "blk" */
    const char *link; /* symlink: its target; hardlink: the first link's path; else NULL */
    const struct json_t *json; /* the whole tree line (docs/FORMAT.md "Tree") */
};
typedef int (*cairn_tree_fn)(void *arg, const struct cairn_tree_entry *e, struct cairn_err *err);
/* Call fn for every entry of the tree of b (read-only, complete, made by put_path), in tree
 * order, each entry checked as a restore checks it; stops at fn's first error. */
CAIRN_API int cairn_backup_tree_each(struct cairn_backup *b, cairn_tree_fn fn, void *arg,
                                     struct cairn_err *err);

/* Back up a local regular file or directory tree into b (read-write). Regular files are stored
 * as files "f000000", "f000001"...; the tree (every file, directory, symlink, hard link, FIFO
 * and device node, with mode, owner, times in ns and xattrs) goes into the stored file "tree"
 * (see docs/STORAGE.md, docs/FORMAT.md). Sockets are skipped with a warning in the log and
 * listed in meta.tree.skipped. Sparse files are stored as their data extents. Files are transferred
 * in parallel. Does not end b. A live tree is no failure: a file that vanishes before it is read,
 * or is no longer a regular file when opened (never read: O_NONBLOCK, then a type check), is
 * skipped and counted (vanished); one that changes while read is stored as read and counted
 * (changed). */
CAIRN_API int cairn_backup_put_path(struct cairn_backup *b, const char *path,
                                    const struct cairn_path_opts *opts, struct cairn_err *err);
/* Restore a backup made by put_path into target, which must not exist or be an empty
 * directory (or, with opts->force, a directory whose files of the same name are replaced).
 * All or nothing: the tree is written into a temporary directory beside target, every file is
 * verified (size + SHA-256) and fsync'd, and only then is it renamed into place; on failure the
 * target is as it was (see docs/STORAGE.md). No path from the MANIFEST can write outside target
 * (absolute paths, "..", an entry whose parent is not a directory of the tree, a path given
 * twice are refused with CAIRN_E_CORRUPT before anything is written; symlinks are restored
 * as links, created last, never followed; a symlink at target is not followed). Metadata as
 * docs/STORAGE.md "What a directory backup records and restores"; opts->include/exclude
 * restore part of the tree.
 * Read-only handles. */
CAIRN_API int cairn_backup_restore_path(struct cairn_backup *b, const char *target,
                                        const struct cairn_path_opts *opts, struct cairn_err *err);
/* One call: start `name`, put_path, end; aborts (removes) the backup on failure. kind
 * "files", source "<hostname>:<abs path>". */
CAIRN_API int cairn_storage_backup_path(struct cairn_storage *st, const char *name,
                                        const char *path, const struct cairn_path_opts *opts,
                                        struct cairn_err *err);
/* The same under a default name (cairn_storage_start_auto), returned in name. */
CAIRN_API int cairn_storage_backup_path_auto(struct cairn_storage *st, const char *tag, char *name,
                                             size_t cap, const char *path,
                                             const struct cairn_path_opts *opts,
                                             struct cairn_err *err);
/* One call: open_backup + restore_path. */
CAIRN_API int cairn_storage_restore_path(struct cairn_storage *st, const char *name,
                                         const char *target, const struct cairn_path_opts *opts,
                                         struct cairn_err *err);

/* ---- retention ---- */

struct cairn_prune_policy {
    unsigned keep_last;   /* newest N complete backups */
    unsigned keep_daily;  /* newest complete backup of each of the last D days that have one */
    unsigned keep_weekly; /* same per ISO week (UTC) */
};

/* Decide what to remove from a sorted list: remove[i] = 1 for items to delete. The older
 * interface, kept for callers that need only yes/no: cairn_retention_plan() with these three
 * rules, one group (no grouping by source), no name filter and "now" = the current time.
 * Returns the number to remove. */
CAIRN_API size_t cairn_prune_plan(const struct cairn_backup_list *l,
                                  const struct cairn_prune_policy *p, uint8_t *remove);

/* Backups dated more than this after "now" are future-dated (a clock that was ahead). */
#define CAIRN_RETENTION_FUTURE_SLACK 300

struct cairn_retention_policy {
    unsigned keep_last;    /* the N newest complete backups (by MANIFEST creation time) */
    unsigned keep_hourly;  /* the newest of each of the N newest hours (UTC) that have one */
    unsigned keep_daily;   /* ... days (UTC) */
    unsigned keep_weekly;  /* ... ISO weeks (UTC) */
    unsigned keep_monthly; /* ... months (UTC) */
    unsigned keep_yearly;  /* ... years (UTC) */
    int64_t keep_within;   /* seconds: every complete backup created in [now - this, now]; 0 off */
    int group_by_source;   /* 1: rules apply per MANIFEST source; 0: one group */
    const char *name_glob; /* fnmatch(3) pattern: only matching backups are considered; NULL all */
    /* Further filter (NULL: none): only backups it returns nonzero for are considered. */
    int (*filter)(const char *name, void *arg);
    void *filter_arg;
    int64_t now;          /* unix seconds: the window of keep-within and the future check */
    int64_t future_slack; /* seconds; 0 means CAIRN_RETENTION_FUTURE_SLACK */
};

/* Does the policy keep anything by itself (some count or keep-within)? */
CAIRN_API int cairn_retention_policy_keeps(const struct cairn_retention_policy *p);

enum cairn_retention_action {
    CAIRN_RETAIN_KEEP = 0,
    CAIRN_RETAIN_REMOVE = 1,
    CAIRN_RETAIN_SKIP = 2, /* not considered (name filter): left alone */
};

struct cairn_retention_decision {
    enum cairn_retention_action action;
    char *reason;  /* why kept ("keep-daily 2026-11-30; parent of X") or removed */
    char *warning; /* NULL, or a problem to report (future-dated, missing parent) */
};

struct cairn_retention_plan {
    size_t count; /* = the list's count; items[i] is about list item i */
    struct cairn_retention_decision *items;
    size_t removed;  /* items with CAIRN_RETAIN_REMOVE */
    size_t warnings; /* items with a warning */
};

/* Decide, for every backup of l, whether it is kept and why.
 *  - Age is the MANIFEST creation time, ties broken by name; names never date a backup.
 *  - Only complete, considered backups count for the keep-* rules, per group (source).
 *  - The newest complete backup of each group is always kept.
 *  - A backup created more than future_slack after now is future-dated: kept, reported, and
 *    left out of every rule, so a clock that was ahead never pushes fresh backups out.
 *  - Incomplete backups whose name sorts before the newest complete one (by name) are removed
 *    as failed attempts; the others may be running and are kept. Corrupt ones are kept.
 *  - With no complete considered backup nothing is removed.
 *  - Anything kept (or not considered) keeps its whole parent chain, across groups; a parent
 *    that is not in the list is reported.
 * CAIRN_E_INVALID when the policy keeps nothing (cairn_retention_policy_keeps() is 0). */
CAIRN_API int cairn_retention_plan(const struct cairn_backup_list *l,
                                   const struct cairn_retention_policy *p,
                                   struct cairn_retention_plan *out, struct cairn_err *err);
CAIRN_API void cairn_retention_plan_free(struct cairn_retention_plan *plan);

/* Mark in mark[] (l->count bytes, zeroed first) every backup whose parent chain leads to
 * list item idx (its dependents, transitively; idx itself is not marked). Returns how many. */
CAIRN_API size_t cairn_backup_dependents(const struct cairn_backup_list *l, size_t idx,
                                         uint8_t *mark);

/* ---- garbage collection (deduplicating repositories) ---- */

struct cairn_gc_opts {
    unsigned repack_percent; /* repack packs with more garbage than this (by bytes); 0: 20 */
    int dry_run;             /* count only */
};
struct cairn_gc_stats {
    uint64_t backups, packs, packs_deleted, packs_repacked, packs_unindexed, chunks_live;
    uint64_t bytes_total, bytes_garbage, bytes_freed, bytes_repacked;
};
/* Mark every chunk the complete backups' MANIFESTs reference and sweep the rest: packs
 * without live chunks are deleted, packs mostly garbage repacked (docs/STORAGE.md). The
 * caller holds the exclusive lock. Crash-safe: new packs and a new index land before the old
 * index objects and packs are deleted, so a crash never loses a referenced chunk and a rerun
 * finishes. A corrupt backup (MANIFEST unreadable) stops it before anything is deleted. A
 * location without a chunk store: nothing to do, CAIRN_OK. stats may be NULL. */
CAIRN_API int cairn_storage_gc(struct cairn_storage *st, const struct cairn_gc_opts *o,
                               struct cairn_gc_stats *stats, struct cairn_err *err);

struct cairn_check_opts {
    unsigned read_data_percent; /* 0: structure only; 100: --read-data; N: a subset of packs */
};
struct cairn_check_stats {
    uint64_t backups, chunks, packs, packs_read, blobs_read, bytes_read;
};
/* Check a deduplicating repository: every complete backup's chunk lists read and
 * authenticated, every chunk they name in the index, every pack holding one present; with
 * read_data_percent, every blob of (that share of) the packs read and authenticated.
 * CAIRN_E_CORRUPT naming the chunk or pack. A location without a chunk store: CAIRN_OK
 * (cairn verify checks full-copy backups). */
CAIRN_API int cairn_storage_check(struct cairn_storage *st, const struct cairn_check_opts *o,
                                  struct cairn_check_stats *stats, struct cairn_err *err);

/* ---- locks ----
 * Between processes and hosts sharing a location (restic's design): a lock is an object
 * "<CAIRN_LOCK_DIR>/<id>-<seq>" holding JSON (host, pid, start and refresh times, refresh
 * period, mode, command). Taking one writes it first, then lists the others: a conflicting
 * lock that is not stale makes the taker remove its own and back off (retrying with random
 * pauses up to wait_ms), so two racing takers may both back off but never both proceed.
 * Shared locks (backups: cairn_storage_start takes one, cairn_backup_free releases it)
 * conflict only with exclusive ones (prune, rm). A held lock is refreshed by a background
 * thread every refresh_ms (a new object, then the old one removed); a lock not refreshed for
 * CAIRN_LOCK_STALE_FACTOR times its own period, or held by a dead process on this host, is
 * stale: a taker removes it with a warning. A holder whose lock was removed finds out at its
 * next refresh (or cairn_lock_check) and must not complete: cairn_backup_end then fails. */
#define CAIRN_LOCK_DIR                ".locks"
#define CAIRN_LOCK_REFRESH_MS_DEFAULT 30000
#define CAIRN_LOCK_STALE_FACTOR       4

enum cairn_lock_mode { CAIRN_LOCK_SHARED = 0, CAIRN_LOCK_EXCLUSIVE = 1 };

struct cairn_lock;

struct cairn_lock_opts {
    int64_t refresh_ms;  /* 0: $CAIRN_LOCK_REFRESH_MS, else CAIRN_LOCK_REFRESH_MS_DEFAULT */
    int64_t wait_ms;     /* keep trying this long when held; 0: $CAIRN_LOCK_WAIT_MS, else 0 */
    const char *command; /* what holds it ("backup", "prune"), shown to others; may be NULL */
};

/* Take a lock on st's location (opts may be NULL). CAIRN_E_LOCKED (exit code 10) when another
 * live lock conflicts: the message names its host, pid, command and age. *out is NULL when
 * the driver has no lock support. An exclusive lock on a missing location is
 * CAIRN_E_NOTFOUND (it creates nothing). */
CAIRN_API int cairn_storage_lock(struct cairn_storage *st, enum cairn_lock_mode mode,
                                 const struct cairn_lock_opts *opts, struct cairn_lock **out,
                                 struct cairn_err *err);
/* CAIRN_OK while the lock is held; CAIRN_E_LOCKED once another process removed it as stale
 * (checked against the storage, not only the last refresh). NULL is held. */
CAIRN_API int cairn_lock_check(struct cairn_lock *l, struct cairn_err *err);
/* Stop refreshing and remove the lock object. NULL is fine. */
CAIRN_API void cairn_lock_release(struct cairn_lock *l);

struct cairn_lock_info {
    char *object; /* object name under CAIRN_LOCK_DIR */
    int exclusive;
    char *host;
    long pid;
    char *command;
    int64_t started_ms, refreshed_ms, refresh_ms;
    int stale;     /* not refreshed for CAIRN_LOCK_STALE_FACTOR periods, or a dead local pid */
    char *problem; /* NULL, or why the object is no lock (it conflicts; unlock removes it) */
};
struct cairn_lock_list {
    size_t count;
    struct cairn_lock_info *items;
};
/* Every lock object of st's location, with its staleness judged now. */
CAIRN_API int cairn_storage_locks(struct cairn_storage *st, struct cairn_lock_list *out,
                                  struct cairn_err *err);
CAIRN_API void cairn_lock_list_free(struct cairn_lock_list *l);
/* Remove stale lock objects and objects that are no lock, or every one with all (dangerous: a live
 * holder loses its lock and its backup fails, or a prune runs beside a backup). removed (may be
 * NULL) gets those removed. */
CAIRN_API int cairn_storage_unlock(struct cairn_storage *st, int all,
                                   struct cairn_lock_list *removed, struct cairn_err *err);
/* One line about a lock for messages: "host H pid P (prune), started 12s ago, refreshed 3s
 * ago". */
CAIRN_API void cairn_lock_describe(const struct cairn_lock_info *li, int64_t now_ms, char *out,
                                   size_t cap);

#ifdef __cplusplus
}
#endif

#endif
