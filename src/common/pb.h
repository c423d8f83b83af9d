/* Internal: the varint and protobuf wire-format reader every module shares (InfluxDB's
 * meta.proto and TSM blocks, etcd's gRPC messages), and the varint writer. Not installed. */
#ifndef CAIRN_PB_H
#define CAIRN_PB_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

/* An unsigned varint (LEB128) as Go's binary.Uvarint and protobuf read it: the bytes used, or
 * 0 when p[0..len) is cut short or the varint overflows 64 bits. */
size_t pb_uvarint(const uint8_t *p, size_t len, uint64_t *v);
/* Append v as an unsigned varint. */
void buf_add_uvarint(struct buf *b, uint64_t v);

/* A protobuf message being read, and one of its fields. */
struct pb {
    const uint8_t *p, *end;
};
struct pb_field {
    uint32_t num;
    unsigned wt;          /* wire type: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32 */
    uint64_t v;           /* wt 0: the value */
    struct pb sub;        /* wt 2: the payload */
    const uint8_t *start; /* where the field's tag began */
};
/* Read the next field of r: 0, or -1 for bad wire data (field number 0 or above 2^29 - 1, a
 * group, a varint or length past the end). */
int pb_next(struct pb *r, struct pb_field *f);

#endif
