/* Test driver for the Redis source's protocol core (tests/source/test_redis.py runs it):
 *
 *   redis_snap [--user U] [--io-timeout MS] [--cancel-at BYTES] [--debug] HOST PORT OUT
 *
 * takes one RDB snapshot with redis_snapshot into OUT (an atomic file: it exists only when
 * the snapshot succeeded). The password comes from the environment (REDIS_SNAP_PASSWORD), so
 * it is never on a command line. Success prints "ok BYTES progress=CALLS last=DONE/TOTAL
 * vmhwm=KIB" (the peak RSS of this program image, from /proc: a parent's os.wait4 also counts
 * the forked parent's memory from before the exec);
 * failure prints "error STATUS: MESSAGE" on stderr and exits with cairn's exit code for it.
 * --cancel-at sets the cancel flag from the progress callback once that many bytes are in. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/io.h"
#include "cairn/log.h"
#include "source/redis/redis.h"

struct prog {
    unsigned calls;
    uint64_t done, total, cancel_at;
    volatile int cancel;
};

/* VmHWM of /proc/self/status in KiB, 0 if unknown. */
static unsigned long vm_hwm(void)
{
    char line[256];
    unsigned long kib = 0;
    FILE *f = fopen("/proc/self/status", "r");
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "VmHWM: %lu kB", &kib) == 1)
            break;
    if (f != NULL)
        fclose(f);
    return kib;
}

static void on_progress(void *ctx, uint64_t done, uint64_t total)
{
    struct prog *p = ctx;
    p->calls++;
    p->done = done;
    p->total = total;
    if (p->cancel_at != 0 && done >= p->cancel_at)
        p->cancel = 1;
}

int main(int argc, char **argv)
{
    struct redis_conn_opts o = {0};
    struct prog pr = {0};
    int debug = 0, i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--user") == 0 && i + 1 < argc)
            o.user = argv[++i];
        else if (strcmp(argv[i], "--io-timeout") == 0 && i + 1 < argc)
            o.io_timeout_ms = atoi(argv[++i]);
        else if (strcmp(argv[i], "--cancel-at") == 0 && i + 1 < argc)
            pr.cancel_at = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--debug") == 0)
            debug = 1;
        else
            break;
    }
    if (argc - i != 3) {
        fprintf(stderr, "usage: redis_snap [--user U] [--io-timeout MS] [--cancel-at BYTES] "
                        "[--debug] HOST PORT OUT (password in REDIS_SNAP_PASSWORD)\n");
        return 2;
    }
    cairn_log_setup(debug ? CAIRN_LOG_DEBUG : CAIRN_LOG_INFO, 0, stderr);
    o.host = argv[i];
    o.port = (unsigned)atoi(argv[i + 1]);
    o.password = getenv("REDIS_SNAP_PASSWORD");
    o.progress = on_progress;
    o.progress_ctx = &pr;
    o.cancel = &pr.cancel;
    struct cairn_err err = {0};
    uint64_t bytes = 0;
    struct cairn_writer *out = NULL;
    int rc = cairn_atomic_file_writer_open(argv[i + 2], 0644, 1, &out, &err);
    if (rc == CAIRN_OK)
        rc = redis_snapshot(&o, out, &bytes, &err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(out, &err);
    cairn_writer_free(out); /* after a failure: discards the temporary */
    if (rc != CAIRN_OK) {
        fprintf(stderr, "error %s: %s\n", cairn_status_name(rc), err.msg);
        return cairn_exit_code(rc);
    }
    printf("ok %llu progress=%u last=%llu/%llu vmhwm=%lu\n", (unsigned long long)bytes, pr.calls,
           (unsigned long long)pr.done, (unsigned long long)pr.total, vm_hwm());
    return 0;
}
