/* Repository commands: cairn init (a location's config and first key) and cairn key
 * (generate, add, list, remove, passwd). */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cairn/repo.h"
#include "cairn/storage.h"
#include "common/util.h"
#include "progs/progs.h"

static const char init_help[] =
    "usage: cairn init STORAGE_URL (--key-file FILE | --password-file FILE | --no-encryption)\n"
    "                  [--kdf scrypt|argon2id] [--chunk-size SIZE]\n"
    "                  [--chunker MIN,AVG,MAX | --no-dedup] [--json]\n\n"
    "Make STORAGE_URL (empty, or holding no backup) a repository: a config object and, when\n"
    "encrypted (the default), a random master key wrapped by the key given. Every stored byte\n"
    "(files, MANIFESTs, lock objects) is then encrypted with AES-256-GCM; every command needs\n"
    "the key. See docs/FORMAT.md and docs/SECURITY.md.\n\n"
    "  --key-file FILE       32 random bytes (cairn key generate FILE), mode 0600\n"
    "  --password-file FILE  a passphrase, the first line of FILE (stretched with scrypt)\n"
    "  --kdf KDF             the passphrase's stretching: scrypt (default) or argon2id\n"
    "  --no-encryption       a plain repository (no key)\n"
    "  --chunk-size SIZE     plaintext bytes per encrypted chunk, a power of two from 4K to\n"
    "                        1M (default 64K)\n"
    "  --chunker MIN,AVG,MAX content-defined chunk sizes of deduplication (default\n"
    "                        512K,1M,8M; AVG a power of two)\n"
    "  --no-dedup            store every file whole, without deduplication (the format of\n"
    "                        repositories made before it)\n\n"
    "Examples:\n"
    "  cairn key generate /etc/cairn/repo.key\n"
    "  cairn init s3://bkt/etcd --key-file /etc/cairn/repo.key\n\n";

static const char key_help[] =
    "usage: cairn key generate FILE\n"
    "       cairn key list STORAGE_URL [--json]\n"
    "       cairn key add STORAGE_URL (--new-key-file FILE | --new-password-file FILE)\n"
    "                     [--kdf scrypt|argon2id]\n"
    "       cairn key remove STORAGE_URL ID\n"
    "       cairn key passwd STORAGE_URL (--new-key-file FILE | --new-password-file FILE)\n"
    "                        [--kdf scrypt|argon2id]\n\n"
    "Keys of an encrypted repository: each wraps the same master key, so adding, removing\n"
    "or changing one re-encrypts nothing. The key that unlocks (--key-file, --password-file\n"
    "or the variables below) is needed for all but generate. generate writes 32 random bytes\n"
    "to a new FILE with mode 0600 (never overwrites). remove refuses the key in use and the\n"
    "last key; passwd replaces the key in use.\n\n"
    "Examples:\n"
    "  cairn key generate /etc/cairn/new.key\n"
    "  cairn key list /srv/backups --key-file /etc/cairn/repo.key --json\n"
    "  cairn key add /srv/backups --key-file /etc/cairn/repo.key --new-key-file "
    "/etc/cairn/new.key\n\n";

/* Open url's repository with the command's key. */
static int open_repo(const char *url, const char *key_file, const char *pw_file,
                     struct cairn_storage **st, struct cairn_repo **repo, struct cairn_err *err)
{
    *repo = NULL;
    struct progs_secret sec;
    int rc = progs_secret_load(key_file, pw_file, &sec, err);
    if (rc != CAIRN_OK)
        return rc;
    rc = cairn_storage_open(url, st, err);
    if (rc == CAIRN_OK)
        rc = cairn_repo_open(*st, progs_secret(&sec), repo, err);
    progs_secret_free(&sec);
    return rc;
}

const struct option init_opts[] = {
    {"key-file", required_argument, NULL, 'k'}, {"password-file", required_argument, NULL, 'p'},
    {"no-encryption", no_argument, NULL, 'n'},  {"chunk-size", required_argument, NULL, 'c'},
    {"kdf", required_argument, NULL, 'd'},      {"json", no_argument, NULL, 'j'},
    {"chunker", required_argument, NULL, 'C'},  {"no-dedup", no_argument, NULL, 'D'},
    {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};

int cmd_init(int argc, char **argv)
{
    const char *key_file = NULL, *pw_file = NULL, *kdf = NULL;
    struct cairn_repo_init_opts io = {0};
    uint64_t v;
    int c;
    struct progs_getopt g = {.cmd = "init", .opts = init_opts, .argc = argc, .argv = argv};
    while ((c = progs_getopt(&g)) != -1) {
        switch (c) {
        case 'k': key_file = optarg; break;
        case 'p': pw_file = optarg; break;
        case 'n': io.no_encryption = 1; break;
        case 'd': kdf = optarg; break;
        case 'c':
            if (parse_size(optarg, &v) != 0 || v > CAIRN_REPO_CHUNK_MAX)
                return progs_usage("init", "invalid --chunk-size '%s'", optarg);
            io.chunk_size = (uint32_t)v;
            break;
        case 'C': {
            char a[32], b[32], d[32];
            uint64_t x, y, z;
            if (sscanf(optarg, "%31[^,],%31[^,],%31s", a, b, d) != 3 || parse_size(a, &x) != 0 ||
                parse_size(b, &y) != 0 || parse_size(d, &z) != 0 || x > UINT32_MAX ||
                y > UINT32_MAX || z > UINT32_MAX)
                return progs_usage("init", "invalid --chunker '%s' (MIN,AVG,MAX)", optarg);
            io.cdc_min = (uint32_t)x;
            io.cdc_avg = (uint32_t)y;
            io.cdc_max = (uint32_t)z;
            break;
        }
        case 'D': io.no_dedup = 1; break;
        case 'j': progs_json = 1; break;
        case 'h': printf("%s%s%s", init_help, progs_secret_help, progs_exit_codes_help); return 0;
        default: return g.code;
        }
    }
    if ((c = progs_positionals(&g, 1, 1, "STORAGE_URL")) >= 0)
        return c;
    if (io.no_encryption && (key_file != NULL || pw_file != NULL))
        return progs_usage("init", "--no-encryption takes no key");
    if (kdf != NULL && strcmp(kdf, "scrypt") != 0 && strcmp(kdf, "argon2id") != 0)
        return progs_usage("init", "--kdf is scrypt or argon2id, not '%s'", kdf);
    struct cairn_err err = {0};
    struct progs_secret sec = {0};
    int rc = io.no_encryption ? CAIRN_OK : progs_secret_load(key_file, pw_file, &sec, &err);
    if (rc != CAIRN_OK)
        return progs_fail(&err);
    if (!io.no_encryption && progs_secret(&sec) == NULL)
        return progs_usage("init", "give --key-file or --password-file (or CAIRN_KEY_FILE, "
                                   "CAIRN_PASSWORD_FILE, CAIRN_PASSWORD_COMMAND), or "
                                   "--no-encryption");
    struct cairn_storage *st = NULL;
    struct cairn_repo *repo = NULL;
    const char *loc = progs_location(argv[optind]);
    rc = cairn_storage_open(loc, &st, &err);
    if (rc == CAIRN_OK) {
        sec.sec.kdf = kdf;
        rc = cairn_repo_init(st, &io, progs_secret(&sec), &repo, &err);
    }
    progs_secret_free(&sec);
    if (rc != CAIRN_OK) {
        cairn_storage_free(st);
        return progs_fail(&err);
    }
    if (progs_json)
        progs_print_json(json_pack("{s:b, s:s, s:s, s:s, s:b, s:s, s:i}", "ok", 1, "location", loc,
                                   "url", loc, "id", cairn_repo_id(repo), "encrypted",
                                   cairn_repo_encrypted(repo), "key", cairn_repo_key_id(repo),
                                   "chunk_size", (int)cairn_repo_chunk_size(repo)));
    else
        printf("created %s repository %s at %s%s%s\n",
               cairn_repo_encrypted(repo) ? "encrypted" : "unencrypted", cairn_repo_id(repo), loc,
               cairn_repo_encrypted(repo) ? ", key " : "", cairn_repo_key_id(repo));
    cairn_repo_free(repo);
    cairn_storage_free(st);
    return 0;
}

static int key_list(struct cairn_repo *repo, struct cairn_err *err)
{
    struct cairn_repo_key_list l;
    int rc = cairn_repo_key_list(repo, &l, err);
    if (rc != CAIRN_OK)
        return rc;
    json_t *arr = json_array();
    for (size_t i = 0; i < l.count; i++) {
        const struct cairn_repo_key_info *k = &l.items[i];
        if (progs_json)
            json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s, s:b}", "id", k->id, "type",
                                                 k->type, "created", k->created, "host", k->host,
                                                 "current", k->current));
        else
            printf("%s %-16s %-8s %s %s\n", k->current ? "*" : " ", k->id, k->type, k->created,
                   k->host);
    }
    if (progs_json)
        progs_print_json(json_pack("{s:b, s:o}", "ok", 1, "keys", arr));
    else
        json_decref(arr);
    cairn_repo_key_list_free(&l);
    return CAIRN_OK;
}

/* key add / passwd: the new key from --new-key-file or --new-password-file. */
static int key_new(struct cairn_repo *repo, int passwd, const char *nk, const char *np,
                   const char *kdf, struct cairn_err *err)
{
    struct progs_secret ns;
    int rc = progs_secret_load(nk, np, &ns, err);
    if (rc != CAIRN_OK)
        return rc;
    ns.sec.kdf = kdf;
    char id[17];
    rc = passwd ? cairn_repo_key_passwd(repo, progs_secret(&ns), id, err)
                : cairn_repo_key_add(repo, progs_secret(&ns), id, err);
    progs_secret_free(&ns);
    if (rc != CAIRN_OK)
        return rc;
    if (progs_json)
        progs_print_json(json_pack("{s:b, s:s}", "ok", 1, "id", id));
    else
        printf("%s key %s\n", passwd ? "replaced the key in use by" : "added", id);
    return CAIRN_OK;
}

const struct option key_opts[] = {{"key-file", required_argument, NULL, 'k'},
                                  {"password-file", required_argument, NULL, 'p'},
                                  {"new-key-file", required_argument, NULL, 'K'},
                                  {"new-password-file", required_argument, NULL, 'P'},
                                  {"kdf", required_argument, NULL, 'd'},
                                  {"json", no_argument, NULL, 'j'},
                                  {"help", no_argument, NULL, 'h'},
                                  {NULL, 0, NULL, 0}};

int cmd_key(int argc, char **argv)
{
    const char *kf = NULL, *pf = NULL, *nk = NULL, *np = NULL, *kdf = NULL;
    int c;
    struct progs_getopt g = {.cmd = "key", .opts = key_opts, .argc = argc, .argv = argv};
    while ((c = progs_getopt(&g)) != -1) {
        switch (c) {
        case 'k': kf = optarg; break;
        case 'p': pf = optarg; break;
        case 'K': nk = optarg; break;
        case 'P': np = optarg; break;
        case 'd': kdf = optarg; break;
        case 'j': progs_json = 1; break;
        case 'h': printf("%s%s%s", key_help, progs_secret_help, progs_exit_codes_help); return 0;
        default: return g.code;
        }
    }
    int n = argc - optind;
    const char *sub = n > 0 ? argv[optind] : "";
    struct cairn_err err = {0};
    if (strcmp(sub, "generate") == 0) {
        if (n != 2)
            return progs_usage("key", "key generate takes FILE");
        if (cairn_repo_key_generate(argv[optind + 1], &err) != CAIRN_OK)
            return progs_fail(&err);
        if (progs_json)
            progs_print_json(json_pack("{s:b, s:s}", "ok", 1, "file", argv[optind + 1]));
        else
            printf("wrote a new key file %s (mode 0600)\n", argv[optind + 1]);
        return 0;
    }
    int is_new = strcmp(sub, "add") == 0 || strcmp(sub, "passwd") == 0;
    if (!is_new && strcmp(sub, "list") != 0 && strcmp(sub, "remove") != 0) {
        static const char *const verbs[] = {"generate", "list", "add", "remove", "passwd"};
        const char *m = n > 0 ? progs_did_you_mean(sub, verbs, 5) : NULL;
        if (m != NULL)
            return progs_usage("key", "unknown verb '%s' (did you mean '%s'?)", sub, m);
        return progs_usage("key", "expected generate, list, add, remove or passwd");
    }
    if (n != (strcmp(sub, "remove") == 0 ? 3 : 2))
        return progs_usage("key", "key %s takes STORAGE_URL%s", sub,
                           strcmp(sub, "remove") == 0 ? " and ID" : "");
    if (is_new && (nk == NULL) == (np == NULL))
        return progs_usage("key", "key %s needs --new-key-file or --new-password-file", sub);
    if (kdf != NULL && strcmp(kdf, "scrypt") != 0 && strcmp(kdf, "argon2id") != 0)
        return progs_usage("key", "--kdf is scrypt or argon2id, not '%s'", kdf);
    struct cairn_storage *st = NULL;
    struct cairn_repo *repo = NULL;
    int rc = open_repo(progs_location(argv[optind + 1]), kf, pf, &st, &repo, &err);
    if (rc == CAIRN_OK && strcmp(sub, "list") == 0)
        rc = key_list(repo, &err);
    else if (rc == CAIRN_OK && is_new)
        rc = key_new(repo, strcmp(sub, "passwd") == 0, nk, np, kdf, &err);
    else if (rc == CAIRN_OK) {
        rc = cairn_repo_key_remove(repo, argv[optind + 2], &err);
        if (rc == CAIRN_OK && progs_json)
            progs_print_json(json_pack("{s:b, s:s}", "ok", 1, "removed", argv[optind + 2]));
        else if (rc == CAIRN_OK)
            printf("removed key %s\n", argv[optind + 2]);
    }
    cairn_repo_free(repo);
    cairn_storage_free(st);
    return rc == CAIRN_OK ? 0 : progs_fail(&err);
}
