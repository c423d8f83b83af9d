/* Corruption campaign: thousands of random corruptions of cairn archives (gzip and zstd) and of
 * stored backups (data files and MANIFESTs in file storage), each checked by verify and by
 * extract/restore. Nothing corrupted may be accepted. The only accepted changes are those
 * that do not change the meaning, and each is accounted for by class and asserted to yield
 * byte-identical results:
 *   - compression header bytes every reader ignores (gzip FTEXT/MTIME/XFL/OS, zstd window);
 *   - tar header fields the reader ignores (mode, uid, gid, mtime, linkname, uname, gname,
 *     devmajor, devminor, header padding; checksum recomputed) and member data padding;
 *   - members reordered, or the end-of-archive zero blocks dropped (Go accepts both);
 *   - SHA256SUMS text that parses to the same list (hex letter case, the last newline);
 *   - compressed bytes that decode to the identical tar (unused bits in the encoding);
 *   - MANIFEST edits that leave the parsed JSON identical (whitespace, key order).
 * The counts are printed as "figures:" lines for docs/RELIABILITY.md. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../archive/helpers.h"
#include "cairn/storage.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

static size_t rnd_below(size_t n)
{
    return n ? (size_t)rnd() % n : 0;
}

/* ---------------------------------------------------------------- archives */

struct member {
    size_t hdr, data, size, end; /* offsets in the tar: header, data, size, end of padding */
    char name[101];
};

struct tarinfo {
    struct member m[8];
    size_t n;
    size_t body_end; /* where the end marker starts */
};

static size_t octal(const uint8_t *p, size_t n)
{
    size_t v = 0;
    for (size_t i = 0; i < n && p[i] >= '0' && p[i] <= '7'; i++)
        v = v * 8 + (size_t)(p[i] - '0');
    return v;
}

static void tar_parse(const struct bytes *t, struct tarinfo *ti)
{
    memset(ti, 0, sizeof(*ti));
    size_t off = 0;
    while (off + 512 <= t->len && t->p[off] != 0 && ti->n < 8) {
        struct member *m = &ti->m[ti->n++];
        m->hdr = off;
        memcpy(m->name, t->p + off, 100);
        m->size = octal(t->p + off + 124, 12);
        m->data = off + 512;
        m->end = m->data + (m->size + 511) / 512 * 512;
        off = m->end;
    }
    ti->body_end = off;
}

static void tar_fix_checksum(uint8_t *h)
{
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++)
        sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
    h[155] = ' ';
}

static struct bytes compress_as(enum cairn_snapshot_flavour f, const uint8_t *p, size_t len)
{
    struct cairn_err err;
    struct bytes out = {0};
    struct cairn_writer *w = f == CAIRN_SNAPSHOT_ZSTD
                                 ? cairn_zstd_writer_new(capture_new(&out), 3, 1)
                                 : cairn_gzip_writer_new(capture_new(&out), 6, 1);
    CHECK_OK(cairn_writer_write(w, p, len, &err), &err);
    CHECK_OK(cairn_writer_close(w, &err), &err);
    cairn_writer_free(w);
    return out;
}

enum klass {
    K_NONE = 0,    /* must be refused */
    K_COMP_HEADER, /* inert compression header byte */
    K_TAR_IGNORED, /* ignored tar header field or data padding */
    K_REORDER,     /* members reordered */
    K_NO_END,      /* end marker dropped */
    K_SUMS_SAME,   /* SHA256SUMS text that parses to the same list */
    K_SAME_TAR,    /* compressed bytes that still decode to the identical tar */
    K_NCLASS,
};
static const char *klass_name[K_NCLASS] = {"",
                                           "inert compression header byte",
                                           "ignored tar header field or padding",
                                           "members reordered",
                                           "end-of-archive blocks dropped",
                                           "SHA256SUMS hex letter case or last newline",
                                           "compressed bytes decoding to the identical tar"};

struct sample {
    enum cairn_snapshot_flavour f;
    struct bytes arc, tar, other_arc;
    struct tarinfo ti;
    struct bytes state;
    struct bytes meta_json; /* meta.json as verify reports it for arc */
};

static void sample_state(struct bytes *s, size_t len, uint32_t seed)
{
    uint32_t x = seed;
    for (size_t i = 0; i < len; i++) {
        x = x * 1664525u + 1013904223u;
        uint8_t c = i % 3 ? (uint8_t)(x >> 24) : (uint8_t)("raft fsm state "[i % 15]);
        bytes_add(s, &c, 1);
    }
}

static void sample_make(struct sample *s, enum cairn_snapshot_flavour f)
{
    memset(s, 0, sizeof(*s));
    s->f = f;
    sample_state(&s->state, 5000, 7);
    s->arc = write_archive(f, s->state.p, s->state.len, NULL, 1700000000);
    s->tar = inflate_all(&s->arc);
    tar_parse(&s->tar, &s->ti);
    CHECK_EQ_INT((int)s->ti.n, 3);
    struct bytes other = {0};
    sample_state(&other, 5000, 8);
    s->other_arc = write_archive(f, other.p, other.len, NULL, 1700000001);
    bytes_free(&other);
    /* What an accepted candidate's meta.json is compared with: verified once, not per case. */
    struct cairn_err err;
    struct cairn_snapshot_read_opts o = {0};
    o.tmpdir = test_tmpdir();
    struct cairn_snapshot_info info;
    memset(&info, 0, sizeof(info));
    CHECK_OK(verify_bytes(&s->arc, &o, &info, &err), &err);
    CHECK(info.meta_json_len > 0);
    bytes_add(&s->meta_json, info.meta_json, info.meta_json_len);
    cairn_snapshot_info_free(&info);
}

static void sample_free(struct sample *s)
{
    bytes_free(&s->arc);
    bytes_free(&s->tar);
    bytes_free(&s->other_arc);
    bytes_free(&s->state);
    bytes_free(&s->meta_json);
}

/* Tar header byte offsets the reader ignores (Go ignores them too): mode, uid, gid, mtime,
 * linkname, magic and version, uname, gname, devmajor, devminor and the padding; the bytes of a
 * string field after its terminating NUL (name, and prefix, which is empty: its first byte is NUL).
 */
static int tar_field_ignored(const uint8_t *h, size_t o)
{
    if (o < 100)
        return o > strnlen((const char *)h, 100);
    if (o >= 345 && o < 500)
        return o > 345;
    return (o >= 100 && o < 148) ? (o < 124 || o >= 136) : o >= 157;
}

/* One corruption of s, into out; returns the class under which acceptance is tolerable. */
static enum klass corrupt_archive(const struct sample *s, struct bytes *out, char *what,
                                  size_t wcap)
{
    const struct bytes *a = &s->arc;
    const struct tarinfo *ti = &s->ti;
    uint32_t kind = rnd() % 12;
    out->len = 0;
    if (kind <= 4) { /* compressed bytes */
        bytes_add(out, a->p, a->len);
        if (kind <= 1) { /* bit flips */
            int nflip = 1 + (int)rnd_below(3);
            int inert = 1;
            size_t offs[3];
            for (int i = 0; i < nflip; i++) {
                size_t off = offs[i] = rnd_below(a->len);
                out->p[off] ^= (uint8_t)(1u << rnd_below(8));
                inert &= s->f == CAIRN_SNAPSHOT_GZIP ? off >= 3 && off <= 9
                                                     : off == 5 && (a->p[4] & 0x20) == 0;
            }
            snprintf(what, wcap, "%d bit flip(s) in the compressed bytes at %zu, %zu, %zu", nflip,
                     offs[0], nflip > 1 ? offs[1] : 0, nflip > 2 ? offs[2] : 0);
            return inert ? K_COMP_HEADER : K_NONE;
        }
        if (kind == 2) {
            out->len = rnd_below(a->len);
            snprintf(what, wcap, "compressed bytes cut to %zu of %zu", out->len, a->len);
            return K_NONE;
        }
        if (kind == 3) { /* splice: a range of another archive over ours */
            size_t off = rnd_below(a->len), n = 1 + rnd_below(64);
            size_t src = rnd_below(s->other_arc.len);
            for (size_t i = 0; i < n && off + i < out->len && src + i < s->other_arc.len; i++)
                out->p[off + i] = s->other_arc.p[src + i];
            snprintf(what, wcap, "%zu bytes of another archive spliced at %zu", n, off);
            /* identical bytes spliced over identical bytes change nothing */
            return memcmp(out->p, a->p, a->len) == 0 ? K_COMP_HEADER : K_NONE;
        }
        uint8_t junk[16];
        for (size_t i = 0; i < sizeof(junk); i++)
            junk[i] = (uint8_t)rnd();
        size_t n = 1 + rnd_below(sizeof(junk));
        bytes_add(out, junk, n);
        snprintf(what, wcap, "%zu bytes appended", n);
        return K_NONE;
    }
    /* tar-level changes, recompressed properly so only the tar layer can catch them */
    struct bytes t = {0};
    enum klass k = K_NONE;
    const struct bytes *tar = &s->tar;
    size_t mi = rnd_below(ti->n), mj = rnd_below(ti->n);
    const struct member *m = &ti->m[mi];
    switch (kind) {
    case 5: { /* header byte flip, checksum recomputed */
        bytes_add(&t, tar->p, tar->len);
        size_t o = rnd_below(512);
        if (o >= 148 && o < 156)
            o = 124 + rnd_below(12); /* the checksum is recomputed: flip the size instead */
        t.p[m->hdr + o] ^= (uint8_t)(1u << rnd_below(8));
        tar_fix_checksum(t.p + m->hdr);
        snprintf(what, wcap, "%s header byte %zu flipped (checksum fixed)", m->name, o);
        k = tar_field_ignored(tar->p + m->hdr, o) ? K_TAR_IGNORED : K_NONE;
        if (o == 135 && t.p[m->hdr + o] == ' ') /* size field ending in space, not NUL */
            k = K_TAR_IGNORED;
        break;
    }
    case 6: { /* data byte flip (or padding) */
        bytes_add(&t, tar->p, tar->len);
        size_t o = m->data + rnd_below(m->end - m->data);
        t.p[o] ^= (uint8_t)(1u << rnd_below(8));
        snprintf(what, wcap, "%s data byte %zu flipped", m->name, o - m->data);
        k = o >= m->data + m->size ? K_TAR_IGNORED : K_NONE;
        /* Go's Sscanf("%x") reads either case: a hex letter changing case is the same sum */
        if (strcmp(m->name, "SHA256SUMS") == 0 && (t.p[o] ^ tar->p[o]) == 0x20 &&
            strchr("abcdefABCDEF", t.p[o]) != NULL && t.p[o] != 0)
            k = K_SUMS_SAME;
        break;
    }
    case 7: { /* changed size, checksum recomputed */
        bytes_add(&t, tar->p, tar->len);
        static const long deltas[] = {1, -1, 512, -512, 7, 100000, -100};
        long d = deltas[rnd_below(sizeof(deltas) / sizeof(deltas[0]))];
        long ns = (long)m->size + d;
        if (ns < 0)
            ns = 0;
        if (rnd() % 8 == 0)
            snprintf((char *)t.p + m->hdr + 124, 12, "%011o", 07777777777u); /* 1 GiB - 1 */
        else
            snprintf((char *)t.p + m->hdr + 124, 12, "%011lo", (unsigned long)ns);
        tar_fix_checksum(t.p + m->hdr);
        snprintf(what, wcap, "%s size changed (%+ld or huge)", m->name, d);
        /* SHA256SUMS one byte shorter only loses its last newline: same list */
        if (strcmp(m->name, "SHA256SUMS") == 0 && octal(t.p + m->hdr + 124, 12) == m->size - 1)
            k = K_SUMS_SAME;
        break;
    }
    case 8: { /* duplicated member */
        bytes_add(&t, tar->p, m->end);
        bytes_add(&t, tar->p + m->hdr, m->end - m->hdr);
        bytes_add(&t, tar->p + m->end, tar->len - m->end);
        snprintf(what, wcap, "%s duplicated", m->name);
        break;
    }
    case 9: { /* reordered members */
        if (mi == mj)
            mj = (mi + 1) % ti->n;
        for (size_t i = 0; i < ti->n; i++) {
            const struct member *x = &ti->m[i == mi ? mj : i == mj ? mi : i];
            bytes_add(&t, tar->p + x->hdr, x->end - x->hdr);
        }
        bytes_add(&t, tar->p + ti->body_end, tar->len - ti->body_end);
        snprintf(what, wcap, "%s and %s swapped", ti->m[mi].name, ti->m[mj].name);
        k = K_REORDER;
        break;
    }
    case 10: { /* member dropped or replaced by the other archive's */
        bytes_add(&t, tar->p, m->hdr);
        bytes_add(&t, tar->p + m->end, tar->len - m->end);
        snprintf(what, wcap, "%s removed", m->name);
        break;
    }
    default: { /* tar truncated, then properly compressed */
        size_t cut = rnd_below(tar->len);
        bytes_add(&t, tar->p, cut);
        snprintf(what, wcap, "tar cut to %zu of %zu, recompressed", cut, tar->len);
        /* the reader accepts a tar ending in the last member's padding or end marker */
        k = cut >= ti->m[ti->n - 1].data + ti->m[ti->n - 1].size ? K_NO_END : K_NONE;
        break;
    }
    }
    struct bytes c = compress_as(s->f, t.p, t.len);
    bytes_add(out, c.p, c.len);
    bytes_free(&c);
    bytes_free(&t);
    return k;
}

struct tally {
    long tried, accepted_same[K_NCLASS];
};

static int restore_sink(void *arg, const struct cairn_snapshot_meta *meta,
                        struct cairn_reader *state, struct cairn_err *err)
{
    (void)arg;
    (void)meta;
    struct cairn_writer *w = cairn_discard_writer_new();
    int rc = cairn_copy(state, w, NULL, err);
    cairn_writer_free(w);
    return rc;
}

/* Verify, extract (state to memory) and restore (spooled, callback) one candidate. Returns 1
 * when accepted by all with byte-identical state and meta, 0 when refused by all; anything
 * else (mixed verdicts, or accepted with a changed meaning) fails the test. */
static int judge_archive(const struct sample *s, const struct bytes *c, int do_restore,
                         const char *what)
{
    struct cairn_err err;
    struct cairn_snapshot_read_opts o = {0};
    o.tmpdir = test_tmpdir();
    struct cairn_snapshot_info info;
    memset(&info, 0, sizeof(info));
    int v = verify_bytes(c, &o, &info, &err) == CAIRN_OK;
    int meta_same = v && info.meta_json_len > 0;
    if (v)
        meta_same = s->meta_json.len == info.meta_json_len &&
                    memcmp(s->meta_json.p, info.meta_json, info.meta_json_len) == 0;
    cairn_snapshot_info_free(&info);

    struct bytes st = {0};
    struct cairn_reader *r = cairn_mem_reader_new(c->p, c->len);
    int x = snapshot_extract_into(r, &o, capture_new(&st), NULL, &err) == CAIRN_OK;
    cairn_reader_free(r);
    if (x != st.committed)
        test_fail(__FILE__, __LINE__, "%s: extract returned %d but committed=%d", what, x,
                  st.committed);
    int state_same = st.len == s->state.len && memcmp(st.p, s->state.p, st.len) == 0;
    bytes_free(&st);

    int rs = x;
    if (do_restore) {
        r = cairn_mem_reader_new(c->p, c->len);
        rs = cairn_snapshot_restore(r, &o, restore_sink, NULL, NULL, &err) == CAIRN_OK;
        cairn_reader_free(r);
    }
    if (v != x || x != rs) {
        test_fail(__FILE__, __LINE__, "%s: verify=%d extract=%d restore=%d disagree", what, v, x,
                  rs);
        return -1;
    }
    if (v && !(meta_same && state_same)) {
        test_fail(__FILE__, __LINE__, "%s: ACCEPTED with changed content", what);
        return -1;
    }
    return v;
}

static long total_corruptions;

/* The full campaign runs in the plain build. Under AddressSanitizer (about 10x slower here,
 * and looking for memory errors on corrupt input, which every kind of corruption reaches
 * within a few hundred samples) a third of each count runs (docs/TESTING.md). */
#if defined(__SANITIZE_ADDRESS__)
#define CAMPAIGN(n) ((n) / 3)
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CAMPAIGN(n) ((n) / 3)
#endif
#endif
#ifndef CAMPAIGN
#define CAMPAIGN(n) (n)
#endif

static void archive_campaign(enum cairn_snapshot_flavour f, int count)
{
    struct sample s;
    sample_make(&s, f);
    CHECK(judge_archive(&s, &s.arc, 1, "original") == 1);
    struct tally t = {0};
    struct bytes c = {0};
    char what[160];
    int bad = 0;
    for (int i = 0; i < count && bad < 10; i++) {
        enum klass k = corrupt_archive(&s, &c, what, sizeof(what));
        t.tried++;
        int acc = judge_archive(&s, &c, i % 4 == 0, what);
        if (acc < 0) {
            bad++;
            continue;
        }
        if (!acc)
            continue;
        if (k == K_NONE) { /* redundancy in the deflate/zstd encoding: the same tar out */
            struct bytes dec = inflate_all(&c);
            if (dec.len == s.tar.len && memcmp(dec.p, s.tar.p, dec.len) == 0)
                k = K_SAME_TAR;
            bytes_free(&dec);
        }
        if (k == K_NONE) {
            test_fail(__FILE__, __LINE__, "%s archive, corruption %d (%s) was accepted",
                      f == CAIRN_SNAPSHOT_ZSTD ? "zstd" : "gzip", i, what);
            bad++;
            continue;
        }
        t.accepted_same[k]++;
    }
    long same = 0;
    for (int k = 1; k < K_NCLASS; k++)
        same += t.accepted_same[k];
    printf("figures: %s archive (%zu bytes): %ld corruptions, %ld refused, 0 accepted with "
           "changed content, %ld accepted unchanged in meaning:\n",
           f == CAIRN_SNAPSHOT_ZSTD ? "zstd" : "gzip", s.arc.len, t.tried, t.tried - same, same);
    for (int k = 1; k < K_NCLASS; k++)
        if (t.accepted_same[k])
            printf("figures:     %ld %s\n", t.accepted_same[k], klass_name[k]);
    total_corruptions += t.tried;
    bytes_free(&c);
    sample_free(&s);
}

TEST(archive_corruptions_gzip)
{
    archive_campaign(CAIRN_SNAPSHOT_GZIP, CAMPAIGN(3500));
}

TEST(archive_corruptions_zstd)
{
    archive_campaign(CAIRN_SNAPSHOT_ZSTD, CAMPAIGN(3500));
}

TEST(restore_callback_sees_only_verified_state)
{
    /* cairn_snapshot_restore with a real callback on a damaged archive never calls it. */
    struct sample s;
    sample_make(&s, CAIRN_SNAPSHOT_GZIP);
    struct cairn_err err;
    struct cairn_snapshot_read_opts o = {0};
    o.tmpdir = test_tmpdir();
    struct bytes c = {0};
    bytes_add(&c, s.arc.p, s.arc.len);
    c.p[c.len / 2] ^= 0x10;
    struct cairn_reader *r = cairn_mem_reader_new(c.p, c.len);
    CHECK(cairn_snapshot_restore(r, &o, restore_sink, NULL, NULL, &err) != CAIRN_OK);
    cairn_reader_free(r);
    r = cairn_mem_reader_new(s.arc.p, s.arc.len);
    CHECK_OK(cairn_snapshot_restore(r, &o, restore_sink, NULL, NULL, &err), &err);
    cairn_reader_free(r);
    bytes_free(&c);
    sample_free(&s);
}

/* ---------------------------------------------------------------- stored backups */

static void write_file(const char *path, const uint8_t *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f == NULL)
        return;
    if (n)
        CHECK(fwrite(p, 1, n, f) == n);
    fclose(f);
}

static struct bytes slurp(const char *path)
{
    struct bytes b = {0};
    uint8_t *p = NULL;
    size_t n = 0;
    if (read_file_max(path, 64u << 20, &p, &n, NULL) == CAIRN_OK) {
        bytes_add(&b, p, n);
        free(p);
    }
    return b;
}

struct stored {
    struct cairn_storage *st;
    char *root, *src;
    const char *name;
    char *manifest_path;
    struct bytes manifest;
    char *files[8];
    struct bytes data[8];
    size_t nfiles;
    char *canon; /* canonical MANIFEST JSON */
};

static char *canonical(const uint8_t *p, size_t n)
{
    json_t *j = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, NULL);
    if (j == NULL)
        return NULL;
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    return s;
}

static void stored_make(struct stored *s, const char *name, int zstd, const uint8_t *seal)
{
    struct cairn_err err;
    memset(s, 0, sizeof(*s));
    s->name = name;
    s->root = path_join(test_tmpdir(), "store");
    s->src = xasprintf("%s/src-%s", test_tmpdir(), name);
    char *sub = path_join(s->src, "sub");
    CHECK_OK(mkdir_p(sub, 0755, &err), &err);
    for (int i = 0; i < 4; i++) {
        struct bytes b = {0};
        sample_state(&b, 700 + 1500 * (size_t)i, 100 + (uint32_t)i);
        char *p = xasprintf("%s/%s%d", i % 2 ? sub : s->src, "file", i);
        write_file(p, b.p, b.len);
        free(p);
        bytes_free(&b);
    }
    free(sub);
    CHECK_OK(cairn_storage_open(s->root, &s->st, &err), &err);
    cairn_storage_set_seal_key(s->st, seal);
    struct cairn_path_opts po = {0};
    po.file.compression = zstd ? CAIRN_COMPRESS_ZSTD : CAIRN_COMPRESS_NONE;
    po.workers = 1;
    CHECK_OK(cairn_storage_backup_path(s->st, name, s->src, &po, &err), &err);
    struct cairn_backup *b = NULL;
    CHECK_OK(cairn_storage_open_backup(s->st, name, &b, &err), &err);
    for (size_t i = 0; b && i < cairn_backup_file_count(b) && i < 8; i++) {
        s->files[i] = xasprintf("%s/%s/%s", s->root, name, cairn_backup_file_at(b, i)->name);
        s->data[i] = slurp(s->files[i]);
        s->nfiles++;
    }
    cairn_backup_free(b);
    s->manifest_path = xasprintf("%s/%s/MANIFEST", s->root, name);
    s->manifest = slurp(s->manifest_path);
    s->canon = canonical(s->manifest.p, s->manifest.len);
    CHECK(s->canon != NULL && s->nfiles >= 4);
}

static void stored_free(struct stored *s)
{
    cairn_storage_free(s->st);
    for (size_t i = 0; i < s->nfiles; i++) {
        free(s->files[i]);
        bytes_free(&s->data[i]);
    }
    bytes_free(&s->manifest);
    free(s->manifest_path);
    free(s->canon);
    free(s->root);
    free(s->src);
}

/* Refused by verify and by restore? 1 accepted by both, 0 refused by both, -1 mixed. Also
 * checks that a restore that succeeded reproduced the source tree byte for byte. */
static int judge_backup(struct stored *s, const char *what)
{
    struct cairn_err err;
    struct cairn_backup *b = NULL;
    int v = 0;
    if (cairn_storage_open_backup(s->st, s->name, &b, &err) == CAIRN_OK) {
        v = cairn_backup_verify(b, 1, NULL, NULL, &err) == CAIRN_OK;
        cairn_backup_free(b);
    }
    char *target = xasprintf("%s/restore", test_tmpdir());
    struct cairn_path_opts po = {0};
    po.workers = 1;
    int r = cairn_storage_restore_path(s->st, s->name, target, &po, &err) == CAIRN_OK;
    if (r) {
        /* same bytes as the source? */
        for (int i = 0; i < 4; i++) {
            char *a = xasprintf("%s/%sfile%d", s->src, i % 2 ? "sub/" : "", i);
            char *c = xasprintf("%s/%sfile%d", target, i % 2 ? "sub/" : "", i);
            struct bytes x = slurp(a), y = slurp(c);
            if (x.len != y.len || memcmp(x.p, y.p, x.len) != 0)
                r = 2; /* accepted with different content */
            bytes_free(&x);
            bytes_free(&y);
            free(a);
            free(c);
        }
    }
    rmtree(target, &err);
    free(target);
    if (r == 2) {
        test_fail(__FILE__, __LINE__, "%s: restore ACCEPTED with changed content", what);
        return -1;
    }
    if (v != r) {
        test_fail(__FILE__, __LINE__, "%s: verify=%d restore=%d disagree", what, v, r);
        return -1;
    }
    return v;
}

/* Data files: flips, truncations, appends, splices, swaps, removal. */
static long data_campaign(struct stored *s, int count)
{
    char what[200];
    long refused = 0;
    int bad = 0;
    for (int i = 0; i < count && bad < 10; i++) {
        size_t fi = rnd_below(s->nfiles), fj = (fi + 1 + rnd_below(s->nfiles - 1)) % s->nfiles;
        const struct bytes *d = &s->data[fi];
        struct bytes c = {0};
        uint32_t kind = rnd() % 7;
        bytes_add(&c, d->p, d->len);
        switch (kind) {
        case 0:
        case 1: {
            size_t off = rnd_below(c.len);
            c.p[off] ^= (uint8_t)(1u << rnd_below(8));
            snprintf(what, sizeof(what), "file %zu: bit flip at %zu", fi, off);
            break;
        }
        case 2:
            c.len = rnd_below(d->len);
            snprintf(what, sizeof(what), "file %zu: cut to %zu of %zu", fi, c.len, d->len);
            break;
        case 3: {
            uint8_t junk = (uint8_t)rnd();
            bytes_add(&c, &junk, 1);
            snprintf(what, sizeof(what), "file %zu: one byte appended", fi);
            break;
        }
        case 4: { /* a block of another file spliced in */
            const struct bytes *o = &s->data[fj];
            size_t off = rnd_below(c.len), src = rnd_below(o->len), n = 1 + rnd_below(128);
            for (size_t k = 0; k < n && off + k < c.len && src + k < o->len; k++)
                c.p[off + k] = o->p[src + k];
            snprintf(what, sizeof(what), "file %zu: splice of file %zu at %zu", fi, fj, off);
            if (c.len == d->len && memcmp(c.p, d->p, c.len) == 0) {
                bytes_free(&c);
                i--;
                continue; /* spliced identical bytes: not a corruption, draw again */
            }
            break;
        }
        case 5:
            c.len = 0;
            bytes_add(&c, s->data[fj].p, s->data[fj].len);
            snprintf(what, sizeof(what), "file %zu replaced by file %zu", fi, fj);
            break;
        default: snprintf(what, sizeof(what), "file %zu removed", fi); break;
        }
        if (kind == 6)
            unlink(s->files[fi]);
        else
            write_file(s->files[fi], c.p, c.len);
        int acc = judge_backup(s, what);
        if (acc != 0) {
            if (acc > 0)
                test_fail(__FILE__, __LINE__, "%s was ACCEPTED", what);
            bad++;
        } else {
            refused++;
        }
        write_file(s->files[fi], d->p, d->len);
        bytes_free(&c);
    }
    return refused;
}

/* Change the value after one random occurrence of a key (JSON-level edit). */
static int manifest_edit(const struct bytes *m, int sealed, struct bytes *out, char *what,
                         size_t wcap)
{
    /* Without a seal only what describes the stored data is checked against the data. */
    const char *keys[] = {"\"size\":", "\"logical_size\":", "\"sha256\":", "\"logical_sha256\":",
                          "\"name\":", "\"mode\":",         "\"path\":",   "\"file\":"};
    const char *key = keys[rnd_below(sealed ? 8 : 4)];
    const char *txt = (const char *)m->p;
    const char *hits[64];
    size_t nh = 0;
    const char *from = sealed ? txt : strstr(txt, "\"files\":");
    for (const char *p = strstr(from, key); p && nh < 64; p = strstr(p + 1, key))
        hits[nh++] = p;
    if (nh == 0)
        return 0;
    const char *h = hits[rnd_below(nh)];
    size_t at = (size_t)(h - txt) + strlen(key);
    while (txt[at] == ' ')
        at++;
    if (txt[at] == '"') { /* a string value: change one character */
        at += 1 + rnd_below(3);
        bytes_add(out, m->p, at);
        char ch = txt[at];
        char nc = ch == 'a' ? 'b' : ch == '0' ? '1' : ch == 'f' ? 'e' : 'a';
        bytes_add(out, &nc, 1);
        bytes_add(out, m->p + at + 1, m->len - at - 1);
    } else { /* a number: add one, or replace it by a large one */
        bytes_add(out, m->p, at);
        char *end;
        long long v = strtoll(txt + at, &end, 10);
        char buf[32];
        snprintf(buf, sizeof(buf), "%lld", rnd() % 4 ? v + 1 : v * 1000 + 4096);
        bytes_str(out, buf);
        bytes_add(out, end, m->len - (size_t)(end - txt));
    }
    snprintf(what, wcap, "MANIFEST %.*s edited at %zu", (int)strlen(key) - 1, key, at);
    return 1;
}

/* MANIFEST corruptions. sealed: any change in meaning is refused (flips, truncations, splices,
 * JSON edits). Unsealed: edits of what describes the data (sizes, hashes, names, paths). */
static long manifest_campaign(struct stored *s, int count, int sealed, long *same)
{
    char what[200];
    long refused = 0;
    int bad = 0;
    const struct bytes *m = &s->manifest;
    for (int i = 0; i < count && bad < 10; i++) {
        struct bytes c = {0};
        uint32_t kind = sealed ? rnd() % 5 : 4;
        if (kind <= 1) {
            bytes_add(&c, m->p, m->len);
            size_t off = rnd_below(c.len);
            c.p[off] ^= (uint8_t)(1u << rnd_below(8));
            snprintf(what, sizeof(what), "MANIFEST bit flip at %zu", off);
        } else if (kind == 2) {
            bytes_add(&c, m->p, rnd_below(m->len));
            snprintf(what, sizeof(what), "MANIFEST cut to %zu of %zu", c.len, m->len);
        } else if (kind == 3) { /* splice a range of another backup's MANIFEST-like bytes */
            bytes_add(&c, m->p, m->len);
            size_t off = rnd_below(c.len), n = 1 + rnd_below(40), src = rnd_below(m->len);
            for (size_t k = 0; k < n && off + k < c.len && src + k < m->len; k++)
                c.p[off + k] = m->p[src + k];
            snprintf(what, sizeof(what), "MANIFEST self-splice %zu bytes at %zu", n, off);
        } else if (!manifest_edit(m, sealed, &c, what, sizeof(what))) {
            bytes_free(&c);
            continue;
        }
        if (c.len == m->len && memcmp(c.p, m->p, c.len) == 0) {
            bytes_free(&c);
            i--;
            continue;
        }
        write_file(s->manifest_path, c.p, c.len);
        int acc = judge_backup(s, what);
        if (acc == 0) {
            refused++;
        } else if (acc > 0) {
            char *cc = canonical(c.p, c.len);
            if (cc != NULL && strcmp(cc, s->canon) == 0)
                (*same)++;
            else {
                test_fail(__FILE__, __LINE__, "%s was ACCEPTED (%s)", what,
                          sealed ? "sealed" : "unsealed");
                bad++;
            }
            free(cc);
        } else {
            bad++;
        }
        write_file(s->manifest_path, m->p, m->len);
        bytes_free(&c);
    }
    return refused;
}

TEST(stored_backup_corruptions)
{
    static const uint8_t key[32] = "corruption-campaign-seal-key-32b";
    struct stored plain, zst, sealed;
    stored_make(&plain, "20260101T000000Z-plain", 0, NULL);
    stored_make(&zst, "20260101T000001Z-zstd", 1, NULL);
    stored_make(&sealed, "20260101T000002Z-sealed", 1, key);
    CHECK(judge_backup(&plain, "original plain") == 1);
    CHECK(judge_backup(&zst, "original zstd") == 1);
    CHECK(judge_backup(&sealed, "original sealed") == 1);

    long n_plain = data_campaign(&plain, CAMPAIGN(900));
    long n_zstd = data_campaign(&zst, CAMPAIGN(900));
    long same_sealed = 0, same_plain = 0;
    long n_msealed = manifest_campaign(&sealed, CAMPAIGN(1200), 1, &same_sealed);
    long n_mplain = manifest_campaign(&plain, CAMPAIGN(400), 0, &same_plain);
    CHECK_EQ_INT((int)same_plain, 0);
    printf("figures: stored backups (file storage): %ld data-file corruptions refused "
           "(%ld uncompressed, %ld zstd), 0 accepted\n",
           n_plain + n_zstd, n_plain, n_zstd);
    printf("figures: sealed MANIFEST: %ld corruptions refused, %ld accepted unchanged in meaning "
           "(canonical JSON identical), 0 accepted changed\n",
           n_msealed, same_sealed);
    printf("figures: unsealed MANIFEST: %ld edits of sizes and hashes refused, 0 "
           "accepted\n",
           n_mplain);
    total_corruptions += n_plain + n_zstd + n_msealed + same_sealed + n_mplain;
    /* The originals are intact after the campaign. */
    CHECK(judge_backup(&plain, "plain after") == 1);
    CHECK(judge_backup(&zst, "zstd after") == 1);
    CHECK(judge_backup(&sealed, "sealed after") == 1);
    stored_free(&plain);
    stored_free(&zst);
    stored_free(&sealed);
}

TEST(total)
{
    printf("figures: total corruptions tried: %ld\n", total_corruptions);
    if (total_corruptions > 0)
        CHECK(total_corruptions >= CAMPAIGN(10000));
}

int main(int argc, char **argv)
{
    /* Each stored-backup case restores into a fresh directory, and every restored file and
     * directory is fsync'd: thousands of fsyncs that measure the disk, not the verdicts (77 of
     * 80 s on a shared disk). On tmpfs the same code runs and fsync returns at once. An
     * explicit TMPDIR is kept. */
    if (getenv("TMPDIR") == NULL && access("/dev/shm", W_OK | X_OK) == 0)
        setenv("TMPDIR", "/dev/shm", 0);
    return test_main(argc, argv);
}
