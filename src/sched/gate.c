/* Waiting in the scheduler: the run gate (at most max-concurrent backups, oldest scheduled
 * instant first across all schedules) and the catch-up rate limiter. */
#include <string.h>
#include <time.h>

#include "common/util.h"
#include "internal.h"

/* Wait on s->cond for at most ms milliseconds (mu held). */
void sched_timed_wait(struct cairn_sched *s, uint64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&s->cond, &s->mu, &ts);
}

static int gate_is_next(struct cairn_sched *s, struct worker *me)
{
    for (size_t i = 0; i < s->n; i++) {
        struct worker *o = &s->w[i];
        if (o == me || !o->waiting)
            continue;
        if (o->wait_at < me->wait_at ||
            (o->wait_at == me->wait_at && strcmp(o->cfg->name, me->cfg->name) < 0))
            return 0;
    }
    return 1;
}

int sched_gate_enter(struct cairn_sched *s, struct worker *w, int64_t at)
{
    pthread_mutex_lock(&s->mu);
    w->waiting = 1;
    w->wait_at = at;
    while (!s->stopping && !(s->running < s->cfg->max_concurrent && gate_is_next(s, w)))
        pthread_cond_wait(&s->cond, &s->mu);
    w->waiting = 0;
    int ok = !s->stopping;
    if (ok)
        s->running++;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
    return ok;
}

void sched_gate_leave(struct cairn_sched *s)
{
    pthread_mutex_lock(&s->mu);
    s->running--;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

/* Sleep until the catch-up rate limiter allows another start; 0 when stopped meanwhile. */
int sched_rate_wait(struct cairn_sched *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t deadline = mono_ns() + plan_ratelimit_reserve(&s->rl, mono_ns());
    while (!s->stopping) {
        uint64_t now = mono_ns();
        if (now >= deadline)
            break;
        sched_timed_wait(s, (deadline - now) / 1000000 + 1);
    }
    int ok = !s->stopping;
    pthread_mutex_unlock(&s->mu);
    return ok;
}
