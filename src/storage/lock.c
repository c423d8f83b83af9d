/* Locks between processes and hosts sharing a storage location (restic's design, see
 * storage.h "locks" and docs/STORAGE.md): write your own lock object, then list the others;
 * back off when a live one conflicts. Only the driver's create/read/list_files/remove_file
 * are used, so every driver with those two optional operations gets locks. */
#define _GNU_SOURCE
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "cairn/log.h"
#include "common/util.h"
#include "internal.h"

#define LOCK_MAX 4096 /* a lock object is a few hundred bytes */
/* How long an object that is no lock has to change (finish being written) before it counts
 * as a killed writer's leftover. */
#define LOCK_GARBAGE_GRACE_MS 2000

struct cairn_lock {
    struct cairn_storage *st; /* our own handle: the refresher never shares a driver state */
    char id[33];
    char *object; /* current object name, "<id>-<seq>" */
    unsigned seq;
    int exclusive;
    char *command;
    char host[256];
    int64_t started_ms, refresh_ms;
    pthread_t thread;
    int has_thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    int lost; /* our object was removed by someone else */
};

static int64_t env_ms(const char *name, int64_t dflt)
{
    const char *v = getenv(name);
    char *end;
    if (v == NULL || *v == '\0')
        return dflt;
    long long n = strtoll(v, &end, 10);
    return *end == '\0' && n >= 0 ? (int64_t)n : dflt;
}

static void random_id(char out[33])
{
    uint8_t b[16];
    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
        uint64_t x = mono_ns() ^ ((uint64_t)getpid() << 32) ^ now_ms();
        for (size_t i = 0; i < sizeof(b); i++, x = x * 6364136223846793005ull + 1)
            b[i] = (uint8_t)(x >> 56);
    }
    for (size_t i = 0; i < sizeof(b); i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* ---- reading and judging lock objects ---- */

static int read_object(struct cairn_storage *st, const char *obj, char **text,
                       struct cairn_err *err)
{
    struct cairn_reader *r = NULL;
    int rc = storage_read(st, CAIRN_LOCK_DIR, obj, NULL, &r, err);
    if (rc != CAIRN_OK)
        return rc;
    char *buf = xmalloc(LOCK_MAX + 1);
    size_t len = 0, got = 0;
    do {
        rc = cairn_reader_read(r, buf + len, LOCK_MAX - len, &got, err);
        len += got;
    } while (rc == CAIRN_OK && got > 0 && len < LOCK_MAX);
    cairn_reader_free(r);
    buf[len] = '\0';
    if (rc != CAIRN_OK) {
        free(buf);
        return rc;
    }
    *text = buf;
    return CAIRN_OK;
}

static int pid_dead(long pid)
{
    return pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* Fill li from obj's text. An object that is no lock is not stale here: it may be one being
 * written right now (s3rver, unlike S3, serves an object it is still writing, empty or cut
 * short), and removing a live lock lets a prune run beside a backup. list_locks reads it again
 * after LOCK_GARBAGE_GRACE_MS and judges it stale only when it has not changed. */
static void parse_info(const char *obj, const char *text, int64_t now, const char *host,
                       struct cairn_lock_info *li)
{
    memset(li, 0, sizeof(*li));
    li->object = xstrdup(obj);
    json_t *j = text ? json_loads(text, 0, NULL) : NULL;
    const char *h = NULL, *cmd = NULL, *mode = NULL;
    json_int_t pid = 0, st = 0, rf = 0, per = 0;
    if (j == NULL || json_unpack(j, "{s:s, s:I, s:s, s:I, s:I, s:I, s?s}", "host", &h, "pid", &pid,
                                 "mode", &mode, "started_ms", &st, "refreshed_ms", &rf,
                                 "refresh_ms", &per, "command", &cmd) != 0) {
        li->problem = xstrdup("not a lock object");
        li->host = xstrdup("?");
        li->command = xstrdup("?");
        json_decref(j);
        return;
    }
    li->host = xstrdup(h);
    li->pid = (long)pid;
    li->command = xstrdup(cmd ? cmd : "?");
    li->exclusive = strcmp(mode, "exclusive") == 0;
    li->started_ms = st;
    li->refreshed_ms = rf;
    li->refresh_ms = per > 0 ? per : CAIRN_LOCK_REFRESH_MS_DEFAULT;
    li->stale = now - rf > CAIRN_LOCK_STALE_FACTOR * li->refresh_ms ||
                (strcmp(h, host) == 0 && pid_dead(li->pid));
    json_decref(j);
}

static void info_free(struct cairn_lock_info *li)
{
    free(li->object);
    free(li->host);
    free(li->command);
    free(li->problem);
}

void cairn_lock_list_free(struct cairn_lock_list *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->count; i++)
        info_free(&l->items[i]);
    free(l->items);
    l->items = NULL;
    l->count = 0;
}

static int add_name(void *arg, const char *name)
{
    struct cairn_lock_list *l = arg;
    l->items = xrealloc(l->items, (l->count + 1) * sizeof(*l->items));
    memset(&l->items[l->count], 0, sizeof(l->items[0]));
    l->items[l->count++].object = xstrdup(name);
    return 0;
}

/* Every lock object but those whose name starts with skip_id (ours). */
static int list_locks(struct cairn_storage *st, const char *skip_id, struct cairn_lock_list *out,
                      struct cairn_err *err)
{
    memset(out, 0, sizeof(*out));
    struct cairn_lock_list names = {0};
    int rc = st->drv->list_files(st->state, CAIRN_LOCK_DIR, add_name, &names, err);
    char host[256];
    host_name(host, sizeof(host), 0);
    int64_t now = (int64_t)now_ms();
    for (size_t i = 0; rc == CAIRN_OK && i < names.count; i++) {
        const char *obj = names.items[i].object;
        if (skip_id != NULL && strncmp(obj, skip_id, strlen(skip_id)) == 0)
            continue;
        char *text = NULL;
        struct cairn_err e;
        int r = read_object(st, obj, &text, &e);
        /* An object removed while read (a refresh or release) can fail otherwise on S3
         * (HEAD, then a GET that finds it gone): a second read tells. */
        if (r != CAIRN_OK && r != CAIRN_E_NOTFOUND && r != CAIRN_E_CORRUPT)
            r = read_object(st, obj, &text, &e);
        if (r == CAIRN_E_NOTFOUND)
            continue; /* released (or refreshed) since the listing */
        if (r != CAIRN_OK && r != CAIRN_E_CORRUPT) {
            rc = cairn_err_set(err, r, "read lock '%s': %s", obj, e.msg);
            break;
        }
        out->items = xrealloc(out->items, (out->count + 1) * sizeof(*out->items));
        struct cairn_lock_info *li = &out->items[out->count++];
        parse_info(obj, text, now, host, li);
        if (li->problem != NULL) {
            /* No lock: one being written (s3rver serves those empty or cut short) soon reads
             * as one; one a killed writer left stays the same, and is stale. */
            struct timespec ts = {LOCK_GARBAGE_GRACE_MS / 1000,
                                  (LOCK_GARBAGE_GRACE_MS % 1000) * 1000000L};
            nanosleep(&ts, NULL);
            char *again = NULL;
            r = read_object(st, obj, &again, &e);
            if (r == CAIRN_E_NOTFOUND) { /* released meanwhile */
                info_free(li);
                out->count--;
            } else if (r == CAIRN_OK && strcmp(again, text) != 0) {
                info_free(li);
                parse_info(obj, again, (int64_t)now_ms(), host, li);
            } else if (r == CAIRN_OK) {
                li->stale = 1; /* unchanged garbage: its writer is gone */
            }
            free(again);
        }
        free(text);
    }
    cairn_lock_list_free(&names);
    if (rc != CAIRN_OK)
        cairn_lock_list_free(out);
    return rc;
}

void cairn_lock_describe(const struct cairn_lock_info *li, int64_t now_ms, char *out, size_t cap)
{
    if (li->problem != NULL) {
        snprintf(out, cap, "object %s (%s)", li->object, li->problem);
        return;
    }
    snprintf(out, cap, "%s lock of host %s pid %ld (%s), started %llds ago, refreshed %llds ago",
             li->exclusive ? "exclusive" : "shared", li->host, li->pid, li->command,
             (long long)((now_ms - li->started_ms) / 1000),
             (long long)((now_ms - li->refreshed_ms) / 1000));
}

/* ---- writing our own ---- */

static int write_object(struct cairn_lock *l, const char *obj, struct cairn_err *err)
{
    json_t *j = json_pack("{s:i, s:s, s:s, s:I, s:s, s:s, s:I, s:I, s:I}", "version", 1, "id",
                          l->id, "host", l->host, "pid", (json_int_t)getpid(), "mode",
                          l->exclusive ? "exclusive" : "shared", "command", l->command,
                          "started_ms", (json_int_t)l->started_ms, "refreshed_ms",
                          (json_int_t)now_ms(), "refresh_ms", (json_int_t)l->refresh_ms);
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    size_t len = strlen(text);
    struct cairn_storage *st = l->st;
    struct cairn_writer *w = NULL;
    /* Neither SYNC (a lock means nothing after a machine crash) nor ATOMIC (one cut short by
     * a dying writer reads as garbage, which counts as stale). */
    const struct cairn_storage_write_opts wo = {CAIRN_STORAGE_WRITE_REPLACE};
    int rc = storage_create(st, CAIRN_LOCK_DIR, obj, NULL, (int64_t)len, &wo, &w, err);
    if (rc == CAIRN_E_NOTFOUND) { /* no lock directory yet (file driver) */
        rc = st->drv->start(st->state, CAIRN_LOCK_DIR, err);
        if (rc == CAIRN_OK || rc == CAIRN_E_EXISTS)
            rc = storage_create(st, CAIRN_LOCK_DIR, obj, NULL, (int64_t)len, &wo, &w, err);
    }
    if (rc == CAIRN_OK)
        rc = cairn_writer_write(w, text, len, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(w, err);
    cairn_writer_free(w);
    free(text);
    return rc;
}

static char *object_name(const struct cairn_lock *l, unsigned seq)
{
    return xasprintf("%s-%06u", l->id, seq);
}

/* A new object, then the old one removed. Our object gone means someone took the lock over
 * as stale: the lock is lost and never re-created. */
static int refresh(struct cairn_lock *l, struct cairn_err *err)
{
    char *text = NULL;
    int rc = read_object(l->st, l->object, &text, err);
    free(text);
    if (rc == CAIRN_E_NOTFOUND) {
        pthread_mutex_lock(&l->mu);
        l->lost = 1;
        pthread_mutex_unlock(&l->mu);
        return cairn_err_set(err, CAIRN_E_LOCKED,
                             "lock %s on '%s' was removed by another process (taken over as "
                             "stale or by cairn unlock --all)",
                             l->object, l->st->url);
    }
    if (rc != CAIRN_OK)
        return rc;
    char *next = object_name(l, l->seq + 1);
    rc = write_object(l, next, err);
    if (rc != CAIRN_OK) {
        free(next);
        return rc;
    }
    /* The new name first, so cairn_lock_check never mistakes the old one's removal for a
     * takeover. */
    pthread_mutex_lock(&l->mu);
    char *old = l->object;
    l->object = next;
    l->seq++;
    pthread_mutex_unlock(&l->mu);
    l->st->drv->remove_file(l->st->state, CAIRN_LOCK_DIR, old, NULL);
    free(old);
    return CAIRN_OK;
}

static void *refresher(void *arg)
{
    struct cairn_lock *l = arg;
    pthread_mutex_lock(&l->mu);
    while (!l->stop && !l->lost) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t ns = ts.tv_nsec + (l->refresh_ms % 1000) * 1000000;
        ts.tv_sec += (time_t)(l->refresh_ms / 1000 + ns / 1000000000);
        ts.tv_nsec = (long)(ns % 1000000000);
        while (!l->stop && pthread_cond_timedwait(&l->cv, &l->mu, &ts) != ETIMEDOUT)
            ;
        if (l->stop)
            break;
        pthread_mutex_unlock(&l->mu);
        struct cairn_err e;
        if (refresh(l, &e) != CAIRN_OK)
            cairn_warn("lock", "%s", e.msg); /* retried next period; a lost lock stops here */
        pthread_mutex_lock(&l->mu);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static void lock_free(struct cairn_lock *l)
{
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    cairn_storage_free(l->st);
    free(l->object);
    free(l->command);
    free(l);
}

/* One attempt: our object written, the others judged. CAIRN_E_LOCKED (our object removed)
 * when a live one conflicts; stale conflicting ones are removed with a warning. */
static int try_take(struct cairn_lock *l, struct cairn_err *err)
{
    int rc = write_object(l, l->object, err);
    if (rc != CAIRN_OK)
        return rc;
    struct cairn_lock_list others;
    rc = list_locks(l->st, l->id, &others, err);
    int64_t now = (int64_t)now_ms();
    /* Every stale conflict is removed; a live holder is reported before an object that is
     * no lock (it names who to ask). */
    const struct cairn_lock_info *conflict = NULL;
    for (size_t i = 0; rc == CAIRN_OK && i < others.count; i++) {
        struct cairn_lock_info *o = &others.items[i];
        if (!l->exclusive && !o->exclusive && o->problem == NULL)
            continue;
        if (o->stale) {
            char desc[600];
            cairn_lock_describe(o, now, desc, sizeof(desc));
            cairn_warn("lock", "'%s': removing stale lock: %s", l->st->url, desc);
            struct cairn_err re;
            int r = l->st->drv->remove_file(l->st->state, CAIRN_LOCK_DIR, o->object, &re);
            if (r != CAIRN_OK && r != CAIRN_E_NOTFOUND)
                rc = cairn_err_set(err, r, "remove stale lock %s: %s", o->object, re.msg);
            continue;
        }
        if (conflict == NULL || (conflict->problem != NULL && o->problem == NULL))
            conflict = o;
    }
    if (rc == CAIRN_OK && conflict != NULL) {
        char desc[600];
        cairn_lock_describe(conflict, now, desc, sizeof(desc));
        if (conflict->problem != NULL)
            rc = cairn_err_set(err, CAIRN_E_LOCKED,
                               "storage '%s' holds %s among its locks: it may be one being "
                               "written now; if no cairn process uses the location, 'cairn "
                               "unlock %s' removes it",
                               l->st->url, desc, l->st->url);
        else
            rc = cairn_err_set(err, CAIRN_E_LOCKED,
                               "storage '%s' is locked by another process: %s (cannot take %s "
                               "lock; if that process is gone, 'cairn unlock %s' removes stale "
                               "locks)",
                               l->st->url, desc, l->exclusive ? "an exclusive" : "a shared",
                               l->st->url);
    }
    cairn_lock_list_free(&others);
    if (rc != CAIRN_OK)
        l->st->drv->remove_file(l->st->state, CAIRN_LOCK_DIR, l->object, NULL);
    return rc;
}

static void pause_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Exclusive takers create nothing: a typo'd location stays a "not found". */
static int location_exists(struct cairn_storage *st, struct cairn_err *err)
{
    struct cairn_lock_list names = {0};
    int rc = st->drv->list_files(st->state, CAIRN_LOCK_DIR, add_name, &names, err);
    cairn_lock_list_free(&names);
    return rc;
}

static struct cairn_lock *lock_new(struct cairn_storage *own, enum cairn_lock_mode mode,
                                   const struct cairn_lock_opts *opts)
{
    struct cairn_lock *l = xcalloc(1, sizeof(*l));
    l->st = own;
    l->exclusive = mode == CAIRN_LOCK_EXCLUSIVE;
    l->command = xstrdup(opts && opts->command ? opts->command : "cairn");
    host_name(l->host, sizeof(l->host), 0);
    random_id(l->id);
    l->object = object_name(l, 0);
    l->started_ms = (int64_t)now_ms();
    l->refresh_ms = opts && opts->refresh_ms > 0
                        ? opts->refresh_ms
                        : env_ms("CAIRN_LOCK_REFRESH_MS", CAIRN_LOCK_REFRESH_MS_DEFAULT);
    if (l->refresh_ms <= 0)
        l->refresh_ms = CAIRN_LOCK_REFRESH_MS_DEFAULT;
    pthread_mutex_init(&l->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->cv, &ca);
    pthread_condattr_destroy(&ca);
    return l;
}

int cairn_storage_lock(struct cairn_storage *st, enum cairn_lock_mode mode,
                       const struct cairn_lock_opts *opts, struct cairn_lock **out,
                       struct cairn_err *err)
{
    *out = NULL;
    if (st->drv->list_files == NULL || st->drv->remove_file == NULL)
        return CAIRN_OK; /* a driver without lock objects */
    int rc = storage_ready(st, err);
    if (rc != CAIRN_OK)
        return rc;
    struct cairn_storage *own = NULL;
    rc = cairn_storage_open(st->url, &own, err);
    if (rc == CAIRN_OK)
        storage_share_repo(own, st);
    if (rc == CAIRN_OK && mode == CAIRN_LOCK_EXCLUSIVE)
        rc = location_exists(own, err);
    if (rc != CAIRN_OK) {
        cairn_storage_free(own);
        return rc;
    }
    struct cairn_lock *l = lock_new(own, mode, opts);
    int64_t wait = opts && opts->wait_ms > 0 ? opts->wait_ms : env_ms("CAIRN_LOCK_WAIT_MS", 0);
    uint64_t deadline = mono_ns() + (uint64_t)wait * 1000000u;
    unsigned seed = (unsigned)(mono_ns() ^ (uint64_t)getpid());
    /* Two takers that saw each other both back off: random pauses break the tie; they grow
     * to 2 s so a long wait costs few requests. The caller's cancel flag ends a wait
     * (cairnd's shutdown, the CLI's Ctrl-C). */
    unsigned spread = 230;
    while ((rc = try_take(l, err)) == CAIRN_E_LOCKED && mono_ns() < deadline) {
        if (cancel_requested(st->cancel)) {
            rc = cairn_err_set(err, CAIRN_E_CANCELLED, "cancelled while waiting for a lock on '%s'",
                               st->url);
            break;
        }
        pause_ms(20 + rand_r(&seed) % spread);
        spread = spread < 1000 ? spread * 2 : 2000;
    }
    if (rc == CAIRN_OK && pthread_create(&l->thread, NULL, refresher, l) == 0)
        l->has_thread = 1;
    else if (rc == CAIRN_OK)
        rc = cairn_err_set(err, CAIRN_E_NOMEM, "cannot start the lock refresher thread");
    if (rc != CAIRN_OK) {
        if (rc != CAIRN_E_LOCKED) /* LOCKED already removed it */
            own->drv->remove_file(own->state, CAIRN_LOCK_DIR, l->object, NULL);
        lock_free(l);
        return rc;
    }
    *out = l;
    return CAIRN_OK;
}

int cairn_lock_check(struct cairn_lock *l, struct cairn_err *err)
{
    if (l == NULL)
        return CAIRN_OK;
    for (;;) {
        pthread_mutex_lock(&l->mu);
        int lost = l->lost;
        char *obj = xstrdup(l->object);
        pthread_mutex_unlock(&l->mu);
        char *text = NULL;
        int rc = lost ? CAIRN_E_NOTFOUND : read_object(l->st, obj, &text, err);
        free(text);
        /* The refresher may have just replaced it (a read racing the old one's removal can
         * fail in other ways on S3): look again under the newer name. */
        pthread_mutex_lock(&l->mu);
        int moved = !l->lost && strcmp(obj, l->object) != 0;
        pthread_mutex_unlock(&l->mu);
        if (rc != CAIRN_OK && moved) {
            free(obj);
            continue;
        }
        if (rc == CAIRN_E_NOTFOUND)
            rc = cairn_err_set(err, CAIRN_E_LOCKED,
                               "lock %s on '%s' was removed by another process (taken over as "
                               "stale, or cairn unlock --all)",
                               obj, l->st->url);
        free(obj);
        return rc;
    }
}

void cairn_lock_release(struct cairn_lock *l)
{
    if (l == NULL)
        return;
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    if (l->has_thread)
        pthread_join(l->thread, NULL);
    if (!l->lost) {
        struct cairn_err e;
        int rc = l->st->drv->remove_file(l->st->state, CAIRN_LOCK_DIR, l->object, &e);
        if (rc != CAIRN_OK && rc != CAIRN_E_NOTFOUND)
            cairn_warn("lock", "'%s': could not remove lock %s (it goes stale): %s", l->st->url,
                       l->object, e.msg);
    }
    lock_free(l);
}

/* ---- inspection and unlock ---- */

int cairn_storage_locks(struct cairn_storage *st, struct cairn_lock_list *out,
                        struct cairn_err *err)
{
    memset(out, 0, sizeof(*out));
    if (st->drv->list_files == NULL)
        return CAIRN_OK;
    int rc = storage_ready(st, err);
    return rc != CAIRN_OK ? rc : list_locks(st, NULL, out, err);
}

int cairn_storage_unlock(struct cairn_storage *st, int all, struct cairn_lock_list *removed,
                         struct cairn_err *err)
{
    if (removed != NULL)
        memset(removed, 0, sizeof(*removed));
    struct cairn_lock_list l;
    int rc = cairn_storage_locks(st, &l, err);
    for (size_t i = 0; rc == CAIRN_OK && i < l.count; i++) {
        if (!all && !l.items[i].stale && l.items[i].problem == NULL)
            continue;
        int r = st->drv->remove_file(st->state, CAIRN_LOCK_DIR, l.items[i].object, err);
        if (r == CAIRN_E_NOTFOUND)
            continue;
        rc = r;
        if (rc == CAIRN_OK && removed != NULL) {
            removed->items =
                xrealloc(removed->items, (removed->count + 1) * sizeof(*removed->items));
            removed->items[removed->count++] = l.items[i];
            memset(&l.items[i], 0, sizeof(l.items[i]));
        }
    }
    cairn_lock_list_free(&l);
    return rc;
}
