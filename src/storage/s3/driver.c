/* S3 driver: session lifecycle and the driver table. */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>

#include "s3.h"

static void s3_disconnect(void *state)
{
    struct s3 *s = state;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->npool; i++)
        curl_easy_cleanup(s->pool[i]);
    s->npool = 0;
    pthread_mutex_lock(&s->credmu);
    s3_cred_clear(&s->cred);
    pthread_mutex_unlock(&s->credmu);
    free(s->sigv4);
    s->sigv4 = NULL;
    s->ready = 0;
    pthread_mutex_unlock(&s->mu);
}

void s3_free(void *state)
{
    struct s3 *s = state;
    if (s == NULL)
        return;
    s3_disconnect(s);
    free(s->pool);
    free(s->url);
    free(s->bucket);
    free(s->prefix);
    free(s->endpoint);
    free(s->region);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->credmu);
    free(s);
}

static void s3_set_cancel(void *state, const volatile int *cancel)
{
    ((struct s3 *)state)->cancel = cancel;
}

const struct cairn_storage_driver storage_s3_driver = {
    .name = "s3",
    .open = s3_open,
    .list = s3_list,
    .start = s3_start,
    .remove = s3_remove,
    .create = s3_create,
    .read = s3_read,
    .disconnect = s3_disconnect,
    .free = s3_free,
    .set_cancel = s3_set_cancel,
    .list_files = s3_list_files,
    .remove_file = s3_remove_file,
    .features = CAIRN_STORAGE_FEATURE_ATOMIC_WRITE,
    .read_at = s3_read_at,
    .sweep = s3_sweep,
};
