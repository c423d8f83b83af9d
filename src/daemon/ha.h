/* Internal to cairnd run: high availability on a PostgreSQL state (docs/OPERATIONS.md).
 *
 * Several cairnd share one state; the holder of the leader lease (cairn/state.h) runs the
 * schedules, the others wait as followers and take the lease over when it expires. A term is
 * one leadership: ha_term_start fences the state store and the scheduler with the term's
 * token and starts the renewer thread; the renewer aborts the scheduler (running backups are
 * cancelled) when a renewal is refused or none succeeded for a whole lease (the process was
 * stopped, the database unreachable). The lease has its own database connection, so a slow
 * save never delays a renewal. */
#ifndef CAIRN_DAEMON_HA_H
#define CAIRN_DAEMON_HA_H

#include <pthread.h>
#include <stdint.h>

#include "cairn/state.h"
#include "metrics/metrics.h"
#include "sched/config.h"
#include "sched/sched.h"

struct ha {
    struct cairn_state_store *lease; /* the lease's own connection */
    char holder[200];                /* "host pid N #random" */
    int64_t lease_ms, renew_ms;
    struct cairn_metric *m_leader, *m_token;

    pthread_mutex_t mu; /* everything below */
    pthread_cond_t cond;
    int64_t token;         /* this term's token; 0 when following */
    int leader;            /* a term is running */
    int term_end, lost;    /* renewer: stop; the lease was lost */
    uint64_t last_ok;      /* mono_ns when the last successful renewal was sent */
    struct cairn_sched *s; /* the term's scheduler (aborted on loss) */
    char leader_desc[300]; /* the current holder, as followers see it */
    pthread_t renewer;
    int renewing;
};

/* Open the lease's connection (waiting for the database like the state store). */
int ha_open(struct ha *h, const struct cairn_config *cfg, struct cairn_metrics *m,
            struct cairn_err *err);
void ha_close(struct ha *h);
/* Try to become the leader: CAIRN_OK (h->token set), CAIRN_E_LOCKED while another cairnd
 * holds the lease (leader_desc names it), or the database's error. */
int ha_try_take(struct ha *h, struct cairn_err *err);
/* A term: fence store and s with the token, renew until ha_term_end. */
int ha_term_start(struct ha *h, struct cairn_sched *s, struct cairn_state_store *store,
                  struct cairn_err *err);
/* End the term; release: hand the lease over at once (a clean stop). Returns 1 when the
 * lease was lost during the term. */
int ha_term_end(struct ha *h, int release);
/* The fence (sched_set_fence): CAIRN_OK while this term's token is the lease's. */
int ha_fence(void *ctx, struct cairn_err *err);
/* For /healthz and logs: "leader (lease token N)" or "follower: ...". Returns 1 when leader. */
int ha_describe(struct ha *h, char *out, size_t cap);

#endif
