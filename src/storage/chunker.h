/* Content-defined chunking: a gear-hash chunker of the FastCDC family with normalized chunk
 * sizes (docs/FORMAT.md "Chunker"). Streaming: bytes are pushed in pieces of any size and the
 * chunker says where each chunk ends, so a boundary depends only on the 64 bytes before it
 * and on the distance from the previous boundary; an insertion moves no boundary beyond the
 * first one it does not touch. Internal to the storage module. */
#ifndef CAIRN_STORAGE_CHUNKER_H
#define CAIRN_STORAGE_CHUNKER_H

#include <stddef.h>
#include <stdint.h>

/* Limits of the repository config's chunker parameters. avg is a power of two. */
#define CHUNKER_MIN_FLOOR (4u * 1024u)
#define CHUNKER_MAX_CEIL  (64u * 1024u * 1024u)
#define CHUNKER_LEVEL     2 /* normalization: avg's bits +2 before avg, -2 after */

struct chunker_params {
    uint32_t min, avg, max;
};

struct chunker {
    uint64_t gear[256];
    uint64_t mask_s, mask_l; /* strict before avg, loose after */
    uint32_t min, avg, max;
    uint64_t fp;  /* gear hash of the bytes since min */
    uint64_t len; /* bytes of the current chunk pushed so far */
};

/* 0 when p is valid: 4 KiB <= min < avg <= max <= 64 MiB, avg a power of two >= 64 KiB. */
int chunker_params_check(const struct chunker_params *p);
/* The gear table is derived from seed (32 bytes): gear[i] = the first 8 bytes, little
 * endian, of SHA-256(seed || byte i). */
void chunker_init(struct chunker *c, const struct chunker_params *p, const uint8_t seed[32]);
/* Push up to n bytes: returns how many of them belong to the current chunk; *cut is set to 1
 * when the chunk ends after them (the next byte starts a new chunk), else 0 (then all n were
 * taken). The end of the stream ends the last chunk (the caller's business). */
size_t chunker_push(struct chunker *c, const uint8_t *p, size_t n, int *cut);
/* Forget the current chunk (a new stream starts). */
void chunker_reset(struct chunker *c);

#endif
