/* The vault:// and vaults:// source driver: vault://[:TOKEN@]HOST[:8200][?force=true]
 * (vaults: HTTPS with the CA and client certificate of the options). A backup is one file,
 * vault.snap, the archive `GET /v1/sys/storage/raft/snapshot` answers (integrated storage),
 * byte for byte (what `vault operator raft snapshot save` writes), checked with cairn's archive
 * reader as it streams in: SHA256SUMS must match and, as Vault's own client insists, the
 * SHA256SUMS.sealed member must be there (cairn cannot open it without the cluster's seal).
 * A restore sends it back with `POST /v1/sys/storage/raft/snapshot`, or `.../snapshot-force`
 * with ?force=true (a snapshot of another cluster, whose seal differs), or writes
 * DIR/vault.snap (--into DIR). The token comes from the URL's password, the password file or
 * VAULT_TOKEN, as X-Vault-Token. */
#include "source/hashi/hashi.h"

static int vault_request(const struct source_url *u, int restore, struct buf *path,
                         struct cairn_err *err);

static const struct hashi_service vault = {
    .kind = "vault",
    .file = "vault.snap",
    .tls_scheme = "vaults",
    .port = 8200,
    .token_env = "VAULT_TOKEN",
    .token_header = "X-Vault-Token",
    .restore_method = "POST",
    .vault = 1,
    .request = vault_request,
};

/* force is a restore option; a backup from the same URL ignores it. */
static int vault_request(const struct source_url *u, int restore, struct buf *path,
                         struct cairn_err *err)
{
    static const char *const known[] = {"force", NULL};
    int force = 0;
    int rc = hashi_query_known(&vault, u, known, err);
    if (rc == CAIRN_OK)
        rc = hashi_query_flag(&vault, u, "force", &force, err);
    if (rc == CAIRN_OK)
        buf_adds(path, restore && force ? "/v1/sys/storage/raft/snapshot-force"
                                        : "/v1/sys/storage/raft/snapshot");
    return rc;
}

static int vault_open(const char *url, const struct cairn_source_opts *o, void **state,
                      struct cairn_err *err)
{
    return hashi_open(&vault, url, o, state, err);
}

const struct cairn_source_driver source_vault_driver = {
    .scheme = "vault",
    .description = "vault://[:TOKEN@]HOST[:8200][?force=true] raft snapshots (integrated storage)",
    .open = vault_open,
    .backup = hashi_backup,
    .restore = hashi_restore,
    .free = hashi_free,
};

/* vaults:// is the same driver over HTTPS (hashi_open picks it from the scheme). */
const struct cairn_source_driver source_vaults_driver = {
    .scheme = "vaults",
    .description = "vaults://HOST[:8200] the same over HTTPS (--tls-ca, --tls-cert, --tls-key)",
    .open = vault_open,
    .backup = hashi_backup,
    .restore = hashi_restore,
    .free = hashi_free,
};
