/* Worker pool: one mutex, two condition variables, a ring of pending jobs. */
#include "pool.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "util.h"

struct job {
    pool_fn fn;
    void *arg;
};

struct pool {
    pthread_mutex_t mu;
    pthread_cond_t work;    /* a job was queued or the pool is stopping */
    pthread_cond_t changed; /* a slot freed or a job finished */
    struct job *ring;
    size_t cap, head, len;
    size_t running;
    int stop;
    unsigned nworkers;
    pthread_t *threads;
};

unsigned cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

static void *worker(void *arg)
{
    struct pool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->len == 0 && !p->stop)
            pthread_cond_wait(&p->work, &p->mu);
        if (p->len == 0 && p->stop)
            break;
        struct job j = p->ring[p->head];
        p->head = (p->head + 1) % p->cap;
        p->len--;
        p->running++;
        pthread_cond_broadcast(&p->changed);
        pthread_mutex_unlock(&p->mu);
        j.fn(j.arg);
        pthread_mutex_lock(&p->mu);
        p->running--;
        pthread_cond_broadcast(&p->changed);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

struct pool *pool_new(unsigned workers, size_t queue_max)
{
    if (workers == 0)
        workers = cpu_count();
    if (queue_max == 0)
        queue_max = 2 * (size_t)workers;
    struct pool *p = xcalloc(1, sizeof(*p));
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->changed, NULL);
    p->cap = queue_max;
    p->ring = xcalloc(queue_max, sizeof(*p->ring));
    p->threads = xcalloc(workers, sizeof(*p->threads));
    for (unsigned i = 0; i < workers; i++) {
        if (pthread_create(&p->threads[i], NULL, worker, p) != 0)
            abort();
        p->nworkers++;
    }
    return p;
}

void pool_submit(struct pool *p, pool_fn fn, void *arg)
{
    pthread_mutex_lock(&p->mu);
    while (p->len == p->cap)
        pthread_cond_wait(&p->changed, &p->mu);
    p->ring[(p->head + p->len) % p->cap] = (struct job){fn, arg};
    p->len++;
    pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->mu);
}

void pool_wait(struct pool *p)
{
    pthread_mutex_lock(&p->mu);
    while (p->len > 0 || p->running > 0)
        pthread_cond_wait(&p->changed, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

unsigned pool_workers(const struct pool *p)
{
    return p->nworkers;
}

void pool_free(struct pool *p)
{
    if (p == NULL)
        return;
    pool_wait(p);
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->nworkers; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->changed);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p->ring);
    free(p);
}
