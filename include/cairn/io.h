/* cairn: streaming IO chains (pgBackRest filter groups, libarchive write filters).
 *
 * A writer is a push stage: bytes written to it are transformed or observed and pushed to its
 * `next` stage, ending in a sink (fd, atomic file, memory, discard, storage object). A reader
 * is a pull stage reading from its `next` source. Stages own their next stage: closing the top
 * of a writer chain flushes and closes every stage below it in order; freeing frees them all.
 *
 * Freeing a writer that was never closed successfully ABORTS it: sinks with commit semantics
 * (the atomic file writer, storage objects) then discard what was written. So a typical use is
 *
 *     if (cairn_atomic_file_writer_open(path, 0600, 0, &f, &err) != CAIRN_OK) ... report ...
 *     w = cairn_hash_writer_new(f);  // takes f: freeing w frees f
 *     if (write fails || cairn_writer_close(w, &err) != CAIRN_OK) ... report ...
 *     cairn_writer_free(w);          // commits nothing that did not close cleanly
 *
 * Errors are sticky: after a stage fails, every later write/close returns the same error.
 * Memory is bounded by the stages' own buffers; nothing buffers a whole stream.
 */
#ifndef CAIRN_IO_H
#define CAIRN_IO_H

#include <stdint.h>
#include <sys/types.h>

#include "cairn/common.h"
#include "cairn/err.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CAIRN_IO_BUFSIZE (256u * 1024u)

struct cairn_writer;

struct cairn_writer_ops {
    const char *name;
    /* Consume all of buf (or fail). */
    int (*write)(struct cairn_writer *w, const void *buf, size_t len, struct cairn_err *err);
    /* Flush this stage's pending output into next (optional). The generic close then closes
     * next. Sinks commit here (fsync+rename, complete upload). */
    int (*finish)(struct cairn_writer *w, struct cairn_err *err);
    /* Release this stage's state; when the writer was not closed cleanly, abort the output. */
    void (*free)(struct cairn_writer *w);
};

struct cairn_writer {
    const struct cairn_writer_ops *ops;
    struct cairn_writer *next; /* owned */
    uint64_t bytes;            /* bytes accepted by this stage */
    int state;                 /* CAIRN_IO_OPEN, _CLOSED, _FAILED */
    struct cairn_err err;      /* sticky failure */
};

enum { CAIRN_IO_OPEN = 0, CAIRN_IO_CLOSED = 1, CAIRN_IO_FAILED = 2 };

/* Initialise the generic part of a stage; used by stage constructors. */
CAIRN_API void cairn_writer_init(struct cairn_writer *w, const struct cairn_writer_ops *ops,
                                 struct cairn_writer *next);
CAIRN_API int cairn_writer_write(struct cairn_writer *w, const void *buf, size_t len,
                                 struct cairn_err *err);
/* Finish every stage top-down; returns the first error. Idempotent. */
CAIRN_API int cairn_writer_close(struct cairn_writer *w, struct cairn_err *err);
/* Free the whole chain; aborts sinks that were not closed successfully. NULL is fine. */
CAIRN_API void cairn_writer_free(struct cairn_writer *w);
/* The explicit borrow: a stage that passes bytes through to w, which the caller keeps.
 * Closing a chain built on it flushes into w but does not close w; freeing it does not free
 * w. A function given a writer builds its stages on cairn_writer_borrow(w), so it never
 * closes or frees what it was given. */
CAIRN_API struct cairn_writer *cairn_writer_borrow(struct cairn_writer *w);

/* Sinks. Constructors that cannot fail (allocation failure aborts) return the stage.
 * Constructors that open files are fallible: they return CAIRN_OK and set *out, or a CAIRN_E_*
 * code (also when err is NULL) and leave *out NULL. */
CAIRN_API struct cairn_writer *cairn_fd_writer_new(int fd, int own_fd);
/* Write to path via a temp file in the same directory; close = fsync, rename, fsync dir.
 * Refuses to replace an existing path unless replace is set. */
CAIRN_API int cairn_atomic_file_writer_open(const char *path, int mode, int replace,
                                            struct cairn_writer **out, struct cairn_err *err);
CAIRN_API struct cairn_writer *cairn_discard_writer_new(void);
/* Growable memory sink; max_size caps it (CAIRN_E_INVALID beyond). */
CAIRN_API struct cairn_writer *cairn_mem_writer_new(size_t max_size);
CAIRN_API const uint8_t *cairn_mem_writer_data(struct cairn_writer *w, size_t *len);

/* Observer stages: pass bytes through unchanged. */
CAIRN_API struct cairn_writer *cairn_hash_writer_new(struct cairn_writer *next);
/* SHA-256 of everything written so far (valid after close). */
CAIRN_API void cairn_hash_writer_digest(struct cairn_writer *w, uint8_t out[32]);
/* The same stage computing HMAC-SHA-256 under key (keyed content hashes). */
CAIRN_API struct cairn_writer *cairn_hash_writer_new_keyed(struct cairn_writer *next,
                                                           const uint8_t key[32]);

struct cairn_reader;

struct cairn_reader_ops {
    const char *name;
    /* Read up to cap bytes; *got = 0 means end of stream. */
    int (*read)(struct cairn_reader *r, void *buf, size_t cap, size_t *got, struct cairn_err *err);
    void (*free)(struct cairn_reader *r);
    /* Optional: bytes of next this stage has used so far, excluding input read ahead and still
     * buffered (see cairn_reader_consumed). NULL: everything read from next counts. */
    uint64_t (*consumed)(const struct cairn_reader *r);
};

struct cairn_reader {
    const struct cairn_reader_ops *ops;
    struct cairn_reader *next; /* owned source, may be NULL */
    uint64_t bytes;            /* bytes returned by this stage */
    int eof;
    int failed;
    struct cairn_err err;
};

CAIRN_API void cairn_reader_init(struct cairn_reader *r, const struct cairn_reader_ops *ops,
                                 struct cairn_reader *next);
CAIRN_API int cairn_reader_read(struct cairn_reader *r, void *buf, size_t cap, size_t *got,
                                struct cairn_err *err);
/* Read exactly len bytes; a short stream is CAIRN_E_CORRUPT ("unexpected end of <what>"). */
CAIRN_API int cairn_reader_read_full(struct cairn_reader *r, void *buf, size_t len,
                                     const char *what, struct cairn_err *err);
CAIRN_API void cairn_reader_free(struct cairn_reader *r);
/* The explicit borrow for readers: reads pass through to r, which the caller keeps; freeing
 * the stage (or a chain built on it) does not free r. */
CAIRN_API struct cairn_reader *cairn_reader_borrow(struct cairn_reader *r);
/* Bytes of its source that stage r has consumed: for the decompressors, the compressed bytes
 * the decoder has taken in (not those read ahead into the stage's input buffer), so a ratio
 * of output to input is judged against what produced the output. 0 for a source stage. */
CAIRN_API uint64_t cairn_reader_consumed(const struct cairn_reader *r);

CAIRN_API struct cairn_reader *cairn_fd_reader_new(int fd, int own_fd);
/* Open path for reading (fallible: *out is NULL unless CAIRN_OK). */
CAIRN_API int cairn_file_reader_open(const char *path, struct cairn_reader **out,
                                     struct cairn_err *err);
/* Reads from caller-owned memory; the memory must outlive the reader. */
CAIRN_API struct cairn_reader *cairn_mem_reader_new(const void *data, size_t len);
CAIRN_API struct cairn_reader *cairn_hash_reader_new(struct cairn_reader *src);
CAIRN_API void cairn_hash_reader_digest(struct cairn_reader *r, uint8_t out[32]);
/* The same stage computing HMAC-SHA-256 under key. */
CAIRN_API struct cairn_reader *cairn_hash_reader_new_keyed(struct cairn_reader *src,
                                                           const uint8_t key[32]);
/* Returns at most limit bytes from src, then EOF, leaving src positioned after them. Like every
 * stage it takes src (freeing the limit frees src): to keep src, pass cairn_reader_borrow(src). */
CAIRN_API struct cairn_reader *cairn_limit_reader_new(struct cairn_reader *src, uint64_t limit);

/* ---- compression stages ---- */

enum cairn_compression {
    CAIRN_COMPRESS_NONE = 0,
    CAIRN_COMPRESS_GZIP = 1,
    CAIRN_COMPRESS_ZSTD = 2,
    /* Stored files only: zstd where it pays (see cairn_file_opts), else none. Never recorded
     * in a MANIFEST: the choice made is. */
    CAIRN_COMPRESS_AUTO = 3,
    /* Stored files of a deduplicating repository: the file is a chunk list in the chunk
     * store (docs/FORMAT.md "Chunk store"); its chunks are compressed one by one. */
    CAIRN_COMPRESS_CHUNKS = 4,
};

/* Classify a stream by its first bytes (gzip 1f8b; zstd 28b52ffd, or a skippable frame
 * 5?2a4d18 as pzstd and seekable zstd write); NONE otherwise. */
CAIRN_API enum cairn_compression cairn_detect_compression(const void *buf, size_t len);
CAIRN_API const char *cairn_compression_name(enum cairn_compression c);

/* zstd with libzstd's own worker threads (threads 0 = one per CPU, 1 = none). Output is one
 * or more standard zstd frames. level: 1..19 or negative for the fast levels. */
CAIRN_API struct cairn_writer *cairn_zstd_writer_new(struct cairn_writer *next, int level,
                                                     int threads);
/* The same, with the input's expected size (size_hint >= 0; -1: unknown): the match tables
 * and window are sized for it, as libzstd does for a known size, so a small input does not
 * pay for (allocate and clear) the tables of a large one. Any actual size is still correct;
 * past the hint only the ratio may suffer. */
CAIRN_API struct cairn_writer *cairn_zstd_writer_new_sized(struct cairn_writer *next, int level,
                                                           int threads, int64_t size_hint);
/* Decodes concatenated zstd frames, skipping skippable frames anywhere (pzstd, seekable zstd);
 * truncation or trailing garbage is CAIRN_E_CORRUPT. */
CAIRN_API struct cairn_reader *cairn_zstd_reader_new(struct cairn_reader *src);

/* gzip compressed with libdeflate in independent 1 MiB blocks on `threads` workers (0 = one
 * per CPU), each block one gzip member, written in order. Every member header is
 * 1f8b0800 00000000 00ff, as Go's compress/gzip writes it; readers that accept concatenated
 * members (Go, zlib, Python, GNU gzip) read the result as one stream. level: 1..12. */
CAIRN_API struct cairn_writer *cairn_gzip_writer_new(struct cairn_writer *next, int level,
                                                     int threads);
/* Multistream gzip reader with Go's error texts: "EOF" for empty input, "unexpected EOF" for
 * truncation, "gzip: invalid header" for non-gzip bytes (also after a member), "gzip: invalid
 * checksum" for a bad CRC-32 or ISIZE. All are CAIRN_E_CORRUPT. */
CAIRN_API struct cairn_reader *cairn_gzip_reader_new(struct cairn_reader *src);
/* Picks the decoder from the first bytes (gzip, zstd or pass-through). */
CAIRN_API struct cairn_reader *cairn_decompress_reader_new(struct cairn_reader *src);

/* ---- authenticated encryption ----
 * AES-256-GCM over 64 KiB chunks (the STREAM construction): a 16-byte header ("CRNAEAD1" and a
 * random 8-byte nonce prefix, also bound as associated data), then per chunk the ciphertext
 * and a 16-byte tag. The nonce is prefix || 32-bit chunk counter whose top bit marks the last
 * chunk, so reordering, truncation and appending are all detected. A wrong key or any change
 * is CAIRN_E_SEAL. */
#define CAIRN_AEAD_KEY_LEN 32
CAIRN_API struct cairn_writer *cairn_aead_writer_new(struct cairn_writer *next,
                                                     const uint8_t key[CAIRN_AEAD_KEY_LEN]);
CAIRN_API struct cairn_reader *cairn_aead_reader_new(struct cairn_reader *src,
                                                     const uint8_t key[CAIRN_AEAD_KEY_LEN]);

/* Pipe stage: writes reach next on a helper thread (one per stage, 768 KiB of buffers), so the
 * stages below it run in parallel with the caller and the stages above it. Errors of next come
 * back on a later write or on close. */
CAIRN_API struct cairn_writer *cairn_pipe_writer_new(struct cairn_writer *next);
/* Read-ahead stage: a helper thread reads src (running src's stages, such as decryption) into
 * 768 KiB of buffers while the caller runs the stages above; src's error comes after the bytes
 * read before it. Freeing it stops the helper after its current read. */
CAIRN_API struct cairn_reader *cairn_pipe_reader_new(struct cairn_reader *src);

/* Pump r into w until EOF. Both are borrowed: w is not closed, neither is freed. *copied may
 * be NULL. */
CAIRN_API int cairn_copy(struct cairn_reader *r, struct cairn_writer *w, uint64_t *copied,
                         struct cairn_err *err);

#ifdef __cplusplus
}
#endif

#endif
