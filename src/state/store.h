/* Internal: the state store driver interface. A driver speaks SQL to one database; the
 * generic layer (store.c) owns migrations, pruning and the corrupt-row fallback. */
#ifndef CAIRN_STATE_STORE_H
#define CAIRN_STATE_STORE_H

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
    void (*close)(struct cairn_state_store *s);
    /* Make this process the store's only owner until close (cairn_state_store_lock);
     * CAIRN_E_LOCKED when another process is. */
    int (*lock)(struct cairn_state_store *s, struct cairn_err *err);
};

struct cairn_state_store {
    const struct store_ops *ops;
    unsigned keep;
    void *db;    /* driver handle */
    int owner;   /* lock() succeeded (PostgreSQL re-takes it after a reconnect) */
    int lock_fd; /* SQLite: the flock'd "<path>.lock", -1 when none */
};

void state_rows_free(struct state_row *rows, size_t n);
int state_store_sqlite_open(const char *path, struct cairn_state_store *s, struct cairn_err *err);
int state_store_pg_open(const char *url, struct cairn_state_store *s, struct cairn_err *err);

#endif
