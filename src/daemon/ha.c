/* cairnd run: the leader lease of high availability (ha.h). */
#include "ha.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cairn/log.h"
#include "common/util.h"

int ha_open(struct ha *h, const struct cairn_config *cfg, struct cairn_metrics *m,
            struct cairn_err *err)
{
    memset(h, 0, sizeof(*h));
    pthread_mutex_init(&h->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->cond, &ca);
    pthread_condattr_destroy(&ca);
    h->lease_ms = cfg->lease * 1000;
    h->renew_ms = cfg->lease_renew_ms;
    char host[100];
    host_name(host, sizeof(host), 0);
    /* Unique per process start, even when a pid comes back after a restart. */
    unsigned tag = (unsigned)(mono_ns() ^ (uint64_t)time(NULL) << 20) & 0xffffffu;
    snprintf(h->holder, sizeof(h->holder), "%s pid %d #%06x", host, (int)getpid(), tag);
    h->m_leader = metrics_declare(m, "cairn_leader", CAIRN_GAUGE,
                                  "1 while this cairnd holds the leader lease and runs the "
                                  "schedules; 0 while it follows.",
                                  NULL, NULL, 0);
    h->m_token = metrics_declare(m, "cairn_lease_token", CAIRN_GAUGE,
                                 "The fencing token of this cairnd's current leader lease (0 "
                                 "while it follows).",
                                 NULL, NULL, 0);
    metrics_set(h->m_leader, NULL, 0);
    metrics_set(h->m_token, NULL, 0);
    snprintf(h->leader_desc, sizeof(h->leader_desc), "no leader seen yet");
    int rc = cairn_state_store_open(cfg->state_url, cfg->state_keep, &h->lease, err);
    if (rc != CAIRN_OK)
        cairn_err_wrap(err, rc, "leader lease connection");
    return rc;
}

void ha_close(struct ha *h)
{
    cairn_state_store_free(h->lease);
    h->lease = NULL;
    pthread_cond_destroy(&h->cond);
    pthread_mutex_destroy(&h->mu);
}

int ha_try_take(struct ha *h, struct cairn_err *err)
{
    int64_t token = 0;
    uint64_t t0 = mono_ns();
    int rc = cairn_state_store_lease_take(h->lease, h->holder, h->lease_ms, &token, err);
    if (rc == CAIRN_OK) {
        pthread_mutex_lock(&h->mu);
        h->token = token;
        h->last_ok = t0;
        h->lost = 0;
        pthread_mutex_unlock(&h->mu);
        cairn_info("ha", "became the leader (lease token %lld, %s)", (long long)token, h->holder);
        return CAIRN_OK;
    }
    if (rc != CAIRN_E_LOCKED)
        return rc;
    struct cairn_state_lease cur;
    struct cairn_err gerr;
    if (cairn_state_store_lease_get(h->lease, &cur, &gerr) == CAIRN_OK) {
        char desc[300];
        snprintf(desc, sizeof(desc), "the leader is %s (lease token %lld, %lld ms left)",
                 cur.holder, (long long)cur.token, (long long)cur.remaining_ms);
        pthread_mutex_lock(&h->mu);
        /* Logged once per leader, not every try. */
        int changed = strncmp(h->leader_desc, desc, strcspn(desc, ",")) != 0;
        snprintf(h->leader_desc, sizeof(h->leader_desc), "%s", desc);
        pthread_mutex_unlock(&h->mu);
        if (changed)
            cairn_info("ha", "following: %s", desc);
    }
    return rc;
}

/* Give up the term: abort the scheduler (running backups are cancelled) and say why. */
static void lose(struct ha *h, const char *why)
{
    pthread_mutex_lock(&h->mu);
    int first = !h->lost;
    h->lost = 1;
    struct cairn_sched *s = h->s;
    pthread_mutex_unlock(&h->mu);
    if (!first)
        return;
    cairn_error("ha", "LEADER LEASE LOST (token %lld): %s; stopping the schedules",
                (long long)h->token, why);
    metrics_set(h->m_leader, NULL, 0);
    if (s != NULL)
        sched_abort(s);
}

/* Renew every renew_ms until the term ends. A renewal that is refused, or none that succeeded
 * for a whole lease (this process was stopped; the database was unreachable), ends the
 * leadership: by then a follower may hold the lease. */
static void *renewer_main(void *arg)
{
    struct ha *h = arg;
    pthread_mutex_lock(&h->mu);
    while (!h->term_end && !h->lost) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t at = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec +
                      (uint64_t)h->renew_ms * 1000000ull;
        ts.tv_sec = (time_t)(at / 1000000000ull);
        ts.tv_nsec = (long)(at % 1000000000ull);
        while (!h->term_end && pthread_cond_timedwait(&h->cond, &h->mu, &ts) != ETIMEDOUT) {
        }
        if (h->term_end)
            break;
        uint64_t last = h->last_ok;
        pthread_mutex_unlock(&h->mu);
        char why[600];
        uint64_t t0 = mono_ns();
        struct cairn_err err;
        int rc = CAIRN_OK;
        if (t0 - last >= (uint64_t)h->lease_ms * 1000000ull) {
            snprintf(why, sizeof(why),
                     "not renewed for %.1fs (lease %llds): this process was "
                     "stopped or the database unreachable",
                     (double)(t0 - last) / 1e9, (long long)(h->lease_ms / 1000));
            lose(h, why);
        } else if ((rc = cairn_state_store_lease_renew(h->lease, h->holder, h->token, h->lease_ms,
                                                       &err)) == CAIRN_E_DENIED) {
            lose(h, err.msg);
        } else if (rc != CAIRN_OK) {
            cairn_warn("ha", "renewing the leader lease: %s (trying again)", err.msg);
        }
        pthread_mutex_lock(&h->mu);
        if (rc == CAIRN_OK && !h->lost)
            h->last_ok = t0;
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

int ha_term_start(struct ha *h, struct cairn_sched *s, struct cairn_state_store *store,
                  struct cairn_err *err)
{
    cairn_state_store_set_fence(store, h->token);
    sched_set_fence(s, ha_fence, h);
    pthread_mutex_lock(&h->mu);
    h->s = s;
    h->term_end = 0;
    h->leader = 1;
    pthread_mutex_unlock(&h->mu);
    metrics_set(h->m_leader, NULL, 1);
    metrics_set(h->m_token, NULL, (double)h->token);
    int e = pthread_create(&h->renewer, NULL, renewer_main, h);
    if (e != 0)
        return cairn_err_sys(err, CAIRN_E_INTERNAL, e, "starting the lease renewer");
    h->renewing = 1;
    return CAIRN_OK;
}

int ha_term_end(struct ha *h, int release)
{
    pthread_mutex_lock(&h->mu);
    h->term_end = 1;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->mu);
    if (h->renewing)
        pthread_join(h->renewer, NULL);
    h->renewing = 0;
    pthread_mutex_lock(&h->mu);
    int lost = h->lost;
    h->s = NULL;
    h->leader = 0;
    pthread_mutex_unlock(&h->mu);
    struct cairn_err err;
    if (release && !lost &&
        cairn_state_store_lease_release(h->lease, h->holder, h->token, &err) == CAIRN_OK)
        cairn_info("ha", "leader lease (token %lld) released", (long long)h->token);
    metrics_set(h->m_leader, NULL, 0);
    metrics_set(h->m_token, NULL, 0);
    return lost;
}

int ha_fence(void *ctx, struct cairn_err *err)
{
    struct ha *h = ctx;
    pthread_mutex_lock(&h->mu);
    int lost = h->lost;
    int64_t token = h->token;
    pthread_mutex_unlock(&h->mu);
    if (lost)
        return cairn_err_set(err, CAIRN_E_DENIED, "the leader lease (token %lld) was lost",
                             (long long)token);
    return cairn_state_store_fence_check(h->lease, token, err);
}

int ha_describe(struct ha *h, char *out, size_t cap)
{
    pthread_mutex_lock(&h->mu);
    int leader = h->leader && !h->lost;
    if (leader)
        snprintf(out, cap, "leader (lease token %lld, %s)\n", (long long)h->token, h->holder);
    else
        snprintf(out, cap, "follower: %s\n", h->leader_desc);
    pthread_mutex_unlock(&h->mu);
    return leader;
}
