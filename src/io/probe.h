/* Does compressing pay? The one trial behind libcairn's two compress-or-store decisions: a
 * fast level-1 compression of samples, which pays when one sample shrinks by a given share.
 * Internal. */
#ifndef CAIRN_IO_PROBE_H
#define CAIRN_IO_PROBE_H

#include <stddef.h>

/* The two decisions differ in what they choose between, so in codec and threshold. */
enum io_probe_use {
    /* Storage: zstd a stored file or stream, or keep it as it is. zstd -1 must save 1/8 of a
     * 64 KiB sample (the threshold ZFS applies per block): log text saves 77 %, while random
     * bytes, encrypted data and InfluxDB's TSM (3 %, for 3x the time of a copy) are stored,
     * since each read would pay the decompression too. */
    IO_PROBE_ZSTD,
    /* The gzip writer: deflate a 1 MiB block, or emit it as stored blocks. The output is gzip
     * either way, so the trial predicts deflate itself, and a block is stored only when
     * deflate -1 cannot save even 1/32 of a 16 KiB sample: then storing loses nothing and
     * skips level 6's fruitless match search (about 14 ms per MiB). */
    IO_PROBE_DEFLATE,
};

#define IO_PROBE_ZSTD_SAMPLE    (64u << 10)
#define IO_PROBE_DEFLATE_SAMPLE (16u << 10)

struct io_probe;

/* A reusable trial (its compressor and scratch room); aborts when memory runs out. */
struct io_probe *io_probe_new(enum io_probe_use use);
void io_probe_free(struct io_probe *p);
/* 1 when compressing at least one sample of buf (its pieces of the use's sample size, the
 * last perhaps shorter) saves the use's share; 0 when none does, or len is 0. A zstd trial
 * that fails counts as paying: compress, as without a probe. */
int io_probe_pays(struct io_probe *p, const void *buf, size_t len);
/* The same with a trial made for one decision. */
int io_compress_pays(enum io_probe_use use, const void *buf, size_t len);

#endif
