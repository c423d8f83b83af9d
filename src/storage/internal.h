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
};

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
    int64_t created;
    int sealed;
    struct cairn_lock *lock; /* read-write handles: the shared lock on the location (lock.c) */
};

/* MANIFEST (manifest.c). */
#define MANIFEST_MAX (64u << 20)
/* JSON text of b's MANIFEST (committed files sorted by name), sealed with key when non-NULL.
 * Returns a malloc'd string. */
char *cairn_manifest_build(const struct cairn_backup *b, const uint8_t *key);
/* Parse text into b (name must match). CAIRN_E_CORRUPT / CAIRN_E_SEAL on failure. */
int cairn_manifest_parse(struct cairn_backup *b, const char *text, size_t len, const uint8_t *key,
                         struct cairn_err *err);
/* Read and parse the MANIFEST of b; CAIRN_E_NOTFOUND when absent. */
int cairn_manifest_load(struct cairn_backup *b, struct cairn_err *err);

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
