/* The scheduler's state (schedule -> last instant dealt with) and its snapshots in the state
 * store. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/log.h"
#include "internal.h"

int sched_save(struct cairn_sched *s, const char *why)
{
    /* Held from the copy to the status: saves from several threads copy, land and report
     * in one order, so an older copy never lands after a newer one and a save that failed
     * later is never hidden by an earlier one that reports late. */
    pthread_mutex_lock(&s->store_mu);
    pthread_mutex_lock(&s->mu);
    struct cairn_state *copy = cairn_state_dup(s->state);
    uint64_t gen = s->gen;
    pthread_mutex_unlock(&s->mu);

    struct cairn_err err;
    uint8_t *buf = NULL;
    size_t len = 0;
    int64_t now = sched_now(s);
    int rc = cairn_state_encode(copy, &buf, &len, &err);
    cairn_state_free(copy);
    if (rc != CAIRN_OK) {
        /* Nothing is written when serialisation fails. */
        metrics_add(s->m.creation_errors, NULL, 1);
        cairn_error("sched", "state snapshot (%s) not created: %s", why, err.msg);
    } else {
        rc = cairn_state_store_put(s->store, buf, len, now, &err);
        if (rc != CAIRN_OK) {
            metrics_add(s->m.save_errors, NULL, 1);
            cairn_error("sched", "state snapshot (%s) not saved: %s", why, err.msg);
        }
    }
    free(buf);
    pthread_mutex_lock(&s->mu);
    if (rc == CAIRN_OK) {
        if (gen > s->saved_gen)
            s->saved_gen = gen;
        s->last_save_at = now;
        s->last_save_failed = 0;
    } else {
        s->last_save_failed = 1;
        snprintf(s->last_save_error, sizeof(s->last_save_error), "%s", err.msg);
    }
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_unlock(&s->store_mu);
    if (rc == CAIRN_OK) {
        metrics_add(s->m.saves, NULL, 1);
        metrics_set(s->m.last_save, NULL, (double)now);
        cairn_debug("sched", "state snapshot saved (%s, %zu bytes)", why, len);
    }
    return rc;
}

/* Record that a schedule's instant was dealt with (ran, was done already, or skipped). */
void sched_advance(struct cairn_sched *s, const char *name, int64_t at)
{
    pthread_mutex_lock(&s->mu);
    if (cairn_state_update(s->state, name, at, NULL) > 0)
        s->gen++;
    pthread_mutex_unlock(&s->mu);
}

/* Move a schedule's entry back to `to` (mu held). cairn_state_update only moves forward, on
 * purpose; a wall clock that went back is the one reason to go back, so the state is rebuilt. */
void sched_state_rewind(struct cairn_sched *s, const char *name, int64_t to)
{
    struct cairn_state *st = cairn_state_new();
    for (size_t i = 0; i < cairn_state_count(s->state); i++) {
        int64_t sec = 0;
        const char *n = cairn_state_entry(s->state, i, &sec);
        cairn_state_update(st, n, strcmp(n, name) == 0 ? to : sec, NULL);
    }
    cairn_state_free(s->state);
    s->state = st;
    s->gen++;
}
