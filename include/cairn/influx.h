/* cairn: snapshot service and client, wire-compatible with the InfluxDB 1.6 snapshotter.
 *
 * Wire format in short (docs/PROTOCOL.md has the details): a connection starts with the mux
 * byte 3, then a request type byte, then (except for type 7) one JSON object and '\n'. One
 * request per connection; every response ends at EOF. The server never sends error text: a
 * failed request is logged with the peer address and the connection closed.
 *
 * Unlike influxd, the server puts an idle deadline on every read and write, caps concurrent
 * connections and bounds the JSON request and upload sizes.
 */
#ifndef CAIRN_INFLUX_H
#define CAIRN_INFLUX_H

#include <stdint.h>

#include "cairn/common.h"
#include "cairn/err.h"
#include "cairn/io.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CAIRN_INFLUX_MUX_HEADER 3
#define CAIRN_INFLUX_META_MAGIC 0x59590101ULL
/* Go's zero time.Time, 0001-01-01T00:00:00Z, in Unix seconds. */
#define CAIRN_INFLUX_ZERO_TIME (-62135596800LL)
/* Largest JSON request line the server reads. */
#define CAIRN_INFLUX_MAX_JSON (64u * 1024u)

enum cairn_influx_type {
    CAIRN_INFLUX_SHARD_BACKUP = 0,
    CAIRN_INFLUX_METASTORE_BACKUP = 1,
    CAIRN_INFLUX_SERIES_FILE_BACKUP = 2, /* defined by 1.6, never served */
    CAIRN_INFLUX_DATABASE_INFO = 3,
    CAIRN_INFLUX_RP_INFO = 4,
    CAIRN_INFLUX_SHARD_EXPORT = 5,
    CAIRN_INFLUX_META_UPDATE = 6,
    CAIRN_INFLUX_SHARD_UPDATE = 7,
};

/* A point in time as Go's time.Time: Unix seconds (may be negative) plus nanoseconds. */
struct cairn_influx_time {
    int64_t sec;
    long nsec;
};

/* snapshotter.Request of 1.5+. Strings are "" when absent, never NULL after decode. */
struct cairn_influx_request {
    uint8_t type; /* JSON "Type" (the type byte is what the server dispatches on) */
    char *backup_db;
    char *restore_db;
    char *backup_rp;
    char *restore_rp;
    uint64_t shard_id;
    struct cairn_influx_time since, export_start, export_end;
    int64_t upload_size;
};

/* Zero a request: every time is Go's zero time, every string "". */
CAIRN_API void cairn_influx_request_init(struct cairn_influx_request *req);
CAIRN_API void cairn_influx_request_clear(struct cairn_influx_request *req);

/* Find the end of the first JSON value in buf (leading whitespace allowed). Returns 1 and sets
 * *end (one past the value) when complete, 0 when more bytes are needed, CAIRN_E_PROTOCOL when
 * the bytes can never form a JSON object. */
CAIRN_API int cairn_influx_json_scan(const uint8_t *buf, size_t len, size_t *end);

/* Decode a request object as Go's encoding/json would: keys case-insensitive, unknown keys
 * ignored, null leaves a field zero, times RFC 3339, numbers range-checked. */
CAIRN_API int cairn_influx_request_decode(const char *json, size_t len,
                                          struct cairn_influx_request *req, struct cairn_err *err);

/* Encode as the Go client does: all ten keys in order, compact, followed by '\n'. malloc'd. */
CAIRN_API char *cairn_influx_request_encode(const struct cairn_influx_request *req, size_t *len);

/* Old shard ID -> new shard ID pairs returned by a metastore upload. */
struct cairn_influx_idmap {
    size_t n;
    uint64_t (*pairs)[2];
};
CAIRN_API void cairn_influx_idmap_free(struct cairn_influx_idmap *m);
/* New ID for old, or 0 when absent. */
CAIRN_API uint64_t cairn_influx_idmap_get(const struct cairn_influx_idmap *m, uint64_t old_id);

/* ---- Provider: where the served data comes from ----
 *
 * The server calls these from connection threads, concurrently. A callback returning
 * CAIRN_E_NOTFOUND makes the server log "... not found" and close, as influxd does. */
struct cairn_influx_provider {
    void *ctx;
    /* The raw meta.Data protobuf (malloc'd into *blob). */
    int (*meta_data)(void *ctx, uint8_t **blob, size_t *len, struct cairn_err *err);
    /* Shard paths "<db>/<rp>/<id>" for db (NULL or "": all databases) and rp (NULL: all),
     * in meta order, only shards present locally. *paths is a malloc'd array of malloc'd
     * strings. Missing db or rp: CAIRN_E_NOTFOUND. */
    int (*shard_paths)(void *ctx, const char *db, const char *rp, char ***paths, size_t *n,
                       struct cairn_err *err);
    /* Write a ustar stream of the shard's files modified strictly after since into out
     * (borrowed: never closed or freed). Entry names "<db>/<rp>/<id>/<file>". */
    int (*shard_backup)(void *ctx, uint64_t shard_id, const struct cairn_influx_time *since,
                        struct cairn_writer *out, struct cairn_err *err);
    /* Optional (NULL: type 5 is logged as unsupported). The shard's files cut to [start, end]
     * (Go's zero time: open on that side), into out (borrowed, as for shard_backup). */
    int (*shard_export)(void *ctx, uint64_t shard_id, const struct cairn_influx_time *start,
                        const struct cairn_influx_time *end, struct cairn_writer *out,
                        struct cairn_err *err);
    /* Import a meta.Data blob per the request's BackupDatabase/RestoreDatabase/... fields and
     * fill the shard ID map. Optional (NULL: restore requests are refused). */
    int (*meta_import)(void *ctx, const uint8_t *blob, size_t len,
                       const struct cairn_influx_request *req, struct cairn_influx_idmap *map,
                       struct cairn_err *err);
    /* Install the shard files of a ustar stream (tar borrowed: read, never freed); all or
     * nothing. Optional. */
    int (*shard_import)(void *ctx, uint64_t shard_id, struct cairn_reader *tar,
                        struct cairn_err *err);
    /* 1 when the shard already holds files (an upload would replace live data), 0 when it
     * holds none, or a CAIRN_E_* code. Optional: without it, shard uploads are refused unless
     * the server allows overwrites. */
    int (*shard_has_files)(void *ctx, uint64_t shard_id, struct cairn_err *err);
    void (*free)(void *ctx);
};

/* The directory provider: data_dir laid out <db>/<rp>/<shard-id>/<files>. Its metadata is
 * the meta.Data protobuf in meta_path (NULL: <data_dir>/meta.db), the format influxd keeps
 * in its meta directory; when that file does not exist the metadata is derived from the
 * directory tree (see docs/PROTOCOL.md). Shard backups hard-link the shard's files into
 * <data_dir>/.cairn-snap/ first, so files replaced while streaming do not tear the tar. */
CAIRN_API int cairn_influx_dir_provider_new(const char *data_dir, const char *meta_path,
                                            struct cairn_influx_provider *out,
                                            struct cairn_err *err);

/* ---- Server ---- */

/* ---- TLS (optional, OpenSSL) ----
 * cairnd serve with a certificate speaks TLS to clients that open with a TLS handshake and,
 * given a CA file, requires client certificates that chain to it. cairn backup and restore
 * connect with TLS when given TLS options. influxd speaks only the plain protocol. */
struct cairn_influx_tls_opts {
    const char *ca_file;     /* PEM. Client: the CAs the server's certificate must chain to
                              * (NULL: the system's). Server: the CAs client certificates must
                              * chain to (NULL: none are asked for). */
    const char *cert_file;   /* PEM chain. Server: required. Client: shown when asked. */
    const char *key_file;    /* PEM private key; NULL: in cert_file */
    const char *server_name; /* client: the DNS name or IP the server's certificate must name;
                              * NULL: the host of the address */
};
struct cairn_tls;
CAIRN_API int cairn_influx_tls_server_new(const struct cairn_influx_tls_opts *opts,
                                          struct cairn_tls **out, struct cairn_err *err);
CAIRN_API int cairn_influx_tls_client_new(const struct cairn_influx_tls_opts *opts,
                                          struct cairn_tls **out, struct cairn_err *err);
CAIRN_API void cairn_influx_tls_free(struct cairn_tls *t);

struct cairn_influx_server_opts {
    const char *listen;      /* "HOST:PORT"; NULL = "127.0.0.1:8088"; port 0 picks one */
    unsigned max_conns;      /* 0 = 64; connections beyond are closed at once, with a log line */
    int idle_timeout_ms;     /* per read/write; 0 = 30000 */
    int request_timeout_ms;  /* to receive mux byte, type and JSON; 0 = 30000 */
    uint64_t max_upload;     /* largest metastore upload accepted; 0 = 256 MiB */
    int request_deadline_ms; /* whole request, accept to close; 0 = 3600000 */
    unsigned max_per_addr;   /* connections from one address; 0 = min(16, max_conns) */
    uint64_t mem_budget;     /* metastore imports in memory at once; 0 = 64 MiB (a larger
                              * single upload runs alone) */
    int64_t slow_rate;       /* when the slots (or an address's) are full, the slowest
                              * connection under this many bytes/s, 2 s or older, is dropped
                              * for the newcomer; 0 = 1024, negative = never drop */
    const char *staging_dir; /* uploads are received into unnamed files here; NULL = /tmp */
    int allow_restore;       /* accept restore uploads (types 6, 7); off = refused */
    int allow_overwrite;     /* shard uploads may replace a shard's existing files */
    struct cairn_tls *tls;   /* not owned, outlives the server; NULL: plain only */
    int allow_plain;         /* with tls: also serve plain connections (influxd clients) */
};

struct cairn_influx_server;

/* Bind and listen (the port is known when this returns). The provider is owned by the server
 * from then on, also when this fails. */
CAIRN_API int cairn_influx_server_new(const struct cairn_influx_server_opts *opts,
                                      const struct cairn_influx_provider *provider,
                                      struct cairn_influx_server **out, struct cairn_err *err);
/* Bound address, e.g. "127.0.0.1:41235". */
CAIRN_API const char *cairn_influx_server_address(const struct cairn_influx_server *s);
/* Accept and serve until cairn_influx_server_stop; then waits for open connections (they end
 * at their deadlines at the latest). */
CAIRN_API int cairn_influx_server_run(struct cairn_influx_server *s, struct cairn_err *err);
/* Async-signal-safe: makes run() return. */
CAIRN_API void cairn_influx_server_stop(struct cairn_influx_server *s);
CAIRN_API void cairn_influx_server_free(struct cairn_influx_server *s);

/* ---- Client ---- */

struct cairn_influx_client {
    const char *addr;       /* "HOST:PORT" */
    int connect_timeout_ms; /* 0 = 10000 */
    int io_timeout_ms;      /* idle timeout per read/write; 0 = 60000 */
    /* May be NULL; once nonzero (read atomically), connects, reads and request writes stop
     * with CAIRN_E_CANCELLED within a fraction of a second, even while the peer is silent. */
    const volatile int *cancel;
    struct cairn_tls *tls; /* from cairn_influx_tls_client_new, not owned; NULL: plain */
};

/* Type 1: the whole response (envelope) into out (borrowed: written, never closed or freed).
 * Checks the magic and lengths. */
CAIRN_API int cairn_influx_metastore_backup(const struct cairn_influx_client *c,
                                            struct cairn_writer *out, uint64_t *bytes,
                                            struct cairn_err *err);
/* Types 3 (rp NULL) and 4: shard paths, split into db, rp and id. A server closing without a
 * reply (missing db/rp) is CAIRN_E_NOTFOUND. */
struct cairn_influx_shard_ref {
    char *db;
    char *rp;
    uint64_t id;
};
CAIRN_API int cairn_influx_shard_list(const struct cairn_influx_client *c, const char *db,
                                      const char *rp, struct cairn_influx_shard_ref **refs,
                                      size_t *n, struct cairn_err *err);
CAIRN_API void cairn_influx_shard_refs_free(struct cairn_influx_shard_ref *refs, size_t n);
/* Type 0: the shard's tar stream into out (borrowed: written, never closed or freed). since
 * NULL = everything. The stream must end with the tar trailer; a truncated stream is
 * CAIRN_E_PROTOCOL. */
CAIRN_API int cairn_influx_shard_backup(const struct cairn_influx_client *c, const char *db,
                                        const char *rp, uint64_t shard_id,
                                        const struct cairn_influx_time *since,
                                        struct cairn_writer *out, uint64_t *bytes,
                                        struct cairn_err *err);
/* Type 5: the shard's files cut to the window [start, end] (Go's zero time: open on that
 * side) into out (borrowed). The reply is spooled to an unnamed file in $TMPDIR, then every
 * TSM file is cut to exactly the values in the window: influxd keeps whole blocks across the
 * window's edges, cairnd serve does not. *bytes is what was written to out. */
CAIRN_API int cairn_influx_shard_export(const struct cairn_influx_client *c, const char *db,
                                        const char *rp, uint64_t shard_id,
                                        const struct cairn_influx_time *start,
                                        const struct cairn_influx_time *end,
                                        struct cairn_writer *out, uint64_t *bytes,
                                        struct cairn_err *err);
/* Type 6: upload a raw meta.Data blob (JSON, '\n' and blob in one write) and read the ID map.
 * An empty map is CAIRN_E_EXISTS ("database may already exist"). */
CAIRN_API int cairn_influx_meta_upload(const struct cairn_influx_client *c, const char *db,
                                       const char *newdb, const char *rp, const char *newrp,
                                       const uint8_t *blob, size_t len,
                                       struct cairn_influx_idmap *map, struct cairn_err *err);
/* Type 7: stream the tar from src (borrowed: read, never freed) to shard new_id, renaming
 * every entry to <db>/<rp>/<new_id>/<rest> (db or rp NULL keeps the entry's own). */
CAIRN_API int cairn_influx_shard_upload(const struct cairn_influx_client *c, uint64_t new_id,
                                        const char *db, const char *rp, struct cairn_reader *src,
                                        uint64_t *bytes, struct cairn_err *err);

/* Split a metastore envelope into its meta.Data blob (pointer into buf). */
CAIRN_API int cairn_influx_meta_envelope_blob(const uint8_t *buf, size_t len, const uint8_t **blob,
                                              size_t *blob_len, struct cairn_err *err);

#ifdef __cplusplus
}
#endif

#endif
