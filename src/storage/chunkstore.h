/* The chunk store of a repository whose config has a chunker (docs/FORMAT.md "Chunk store"):
 * content-defined chunks, compressed and encrypted one by one, appended to pack objects
 * (".data/<id>"), found through index objects (".index/<id>"). A file of a backup is stored
 * as a chunk list (its chunks' ids, 32 bytes each), itself stored as a blob: the MANIFEST
 * entry's sha256 is the list's id, compression "chunks". Internal to the storage module. */
#ifndef CAIRN_STORAGE_CHUNKSTORE_H
#define CAIRN_STORAGE_CHUNKSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "cairn/err.h"

struct cairn_storage;
struct cairn_writer;
struct cairn_reader;
struct chunkstore;

#define CS_DATA_DIR   ".data"
#define CS_INDEX_DIR  ".index"
#define CS_PACK_SIZE  (32u << 20) /* a pack is closed once it holds this much */
#define CS_ID_LEN     32
#define CS_ENTRY_LEN  45 /* id, offset, length, raw length, flags */
#define CS_FLAG_ZSTD  0x1u
#define CS_FLAG_LIST  0x2u /* the blob is a chunk list */
#define CS_PACK_MAGIC "CRNPACK1"
#define CS_IDX_MAGIC  "CRNIDX01"

/* The store of st (ready), created and its index loaded on first use; *out NULL when st's
 * repository has no chunker. Owned by st. */
int cs_get(struct cairn_storage *st, struct chunkstore **out, struct cairn_err *err);
void cs_free(struct chunkstore *cs);

/* A writer that cuts what it is given into chunks, stores each one not stored yet, and
 * writes their ids (the chunk list) into next (owned) as it goes; closing it ends the last
 * chunk and closes next. level: zstd level of the chunks. */
struct cairn_writer *cs_chunk_writer_new(struct chunkstore *cs, struct cairn_writer *next,
                                         int level);
/* A sink that keeps what is written (a chunk list) and stores it as one blob when closed. */
struct cairn_writer *cs_list_sink_new(struct chunkstore *cs);
/* Land everything stored so far: the open pack, then an index object naming its chunks.
 * Every chunk a backup references is in a pack named by an index object once this returns
 * (cairn_backup_end calls it before the MANIFEST). */
int cs_flush(struct chunkstore *cs, struct cairn_err *err);

/* A reader of the plaintext of blob id (hex, 64 digits), authenticated: its id is recomputed
 * (and, encrypted, its tag checked). CAIRN_E_CORRUPT naming the pack when it does not match,
 * CAIRN_E_NOTFOUND / CAIRN_E_CORRUPT when the index does not know it. */
int cs_blob_reader_new(struct chunkstore *cs, const char *hex_id, struct cairn_reader **out,
                       struct cairn_err *err);
/* A reader of the content a chunk list (read from list, owned) describes. label names the
 * file in messages. */
struct cairn_reader *cs_content_reader_new(struct chunkstore *cs, struct cairn_reader *list,
                                           const char *label);

/* ---- garbage collection and checks (prune.c, check) ---- */

/* Whether the index knows id (32 bytes). */
int cs_has(struct chunkstore *cs, const uint8_t *id);

#endif
