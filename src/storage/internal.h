/* Internal pieces of the storage module shared by its files. Not installed. */
#ifndef CAIRN_STORAGE_INTERNAL_H
#define CAIRN_STORAGE_INTERNAL_H

#include <jansson.h>
#include <pthread.h>

#include "cairn/digest.h"
#include "cairn/storage.h"
#include "io/probe.h"
#include "io/ratelimit.h"
#include "storage/chunker.h"

extern const struct cairn_storage_driver storage_file_driver;
extern const struct cairn_storage_driver storage_s3_driver;

struct cairn_storage {
    const struct cairn_storage_driver *drv;
    void *state;
    char *url;
    int has_key;
    uint8_t key[CAIRN_SEAL_KEY_LEN];
    const volatile int *cancel; /* cairn_storage_set_cancel; may be NULL */
    int64_t lock_wait_ms;       /* cairn_storage_set_lock_wait; 0: $CAIRN_LOCK_WAIT_MS */
    cairn_storage_commit_check_fn commit_check; /* cairn_storage_set_commit_check */
    struct tbucket *rate;                       /* cairn_storage_set_rate_limit; NULL: off */
    void *commit_ctx;
    /* The repository (repo.c): read once, before the first operation that stores or reads
     * bytes (storage_ready), with the secret of cairn_storage_set_secret. */
    pthread_mutex_t repo_mu;
    int repo_ready;
    struct cairn_repo *repo;      /* owned; NULL for a plain location */
    const struct repo_keys *keys; /* repo's keys when encrypted, else NULL */
    struct repo_keys *keys_own;   /* storage_share_repo's copy */
    uint8_t *sec_key;             /* the secret (wiped when freed) */
    char *sec_password;
    struct chunkstore *cs; /* chunkstore.c: created on first use (cs_get), under cs_mu */
    pthread_mutex_t cs_mu;
};

/* One file of a backup: its MANIFEST entry plus write state. */
/* RESERVED: named in order by backup_reserve, not yet added (it holds back streaming like
 * WRITING); DROPPED: a reservation given up, never part of the backup. */
enum { FILE_WRITING = 0, FILE_COMMITTED = 1, FILE_FAILED = 2, FILE_RESERVED = 3, FILE_DROPPED = 4 };

struct body_out; /* manifest.c: a split MANIFEST body being written */

/* An order-independent digest of a set of MANIFEST file entries: the sum mod 2^256 of the
 * SHA-256 of each entry's body line, and their count. Two sets with equal sums are equal
 * (short of a SHA-256 break), however each was read. */
struct files_sum {
    uint8_t v[32];
    uint64_t n;
};
void files_sum_add(struct files_sum *s, const struct cairn_manifest_file *f);
int files_sum_equal(const struct files_sum *a, const struct files_sum *b);

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
     * without its file list), and a split MANIFEST's parts. A split MANIFEST's file list
     * stays in storage: it is streamed (manifest_scan) and loaded only when files_loaded is
     * asked for (cairn_backup_file_at/find), so opening and verifying take bounded memory. */
    uint64_t sum_files, sum_size;
    /* The files' logical bytes (before compression and chunking): a split MANIFEST written
     * before the header had files.logical_size has none (has_sum_logical 0). chunked: a
     * MANIFEST of version 3 or 4, whose files are chunk lists in the repository's chunk
     * store (shared with other backups). */
    uint64_t sum_logical;
    int has_sum_logical, chunked;
    json_t *parts;
    int files_loaded;
    struct files_sum list_sum; /* read-only handles: of the whole file list */
    /* Streaming writers (put_path): committed files that sort below every file still being
     * written leave memory as lines of a split MANIFEST body (body, its own lock), in
     * batches; a file added later must sort after flushed_name. */
    int stream;
    pthread_mutex_t body_mu;
    struct body_out *body;
    char *flushed_name;
    uint64_t nflushed, flushed_size;
    size_t flush_at;  /* in-memory records that trigger the next batch */
    char *stream_msg; /* the first body write failure (the body keeps its code) */
    /* Read-write handles: open-addressing index of files by name (add_file's duplicate
     * check, file_find). Read-only handles keep files sorted by name and bsearch. */
    struct file_rec **slots;
    size_t nslots;
    struct cairn_lock *lock; /* read-write handles: the shared lock on the location (lock.c) */
    /* Encrypted repositories: the backup's random id (MANIFEST "backup_id"), bound into the
     * additional data of its data files and MANIFEST parts, so files cannot move between
     * backups, not even between two of the same name. */
    uint8_t bid[16];
    int has_bid;
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
/* A deduplicating repository's MANIFESTs: versions 1 and 2 whose file entries are chunk lists
 * (compression "chunks"), so a cairn that knows no chunk store refuses them. */
#define MANIFEST_CHUNKED_VERSION       3
#define MANIFEST_CHUNKED_SPLIT_VERSION 4
/* JSON text of b's MANIFEST (committed files sorted by name), sealed with key when non-NULL.
 * Returns a malloc'd string. */
char *manifest_build(const struct cairn_backup *b, const uint8_t *key);
/* Write b's MANIFEST (one document, or parts then header), last. */
int manifest_write(struct cairn_backup *b, struct cairn_err *err);
/* Parse text into b (name must match). CAIRN_E_CORRUPT / CAIRN_E_SEAL on failure. A split
 * MANIFEST's header leaves b->parts for manifest_load to read. */
int manifest_parse(struct cairn_backup *b, const char *text, size_t len, const uint8_t *key,
                   struct cairn_err *err);
/* Read and parse the MANIFEST of b; CAIRN_E_NOTFOUND when absent. header_only: a split
 * MANIFEST's parts are not read (b has the header fields and sum_*, no files, no meta).
 * Otherwise a split body is read through once (every part checked, the meta kept) without
 * keeping its file list. */
int manifest_load(struct cairn_backup *b, int header_only, struct cairn_err *err);
/* Each file of a split MANIFEST's body, in name order: fn takes ownership of r and returns
 * CAIRN_OK to go on (or a code, with e set, to stop). Every part is checked as it ends. */
typedef int (*manifest_file_fn)(void *arg, struct file_rec *r, struct cairn_err *e);
int manifest_scan(struct cairn_backup *b, manifest_file_fn fn, void *arg, struct cairn_err *err);
/* Load a split MANIFEST's file list into b->files (once; caller holds b->mu). */
int manifest_load_files(struct cairn_backup *b, struct cairn_err *err);
/* Streaming writers: write recs (sorted, each above every line already written) as body
 * lines; the records stay the caller's. Caller holds b->body_mu. */
int manifest_put_files(struct cairn_backup *b, struct file_rec **recs, size_t n,
                       struct cairn_err *err);
void manifest_body_free(struct body_out *o);
/* qsort order of struct file_rec pointers: by name. */
int manifest_cmp_rec(const void *a, const void *b);
/* A file entry as JSON ({"name", "size", "sha256", "compression", "logical_size",
 * "logical_sha256"}, as in a version 1 MANIFEST) and back; NULL when invalid. */
json_t *manifest_file_json(const struct cairn_manifest_file *f);
struct file_rec *manifest_file_parse(json_t *j);

/* Names (name.c): CAIRN_E_INVALID with a message naming the rule, unless name is a valid
 * backup name; the same for a file of b, whose name must not start with "MANIFEST". */
int storage_check_backup_name(const char *name, struct cairn_err *err);
int storage_check_file_name(const struct cairn_backup *b, const char *file, struct cairn_err *err);
/* Remove backup name (storage.c): its MANIFEST first, through the driver's remove_file, so
 * that a remove cut short (a crash, a failed request) leaves an incomplete backup, never one
 * that lists as complete with files missing; then the driver's remove deletes the rest in any
 * order. A driver without remove_file deletes everything in its own order. */
int storage_remove_backup(struct cairn_storage *st, const char *name, struct cairn_err *err);
/* list.c: *found = 1 when st lists backup name, with a MANIFEST or not (anything of it exists). */
int storage_backup_exists(struct cairn_storage *st, const char *name, int *found,
                          struct cairn_err *err);

/* The backup handle (backup.c). */
struct cairn_backup *backup_new_handle(struct cairn_storage *st, const char *name, int read_only);
void file_rec_free(struct file_rec *r);
/* CAIRN_E_INVALID naming op unless b is a read-write handle that has not ended. */
int backup_need_rw(struct cairn_backup *b, const char *op, struct cairn_err *err);
/* The name index of read-write handles (open addressing; caller holds b->mu): the record of
 * name or NULL; add rec, whose name is not indexed yet; index b->files[0..nfiles) afresh
 * after records left b->files (a streaming writer's flush). */
struct file_rec *backup_index_get(const struct cairn_backup *b, const char *name);
void backup_index_add(struct cairn_backup *b, struct file_rec *rec);
void backup_index_rebuild(struct cairn_backup *b);
/* The compression probe is io's (io/probe.h, IO_PROBE_ZSTD): a stream is judged on its first
 * PROBE_LEN bytes, a file on PROBE_LEN bytes sampled across it, in pieces of the probe's
 * sample size. */
#define PROBE_SAMPLE IO_PROBE_ZSTD_SAMPLE
#define PROBE_LEN    (4 * PROBE_SAMPLE)

/* Record e as the failure of the file behind w (a writer from add_file) before it is freed. */
void backup_writer_fail(struct cairn_writer *w, const struct cairn_err *e);
/* A local-path backup whose tree is a stored file (meta.tree.entries_file): check that the
 * tree's file entries, with the tree file's own entry, are exactly the MANIFEST's file list
 * (restore takes each file's entry from the tree). One pass over the tree; CAIRN_E_CORRUPT
 * when they differ. CAIRN_OK for backups without such a tree. */
int backup_check_tree(struct cairn_backup *b, struct cairn_err *err);
/* Make b a streaming writer (see struct cairn_backup): for callers that add files in
 * ascending name order, such as put_path, whose MANIFEST then takes bounded memory. Records
 * leave memory in batches of STREAM_BATCH (about 1 MiB of them). */
#define STREAM_BATCH 4096
void backup_set_streaming(struct cairn_backup *b);
/* Reserve file's name now (in the order the caller walks) for an add_file that comes later,
 * maybe from another thread: a streaming writer flushes no name above it meanwhile. Checks
 * as add_file does. backup_unreserve gives a reservation up (the file is not added). */
int backup_reserve(struct cairn_backup *b, const char *file, struct cairn_err *err);
void backup_unreserve(struct cairn_backup *b, const char *file);
/* When w (from add_file) commits, copy its MANIFEST entry (sizes, hashes, compression; not
 * the name) into *dst, taken under the handle's lock: a streaming writer may flush the
 * record itself right after. */
void backup_writer_record_to(struct cairn_writer *w, struct cairn_manifest_file *dst);
/* Stream into a new file like cairn_backup_put_stream, and on success copy its entry (as
 * backup_writer_record_to) into *rec when non-NULL. */
int backup_put_stream_rec(struct cairn_backup *b, const char *file, struct cairn_reader *src,
                          int64_t size_hint, const struct cairn_file_opts *opts,
                          struct cairn_manifest_file *rec, struct cairn_err *err);
/* Add file (reserved with backup_reserve) as committed with the entry f (its name aside), for
 * content stored already: a chunk list blob another backup references too (path_parent.c). */
int backup_add_record(struct cairn_backup *b, const char *file, const struct cairn_manifest_file *f,
                      struct cairn_err *err);
/* A reader of file f of read-only backup b verified against f (stored and logical size and
 * SHA-256, at its end), as cairn_backup_get_file without the lookup. */
int backup_read_stored(struct cairn_backup *b, const char *file,
                       const struct cairn_manifest_file *f, struct cairn_reader **r,
                       struct cairn_err *err);
int backup_open_verified(struct cairn_backup *b, const struct cairn_manifest_file *f,
                         struct cairn_reader **out, struct cairn_err *err);

/* Encryption (storage.c). storage_ready reads the location's repository config once (and
 * unlocks it with the storage's secret): CAIRN_OK for a plain location or an unlocked one.
 * storage_create and storage_read are the driver's create and read, wrapped, when the
 * location is encrypted, in the chunked AEAD stream (version 2) whose additional data binds
 * the repository id, backup, file and bid (NULL: 16 zero bytes; MANIFEST headers and lock
 * objects). Authentication failures are CAIRN_E_CORRUPT naming the object. */
int storage_ready(struct cairn_storage *st, struct cairn_err *err);
/* Make own (a fresh handle on the same URL, such as a lock's) use ready st's keys. */
void storage_share_repo(struct cairn_storage *own, const struct cairn_storage *st);
int storage_create(struct cairn_storage *st, const char *backup, const char *file,
                   const uint8_t *bid, int64_t size_hint, const struct cairn_storage_write_opts *wo,
                   struct cairn_writer **w, struct cairn_err *err);
int storage_read(struct cairn_storage *st, const char *backup, const char *file, const uint8_t *bid,
                 struct cairn_reader **r, struct cairn_err *err);
/* The driver's create paced by st's rate limit (cairn_storage_set_rate_limit), without the
 * AEAD stream: for objects that carry their own encryption (chunk store packs). */
int storage_create_raw(struct cairn_storage *st, const char *backup, const char *file,
                       int64_t size_hint, const struct cairn_storage_write_opts *wo,
                       struct cairn_writer **w, struct cairn_err *err);
/* raw (owned), the stored bytes of backup/file from anywhere (a local cache), as storage_read
 * gives them: decrypted and authenticated when st is encrypted. */
struct cairn_reader *storage_open_stored(const struct cairn_storage *st, const char *backup,
                                         const char *file, const uint8_t *bid,
                                         struct cairn_reader *raw);
/* Content hashes of st's MANIFESTs: SHA-256, or HMAC-SHA-256 under the content hash key when
 * st is encrypted (st must be ready). */
void storage_hash_init(const struct cairn_storage *st, struct cairn_sha256 *h);
struct cairn_writer *storage_hash_writer_new(const struct cairn_storage *st,
                                             struct cairn_writer *next);
/* b's bid for storage_create/storage_read: NULL when b has none. */
static inline const uint8_t *backup_bid(const struct cairn_backup *b)
{
    return b->has_bid ? b->bid : NULL;
}

/* Repositories (repo.c): the keys an unlocked encrypted repository derives from its master
 * key, and HKDF-SHA-256 (32 bytes out). */
struct repo_keys {
    uint8_t repo_id[32];
    uint8_t data[32];       /* object encryption */
    uint8_t config_mac[32]; /* the config's MAC */
    uint8_t hash[32];       /* keyed content hashes (HMAC-SHA-256) */
    uint32_t chunk_size;
};
struct cairn_repo;
/* NULL when r is not encrypted. */
const struct repo_keys *repo_keys(const struct cairn_repo *r);
/* The chunk store's parameters and secrets (docs/FORMAT.md "Chunk store"): chunker sizes,
 * the gear seed (zero in a plain repository), the chunk id key (K_hash) and the pack key. */
struct repo_chunking {
    int has, encrypted;
    struct chunker_params params;
    uint8_t repo_id[32];
    char repo_hex[65];
    uint8_t seed[32];
    uint8_t hash[32];
    uint8_t pack[32];
};
/* NULL when r (may be NULL) has no chunker. */
const struct repo_chunking *repo_chunking(const struct cairn_repo *r);
int repo_hkdf(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt, size_t salt_len,
              const char *info, uint8_t out[32]);

#endif
