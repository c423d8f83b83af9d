/* The repository of a location (include/cairn/repo.h): its config object, the key objects
 * wrapping the master key, and the sub-keys derived from it. Formats in docs/FORMAT.md. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <argon2.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cairn/digest.h"
#include "cairn/repo.h"
#include "common/strv.h"
#include "common/util.h"
#include "internal.h"
#include "io/aead.h"

#define CONFIG_MAX  (64u * 1024u)
#define KEY_OBJ_MAX (16u * 1024u)
#define KEY_PREFIX  "key-"
#define SALT_LEN    32
#define KEY_ID_LEN  8 /* bytes; 16 hex digits */

#define LABEL_DATA   "cairn data v1"
#define LABEL_CONFIG "cairn config mac v1"
#define LABEL_HASH   "cairn content hash v1"
#define LABEL_WRAP   "cairn key-file wrap v1"
#define LABEL_GEAR   "cairn chunker seed v1"
#define LABEL_PACK   "cairn pack v1"
#define CDC_NAME     "gear-fastcdc-v1"

static void random_bytes(uint8_t *out, size_t n)
{
    if (RAND_bytes(out, (int)n) != 1)
        abort(); /* no entropy: nothing safe to do */
}

int repo_hkdf(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt, size_t salt_len,
              const char *info, uint8_t out[32])
{
    cairn_hkdf_sha256(ikm, ikm_len, salt, salt_len, info, strlen(info), out);
    return CAIRN_OK;
}

/* ---- small objects of the pseudo-backup CAIRN_REPO_DIR ---- */

static int obj_read(struct cairn_storage *st, const char *file, size_t max, char **text,
                    struct cairn_err *err)
{
    struct cairn_reader *r = NULL;
    int rc = st->drv->read(st->state, CAIRN_REPO_DIR, file, &r, err);
    if (rc != CAIRN_OK)
        return rc;
    char *buf = xmalloc(max + 1);
    size_t len = 0, got = 0;
    do {
        rc = cairn_reader_read(r, buf + len, max + 1 - len, &got, err);
        len += got;
    } while (rc == CAIRN_OK && got > 0 && len <= max);
    cairn_reader_free(r);
    if (rc == CAIRN_OK && len > max)
        rc = cairn_err_set(err, CAIRN_E_CORRUPT, "%s/%s in '%s' is over %zu bytes", CAIRN_REPO_DIR,
                           file, st->url, max);
    if (rc != CAIRN_OK) {
        free(buf);
        return rc;
    }
    buf[len] = '\0';
    *text = buf;
    return CAIRN_OK;
}

static int obj_write(struct cairn_storage *st, const char *file, const char *text,
                     struct cairn_err *err)
{
    size_t len = strlen(text);
    struct cairn_writer *w = NULL;
    const struct cairn_storage_write_opts wo = {CAIRN_STORAGE_WRITE_ATOMIC |
                                                CAIRN_STORAGE_WRITE_SYNC};
    int rc = st->drv->create(st->state, CAIRN_REPO_DIR, file, (int64_t)len, &wo, &w, err);
    if (rc == CAIRN_E_NOTFOUND) { /* no directory yet (file driver) */
        rc = st->drv->start(st->state, CAIRN_REPO_DIR, err);
        if (rc == CAIRN_OK || rc == CAIRN_E_EXISTS)
            rc = st->drv->create(st->state, CAIRN_REPO_DIR, file, (int64_t)len, &wo, &w, err);
    }
    if (rc == CAIRN_OK)
        rc = cairn_writer_write(w, text, len, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(w, err);
    cairn_writer_free(w);
    if (rc != CAIRN_OK)
        cairn_err_wrap(err, rc, "write %s/%s in '%s'", CAIRN_REPO_DIR, file, st->url);
    return rc;
}

static int add_key_name(void *arg, const char *file)
{
    size_t pl = strlen(KEY_PREFIX);
    if (strncmp(file, KEY_PREFIX, pl) == 0 && strlen(file) == pl + 2 * KEY_ID_LEN)
        strv_add(arg, file + pl);
    return 0;
}

/* Ids of every key object, sorted. */
static int key_ids(struct cairn_storage *st, struct strv *nv, struct cairn_err *err)
{
    memset(nv, 0, sizeof(*nv));
    if (st->drv->list_files == NULL)
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED, "storage driver '%s' cannot list files",
                             st->drv->name);
    int rc = st->drv->list_files(st->state, CAIRN_REPO_DIR, add_key_name, nv, err);
    if (rc != CAIRN_OK) {
        strv_free(nv);
        return cairn_err_wrap(err, rc, "list the keys of '%s'", st->url);
    }
    strv_sort(nv);
    return CAIRN_OK;
}

/* ---- the handle ---- */

struct cairn_repo {
    struct cairn_storage *st;
    int encrypted;
    uint8_t id[32];
    char id_hex[65];
    uint32_t chunk_size;
    json_t *config;
    char key_id[2 * KEY_ID_LEN + 1];
    uint8_t master[32];
    struct repo_keys keys;
    struct repo_chunking cdc; /* has == 0: no chunker in the config */
};

void cairn_repo_free(struct cairn_repo *r)
{
    if (r == NULL)
        return;
    json_decref(r->config);
    wipe(r->master, sizeof(r->master));
    wipe(&r->keys, sizeof(r->keys));
    wipe(&r->cdc, sizeof(r->cdc));
    free(r);
}

int cairn_repo_encrypted(const struct cairn_repo *r)
{
    return r->encrypted;
}

const char *cairn_repo_id(const struct cairn_repo *r)
{
    return r->id_hex;
}

uint32_t cairn_repo_chunk_size(const struct cairn_repo *r)
{
    return r->chunk_size;
}

const char *cairn_repo_key_id(const struct cairn_repo *r)
{
    return r->key_id;
}

int cairn_repo_dedup(const struct cairn_repo *r)
{
    return r->cdc.has;
}

const struct repo_chunking *repo_chunking(const struct cairn_repo *r)
{
    return r != NULL && r->cdc.has ? &r->cdc : NULL;
}

const struct repo_keys *repo_keys(const struct cairn_repo *r)
{
    return r->encrypted ? &r->keys : NULL;
}

static int derive_subkeys(struct cairn_repo *r)
{
    r->keys.chunk_size = r->chunk_size;
    memcpy(r->keys.repo_id, r->id, 32);
    if (repo_hkdf(r->master, 32, r->id, 32, LABEL_DATA, r->keys.data) != CAIRN_OK ||
        repo_hkdf(r->master, 32, r->id, 32, LABEL_CONFIG, r->keys.config_mac) != CAIRN_OK ||
        repo_hkdf(r->master, 32, r->id, 32, LABEL_HASH, r->keys.hash) != CAIRN_OK)
        return CAIRN_E_INTERNAL;
    return CAIRN_OK;
}

/* The chunk store's secrets (encrypted repositories; plain ones: a zero gear seed, no keys). */
static int derive_chunking(struct cairn_repo *r)
{
    memcpy(r->cdc.repo_id, r->id, 32);
    memcpy(r->cdc.repo_hex, r->id_hex, 65);
    r->cdc.encrypted = r->encrypted;
    if (!r->encrypted)
        return CAIRN_OK;
    memcpy(r->cdc.hash, r->keys.hash, 32);
    if (repo_hkdf(r->master, 32, r->id, 32, LABEL_GEAR, r->cdc.seed) != CAIRN_OK ||
        repo_hkdf(r->master, 32, r->id, 32, LABEL_PACK, r->cdc.pack) != CAIRN_OK)
        return CAIRN_E_INTERNAL;
    return CAIRN_OK;
}

/* The config's "chunker": null (no deduplication) or {"algorithm", "min", "avg", "max"}. */
static int chunker_parse(struct cairn_repo *r, json_t *c, struct cairn_err *err)
{
    if (c == NULL || json_is_null(c))
        return CAIRN_OK;
    const char *alg = NULL;
    json_int_t mn = 0, av = 0, mx = 0;
    if (json_unpack(c, "{s:s, s:I, s:I, s:I}", "algorithm", &alg, "min", &mn, "avg", &av, "max",
                    &mx) != 0 ||
        mn <= 0 || av <= 0 || mx <= 0 || mx > UINT32_MAX)
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "repository config of '%s' has a malformed chunker", r->st->url);
    if (strcmp(alg, CDC_NAME) != 0)
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED,
                             "repository config of '%s' asks for chunker '%s'; this cairn knows "
                             "%s",
                             r->st->url, alg, CDC_NAME);
    r->cdc.params = (struct chunker_params){(uint32_t)mn, (uint32_t)av, (uint32_t)mx};
    if (chunker_params_check(&r->cdc.params) != 0)
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "repository config of '%s' has chunker sizes out of range (min %lld, "
                             "avg %lld, max %lld)",
                             r->st->url, (long long)mn, (long long)av, (long long)mx);
    r->cdc.has = 1;
    return CAIRN_OK;
}

/* The bytes the config MAC covers: the config without "mac", compact, keys sorted, ASCII. */
static void config_mac(const struct cairn_repo *r, json_t *cfg, uint8_t out[32])
{
    json_t *c = json_deep_copy(cfg);
    json_object_del(c, "mac");
    char *text = json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    json_decref(c);
    cairn_hmac_sha256(r->keys.config_mac, NULL, 0, text, strlen(text), out);
    free(text);
}

static int chunk_size_ok(json_int_t c)
{
    return c >= CAIRN_REPO_CHUNK_MIN && c <= CAIRN_REPO_CHUNK_MAX && (c & (c - 1)) == 0;
}

/* Parse a config's text into r (not its MAC: that needs the master key). */
static int config_parse(struct cairn_repo *r, const char *text, struct cairn_err *err)
{
    const char *url = r->st->url;
    json_error_t je;
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL || !json_is_object(j)) {
        json_decref(j);
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "repository config of '%s' is not a JSON object (%s)", url, je.text);
    }
    r->config = j;
    json_t *v = json_object_get(j, "version");
    if (!json_is_integer(v))
        return cairn_err_set(err, CAIRN_E_CORRUPT, "repository config of '%s' has no version", url);
    if (json_integer_value(v) != CAIRN_REPO_VERSION)
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED,
                             "repository config of '%s' has format version %lld; this cairn reads "
                             "version %d only (a newer cairn wrote it?)",
                             url, (long long)json_integer_value(v), CAIRN_REPO_VERSION);
    const char *id = NULL, *enc = NULL;
    json_int_t chunk = 0;
    if (json_unpack(j, "{s:s, s:s, s:I}", "id", &id, "encryption", &enc, "chunk_size", &chunk) !=
            0 ||
        strlen(id) != 64 || cairn_hex_decode(id, 64, r->id, 32, NULL) != 0 || !chunk_size_ok(chunk))
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "repository config of '%s' lacks a valid id (64 hex digits), "
                             "encryption or chunk_size (a power of two, 4 KiB to 1 MiB)",
                             url);
    cairn_hex_encode(r->id, 32, r->id_hex);
    r->chunk_size = (uint32_t)chunk;
    if (strcmp(enc, "aes-256-gcm") == 0)
        r->encrypted = 1;
    else if (strcmp(enc, "none") != 0)
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED,
                             "repository config of '%s' asks for encryption '%s'; this cairn knows "
                             "aes-256-gcm and none",
                             url, enc);
    return chunker_parse(r, json_object_get(j, "chunker"), err);
}

/* ---- key objects ---- */

static int secret_check(const struct cairn_repo_secret *sec, struct cairn_err *err)
{
    if (sec == NULL || (sec->key == NULL) == (sec->password == NULL))
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "a repository key is either a key file or a password");
    return CAIRN_OK;
}

/* A password key's KDF: scrypt (n = N, r, p) or Argon2id (n = t passes, r = m KiB, p lanes). */
struct kdf {
    int argon2id;
    uint64_t n, r, p;
};

static int argon2_key(const struct cairn_repo_secret *sec, const uint8_t salt[SALT_LEN],
                      const struct kdf *k, uint8_t out[32], const char *what, struct cairn_err *err)
{
    /* An attacker's key object could ask for any amount of time and memory. */
    if (k->n < 1 || k->n > 16 || k->p < 1 || k->p > 16 || k->r < 8 * k->p ||
        k->r > (CAIRN_REPO_SCRYPT_MAXMEM >> 10))
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "%s: argon2id parameters t=%llu m=%llu KiB p=%llu are out of range "
                             "(at most 16 passes, 16 lanes, %u MiB)",
                             what, (unsigned long long)k->n, (unsigned long long)k->r,
                             (unsigned long long)k->p, CAIRN_REPO_SCRYPT_MAXMEM >> 20);
    int rc = argon2id_hash_raw((uint32_t)k->n, (uint32_t)k->r, (uint32_t)k->p, sec->password,
                               strlen(sec->password), salt, SALT_LEN, out, 32);
    if (rc != ARGON2_OK)
        return cairn_err_set(
            err, rc == ARGON2_MEMORY_ALLOCATION_ERROR ? CAIRN_E_NOMEM : CAIRN_E_INTERNAL,
            "%s: argon2id failed: %s", what, argon2_error_message(rc));
    return CAIRN_OK;
}

/* The wrapping key of a key object from sec and its KDF parameters. */
static int wrap_key(const struct cairn_repo_secret *sec, const uint8_t salt[SALT_LEN],
                    const struct kdf *k, uint8_t out[32], const char *what, struct cairn_err *err)
{
    uint64_t n = k->n, r = k->r, p = k->p;
    if (sec->key != NULL) {
        if (repo_hkdf(sec->key, CAIRN_REPO_KEY_LEN, salt, SALT_LEN, LABEL_WRAP, out) != CAIRN_OK)
            return cairn_err_set(err, CAIRN_E_INTERNAL, "HKDF failed");
        return CAIRN_OK;
    }
    if (k->argon2id)
        return argon2_key(sec, salt, k, out, what, err);
    /* The memory scrypt takes is 128 * r * (N + p); an attacker's key object could ask more. */
    if (n < 2 || (n & (n - 1)) != 0 || n > (1u << 22) || r < 1 || r > 32 || p < 1 || p > 16 ||
        128 * r * (n + p) > CAIRN_REPO_SCRYPT_MAXMEM)
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "%s: scrypt parameters N=%llu r=%llu p=%llu are out of range (at most "
                             "%u MiB)",
                             what, (unsigned long long)n, (unsigned long long)r,
                             (unsigned long long)p, CAIRN_REPO_SCRYPT_MAXMEM >> 20);
    if (EVP_PBE_scrypt(sec->password, strlen(sec->password), salt, SALT_LEN, n, r, p,
                       CAIRN_REPO_SCRYPT_MAXMEM + (1u << 20), out, 32) != 1)
        return cairn_err_set(err, CAIRN_E_NOMEM, "%s: scrypt failed", what);
    return CAIRN_OK;
}

/* The additional data of a key object's wrapped master key. */
static char *wrap_aad(const char *repo_hex, const char *key_id)
{
    return xasprintf("cairn key v1 %s %s", repo_hex, key_id);
}

static char *b64(const uint8_t *in, size_t len)
{
    char *s = xmalloc(4 * ((len + 2) / 3) + 1);
    cairn_base64_encode(in, len, s);
    return s;
}

static int write_key(struct cairn_repo *r, const struct cairn_repo_secret *sec, char *id_out,
                     struct cairn_err *err)
{
    int rc = secret_check(sec, err);
    if (rc != CAIRN_OK)
        return rc;
    uint8_t idb[KEY_ID_LEN], salt[SALT_LEN], nonce[AEAD_GCM_NONCE], wk[32], ct[32 + AEAD_GCM_TAG];
    char id[2 * KEY_ID_LEN + 1];
    random_bytes(idb, sizeof(idb));
    random_bytes(salt, sizeof(salt));
    random_bytes(nonce, sizeof(nonce));
    cairn_hex_encode(idb, sizeof(idb), id);
    struct kdf k = {0, 1u << CAIRN_REPO_SCRYPT_LOG_N, CAIRN_REPO_SCRYPT_R, CAIRN_REPO_SCRYPT_P};
    if (sec->password != NULL && sec->kdf != NULL && strcmp(sec->kdf, "argon2id") == 0)
        k = (struct kdf){1, CAIRN_REPO_ARGON2_T, CAIRN_REPO_ARGON2_M_KIB, CAIRN_REPO_ARGON2_P};
    else if (sec->password != NULL && sec->kdf != NULL && strcmp(sec->kdf, "scrypt") != 0)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "unknown key derivation '%s' (scrypt or argon2id)", sec->kdf);
    rc = wrap_key(sec, salt, &k, wk, "new key", err);
    if (rc != CAIRN_OK)
        return rc;
    char *aad = wrap_aad(r->id_hex, id);
    struct aead_gcm *g = aead_gcm_new(wk);
    rc = aead_gcm_run(g, 1, nonce, aad, strlen(aad), r->master, ct, 32, ct + 32);
    aead_gcm_free(g);
    wipe(wk, sizeof(wk));
    free(aad);
    if (rc != CAIRN_OK)
        return cairn_err_set(err, CAIRN_E_INTERNAL, "cipher failure wrapping the master key");
    char host[256], created[64];
    host_name(host, sizeof(host), 0);
    format_rfc3339((int64_t)time(NULL), 0, created, sizeof(created));
    char *s_salt = b64(salt, sizeof(salt)), *s_nonce = b64(nonce, sizeof(nonce)),
         *s_data = b64(ct, sizeof(ct));
    json_t *j =
        json_pack("{s:i, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "version", 1, "id", id,
                  "repository", r->id_hex, "type", sec->key ? "key-file" : "password", "kdf",
                  sec->key     ? "hkdf-sha256"
                  : k.argon2id ? "argon2id"
                               : "scrypt",
                  "salt", s_salt, "nonce", s_nonce, "data", s_data, "created", created);
    json_object_set_new(j, "host", json_string(host));
    if (sec->password != NULL && k.argon2id)
        json_object_set_new(j, "argon2id",
                            json_pack("{s:I, s:I, s:I}", "t", (json_int_t)k.n, "m", (json_int_t)k.r,
                                      "p", (json_int_t)k.p));
    else if (sec->password != NULL)
        json_object_set_new(j, "scrypt",
                            json_pack("{s:I, s:I, s:I}", "N", (json_int_t)k.n, "r", (json_int_t)k.r,
                                      "p", (json_int_t)k.p));
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(j);
    free(s_salt);
    free(s_nonce);
    free(s_data);
    char *file = xasprintf(KEY_PREFIX "%s", id);
    rc = obj_write(r->st, file, text, err);
    free(file);
    free(text);
    if (rc == CAIRN_OK && id_out != NULL)
        memcpy(id_out, id, sizeof(id));
    return rc;
}

/* Try to open key object id with sec: CAIRN_OK with r->master set, CAIRN_E_SEAL when sec is not
 * that key (or not of its type), another code for an unreadable object. */
static int try_key(struct cairn_repo *r, const char *id, const struct cairn_repo_secret *sec,
                   struct cairn_err *err)
{
    char *file = xasprintf(KEY_PREFIX "%s", id), *text = NULL;
    char what[128];
    snprintf(what, sizeof(what), "key object %s/%s of '%s'", CAIRN_REPO_DIR, file, r->st->url);
    int rc = obj_read(r->st, file, KEY_OBJ_MAX, &text, err);
    free(file);
    if (rc != CAIRN_OK)
        return rc;
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
    free(text);
    json_int_t ver = 0, n = 0, rr = 0, p = 0;
    const char *jid, *repo, *type, *salt, *nonce, *data;
    uint8_t bsalt[SALT_LEN], bnonce[AEAD_GCM_NONCE], bdata[32 + AEAD_GCM_TAG];
    size_t l1 = 0, l2 = 0, l3 = 0;
    if (j == NULL || json_unpack(j, "{s:I, s:s, s:s, s:s, s:s, s:s, s:s}", "version", &ver, "id",
                                 &jid, "repository", &repo, "type", &type, "salt", &salt, "nonce",
                                 &nonce, "data", &data) != 0) {
        json_decref(j);
        return cairn_err_set(err, CAIRN_E_CORRUPT, "%s is not a key object", what);
    }
    if (ver != 1) {
        json_decref(j);
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED, "%s has version %lld; this cairn reads 1",
                             what, (long long)ver);
    }
    int is_pw = strcmp(type, "password") == 0;
    const char *kdf = json_string_value(json_object_get(j, "kdf"));
    int argon = is_pw && kdf != NULL && strcmp(kdf, "argon2id") == 0;
    if (strcmp(jid, id) != 0 || strcmp(repo, r->id_hex) != 0 ||
        (!is_pw && strcmp(type, "key-file") != 0) ||
        cairn_base64_decode(salt, strlen(salt), bsalt, sizeof(bsalt), &l1) != 0 ||
        cairn_base64_decode(nonce, strlen(nonce), bnonce, sizeof(bnonce), &l2) != 0 ||
        cairn_base64_decode(data, strlen(data), bdata, sizeof(bdata), &l3) != 0 || l1 != SALT_LEN ||
        l2 != AEAD_GCM_NONCE || l3 != sizeof(bdata) ||
        (is_pw && argon &&
         json_unpack(j, "{s:{s:I, s:I, s:I}}", "argon2id", "t", &n, "m", &rr, "p", &p) != 0) ||
        (is_pw && !argon &&
         json_unpack(j, "{s:{s:I, s:I, s:I}}", "scrypt", "N", &n, "r", &rr, "p", &p) != 0)) {
        json_decref(j);
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "%s is damaged (id, repository, type, salt, nonce or data)", what);
    }
    json_decref(j);
    if (is_pw != (sec->password != NULL))
        return CAIRN_E_SEAL; /* another type of key */
    if (n < 0 || rr < 0 || p < 0)
        return cairn_err_set(err, CAIRN_E_CORRUPT, "%s: negative KDF parameter", what);
    uint8_t wk[32];
    struct kdf k = {argon, (uint64_t)n, (uint64_t)rr, (uint64_t)p};
    rc = wrap_key(sec, bsalt, &k, wk, what, err);
    if (rc != CAIRN_OK)
        return rc;
    char *aad = wrap_aad(r->id_hex, id);
    struct aead_gcm *g = aead_gcm_new(wk);
    rc = aead_gcm_run(g, 0, bnonce, aad, strlen(aad), bdata, bdata, 32, bdata + 32);
    aead_gcm_free(g);
    wipe(wk, sizeof(wk));
    free(aad);
    if (rc == CAIRN_OK) {
        memcpy(r->master, bdata, 32);
        snprintf(r->key_id, sizeof(r->key_id), "%s", id);
    }
    wipe(bdata, sizeof(bdata));
    return rc == CAIRN_OK || rc == CAIRN_E_SEAL ? rc : CAIRN_E_INTERNAL;
}

/* Open the master key with sec from any key object, then check the config's MAC. */
static int unlock(struct cairn_repo *r, const struct cairn_repo_secret *sec, struct cairn_err *err)
{
    const char *url = r->st->url;
    if (sec == NULL)
        return cairn_err_set(err, CAIRN_E_SEAL,
                             "repository '%s' is encrypted: give a key (--key-file, "
                             "--password-file, CAIRN_KEY_FILE, CAIRN_PASSWORD_FILE or "
                             "CAIRN_PASSWORD_COMMAND)",
                             url);
    int rc = secret_check(sec, err);
    if (rc != CAIRN_OK)
        return rc;
    struct strv ids;
    if ((rc = key_ids(r->st, &ids, err)) != CAIRN_OK)
        return rc;
    /* A damaged key object does not stop the others from being tried. */
    struct cairn_err first;
    int first_rc = CAIRN_OK;
    rc = CAIRN_E_SEAL;
    for (size_t i = 0; i < ids.n && rc != CAIRN_OK; i++) {
        struct cairn_err e;
        rc = try_key(r, ids.v[i], sec, &e);
        if (rc != CAIRN_OK && rc != CAIRN_E_SEAL && first_rc == CAIRN_OK) {
            first_rc = rc;
            cairn_err_copy(&first, &e);
        }
    }
    size_t nkeys = ids.n;
    strv_free(&ids);
    if (rc != CAIRN_OK && first_rc != CAIRN_OK && first_rc != CAIRN_E_CORRUPT) {
        cairn_err_copy(err, &first);
        return first_rc; /* a read failure, not a wrong key */
    }
    if (rc != CAIRN_OK && first_rc == CAIRN_E_CORRUPT)
        return cairn_err_set(err, CAIRN_E_SEAL,
                             "no key of repository '%s' opens with the given %s (and %s)", url,
                             sec->key ? "key file" : "password", first.msg);
    if (rc != CAIRN_OK)
        rc = CAIRN_E_SEAL;
    if (rc == CAIRN_E_SEAL && nkeys == 0)
        return cairn_err_set(err, CAIRN_E_SEAL,
                             "repository '%s' has no key objects (%s/" KEY_PREFIX "*): it cannot "
                             "be unlocked",
                             url, CAIRN_REPO_DIR);
    if (rc == CAIRN_E_SEAL)
        return cairn_err_set(err, CAIRN_E_SEAL,
                             "no key of repository '%s' opens with the given %s (wrong key file "
                             "or password)",
                             url, sec->key ? "key file" : "password");
    if (rc != CAIRN_OK)
        return rc;
    if ((rc = derive_subkeys(r)) != CAIRN_OK)
        return cairn_err_set(err, rc, "HKDF failed");
    const char *mac = json_string_value(json_object_get(r->config, "mac"));
    uint8_t want[32], got[32];
    config_mac(r, r->config, want);
    int ok = mac != NULL && strlen(mac) == 64 && cairn_hex_decode(mac, 64, got, 32, NULL) == 0 &&
             CRYPTO_memcmp(want, got, 32) == 0;
    if (!ok)
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "repository config of '%s' fails its MAC: it was changed after "
                             "init (refusing to use it)",
                             url);
    return CAIRN_OK;
}

int cairn_repo_open(struct cairn_storage *st, const struct cairn_repo_secret *sec,
                    struct cairn_repo **out, struct cairn_err *err)
{
    *out = NULL;
    char *text = NULL;
    int rc = obj_read(st, CAIRN_REPO_CONFIG, CONFIG_MAX, &text, err);
    if (rc == CAIRN_E_NOTFOUND) {
        if (sec != NULL)
            return cairn_err_set(err, CAIRN_E_SEAL,
                                 "a key was given but '%s' has no repository config (not an "
                                 "encrypted repository: run cairn init, or give no key)",
                                 st->url);
        return cairn_err_set(err, CAIRN_E_NOTFOUND, "'%s' has no repository config", st->url);
    }
    if (rc != CAIRN_OK)
        return cairn_err_wrap(err, rc, "read the repository config of '%s'", st->url);
    struct cairn_repo *r = xcalloc(1, sizeof(*r));
    r->st = st;
    rc = config_parse(r, text, err);
    free(text);
    if (rc == CAIRN_OK && r->encrypted)
        rc = unlock(r, sec, err);
    else if (rc == CAIRN_OK && sec != NULL)
        rc = cairn_err_set(err, CAIRN_E_SEAL,
                           "a key was given but repository '%s' is not encrypted (its config says "
                           "encryption none): refusing, since that config may have been "
                           "replaced",
                           st->url);
    if (rc == CAIRN_OK && r->cdc.has && derive_chunking(r) != CAIRN_OK)
        rc = cairn_err_set(err, CAIRN_E_INTERNAL, "HKDF failed");
    if (rc != CAIRN_OK) {
        cairn_repo_free(r);
        return rc;
    }
    *out = r;
    return CAIRN_OK;
}

static int count_backup(void *arg, const char *name)
{
    if (cairn_name_valid(name))
        (*(int *)arg)++;
    return 0;
}

/* Anything that lists as a backup (complete or not); not through cairn_storage_list, which
 * would read the config first. */
static int has_backups(struct cairn_storage *st, int *any, struct cairn_err *err)
{
    *any = 0;
    int rc = st->drv->list(st->state, count_backup, any, err);
    if (rc == CAIRN_E_NOTFOUND) {
        cairn_err_clear(err);
        rc = CAIRN_OK;
    }
    return rc;
}

struct first_backup {
    int any;
    char name[CAIRN_NAME_MAX + 1];
};

static int note_first_backup(void *arg, const char *name)
{
    struct first_backup *fb = arg;
    if (!cairn_name_valid(name) || fb->any)
        return 0;
    fb->any = 1;
    snprintf(fb->name, sizeof(fb->name), "%s", name);
    return 0;
}

/* A location without a config whose backup has an encrypted MANIFEST lost its config (removed
 * by someone): writing plaintext there would be a silent downgrade. */
static int encrypted_manifest(struct cairn_storage *st, const char *backup, struct cairn_err *err)
{
    struct cairn_reader *r = NULL;
    struct cairn_err e;
    char head[8] = {0};
    size_t got = 0;
    if (st->drv->read(st->state, backup, CAIRN_MANIFEST_NAME, &r, &e) == CAIRN_OK && r != NULL)
        cairn_reader_read(r, head, sizeof(head), &got, &e);
    cairn_reader_free(r);
    if (got == sizeof(head) && memcmp(head, "CRNAEAD2", 8) == 0)
        return cairn_err_set(err, CAIRN_E_SEAL,
                             "storage %s holds encrypted backups but has no repository config "
                             "(was .cairn/config removed?): refusing to write plaintext there",
                             st->url);
    return CAIRN_OK;
}

int cairn_storage_check_new_backup(struct cairn_storage *st, struct cairn_err *err)
{
    struct cairn_repo *repo = NULL;
    int rc = cairn_storage_repo(st, &repo, err);
    if (rc != CAIRN_OK || repo != NULL)
        return rc;
    struct first_backup fb = {0};
    rc = st->drv->list(st->state, note_first_backup, &fb, err);
    if (rc == CAIRN_E_NOTFOUND) {
        cairn_err_clear(err);
        rc = CAIRN_OK;
    }
    if (rc == CAIRN_OK && fb.any && (rc = encrypted_manifest(st, fb.name, err)) == CAIRN_OK)
        return CAIRN_OK; /* legacy: a plain location written before repositories existed */
    if (rc != CAIRN_OK)
        return rc;
    return cairn_err_set(err, CAIRN_E_INVALID,
                         "storage %s is not a repository: run 'cairn init %s' (encrypted, with "
                         "--key-file/--password-file) or 'cairn init --no-encryption %s'",
                         st->url, st->url, st->url);
}

int cairn_repo_init(struct cairn_storage *st, const struct cairn_repo_init_opts *opts,
                    const struct cairn_repo_secret *sec, struct cairn_repo **out,
                    struct cairn_err *err)
{
    if (out != NULL)
        *out = NULL;
    struct cairn_repo_init_opts o = {0};
    if (opts != NULL)
        o = *opts;
    if (o.chunk_size == 0)
        o.chunk_size = CAIRN_REPO_CHUNK_DEFAULT;
    if (!chunk_size_ok(o.chunk_size))
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "chunk size %u is not a power of two from 4 KiB to 1 MiB",
                             o.chunk_size);
    struct chunker_params cdc = {o.cdc_min ? o.cdc_min : CAIRN_REPO_CDC_MIN,
                                 o.cdc_avg ? o.cdc_avg : CAIRN_REPO_CDC_AVG,
                                 o.cdc_max ? o.cdc_max : CAIRN_REPO_CDC_MAX};
    if (!o.no_dedup && chunker_params_check(&cdc) != 0)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "chunker sizes %u/%u/%u are out of range (4 KiB <= min < avg <= max "
                             "<= 64 MiB, avg a power of two of at least 64 KiB)",
                             cdc.min, cdc.avg, cdc.max);
    int rc = o.no_encryption ? CAIRN_OK : secret_check(sec, err);
    if (rc != CAIRN_OK)
        return rc;
    if (o.no_encryption && sec != NULL)
        return cairn_err_set(err, CAIRN_E_INVALID, "a key was given with no encryption");
    char *text = NULL;
    rc = obj_read(st, CAIRN_REPO_CONFIG, CONFIG_MAX, &text, err);
    free(text);
    if (rc == CAIRN_OK)
        return cairn_err_set(err, CAIRN_E_EXISTS, "'%s' is already a repository", st->url);
    if (rc != CAIRN_E_NOTFOUND)
        return rc;
    cairn_err_clear(err);
    int any = 0;
    if ((rc = has_backups(st, &any, err)) != CAIRN_OK)
        return rc;
    if (any)
        return cairn_err_set(err, CAIRN_E_EXISTS,
                             "'%s' already holds backups: a repository starts in an empty "
                             "location",
                             st->url);
    struct cairn_repo *r = xcalloc(1, sizeof(*r));
    r->st = st;
    r->encrypted = !o.no_encryption;
    r->chunk_size = o.chunk_size;
    random_bytes(r->id, sizeof(r->id));
    cairn_hex_encode(r->id, 32, r->id_hex);
    r->config = json_pack("{s:i, s:s, s:s, s:I, s:n}", "version", CAIRN_REPO_VERSION, "id",
                          r->id_hex, "encryption", r->encrypted ? "aes-256-gcm" : "none",
                          "chunk_size", (json_int_t)o.chunk_size, "chunker");
    if (!o.no_dedup) {
        r->cdc.params = cdc;
        r->cdc.has = 1;
        json_object_set_new(r->config, "chunker",
                            json_pack("{s:s, s:I, s:I, s:I}", "algorithm", CDC_NAME, "min",
                                      (json_int_t)cdc.min, "avg", (json_int_t)cdc.avg, "max",
                                      (json_int_t)cdc.max));
    }
    if (r->encrypted) {
        random_bytes(r->master, sizeof(r->master));
        if (derive_subkeys(r) != CAIRN_OK) {
            cairn_repo_free(r);
            return cairn_err_set(err, CAIRN_E_INTERNAL, "HKDF failed");
        }
        uint8_t mac[32];
        char hex[65];
        config_mac(r, r->config, mac);
        cairn_hex_encode(mac, 32, hex);
        json_object_set_new(r->config, "mac", json_string(hex));
        /* The key first: a config without a key would be a repository nobody can open. */
        rc = write_key(r, sec, r->key_id, err);
    }
    if (rc == CAIRN_OK && r->cdc.has && derive_chunking(r) != CAIRN_OK)
        rc = cairn_err_set(err, CAIRN_E_INTERNAL, "HKDF failed");
    if (rc == CAIRN_OK) {
        char *cfg = json_dumps(r->config, JSON_INDENT(2) | JSON_SORT_KEYS);
        rc = obj_write(st, CAIRN_REPO_CONFIG, cfg, err);
        free(cfg);
    }
    if (rc != CAIRN_OK || out == NULL)
        cairn_repo_free(r);
    else
        *out = r;
    return rc;
}

/* ---- key management ---- */

static int need_keys(const struct cairn_repo *r, struct cairn_err *err)
{
    if (!r->encrypted)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "repository '%s' is not encrypted: it has no keys", r->st->url);
    return CAIRN_OK;
}

int cairn_repo_key_add(struct cairn_repo *r, const struct cairn_repo_secret *sec, char *id,
                       struct cairn_err *err)
{
    int rc = need_keys(r, err);
    return rc != CAIRN_OK ? rc : write_key(r, sec, id, err);
}

void cairn_repo_key_list_free(struct cairn_repo_key_list *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->count; i++) {
        free(l->items[i].id);
        free(l->items[i].type);
        free(l->items[i].created);
        free(l->items[i].host);
    }
    free(l->items);
    memset(l, 0, sizeof(*l));
}

int cairn_repo_key_list(struct cairn_repo *r, struct cairn_repo_key_list *out,
                        struct cairn_err *err)
{
    memset(out, 0, sizeof(*out));
    int rc = need_keys(r, err);
    struct strv ids;
    if (rc != CAIRN_OK || (rc = key_ids(r->st, &ids, err)) != CAIRN_OK)
        return rc;
    out->items = xcalloc(ids.n ? ids.n : 1, sizeof(*out->items));
    for (size_t i = 0; i < ids.n; i++) {
        char *file = xasprintf(KEY_PREFIX "%s", ids.v[i]), *text = NULL;
        struct cairn_err e;
        json_t *j = NULL;
        if (obj_read(r->st, file, KEY_OBJ_MAX, &text, &e) == CAIRN_OK)
            j = json_loads(text, 0, NULL);
        free(text);
        free(file);
        const char *t = json_string_value(json_object_get(j, "type"));
        const char *c = json_string_value(json_object_get(j, "created"));
        const char *h = json_string_value(json_object_get(j, "host"));
        struct cairn_repo_key_info *k = &out->items[out->count++];
        k->id = xstrdup(ids.v[i]);
        k->type = xstrdup(t ? t : "?");
        k->created = xstrdup(c ? c : "?");
        k->host = xstrdup(h ? h : "?");
        k->current = strcmp(ids.v[i], r->key_id) == 0;
        json_decref(j);
    }
    strv_free(&ids);
    return CAIRN_OK;
}

int cairn_repo_key_remove(struct cairn_repo *r, const char *id, struct cairn_err *err)
{
    int rc = need_keys(r, err);
    struct strv ids;
    if (rc != CAIRN_OK || (rc = key_ids(r->st, &ids, err)) != CAIRN_OK)
        return rc;
    int found = 0;
    for (size_t i = 0; i < ids.n; i++)
        found |= strcmp(ids.v[i], id) == 0;
    size_t n = ids.n;
    strv_free(&ids);
    if (!found)
        return cairn_err_set(err, CAIRN_E_NOTFOUND, "repository '%s' has no key '%s'", r->st->url,
                             id);
    if (n <= 1)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "key '%s' is the last key of '%s': removing it would lose every "
                             "backup",
                             id, r->st->url);
    if (strcmp(id, r->key_id) == 0)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "key '%s' is the one this command unlocked with: unlock with another "
                             "key to remove it, or use key passwd",
                             id);
    if (r->st->drv->remove_file == NULL)
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED, "storage driver '%s' cannot remove files",
                             r->st->drv->name);
    char *file = xasprintf(KEY_PREFIX "%s", id);
    rc = r->st->drv->remove_file(r->st->state, CAIRN_REPO_DIR, file, err);
    free(file);
    return rc;
}

int cairn_repo_key_passwd(struct cairn_repo *r, const struct cairn_repo_secret *sec, char *id,
                          struct cairn_err *err)
{
    int rc = need_keys(r, err);
    char nid[2 * KEY_ID_LEN + 1];
    if (rc != CAIRN_OK || (rc = write_key(r, sec, nid, err)) != CAIRN_OK)
        return rc;
    char old[sizeof(r->key_id)];
    memcpy(old, r->key_id, sizeof(old));
    memcpy(r->key_id, nid, sizeof(nid));
    if (id != NULL)
        memcpy(id, nid, sizeof(nid));
    return cairn_repo_key_remove(r, old, err);
}

int cairn_repo_key_generate(const char *path, struct cairn_err *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return cairn_err_sys(err, errno == EEXIST ? CAIRN_E_EXISTS : 0, errno,
                             "create key file '%s'", path);
    uint8_t key[CAIRN_REPO_KEY_LEN];
    random_bytes(key, sizeof(key));
    /* umask may have taken bits away, never added any; make the mode exact. */
    int rc = fchmod(fd, 0600) == 0 ? CAIRN_OK
                                   : cairn_err_sys(err, 0, errno, "chmod key file '%s'", path);
    if (rc == CAIRN_OK)
        rc = write_all(fd, key, sizeof(key), path, err);
    if (rc == CAIRN_OK && fsync(fd) != 0)
        rc = cairn_err_sys(err, 0, errno, "fsync key file '%s'", path);
    wipe(key, sizeof(key));
    if (close(fd) != 0 && rc == CAIRN_OK)
        rc = cairn_err_sys(err, 0, errno, "close key file '%s'", path);
    if (rc != CAIRN_OK)
        unlink(path);
    return rc;
}
