/* The progress display of every long command (progs.h): bytes, total, rate, ETA, items. */
#define _GNU_SOURCE
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "progs/progs.h"

int progs_quiet;

#define TTY_REDRAW_NS   200000000ull   /* 5 times a second */
#define PLAIN_PERIOD_NS 10000000000ull /* a plain line every 10 s */

#define RATE_WINDOW 10 /* seconds of history behind the rate and the ETA */

enum { MODE_OFF, MODE_TTY, MODE_PLAIN };

struct progs_progress {
    pthread_mutex_t mu;
    char label[64];
    char unit[16];
    uint64_t total, done;             /* bytes */
    uint64_t items_total, items_done; /* 0 total: not known */
    uint64_t start_ns, last_ns;
    int mode;
    /* a ticker redraws while no byte moves (a stalled transfer shows its rate falling) */
    pthread_t tick;
    pthread_cond_t cv; /* with mu: the end of the run */
    int ticking, ending;
    /* the rate: bytes over the last RATE_WINDOW samples, one a second from the ticker */
    uint64_t sample_ns[RATE_WINDOW], sample_done[RATE_WINDOW];
    unsigned nsamples, next_sample;
    /* the background scan of a local tree */
    pthread_t scan;
    int scanning;
    int scan_stop; /* atomic */
    char *scan_path;
};

static void maybe_draw(struct progs_progress *p, int force);

static void *tick_main(void *arg)
{
    struct progs_progress *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->ending) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&p->cv, &p->mu, &ts);
        if (p->ending)
            break;
        p->sample_ns[p->next_sample] = mono_ns();
        p->sample_done[p->next_sample] = p->done;
        p->next_sample = (p->next_sample + 1) % RATE_WINDOW;
        if (p->nsamples < RATE_WINDOW)
            p->nsamples++;
        maybe_draw(p, 0);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

struct progs_progress *progs_progress_new(const char *label, uint64_t total_bytes)
{
    struct progs_progress *p = xcalloc(1, sizeof(*p));
    pthread_mutex_init(&p->mu, NULL);
    snprintf(p->label, sizeof(p->label), "%s", label);
    snprintf(p->unit, sizeof(p->unit), "files");
    p->total = total_bytes;
    p->start_ns = p->last_ns = mono_ns();
    p->mode = progs_json || progs_quiet    ? MODE_OFF
              : isatty(STDERR_FILENO) == 1 ? MODE_TTY
                                           : MODE_PLAIN;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (p->mode != MODE_OFF)
        p->ticking = pthread_create(&p->tick, NULL, tick_main, p) == 0;
    return p;
}

/* "45s", "3m05s", "1h02m". */
static void format_eta(double s, char *out, size_t cap)
{
    unsigned long t = s < 0 ? 0 : s > 360000 ? 360000 : (unsigned long)(s + 0.5);
    if (t < 60)
        snprintf(out, cap, "%lus", t);
    else if (t < 3600)
        snprintf(out, cap, "%lum%02lus", t / 60, t % 60);
    else
        snprintf(out, cap, "%luh%02lum", t / 3600, t % 3600 / 60);
}

/* Bytes a second over the last RATE_WINDOW seconds (since the start until there are
 * samples), so the ETA follows the current speed rather than the read-ahead of the start. */
static double rate_now(const struct progs_progress *p, uint64_t now)
{
    uint64_t t0 = p->start_ns, d0 = 0;
    if (p->nsamples == RATE_WINDOW) { /* the oldest sample is the next to be overwritten */
        t0 = p->sample_ns[p->next_sample];
        d0 = p->sample_done[p->next_sample];
    }
    double secs = (double)(now - t0) / 1e9;
    return secs > 0 ? (double)(p->done - d0) / secs : 0;
}

/* The line, without terminal codes. */
static void format_line(const struct progs_progress *p, uint64_t now, char *out, size_t cap)
{
    char done[32], rate[32], total[32], eta[32];
    double bps = rate_now(p, now);
    format_bytes(p->done, done, sizeof(done));
    format_bytes((uint64_t)bps, rate, sizeof(rate));
    size_t o = 0;
    if (p->total > 0) {
        format_bytes(p->total, total, sizeof(total));
        double pct = p->done >= p->total ? 100.0 : 100.0 * (double)p->done / (double)p->total;
        o += (size_t)snprintf(out, cap, "%s: %s of %s (%.0f%%)", p->label, done, total, pct);
    } else {
        o += (size_t)snprintf(out, cap, "%s: %s", p->label, done);
    }
    if (o < cap && p->items_total > 0)
        o += (size_t)snprintf(out + o, cap - o, ", %llu of %llu %s",
                              (unsigned long long)p->items_done, (unsigned long long)p->items_total,
                              p->unit);
    else if (o < cap && p->items_done > 0)
        o += (size_t)snprintf(out + o, cap - o, ", %llu %s", (unsigned long long)p->items_done,
                              p->unit);
    if (o < cap)
        o += (size_t)snprintf(out + o, cap - o, ", %s/s", rate);
    if (o < cap && p->total > 0 && bps > 0) {
        format_eta((double)(p->total > p->done ? p->total - p->done : 0) / bps, eta, sizeof(eta));
        snprintf(out + o, cap - o, ", ETA %s", eta);
    } else if (o < cap && p->total > 0 && p->done > 0 && p->done < p->total) {
        snprintf(out + o, cap - o, ", stalled"); /* no byte for RATE_WINDOW seconds */
    }
}

/* Under mu: draw when it is time (force: now, for a TTY). */
static void maybe_draw(struct progs_progress *p, int force)
{
    if (p->mode == MODE_OFF)
        return;
    uint64_t now = mono_ns();
    uint64_t period = p->mode == MODE_TTY ? TTY_REDRAW_NS : PLAIN_PERIOD_NS;
    if (!(force && p->mode == MODE_TTY) && now - p->last_ns < period)
        return;
    p->last_ns = now;
    char line[256];
    format_line(p, now, line, sizeof(line));
    if (p->mode == MODE_TTY)
        fprintf(stderr, "\r\033[K%s", line);
    else
        fprintf(stderr, "%s\n", line);
    fflush(stderr);
}

void progs_progress_add(struct progs_progress *p, uint64_t bytes)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->done += bytes;
    maybe_draw(p, 0);
    pthread_mutex_unlock(&p->mu);
}

void progs_progress_total(struct progs_progress *p, uint64_t bytes, uint64_t items)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    if (bytes > 0)
        p->total = bytes;
    if (items > 0)
        p->items_total = items;
    pthread_mutex_unlock(&p->mu);
}

void progs_progress_items(struct progs_progress *p, uint64_t done, uint64_t total, const char *unit)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->items_done = done;
    if (total > 0)
        p->items_total = total;
    if (unit != NULL)
        snprintf(p->unit, sizeof(p->unit), "%s", unit);
    maybe_draw(p, 0);
    pthread_mutex_unlock(&p->mu);
}

void progs_progress_item_done(struct progs_progress *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->items_done++;
    maybe_draw(p, 0);
    pthread_mutex_unlock(&p->mu);
}

/* nftw has no argument for its callback: the scanning thread's own counts. */
static __thread struct scan_counts {
    uint64_t files, bytes;
    const int *stop;
} * scan_tls;

static int scan_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)path;
    (void)ftw;
    if (type == FTW_F && S_ISREG(sb->st_mode)) {
        scan_tls->files++;
        scan_tls->bytes += (uint64_t)sb->st_size;
    }
    return __atomic_load_n(scan_tls->stop, __ATOMIC_RELAXED) ? 1 : 0;
}

static void *scan_main(void *arg)
{
    struct progs_progress *p = arg;
    struct scan_counts c = {0, 0, &p->scan_stop};
    scan_tls = &c;
    int rc = nftw(p->scan_path, scan_one, 32, FTW_PHYS);
    if (rc == 0) /* a complete scan only: a partial one would be a wrong total */
        progs_progress_total(p, c.bytes, c.files);
    return NULL;
}

void progs_progress_scan(struct progs_progress *p, const char *path)
{
    if (p == NULL || p->mode == MODE_OFF || p->scanning)
        return;
    p->scan_path = xstrdup(path);
    p->scanning = pthread_create(&p->scan, NULL, scan_main, p) == 0;
}

void progs_progress_done(struct progs_progress *p)
{
    if (p == NULL)
        return;
    if (p->scanning) {
        __atomic_store_n(&p->scan_stop, 1, __ATOMIC_RELAXED);
        pthread_join(p->scan, NULL);
    }
    if (p->ticking) {
        pthread_mutex_lock(&p->mu);
        p->ending = 1;
        pthread_cond_signal(&p->cv);
        pthread_mutex_unlock(&p->mu);
        pthread_join(p->tick, NULL);
    }
    pthread_cond_destroy(&p->cv);
    if (p->mode == MODE_TTY) {
        fprintf(stderr, "\r\033[K");
        fflush(stderr);
    }
    free(p->scan_path);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
