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
 * Files: url.c (URL and options), cred.c (the credential chain and its refresh),
 * cred_file.c (shared config/credentials files, credential_process), cred_http.c (STS,
 * ECS container and EC2 instance metadata providers), call.c (one request with retries,
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

/* One set of credentials and where it came from. expires: Unix seconds, 0 = never. */
struct s3_cred {
    char *access, *secret, *token;
    int64_t expires;
    char provider[96]; /* "environment", "profile 'x' (AssumeRole arn:...)", ... */
};

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
    char *sigv4;
    /* Credentials: every signing call takes a copy under credmu (s3_cred_get), which
     * refreshes them first when they expire in less than 5 minutes. */
    pthread_mutex_t credmu;
    struct s3_cred cred;
    int64_t cred_retry_at; /* a failed refresh of still-valid credentials: next try */
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
/* The region (URL, AWS_REGION, AWS_DEFAULT_REGION, the profile's region, us-east-1) and the
 * first credentials of the chain into s. */
int s3_load_credentials(struct s3 *s, struct cairn_err *err);
/* A copy of the current credentials for one request, refreshed first when they expire in
 * less than 5 minutes (under credmu, so one thread refreshes and the others wait). */
int s3_cred_get(struct s3 *s, struct s3_cred *out, struct cairn_err *err);
/* Wipe and free the strings of c (c itself is not freed). */
void s3_cred_clear(struct s3_cred *c);

/* The chain (cred.c): resolve credentials as the AWS SDKs do. region is for STS. */
int s3_cred_resolve(const char *region, struct s3_cred *out, struct cairn_err *err);

/* cred_file.c: the shared config and credentials files. */
struct s3_profiles;
/* Load AWS_CONFIG_FILE (~/.aws/config) and AWS_SHARED_CREDENTIALS_FILE (~/.aws/credentials);
 * missing files are empty. Never fails (unreadable files are logged and skipped). */
struct s3_profiles *s3_profiles_load(void);
void s3_profiles_free(struct s3_profiles *p);
/* key of profile name (credentials file first, then config); NULL when unset. Borrowed. */
const char *s3_profile_get(const struct s3_profiles *p, const char *name, const char *key);
/* 1 when either file has a section for the profile. */
int s3_profile_exists(const struct s3_profiles *p, const char *name);
/* "'<config>' and '<credentials>'" for messages. */
const char *s3_profiles_where(const struct s3_profiles *p);
/* Run a credential_process command (split like a shell, no shell run) and parse its JSON
 * Version 1 output. */
int s3_cred_process(const char *cmd, const char *profile, struct s3_cred *out,
                    struct cairn_err *err);
/* Parse Version 1 / ECS / IMDS JSON credentials ({AccessKeyId, SecretAccessKey, Token or
 * SessionToken, Expiration}); what names the provider in errors. */
int s3_cred_from_json(const char *text, size_t len, const char *what, struct s3_cred *out,
                      struct cairn_err *err);

/* cred_http.c: the providers that talk HTTP. Each returns CAIRN_OK with *out set, or an
 * error naming the provider. */
/* STS AssumeRole signed with src. */
int s3_cred_assume_role(const char *region, const struct s3_cred *src, const char *role_arn,
                        const char *session_name, const char *external_id, const char *duration,
                        struct s3_cred *out, struct cairn_err *err);
/* STS AssumeRoleWithWebIdentity (unsigned) with the token in token_file. */
int s3_cred_web_identity(const char *region, const char *token_file, const char *role_arn,
                         const char *session_name, struct s3_cred *out, struct cairn_err *err);
/* ECS container credentials (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI / _FULL_URI); 1 in
 * *configured when either is set, else CAIRN_OK with *configured 0. */
int s3_cred_container(int *configured, struct s3_cred *out, struct cairn_err *err);
/* EC2 instance metadata, IMDSv2 only. */
int s3_cred_imds(struct s3_cred *out, struct cairn_err *err);

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
int s3_sweep(void *state, const char *backup, struct cairn_err *err);
int s3_create(void *state, const char *backup, const char *file, int64_t size_hint,
              const struct cairn_storage_write_opts *opts, struct cairn_writer **out,
              struct cairn_err *err);
int s3_read_at(void *state, const char *backup, const char *file, uint64_t off, void *buf,
               size_t len, struct cairn_err *err);
int s3_read(void *state, const char *backup, const char *file, struct cairn_reader **out,
            struct cairn_err *err);

#endif
