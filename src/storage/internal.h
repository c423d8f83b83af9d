/* Internal pieces of the storage module shared by its files. Not installed. */
#ifndef CAIRN_STORAGE_INTERNAL_H
#define CAIRN_STORAGE_INTERNAL_H

#include <jansson.h>
#include <pthread.h>

#include "cairn/storage.h"

extern const struct cairn_storage_driver cairn_storage_file_driver;
extern const struct cairn_storage_driver cairn_storage_s3_driver;

struct cairn_storage {
    const struct cairn_storage_driver *drv;
    void *state;
    char *url;
    int has_key;
    uint8_t key[CAIRN_SEAL_KEY_LEN];
    const volatile int *cancel; /* cairn_storage_set_cancel; may be NULL */
    int64_t lock_wait_ms;       /* cairn_storage_set_lock_wait; 0: $CAIRN_LOCK_WAIT_MS */
};

/* 1 when the cancel flag (may be NULL) is set; read atomically (set by signal handlers). */
static inline int cairn_storage_cancelled(const volatile int *flag)
{
    return flag != NULL && __atomic_load_n(flag, __ATOMIC_RELAXED) != 0;
}

/* One file of a backup: its MANIFEST entry plus write state. */
enum { FILE_WRITING = 0, FILE_COMMITTED = 1, FILE_FAILED = 2 };

struct file_rec {
    struct cairn_manifest_file f;
    int state;
    int code;    /* FILE_FAILED: the status */
    char *error; /* FILE_FAILED: the message */
};

struct cairn_backup {
    struct cairn_storage *st;
    char *name;
    int read_only;
    int ended;
    enum cairn_backup_status status;
    pthread_mutex_t mu;
    pthread_cond_t idle; /* open_writers reached 0 */
    size_t open_writers;
    struct file_rec **files;
    size_t nfiles, cap;
    char *kind, *source, *parent;
    json_t *meta;
    json_t *scope; /* NULL: not recorded (MANIFESTs written before scopes) */
    int64_t created;
    int sealed;
    /* From the MANIFEST: file count and stored bytes (a split MANIFEST's header has them
     * without its file list), and a split MANIFEST's parts until they are loaded. */
    uint64_t sum_files, sum_size;
    json_t *parts;
    /* Read-write handles: open-addressing index of files by name (add_file's duplicate
     * check, file_find). Read-only handles keep files sorted by name and bsearch. */
    struct file_rec **slots;
    size_t nslots;
    struct cairn_lock *lock; /* read-write handles: the shared lock on the location (lock.c) */
};

/* MANIFEST (manifest.c). A MANIFEST is read whole, so it is at most MANIFEST_MAX bytes; the
 * writer keeps it far below: a backup whose one-document MANIFEST (version 1) could exceed
 * MANIFEST_INLINE_MAX gets a split one (version 2): a small header plus its file list and
 * meta streamed into parts "MANIFEST.partNNNNNN" of MANIFEST_PART_SIZE bytes, each named
 * with its size and SHA-256 in the header and written before it. */
#define MANIFEST_MAX           (64u << 20)
#define MANIFEST_INLINE_MAX    (8u << 20)
#define MANIFEST_PART_SIZE     (16u << 20)
#define MANIFEST_SPLIT_VERSION 2
/* JSON text of b's MANIFEST (committed files sorted by name), sealed with key when non-NULL.
 * Returns a malloc'd string. */
char *cairn_manifest_build(const struct cairn_backup *b, const uint8_t *key);
/* Write b's MANIFEST (one document, or parts then header), last. */
int cairn_manifest_write(struct cairn_backup *b, struct cairn_err *err);
/* Parse text into b (name must match). CAIRN_E_CORRUPT / CAIRN_E_SEAL on failure. A split
 * MANIFEST's header leaves b->parts for cairn_manifest_load to read. */
int cairn_manifest_parse(struct cairn_backup *b, const char *text, size_t len, const uint8_t *key,
                         struct cairn_err *err);
/* Read and parse the MANIFEST of b; CAIRN_E_NOTFOUND when absent. header_only: a split
 * MANIFEST's parts are not read (b has the header fields and sum_*, no files, no meta). */
int cairn_manifest_load(struct cairn_backup *b, int header_only, struct cairn_err *err);

struct cairn_backup *cairn_backup_new_handle(struct cairn_storage *st, const char *name,
                                             int read_only);
void cairn_file_rec_free(struct file_rec *r);
/* Compression probe (probe.c). zstd is worth its CPU when level 1 saves at least 1/8 of one
 * of the samples (the threshold ZFS applies per block): log text saves 77 %, while random
 * bytes, encrypted data and InfluxDB's TSM (3 %, for 3x the time of a copy) are stored as
 * is. Samples are the CAIRN_PROBE_SAMPLE-byte pieces of buf; a stream is judged on its first
 * CAIRN_PROBE_LEN bytes, a file on CAIRN_PROBE_LEN bytes sampled across it. */
#define CAIRN_PROBE_SAMPLE (64u << 10)
#define CAIRN_PROBE_LEN    (4 * CAIRN_PROBE_SAMPLE)
int cairn_compress_pays(const void *buf, size_t len);

/* Record e as the failure of the file behind w (a writer from add_file) before it is freed. */
void cairn_backup_writer_fail(struct cairn_writer *w, const struct cairn_err *e);

#endif
