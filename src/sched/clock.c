/* The scheduler's clocks: the real one and the test file clock, and the watch for steps of
 * the wall clock (logged, counted, named by /healthz; a forward step holds retention). */
#include <stdlib.h>
#include <time.h>

#include "cairn/log.h"
#include "common/util.h"
#include "internal.h"

static int64_t real_now(void *ctx)
{
    (void)ctx;
    return (int64_t)time(NULL);
}

static int64_t ts_ns(const struct timespec *t)
{
    return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec;
}

/* a / b rounded to the nearest integer (b > 0), halves away from zero. */
static int64_t div_round(int64_t a, int64_t b)
{
    return a >= 0 ? (a + b / 2) / b : -((-a + b / 2) / b);
}

static int64_t real_offset_ms(void *ctx)
{
    (void)ctx;
    /* The two clocks cannot be read at once: the boot clock is read on both sides of the wall
     * clock and the midpoint taken, retrying while a preemption widened the gap, so a reading
     * is off by at most half the narrowest gap, not by however long the thread was stalled. */
    int64_t best = 0, best_gap = INT64_MAX;
    for (int i = 0; i < 8 && best_gap > 1000000; i++) {
        struct timespec b1, w, b2;
        clock_gettime(CLOCK_BOOTTIME, &b1);
        clock_gettime(CLOCK_REALTIME, &w);
        clock_gettime(CLOCK_BOOTTIME, &b2);
        int64_t gap = ts_ns(&b2) - ts_ns(&b1);
        if (gap < best_gap) {
            best_gap = gap;
            best = ts_ns(&w) - (ts_ns(&b1) + gap / 2);
        }
    }
    return div_round(best, 1000000);
}

void sched_clock_real(struct cairn_clock *c)
{
    c->now = real_now;
    c->ctx = NULL;
    c->poll_ms = 1000;
    c->offset_ms = real_offset_ms;
}

static int64_t file_now(void *ctx)
{
    const char *path = ctx;
    uint8_t *data = NULL;
    size_t len = 0;
    int64_t v = -1;
    if (read_file_max(path, 256, &data, &len, NULL) == CAIRN_OK) {
        char *s = (char *)data, *end;
        while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == ' '))
            s[--len] = '\0';
        long ns;
        long long x = strtoll(s, &end, 10);
        if (len > 0 && *end == '\0')
            v = x;
        else if (parse_rfc3339(s, &v, &ns) != 0)
            v = -1;
    }
    free(data);
    if (v < 0) {
        /* Never guess: a test clock that cannot be read is a broken test setup. */
        cairn_error("sched", "fake clock '%s' is unreadable; using the real time", path);
        v = (int64_t)time(NULL);
    }
    return v;
}

void sched_clock_file(struct cairn_clock *c, const char *path)
{
    c->now = file_now;
    c->ctx = (void *)path;
    c->poll_ms = 50;
    c->offset_ms = NULL;
}

/* Record, count and log a wall-clock step from `from` to `to` (clock_mu not held). `saved`
 * names the schedule whose saved last instant showed it (boot), or is NULL. */
void sched_clock_step(struct cairn_sched *s, int64_t from, int64_t to, const char *saved)
{
    pthread_mutex_lock(&s->clock_mu);
    s->step_from = from;
    s->step_to = to;
    s->step_mono = mono_ns();
    /* After a jump forward every earlier backup looks older than it is: hold retention until
     * the clock steps back or the notice period ends, rather than remove fresh backups. */
    s->prune_hold_until =
        to > from ? s->step_mono + (uint64_t)CAIRN_CLOCK_NOTICE_SECONDS * 1000000000ull : 0;
    pthread_mutex_unlock(&s->clock_mu);
    long long secs = (long long)(to - from);
    metrics_add(secs < 0 ? s->m.clock_back : s->m.clock_fwd, NULL, 1);
    metrics_set(s->m.clock_step, NULL, (double)secs);
    char a[40], b[40];
    sched_fmt_time(from, a, sizeof(a));
    sched_fmt_time(to, b, sizeof(b));
    if (saved != NULL)
        cairn_warn("sched",
                   "the wall clock is %llds behind the saved state (schedule %s last ran at %s, "
                   "now is %s): schedules continue from the current time",
                   -secs, saved, a, b);
    else if (secs < 0)
        cairn_warn("sched",
                   "the wall clock went back by %llds (from %s to %s): schedules continue from "
                   "the current time",
                   -secs, a, b);
    else
        cairn_warn("sched",
                   "the wall clock jumped forward by %llds (from %s to %s): the runs it skipped "
                   "follow the catch-up policy",
                   secs, a, b);
}

/* Read the clock and watch it for steps. Readings are serialised so that a reader delayed
 * between its reading and its check never reports an older reading as a step back. */
int64_t sched_now(struct cairn_sched *s)
{
    const struct cairn_clock *c = s->clock;
    pthread_mutex_lock(&s->clock_mu);
    int64_t now = c->now(c->ctx);
    int64_t off = c->offset_ms ? c->offset_ms(c->ctx) : 0;
    int64_t step = 0;
    if (s->clock_seen && c->offset_ms)
        step = div_round(off - s->seen_offset_ms, 1000); /* truncating made 2 days 172799s */
    else if (s->clock_seen && now < s->seen_now)
        step = now - s->seen_now;
    s->clock_seen = 1;
    s->seen_now = now;
    s->seen_offset_ms = off;
    pthread_mutex_unlock(&s->clock_mu);
    if (step > CAIRN_CLOCK_STEP_TOLERANCE || step < -CAIRN_CLOCK_STEP_TOLERANCE)
        sched_clock_step(s, now - step, now, NULL);
    return now;
}

int sched_prune_held(struct cairn_sched *s)
{
    pthread_mutex_lock(&s->clock_mu);
    int held = s->prune_hold_until != 0 && mono_ns() < s->prune_hold_until;
    pthread_mutex_unlock(&s->clock_mu);
    return held;
}
