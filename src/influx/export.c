/* Shard exports (request 5): a shard's files cut to a time window. TSM files go through
 * tsm_filter, so the export holds exactly the values whose time is in [start, end]: files
 * inside the window whole, files outside left out, files across its edges rewritten. influxd
 * 1.6 keeps every block that overlaps the window, so its exports carry points outside it;
 * cairn backup --start/--end cuts those out too (influx_tar_export). Other files
 * (tombstones) are copied as they are, as influxd does. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "internal.h"
#include "tsm.h"

int64_t influx_time_ns(const struct cairn_influx_time *t, int64_t if_zero)
{
    if (t->sec == CAIRN_INFLUX_ZERO_TIME && t->nsec == 0)
        return if_zero;
    if (t->sec >= INT64_MAX / 1000000000)
        return INT64_MAX;
    if (t->sec <= INT64_MIN / 1000000000)
        return INT64_MIN;
    return t->sec * 1000000000 + t->nsec;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

int influx_export_add(struct influx_tar_out *t, const char *name, int fd, int64_t mtime,
                      int64_t start, int64_t end, const char *tmpdir, struct cairn_err *err)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return cairn_err_sys(err, CAIRN_E_IO, errno, "stat '%s'", name);
    if (!ends_with(name, ".tsm")) {
        if (lseek(fd, 0, SEEK_SET) != 0)
            return cairn_err_sys(err, CAIRN_E_IO, errno, "seek '%s'", name);
        return influx_tar_add_fd(t, name, fd, (uint64_t)st.st_size, mtime, name, err);
    }
    int out = -1;
    enum tsm_verdict v;
    uint64_t size;
    int rc = tmpfile_open(tmpdir, &out, err);
    if (rc == CAIRN_OK)
        rc = tsm_filter(fd, out, start, end, tmpdir, &v, &size, err);
    if (rc != CAIRN_OK) {
        if (out >= 0)
            close(out);
        return cairn_err_wrap(err, rc, "'%s'", name);
    }
    int src = v == TSM_FILTERED ? out : fd;
    if (v == TSM_KEEP_WHOLE)
        size = (uint64_t)st.st_size;
    if (v != TSM_DROP && lseek(src, 0, SEEK_SET) != 0)
        rc = cairn_err_sys(err, CAIRN_E_IO, errno, "seek '%s'", name);
    if (rc == CAIRN_OK && v != TSM_DROP)
        rc = influx_tar_add_fd(t, name, src, size, mtime, name, err);
    close(out);
    return rc;
}

/* ---- a whole shard stream cut to the window ---- */

struct export_ctx {
    struct influx_tar_out *out;
    int64_t start, end;
    const char *tmpdir;
};

/* Each entry is spooled to a temporary file first: a TSM file's index is at its end. */
static int export_entry(void *vctx, const char *name, int64_t mtime, uint64_t size,
                        struct cairn_reader *data, struct cairn_err *err)
{
    struct export_ctx *c = vctx;
    int fd;
    int rc = tmpfile_open(c->tmpdir, &fd, err);
    if (rc != CAIRN_OK)
        return rc;
    struct cairn_writer *w = cairn_fd_writer_new(fd, 0);
    uint64_t copied = 0;
    rc = cairn_copy(data, w, &copied, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(w, err);
    cairn_writer_free(w);
    if (rc == CAIRN_OK && copied != size)
        rc = cairn_err_set(err, CAIRN_E_CORRUPT, "tar entry '%s' is truncated", name);
    if (rc == CAIRN_OK)
        rc = influx_export_add(c->out, name, fd, mtime, c->start, c->end, c->tmpdir, err);
    close(fd);
    return rc;
}

int influx_tar_export(struct cairn_reader *r, struct cairn_writer *w, int64_t start, int64_t end,
                      const char *tmpdir, struct cairn_err *err)
{
    struct export_ctx c = {influx_tar_out_new(w), start, end, tmpdir};
    int rc = influx_tar_each(r, export_entry, &c, err);
    if (rc == CAIRN_OK)
        rc = influx_tar_out_close(c.out, err);
    influx_tar_out_free(c.out);
    return rc;
}
