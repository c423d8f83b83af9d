/* Private to the source module: the built-in drivers the registry lists. */
#ifndef CAIRN_SOURCE_INTERNAL_H
#define CAIRN_SOURCE_INTERNAL_H

#include "cairn/io.h"
#include "cairn/source.h"

extern const struct cairn_source_driver source_exec_driver;
extern const struct cairn_source_driver source_redis_driver;
extern const struct cairn_source_driver source_rediss_driver;
extern const struct cairn_source_driver source_etcd_driver;
extern const struct cairn_source_driver source_etcds_driver;
extern const struct cairn_source_driver source_consul_driver;
extern const struct cairn_source_driver source_consuls_driver;
extern const struct cairn_source_driver source_vault_driver;
extern const struct cairn_source_driver source_vaults_driver;
extern const struct cairn_source_driver source_postgresql_driver;
extern const struct cairn_source_driver source_postgres_driver;

/* A backup of one file (CAIRN_COMPRESS_AUTO) of the given kind: fill(arg, w, err) streams
 * it in; the file is committed only when fill succeeded. */
int source_put_one(struct cairn_backup *b, const char *kind, const char *file,
                   int (*fill)(void *arg, struct cairn_writer *w, struct cairn_err *err), void *arg,
                   struct cairn_err *err);
/* The same for a service that sends a SHA-256 of the bytes (etcd): w lends its hash to fill
 * (cairn_backup_file_sha256). Not for the others: it keeps a separate logical hash in front of
 * the pipe even when the file is stored as is, a second pass they would not use. */
int source_put_one_hashed(struct cairn_backup *b, const char *kind, const char *file,
                          int (*fill)(void *arg, struct cairn_writer *w, struct cairn_err *err),
                          void *arg, struct cairn_err *err);
/* Write b's file as INTO/file (mode 0600, INTO created), atomically: a stream that fails the
 * MANIFEST's checks leaves no file. */
int source_restore_into(struct cairn_backup *b, const char *file, const char *into,
                        struct cairn_err *err);

/* A network source's URL, parsed (source_url_parse): every field malloc'd or NULL. */
struct source_url {
    char *scheme;
    char *user;     /* percent-decoded; NULL when absent or empty */
    char *password; /* percent-decoded; NULL when absent. Never logged */
    char *host;     /* without brackets for IPv6 */
    unsigned port;  /* default_port when the URL has none */
    char *path;     /* "" or "/..." */
    char *query;    /* after '?', raw; NULL when absent */
};
/* The scheme's length when url starts with one (RFC 3986: a letter, then letters, digits,
 * '+', '-', '.', before ':'), else 0. */
size_t source_scheme_len(const char *url);
/* Where a "scheme://authority..." URL's parts are, without copying: the one reading of the
 * authority that parsing and redacting share. */
struct source_url_span {
    const char *auth; /* after "://" */
    size_t auth_len;  /* up to the first '/', '?' or '#' */
    const char *at;   /* the last '@' in the authority (a password may hold one), or NULL */
};
int source_url_split(const char *url, struct source_url_span *sp); /* 1: found; 0: not */
int source_url_parse(const char *url, unsigned default_port, struct source_url *u,
                     struct cairn_err *err);
/* The value of "name=" in the query, malloc'd and decoded; NULL when absent. */
char *source_url_param(const struct source_url *u, const char *name);
void source_url_free(struct source_url *u); /* wipes the password */
/* First line of a password file that only its owner may read (else CAIRN_E_PERM). */
int source_read_secret(const char *path, char **out, struct cairn_err *err);

#endif
