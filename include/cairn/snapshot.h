/* cairn: the snapshot archive (HashiCorp raft snapshot format: Consul, Nomad, Vault, OpenBao).
 *
 * An archive is compress(tar(meta.json, state.bin, SHA256SUMS[, SHA256SUMS.sealed])) with gzip
 * (the format every HashiCorp product reads) or zstd (cairn's own flavour, same tar inside).
 * docs/FORMAT.md describes the bytes; ../shared/spec/consul-snapshot-format.md is the spec.
 *
 * Writing streams the state once: the member hashes, the compression and the archive hash are
 * computed in the same pass, with bounded memory. Reading hashes while it reads and decides only
 * at the end; restore hands the state to the caller only after the whole archive verified.
 */
#ifndef CAIRN_SNAPSHOT_H
#define CAIRN_SNAPSHOT_H

#include <stdint.h>

#include "cairn/common.h"
#include "cairn/err.h"
#include "cairn/io.h"

#ifdef __cplusplus
extern "C" {
#endif

/* raft.Server inside meta.json's Configuration. */
struct cairn_snapshot_server {
    int64_t suffrage; /* 0 voter, 1 nonvoter, 2 staging */
    char *id;
    char *address;
};

enum { CAIRN_SUFFRAGE_VOTER = 0, CAIRN_SUFFRAGE_NONVOTER = 1, CAIRN_SUFFRAGE_STAGING = 2 };

/* raft.SnapshotMeta, field for field (meta.json keys in this order). Strings and arrays are
 * malloc'd; cairn_snapshot_meta_free releases them. */
struct cairn_snapshot_meta {
    int64_t version; /* 1 in practice; restore accepts 0..1 */
    char *id;        /* NULL is written as "" */
    uint64_t index;
    uint64_t term;
    uint8_t *peers; /* legacy msgpack peer list; NULL is JSON null, else base64 */
    size_t peers_len;
    struct cairn_snapshot_server *servers; /* nservers == 0: "Servers":null */
    size_t nservers;
    uint64_t configuration_index;
    int64_t size; /* state.bin length */
};

CAIRN_API void cairn_snapshot_meta_free(struct cairn_snapshot_meta *m);
/* Encode as Go's json.Encoder does (compact, struct order, HTML escaping, trailing "\n").
 * *out is malloc'd and NUL-terminated. */
CAIRN_API void cairn_snapshot_meta_encode(const struct cairn_snapshot_meta *m, char **out,
                                          size_t *len);
/* Decode as Go's json.Unmarshal into raft.SnapshotMeta does (case-insensitive keys, unknown
 * keys ignored, last duplicate wins, null leaves zero). Errors carry Go's texts. */
CAIRN_API int cairn_snapshot_meta_decode(const char *json, size_t len,
                                         struct cairn_snapshot_meta *m, struct cairn_err *err);

/* ---- sealers: protect the SHA256SUMS text, stored as the SHA256SUMS.sealed member ---- */
struct cairn_sealer;
struct cairn_sealer_ops {
    const char *name;
    /* Produce the sealed form of the sums text; *out is malloc'd. */
    int (*seal)(struct cairn_sealer *s, const uint8_t *in, size_t len, uint8_t **out,
                size_t *out_len, struct cairn_err *err);
    /* Recover the sums text from its sealed form; any tampering or a wrong key is
     * CAIRN_E_SEAL. *out is malloc'd. */
    int (*open)(struct cairn_sealer *s, const uint8_t *in, size_t len, uint8_t **out,
                size_t *out_len, struct cairn_err *err);
    void (*free)(struct cairn_sealer *s);
};
struct cairn_sealer {
    const struct cairn_sealer_ops *ops;
};

#define CAIRN_SEALER_KEY_LEN 32
/* HMAC-SHA256: sealed = "CRNHMAC1" || tag(32) || sums; integrity only. */
CAIRN_API struct cairn_sealer *cairn_sealer_hmac_new(const uint8_t key[CAIRN_SEALER_KEY_LEN]);
/* AES-256-GCM: sealed = "CRNGCM01" || nonce(12) || ciphertext || tag(16); the magic is the AAD. */
CAIRN_API struct cairn_sealer *cairn_sealer_aes_gcm_new(const uint8_t key[CAIRN_SEALER_KEY_LEN]);
/* kind "hmac" or "aes-gcm"; the key file holds 32 raw bytes or 64 hex digits (a trailing newline
 * is fine) and must not be readable by group or others. */
CAIRN_API int cairn_sealer_from_keyfile(const char *kind, const char *key_path,
                                        struct cairn_sealer **out, struct cairn_err *err);
CAIRN_API int cairn_sealer_seal(struct cairn_sealer *s, const uint8_t *in, size_t len,
                                uint8_t **out, size_t *out_len, struct cairn_err *err);
CAIRN_API int cairn_sealer_open(struct cairn_sealer *s, const uint8_t *in, size_t len,
                                uint8_t **out, size_t *out_len, struct cairn_err *err);
CAIRN_API void cairn_sealer_free(struct cairn_sealer *s);

/* ---- writing ---- */
enum cairn_snapshot_flavour {
    CAIRN_SNAPSHOT_GZIP = 0, /* default; what Consul, Nomad and Vault read */
    CAIRN_SNAPSHOT_ZSTD = 1,
    CAIRN_SNAPSHOT_TAR = 2, /* the bare inner tar (reading only: raft-snapshot test tars) */
};

struct cairn_snapshot_write_opts {
    enum cairn_snapshot_flavour flavour;
    int level;   /* 0: gzip 6 (Go's default), zstd 3 */
    int threads; /* compression workers. 0: gzip one per CPU (1 MiB blocks, ~3 MiB each);
                  * zstd 1, because each libzstd worker holds a job buffer of many MiB and
                  * 2 workers already pass 48 MiB peak RSS (docs/PERFORMANCE.md) */
    struct cairn_sealer *sealer; /* NULL: three members, as Consul writes */
    int64_t mtime;               /* member mtime; 0 = now, rounded to the second as Go does */
};

struct cairn_snapshot_write_result {
    uint64_t archive_bytes;
    uint8_t archive_sha256[32];
    char checksum[64]; /* "sha-256=<base64 of archive_sha256>" */
    uint8_t meta_sha256[32];
    uint8_t state_sha256[32];
};

/* Write one archive into out. meta->size must be the exact state length: exactly that many
 * bytes are copied from state, and a state stream shorter or longer than that is an error.
 * out and state are borrowed: the archive is flushed into out, which is neither closed nor
 * freed. The caller commits it with cairn_writer_close after CAIRN_OK, and frees it (unclosed
 * after a failure, so an atomic file is discarded). opts and result may be NULL. */
CAIRN_API int cairn_snapshot_write(struct cairn_writer *out, const struct cairn_snapshot_meta *meta,
                                   struct cairn_reader *state,
                                   const struct cairn_snapshot_write_opts *opts,
                                   struct cairn_snapshot_write_result *result,
                                   struct cairn_err *err);

/* Copy a stream of unknown length (in, borrowed, read to its end) into an unlinked temp file in
 * tmpdir (NULL: $TMPDIR or /tmp) and return a reader over it, positioned at the start, plus its
 * length. */
CAIRN_API int cairn_snapshot_spool(struct cairn_reader *in, const char *tmpdir,
                                   struct cairn_reader **out, uint64_t *len, struct cairn_err *err);

/* A finished archive in a temp file (Go's snapshot.New / NewWithSealer). */
struct cairn_snapshot;
/* state (borrowed) holds state_size bytes; state_size < 0: unknown length, the state is spooled
 * to a temp file first. meta->size is ignored (set from the state). The archive temp file is
 * deleted by cairn_snapshot_free. */
CAIRN_API int cairn_snapshot_new(struct cairn_reader *state, int64_t state_size,
                                 const struct cairn_snapshot_meta *meta,
                                 const struct cairn_snapshot_write_opts *opts, const char *tmpdir,
                                 struct cairn_snapshot **out, struct cairn_err *err);
/* "sha-256=<base64 of the SHA-256 of the compressed archive>", as raft-snapshot's Checksum(). */
CAIRN_API const char *cairn_snapshot_checksum(const struct cairn_snapshot *s);
CAIRN_API uint64_t cairn_snapshot_index(const struct cairn_snapshot *s);
CAIRN_API uint64_t cairn_snapshot_term(const struct cairn_snapshot *s);
CAIRN_API uint64_t cairn_snapshot_size(const struct cairn_snapshot *s);       /* archive bytes */
CAIRN_API uint64_t cairn_snapshot_state_size(const struct cairn_snapshot *s); /* state bytes */
/* The archive bytes as a reader, owned by the snapshot (do not free it); shares its position
 * with cairn_snapshot_read. */
CAIRN_API struct cairn_reader *cairn_snapshot_reader(struct cairn_snapshot *s);
/* Read the archive bytes from the start (each call continues where the last stopped). */
CAIRN_API int cairn_snapshot_read(struct cairn_snapshot *s, void *buf, size_t cap, size_t *got,
                                  struct cairn_err *err);
/* Destroy s: its temp file goes with it. NULL is fine. */
CAIRN_API void cairn_snapshot_free(struct cairn_snapshot *s);

/* ---- reading ---- */
#define CAIRN_SNAPSHOT_MEMBER_CAP (1u << 20)

struct cairn_snapshot_read_opts {
    /* NULL: unsealed mode: a SHA256SUMS.sealed member is reported (info.sealed_len) but not
     * trusted; the plain SHA256SUMS decides (how Vault snapshots are checked without the seal).
     * Non-NULL: the sealed member is required and must open and match, then SHA256SUMS too. */
    struct cairn_sealer *sealer;
    /* Input is the bare tar (no compression layer and no exact-end rule), as the raft-snapshot
     * test tars are read. 0: detect gzip or zstd by magic. */
    int raw_tar;
    /* Consul/Nomad reader: exactly the three members, so a SHA256SUMS.sealed member (Vault) is
     * `unexpected file "SHA256SUMS.sealed" in snapshot`. 0: raft-snapshot (Vault) rules. */
    int three_members;
    size_t member_cap;  /* cap on meta.json / SHA256SUMS / SHA256SUMS.sealed; 0 = 1 MiB */
    const char *tmpdir; /* restore's spool directory; NULL: $TMPDIR or /tmp */
    /* Decompression bomb guard: past 64 MiB, the tar may be at most max_ratio times the
     * compressed bytes the decoder consumed so far (not read ahead), else CAIRN_E_CORRUPT.
     * 0 = 4096; UINT_MAX = no limit. */
    unsigned max_ratio;
};

struct cairn_snapshot_info {
    struct cairn_snapshot_meta meta;
    enum cairn_snapshot_flavour flavour;
    char *meta_json; /* meta.json exactly as stored (NUL-terminated) */
    size_t meta_json_len;
    uint64_t state_len;
    uint8_t meta_sha256[32];
    uint8_t state_sha256[32];
    int sealed_present; /* a SHA256SUMS.sealed member was read */
    size_t sealed_len;
    int sealed_verified; /* it opened with the sealer and matched */
    uint64_t archive_bytes;
    char checksum[64]; /* "sha-256=..." of the input bytes */
};

CAIRN_API void cairn_snapshot_info_free(struct cairn_snapshot_info *info);

/* Verify an archive completely (spec sections 8 and 13): every member hash, the sums, the
 * sealed sums with a sealer, and (compressed flavours) that nothing follows the tar end marker.
 * in is borrowed. info (may be NULL) is filled on success and on failure as far as read. */
CAIRN_API int cairn_snapshot_verify(struct cairn_reader *in,
                                    const struct cairn_snapshot_read_opts *opts,
                                    struct cairn_snapshot_info *info, struct cairn_err *err);
/* As verify, streaming state.bin into out. in and out are borrowed: out is written to but
 * neither closed nor freed. Close it only after CAIRN_OK (so an atomic file appears only for a
 * good archive); after a failure free it unclosed. */
CAIRN_API int cairn_snapshot_extract(struct cairn_reader *in,
                                     const struct cairn_snapshot_read_opts *opts,
                                     struct cairn_writer *out, struct cairn_snapshot_info *info,
                                     struct cairn_err *err);

/* Restore callback: gets the verified metadata and a reader of exactly meta->size state bytes. */
typedef int (*cairn_snapshot_restore_fn)(void *arg, const struct cairn_snapshot_meta *meta,
                                         struct cairn_reader *state, struct cairn_err *err);
/* Spool state.bin to a temp file while verifying; only when everything verified, and Version is
 * 0..1 and Size equals the state length (raft's restore checks), call fn. Nothing reaches fn
 * otherwise. in is borrowed; the reader fn gets is freed after fn returns. */
CAIRN_API int cairn_snapshot_restore(struct cairn_reader *in,
                                     const struct cairn_snapshot_read_opts *opts,
                                     cairn_snapshot_restore_fn fn, void *arg,
                                     struct cairn_snapshot_info *info, struct cairn_err *err);

#ifdef __cplusplus
}
#endif

#endif
