/* The one tar layer of libcairn (spec: consul-snapshot-format.md sections 3, 8, 12): the Raft
 * snapshot archive and the InfluxDB shard streams of src/influx both use it.
 *
 * The writer emits exactly the bytes Go's archive/tar writes for a regular file: USTAR when the
 * name (or a prefix/name split of it), the size and the mtime fit, else a PAX 'x' record set
 * (mtime, path, size, sorted) before the header. The reader follows Go's archive/tar reader:
 * same accepted dialects, same end-of-archive leniency, same error texts. Both stream: memory
 * is a header block and one read buffer, whatever the members' sizes. */
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
    int64_t mtime;            /* of the members tar_writer_begin writes */
    uint64_t remaining;       /* data bytes the current member still owes */
    uint64_t written;         /* data bytes of the current member */
    int open;                 /* a member header was written and its data is not finished */
};

/* A regular file's header fields; uid and gid are 0. */
struct tar_member {
    const char *name;
    uint64_t size;
    int64_t mtime;             /* seconds; outside 0..8^11-1 it goes in a PAX record */
    unsigned mode;             /* permission bits */
    const char *uname, *gname; /* NULL: empty; ASCII, at most 32 bytes */
};

void tar_writer_init(struct tar_writer *t, struct cairn_writer *out, int64_t mtime);
/* Header(s) for a regular file of exactly m->size bytes. */
int tar_writer_add(struct tar_writer *t, const struct tar_member *m, struct cairn_err *err);
/* A snapshot member: tar_writer_add with mode 0600, t's mtime and no owner names. */
int tar_writer_begin(struct tar_writer *t, const char *name, uint64_t size, struct cairn_err *err);
int tar_writer_data(struct tar_writer *t, const void *buf, size_t len, struct cairn_err *err);
/* Checks the member got exactly its size and pads it to a block. */
int tar_writer_end(struct tar_writer *t, struct cairn_err *err);
/* The end marker: two zero blocks, nothing after them. */
int tar_writer_finish(struct tar_writer *t, struct cairn_err *err);
/* Fill blk with a Go-identical header: file_defaults gives a snapshot member's (mode 0600,
 * mtime, device fields), else a PAX record file's (all zero). Exposed for tests. */
void tar_header_format(uint8_t blk[TAR_BLOCK], const char *name, char typeflag, uint64_t size,
                       int64_t mtime, int file_defaults);

/* ---- reader ---- */
struct tar_entry {
    char *name;    /* after prefix, PAX path and GNU long-name merging */
    char typeflag; /* NUL already mapped to '0' (or '5' for a name ending in '/') */
    uint64_t size; /* data bytes (0 for header-only types) */
    int64_t mtime; /* seconds, PAX mtime merged */
    int sparse;    /* set only on a refused sparse member: size is then its declared size */
};

struct tar_reader;

/* How a reader may read. 0 is Go's reader exactly, as the snapshot archive needs it. */
enum {
    /* Read src a buffer at a time, past the end marker too (those bytes are lost): for streams
     * where nothing after the tar matters, where many small members would otherwise cost a
     * read of src each. Without it the reader fetches only what the headers declare (a small
     * member still costs one read), so a caller may count what follows the end marker. */
    TAR_READ_AHEAD = 1,
    /* A stream cut inside a member's padding is "unexpected EOF", not Go's normal end: a
     * truncated shard upload must not install its first members. */
    TAR_READ_WHOLE_PADDING = 2,
};

/* Reads from src (borrowed). */
struct tar_reader *tar_reader_new(struct cairn_reader *src, unsigned flags);
/* Next member; *ent = NULL at the end of the archive (end marker, one zero block then EOF, or
 * EOF at a header boundary, as Go accepts). The entry stays valid until the next call. Sparse
 * members are refused (CAIRN_E_CORRUPT) with *ent naming the member, sparse set, so a caller
 * can say it in its own words. */
int tar_reader_next(struct tar_reader *t, const struct tar_entry **ent, struct cairn_err *err);
/* Data of the current member; *got = 0 at its end. */
int tar_reader_read(struct tar_reader *t, void *buf, size_t cap, size_t *got,
                    struct cairn_err *err);
void tar_reader_free(struct tar_reader *t);

#endif
