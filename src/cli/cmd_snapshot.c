/* cairn snapshot save|inspect|verify|extract: the HashiCorp raft snapshot archive (Consul,
 * Nomad, Vault) from the command line. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cairn/digest.h"
#include "cairn/snapshot.h"
#include "common/util.h"
#include "interrupt.h"
#include "progs/progs.h"

int cmd_snapshot(int argc, char **argv);

static const char snapshot_help[] =
    "usage: cairn snapshot <save|inspect|verify|extract> [options]\n"
    "\n"
    "Write and read HashiCorp raft snapshot archives, the format of 'consul snapshot save',\n"
    "'nomad operator snapshot save' and 'vault operator raft snapshot save':\n"
    "gzip(tar(meta.json, state.bin, SHA256SUMS[, SHA256SUMS.sealed])), or the same tar in zstd.\n"
    "\n"
    "  save STATEFILE|- OUT --index N --term N   write an archive of a state stream\n"
    "  inspect FILE                              verify and show the metadata\n"
    "  verify FILE                               check every hash and the archive's exact end\n"
    "  extract FILE OUT                          write state.bin to OUT, only if it verifies\n"
    "\n"
    "Run 'cairn snapshot <verb> --help' for the options of one verb.\n\n"
    "Examples:\n"
    "  cairn snapshot save state.bin backup.snap --index 38 --term 3\n"
    "  cairn snapshot verify backup.snap\n"
    "  cairn snapshot extract backup.snap - | wc -c\n\n";

static const char save_help[] =
    "usage: cairn snapshot save STATEFILE|- OUT|- --index N --term N [options]\n"
    "\n"
    "Write the state (a file, or '-' for stdin) and its raft metadata into the archive OUT\n"
    "('-' for stdout). OUT appears only when the archive is complete (temp file, fsync,\n"
    "rename); to stdout a failure exits non-zero after a cut archive, which verify refuses.\n"
    "\n"
    "Options:\n"
    "  --index N               last raft log index covered by the state (required)\n"
    "  --term N                raft term of that index (required)\n"
    "  --id ID                 snapshot ID (default <term>-<index>-<unix ms>, as raft does)\n"
    "  --configuration-index N raft configuration index (default: --index)\n"
    "  --server ID=ADDRESS[,voter|nonvoter|staging]\n"
    "                          a server of the raft configuration (repeatable)\n"
    "  --size N                the state's exact length, to stream stdin without spooling it\n"
    "                          to a temp file first (a shorter or longer stream is an error)\n"
    "  --zstd                  zstd instead of gzip (cairn's flavour; HashiCorp tools need gzip)\n"
    "  --level N               compression level (gzip 1-12, default 6; zstd 1-19, default 3)\n"
    "  --threads N             compression threads (default: gzip one per CPU, zstd 1;\n"
    "                          each zstd worker adds ~15 MiB of memory)\n"
    "  --seal-key-file FILE         add SHA256SUMS.sealed, sealed with the 32-byte key in FILE\n"
    "                          (32 raw bytes or 64 hex digits, mode 0600); --seal-key is\n"
    "                          its old name\n"
    "  --seal hmac|aes-gcm     the sealer for --seal-key-file (default hmac)\n"
    "  --tmpdir DIR            where stdin is spooled (default $TMPDIR or /tmp)\n"
    "  --force                 replace OUT if it exists\n"
    "  --json                  print the result as one JSON object\n"
    "  --quiet                 no progress line (stderr)\n"
    "\n"
    "Examples:\n"
    "  cairn snapshot save state.bin backup.snap --index 38 --term 3\n"
    "  dump-fsm | cairn snapshot save - backup.snap --index 38 --term 3 --zstd\n"
    "  cairn snapshot save state.bin sealed.snap --index 38 --term 3 --seal-key-file k.key --seal "
    "aes-gcm\n"
    "\n";

static const char inspect_help[] =
    "usage: cairn snapshot inspect FILE [--seal-key-file FILE [--seal hmac|aes-gcm]] [--tar] "
    "[--consul]\n"
    "                              [--max-ratio N] [--json]\n"
    "\n"
    "Verify FILE completely, then print its metadata (ID, Size, Index, Term, Version,\n"
    "configuration), its checksum (sha-256=<base64>, as raft-snapshot's Checksum()) and its\n"
    "members. Without --seal-key-file a SHA256SUMS.sealed member (Vault) is reported, not "
    "trusted,\n"
    "and the plain SHA256SUMS decides. --tar reads a bare tar with no compression layer.\n"
    "\n"
    "Examples:\n"
    "  cairn snapshot inspect vault.snap\n"
    "  cairn snapshot inspect backup.snap --json | jq .meta.Index\n"
    "\n";

static const char verify_help[] =
    "usage: cairn snapshot verify FILE [--seal-key-file FILE [--seal hmac|aes-gcm]] [--tar] "
    "[--consul]\n"
    "                             [--max-ratio N] [--json]\n"
    "\n"
    "Check FILE as Consul's and raft-snapshot's Verify do: every member hash against\n"
    "SHA256SUMS, no unexpected or repeated members, and no byte after the tar end marker\n"
    "(\"N unread uncompressed bytes remain\"). With --seal-key-file the SHA256SUMS.sealed member "
    "is\n"
    "required and must open with the key and match. --tar reads a bare tar. --consul applies\n"
    "Consul's and Nomad's rule of exactly three members (a Vault snapshot is then rejected).\n"
    "Past 64 MiB the decompressed tar may be at most --max-ratio times the compressed bytes\n"
    "consumed (default 4096; a decompression bomb is refused, exit 3, before more than 64 MiB\n"
    "of it is written anywhere).\n"
    "\n"
    "Examples:\n"
    "  cairn snapshot verify backup.snap && echo good\n"
    "  cairn snapshot verify sealed.snap --seal-key-file k.key --seal aes-gcm\n"
    "\n";

static const char extract_help[] =
    "usage: cairn snapshot extract FILE OUT [--seal-key-file FILE [--seal hmac|aes-gcm]] [--tar]\n"
    "                              [--force] [--max-ratio N] [--json]\n"
    "\n"
    "Write state.bin of FILE to OUT. OUT is written through a temp file and appears only if\n"
    "the whole archive verified; a bad archive leaves nothing behind. --max-ratio as for\n"
    "verify.\n"
    "\n"
    "Example:\n"
    "  cairn snapshot extract backup.snap state.bin\n"
    "\n";

/* Counts bytes for the TTY progress line. */
struct progress_reader {
    struct cairn_reader base;
    struct progs_progress *p;
};

static int progress_read(struct cairn_reader *r, void *buf, size_t cap, size_t *got,
                         struct cairn_err *err)
{
    /* Armed for extract only: the temporary output is then discarded. */
    if (cancel_requested(&cli_cancel))
        return cairn_err_set(err, CAIRN_E_CANCELLED, "cancelled");
    int rc = cairn_reader_read(r->next, buf, cap, got, err);
    if (rc == CAIRN_OK)
        progs_progress_add(((struct progress_reader *)r)->p, *got);
    return rc;
}

static const struct cairn_reader_ops progress_reader_ops = {"progress", progress_read, NULL};

static struct cairn_reader *progress_reader_new(struct cairn_reader *src, struct progs_progress *p)
{
    struct progress_reader *r = xcalloc(1, sizeof(*r));
    cairn_reader_init(&r->base, &progress_reader_ops, src);
    r->p = p;
    return &r->base;
}

struct opts {
    const char *verb;
    int json, zstd, force, raw_tar, consul, have_index, have_term, have_size;
    uint64_t index, term, conf_index, size, level, threads, max_ratio;
    int have_conf_index, have_level, have_threads;
    const char *id, *seal_key, *seal, *tmpdir;
    struct cairn_snapshot_server *servers;
    size_t nservers;
    char *pos[3];
    int npos;
};

static void opts_free(struct opts *o)
{
    for (size_t i = 0; i < o->nservers; i++) {
        free(o->servers[i].id);
        free(o->servers[i].address);
    }
    free(o->servers);
}

static int add_server(struct opts *o, const char *spec)
{
    const char *eq = strchr(spec, '=');
    if (eq == NULL || eq == spec || eq[1] == 0)
        return -1;
    const char *comma = strrchr(eq, ',');
    int64_t suffrage = CAIRN_SUFFRAGE_VOTER;
    size_t alen = strlen(eq + 1);
    if (comma != NULL) {
        const char *s = comma + 1;
        if (strcmp(s, "voter") == 0)
            suffrage = CAIRN_SUFFRAGE_VOTER;
        else if (strcmp(s, "nonvoter") == 0)
            suffrage = CAIRN_SUFFRAGE_NONVOTER;
        else if (strcmp(s, "staging") == 0)
            suffrage = CAIRN_SUFFRAGE_STAGING;
        else
            return -1;
        alen = (size_t)(comma - eq - 1);
    }
    o->servers = xrealloc(o->servers, (o->nservers + 1) * sizeof(*o->servers));
    struct cairn_snapshot_server *s = &o->servers[o->nservers++];
    s->suffrage = suffrage;
    s->id = xasprintf("%.*s", (int)(eq - spec), spec);
    s->address = xasprintf("%.*s", (int)alen, eq + 1);
    return 0;
}

enum {
    O_INDEX = 256,
    O_TERM,
    O_ID,
    O_CONF,
    O_SERVER,
    O_SIZE,
    O_ZSTD,
    O_LEVEL,
    O_THREADS,
    O_SEALKEY,
    O_SEAL,
    O_TMPDIR,
    O_FORCE,
    O_JSON,
    O_TAR,
    O_CONSUL,
    O_HELP,
    O_MAXRATIO,
    O_QUIET
};

const struct option snapshot_opts[] = {
    {"index", required_argument, NULL, O_INDEX},
    {"term", required_argument, NULL, O_TERM},
    {"id", required_argument, NULL, O_ID},
    {"configuration-index", required_argument, NULL, O_CONF},
    {"server", required_argument, NULL, O_SERVER},
    {"size", required_argument, NULL, O_SIZE},
    {"zstd", no_argument, NULL, O_ZSTD},
    {"level", required_argument, NULL, O_LEVEL},
    {"threads", required_argument, NULL, O_THREADS},
    {"seal-key", required_argument, NULL, O_SEALKEY},
    {"seal", required_argument, NULL, O_SEAL},
    {"tmpdir", required_argument, NULL, O_TMPDIR},
    {"force", no_argument, NULL, O_FORCE},
    {"json", no_argument, NULL, O_JSON},
    {"tar", no_argument, NULL, O_TAR},
    {"consul", no_argument, NULL, O_CONSUL},
    {"help", no_argument, NULL, O_HELP},
    {"max-ratio", required_argument, NULL, O_MAXRATIO},
    {"seal-key-file", required_argument, NULL, O_SEALKEY}, /* --seal-key's new name */
    {"quiet", no_argument, NULL, O_QUIET},
    {NULL, 0, NULL, 0},
};

/* Returns -1 when --help was printed, 0 when parsed, or a usage exit code. Long (86 lines):
 * one case per option of every snapshot subcommand, in snapshot_opts. */
static int parse(int argc, char **argv, struct opts *o, const char *help, int npos)
{
    int save = strcmp(o->verb, "save") == 0;
    char cmd[32];
    snprintf(cmd, sizeof(cmd), "snapshot %s", o->verb);
    struct progs_getopt g = {.cmd = cmd, .opts = snapshot_opts, .argc = argc, .argv = argv};
    int c;
    while ((c = progs_getopt(&g)) != -1) {
        const char *a = optarg;
        int bad = 0, save_only = 0;
        switch (c) {
        case 'h':
        case O_HELP:
            fputs(help, stdout);
            fputs(progs_exit_codes_help, stdout);
            return -1;
        case O_INDEX: save_only = 1, o->have_index = 1, bad = progs_parse_u64(a, &o->index); break;
        case O_TERM: save_only = 1, o->have_term = 1, bad = progs_parse_u64(a, &o->term); break;
        case O_ID: save_only = 1, o->id = a; break;
        case O_CONF:
            save_only = 1, o->have_conf_index = 1, bad = progs_parse_u64(a, &o->conf_index);
            break;
        case O_SERVER: save_only = 1, bad = add_server(o, a); break;
        case O_SIZE: save_only = 1, o->have_size = 1, bad = parse_size(a, &o->size); break;
        case O_ZSTD: save_only = 1, o->zstd = 1; break;
        case O_LEVEL: save_only = 1, o->have_level = 1, bad = progs_parse_u64(a, &o->level); break;
        case O_THREADS:
            save_only = 1, o->have_threads = 1, bad = progs_parse_u64(a, &o->threads);
            break;
        case O_SEALKEY: o->seal_key = a; break;
        case O_SEAL: o->seal = a; break;
        case O_TMPDIR: o->tmpdir = a; break;
        case O_FORCE: o->force = 1; break;
        case O_JSON: o->json = progs_json = 1; break;
        case O_QUIET: progs_quiet = 1; break;
        case O_TAR: o->raw_tar = 1; break;
        case O_CONSUL: o->consul = 1; break;
        case O_MAXRATIO:
            bad = progs_parse_u64(a, &o->max_ratio) || o->max_ratio == 0 || o->max_ratio > UINT_MAX;
            break;
        default: return g.code;
        }
        if (bad)
            return progs_usage(cmd, "bad value '%s' for --%s", a, g.name);
        if (save_only && !save)
            return progs_usage(cmd, "--%s is an option of 'snapshot save'", g.name);
    }
    for (int i = optind; i < argc; i++) {
        if (o->npos == npos)
            return progs_usage(cmd, "unexpected argument '%s'", argv[i]);
        o->pos[o->npos++] = argv[i];
    }
    if (o->npos != npos)
        return progs_usage(cmd, "needs %s", npos == 2 ? "two arguments" : "one argument");
    if (save && (o->raw_tar || o->consul || o->max_ratio))
        return progs_usage(cmd, "--tar, --consul and --max-ratio are for reading");
    if (save && (!o->have_index || !o->have_term))
        return progs_usage(cmd, "--index and --term are required");
    if (o->seal != NULL && o->seal_key == NULL)
        return progs_usage(cmd, "--seal needs --seal-key-file");
    if (npos == 2 && strcmp(o->pos[1], "-") == 0 && o->json)
        return progs_usage(cmd, "OUT '-' (stdout) cannot be combined with --json");
    if (save && strcmp(o->pos[1], "-") == 0 && o->force)
        return progs_usage(cmd, "--force replaces a file; OUT '-' is stdout");
    if (save && o->have_level && (o->level < 1 || o->level > (o->zstd ? 19u : 12u)))
        return progs_usage(cmd, "--level out of range");
    return 0;
}

static int load_sealer(const struct opts *o, struct cairn_sealer **s, struct cairn_err *err)
{
    *s = NULL;
    if (o->seal_key == NULL)
        return CAIRN_OK;
    return cairn_sealer_from_keyfile(o->seal ? o->seal : "hmac", o->seal_key, s, err);
}

static struct progs_progress *progress_for_fd(const char *label, int fd)
{
    struct stat st;
    return progs_progress_new(
        label, fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0);
}

/* A path as a JSON string ("(not UTF-8)" when it is not). */
static json_t *json_path(const char *s)
{
    json_t *j = json_string(s);
    return j ? j : json_string("(not UTF-8)");
}

/* snapshot save: open the output, write the archive, commit it only on success. Long (85
 * lines): the steps share the output and the progress line, cleaned up in one place. */
static int run_save(struct opts *o)
{
    struct cairn_err err = {0};
    struct cairn_sealer *sealer = NULL;
    struct cairn_reader *state = NULL, *spooled = NULL;
    struct cairn_writer *out = NULL;
    struct progs_progress *prog = NULL;
    int rc = load_sealer(o, &sealer, &err);
    if (rc != CAIRN_OK)
        goto out;
    int fd = STDIN_FILENO;
    if (strcmp(o->pos[0], "-") != 0 && (fd = open(o->pos[0], O_RDONLY | O_CLOEXEC)) < 0) {
        rc = cairn_err_sys(&err, 0, errno, "open state '%s'", o->pos[0]);
        goto out;
    }
    struct stat st;
    uint64_t size = o->size;
    int known = o->have_size;
    if (!known && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
        size = (uint64_t)st.st_size;
        known = 1;
    }
    prog = progs_progress_new("save", known ? size : 0);
    state = progress_reader_new(cairn_fd_reader_new(fd, fd != STDIN_FILENO), prog);
    if (!known) {
        /* Unknown length (a pipe): spool it, as Go's snapshot.New does. */
        if ((rc = cairn_snapshot_spool(state, o->tmpdir, &spooled, &size, &err)) != CAIRN_OK)
            goto out;
    }
    if (size > INT64_MAX) {
        rc = cairn_err_set(&err, CAIRN_E_INVALID, "state too large");
        goto out;
    }
    struct cairn_snapshot_meta meta = {0};
    char idbuf[96];
    if (o->id == NULL)
        snprintf(idbuf, sizeof(idbuf), "%llu-%llu-%llu", (unsigned long long)o->term,
                 (unsigned long long)o->index, (unsigned long long)now_ms());
    meta.version = 1;
    meta.id = (char *)(o->id ? o->id : idbuf);
    meta.index = o->index;
    meta.term = o->term;
    meta.servers = o->servers;
    meta.nservers = o->nservers;
    meta.configuration_index = o->have_conf_index ? o->conf_index : o->index;
    meta.size = (int64_t)size;
    struct cairn_snapshot_write_opts wo = {0};
    wo.flavour = o->zstd ? CAIRN_SNAPSHOT_ZSTD : CAIRN_SNAPSHOT_GZIP;
    wo.level = o->have_level ? (int)o->level : 0;
    wo.threads = o->have_threads ? (int)o->threads : 0;
    wo.sealer = sealer;
    /* To stdout the archive streams (a failure leaves a cut archive and a non-zero exit, and
     * verify refuses a cut archive); to a file it appears only when complete. */
    int to_stdout = strcmp(o->pos[1], "-") == 0;
    if (to_stdout)
        out = cairn_fd_writer_new(STDOUT_FILENO, 0);
    else if ((rc = cairn_atomic_file_writer_open(o->pos[1], 0600, o->force, &out, &err)) !=
             CAIRN_OK)
        goto out;
    struct cairn_snapshot_write_result res;
    rc = cairn_snapshot_write(out, &meta, spooled ? spooled : state, &wo, &res, &err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(out, &err); /* commits the file */
    progs_progress_done(prog);
    prog = NULL;
    if (rc != CAIRN_OK) {
        cairn_err_wrap(&err, rc, "save '%s'", o->pos[1]);
        goto out;
    }
    if (o->json) {
        /* index and term are uint64 (past json_int_t): written as exact decimal text. */
        char idx[24], term[24];
        snprintf(idx, sizeof(idx), "%llu", (unsigned long long)o->index);
        snprintf(term, sizeof(term), "%llu", (unsigned long long)o->term);
        const char *keys[] = {"index", "term"}, *raws[] = {idx, term};
        const char *comp = o->zstd ? "zstd" : "gzip";
        json_t *j = json_pack("{s:b, s:o, s:s, s:s}", "ok", 1, "file", json_path(o->pos[1]),
                              "compression", comp, "flavour", comp);
        json_object_set_new(j, "index", json_null());
        json_object_set_new(j, "term", json_null());
        json_object_update_new(j, json_pack("{s:I, s:I, s:s, s:b}", "state_bytes", (json_int_t)size,
                                            "archive_bytes", (json_int_t)res.archive_bytes,
                                            "checksum", res.checksum, "sealed", sealer != NULL));
        progs_print_json_raw(j, 2, keys, raws);
    } else {
        char sb[32], ab[32];
        format_bytes(size, sb, sizeof(sb));
        format_bytes(res.archive_bytes, ab, sizeof(ab));
        fprintf(to_stdout ? stderr : stdout,
                "saved %s: index %llu, term %llu, state %s, archive %s (%s%s)\n%s\n",
                to_stdout ? "stdout" : o->pos[1], (unsigned long long)o->index,
                (unsigned long long)o->term, sb, ab, o->zstd ? "zstd" : "gzip",
                sealer ? ", sealed" : "", res.checksum);
    }
out:
    progs_progress_done(prog);
    cairn_writer_free(out); /* unclosed after a failure: the file is discarded */
    cairn_reader_free(spooled);
    cairn_reader_free(state);
    cairn_sealer_free(sealer);
    return rc == CAIRN_OK ? 0 : progs_fail(&err);
}

static const char *flavour_name(enum cairn_snapshot_flavour f)
{
    return f == CAIRN_SNAPSHOT_ZSTD ? "zstd" : f == CAIRN_SNAPSHOT_GZIP ? "gzip" : "tar";
}

static const char *suffrage_name(int64_t s)
{
    return s == 0 ? "voter" : s == 1 ? "nonvoter" : s == 2 ? "staging" : "unknown";
}

static void print_info_text(const char *file, const struct cairn_snapshot_info *in, int verbose)
{
    const struct cairn_snapshot_meta *m = &in->meta;
    if (!verbose) {
        printf("%s: OK (%s, index %llu, term %llu, state %llu bytes, %s)\n", file,
               flavour_name(in->flavour), (unsigned long long)m->index, (unsigned long long)m->term,
               (unsigned long long)in->state_len, in->checksum);
        if (in->sealed_present && !in->sealed_verified)
            printf("%s: note: SHA256SUMS.sealed (%zu bytes) present but not checked "
                   "(no --seal-key-file); SHA256SUMS was checked\n",
                   file, in->sealed_len);
        return;
    }
    /* ID and servers come from the archive's meta.json: escaped for the terminal. */
    char *id = str_escape_dup(m->id ? m->id : "");
    printf(" %-20s %s\n", "ID", id);
    free(id);
    printf(" %-20s %lld\n", "Size", (long long)m->size);
    printf(" %-20s %llu\n", "Index", (unsigned long long)m->index);
    printf(" %-20s %llu\n", "Term", (unsigned long long)m->term);
    printf(" %-20s %lld\n", "Version", (long long)m->version);
    printf(" %-20s %llu\n", "ConfigurationIndex", (unsigned long long)m->configuration_index);
    if (m->peers == NULL) {
        printf(" %-20s null\n", "Peers");
    } else {
        char *b = xmalloc(4 * ((m->peers_len + 2) / 3) + 1);
        cairn_base64_encode(m->peers, m->peers_len, b);
        printf(" %-20s %s\n", "Peers", b);
        free(b);
    }
    for (size_t i = 0; i < m->nservers; i++) {
        char *sid = str_escape_dup(m->servers[i].id), *addr = str_escape_dup(m->servers[i].address);
        printf(" %-20s %s %s %s\n", i == 0 ? "Servers" : "", sid, addr,
               suffrage_name(m->servers[i].suffrage));
        free(sid);
        free(addr);
    }
    printf(" %-20s %s\n", "Checksum", in->checksum);
    printf(" %-20s %s\n", "Format", flavour_name(in->flavour));
    printf(" %-20s %llu\n", "State bytes", (unsigned long long)in->state_len);
    char hex[65];
    cairn_hex_encode(in->state_sha256, 32, hex);
    printf(" %-20s %s\n", "State SHA-256", hex);
    if (in->sealed_present)
        printf(" %-20s %zu bytes, %s\n", "SHA256SUMS.sealed", in->sealed_len,
               in->sealed_verified ? "opened and matched" : "present, not checked (no key)");
}

static void print_info_json(const char *file, const struct cairn_snapshot_info *in)
{
    char hm[65], hs[65];
    cairn_hex_encode(in->meta_sha256, 32, hm);
    cairn_hex_encode(in->state_sha256, 32, hs);
    const char *comp = flavour_name(in->flavour);
    json_t *j = json_pack("{s:b, s:o, s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:{s:b, s:I, s:b}}", "ok",
                          1, "file", json_path(file), "compression", comp, "format", comp,
                          "checksum", in->checksum, "archive_bytes", (json_int_t)in->archive_bytes,
                          "state_bytes", (json_int_t)in->state_len, "meta_sha256", hm,
                          "state_sha256", hs, "sealed", "present", in->sealed_present, "bytes",
                          (json_int_t)in->sealed_len, "verified", in->sealed_verified);
    /* Go's own encoding of the metadata (keeps uint64 values exact), without its newline. */
    char *meta;
    size_t len;
    cairn_snapshot_meta_encode(&in->meta, &meta, &len);
    meta[len - 1] = '\0';
    const char *keys[] = {"meta"}, *raws[] = {meta};
    progs_print_json_raw(j, 1, keys, raws);
    free(meta);
}

/* An unlinked temporary file in tmpdir (NULL: $TMPDIR or /tmp) and a writer over it. */
static int spool_open(const char *tmpdir, int *fd, struct cairn_writer **w, struct cairn_err *err)
{
    const char *dir = tmpdir ? tmpdir : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char *path = xasprintf("%s/cairn-extract-XXXXXX", dir);
    *fd = mkstemp(path);
    int rc = *fd < 0 ? cairn_err_sys(err, 0, errno, "temporary file in '%s'", dir) : CAIRN_OK;
    if (*fd >= 0)
        unlink(path);
    free(path);
    *w = rc == CAIRN_OK ? cairn_fd_writer_new(*fd, 0) : NULL;
    return rc;
}

/* The verified state, from the start of the temporary file fd to stdout. */
static int spool_to_stdout(int fd, struct cairn_err *err)
{
    if (lseek(fd, 0, SEEK_SET) < 0)
        return cairn_err_sys(err, 0, errno, "rewind the temporary file");
    char buf[65536];
    for (;;) {
        size_t got = 0;
        int rc = read_all(fd, buf, sizeof(buf), &got, "the temporary file", err);
        if (rc == CAIRN_OK && got > 0)
            rc = write_all(STDOUT_FILENO, buf, got, "stdout", err);
        if (rc != CAIRN_OK || got < sizeof(buf))
            return rc;
    }
}

static int run_read(struct opts *o)
{
    struct cairn_err err = {0};
    struct cairn_sealer *sealer = NULL;
    struct cairn_snapshot_info info;
    memset(&info, 0, sizeof(info));
    struct progs_progress *prog = NULL;
    struct cairn_reader *in = NULL;
    struct cairn_writer *out = NULL;
    int extract = strcmp(o->verb, "extract") == 0, to_stdout = 0, tfd = -1;
    int rc = load_sealer(o, &sealer, &err);
    if (rc != CAIRN_OK)
        goto out;
    to_stdout = extract && strcmp(o->pos[1], "-") == 0;
    int fd = strcmp(o->pos[0], "-") == 0 ? STDIN_FILENO : open(o->pos[0], O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = cairn_err_sys(&err, 0, errno, "open '%s'", o->pos[0]);
        goto out;
    }
    prog = progress_for_fd(o->verb, fd);
    in = progress_reader_new(cairn_fd_reader_new(fd, fd != STDIN_FILENO), prog);
    struct cairn_snapshot_read_opts ro = {0};
    ro.sealer = sealer;
    ro.raw_tar = o->raw_tar;
    ro.three_members = o->consul;
    ro.tmpdir = o->tmpdir;
    ro.max_ratio = (unsigned)o->max_ratio;
    if (extract) {
        cli_catch_interrupts();
        if (to_stdout) /* held in an unlinked temp file: stdout sees only a verified state */
            rc = spool_open(o->tmpdir, &tfd, &out, &err);
        else
            rc = cairn_atomic_file_writer_open(o->pos[1], 0600, o->force, &out, &err);
        if (rc != CAIRN_OK)
            goto out;
        rc = cairn_snapshot_extract(in, &ro, out, &info, &err);
        if (rc == CAIRN_OK)
            rc = cairn_writer_close(out, &err); /* the file appears only for a good archive */
        if (rc == CAIRN_OK && to_stdout)
            rc = spool_to_stdout(tfd, &err);
    } else {
        rc = cairn_snapshot_verify(in, &ro, &info, &err);
    }
    progs_progress_done(prog);
    prog = NULL;
    if (rc != CAIRN_OK) {
        cairn_err_wrap(&err, rc, "%s '%s'", o->verb, o->pos[0]);
        goto out;
    }
    if (o->json)
        print_info_json(o->pos[0], &info);
    else if (extract)
        fprintf(to_stdout ? stderr : stdout,
                "extracted state.bin of %s to %s (%llu bytes, verified)\n", o->pos[0],
                to_stdout ? "stdout" : o->pos[1], (unsigned long long)info.state_len);
    else
        print_info_text(o->pos[0], &info, strcmp(o->verb, "inspect") == 0);
out:
    progs_progress_done(prog);
    cairn_writer_free(out); /* unclosed after a failure: the file is discarded */
    cairn_reader_free(in);
    cairn_snapshot_info_free(&info);
    cairn_sealer_free(sealer);
    if (tfd >= 0)
        close(tfd);
    return rc == CAIRN_OK ? 0 : progs_fail(&err);
}

int cmd_snapshot(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(snapshot_help, argc < 2 ? stderr : stdout);
        fputs(progs_exit_codes_help, argc < 2 ? stderr : stdout);
        return argc < 2 ? CAIRN_EXIT_USAGE : 0;
    }
    struct opts o = {0};
    o.verb = argv[1];
    const char *help;
    int npos;
    if (strcmp(o.verb, "save") == 0)
        help = save_help, npos = 2;
    else if (strcmp(o.verb, "inspect") == 0)
        help = inspect_help, npos = 1;
    else if (strcmp(o.verb, "verify") == 0)
        help = verify_help, npos = 1;
    else if (strcmp(o.verb, "extract") == 0)
        help = extract_help, npos = 2;
    else {
        static const char *const verbs[] = {"save", "inspect", "verify", "extract"};
        const char *m = progs_did_you_mean(o.verb, verbs, 4);
        if (m != NULL)
            return progs_usage("snapshot", "unknown verb '%s' (did you mean '%s'?)", o.verb, m);
        return progs_usage("snapshot", "unknown verb '%s' (save, inspect, verify, extract)",
                           o.verb);
    }
    int rc = parse(argc - 1, argv + 1, &o, help, npos);
    if (rc == 0)
        rc = strcmp(o.verb, "save") == 0 ? run_save(&o) : run_read(&o);
    else if (rc < 0)
        rc = 0;
    opts_free(&o);
    return rc;
}
