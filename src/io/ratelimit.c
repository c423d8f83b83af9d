/* A token bucket and the writer stage that paces through it (ratelimit.h). */
#include "ratelimit.h"

#include <stdlib.h>
#include <time.h>

#include "common/util.h"

void tbucket_init(struct tbucket *b, uint64_t rate, uint64_t burst)
{
    pthread_mutex_init(&b->mu, NULL);
    b->rate = (double)rate;
    b->burst = (double)(burst > 0 ? burst : 1);
    b->tokens = b->burst;
    b->last_ns = 0;
    b->started = 0;
    b->granted = 0;
    b->waited_ns = 0;
}

void tbucket_destroy(struct tbucket *b)
{
    pthread_mutex_destroy(&b->mu);
}

uint64_t tbucket_reserve(struct tbucket *b, size_t n, uint64_t now_ns)
{
    pthread_mutex_lock(&b->mu);
    if (b->started && now_ns > b->last_ns) {
        b->tokens += (double)(now_ns - b->last_ns) * b->rate / 1e9;
        if (b->tokens > b->burst)
            b->tokens = b->burst;
    }
    if (!b->started || now_ns > b->last_ns)
        b->last_ns = now_ns;
    b->started = 1;
    b->tokens -= (double)n;
    uint64_t wait = b->tokens >= 0 ? 0 : (uint64_t)(-b->tokens / b->rate * 1e9);
    b->granted += n;
    b->waited_ns += wait;
    pthread_mutex_unlock(&b->mu);
    return wait;
}

struct rl_writer {
    struct cairn_writer base;
    struct tbucket *b;
    const volatile int *cancel;
};

/* Sleep ns, in slices of at most 100 ms; 0, or CAIRN_E_CANCELLED when cancel was raised. */
static int pace(const struct rl_writer *r, uint64_t ns, struct cairn_err *err)
{
    while (ns > 0) {
        if (cancel_requested(r->cancel))
            return cairn_err_set(err, CAIRN_E_CANCELLED, "upload cancelled");
        uint64_t step = ns < 100000000ull ? ns : 100000000ull;
        struct timespec ts = {(time_t)(step / 1000000000ull), (long)(step % 1000000000ull)};
        nanosleep(&ts, NULL);
        ns -= step;
    }
    return CAIRN_OK;
}

static int rl_write(struct cairn_writer *w, const void *buf, size_t len, struct cairn_err *err)
{
    struct rl_writer *r = (struct rl_writer *)w;
    const uint8_t *p = buf;
    /* A tenth of a second's worth at a time: a 1 MiB write at 50 KiB/s is paced, not sent in
     * one burst after a 20 s silence. */
    size_t piece = (size_t)(r->b->rate / 10) > 4096 ? (size_t)(r->b->rate / 10) : 4096;
    while (len > 0) {
        size_t n = len < piece ? len : piece;
        int rc = pace(r, tbucket_reserve(r->b, n, mono_ns()), err);
        if (rc == CAIRN_OK)
            rc = cairn_writer_write(w->next, p, n, err);
        if (rc != CAIRN_OK)
            return rc;
        p += n;
        len -= n;
    }
    return CAIRN_OK;
}

static const struct cairn_writer_ops rl_ops = {"ratelimit", rl_write, NULL, NULL};

struct cairn_writer *ratelimit_writer_new(struct cairn_writer *next, struct tbucket *b,
                                          const volatile int *cancel)
{
    struct rl_writer *r = xcalloc(1, sizeof(*r));
    cairn_writer_init(&r->base, &rl_ops, next);
    r->b = b;
    r->cancel = cancel;
    return &r->base;
}
