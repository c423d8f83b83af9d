/* Internal pieces of the snapshot service: big-endian integers, shard IDs, the meta.proto
 * subset, sockets with deadlines and ustar streams. Not installed. */
#ifndef CAIRN_SERVICE_INTERNAL_H
#define CAIRN_SERVICE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "cairn/err.h"
#include "cairn/io.h"
#include "cairn/influx.h"
#include "common/buf.h"
#include "io/net.h"

void influx_u64be_put(uint8_t *p, uint64_t v);
uint64_t influx_u64be_get(const uint8_t *p);
/* Canonical decimal shard ID (no sign, no leading zeros); 0 or -1. */
int influx_parse_id(const char *s, uint64_t *id);
/* Go's time.Time RFC 3339 (nano, trimmed) text. */
void influx_time_format(const struct cairn_influx_time *t, char *out, size_t cap);

/* ---- meta.proto subset (services/meta/internal/meta.proto) ----
 * Fields this code does not model are kept as raw encoded fields and written back in field
 * number order, so a round trip preserves users, nodes, CQs and subscriptions. */
struct pb_raw {
    uint32_t field;
    uint8_t *bytes; /* tag + value as read */
    size_t len;
};
struct pb_raws {
    struct pb_raw *v;
    size_t n;
};

struct meta_shard {
    uint64_t id;
    struct pb_raws raw; /* OwnerIDs, Owners */
};
struct meta_sg {
    uint64_t id;
    int64_t start, end, deleted_at, truncated_at;
    int has_truncated;
    struct meta_shard *shards;
    size_t nshards;
    struct pb_raws raw;
};
struct meta_rp {
    char *name;
    int64_t duration, sg_duration;
    uint32_t replica_n;
    struct meta_sg *sgs;
    size_t nsgs;
    struct pb_raws raw; /* Subscriptions */
};
struct meta_db {
    char *name;
    char *default_rp;
    struct meta_rp *rps;
    size_t nrps;
    struct pb_raws raw; /* ContinuousQueries */
};
struct meta_data {
    uint64_t term, index, cluster_id, max_node_id, max_sg_id, max_shard_id;
    struct meta_db *dbs;
    size_t ndbs;
    struct pb_raws raw; /* Nodes, Users, DataNodes, MetaNodes */
};

int meta_decode(const uint8_t *buf, size_t len, struct meta_data *m, struct cairn_err *err);
void meta_encode(const struct meta_data *m, struct buf *out);
void meta_free(struct meta_data *m);
struct meta_db *meta_find_db(const struct meta_data *m, const char *name);
struct meta_rp *meta_find_rp(const struct meta_db *d, const char *name);
/* Where a shard lives; returns 0 and sets db and rp, or -1. */
int meta_find_shard(const struct meta_data *m, uint64_t id, const struct meta_db **db,
                    const struct meta_rp **rp);
/* ImportData of influxd 1.6 (see the spec, 4.7): copies the selected dbs/rps of src into dst
 * under their new names, renumbers shard groups and shards from dst's maxima, drops owners,
 * CQs and subscriptions. Fills map. dst is unchanged on failure. */
int meta_import(struct meta_data *dst, const struct meta_data *src,
                const struct cairn_influx_request *req, struct cairn_influx_idmap *map,
                struct cairn_err *err);

/* ---- sockets ----
 * Connections, waits and TLS are io's (io/net.h: net_dial, net_wait, struct net_conn, the
 * net_conn_ calls and tls_); cairn_influx_tls_* (tls.c) are the public names of its TLS
 * contexts. */

/* ---- shard tar streams (shard_tar.c, over archive/tar.h) ---- */
struct influx_tar_out;
/* Go archive/tar ustar into w (borrowed): 512-byte blocks, no record padding. */
struct influx_tar_out *influx_tar_out_new(struct cairn_writer *w);
int influx_tar_add_file(struct influx_tar_out *t, const char *name, const char *path,
                        struct cairn_err *err);
/* An entry of size bytes read from fd's current position (what names it in errors). */
int influx_tar_add_fd(struct influx_tar_out *t, const char *name, int fd, uint64_t size,
                      int64_t mtime, const char *what, struct cairn_err *err);
/* Write the two zero blocks. */
int influx_tar_out_close(struct influx_tar_out *t, struct cairn_err *err);
void influx_tar_out_free(struct influx_tar_out *t);

/* Read entries from r: for each regular file, cb gets its name and a reader over its data
 * (valid only during the call; unread data is skipped). Non-regular entries are skipped. */
typedef int (*influx_tar_entry_fn)(void *ctx, const char *name, int64_t mtime, uint64_t size,
                                   struct cairn_reader *data, struct cairn_err *err);
int influx_tar_each(struct cairn_reader *r, influx_tar_entry_fn cb, void *ctx,
                    struct cairn_err *err);

/* Copy a whole tar stream from r to w, renaming entries to <db>/<rp>/<id>/<rest> (see
 * cairn_influx_shard_upload). */
int influx_tar_rename(struct cairn_reader *r, struct cairn_writer *w, const char *db,
                      const char *rp, uint64_t id, struct cairn_err *err);

/* ---- shard exports (export.c) ---- */
/* t as Unix ns, saturated to int64; Go's zero time (a field left out) is if_zero. */
int64_t influx_time_ns(const struct cairn_influx_time *t, int64_t if_zero);
/* Add the shard file at fd (read by offset) to t as name, cut to [start, end] (Unix ns): a
 * .tsm file keeps exactly the values in the window (left out when none), any other file is
 * added as it is. tmpdir (NULL: $TMPDIR or /tmp) holds the rewritten file meanwhile. */
int influx_export_add(struct influx_tar_out *t, const char *name, int fd, int64_t mtime,
                      int64_t start, int64_t end, const char *tmpdir, struct cairn_err *err);
/* Copy a shard tar stream from r to w with every entry cut as influx_export_add does. */
int influx_tar_export(struct cairn_reader *r, struct cairn_writer *w, int64_t start, int64_t end,
                      const char *tmpdir, struct cairn_err *err);

#endif
