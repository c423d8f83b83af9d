/* S3 storage driver on libcurl (CURLOPT_AWS_SIGV4 signs every request): what its files
 * share. Private to src/storage/s3 (not installed).
 *
 * Layout: s3://bucket/prefix -> objects "<prefix>/<backup>/<file>"; backups are the common
 * prefixes under "<prefix>/" (ListObjectsV2 with Delimiter "/", paginated).
 * Writes: a file smaller than one part is one PUT; larger or unknown-size files use a
 * multipart upload whose parts are uploaded by helper threads with a bounded number in flight
 * (memory <= part size x parts). Part sizes start at max(part_size, hint/10000) and double
 * every 1000 parts, so even an unknown-size 5 TiB stream fits in 10,000 parts. A failed or
 * discarded upload is aborted (AbortMultipartUpload). Reads: HEAD, then ranged GETs of one
 * part size each, so memory stays bounded and every range is retried on its own.
 * Every request is retried on connection errors, 5xx, 429, SlowDown/RequestTimeout with
 * exponential backoff and jitter, up to `retries` attempts.
 *
 * Files: url.c (URL and options), cred.c (credentials), call.c (one request with retries,
 * the session), list.c (listing and deleting), write.c (single PUT or multipart upload),
 * read.c (HEAD and ranged GETs), driver.c (lifecycle and the driver table). */
#ifndef CAIRN_STORAGE_S3_H
#define CAIRN_STORAGE_S3_H

#include <curl/curl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/internal.h"

#define MIB           (1024ull * 1024ull)
#define MAX_PARTS     10000
#define MAX_PART_SIZE (5ull * 1024 * MIB)
#define XML_MAX       (16u << 20)

struct s3 {
    char *url;
    char *bucket;
    char *prefix;   /* "" or "a/b/" */
    char *endpoint; /* "scheme://host[:port]" without trailing '/' */
    char *region;   /* from the URL, else resolved at first use */
    int path_style;
    int insecure;
    uint64_t part_floor;
    unsigned parts;
    unsigned attempts;
    unsigned retry_base_ms;
    unsigned stall_s; /* a request that moves no byte for this long fails (and is retried) */

    pthread_mutex_t mu;
    int ready; /* credentials loaded and bucket checked */
    char *access, *secret, *token, *sigv4;
    CURL **pool;
    size_t npool, cappool;
    unsigned seed;
    const volatile int *cancel; /* cairn_storage_set_cancel: stops data transfers */
};

/* One request and its response (s3_call). */
struct call {
    const char *method; /* GET HEAD PUT POST DELETE */
    const char *key;    /* full object key, NULL for the bucket */
    const char *query;  /* canonical (sorted, encoded) query or NULL */
    const void *body;
    size_t body_len;
    const char *content_type;
    const char *hdr[4]; /* extra headers, NULL-terminated */
    /* response */
    size_t max;   /* body bytes kept (XML); 0 = discard */
    uint8_t *dst; /* or: body goes here (ranged GET), at most dst_cap bytes */
    size_t dst_cap;
    long status;
    char *body_out;
    size_t body_out_len;
    char etag[256];
    int64_t clen;
    int overflow;
    int cancellable; /* a data transfer: cairn_storage_set_cancel's flag stops it */
};

/* url.c */
/* RFC 3986 percent-encoding as SigV4 wants it; keep '/' when keep_slash. malloc'd. */
char *s3_uri_encode(const char *s, int keep_slash);

/* cred.c */
/* Credentials (environment, then the shared credentials file) and the region into s. */
int s3_load_credentials(struct s3 *s, struct cairn_err *err);
/* Zero a secret, then free it. NULL is fine. */
void s3_wipe_free(char *s);

/* call.c */
/* Perform one S3 request with retries. 2xx is success; anything else is an error naming the
 * request, the HTTP status and the S3 error code. The response body stays in c. */
int s3_call(struct s3 *s, struct call *c, struct cairn_err *err);
/* Free what a call kept of its response. */
void s3_call_done(struct call *c);
/* Credentials + HeadBucket once per session (again after close). */
int s3_ready(struct s3 *s, struct cairn_err *err);

/* The driver operations, one file each (driver.c has the table). */
int s3_open(const char *url, void **state, struct cairn_err *err);
void s3_free(void *state);
int s3_list(void *state, int (*fn)(void *arg, const char *name), void *arg, struct cairn_err *err);
int s3_start(void *state, const char *backup, struct cairn_err *err);
int s3_remove(void *state, const char *backup, struct cairn_err *err);
int s3_list_files(void *state, const char *backup, int (*fn)(void *arg, const char *file),
                  void *arg, struct cairn_err *err);
int s3_remove_file(void *state, const char *backup, const char *file, struct cairn_err *err);
int s3_create(void *state, const char *backup, const char *file, int64_t size_hint,
              const struct cairn_storage_write_opts *opts, struct cairn_writer **out,
              struct cairn_err *err);
int s3_read_at(void *state, const char *backup, const char *file, uint64_t off, void *buf,
               size_t len, struct cairn_err *err);
int s3_read(void *state, const char *backup, const char *file, struct cairn_reader **out,
            struct cairn_err *err);

#endif
