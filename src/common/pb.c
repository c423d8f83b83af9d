/* The varint and protobuf field reader (pb.h). */
#include "common/pb.h"

size_t pb_uvarint(const uint8_t *p, size_t len, uint64_t *v)
{
    uint64_t x = 0;
    for (size_t i = 0; i < len && i < 10; i++) {
        if (i == 9 && p[i] > 1)
            return 0;
        x |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if (p[i] < 0x80) {
            *v = x;
            return i + 1;
        }
    }
    return 0;
}

void buf_add_uvarint(struct buf *b, uint64_t v)
{
    uint8_t tmp[10];
    size_t n = 0;
    while (v >= 0x80) {
        tmp[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    tmp[n++] = (uint8_t)v;
    buf_add(b, tmp, n);
}

static int varint(struct pb *r, uint64_t *v)
{
    size_t n = pb_uvarint(r->p, (size_t)(r->end - r->p), v);
    r->p += n;
    return n > 0 ? 0 : -1;
}

int pb_next(struct pb *r, struct pb_field *f)
{
    uint64_t tag, n;
    f->start = r->p;
    if (varint(r, &tag) != 0 || (tag >> 3) == 0 || (tag >> 3) > 0x1FFFFFFF)
        return -1;
    f->num = (uint32_t)(tag >> 3);
    f->wt = (unsigned)(tag & 7);
    switch (f->wt) {
    case 0: return varint(r, &f->v);
    case 1:
    case 5:
        n = f->wt == 1 ? 8 : 4;
        if ((uint64_t)(r->end - r->p) < n)
            return -1;
        r->p += n;
        return 0;
    case 2:
        if (varint(r, &n) != 0 || n > (uint64_t)(r->end - r->p))
            return -1;
        f->sub.p = r->p;
        f->sub.end = r->p + n;
        r->p += n;
        return 0;
    default: return -1; /* groups: none of the messages read here use them */
    }
}
