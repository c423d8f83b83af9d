/* Internal: the etcd 3.4 protocol core the etcd source driver wraps. Not installed.
 *
 * A snapshot is etcd's Maintenance.Snapshot stream, read over gRPC (HTTP/2, as etcdctl does)
 * or, when the peer does not answer in gRPC, through the v3 gRPC gateway (POST
 * /v3/maintenance/snapshot): one JSON message per line, {"result":{"remaining_bytes":
 * "N","blob":"<base64>"}}. Either way the blobs concatenated are the bbolt database followed
 * by a 32-byte SHA-256 of it. The bytes are stored exactly as etcd sends them (trailer included),
 * which is what `etcdctl snapshot save` writes and `etcdctl snapshot restore` expects.
 * Checked against etcd 3.4.23 (Debian): auth failures come as gRPC Unknown, HTTP 500, in the
 * in-stream error form; a database under 32 KiB is one message without remaining_bytes.
 */
#ifndef CAIRN_SOURCE_ETCD_H
#define CAIRN_SOURCE_ETCD_H

#include <stdint.h>

#include "cairn/err.h"
#include "cairn/io.h"

/* How to reach one etcd member. Only url is required; every string is borrowed. */
struct etcd_conn_opts {
    const char *url;       /* http://host:port or https://host:port (no path, no user-info) */
    const char *ca_file;   /* https: trust this CA bundle (NULL: the system's) */
    const char *cert_file; /* https: client certificate (etcd --client-cert-auth) */
    const char *key_file;  /* its key (NULL: in cert_file) */
    /* etcd auth (a user with the root role); NULL user: no authentication. The password is
     * sent to /v3/auth/authenticate only and never appears in an error. */
    const char *user;
    const char *password;
    long connect_timeout_ms;    /* 0: 30 s */
    long stall_timeout_s;       /* no byte for this long fails the transfer; 0: 120 s */
    long timeout_ms;            /* the whole snapshot; 0: no limit */
    const volatile int *cancel; /* nonzero stops the transfer with CAIRN_E_CANCELLED */
    /* Called as bytes arrive: snapshot bytes so far and the expected total (trailer
     * included; 0 until the first message says). Optional. */
    void (*progress)(void *arg, uint64_t bytes, uint64_t total);
    void *progress_arg;
};

/* Take a snapshot of the member at o->url and write it to out (borrowed: never closed or
 * freed here). Returns CAIRN_OK only when the whole stream arrived and etcd's trailing
 * SHA-256 matched the bytes before it; *bytes (may be NULL) is then the snapshot's length,
 * trailer included. On failure out has received a partial stream: the caller must not
 * commit it. Errors: the member unreachable or refused (CAIRN_E_NETWORK, naming the URL),
 * a gateway or HTTP error (CAIRN_E_DENIED for auth failures, CAIRN_E_PROTOCOL, or
 * CAIRN_E_NETWORK for Unavailable), a stream cut short (CAIRN_E_NETWORK or CAIRN_E_CORRUPT,
 * "truncated"), a damaged stream or checksum mismatch (CAIRN_E_CORRUPT), a stall
 * (CAIRN_E_TIMEOUT), the cancel flag (CAIRN_E_CANCELLED). */
int etcd_snapshot(const struct etcd_conn_opts *o, struct cairn_writer *out, uint64_t *bytes,
                  struct cairn_err *err);

/* The restore side. etcd restores a snapshot with `etcdctl snapshot restore FILE`; a stored
 * snapshot is written back as that FILE (path, mode 0600, atomically, never replacing an
 * existing file) from in (borrowed), checking the trailing SHA-256 as it streams, so a
 * damaged stored copy is refused (CAIRN_E_CORRUPT) and leaves no file. */
int etcd_restore_file(struct cairn_reader *in, const char *path, uint64_t *bytes,
                      struct cairn_err *err);

/* `etcdctl snapshot restore FILE --data-dir DIR` for a new member. The optional fields are
 * passed on when set (etcdctl's defaults otherwise: name "default", cluster
 * "default=http://localhost:2380"). */
struct etcd_restore_opts {
    const char *etcdctl; /* program to run; NULL: "etcdctl" from PATH */
    const char *name;
    const char *initial_cluster;
    const char *initial_cluster_token;
    const char *initial_advertise_peer_urls;
};

/* Runs etcdctl (posix_spawn, no shell) to build data_dir from the snapshot file. data_dir
 * must not exist (CAIRN_E_EXISTS); etcdctl missing is CAIRN_E_NOTFOUND naming the Debian
 * package; a failure of etcdctl is CAIRN_E_CORRUPT when it says the hash is wrong, else
 * CAIRN_E_IO, with the start of its output in the message. o may be NULL. */
int etcd_restore_into(const char *file, const char *data_dir, const struct etcd_restore_opts *o,
                      struct cairn_err *err);

/* ---- the stream, apart from HTTP (used by etcd_snapshot; tests feed it directly) ---- */

/* The trailer check: every byte goes through etcd_sum_update; the last 32 are held back
 * from the hash until more arrive, so at the end they are etcd's digest of the rest. Shared
 * (set after init): nothing is hashed here; the caller puts the SHA-256 of the bytes before
 * the trailer, taken from the backup file's own hash, in data_sha. */
struct etcd_sum {
    void *h; /* struct cairn_sha256 */
    uint8_t tail[32];
    size_t tail_len;
    uint64_t total; /* bytes seen */
    int shared;
    int have_data_sha;
    uint8_t data_sha[32];
};
void etcd_sum_init(struct etcd_sum *s);
void etcd_sum_update(struct etcd_sum *s, const uint8_t *p, size_t n);
/* CAIRN_OK when the stream so far is data || sha256(data) with a whole number of 512-byte
 * pages of data (etcd's own test); CAIRN_E_CORRUPT otherwise. what names the stream. */
int etcd_sum_check(const struct etcd_sum *s, const char *what, struct cairn_err *err);
void etcd_sum_free(struct etcd_sum *s);

struct etcd_stream;
/* A parser for the gateway's message stream writing blobs to out (borrowed). what names the
 * source in messages ("etcd snapshot from http://..."). */
struct etcd_stream *etcd_stream_new(struct cairn_writer *out, const char *what);
/* Feed response bytes in pieces of any size (a message may span many). Fails on a gateway
 * error message, a damaged message or a write error of out. */
int etcd_stream_feed(struct etcd_stream *st, const void *p, size_t n, struct cairn_err *err);
/* The response ended: parse a last unterminated line, check completeness and the trailer. */
int etcd_stream_finish(struct etcd_stream *st, struct cairn_err *err);
/* One message already decoded (the gRPC transport: SnapshotResponse's remaining_bytes and
 * blob), checked and written as a gateway message would be. */
int etcd_stream_message(struct etcd_stream *st, uint64_t remaining, const uint8_t *blob, size_t n,
                        struct cairn_err *err);
uint64_t etcd_stream_messages(const struct etcd_stream *st);
/* Snapshot bytes written to out so far, and the total the messages announce (0: unknown). */
uint64_t etcd_stream_bytes(const struct etcd_stream *st);
uint64_t etcd_stream_expected(const struct etcd_stream *st);
void etcd_stream_free(struct etcd_stream *st);

/* The error a gateway error object describes ({"error":"m","code":N,...} before a stream, or
 * {"error":{"grpc_code":N,"message":"m",...}} inside one), as a cairn code with its message;
 * http_status 0 when unknown. root is a json_t. */
int etcd_gateway_error(const void *root, long http_status, const char *what, struct cairn_err *err);
/* A gRPC status code (msg: its message) as a cairn code. */
int etcd_grpc_code_status(long code, const char *msg);

#endif
