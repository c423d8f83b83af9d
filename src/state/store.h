/* Internal: the state store driver interface. A driver speaks SQL to one database; the
 * generic layer (store.c) owns migrations, pruning, the corrupt-row fallback and healing a
 * damaged database (check + move_aside). */
#ifndef CAIRN_STATE_STORE_H
#define CAIRN_STATE_STORE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "cairn/state.h"

struct state_row {
    int64_t id;
    int64_t created_at;
    uint8_t *data;
    size_t len;
};

struct store_ops {
    const char *kind;
    /* Statement that starts a write transaction that serialises against other writers. */
    const char *begin_sql;
    /* Numbered migrations: migrations[i] takes the schema from version i to i+1. */
    const char *const *migrations;
    unsigned n_migrations;
    int (*exec)(struct cairn_state_store *s, const char *sql, struct cairn_err *err);
    /* SELECT returning one integer (or NULL -> *is_null). */
    int (*query_int)(struct cairn_state_store *s, const char *sql, int64_t *out, int *is_null,
                     struct cairn_err *err);
    int (*insert)(struct cairn_state_store *s, int64_t created_at, unsigned payload_version,
                  const uint8_t *data, size_t len, struct cairn_err *err);
    /* Up to limit rows, newest (highest id) first; caller frees with state_rows_free. */
    int (*rows)(struct cairn_state_store *s, unsigned limit, struct state_row **rows, size_t *n,
                struct cairn_err *err);
    /* End the database session: close the connection (and the owner lock). */
    void (*close)(struct cairn_state_store *s);
    /* Integrity check of the whole database: CAIRN_E_CORRUPT when damaged. NULL: none. */
    int (*check)(struct cairn_state_store *s, struct cairn_err *err);
    /* Close the database, rename its files aside (name written to aside) and open a fresh,
     * empty one in its place. NULL: the driver cannot (the store is not healed). */
    int (*move_aside)(struct cairn_state_store *s, char *aside, size_t cap, struct cairn_err *err);
    /* Make this process the store's only owner until close (cairn_state_store_lock);
     * CAIRN_E_LOCKED when another process is. */
    int (*lock)(struct cairn_state_store *s, struct cairn_err *err);
    /* The leader lease (cairn/state.h); NULL: the driver has none (SQLite). */
    int (*lease)(struct cairn_state_store *s, int op, const char *holder, int64_t lease_ms,
                 int64_t *token, struct cairn_state_lease *cur, struct cairn_err *err);
};

enum { LEASE_TAKE, LEASE_RENEW, LEASE_RELEASE, LEASE_GET, LEASE_FENCE };

struct cairn_state_store {
    const struct store_ops *ops;
    unsigned keep;
    unsigned flags;     /* CAIRN_STATE_HEAL, CAIRN_STATE_OWN */
    void *db;           /* driver handle */
    char *path;         /* SQLite: the database file */
    pthread_mutex_t mu; /* serialises every operation (the checker runs in its own thread) */
    uint8_t *last_env;  /* the last envelope stored, re-stored into a fresh database */
    size_t last_len;
    int64_t last_at;
    /* Heal status, read by other threads (/healthz) under status_mu. */
    pthread_mutex_t status_mu;
    unsigned heals;
    char heal_msg[512];
    cairn_state_heal_fn on_heal;
    void *on_heal_ctx;
    int owner;     /* lock() succeeded (PostgreSQL re-takes it after a reconnect) */
    int lock_fd;   /* SQLite: the flock'd "<path>.lock", -1 when none */
    int64_t fence; /* cairn_state_store_set_fence: puts carry and check it; 0 none */
};

void state_rows_free(struct state_row *rows, size_t n);
int state_store_sqlite_open(const char *path, struct cairn_state_store *s, struct cairn_err *err);
int state_store_pg_open(const char *url, struct cairn_state_store *s, struct cairn_err *err);

#endif
