/* etcd: the gateway's snapshot message stream, parsed as it arrives, and the trailer check.
 *
 * Memory is bounded by one message (a 32 KiB blob is ~44 KB of JSON; a line may reach
 * ETCD_LINE_MAX) plus its decoded blob: nothing holds the whole response. */
#define _GNU_SOURCE /* memmem */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/digest.h"
#include "cairn/storage.h"
#include "common/buf.h"
#include "common/util.h"
#include "etcd.h"

/* etcd 3.4-3.6 send 32 KiB blobs (about 44 KB per line); anything far larger is not etcd. */
#define ETCD_LINE_MAX (4u << 20)
/* etcd's bbolt database is a whole number of pages; its own check uses 512. */
#define ETCD_PAGE 512u

void etcd_sum_init(struct etcd_sum *s)
{
    memset(s, 0, sizeof(*s));
    struct cairn_sha256 *h = xcalloc(1, sizeof(*h));
    cairn_sha256_init(h);
    s->h = h;
}

void etcd_sum_update(struct etcd_sum *s, const uint8_t *p, size_t n)
{
    s->total += n;
    size_t all = s->tail_len + n;
    if (all <= sizeof(s->tail)) { /* everything so far may still be the trailer */
        memcpy(s->tail + s->tail_len, p, n);
        s->tail_len = all;
        return;
    }
    /* The first all-32 bytes of tail||p are data: hash them, keep the last 32. */
    size_t excess = all - sizeof(s->tail);
    size_t from_tail = excess < s->tail_len ? excess : s->tail_len;
    if (!s->shared)
        cairn_sha256_update(s->h, s->tail, from_tail);
    memmove(s->tail, s->tail + from_tail, s->tail_len - from_tail);
    s->tail_len -= from_tail;
    size_t from_p = excess - from_tail;
    if (!s->shared)
        cairn_sha256_update(s->h, p, from_p);
    memcpy(s->tail + s->tail_len, p + from_p, n - from_p);
    s->tail_len += n - from_p;
}

int etcd_sum_check(const struct etcd_sum *s, const char *what, struct cairn_err *err)
{
    if (s->total < sizeof(s->tail) || (s->total - sizeof(s->tail)) % ETCD_PAGE != 0)
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "%s: sha256 checksum not found (%llu bytes is not whole %u-byte "
                             "pages and a 32-byte trailer): truncated or not an etcd snapshot",
                             what, (unsigned long long)s->total, ETCD_PAGE);
    uint8_t got[32];
    if (s->shared && !s->have_data_sha)
        return cairn_err_set(err, CAIRN_E_CORRUPT, "%s: sha256 trailer message not seen", what);
    if (s->shared)
        memcpy(got, s->data_sha, sizeof(got));
    else
        cairn_sha256_peek(s->h, got);
    if (memcmp(got, s->tail, sizeof(got)) != 0) {
        char want_hex[65], got_hex[65];
        cairn_hex_encode(s->tail, 32, want_hex);
        cairn_hex_encode(got, 32, got_hex);
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "%s: sha256 mismatch: the trailer says %s, the %llu bytes before "
                             "it hash to %s",
                             what, want_hex, (unsigned long long)(s->total - 32), got_hex);
    }
    return CAIRN_OK;
}

void etcd_sum_free(struct etcd_sum *s)
{
    if (s->h != NULL) {
        cairn_sha256_free(s->h);
        free(s->h);
        s->h = NULL;
    }
}

struct etcd_stream {
    struct cairn_writer *out; /* borrowed */
    char *what;
    struct buf line;  /* the message being assembled across feeds */
    struct buf frame; /* the message with its blob cut out (see split_blob) */
    uint8_t *blob;    /* decoded blob of the current message */
    size_t blob_cap;
    struct etcd_sum sum;
    uint64_t messages;
    uint64_t data;     /* bytes of the database (blobs before the trailer) */
    uint64_t expected; /* database size from the first message; 0 until then */
    int trailer;       /* the checksum message has arrived */
    int rc;            /* sticky failure */
    struct cairn_err err;
};

struct etcd_stream *etcd_stream_new(struct cairn_writer *out, const char *what)
{
    struct etcd_stream *st = xcalloc(1, sizeof(*st));
    st->out = out;
    st->what = xstrdup(what);
    etcd_sum_init(&st->sum);
    /* A backup file hashes the same bytes: its hash serves etcd's check too (one pass). */
    st->sum.shared = cairn_backup_file_sha256(out, NULL, NULL) == CAIRN_OK;
    return st;
}

void etcd_stream_free(struct etcd_stream *st)
{
    if (st == NULL)
        return;
    etcd_sum_free(&st->sum);
    buf_free(&st->line);
    buf_free(&st->frame);
    free(st->blob);
    free(st->what);
    free(st);
}

uint64_t etcd_stream_bytes(const struct etcd_stream *st)
{
    return st->sum.total;
}

uint64_t etcd_stream_expected(const struct etcd_stream *st)
{
    return st->expected ? st->expected + 32 : 0;
}

/* gRPC status codes (google.golang.org/grpc/codes) as cairn codes. */
int etcd_grpc_code_status(long code, const char *msg)
{
    /* etcd 3.4 returns its auth failures as plain errors (gRPC Unknown): match the text. */
    if (strncmp(msg, "auth: ", 6) == 0 || strstr(msg, "authentication failed") != NULL ||
        strstr(msg, "permission denied") != NULL)
        return CAIRN_E_DENIED;
    switch (code) {
    case 4: /* DeadlineExceeded */ return CAIRN_E_TIMEOUT;
    case 7: /* PermissionDenied */
    case 16: /* Unauthenticated */ return CAIRN_E_DENIED;
    case 14: /* Unavailable */ return CAIRN_E_NETWORK;
    default: return CAIRN_E_PROTOCOL;
    }
}

int etcd_gateway_error(const void *root_, long http_status, const char *what, struct cairn_err *err)
{
    const json_t *root = root_;
    const json_t *e = json_object_get(root, "error");
    const char *msg = NULL;
    long code = -1;
    if (json_is_object(e)) { /* inside a stream: {"error":{"grpc_code":N,"message":"m"}} */
        msg = json_string_value(json_object_get(e, "message"));
        if (json_is_integer(json_object_get(e, "grpc_code")))
            code = (long)json_integer_value(json_object_get(e, "grpc_code"));
        if (http_status == 0 && json_is_integer(json_object_get(e, "http_code")))
            http_status = (long)json_integer_value(json_object_get(e, "http_code"));
    } else { /* before one: {"error":"m","code":N,"message":"m"} */
        msg = json_string_value(json_object_get(root, "message"));
        if (msg == NULL)
            msg = json_string_value(e);
        if (json_is_integer(json_object_get(root, "code")))
            code = (long)json_integer_value(json_object_get(root, "code"));
    }
    char safe[512];
    str_escape(safe, sizeof(safe), msg ? msg : "(no message)", msg ? strlen(msg) : 12);
    char http[32] = "";
    if (http_status > 0)
        snprintf(http, sizeof(http), ", HTTP %ld", http_status);
    return cairn_err_set(err, etcd_grpc_code_status(code, msg ? msg : ""),
                         "%s: etcd answered an error (grpc code %ld%s): %s", what, code, http,
                         safe);
}

/* remaining_bytes: a uint64 as a JSON string (proto3 JSON), absent when 0. */
static int get_remaining(const json_t *res, uint64_t *out)
{
    const json_t *v = json_object_get(res, "remaining_bytes");
    *out = 0;
    if (v == NULL)
        return 0;
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = (uint64_t)json_integer_value(v);
        return 0;
    }
    const char *s = json_string_value(v);
    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = n;
    return 0;
}

/* Where a blob belongs: the first message announces the database size (its blob plus what
 * remains); each data message must agree with it; after the data comes exactly one 32-byte
 * checksum message and nothing else. */
static int check_framing(struct etcd_stream *st, uint64_t remaining, size_t n,
                         struct cairn_err *err)
{
    if (st->trailer)
        return cairn_err_set(err, CAIRN_E_PROTOCOL, "%s: message %llu after the sha256 trailer",
                             st->what, (unsigned long long)st->messages);
    if (st->messages == 1) {
        st->expected = remaining + n;
        if (st->expected == 0 || st->expected < remaining)
            return cairn_err_set(err, CAIRN_E_PROTOCOL, "%s: first message announces no data",
                                 st->what);
    }
    if (st->data == st->expected) { /* the database is complete: this is the checksum */
        if (n != 32 || remaining != 0)
            return cairn_err_set(err, CAIRN_E_CORRUPT,
                                 "%s: expected the 32-byte sha256 trailer after %llu bytes, got "
                                 "a message of %zu bytes (remaining_bytes %llu)",
                                 st->what, (unsigned long long)st->data, n,
                                 (unsigned long long)remaining);
        st->trailer = 1;
        return CAIRN_OK;
    }
    if (st->data + n + remaining != st->expected)
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "%s: message %llu does not add up: %llu bytes so far + %zu + "
                             "remaining_bytes %llu != %llu announced",
                             st->what, (unsigned long long)st->messages,
                             (unsigned long long)st->data, n, (unsigned long long)remaining,
                             (unsigned long long)st->expected);
    st->data += n;
    return CAIRN_OK;
}

static int fail(struct etcd_stream *st, int rc, struct cairn_err *err)
{
    st->rc = rc;
    if (err != NULL)
        cairn_err_copy(&st->err, err);
    else
        cairn_err_set(&st->err, rc, "%s: failed", st->what);
    return rc;
}

/* A message's blob, decoded: check where it belongs, hash and write it. */
static int put_blob(struct etcd_stream *st, uint64_t remaining, const uint8_t *blob, size_t n,
                    struct cairn_err *err)
{
    int rc = check_framing(st, remaining, n, err);
    if (rc != CAIRN_OK)
        return rc;
    if (st->trailer && st->sum.shared) { /* everything before the trailer is written */
        rc = cairn_backup_file_sha256(st->out, st->sum.data_sha, err);
        if (rc != CAIRN_OK)
            return cairn_err_wrap(err, rc, "%s: writing the snapshot", st->what);
        st->sum.have_data_sha = 1;
    }
    etcd_sum_update(&st->sum, blob, n);
    rc = cairn_writer_write(st->out, blob, n, err);
    if (rc != CAIRN_OK)
        return cairn_err_wrap(err, rc, "%s: writing the snapshot", st->what);
    return CAIRN_OK;
}

int etcd_stream_message(struct etcd_stream *st, uint64_t remaining, const uint8_t *blob, size_t n,
                        struct cairn_err *err)
{
    if (st->rc != CAIRN_OK)
        return etcd_stream_feed(st, NULL, 0, err);
    st->messages++;
    int rc = put_blob(st, remaining, blob, n, err);
    return rc == CAIRN_OK ? CAIRN_OK : fail(st, rc, err);
}

uint64_t etcd_stream_messages(const struct etcd_stream *st)
{
    return st->messages;
}

/* One result message: decode its blob, check where it belongs, hash and write it. b64, when
 * not NULL, is the blob cut out of the line by split_blob (res then holds "" in its place). */
static int on_result(struct etcd_stream *st, const json_t *res, const char *b64, size_t b64_len,
                     struct cairn_err *err)
{
    uint64_t remaining;
    if (!json_is_object(res) || get_remaining(res, &remaining) != 0)
        return cairn_err_set(err, CAIRN_E_PROTOCOL,
                             "%s: message %llu: \"result\" is not a snapshot response", st->what,
                             (unsigned long long)st->messages);
    const json_t *b = json_object_get(res, "blob");
    if (b != NULL && !json_is_string(b))
        return cairn_err_set(err, CAIRN_E_PROTOCOL, "%s: message %llu: blob is not a string",
                             st->what, (unsigned long long)st->messages);
    if (b64 == NULL) {
        b64 = b ? json_string_value(b) : "";
        b64_len = b ? json_string_length(b) : 0;
    }
    size_t cap = b64_len / 4 * 3;
    if (cap > st->blob_cap) {
        free(st->blob);
        st->blob = xmalloc(cap);
        st->blob_cap = cap;
    }
    size_t n = 0;
    if (b64_len > 0 && cairn_base64_decode(b64, b64_len, st->blob, st->blob_cap, &n) != 0)
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "%s: message %llu: blob is not valid base64 (damaged in transit)",
                             st->what, (unsigned long long)st->messages);
    return put_blob(st, remaining, st->blob, n, err);
}

/* The gateway writes a result as {"result":{"remaining_bytes":"N","blob":"B64"}} (or with
 * the blob alone): some 44 KB, all of it blob but a few dozen bytes. jansson parsing that
 * string (copying it and checking it as UTF-8 byte by byte) was three quarters of the CPU a
 * snapshot took, so the blob is cut out: its span is decoded straight from the line, and
 * jansson parses the frame, the message with "" in the blob's place, which still checks the
 * whole structure. Returns 1 with the span and the frame in st->frame, 0 when the line does
 * not look so (no blob, an escape inside it): then the line is parsed whole. */
static int split_blob(struct etcd_stream *st, const char *p, size_t n, const char **b64,
                      size_t *b64_len)
{
    static const char key[] = "\"blob\":\"";
    const char *k = memmem(p, n, key, sizeof(key) - 1);
    if (k == NULL)
        return 0;
    const char *b = k + sizeof(key) - 1;
    const char *q = memchr(b, '"', n - (size_t)(b - p));
    if (q == NULL || memchr(b, '\\', (size_t)(q - b)) != NULL)
        return 0;
    st->frame.len = 0;
    buf_add(&st->frame, p, (size_t)(b - p));
    buf_add(&st->frame, q, n - (size_t)(q - p));
    *b64 = b;
    *b64_len = (size_t)(q - b);
    return 1;
}

/* The frame parsed when split_blob cut the blob out of the result object itself (its "blob"
 * is the "" left in its place), else NULL: the line is then parsed whole. */
static json_t *parse_frame(struct etcd_stream *st, const char *p, size_t n, const char **b64,
                           size_t *b64_len)
{
    if (!split_blob(st, p, n, b64, b64_len))
        return NULL;
    json_t *root = json_loadb((const char *)st->frame.p, st->frame.len, 0, NULL);
    const json_t *blob = json_object_get(json_object_get(root, "result"), "blob");
    if (json_object_get(root, "error") == NULL && json_is_string(blob) &&
        json_string_length(blob) == 0)
        return root;
    json_decref(root);
    *b64 = NULL;
    return NULL;
}

static int on_message(struct etcd_stream *st, const char *p, size_t n, struct cairn_err *err)
{
    if (n == 0 || (n == 1 && p[0] == '\r'))
        return CAIRN_OK;
    st->messages++;
    const char *b64 = NULL;
    size_t b64_len = 0;
    json_t *root = parse_frame(st, p, n, &b64, &b64_len);
    json_error_t je;
    if (root == NULL)
        root = json_loadb(p, n, 0, &je);
    if (root == NULL) {
        char safe[200];
        str_escape(safe, sizeof(safe), je.text, strlen(je.text));
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "%s: message %llu (%zu bytes) is not JSON (damaged in transit): %s",
                             st->what, (unsigned long long)st->messages, n, safe);
    }
    int rc;
    if (json_object_get(root, "error") != NULL)
        rc = etcd_gateway_error(root, 0, st->what, err);
    else if (json_object_get(root, "result") != NULL)
        rc = on_result(st, json_object_get(root, "result"), b64, b64_len, err);
    else
        rc = cairn_err_set(err, CAIRN_E_PROTOCOL,
                           "%s: message %llu is neither a result nor an error", st->what,
                           (unsigned long long)st->messages);
    json_decref(root);
    return rc;
}

int etcd_stream_feed(struct etcd_stream *st, const void *p, size_t n, struct cairn_err *err)
{
    if (st->rc != CAIRN_OK) {
        if (err != NULL)
            cairn_err_copy(err, &st->err);
        return st->rc;
    }
    const char *c = p;
    while (n > 0) {
        const char *nl = memchr(c, '\n', n);
        size_t take = nl ? (size_t)(nl - c) : n;
        if (st->line.len + take > ETCD_LINE_MAX)
            return fail(st,
                        cairn_err_set(err, CAIRN_E_PROTOCOL,
                                      "%s: message %llu longer than %u bytes: not an etcd "
                                      "snapshot stream",
                                      st->what, (unsigned long long)st->messages + 1,
                                      ETCD_LINE_MAX),
                        err);
        int rc = CAIRN_OK;
        if (nl != NULL && st->line.len == 0) { /* a whole line in this piece: no copy */
            rc = on_message(st, c, take, err);
        } else {
            buf_add(&st->line, c, take);
            if (nl != NULL) {
                rc = on_message(st, (const char *)st->line.p, st->line.len, err);
                st->line.len = 0;
            }
        }
        if (rc != CAIRN_OK)
            return fail(st, rc, err);
        if (nl != NULL)
            take++;
        c += take;
        n -= take;
    }
    return CAIRN_OK;
}

int etcd_stream_finish(struct etcd_stream *st, struct cairn_err *err)
{
    if (st->rc != CAIRN_OK)
        return etcd_stream_feed(st, NULL, 0, err);
    if (st->line.len > 0) { /* a last line without '\n' (the gateway ends errors so) */
        json_t *j = json_loadb((const char *)st->line.p, st->line.len, 0, NULL);
        if (j == NULL)
            return fail(st,
                        cairn_err_set(err, CAIRN_E_CORRUPT,
                                      "%s: stream truncated inside message %llu (%zu bytes of "
                                      "it, after %llu snapshot bytes)",
                                      st->what, (unsigned long long)st->messages + 1, st->line.len,
                                      (unsigned long long)st->sum.total),
                        err);
        json_decref(j);
        int rc = on_message(st, (const char *)st->line.p, st->line.len, err);
        st->line.len = 0;
        if (rc != CAIRN_OK)
            return fail(st, rc, err);
    }
    if (st->messages == 0)
        return fail(st,
                    cairn_err_set(err, CAIRN_E_CORRUPT,
                                  "%s: stream truncated: the response held no snapshot message",
                                  st->what),
                    err);
    if (st->data < st->expected || !st->trailer)
        return fail(st,
                    cairn_err_set(err, CAIRN_E_CORRUPT,
                                  "%s: stream truncated: %llu of %llu bytes and %s sha256 "
                                  "trailer",
                                  st->what, (unsigned long long)st->sum.total,
                                  (unsigned long long)st->expected + 32,
                                  st->trailer ? "the" : "no"),
                    err);
    int rc = etcd_sum_check(&st->sum, st->what, err);
    return rc == CAIRN_OK ? CAIRN_OK : fail(st, rc, err);
}
