/* Internal: the HashiCorp raft snapshot core that the consul:// and vault:// drivers share.
 *
 * Both services hand out the same archive (gzip(tar{meta.json, state.bin, SHA256SUMS[,
 * SHA256SUMS.sealed]}), include/cairn/snapshot.h) over one HTTP call, and take it back over
 * another. The core does the URL, the token, the transfer both ways and the check; a driver
 * only says which service it is (struct hashi_service). A snapshot is stored byte for byte as
 * the server sent it, and the same bytes go through cairn's archive reader on a helper thread
 * while they stream in (hashi_check), so a corrupt or cut archive fails the backup.
 */
#ifndef CAIRN_SOURCE_HASHI_H
#define CAIRN_SOURCE_HASHI_H

#include "cairn/io.h"
#include "cairn/snapshot.h"
#include "cairn/source.h"
#include "common/buf.h"
#include "source/internal.h"

struct hashi_service {
    const char *kind;         /* "consul": the backup kind, and the name in messages */
    const char *file;         /* the stored file, "consul.snap" */
    const char *tls_scheme;   /* "consuls": this scheme means https */
    unsigned port;            /* default port */
    const char *token_env;    /* "CONSUL_HTTP_TOKEN" */
    const char *token_header; /* "X-Consul-Token" */
    const char *restore_method;
    /* Vault's archive: SHA256SUMS.sealed is allowed and required (non-empty), as Vault's own
     * client insists; else Consul's: exactly the three members. */
    int vault;
    /* The request path and query for a backup (restore 0) or a restore (1) from the URL's
     * query parameters (u->query), into path (a buf, NUL-free); an unknown or misplaced
     * parameter is CAIRN_E_INVALID. */
    int (*request)(const struct source_url *u, int restore, struct buf *path,
                   struct cairn_err *err);
};

/* The driver operations, given the service as the first argument by each driver's thin
 * wrappers. */
int hashi_open(const struct hashi_service *svc, const char *url, const struct cairn_source_opts *o,
               void **state, struct cairn_err *err);
int hashi_backup(void *state, struct cairn_backup *b, struct cairn_err *err);
int hashi_restore(void *state, struct cairn_backup *b, const char *into, struct cairn_err *err);
void hashi_free(void *state);

/* CAIRN_E_INVALID unless every parameter of u's query is one of known (NULL-terminated). */
int hashi_query_known(const struct hashi_service *svc, const struct source_url *u,
                      const char *const *known, struct cairn_err *err);
/* A boolean parameter: absent 0, present bare or "true"/"1" 1, "false"/"0" 0, else
 * CAIRN_E_INVALID. */
int hashi_query_flag(const struct hashi_service *svc, const struct source_url *u, const char *name,
                     int *on, struct cairn_err *err);

/* ---- the check ---- */

/* A writer stage that passes every byte on to next (taken, as every stage takes its next) and
 * feeds the same bytes to cairn_snapshot_verify on a helper thread through a 1 MiB ring, so
 * the archive is checked in the same pass as it is stored. A write fails as soon as the
 * reader has found damage (with the reader's error); close waits for the reader's verdict on
 * the whole stream and fails with it. Freed unclosed, the reader is stopped. what names the
 * stream in messages (borrowed). */
struct cairn_writer *hashi_check_new(struct cairn_writer *next,
                                     const struct cairn_snapshot_read_opts *ro, const char *what);
/* After a successful close: what the reader found (borrowed from the stage). */
const struct cairn_snapshot_info *hashi_check_info(struct cairn_writer *w);

#endif
