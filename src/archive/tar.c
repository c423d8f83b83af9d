/* The tar layer: a Go-identical writer and a Go-compatible streaming reader, for the snapshot
 * archive and the InfluxDB shard streams alike (docs/PERFORMANCE.md, "One tar implementation",
 * has the measurement that kept this one and dropped libarchive).
 *
 * Why not libarchive: the archive's acceptance rules are Go archive/tar's, and libarchive
 * differs where it matters here. It silently merges PAX global headers (Go returns them as
 * entries, so snapshots reject them), it reads past the end marker to skip the record padding
 * (we must count every byte after the marker for the "N unread uncompressed bytes remain"
 * rule), its error texts are not Go's, and its writer formats numeric fields differently from
 * Go's. A few hundred lines following Go give byte-exact control. */
#include "archive/tar.h"
#include "archive/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/util.h"

/* Header field offsets and widths (POSIX ustar; GNU and star reuse the same first 345 bytes). */
enum {
    OFF_NAME = 0,
    LEN_NAME = 100,
    OFF_MODE = 100,
    OFF_UID = 108,
    OFF_GID = 116,
    LEN_ID = 8,
    OFF_SIZE = 124,
    OFF_MTIME = 136,
    LEN_NUM12 = 12,
    OFF_CHKSUM = 148,
    LEN_CHKSUM = 8,
    OFF_TYPE = 156,
    OFF_MAGIC = 257,
    OFF_VERSION = 263,
    OFF_UNAME = 265,
    OFF_GNAME = 297,
    LEN_OWNER = 32,
    OFF_DEVMAJOR = 329,
    OFF_DEVMINOR = 337,
    OFF_PREFIX = 345,
    LEN_PREFIX = 155,
    /* star: prefix is 131 bytes, then atime and ctime, trailer "tar\0" at 508 */
    LEN_STAR_PREFIX = 131,
    OFF_STAR_ATIME = 476,
    OFF_STAR_CTIME = 488,
    OFF_STAR_TRAILER = 508,
    /* GNU: atime and ctime where ustar has its prefix */
    OFF_GNU_ATIME = 345,
    OFF_GNU_CTIME = 357,
    OFF_GNU_REALSIZE = 483, /* old GNU sparse: the expanded size */
};

static const uint8_t zero_block[TAR_BLOCK];

/* ---------------------------------------------------------------- writer */

/* Go's fitsInOctal: x >= 0 and it fits len-1 digits (room for the NUL). */
static int fits_octal(size_t len, int64_t x)
{
    return x >= 0 && (len >= 22 || (uint64_t)x >> (3 * (len - 1)) == 0);
}

/* Go's formatter.formatOctal: zero padded, leaving room for a NUL; 0 when it does not fit. */
static void put_octal(uint8_t *b, size_t len, int64_t x)
{
    char digits[32];
    if (!fits_octal(len, x))
        x = 0;
    int n = snprintf(digits, sizeof(digits), "%0*llo", (int)(len - 1), (unsigned long long)x);
    memcpy(b, digits, (size_t)n);
    b[n] = 0;
}

/* Go's formatter.formatString: as much as fits, NUL-terminated when there is room. */
static void put_string(uint8_t *b, size_t len, const char *s, size_t slen)
{
    memcpy(b, s, slen < len ? slen : len);
    if (slen < len)
        b[slen] = 0;
}

static void header_checksum(uint8_t blk[TAR_BLOCK])
{
    uint64_t sum = 0;
    for (size_t i = 0; i < TAR_BLOCK; i++)
        sum += (i >= OFF_CHKSUM && i < OFF_CHKSUM + LEN_CHKSUM) ? ' ' : blk[i];
    put_octal(blk + OFF_CHKSUM, 7, (int64_t)sum); /* 6 digits and a NUL */
    blk[OFF_CHKSUM + 7] = ' ';
}

/* One header block as Go's templateV7Plus fills it. m NULL: a PAX record file's header
 * (writeRawFile: mode, ids and mtime zero, no device fields). */
static void header_fill(uint8_t blk[TAR_BLOCK], const char *name, const char *prefix, char type,
                        uint64_t size, const struct tar_member *m)
{
    memset(blk, 0, TAR_BLOCK);
    put_string(blk + OFF_NAME, LEN_NAME, name, strlen(name));
    put_octal(blk + OFF_MODE, LEN_ID, m ? (int64_t)m->mode : 0);
    put_octal(blk + OFF_UID, LEN_ID, 0);
    put_octal(blk + OFF_GID, LEN_ID, 0);
    put_octal(blk + OFF_SIZE, LEN_NUM12, size > TAR_MAX_OCTAL_SIZE ? 0 : (int64_t)size);
    put_octal(blk + OFF_MTIME, LEN_NUM12, m ? m->mtime : 0);
    blk[OFF_TYPE] = (uint8_t)type;
    memcpy(blk + OFF_MAGIC,
           "ustar\0"
           "00",
           8);
    if (m != NULL) {
        if (m->uname != NULL)
            put_string(blk + OFF_UNAME, LEN_OWNER, m->uname, strlen(m->uname));
        if (m->gname != NULL)
            put_string(blk + OFF_GNAME, LEN_OWNER, m->gname, strlen(m->gname));
        put_octal(blk + OFF_DEVMAJOR, LEN_ID, 0);
        put_octal(blk + OFF_DEVMINOR, LEN_ID, 0);
    }
    if (prefix != NULL)
        put_string(blk + OFF_PREFIX, LEN_PREFIX, prefix, strlen(prefix));
    header_checksum(blk);
}

void tar_header_format(uint8_t blk[TAR_BLOCK], const char *name, char typeflag, uint64_t size,
                       int64_t mtime, int file_defaults)
{
    struct tar_member m = {name, size, mtime > 0 ? mtime : 0, 0600, NULL, NULL};
    header_fill(blk, name, NULL, typeflag, size, file_defaults ? &m : NULL);
}

void tar_writer_init(struct tar_writer *t, struct cairn_writer *out, int64_t mtime)
{
    memset(t, 0, sizeof(*t));
    t->out = out;
    t->mtime = mtime;
}

static int is_ascii_n(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            return 0;
    return 1;
}

/* Owner names are ours (never a PAX record): ASCII, at most the field's 32 bytes. */
static int owner_fits(const char *s)
{
    return s == NULL || (strlen(s) <= LEN_OWNER && is_ascii_n(s, strlen(s)));
}

/* Go's splitUSTARPath: the cut (a '/') that leaves a prefix of at most 155 bytes and a name of
 * 1 to 100; 0 when there is none. */
static size_t split_ustar(const char *name, size_t len)
{
    size_t n = len;
    if (len <= LEN_NAME || !is_ascii_n(name, len))
        return 0;
    if (n > LEN_PREFIX + 1)
        n = LEN_PREFIX + 1;
    else if (name[n - 1] == '/')
        n--;
    size_t i = n;
    while (i > 0 && name[i - 1] != '/')
        i--;
    if (i <= 1) /* no '/', or only at the start */
        return 0;
    i--; /* at the '/' */
    size_t nlen = len - i - 1;
    return nlen > LEN_NAME || nlen == 0 || i > LEN_PREFIX ? 0 : i;
}

/* Go's toASCII: the name without its non-ASCII bytes, for header fields PAX overrides. */
static char *to_ascii(const char *s)
{
    char *o = xmalloc(strlen(s) + 1), *p = o;
    for (; *s; s++)
        if ((unsigned char)*s < 0x80)
            *p++ = *s;
    *p = 0;
    return o;
}

/* Go's formatPAXRecord: "<len> <key>=<value>\n", len counting itself. */
static void pax_record(struct buf *b, const char *k, const char *v)
{
    char num[24];
    size_t base = strlen(k) + strlen(v) + 3; /* ' ', '=' and '\n' */
    size_t size = base + (size_t)snprintf(num, sizeof(num), "%zu", base);
    size_t actual = base + (size_t)snprintf(num, sizeof(num), "%zu", size);
    buf_printf(b, "%zu %s=%s\n", actual, k, v); /* actual: the length grew a digit */
}

/* Go's writePAXHeader: the records in an 'x' member named dir/PaxHeaders.0/file. */
static int write_pax(struct tar_writer *t, const char *name, const struct buf *recs,
                     struct cairn_err *err)
{
    if (recs->len > TAR_MAX_SPECIAL)
        return cairn_err_set(err, CAIRN_E_INVALID, TAR_ERR_TOO_LONG);
    const char *slash = strrchr(name, '/');
    char *joined = slash ? xasprintf("%.*s/PaxHeaders.0/%s", (int)(slash - name), name, slash + 1)
                         : xasprintf("PaxHeaders.0/%s", name);
    char *raw = to_ascii(joined);
    size_t n = strlen(raw);
    if (n > LEN_NAME)
        n = LEN_NAME;
    while (n > 0 && raw[n - 1] == '/')
        n--;
    raw[n] = 0;
    uint8_t blk[TAR_BLOCK];
    header_fill(blk, raw, NULL, 'x', recs->len, NULL);
    free(joined);
    free(raw);
    size_t pad = (TAR_BLOCK - recs->len % TAR_BLOCK) % TAR_BLOCK;
    int rc = cairn_writer_write(t->out, blk, TAR_BLOCK, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_write(t->out, recs->p, recs->len, err);
    if (rc == CAIRN_OK && pad > 0)
        rc = cairn_writer_write(t->out, zero_block, pad, err);
    return rc;
}

/* Go's Writer.WriteHeader for a regular file: USTAR when every field fits (the name perhaps
 * split into prefix and name), else PAX. */
int tar_writer_add(struct tar_writer *t, const struct tar_member *m, struct cairn_err *err)
{
    if (t->open)
        return cairn_err_set(err, CAIRN_E_INTERNAL, "tar: member \"%s\" begun inside another",
                             m->name);
    if (!owner_fits(m->uname) || !owner_fits(m->gname))
        return cairn_err_set(err, CAIRN_E_INTERNAL, "tar: owner name does not fit USTAR");
    size_t nlen = strlen(m->name);
    int long_name = nlen > LEN_NAME || !is_ascii_n(m->name, nlen);
    size_t cut = long_name ? split_ustar(m->name, nlen) : 0;
    int size_ok = m->size <= TAR_MAX_OCTAL_SIZE, mtime_ok = fits_octal(LEN_NUM12, m->mtime);
    uint8_t blk[TAR_BLOCK];
    int rc;
    if ((!long_name || cut > 0) && size_ok && mtime_ok) {
        char *prefix = cut ? xasprintf("%.*s", (int)cut, m->name) : NULL;
        header_fill(blk, m->name + (cut ? cut + 1 : 0), prefix, '0', m->size, m);
        free(prefix);
    } else {
        struct buf recs = {0};
        char num[24];
        if (!mtime_ok) {
            snprintf(num, sizeof(num), "%lld", (long long)m->mtime);
            pax_record(&recs, "mtime", num);
        }
        if (long_name)
            pax_record(&recs, "path", m->name);
        if (!size_ok) {
            snprintf(num, sizeof(num), "%llu", (unsigned long long)m->size);
            pax_record(&recs, "size", num);
        }
        rc = write_pax(t, m->name, &recs, err);
        buf_free(&recs);
        if (rc != CAIRN_OK)
            return rc;
        char *ascii = to_ascii(m->name);
        header_fill(blk, ascii, NULL, '0', m->size, m);
        free(ascii);
    }
    if ((rc = cairn_writer_write(t->out, blk, TAR_BLOCK, err)) != CAIRN_OK)
        return rc;
    t->remaining = m->size;
    t->written = 0;
    t->open = 1;
    return CAIRN_OK;
}

int tar_writer_begin(struct tar_writer *t, const char *name, uint64_t size, struct cairn_err *err)
{
    struct tar_member m = {name, size, t->mtime > 0 ? t->mtime : 0, 0600, NULL, NULL};
    return tar_writer_add(t, &m, err);
}

int tar_writer_data(struct tar_writer *t, const void *buf, size_t len, struct cairn_err *err)
{
    if (len > t->remaining)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "tar: member data exceeds its declared size by %llu bytes",
                             (unsigned long long)(len - t->remaining));
    t->remaining -= len;
    t->written += len;
    return cairn_writer_write(t->out, buf, len, err);
}

int tar_writer_end(struct tar_writer *t, struct cairn_err *err)
{
    if (t->remaining != 0)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "tar: member ended after %llu bytes, %llu short of its size",
                             (unsigned long long)t->written, (unsigned long long)t->remaining);
    t->open = 0;
    size_t pad = (size_t)((TAR_BLOCK - t->written % TAR_BLOCK) % TAR_BLOCK);
    return pad ? cairn_writer_write(t->out, zero_block, pad, err) : CAIRN_OK;
}

int tar_writer_finish(struct tar_writer *t, struct cairn_err *err)
{
    int rc = cairn_writer_write(t->out, zero_block, TAR_BLOCK, err);
    return rc != CAIRN_OK ? rc : cairn_writer_write(t->out, zero_block, TAR_BLOCK, err);
}

/* ---------------------------------------------------------------- reader */

/* The reader pulls src through one buffer. Without read-ahead it fetches only bytes the
 * headers say belong to the archive (limit): the current member's data and padding and the
 * next header block, or the second block of an end marker. So a small member costs one read
 * of src, and nothing after the end marker is ever taken from src. */
#define READ_BUF CAIRN_IO_BUFSIZE

struct tar_reader {
    struct cairn_reader *src;
    uint8_t *buf; /* READ_BUF bytes; [off, len) fetched but not consumed */
    size_t off, len;
    uint64_t pos;   /* stream offset consumed */
    uint64_t limit; /* stream offset src may be read up to; UINT64_MAX with read-ahead */
    int ahead, whole_padding;
    uint8_t blk[TAR_BLOCK];
    uint64_t remaining; /* data bytes left in the current member */
    uint64_t pad;       /* padding after them */
    int ended;
    struct tar_entry ent;
    /* PAX 'x' and GNU long-name state carried to the next real header */
    char *pax_path;
    int pax_path_set;
    int64_t pax_size;
    int pax_size_set;
    int64_t pax_mtime;
    int pax_mtime_set;
    int pax_sparse;
    char *pax_sparse_name;   /* GNU.sparse.name (PAX sparse 1.0): the member's real name */
    int64_t pax_sparse_size; /* GNU.sparse.realsize (1.0) or GNU.sparse.size (0.x) */
    char *long_name;
};

struct tar_reader *tar_reader_new(struct cairn_reader *src, unsigned flags)
{
    struct tar_reader *t = xcalloc(1, sizeof(*t));
    t->src = src;
    t->buf = xmalloc(READ_BUF);
    t->ahead = (flags & TAR_READ_AHEAD) != 0;
    t->whole_padding = (flags & TAR_READ_WHOLE_PADDING) != 0;
    t->limit = t->ahead ? UINT64_MAX : TAR_BLOCK; /* the first header */
    t->pax_sparse_size = -1;
    return t;
}

static void clear_pax(struct tar_reader *t)
{
    free(t->pax_path);
    t->pax_path = NULL;
    t->pax_path_set = 0;
    t->pax_size_set = 0;
    t->pax_mtime_set = 0;
    t->pax_sparse = 0;
    t->pax_sparse_size = -1;
    free(t->pax_sparse_name);
    t->pax_sparse_name = NULL;
}

static void clear_meta_headers(struct tar_reader *t)
{
    clear_pax(t);
    free(t->long_name);
    t->long_name = NULL;
}

void tar_reader_free(struct tar_reader *t)
{
    if (t == NULL)
        return;
    clear_meta_headers(t);
    free(t->ent.name);
    free(t->buf);
    free(t);
}

/* The archive certainly goes on for n bytes after what is consumed (then comes a header
 * block, or the end): src may be read that far. */
static void extend_limit(struct tar_reader *t, uint64_t n)
{
    if (!t->ahead)
        t->limit = t->pos + n;
}

/* Up to n bytes (n > 0) into dst; *got == 0 only at the end of src. Buffered bytes first;
 * with none, a large request is read straight into dst (no copy), a small one refills the
 * buffer with as much as limit allows. */
static int pull(struct tar_reader *t, uint8_t *dst, size_t n, size_t *got, struct cairn_err *err)
{
    int rc;
    if (t->off == t->len) {
        uint64_t room = t->limit - t->pos; /* the buffer is empty: pos is what was fetched */
        if (room < n)
            n = (size_t)room; /* only after a format error: never read past what is known */
        if (n == 0) {
            *got = 0;
            return CAIRN_OK;
        }
        if (n >= READ_BUF || room == n) {
            if ((rc = cairn_reader_read(t->src, dst, n, got, err)) != CAIRN_OK)
                return rc;
            t->pos += *got;
            return CAIRN_OK;
        }
        size_t want = room < READ_BUF ? (size_t)room : READ_BUF;
        t->off = t->len = 0;
        if ((rc = cairn_reader_read(t->src, t->buf, want, &t->len, err)) != CAIRN_OK)
            return rc;
        if (t->len == 0) {
            *got = 0;
            return CAIRN_OK;
        }
    }
    size_t k = t->len - t->off < n ? t->len - t->off : n;
    memcpy(dst, t->buf + t->off, k);
    t->off += k;
    t->pos += k;
    *got = k;
    return CAIRN_OK;
}

/* Read up to len bytes; *got < len only at end of stream. */
static int read_upto(struct tar_reader *t, void *buf, size_t len, size_t *got,
                     struct cairn_err *err)
{
    size_t off = 0;
    while (off < len) {
        size_t n;
        int rc = pull(t, (uint8_t *)buf + off, len - off, &n, err);
        if (rc != CAIRN_OK)
            return rc;
        if (n == 0)
            break;
        off += n;
    }
    *got = off;
    return CAIRN_OK;
}

/* Skip n bytes of member data; running out is "unexpected EOF" (Go's discard). */
static int skip_data(struct tar_reader *t, uint64_t n, struct cairn_err *err)
{
    uint8_t buf[4096];
    while (n > 0) {
        size_t want = n < sizeof(buf) ? (size_t)n : sizeof(buf), got;
        int rc = read_upto(t, buf, want, &got, err);
        if (rc != CAIRN_OK)
            return rc;
        if (got < want)
            return cairn_err_set(err, CAIRN_E_CORRUPT, TAR_ERR_UNEXPECTED_EOF);
        n -= got;
    }
    return CAIRN_OK;
}

/* ---- Go's header field parsers ---- */

struct parser {
    int err;
};

/* parseString: up to the first NUL. Returns a malloc'd copy. */
static char *parse_string(const uint8_t *b, size_t len)
{
    const uint8_t *nul = memchr(b, 0, len);
    size_t n = nul ? (size_t)(nul - b) : len;
    char *s = xmalloc(n + 1);
    memcpy(s, b, n);
    s[n] = 0;
    return s;
}

/* parseOctal: trim spaces and NULs at both ends, cut at a NUL, then strict base-8. */
static int64_t parse_octal(struct parser *p, const uint8_t *b, size_t len)
{
    while (len > 0 && (b[0] == ' ' || b[0] == 0))
        b++, len--;
    while (len > 0 && (b[len - 1] == ' ' || b[len - 1] == 0))
        len--;
    const uint8_t *nul = memchr(b, 0, len);
    if (nul != NULL)
        len = (size_t)(nul - b);
    if (len == 0)
        return 0;
    uint64_t x = 0;
    for (size_t i = 0; i < len; i++) {
        if (b[i] < '0' || b[i] > '7' || x >> 61 != 0) {
            p->err = 1;
            return 0;
        }
        x = x << 3 | (uint64_t)(b[i] - '0');
    }
    return (int64_t)x;
}

/* parseNumeric: base-256 two's complement when the top bit is set, else octal. */
static int64_t parse_numeric(struct parser *p, const uint8_t *b, size_t len)
{
    if (len > 0 && (b[0] & 0x80) != 0) {
        uint8_t inv = (b[0] & 0x40) ? 0xff : 0;
        uint64_t x = 0;
        for (size_t i = 0; i < len; i++) {
            uint8_t c = b[i] ^ inv;
            if (i == 0)
                c &= 0x7f;
            if (x >> 56 != 0) {
                p->err = 1;
                return 0;
            }
            x = x << 8 | c;
        }
        if (x >> 63 != 0) {
            p->err = 1;
            return 0;
        }
        return inv ? (int64_t)~x : (int64_t)x;
    }
    return parse_octal(p, b, len);
}

enum fmt { FMT_UNKNOWN, FMT_V7, FMT_USTAR, FMT_GNU, FMT_STAR };

/* Go's block.getFormat: the checksum (unsigned or signed sum) must match, then the magic picks
 * the dialect. */
static enum fmt block_format(const uint8_t *b)
{
    struct parser p = {0};
    int64_t value = parse_octal(&p, b + OFF_CHKSUM, LEN_CHKSUM);
    int64_t usum = 0, ssum = 0;
    for (size_t i = 0; i < TAR_BLOCK; i++) {
        uint8_t c = (i >= OFF_CHKSUM && i < OFF_CHKSUM + LEN_CHKSUM) ? ' ' : b[i];
        usum += c;
        ssum += (int8_t)c;
    }
    if (p.err || (value != usum && value != ssum))
        return FMT_UNKNOWN;
    if (memcmp(b + OFF_MAGIC, "ustar\0", 6) == 0)
        return memcmp(b + OFF_STAR_TRAILER, "tar\0", 4) == 0 ? FMT_STAR : FMT_USTAR;
    if (memcmp(b + OFF_MAGIC, "ustar ", 6) == 0 && memcmp(b + OFF_VERSION, " \0", 2) == 0)
        return FMT_GNU;
    return FMT_V7;
}

/* Go's readHeader for one non-zero block: name (with prefix), typeflag, size and mtime. */
static int parse_header(const uint8_t *b, struct tar_entry *e, int64_t *size, struct cairn_err *err)
{
    enum fmt f = block_format(b);
    if (f == FMT_UNKNOWN)
        return cairn_err_set(err, CAIRN_E_CORRUPT, TAR_ERR_HEADER);
    struct parser p = {0};
    e->typeflag = (char)b[OFF_TYPE];
    e->name = parse_string(b + OFF_NAME, LEN_NAME);
    *size = parse_numeric(&p, b + OFF_SIZE, LEN_NUM12);
    (void)parse_numeric(&p, b + OFF_MODE, LEN_ID);
    (void)parse_numeric(&p, b + OFF_UID, LEN_ID);
    (void)parse_numeric(&p, b + OFF_GID, LEN_ID);
    e->mtime = parse_numeric(&p, b + OFF_MTIME, LEN_NUM12);
    char *prefix = NULL;
    if (f != FMT_V7) {
        (void)parse_numeric(&p, b + OFF_DEVMAJOR, LEN_ID);
        (void)parse_numeric(&p, b + OFF_DEVMINOR, LEN_ID);
        if (f == FMT_USTAR) {
            prefix = parse_string(b + OFF_PREFIX, LEN_PREFIX);
        } else if (f == FMT_STAR) {
            prefix = parse_string(b + OFF_PREFIX, LEN_STAR_PREFIX);
            (void)parse_numeric(&p, b + OFF_STAR_ATIME, LEN_NUM12);
            (void)parse_numeric(&p, b + OFF_STAR_CTIME, LEN_NUM12);
        } else {
            /* GNU: atime/ctime are parsed skeptically; if they do not parse, pre-Go1.8
             * writers put a ustar prefix there (golang.org/issue/12594). */
            struct parser p2 = {0};
            if (b[OFF_GNU_ATIME] != 0)
                (void)parse_numeric(&p2, b + OFF_GNU_ATIME, LEN_NUM12);
            if (b[OFF_GNU_CTIME] != 0)
                (void)parse_numeric(&p2, b + OFF_GNU_CTIME, LEN_NUM12);
            if (p2.err) {
                char *s = parse_string(b + OFF_PREFIX, LEN_PREFIX);
                if (is_ascii_n(s, strlen(s)))
                    prefix = s;
                else
                    free(s);
            }
        }
    }
    if (prefix != NULL && prefix[0] != 0) {
        char *full = xasprintf("%s/%s", prefix, e->name);
        free(e->name);
        e->name = full;
    }
    free(prefix);
    if (p.err)
        return cairn_err_set(err, CAIRN_E_CORRUPT, TAR_ERR_HEADER);
    return CAIRN_OK;
}

/* Go's isHeaderOnlyType: links, devices, directories and FIFOs carry no data. */
static int header_only(char type)
{
    return type == '1' || type == '2' || type == '3' || type == '4' || type == '5' || type == '6';
}

/* The entry's data: none for header-only types, else size bytes plus padding to a block.
 * Called for the raw header (to skip a PAX/GNU body) and again after merging PAX. */
static int set_data_size(struct tar_reader *t, int64_t size, struct cairn_err *err)
{
    if (header_only(t->ent.typeflag))
        size = 0;
    if (size < 0)
        return cairn_err_set(err, CAIRN_E_CORRUPT, TAR_ERR_HEADER);
    t->remaining = (uint64_t)size;
    t->pad = (TAR_BLOCK - t->remaining % TAR_BLOCK) % TAR_BLOCK;
    t->ent.size = (uint64_t)size;
    extend_limit(t, t->remaining + t->pad + TAR_BLOCK);
    return CAIRN_OK;
}

/* Go's readSpecialFile: the whole body of a PAX or GNU long-name member, at most 1 MiB. */
static int read_special(struct tar_reader *t, uint8_t **out, size_t *out_len, struct cairn_err *err)
{
    if (t->remaining > TAR_MAX_SPECIAL)
        return cairn_err_set(err, CAIRN_E_CORRUPT, TAR_ERR_TOO_LONG);
    size_t n = (size_t)t->remaining, got;
    uint8_t *buf = xmalloc(n + 1);
    int rc = read_upto(t, buf, n, &got, err);
    if (rc == CAIRN_OK && got < n)
        rc = cairn_err_set(err, CAIRN_E_CORRUPT, TAR_ERR_UNEXPECTED_EOF);
    if (rc != CAIRN_OK) {
        free(buf);
        return rc;
    }
    buf[n] = 0;
    t->remaining = 0;
    *out = buf;
    *out_len = n;
    return CAIRN_OK;
}

/* strconv.ParseInt(s, 10, 64) over [s, s+len). */
static int parse_dec(const char *s, size_t len, int64_t *out)
{
    size_t i = 0;
    int neg = 0;
    if (len > 0 && (s[0] == '+' || s[0] == '-'))
        neg = s[0] == '-', i = 1;
    if (i == len)
        return -1;
    uint64_t x = 0;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        if (x > (UINT64_MAX - 9) / 10)
            return -1;
        x = x * 10 + (uint64_t)(s[i] - '0');
    }
    if (x > (uint64_t)INT64_MAX + (uint64_t)neg)
        return -1;
    *out = neg ? (int64_t)(0 - x) : (int64_t)x;
    return 0;
}

/* Go's parsePAXTime: seconds, optionally '.' and decimal digits; *secs is the whole second at
 * or before it (a negative time with a fraction goes one further). 0 when malformed. */
static int parse_pax_time(const char *v, size_t len, int64_t *secs)
{
    const char *dot = memchr(v, '.', len);
    size_t slen = dot ? (size_t)(dot - v) : len;
    int frac = 0;
    if (parse_dec(v, slen, secs) != 0)
        return 0;
    for (size_t i = slen + (dot ? 1 : 0); i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return 0;
        frac |= v[i] != '0';
    }
    if (frac && v[0] == '-' && *secs > INT64_MIN)
        --*secs;
    return 1;
}

static int has_prefix(const char *s, size_t len, const char *p)
{
    size_t n = strlen(p);
    return len >= n && memcmp(s, p, n) == 0;
}

static int keyeq(const char *k, size_t klen, const char *name)
{
    return klen == strlen(name) && memcmp(k, name, klen) == 0;
}

/* Go's parsePAX + parsePAXRecord + validPAXRecord, and the parts of mergePAX that can fail.
 * Path, size and mtime are kept; other records are validated as Go does. A later
 * 'x' member replaces (does not extend) the records of an earlier one, as in Go. */
static int parse_pax(struct tar_reader *t, const uint8_t *buf, size_t len, int global,
                     struct cairn_err *err)
{
    const char *s = (const char *)buf;
    if (!global)
        clear_pax(t);
    while (len > 0) {
        const char *sp = memchr(s, ' ', len);
        int64_t n;
        if (sp == NULL || parse_dec(s, (size_t)(sp - s), &n) != 0 || n < 5 || (uint64_t)n > len)
            goto bad;
        size_t nlen = (size_t)(sp - s) + 1;
        if ((uint64_t)n <= nlen)
            goto bad;
        const char *rec = sp + 1;
        size_t reclen = (size_t)n - nlen - 1; /* without the final newline */
        if (rec[reclen] != '\n')
            goto bad;
        const char *eq = memchr(rec, '=', reclen);
        if (eq == NULL || eq == rec)
            goto bad;
        const char *k = rec, *v = eq + 1;
        size_t klen = (size_t)(eq - rec), vlen = reclen - klen - 1;
        int is_str = keyeq(k, klen, "path") || keyeq(k, klen, "linkpath") ||
                     keyeq(k, klen, "uname") || keyeq(k, klen, "gname");
        if (is_str ? memchr(v, 0, vlen) != NULL : memchr(k, 0, klen) != NULL)
            goto bad;
        s += n;
        len -= (size_t)n;
        if (global || vlen == 0)
            continue; /* an empty value keeps the header's own field */
        int64_t num;
        if (keyeq(k, klen, "path")) {
            free(t->pax_path);
            t->pax_path = xmalloc(vlen + 1);
            memcpy(t->pax_path, v, vlen);
            t->pax_path[vlen] = 0;
            t->pax_path_set = 1;
        } else if (keyeq(k, klen, "size")) {
            if (parse_dec(v, vlen, &num) != 0)
                goto bad;
            t->pax_size = num;
            t->pax_size_set = 1;
        } else if (keyeq(k, klen, "uid") || keyeq(k, klen, "gid")) {
            if (parse_dec(v, vlen, &num) != 0)
                goto bad;
        } else if (keyeq(k, klen, "atime") || keyeq(k, klen, "mtime") || keyeq(k, klen, "ctime")) {
            if (!parse_pax_time(v, vlen, &num))
                goto bad;
            if (keyeq(k, klen, "mtime")) {
                t->pax_mtime = num;
                t->pax_mtime_set = 1;
            }
        } else if (has_prefix(k, klen, "GNU.sparse.")) {
            t->pax_sparse = 1;
            if ((keyeq(k, klen, "GNU.sparse.realsize") || keyeq(k, klen, "GNU.sparse.size")) &&
                parse_dec(v, vlen, &num) == 0)
                t->pax_sparse_size = num;
            if (keyeq(k, klen, "GNU.sparse.name")) {
                free(t->pax_sparse_name);
                t->pax_sparse_name = xmalloc(vlen + 1);
                memcpy(t->pax_sparse_name, v, vlen);
                t->pax_sparse_name[vlen] = 0;
            }
        }
    }
    return CAIRN_OK;
bad:
    return cairn_err_set(err, CAIRN_E_CORRUPT, TAR_ERR_HEADER);
}

/* Sparse members (old GNU 'S', or PAX GNU.sparse.* records) would expand holes a few bytes
 * describe into any size; no snapshot or shard writer makes them. Damaged or hostile input, so
 * CAIRN_E_CORRUPT (exit 3), naming the member by its real name; *ent says what was declared. */
static int refuse_sparse(struct tar_reader *t, int64_t size, const struct tar_entry **ent,
                         struct cairn_err *err)
{
    struct parser p = {0};
    if (t->ent.typeflag == 'S')
        size = parse_numeric(&p, t->blk + OFF_GNU_REALSIZE, LEN_NUM12);
    else if (t->pax_sparse_size >= 0)
        size = t->pax_sparse_size;
    if (t->pax_sparse_name != NULL) {
        free(t->ent.name);
        t->ent.name = xstrdup(t->pax_sparse_name);
    }
    clear_meta_headers(t);
    t->ent.sparse = 1;
    t->ent.size = size > 0 ? (uint64_t)size : 0;
    *ent = &t->ent;
    char q[160];
    archive_quote(t->ent.name, q, sizeof(q));
    return cairn_err_set(err, CAIRN_E_CORRUPT,
                         "archive/tar: sparse member %s refused (snapshots have no sparse "
                         "members and cairn does not expand them)",
                         q);
}

/* Finish the current member (unread data, then padding) and read the next header block into
 * t->blk; t->ended when the archive ends there. Go's ends: EOF at a header boundary or inside
 * the padding (unless TAR_READ_WHOLE_PADDING), one zero block then EOF, or two zero blocks. */
static int next_block(struct tar_reader *t, struct cairn_err *err)
{
    int rc;
    size_t got;
    if ((rc = skip_data(t, t->remaining, err)) != CAIRN_OK)
        return rc;
    t->remaining = 0;
    if (t->pad > 0) {
        /* Go's tryReadFull: a stream ending inside the padding is a normal end. */
        if ((rc = read_upto(t, t->blk, (size_t)t->pad, &got, err)) != CAIRN_OK)
            return rc;
        if (got < t->pad && t->whole_padding)
            return cairn_err_set(err, CAIRN_E_CORRUPT, TAR_ERR_UNEXPECTED_EOF);
        t->ended = got < t->pad;
        t->pad = 0;
        if (t->ended)
            return CAIRN_OK;
    }
    if ((rc = read_upto(t, t->blk, TAR_BLOCK, &got, err)) != CAIRN_OK)
        return rc;
    if (got == 0) {
        t->ended = 1; /* EOF at a header boundary: Go treats it as the end */
        return CAIRN_OK;
    }
    if (got < TAR_BLOCK)
        return cairn_err_set(err, CAIRN_E_CORRUPT, TAR_ERR_UNEXPECTED_EOF);
    if (memcmp(t->blk, zero_block, TAR_BLOCK) != 0)
        return CAIRN_OK;
    extend_limit(t, TAR_BLOCK); /* the end marker's second block, if any */
    if ((rc = read_upto(t, t->blk, TAR_BLOCK, &got, err)) != CAIRN_OK)
        return rc;
    if (got == 0 || (got == TAR_BLOCK && memcmp(t->blk, zero_block, TAR_BLOCK) == 0)) {
        t->ended = 1;
        return CAIRN_OK;
    }
    return cairn_err_set(err, CAIRN_E_CORRUPT,
                         got < TAR_BLOCK ? TAR_ERR_UNEXPECTED_EOF : TAR_ERR_HEADER);
}

int tar_reader_next(struct tar_reader *t, const struct tar_entry **ent, struct cairn_err *err)
{
    int rc;
    *ent = NULL;
    for (;;) {
        if (t->ended)
            return CAIRN_OK;
        if ((rc = next_block(t, err)) != CAIRN_OK)
            return rc;
        if (t->ended)
            return CAIRN_OK;
        free(t->ent.name);
        t->ent.name = NULL;
        t->ent.sparse = 0;
        int64_t size = 0;
        if ((rc = parse_header(t->blk, &t->ent, &size, err)) != CAIRN_OK)
            return rc;
        if ((rc = set_data_size(t, size, err)) != CAIRN_OK)
            return rc;

        char type = t->ent.typeflag;
        if (type == 'x' || type == 'g') {
            uint8_t *body;
            size_t blen;
            if ((rc = read_special(t, &body, &blen, err)) != CAIRN_OK)
                return rc;
            rc = parse_pax(t, body, blen, type == 'g', err);
            free(body);
            if (rc != CAIRN_OK)
                return rc;
            if (type == 'x')
                continue;
            /* A global header is returned as an entry (with no data), as Go does; the
             * snapshot reader then rejects it. */
            t->ent.size = 0;
            *ent = &t->ent;
            return CAIRN_OK;
        }
        if (type == 'L' || type == 'K') {
            uint8_t *body;
            size_t blen;
            if ((rc = read_special(t, &body, &blen, err)) != CAIRN_OK)
                return rc;
            if (type == 'L') {
                free(t->long_name);
                t->long_name = parse_string(body, blen);
            }
            free(body);
            continue;
        }
        /* mergePAX, GNU long name, then the legacy NUL typeflag. */
        if (t->pax_path_set) {
            free(t->ent.name);
            t->ent.name = xstrdup(t->pax_path);
        }
        if (t->pax_size_set)
            size = t->pax_size;
        if (t->pax_mtime_set)
            t->ent.mtime = t->pax_mtime;
        if (t->long_name != NULL && t->long_name[0] != 0) {
            free(t->ent.name);
            t->ent.name = xstrdup(t->long_name);
        }
        /* Sparse members (old GNU 'S', or PAX GNU.sparse.* records) would expand holes a few
         * bytes describe into any size; no snapshot writer makes them. Damaged or hostile
         * input, so CAIRN_E_CORRUPT (exit 3), naming the member by its real name. */
        if (type == 'S' || t->pax_sparse)
            return refuse_sparse(t, size, ent, err);
        clear_meta_headers(t);
        if (type == 0) {
            size_t n = strlen(t->ent.name);
            t->ent.typeflag = n > 0 && t->ent.name[n - 1] == '/' ? '5' : '0';
        }
        if ((rc = set_data_size(t, size, err)) != CAIRN_OK)
            return rc;
        *ent = &t->ent;
        return CAIRN_OK;
    }
}

int tar_reader_read(struct tar_reader *t, void *buf, size_t cap, size_t *got, struct cairn_err *err)
{
    *got = 0;
    if (t->remaining == 0 || cap == 0)
        return CAIRN_OK;
    size_t want = cap < t->remaining ? cap : (size_t)t->remaining;
    size_t n;
    int rc = pull(t, buf, want, &n, err);
    if (rc != CAIRN_OK)
        return rc;
    if (n == 0)
        return cairn_err_set(err, CAIRN_E_CORRUPT, TAR_ERR_UNEXPECTED_EOF);
    t->remaining -= n;
    *got = n;
    return CAIRN_OK;
}
