/* Restore drills: a schedule with `drill = every D` restores its newest complete backup into a
 * scratch directory (drill-dir/<schedule>), runs a probe on it (drill-probe, or the source
 * kind's own check below), records the outcome (state, metrics, log, webhook) and removes the
 * scratch directory. The restore is `cairn restore --into` (cairn_engine_restore), which
 * verifies every stored file's size and SHA-256 before anything is applied, so a damaged
 * stored object fails the drill before any probe runs. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cairn/digest.h"
#include "cairn/engine.h"
#include "cairn/log.h"
#include "cairn/repo.h"
#include "cairn/storage.h"
#include "common/util.h"
#include "hook.h"
#include "internal.h"
#include "runner.h"

/* Exit status of a probe whose server found its port taken (EX_TEMPFAIL). */
#define DRILL_RETRY 75

/* The source kinds' own checks, run as a probe with the drill's environment (docs/OPERATIONS.md,
 * "Restore drills"). Each starts a throw-away server on loopback where that proves more than a
 * file check; the hook runner kills what is left of its process group when it ends. */
static const char k_probe_redis[] =
    "set -eu\n"
    "redis-check-rdb \"$CAIRN_DRILL_TARGET/dump.rdb\"\n"
    "sock=\"$CAIRN_DRILL_DIR/redis.sock\"\n"
    "redis-server --port 0 --unixsocket \"$sock\" --dir \"$CAIRN_DRILL_TARGET\" \\\n"
    "  --dbfilename dump.rdb --save '' --appendonly no \\\n"
    "  --logfile \"$CAIRN_DRILL_DIR/redis.log\" &\n"
    "pid=$!\n"
    "until [ \"$(redis-cli -s \"$sock\" ping 2>/dev/null)\" = PONG ]; do\n"
    "  kill -0 $pid 2>/dev/null || { tail -n 5 \"$CAIRN_DRILL_DIR/redis.log\";\n"
    "    echo 'redis-server did not load the RDB' >&2; exit 1; }\n"
    "  sleep 0.2\n"
    "done\n"
    "echo \"redis-server loaded the RDB: $(redis-cli -s \"$sock\" dbsize) keys\"\n"
    "redis-cli -s \"$sock\" shutdown nosave >/dev/null 2>&1 || true\n";

static const char k_probe_etcd[] =
    "set -eu\n"
    "export ETCDCTL_API=3\n"
    "c=http://127.0.0.1:$CAIRN_DRILL_PORT p=http://127.0.0.1:$CAIRN_DRILL_PEER_PORT\n"
    "etcd --name default --data-dir \"$CAIRN_DRILL_TARGET\" --listen-client-urls $c \\\n"
    "  --advertise-client-urls $c --listen-peer-urls $p --initial-advertise-peer-urls $p \\\n"
    "  --initial-cluster default=$p >\"$CAIRN_DRILL_DIR/etcd.log\" 2>&1 &\n"
    "pid=$!\n"
    "until etcdctl --endpoints=$c --dial-timeout=2s endpoint health >/dev/null 2>&1; do\n"
    "  kill -0 $pid 2>/dev/null || { log=\"$CAIRN_DRILL_DIR/etcd.log\";\n"
    "    grep -q 'address already in use' \"$log\" && exit 75; tail -n 5 \"$log\";\n"
    "    echo 'etcd did not start on the restored data directory' >&2; exit 1; }\n"
    "  sleep 0.2\n"
    "done\n"
    "n=$(etcdctl --endpoints=$c get '' --prefix --keys-only --limit 1 -w fields |\n"
    "  sed -n 's/^\"Count\" : //p')\n"
    "echo \"etcd started on the restored data: $n keys\"\n";

/* pg_verifybackup checks every file against backup_manifest and parses the WAL; then the
 * server must recover to the backup's end and accept connections (as the postgres user when
 * cairnd runs as root: postgres refuses root). */
static const char k_probe_postgresql[] =
    "set -eu\n"
    "bin=$(dirname \"$(command -v pg_verifybackup 2>/dev/null || \\\n"
    "  ls -d /usr/lib/postgresql/*/bin/pg_verifybackup | sort -V | tail -n 1)\")\n"
    "\"$bin/pg_verifybackup\" \"$CAIRN_DRILL_TARGET\"\n"
    "conf=\"$CAIRN_DRILL_TARGET/postgresql.conf\"\n"
    "[ -e \"$conf\" ] || : >\"$conf\" # Debian keeps it in /etc/postgresql\n"
    "as=\n"
    "if [ \"$(id -u)\" = 0 ]; then\n"
    "  chown -R postgres: \"$CAIRN_DRILL_DIR\"\n"
    "  as='runuser -u postgres --'\n"
    "fi\n"
    "$as \"$bin/pg_ctl\" -D \"$CAIRN_DRILL_TARGET\" -l \"$CAIRN_DRILL_DIR/postgres.log\" -w \\\n"
    "  -t 3600 -o \"-k $CAIRN_DRILL_DIR -p $CAIRN_DRILL_PORT -c listen_addresses='' \\\n"
    "  -c archive_mode=off -c ssl=off -c hba_file=$CAIRN_DRILL_DIR/pg_hba.conf\" start \\\n"
    "  || { tail -n 5 \"$CAIRN_DRILL_DIR/postgres.log\"; exit 1; }\n"
    "$as \"$bin/pg_ctl\" -D \"$CAIRN_DRILL_TARGET\" -m fast -w stop >/dev/null\n"
    "echo 'postgres recovered the restored data directory and accepted connections'\n";

/* influxd restore of the legacy layout (meta, then each database's shards) into a new meta
 * and data directory, then a throw-away influxd on them must list every database. */
static const char k_probe_influxdb[] =
    "set -eu\n"
    "d=\"$CAIRN_DRILL_DIR\" t=\"$CAIRN_DRILL_TARGET\"\n"
    "rm -rf \"$d/meta\" \"$d/data\" \"$d/wal\" # a retry starts afresh\n"
    "dbs=$(ls \"$t\" | sed -n 's/^\\(.*\\)\\.[^.]*\\.[0-9]*\\.[0-9][0-9]$/\\1/p' | sort -u)\n"
    "[ -n \"$dbs\" ] || influxd restore -metadir \"$d/meta\" \"$t\"\n"
    "for db in $dbs; do\n"
    "  influxd restore -metadir \"$d/meta\" -datadir \"$d/data\" -database \"$db\" \"$t\"\n"
    "done\n"
    "cat >\"$d/influxdb.conf\" <<EOF\n"
    "reporting-disabled = true\n"
    "bind-address = \"127.0.0.1:$CAIRN_DRILL_PEER_PORT\"\n"
    "[meta]\n  dir = \"$d/meta\"\n"
    "[data]\n  dir = \"$d/data\"\n  wal-dir = \"$d/wal\"\n"
    "[monitor]\n  store-enabled = false\n"
    "[http]\n  bind-address = \"127.0.0.1:$CAIRN_DRILL_PORT\"\n  log-enabled = false\n"
    "[continuous_queries]\n  enabled = false\n"
    "[subscriber]\n  enabled = false\n"
    "EOF\n"
    "influxd run -config \"$d/influxdb.conf\" >\"$d/influxd.log\" 2>&1 &\n"
    "pid=$!\n"
    "q() { influx -host 127.0.0.1 -port $CAIRN_DRILL_PORT -format csv -execute \"$1\"; }\n"
    "until have=$(q 'SHOW DATABASES' 2>/dev/null); do\n"
    "  kill -0 $pid 2>/dev/null || { grep -q 'address already in use' \"$d/influxd.log\" &&\n"
    "    exit 75; tail -n 5 \"$d/influxd.log\";\n"
    "    echo 'influxd did not start on the restored data' >&2; exit 1; }\n"
    "  sleep 0.2\n"
    "done\n"
    "for db in $dbs; do\n"
    "  echo \"$have\" | grep -qx \"databases,$db\" || { echo \"database $db missing\" >&2; exit 1; "
    "}\n"
    "  n=$(q \"SHOW SERIES CARDINALITY ON \\\"$db\\\"\" | tail -n 1 | cut -d, -f3)\n"
    "  echo \"influxd restored database $db: $n series\"\n"
    "done\n";

static const char *builtin_probe(const char *kind)
{
    if (strcmp(kind, "influxdb") == 0)
        return k_probe_influxdb;
    if (strcmp(kind, "redis") == 0)
        return k_probe_redis;
    if (strcmp(kind, "etcd") == 0)
        return k_probe_etcd;
    if (strcmp(kind, "postgresql") == 0)
        return k_probe_postgresql;
    return NULL; /* the restore's own verification is the check */
}

/* A loopback port free now (the probe binds it a moment later). */
static unsigned free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    unsigned port = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* The newest complete backup this schedule made (its own names), into name and kind; "" when
 * there is none. */
static int newest_backup(const struct cairn_schedule_cfg *c, char *name, size_t cap, char *kind,
                         size_t kcap, struct cairn_err *err)
{
    name[0] = kind[0] = '\0';
    struct cairn_storage *st = NULL;
    struct cairn_backup_list l = {0};
    int rc = runner_storage_open(c, &st, err);
    if (rc == CAIRN_OK)
        rc = cairn_storage_list(st, &l, err);
    if (rc == CAIRN_E_NOTFOUND)
        rc = CAIRN_OK;
    for (size_t i = 0; i < l.count && rc == CAIRN_OK; i++) { /* sorted: the last one wins */
        const struct cairn_backup_info *b = &l.items[i];
        const char *tag = NULL;
        if (b->status == CAIRN_BACKUP_COMPLETE && cairn_backup_name_parse(b->name, NULL, &tag) &&
            strcmp(tag, c->name) == 0) {
            snprintf(name, cap, "%s", b->name);
            snprintf(kind, kcap, "%s", b->kind ? b->kind : "");
        }
    }
    cairn_backup_list_free(&l);
    cairn_storage_free(st);
    return rc;
}

/* Restore name into target (a new directory), bounded by timeout_s for source drivers. */
static int restore(struct cairn_sched *s, const struct cairn_schedule_cfg *c, const char *name,
                   const char *target, int64_t timeout_s, struct cairn_err *err)
{
    uint8_t key[CAIRN_REPO_KEY_LEN];
    struct cairn_repo_secret sec = {key, NULL};
    struct cairn_engine_restore_opts o = {
        .storage_url = c->to,
        .name = name,
        .into_dir = target,
        .cancel = &s->abort,
        .source_timeout_ms = timeout_s * 1000,
    };
    if (c->key_file != NULL) {
        int rc = cairn_key_load(c->key_file, key, err);
        if (rc != CAIRN_OK)
            return rc;
        o.secret = &sec;
    }
    struct cairn_engine_restore_result r;
    memset(&r, 0, sizeof(r));
    int rc = cairn_engine_restore(&o, &r, err);
    wipe(key, sizeof(key));
    return rc;
}

/* The pg_hba.conf of the PostgreSQL probe's server: its own socket only. */
static int write_hba(const char *dir, struct cairn_err *err)
{
    static const char hba[] = "local all all trust\n";
    char *path = path_join(dir, "pg_hba.conf");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int rc = fd < 0 ? cairn_err_sys(err, CAIRN_E_IO, errno, "drill: create '%s'", path)
                    : write_all(fd, hba, sizeof(hba) - 1, path, err);
    if (fd >= 0)
        close(fd);
    free(path);
    return rc;
}

/* Restore and probe in dir (created here, removed by the caller). */
static int drill_in(struct cairn_sched *s, const struct cairn_schedule_cfg *c, const char *dir,
                    const char *name, const char *kind, struct cairn_err *err)
{
    int64_t timeout = c->drill_timeout > 0 ? c->drill_timeout : 3600;
    uint64_t t0 = mono_ns();
    char *target = path_join(dir, "restore");
    int rc = mkdir_p(dir, 0700, err);
    if (rc == CAIRN_OK && (rc = restore(s, c, name, target, timeout, err)) != CAIRN_OK)
        cairn_err_wrap(err, rc, "restore of %s", name);
    const char *probe = c->drill_probe ? c->drill_probe : builtin_probe(kind);
    if (rc == CAIRN_OK && probe != NULL && strcmp(kind, "postgresql") == 0 && !c->drill_probe)
        rc = write_hba(dir, err);
    /* A probe exits DRILL_RETRY when a server it started found its port taken between
     * free_port() and its bind: it runs again with new ports. */
    for (int attempt = 1; rc == CAIRN_OK && probe != NULL; attempt++) {
        int64_t left = timeout - (int64_t)((mono_ns() - t0) / 1000000000ull);
        struct hook_env env = {0};
        hook_env_set(&env, "CAIRN_SCHEDULE", "%s", c->name);
        hook_env_set(&env, "CAIRN_BACKUP", "%s", name);
        hook_env_set(&env, "CAIRN_DRILL_KIND", "%s", kind);
        hook_env_set(&env, "CAIRN_DRILL_TARGET", "%s", target);
        hook_env_set(&env, "CAIRN_DRILL_DIR", "%s", dir);
        hook_env_set(&env, "CAIRN_DRILL_PORT", "%u", free_port());
        hook_env_set(&env, "CAIRN_DRILL_PEER_PORT", "%u", free_port());
        char what[200];
        snprintf(what, sizeof(what), "drill probe of schedule %s", c->name);
        int status = -1;
        rc = hook_run(probe, &env, left > 1 ? left : 1, &s->abort, what, &status, err);
        hook_env_free(&env);
        if (rc == CAIRN_OK || status != DRILL_RETRY || attempt == 3)
            break;
        cairn_info("sched", "schedule %s: drill probe: a port was taken, trying new ones", c->name);
        rc = CAIRN_OK;
    }
    free(target);
    return rc;
}

void sched_drill_key(const char *schedule, char *out, size_t cap)
{
    snprintf(out, cap, "drill.%s", schedule);
}

/* Run the schedule's drill now (admitted by the gate). Returns CAIRN_E_CANCELLED when
 * shutdown cut it (nothing recorded), else CAIRN_OK: a failed drill is recorded, not
 * returned. */
int sched_drill(struct cairn_sched *s, const struct cairn_schedule_cfg *c, struct drill_note *note)
{
    memset(note, 0, sizeof(*note));
    char name[CAIRN_RUN_NAME_MAX], kind[64];
    struct cairn_err err;
    int64_t started = (int64_t)time(NULL);
    uint64_t t0 = mono_ns();
    int rc = newest_backup(c, name, sizeof(name), kind, sizeof(kind), &err);
    if (rc == CAIRN_OK && name[0] == '\0') {
        cairn_warn("sched", "schedule %s: restore drill skipped: no complete backup yet", c->name);
        return CAIRN_OK;
    }
    char *dir = path_join(s->cfg->drill_dir, c->name);
    struct cairn_err rerr;
    if (rmtree(dir, &rerr) != CAIRN_OK) /* a crashed drill's leftovers */
        cairn_warn("sched", "schedule %s: drill: %s", c->name, rerr.msg);
    if (rc == CAIRN_OK) {
        cairn_info("sched", "schedule %s: restore drill of %s (%s) into %s", c->name, name, kind,
                   dir);
        rc = drill_in(s, c, dir, name, kind, &err);
    }
    if (rmtree(dir, &rerr) != CAIRN_OK)
        cairn_error("sched", "schedule %s: drill: removing the scratch directory: %s", c->name,
                    rerr.msg);
    free(dir);
    if (rc == CAIRN_E_CANCELLED)
        return rc;
    double secs = (double)(mono_ns() - t0) / 1e9;
    metrics_set(s->m.drill_last, c->name, (double)sched_now(s));
    metrics_set(s->m.drill_ok, c->name, rc == CAIRN_OK ? 1 : 0);
    metrics_set(s->m.drill_secs, c->name, secs);
    if (rc == CAIRN_OK) {
        cairn_info("sched", "schedule %s: restore drill of %s passed in %.1fs", c->name, name,
                   secs);
    } else {
        metrics_add(s->m.drill_failures, c->name, 1);
        cairn_error("sched", "schedule %s: restore drill of %s FAILED after %.1fs: %s", c->name,
                    name[0] ? name : "(none)", secs, err.msg);
    }
    snprintf(note->backup, sizeof(note->backup), "%s", name);
    snprintf(note->error, sizeof(note->error), "%s", rc == CAIRN_OK ? "" : err.msg);
    note->ok = rc == CAIRN_OK;
    note->started = started;
    note->finished = (int64_t)time(NULL);
    note->ran = 1;
    return CAIRN_OK;
}

void sched_drill_notify(struct cairn_sched *s, const struct cairn_schedule_cfg *c,
                        const struct drill_note *note)
{
    const struct cairn_hooks_cfg *h = &c->hooks;
    if (!note->ran || h->webhook == NULL || (note->ok && h->webhook_on != 2))
        return;
    struct hook_report r = {"drill",
                            c->name,
                            note->backup,
                            note->ok ? "success" : "failure",
                            0,
                            note->ok ? NULL : note->error,
                            note->started,
                            note->finished};
    struct cairn_err err;
    if (hook_webhook(h->webhook, &r, &s->abort, &err) != CAIRN_OK) {
        metrics_add(s->m.webhook_failures, c->name, 1);
        cairn_error("sched", "schedule %s: %s", c->name, err.msg);
    }
}
