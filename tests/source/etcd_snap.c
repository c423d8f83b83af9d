/* A small program over the etcd protocol core (src/source/etcd) for the source tests, linked
 * with libcairn.a:
 *
 *   etcd_snap snapshot URL FILE [--cacert F] [--cert F] [--key F] [--user U] [--stall S]
 *                               [--progress]     (password from ETCD_SNAP_PASSWORD)
 *   etcd_snap restore-file IN OUT                (etcd_restore_file: IN read, checked, written)
 *   etcd_snap restore-into FILE DIR [--etcdctl P] [--name N] [--initial-cluster C]
 *                                   [--peer-urls U]
 *
 * FILE and OUT are written atomically: they exist only after a complete, checked snapshot.
 * Prints {"bytes":N} on success (snapshot: also "peak_rss", VmHWM in bytes); on failure "etcd_snap:
 * STATUS: message" on stderr and exits with cairn_exit_code. SIGINT/SIGTERM set the cancel flag
 * (exit 130). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/io.h"
#include "source/etcd/etcd.h"

static volatile int cancel_flag;

static void on_signal(int sig)
{
    (void)sig;
    cancel_flag = 1;
}

static void on_progress(void *arg, uint64_t bytes, uint64_t total)
{
    uint64_t *last = arg;
    if (bytes - *last >= (1u << 20) || (total != 0 && bytes == total)) {
        fprintf(stderr, "progress %llu %llu\n", (unsigned long long)bytes,
                (unsigned long long)total);
        *last = bytes;
    }
}

/* This process's peak RSS in bytes (VmHWM: unlike getrusage's ru_maxrss, it starts afresh at
 * exec, so the parent's size before the exec does not count). 0 when unknown. */
static unsigned long long peak_rss(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long long kib = 0;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "VmHWM: %llu kB", &kib) == 1)
            break;
    if (f != NULL)
        fclose(f);
    return kib * 1024;
}

static int usage(void)
{
    fprintf(stderr, "usage: etcd_snap snapshot URL FILE [options] | restore-file IN OUT | "
                    "restore-into FILE DIR [options]\n");
    return 2;
}

/* The value of option name at argv[*i] ("--name V"), advancing *i; NULL when it is not. */
static const char *opt(int argc, char **argv, int *i, const char *name)
{
    if (strcmp(argv[*i], name) != 0 || *i + 1 >= argc)
        return NULL;
    return argv[++*i];
}

static int snapshot(int argc, char **argv, struct cairn_err *err)
{
    struct etcd_conn_opts o = {.url = argv[2], .cancel = &cancel_flag};
    uint64_t last = 0;
    for (int i = 4; i < argc; i++) {
        const char *v;
        if ((v = opt(argc, argv, &i, "--cacert")) != NULL)
            o.ca_file = v;
        else if ((v = opt(argc, argv, &i, "--cert")) != NULL)
            o.cert_file = v;
        else if ((v = opt(argc, argv, &i, "--key")) != NULL)
            o.key_file = v;
        else if ((v = opt(argc, argv, &i, "--user")) != NULL)
            o.user = v;
        else if ((v = opt(argc, argv, &i, "--stall")) != NULL)
            o.stall_timeout_s = atol(v);
        else if (strcmp(argv[i], "--progress") == 0) {
            o.progress = on_progress;
            o.progress_arg = &last;
        } else
            return cairn_err_set(err, CAIRN_E_INVALID, "unknown option '%s'", argv[i]);
    }
    o.password = getenv("ETCD_SNAP_PASSWORD");
    struct cairn_writer *out;
    int rc = cairn_atomic_file_writer_open(argv[3], 0600, 0, &out, err);
    if (rc != CAIRN_OK)
        return rc;
    uint64_t bytes = 0;
    rc = etcd_snapshot(&o, out, &bytes, err);
    if (out->state != CAIRN_IO_OPEN && rc == CAIRN_OK) /* borrowed: etcd_snapshot never closes */
        rc = cairn_err_set(err, CAIRN_E_INTERNAL, "etcd_snapshot closed the writer it borrowed");
    if (rc == CAIRN_OK && out->bytes != bytes)
        rc = cairn_err_set(err, CAIRN_E_INTERNAL, "etcd_snapshot said %llu bytes, wrote %llu",
                           (unsigned long long)bytes, (unsigned long long)out->bytes);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(out, err);
    cairn_writer_free(out); /* unclosed: the temporary is removed */
    if (rc == CAIRN_OK)
        printf("{\"bytes\":%llu,\"peak_rss\":%llu}\n", (unsigned long long)bytes, peak_rss());
    return rc;
}

static int restore_file(char **argv, struct cairn_err *err)
{
    struct cairn_reader *in;
    int rc = cairn_file_reader_open(argv[2], &in, err);
    if (rc != CAIRN_OK)
        return rc;
    uint64_t bytes = 0;
    rc = etcd_restore_file(in, argv[3], &bytes, err);
    cairn_reader_free(in);
    if (rc == CAIRN_OK)
        printf("{\"bytes\":%llu}\n", (unsigned long long)bytes);
    return rc;
}

static int restore_into(int argc, char **argv, struct cairn_err *err)
{
    struct etcd_restore_opts o = {0};
    for (int i = 4; i < argc; i++) {
        const char *v;
        if ((v = opt(argc, argv, &i, "--etcdctl")) != NULL)
            o.etcdctl = v;
        else if ((v = opt(argc, argv, &i, "--name")) != NULL)
            o.name = v;
        else if ((v = opt(argc, argv, &i, "--initial-cluster")) != NULL)
            o.initial_cluster = v;
        else if ((v = opt(argc, argv, &i, "--peer-urls")) != NULL)
            o.initial_advertise_peer_urls = v;
        else
            return cairn_err_set(err, CAIRN_E_INVALID, "unknown option '%s'", argv[i]);
    }
    return etcd_restore_into(argv[2], argv[3], &o, err);
}

int main(int argc, char **argv)
{
    if (argc < 4)
        return usage();
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    struct cairn_err err = {0};
    int rc;
    if (strcmp(argv[1], "snapshot") == 0)
        rc = snapshot(argc, argv, &err);
    else if (strcmp(argv[1], "restore-file") == 0 && argc == 4)
        rc = restore_file(argv, &err);
    else if (strcmp(argv[1], "restore-into") == 0)
        rc = restore_into(argc, argv, &err);
    else
        return usage();
    if (rc != CAIRN_OK) {
        fprintf(stderr, "etcd_snap: %s: %s\n", cairn_status_name(rc), err.msg);
        return cairn_exit_code(rc);
    }
    return 0;
}
