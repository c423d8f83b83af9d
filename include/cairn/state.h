/* cairn: the scheduler's versioned state snapshot and where it is persisted.
 *
 * The state is a map from schedule name to the last scheduled instant cairnd has dealt with
 * (ran, found already done, or deliberately skipped). It is written as an envelope whose
 * layout never changes (all integers little-endian):
 *
 *   off  size  field
 *     0     8  magic "CAIRNST\x1a"
 *     8     2  envelope version (1)
 *    10     2  payload version  (1 = the only released payload so far)
 *    12     4  payload length N (at most CAIRN_STATE_PAYLOAD_MAX)
 *    16     N  payload
 *  16+N    32  SHA-256 of bytes [0, 16+N)
 *
 * Payload v1: u32 count, then count entries sorted by name (bytewise, no duplicates), each
 * u16 name length, name bytes (a valid schedule name), i64 Unix seconds.
 *
 * Decoders exist for every released payload version; the encoder always writes the newest.
 * Errors are distinct: CAIRN_E_CORRUPT for truncation, bad magic, checksum mismatch or a
 * malformed payload; CAIRN_E_UNSUPPORTED for an envelope or payload version newer than this
 * build ("snapshot payload version N is newer than this cairnd supports (max M)"). The
 * checksum is verified before the payload version is looked at, so a flipped version byte is
 * reported as corruption, not as a version problem.
 */
#ifndef CAIRN_STATE_H
#define CAIRN_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "cairn/common.h"
#include "cairn/err.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CAIRN_STATE_ENVELOPE_VERSION 1
#define CAIRN_STATE_PAYLOAD_VERSION  1 /* newest payload this build reads and writes */
#define CAIRN_STATE_PAYLOAD_MAX      (16u << 20)
#define CAIRN_STATE_NAME_MAX         100 /* schedule names: [A-Za-z0-9._-], 1..100 bytes */

struct cairn_state;

CAIRN_API struct cairn_state *cairn_state_new(void);
CAIRN_API struct cairn_state *cairn_state_dup(const struct cairn_state *st);
CAIRN_API void cairn_state_free(struct cairn_state *st);

/* 1 when name is a valid schedule name, else 0. */
CAIRN_API int cairn_state_name_valid(const char *name);
/* 1 and *sec when name has an entry, else 0. */
CAIRN_API int cairn_state_get(const struct cairn_state *st, const char *name, int64_t *sec);
/* Record sec for name, but only forward: returns 1 when the entry was created or moved
 * forward, 0 when sec is not later than the stored time, CAIRN_E_INVALID for a bad name. */
CAIRN_API int cairn_state_update(struct cairn_state *st, const char *name, int64_t sec,
                                 struct cairn_err *err);
CAIRN_API int cairn_state_is_empty(const struct cairn_state *st);
CAIRN_API size_t cairn_state_count(const struct cairn_state *st);
/* The i-th entry in name order; returns its name and stores its time. */
CAIRN_API const char *cairn_state_entry(const struct cairn_state *st, size_t i, int64_t *sec);

/* Serialise into a malloc'd envelope (newest payload version). */
CAIRN_API int cairn_state_encode(const struct cairn_state *st, uint8_t **out, size_t *len,
                                 struct cairn_err *err);
/* Parse an envelope of any supported version. payload_version may be NULL. */
CAIRN_API int cairn_state_decode(const uint8_t *buf, size_t len, struct cairn_state **out,
                                 unsigned *payload_version, struct cairn_err *err);

/* Persistence: the last `keep` snapshots as rows in SQLite or PostgreSQL.
 *
 * URLs: "sqlite:///abs/path.db", "sqlite:rel/path.db", a plain file path (SQLite), or
 * "postgresql://..." / "postgres://..." (libpq connection URI). Opening creates the schema
 * or migrates it (table cairn_schema_version, numbered migrations); a schema newer than this
 * build is refused. Thread-safe: operations on one store are serialised inside.
 *
 * Healing (CAIRN_STATE_HEAL, SQLite only): the database is checked (PRAGMA quick_check) at
 * open, by cairn_state_store_check() and after any statement fails with SQLITE_CORRUPT or
 * SQLITE_NOTADB. A damaged database is moved aside as PATH.corrupt-YYYYMMDDTHHMMSSZ (with its
 * -journal/-wal/-shm, mode 0600, kept for inspection) and a fresh one is created in its place;
 * the newest snapshot that still verifies (the last one stored by this process, else the
 * newest row of the damaged file whose SHA-256 matches) is stored again in the fresh one.
 * Without the flag a damaged database is CAIRN_E_CORRUPT, as before. */
struct cairn_state_store;

struct cairn_state_load_report {
    int found;          /* a good snapshot was loaded */
    unsigned rows;      /* rows looked at */
    unsigned skipped;   /* corrupt rows skipped (newest first) before the good one */
    int64_t row_id;     /* id of the row loaded */
    int64_t created_at; /* its creation time (Unix seconds, the writer's clock) */
    unsigned payload_version;
};

#define CAIRN_STATE_HEAL 1u /* cairn_state_store_open_ex: heal a damaged database */
/* cairn_state_store_open_ex: take cairn_state_store_lock() right after connecting, before
 * any check, heal or migration touches the database (a second cairnd must not move aside
 * the database the first one is using). */
#define CAIRN_STATE_OWN 2u

/* Called (from the thread that found the damage) after each heal: aside is where the damaged
 * file went, reason what the check said, restored 1 when a snapshot was stored again. */
typedef void (*cairn_state_heal_fn)(void *ctx, const char *aside, const char *reason, int restored);

CAIRN_API int cairn_state_store_open(const char *url, unsigned keep, struct cairn_state_store **out,
                                     struct cairn_err *err);
CAIRN_API int cairn_state_store_open_ex(const char *url, unsigned keep, unsigned flags,
                                        struct cairn_state_store **out, struct cairn_err *err);
/* Destroy s: disconnect from the database (releasing the owner lock) and free. NULL is fine. */
CAIRN_API void cairn_state_store_free(struct cairn_state_store *s);
/* Check the database's integrity now (and heal it when opened with CAIRN_STATE_HEAL).
 * CAIRN_OK when healthy or healed; CAIRN_E_CORRUPT when damaged and not healed. */
CAIRN_API int cairn_state_store_check(struct cairn_state_store *s, struct cairn_err *err);
/* Heals since open (including one at open); the last heal's message into msg (may be NULL). */
CAIRN_API unsigned cairn_state_store_heals(struct cairn_state_store *s, char *msg, size_t cap);
/* Register the heal callback (NULL clears). */
CAIRN_API void cairn_state_store_on_heal(struct cairn_state_store *s, cairn_state_heal_fn fn,
                                         void *ctx);
/* Make this process the only owner of the state until close, so two cairnd never run one
 * state's schedules: SQLite, an exclusive flock(2) on "<path>.lock" (beside the database; it
 * names the owner's pid and host); PostgreSQL, a session advisory lock
 * (pg_try_advisory_lock(CAIRN_STATE_OWNER_KEY)), taken again after a reconnect.
 * CAIRN_E_LOCKED (exit code 10) when another live process owns it, naming the state. The
 * lock goes with the process: a crashed owner never blocks the next one. */
#define CAIRN_STATE_OWNER_KEY 4242424202LL
CAIRN_API int cairn_state_store_lock(struct cairn_state_store *s, const char *url,
                                     struct cairn_err *err);
CAIRN_API const char *cairn_state_store_kind(const struct cairn_state_store *s);

/* High availability (PostgreSQL only; CAIRN_E_UNSUPPORTED elsewhere): several cairnd share one
 * state and one of them, the holder of the leader lease, runs the schedules. The lease is one
 * row (holder, token, expiry by the database's clock, so hosts' clocks play no part); the
 * token grows by one with every new holder and fences the old ones: a store given a token
 * with cairn_state_store_set_fence() checks it in the same transaction as every put
 * (CAIRN_E_DENIED when another holder has taken the lease since), so a leader that was
 * stopped (SIGSTOP, a VM paused) and wakes up after losing the lease cannot write state.
 *
 * take: become the holder when the lease is free, expired or already held by this holder
 * (*token: the new token);
 * CAIRN_E_LOCKED naming the live holder otherwise. renew: extend it for lease_ms;
 * CAIRN_E_DENIED when token is no longer the current one (deposed). release: let it expire
 * now (a clean stop hands over at once). fence_check: CAIRN_OK when token is still current,
 * CAIRN_E_DENIED when not. lease_get: the current holder, token and the ms left (negative:
 * expired); CAIRN_E_NOTFOUND when no cairnd ever held it. */
struct cairn_state_lease {
    char holder[256];
    int64_t token;
    int64_t remaining_ms;
};
CAIRN_API int cairn_state_store_lease_take(struct cairn_state_store *s, const char *holder,
                                           int64_t lease_ms, int64_t *token, struct cairn_err *err);
CAIRN_API int cairn_state_store_lease_renew(struct cairn_state_store *s, const char *holder,
                                            int64_t token, int64_t lease_ms, struct cairn_err *err);
CAIRN_API int cairn_state_store_lease_release(struct cairn_state_store *s, const char *holder,
                                              int64_t token, struct cairn_err *err);
CAIRN_API int cairn_state_store_lease_get(struct cairn_state_store *s,
                                          struct cairn_state_lease *out, struct cairn_err *err);
CAIRN_API int cairn_state_store_fence_check(struct cairn_state_store *s, int64_t token,
                                            struct cairn_err *err);
/* Every later put on s carries token (recorded with the row) and is refused unless it is the
 * lease's current token; 0 turns fencing off. */
CAIRN_API void cairn_state_store_set_fence(struct cairn_state_store *s, int64_t token);
/* Insert one encoded envelope (from cairn_state_encode, checked again here) and delete all
 * but the newest `keep` rows, in one transaction. */
CAIRN_API int cairn_state_store_put(struct cairn_state_store *s, const uint8_t *env, size_t len,
                                    int64_t created_at, struct cairn_err *err);
/* Load the newest row that decodes. Corrupt rows are skipped (logged, counted in rep); a row
 * of a newer version stops the load with CAIRN_E_UNSUPPORTED (an older cairnd must not guess).
 * No rows, or only corrupt ones, gives an empty state with rep->found = 0. */
CAIRN_API int cairn_state_store_load(struct cairn_state_store *s, struct cairn_state **out,
                                     struct cairn_state_load_report *rep, struct cairn_err *err);

#ifdef __cplusplus
}
#endif

#endif
