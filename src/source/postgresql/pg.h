/* Private to src/source/postgresql: the PostgreSQL 15 physical base backup over libpq's
 * replication protocol, as `pg_basebackup -Ft -X stream --manifest-checksums=SHA256` takes it.
 *
 * A backup holds one file per tablespace archive exactly as the server sent it (base.tar, and
 * <oid>.tar per tablespace), backup_manifest, and pg_wal.tar: the WAL from the backup's start
 * to its end, streamed on a second replication connection through a temporary physical slot
 * created before the backup starts, one tar member per 16 MiB (wal_segment_size) segment, the
 * last one padded with zeros as pg_basebackup pads it. Every file's SHA-256 is computed while
 * its tar streams and checked against backup_manifest, whose own Manifest-Checksum is checked
 * too. /work/shared/spec/postgres-base-backup.md has the protocol notes this follows. */
#ifndef CAIRN_SOURCE_POSTGRESQL_PG_H
#define CAIRN_SOURCE_POSTGRESQL_PG_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "cairn/digest.h"
#include "cairn/err.h"
#include "cairn/source.h"

#define PG_KIND     "postgresql"
#define PG_BASE_TAR "base.tar"
#define PG_WAL_TAR  "pg_wal.tar"
#define PG_MANIFEST "backup_manifest"

/* ---- conn.c: how to reach the server, connections and their errors ---- */
#define PG_MAX_PARAMS 16

struct pg_params {
    const char *keys[PG_MAX_PARAMS + 1]; /* NULL-terminated, for PQconnectdbParams */
    const char *vals[PG_MAX_PARAMS + 1];
    char *owned[PG_MAX_PARAMS]; /* the values above, malloc'd */
    size_t n;
    char *password;    /* never logged; scrubbed from libpq's messages */
    int database;      /* the URL names a database: replication=database */
    char where[300];   /* "postgresql HOST:PORT" for messages */
    int io_timeout_ms; /* longest silence while streaming; 0: none */
    const volatile int *cancel;
};

/* From a postgresql:// or postgres:// URL (user-info, host, port, /dbname, and the libpq
 * parameters sslmode, sslrootcert, sslcert, sslkey, connect_timeout, application_name in the
 * query) and the options (password_file, ca_file as sslrootcert, cert/key files). A password
 * comes from the URL, the password file, or libpq's own PGPASSWORD / ~/.pgpass. */
int pg_params_init(struct pg_params *p, const char *url, const struct cairn_source_opts *o,
                   struct cairn_err *err);
void pg_params_free(struct pg_params *p);
/* A replication connection (replication=database when the URL names a database, else
 * replication=true). Errors: CAIRN_E_NETWORK (down, refused), CAIRN_E_DENIED (password, role
 * without REPLICATION, pg_hba), CAIRN_E_TIMEOUT. */
int pg_connect(const struct pg_params *p, PGconn **out, struct cairn_err *err);
/* Record libpq's error of c (or of r) for what we were doing, with the password scrubbed and
 * the code from the SQLSTATE or the message. */
int pg_fail(const struct pg_params *p, PGconn *c, const PGresult *r, const char *what,
            struct cairn_err *err);
/* Run a replication command; *out gets a PGRES_TUPLES_OK/COMMAND_OK result (PQclear it). */
int pg_command(const struct pg_params *p, PGconn *c, const char *sql, PGresult **out,
               struct cairn_err *err);
/* Wait (polling, so cancel applies) until c has a whole result ready; idle_ms > 0: fail with
 * CAIRN_E_TIMEOUT after that long without a byte from the server. */
int pg_wait(const struct pg_params *p, PGconn *c, int idle_ms, struct cairn_err *err);
/* The next CopyData message of c: *len > 0 and *msg (PQfreemem it); *msg = NULL at the copy's
 * end; *len = 0 and *msg = NULL when *wake became nonzero first. what names the stream in
 * errors ("base backup stream"). The idle timeout applies only without wake: a WAL stream
 * may rightly be silent while the base backup goes on, and is paced by it. */
int pg_copy_next(const struct pg_params *p, PGconn *c, const char *what, const volatile int *wake,
                 char **msg, int *len, struct cairn_err *err);
/* "X/X" to an LSN; 0 on a bad string. */
uint64_t pg_lsn_parse(const char *s);
void pg_lsn_format(uint64_t lsn, char out[24]);

/* ---- files.c: the files the tars held, with the SHA-256 computed as they streamed ---- */
struct pg_file {
    char *path; /* relative to the data directory (tablespaces: pg_tblspc/<oid>/...) */
    uint64_t size;
    uint8_t sha256[32];
    int listed; /* seen in backup_manifest */
};
struct pg_files {
    struct pg_file *v;
    size_t n, cap;
    int sorted;
};
void pg_files_add(struct pg_files *f, const char *path, uint64_t size, const uint8_t sha[32]);
/* Sort for lookups; CAIRN_E_CORRUPT for a path twice. */
int pg_files_seal(struct pg_files *f, const char *what, struct cairn_err *err);
struct pg_file *pg_files_find(struct pg_files *f, const char *path);
void pg_files_free(struct pg_files *f);

/* A push parser of one tar stream as the server writes it (ustar, with its end marker): each
 * regular member's SHA-256 and size go into files under prefix + name. */
struct pg_tar {
    const char *what; /* "base.tar of postgresql HOST:PORT" */
    char prefix[48];  /* "" or "pg_tblspc/<oid>/" */
    struct pg_files *files;
    uint8_t hdr[512];
    size_t hlen;
    uint64_t remain, pad; /* data and padding bytes the current member still owes */
    int regular;          /* the current member is a regular file being hashed */
    char name[512];
    uint64_t size;
    struct cairn_sha256 h;
    int zero_blocks; /* consecutive zero header blocks: 2 is the end marker */
    int ended;
};
void pg_tar_init(struct pg_tar *t, const char *what, const char *prefix, struct pg_files *files);
int pg_tar_feed(struct pg_tar *t, const uint8_t *p, size_t n, struct cairn_err *err);
/* The archive ended: it must have ended with its end marker. */
int pg_tar_finish(struct pg_tar *t, struct cairn_err *err);
void pg_tar_free(struct pg_tar *t);

/* ---- manifest.c: backup_manifest checked as it streams, line by line ---- */
struct pg_manifest {
    const char *what;
    struct pg_files *files;
    struct cairn_sha256 h; /* every byte before the "Manifest-Checksum" line */
    char *line;
    size_t len, cap;
    int checksum_ok; /* the Manifest-Checksum line was seen and matched */
    int after;       /* bytes after the checksum line (other than its newline) */
    uint64_t listed; /* file entries */
    uint32_t wal_tli;
    uint64_t wal_start, wal_end; /* the first (newest) WAL range */
    int wal_ranges;
};
void pg_manifest_init(struct pg_manifest *m, const char *what, struct pg_files *files);
int pg_manifest_feed(struct pg_manifest *m, const uint8_t *p, size_t n, struct cairn_err *err);
/* The manifest ended: its checksum matched, every listed file was in the tars with that size
 * and SHA-256, every file of the tars is listed, one WAL range from start to end on tli. */
int pg_manifest_finish(struct pg_manifest *m, uint32_t tli, uint64_t start, uint64_t end,
                       struct cairn_err *err);
void pg_manifest_free(struct pg_manifest *m);

/* ---- wal.c: the WAL streamer (a thread with its own connection and temporary slot) ---- */
struct pg_wal;
/* Connect, create the temporary slot (so the WAL from now on is kept), open pg_wal.tar in b. */
int pg_wal_open(const struct pg_params *p, struct cairn_backup *b, uint64_t seg_size,
                struct pg_wal **out, struct cairn_err *err);
/* Start streaming from start (rounded down to its segment) on timeline tli, on the thread. */
int pg_wal_start(struct pg_wal *w, uint64_t start, uint32_t tli, struct cairn_err *err);
/* The thread has failed already (the backup can stop early; pg_wal_finish says why). */
int pg_wal_failed(const struct pg_wal *w);
/* Stop at end (0: abandon), wait for the thread; CAIRN_OK when pg_wal.tar holds every byte of
 * WAL up to end and was committed, else the thread's error (a thread that failed by itself
 * reports its own; one abandoned reports CAIRN_E_CANCELLED). Frees w. err may be NULL. */
int pg_wal_finish(struct pg_wal *w, uint64_t end, struct cairn_err *err);

/* ---- backup.c and restore.c ---- */
int pg_backup(const struct pg_params *p, const struct cairn_source_opts *o, struct cairn_backup *b,
              struct cairn_err *err);
int pg_restore_into(struct cairn_backup *b, const char *into, struct cairn_err *err);

#endif
