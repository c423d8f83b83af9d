/* cairn: a storage location as a repository: its config object and its keys (restic's design,
 * see docs/FORMAT.md "Repository").
 *
 * A location may hold a config object, the file "config" of the reserved pseudo-backup
 * CAIRN_REPO_DIR (never a valid backup name, so never listed as one): format version,
 * repository id, encryption ("aes-256-gcm" or "none"), chunk size of the encrypted object
 * stream, and room for what later features need (chunker parameters). A location without one
 * is a plain location, read and written as before repositories existed.
 *
 * Encrypted repositories (envelope encryption): a random 32-byte master key, stored only
 * wrapped (AES-256-GCM) in key objects "key-<id>" beside the config, one per user key. A user
 * key is either a key file (32 random bytes; the wrapping key is HKDF-SHA-256 of it with the
 * key object's salt) or a passphrase stretched with scrypt (N = 2^14, r = 8, p = 4: 16 MiB,
 * parameters stored in the key object), or with Argon2id (libargon2) when asked for. Sub-keys come
 * from the master key by HKDF with distinct labels: data encryption, config MAC, keyed content
 * hashes. The config carries an HMAC-SHA-256 under the config MAC key, checked once a key opened
 * the repository, so a changed config (another chunk size, another id) is refused; and a caller
 * that holds a key refuses a location whose config says "none" or that has no config (no silent
 * downgrade). A new backup needs a repository: a location with no config and no backup is refused
 * (cairn_storage_check_new_backup); one with backups but no config is a legacy plain location.
 *
 * Errors: a wrong key or password is CAIRN_E_SEAL (exit 4) and nothing is written; a config
 * whose MAC does not match is CAIRN_E_CORRUPT (exit 3); an unknown config or key version is
 * CAIRN_E_UNSUPPORTED with a message saying so.
 */
#ifndef CAIRN_REPO_H
#define CAIRN_REPO_H

#include <stddef.h>
#include <stdint.h>

#include "cairn/common.h"
#include "cairn/err.h"

#ifdef __cplusplus
extern "C" {
#endif

struct cairn_storage;
struct cairn_repo;

#define CAIRN_REPO_DIR           ".cairn"
#define CAIRN_REPO_CONFIG        "config"
#define CAIRN_REPO_VERSION       1
#define CAIRN_REPO_KEY_LEN       32
#define CAIRN_REPO_CHUNK_DEFAULT (64u * 1024u)
#define CAIRN_REPO_CHUNK_MIN     (4u * 1024u)
#define CAIRN_REPO_CHUNK_MAX     (1024u * 1024u)
/* Passphrase stretching of new password keys (scrypt): 128 * r * N = 16 MiB of memory, so a
 * backup that unlocks with a password stays under its 32 MiB peak. Key objects with
 * parameters needing more than CAIRN_REPO_SCRYPT_MAXMEM are refused. */
#define CAIRN_REPO_SCRYPT_LOG_N  14
#define CAIRN_REPO_SCRYPT_R      8
#define CAIRN_REPO_SCRYPT_P      4
#define CAIRN_REPO_SCRYPT_MAXMEM (32u << 20)

/* Passphrase stretching with Argon2id (libargon2), chosen per key (cairn_repo_secret.kdf):
 * t = 3 passes over m = 16 MiB, p = 1 lane, the same memory as scrypt's. Key objects asking
 * for more than CAIRN_REPO_SCRYPT_MAXMEM, more than 16 passes or lanes are refused. */
#define CAIRN_REPO_ARGON2_T     3
#define CAIRN_REPO_ARGON2_M_KIB 16384
#define CAIRN_REPO_ARGON2_P     1

/* A user key: the 32 bytes of a key file, or a passphrase (exactly one of them). */
struct cairn_repo_secret {
    const uint8_t *key;   /* CAIRN_REPO_KEY_LEN bytes, or NULL */
    const char *password; /* NUL-terminated, or NULL */
    /* The KDF of a new password key (init, key add, passwd): "scrypt" (NULL: the default) or
     * "argon2id". Opening takes it from the key object. */
    const char *kdf;
};

struct cairn_repo_init_opts {
    int no_encryption;   /* 1: a plain repository (encryption "none"); sec must be NULL */
    uint32_t chunk_size; /* plaintext bytes per encrypted chunk, a power of two in
                          * [CAIRN_REPO_CHUNK_MIN, CAIRN_REPO_CHUNK_MAX]; 0: the default */
    /* Content-defined deduplication (docs/FORMAT.md "Chunk store"): file contents are cut by
     * the gear-hash chunker into chunks of cdc_min..cdc_max bytes (about cdc_avg, a power of
     * two), stored once in packs. 0: the defaults (512 KiB / 1 MiB / 8 MiB). no_dedup: the
     * config has no chunker and every file is stored whole, as before. */
    int no_dedup;
    uint32_t cdc_min, cdc_avg, cdc_max;
};
#define CAIRN_REPO_CDC_MIN (512u * 1024u)
#define CAIRN_REPO_CDC_AVG (1024u * 1024u)
#define CAIRN_REPO_CDC_MAX (8u * 1024u * 1024u)

/* Create the repository of st's location: config and (encrypted) a first key object for sec.
 * CAIRN_E_EXISTS when the location already has a config or holds backups. opts may be NULL
 * (encrypted, default chunk size). *out (may be NULL) gets the unlocked repository. */
CAIRN_API int cairn_repo_init(struct cairn_storage *st, const struct cairn_repo_init_opts *opts,
                              const struct cairn_repo_secret *sec, struct cairn_repo **out,
                              struct cairn_err *err);
/* Read st's config and, when encrypted, unlock the master key with sec (tried on every key
 * object of its kind). CAIRN_E_NOTFOUND when the location has no config (a plain location);
 * CAIRN_E_SEAL for a missing or wrong key, or a key given for an unencrypted repository;
 * CAIRN_E_CORRUPT for a config that fails its MAC or does not parse; CAIRN_E_UNSUPPORTED
 * for an unknown version. The handle borrows st, which must outlive it. */
CAIRN_API int cairn_repo_open(struct cairn_storage *st, const struct cairn_repo_secret *sec,
                              struct cairn_repo **out, struct cairn_err *err);
CAIRN_API void cairn_repo_free(struct cairn_repo *r);

CAIRN_API int cairn_repo_encrypted(const struct cairn_repo *r);
/* 64 lower-case hex digits. */
CAIRN_API const char *cairn_repo_id(const struct cairn_repo *r);
CAIRN_API uint32_t cairn_repo_chunk_size(const struct cairn_repo *r);
/* Whether the config has chunker parameters (files go to the chunk store). */
CAIRN_API int cairn_repo_dedup(const struct cairn_repo *r);
/* The id of the key object that unlocked r ("" when not encrypted). */
CAIRN_API const char *cairn_repo_key_id(const struct cairn_repo *r);

/* ---- a storage handle's repository ----
 * Every storage handle reads its location's config once, before its first operation that
 * stores or reads bytes (start, open_backup, list, locks), and unlocks it with the secret set
 * here (copied; NULL clears): without a config and without a secret the location is plain,
 * as before; any other case is cairn_repo_open's. With an encrypted repository every stored
 * byte (files, MANIFESTs, lock objects) goes through the AEAD stream (docs/FORMAT.md) and
 * MANIFEST hashes are HMAC-SHA-256 under the content hash key. */
CAIRN_API int cairn_storage_set_secret(struct cairn_storage *st,
                                       const struct cairn_repo_secret *sec, struct cairn_err *err);
/* Read (once) and unlock st's repository: *repo is borrowed from st, NULL for a plain
 * location. */
CAIRN_API int cairn_storage_repo(struct cairn_storage *st, struct cairn_repo **repo,
                                 struct cairn_err *err);
/* Whether st's location may take a new backup: it is a repository (cairn_repo_init), or a
 * legacy plain location, one without a config that already holds backups (written before
 * repositories existed; it stays writable). A location with neither is refused with
 * CAIRN_E_INVALID (exit 2), telling the user to run 'cairn init'; one without a config whose
 * backups have encrypted MANIFESTs (its config was removed) with CAIRN_E_SEAL (exit 4), never
 * written in plaintext. Reads and unlocks the config as cairn_storage_repo does. The storage
 * writers themselves (cairn_storage_start, the path backups) do not check: the programs' entry
 * points do (cairn_engine_backup, cairn put). */
CAIRN_API int cairn_storage_check_new_backup(struct cairn_storage *st, struct cairn_err *err);

/* ---- keys (encrypted repositories, unlocked) ---- */

struct cairn_repo_key_info {
    char *id;      /* 16 hex digits */
    char *type;    /* "key-file" or "password" */
    char *created; /* RFC 3339 */
    char *host;
    int current; /* the key that unlocked this handle */
};
struct cairn_repo_key_list {
    size_t count;
    struct cairn_repo_key_info *items; /* sorted by id */
};

/* Wrap the master key under sec in a new key object; id (may be NULL, 17 bytes) gets its id. */
CAIRN_API int cairn_repo_key_add(struct cairn_repo *r, const struct cairn_repo_secret *sec,
                                 char *id, struct cairn_err *err);
CAIRN_API int cairn_repo_key_list(struct cairn_repo *r, struct cairn_repo_key_list *out,
                                  struct cairn_err *err);
CAIRN_API void cairn_repo_key_list_free(struct cairn_repo_key_list *l);
/* Remove a key object. CAIRN_E_INVALID for the key that unlocked r (use passwd, or unlock
 * with another) or the last one; CAIRN_E_NOTFOUND for an unknown id. */
CAIRN_API int cairn_repo_key_remove(struct cairn_repo *r, const char *id, struct cairn_err *err);
/* Replace the key that unlocked r by sec: a new key object first, then the old one removed;
 * r then counts as unlocked by the new one. id (may be NULL, 17 bytes) gets the new id. */
CAIRN_API int cairn_repo_key_passwd(struct cairn_repo *r, const struct cairn_repo_secret *sec,
                                    char *id, struct cairn_err *err);

/* Write a new key file: 32 random bytes, mode 0600. CAIRN_E_EXISTS when path exists (never
 * overwritten, symlinks not followed). */
CAIRN_API int cairn_repo_key_generate(const char *path, struct cairn_err *err);

#ifdef __cplusplus
}
#endif

#endif
