/* The consul:// and consuls:// source driver: consul://[:TOKEN@]HOST[:8500][?stale][&dc=DC]
 * (consuls: HTTPS with the CA and client certificate of the options). A backup is one file,
 * consul.snap, the archive `GET /v1/snapshot` answers, byte for byte (what `consul snapshot
 * save` writes), checked with cairn's archive reader as it streams in (Consul's rules: exactly
 * meta.json, state.bin and SHA256SUMS). A restore sends it back with `PUT /v1/snapshot` (what
 * `consul snapshot restore` does), or writes DIR/consul.snap (--into DIR). The token comes
 * from the URL's password, the password file or CONSUL_HTTP_TOKEN, as X-Consul-Token. */
#include <stdlib.h>

#include "source/hashi/hashi.h"

static int consul_request(const struct source_url *u, int restore, struct buf *path,
                          struct cairn_err *err);

static const struct hashi_service consul = {
    .kind = "consul",
    .file = "consul.snap",
    .tls_scheme = "consuls",
    .port = 8500,
    .token_env = "CONSUL_HTTP_TOKEN",
    .token_header = "X-Consul-Token",
    .restore_method = "PUT",
    .vault = 0,
    .request = consul_request,
};

/* dc names a datacenter (letters, digits, '-', '_', '.'); stale is Consul's presence flag,
 * sent for a backup only (a restore with it is refused by Consul: the same URL serves both). */
static int consul_request(const struct source_url *u, int restore, struct buf *path,
                          struct cairn_err *err)
{
    static const char *const known[] = {"dc", "stale", NULL};
    int stale = 0;
    int rc = hashi_query_known(&consul, u, known, err);
    if (rc == CAIRN_OK)
        rc = hashi_query_flag(&consul, u, "stale", &stale, err);
    if (rc != CAIRN_OK)
        return rc;
    char *dc = source_url_param(u, "dc");
    for (const char *p = dc; p != NULL && rc == CAIRN_OK; p++) {
        if (*p == '\0' && p == dc)
            rc = cairn_err_set(err, CAIRN_E_INVALID, "consul source: dc= is empty");
        if (*p == '\0')
            break;
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.'))
            rc = cairn_err_set(err, CAIRN_E_INVALID,
                               "consul source: dc= takes a datacenter name (letters, digits, "
                               "'-', '_', '.')");
    }
    if (rc == CAIRN_OK) {
        buf_adds(path, "/v1/snapshot");
        const char *sep = "?";
        if (stale && !restore) {
            buf_adds(path, "?stale");
            sep = "&";
        }
        if (dc != NULL)
            buf_printf(path, "%sdc=%s", sep, dc);
    }
    free(dc);
    return rc;
}

static int consul_open(const char *url, const struct cairn_source_opts *o, void **state,
                       struct cairn_err *err)
{
    return hashi_open(&consul, url, o, state, err);
}

const struct cairn_source_driver source_consul_driver = {
    .scheme = "consul",
    .description = "consul://[:TOKEN@]HOST[:8500][?stale][&dc=DC] snapshots (GET /v1/snapshot)",
    .open = consul_open,
    .backup = hashi_backup,
    .restore = hashi_restore,
    .free = hashi_free,
};

/* consuls:// is the same driver over HTTPS (hashi_open picks it from the scheme). */
const struct cairn_source_driver source_consuls_driver = {
    .scheme = "consuls",
    .description = "consuls://HOST[:8500] the same over HTTPS (--tls-ca, --tls-cert, --tls-key)",
    .open = consul_open,
    .backup = hashi_backup,
    .restore = hashi_restore,
    .free = hashi_free,
};
