/* InfluxDB 1.x TSM files: block codecs (tsm_codec.c) and the time-window filter (tsm.c).
 * Not installed. */
#ifndef CAIRN_INFLUX_TSM_H
#define CAIRN_INFLUX_TSM_H

#include <stddef.h>
#include <stdint.h>

#include "cairn/err.h"
#include "common/buf.h"
#include "common/pb.h"

/* Block types (tsm1/encoding.go). */
#define TSM_FLOAT    0
#define TSM_INTEGER  1
#define TSM_BOOLEAN  2
#define TSM_STRING   3
#define TSM_UNSIGNED 4

/* Bounds against damaged files: influxd writes blocks of at most 1000 values (its
 * max-points-per-block) of a few KiB. */
#define TSM_MAX_VALUES (1u << 20)
#define TSM_MAX_BLOCK  (16u << 20)

/* Decoded values: timestamps, or the values of one block as 64-bit words (float bits,
 * integers, 0/1), or for strings the decoded bytes (str) with each string's offset in u. */
struct tsm_values {
    uint64_t *u;
    size_t n, cap;
    struct buf str;
};
void tsm_values_free(struct tsm_values *v);

int tsm_decode_times(const uint8_t *p, size_t len, struct tsm_values *t, struct cairn_err *err);
void tsm_encode_times(const uint64_t *t, size_t n, struct buf *out);
int tsm_decode_values(uint8_t type, const uint8_t *p, size_t len, struct tsm_values *v,
                      struct cairn_err *err);
/* Encode values [lo, hi) of v. */
void tsm_encode_values(uint8_t type, const struct tsm_values *v, size_t lo, size_t hi,
                       struct buf *out);

/* What tsm_filter made of a file. */
enum tsm_verdict {
    TSM_KEEP_WHOLE = 0, /* every value in the window: use the file as it is (out untouched) */
    TSM_DROP = 1,       /* no value in the window (out untouched) */
    TSM_FILTERED = 2,   /* out holds a TSM file with exactly the values in the window */
};

/* Read the TSM file in (by offset; its position is not used) and keep only the values whose
 * time lies in [start, end] (Unix ns, both inclusive): whole blocks inside the window are
 * copied as they are, blocks across its edges are decoded and encoded again with just the
 * values inside. out is written from its current position. Every block read is checked
 * against its CRC-32. tmpdir (NULL: $TMPDIR or /tmp) holds the new index while the blocks
 * are written. */
int tsm_filter(int in, int out, int64_t start, int64_t end, const char *tmpdir,
               enum tsm_verdict *verdict, uint64_t *out_size, struct cairn_err *err);

#endif
