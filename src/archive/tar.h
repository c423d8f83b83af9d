/* Internal tar layer of the snapshot archive (spec: consul-snapshot-format.md sections 3, 8, 12).
 *
 * The writer emits exactly the bytes Go's archive/tar writes for the snapshot members (USTAR,
 * a PAX 'x' size record only when a member is 8 GiB or larger). The reader follows Go's
 * archive/tar reader: same accepted dialects, same end-of-archive leniency, same error texts. */
#ifndef CAIRN_ARCHIVE_TAR_H
#define CAIRN_ARCHIVE_TAR_H

#include <stdint.h>

#include "cairn/io.h"

#define TAR_BLOCK 512
/* Largest value an 11-digit octal size field holds (8 GiB - 1); larger members need PAX. */
#define TAR_MAX_OCTAL_SIZE 077777777777ull
/* Go's maxSpecialFileSize: the cap on PAX and GNU long-name bodies. */
#define TAR_MAX_SPECIAL (1u << 20)

/* Go's error texts. */
#define TAR_ERR_HEADER         "archive/tar: invalid tar header"
#define TAR_ERR_TOO_LONG       "archive/tar: header field too long"
#define TAR_ERR_UNEXPECTED_EOF "unexpected EOF"

/* ---- writer: a sequence of calls over a borrowed cairn_writer ---- */
struct tar_writer {
    struct cairn_writer *out; /* borrowed */
    int64_t mtime;
    uint64_t remaining; /* data bytes the current member still owes */
    uint64_t written;   /* data bytes of the current member */
    int open;           /* a member header was written and its data is not finished */
};

void tar_writer_init(struct tar_writer *t, struct cairn_writer *out, int64_t mtime);
/* Header(s) for a regular file of exactly size bytes (mode 0600, uid/gid 0). */
int tar_writer_begin(struct tar_writer *t, const char *name, uint64_t size, struct cairn_err *err);
int tar_writer_data(struct tar_writer *t, const void *buf, size_t len, struct cairn_err *err);
/* Checks the member got exactly its size and pads it to a block. */
int tar_writer_end(struct tar_writer *t, struct cairn_err *err);
/* The end marker: two zero blocks, nothing after them. */
int tar_writer_finish(struct tar_writer *t, struct cairn_err *err);
/* Fill blk with a Go-identical header; exposed for tests. */
void tar_header_format(uint8_t blk[TAR_BLOCK], const char *name, char typeflag, uint64_t size,
                       int64_t mtime, int file_defaults);

/* ---- reader ---- */
struct tar_entry {
    char *name;    /* after prefix, PAX path and GNU long-name merging */
    char typeflag; /* NUL already mapped to '0' (or '5' for a name ending in '/') */
    uint64_t size; /* data bytes (0 for header-only types) */
};

struct tar_reader;

/* Reads from src (borrowed). */
struct tar_reader *tar_reader_new(struct cairn_reader *src);
/* Next member; *ent = NULL at the end of the archive (end marker, one zero block then EOF, or
 * EOF at a header boundary, as Go accepts). The entry stays valid until the next call. */
int tar_reader_next(struct tar_reader *t, const struct tar_entry **ent, struct cairn_err *err);
/* Data of the current member; *got = 0 at its end. */
int tar_reader_read(struct tar_reader *t, void *buf, size_t cap, size_t *got,
                    struct cairn_err *err);
void tar_reader_free(struct tar_reader *t);

#endif
