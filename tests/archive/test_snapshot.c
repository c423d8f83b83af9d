/* Snapshot archive: round trips of both flavours, the exact tar bytes, Go identity against the
 * real Vault archive, the peer fixtures' expected results, sealers, extract/restore and the
 * temp-file backed cairn_snapshot object. */
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"

static uint8_t *gen_state(size_t n)
{
    uint8_t *d = xmalloc(n ? n : 1);
    uint32_t x = 7;
    for (size_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        d[i] = (i / 1000) % 2 ? (uint8_t)(x >> 24) : (uint8_t)('a' + i % 26);
    }
    return d;
}

static void roundtrip(enum cairn_snapshot_flavour f, size_t n, struct cairn_sealer *sealer)
{
    uint8_t *state = gen_state(n);
    struct bytes a = write_archive(f, state, n, sealer, 1700000000);
    CHECK(a.committed);
    CHECK(a.len > 0);
    CHECK(cairn_detect_compression(a.p, a.len) ==
          (f == CAIRN_SNAPSHOT_ZSTD ? CAIRN_COMPRESS_ZSTD : CAIRN_COMPRESS_GZIP));
    struct cairn_err err;
    struct cairn_snapshot_info info;
    struct cairn_snapshot_read_opts o = {0};
    o.sealer = sealer;
    CHECK_OK(verify_bytes(&a, &o, &info, &err), &err);
    CHECK_EQ_INT(info.flavour, f);
    CHECK_EQ_INT(info.meta.index, 10);
    CHECK_EQ_INT(info.meta.term, 2);
    CHECK_EQ_INT(info.meta.size, n);
    CHECK_EQ_INT(info.state_len, n);
    CHECK_EQ_STR(info.meta.id, "2-10-1546615723344");
    CHECK_EQ_INT(info.sealed_present, sealer != NULL);
    CHECK_EQ_INT(info.sealed_verified, sealer != NULL);
    CHECK_EQ_INT(info.archive_bytes, a.len);
    uint8_t sum[32];
    char want[64] = "sha-256=";
    cairn_sha256_oneshot(a.p, a.len, sum);
    cairn_base64_encode(sum, 32, want + 8);
    CHECK_EQ_STR(info.checksum, want);
    cairn_snapshot_info_free(&info);
    /* extract returns the state byte for byte */
    struct bytes out = {0};
    struct cairn_reader *r = cairn_mem_reader_new(a.p, a.len);
    CHECK_OK(snapshot_extract_into(r, &o, capture_new(&out), NULL, &err), &err);
    CHECK(out.committed);
    CHECK_EQ_INT(out.len, n);
    CHECK(n == 0 || memcmp(out.p, state, n) == 0);
    cairn_reader_free(r);
    bytes_free(&out);
    bytes_free(&a);
    free(state);
}

TEST(roundtrip_gzip_and_zstd)
{
    size_t sizes[] = {0, 1, 511, 512, 513, 100000, 3 << 20};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        roundtrip(CAIRN_SNAPSHOT_GZIP, sizes[i], NULL);
        roundtrip(CAIRN_SNAPSHOT_ZSTD, sizes[i], NULL);
    }
}

static const uint8_t key1[32] = "0123456789abcdef0123456789abcde";
static const uint8_t key2[32] = "0123456789abcdef0123456789abcdX";

TEST(roundtrip_sealed_hmac_and_aes_gcm)
{
    struct cairn_sealer *s[2] = {cairn_sealer_hmac_new(key1), cairn_sealer_aes_gcm_new(key1)};
    for (int i = 0; i < 2; i++) {
        roundtrip(CAIRN_SNAPSHOT_GZIP, 4096, s[i]);
        roundtrip(CAIRN_SNAPSHOT_ZSTD, 4096, s[i]);
    }
    cairn_sealer_free(s[0]);
    cairn_sealer_free(s[1]);
}

TEST(sealed_wrong_key_missing_and_tampered_are_seal_errors)
{
    struct cairn_sealer *good[2] = {cairn_sealer_hmac_new(key1), cairn_sealer_aes_gcm_new(key1)};
    struct cairn_sealer *wrong[2] = {cairn_sealer_hmac_new(key2), cairn_sealer_aes_gcm_new(key2)};
    struct cairn_err err;
    uint8_t *state = gen_state(2000);
    for (int i = 0; i < 2; i++) {
        struct bytes a = write_archive(CAIRN_SNAPSHOT_GZIP, state, 2000, good[i], 1700000000);
        struct cairn_snapshot_read_opts o = {0};
        o.sealer = wrong[i];
        CHECK_ERR(verify_bytes(&a, &o, NULL, &err), CAIRN_E_SEAL, &err,
                  "failed to open the sealed hashes: ");
        CHECK(strstr(err.msg, "wrong key or tampered") != NULL);
        /* unsealed mode: reported, not trusted, plain sums decide */
        struct cairn_snapshot_info info;
        CHECK_OK(verify_bytes(&a, NULL, &info, &err), &err);
        CHECK_EQ_INT(info.sealed_present, 1);
        CHECK_EQ_INT(info.sealed_verified, 0);
        cairn_snapshot_info_free(&info);
        /* a 3-member archive cannot satisfy a sealer */
        struct bytes plain = write_archive(CAIRN_SNAPSHOT_GZIP, state, 2000, NULL, 1700000000);
        o.sealer = good[i];
        CHECK_ERR(verify_bytes(&plain, &o, NULL, &err), CAIRN_E_SEAL, &err,
                  "failed to open the sealed hashes: no sealed hashes");
        bytes_free(&plain);
        bytes_free(&a);
    }
    /* tampered sealed member: rebuild the tar with one flipped byte in it */
    struct bytes a = write_archive(CAIRN_SNAPSHOT_GZIP, state, 2000, good[1], 1700000000);
    struct bytes t = inflate_all(&a);
    size_t sealed_hdr = t.len - 1024 - 512 - 512; /* sealed data fits one block */
    CHECK(memcmp(t.p + sealed_hdr, "SHA256SUMS.sealed", 18) == 0);
    t.p[sealed_hdr + 512 + 30] ^= 1;
    struct bytes gz = gzip_bytes(t.p, t.len, NULL, NULL);
    struct cairn_snapshot_read_opts o = {0};
    o.sealer = good[1];
    CHECK_ERR(verify_bytes(&gz, &o, NULL, &err), CAIRN_E_SEAL, &err,
              "aes-256-gcm authentication failed");
    bytes_free(&gz);
    bytes_free(&t);
    bytes_free(&a);
    free(state);
    for (int i = 0; i < 2; i++) {
        cairn_sealer_free(good[i]);
        cairn_sealer_free(wrong[i]);
    }
}

TEST(sealer_key_files)
{
    struct cairn_err err;
    struct cairn_sealer *s;
    char *hex = path_join(test_tmpdir(), "hex.key");
    char *raw = path_join(test_tmpdir(), "raw.key");
    char *bad = path_join(test_tmpdir(), "bad.key");
    int fd = open(hex, O_WRONLY | O_CREAT, 0600);
    CHECK(write(fd, "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n", 65) ==
          65);
    close(fd);
    fd = open(raw, O_WRONLY | O_CREAT, 0600);
    uint8_t k[32];
    for (int i = 0; i < 32; i++)
        k[i] = (uint8_t)i;
    CHECK(write(fd, k, 32) == 32);
    close(fd);
    fd = open(bad, O_WRONLY | O_CREAT, 0644);
    CHECK(write(fd, k, 32) == 32);
    close(fd);
    chmod(bad, 0644);
    CHECK_OK(cairn_sealer_from_keyfile("hmac", hex, &s, &err), &err);
    uint8_t *sealed, *opened;
    size_t sl, ol;
    CHECK_OK(cairn_sealer_seal(s, (const uint8_t *)"abc", 3, &sealed, &sl, &err), &err);
    cairn_sealer_free(s);
    /* the raw key file holds the same key: it opens what the hex one sealed */
    CHECK_OK(cairn_sealer_from_keyfile("hmac", raw, &s, &err), &err);
    CHECK_OK(cairn_sealer_open(s, sealed, sl, &opened, &ol, &err), &err);
    CHECK(ol == 3 && memcmp(opened, "abc", 3) == 0);
    cairn_sealer_free(s);
    free(sealed);
    free(opened);
    CHECK_ERR(cairn_sealer_from_keyfile("aes-gcm", bad, &s, &err), CAIRN_E_INVALID, &err,
              "readable by group or others");
    CHECK_ERR(cairn_sealer_from_keyfile("rot13", hex, &s, &err), CAIRN_E_INVALID, &err,
              "unknown sealer");
    free(hex);
    free(raw);
    free(bad);
}

/* The header bytes spec section 3 prescribes, checked field by field. */
static void check_header(const uint8_t *h, const char *name, uint64_t size, int64_t mtime)
{
    char buf[16];
    CHECK(strncmp((const char *)h, name, 100) == 0);
    CHECK(memcmp(h + 100, "0000600\0", 8) == 0);
    CHECK(memcmp(h + 108, "0000000\0", 8) == 0);
    CHECK(memcmp(h + 116, "0000000\0", 8) == 0);
    snprintf(buf, sizeof(buf), "%011llo", (unsigned long long)size);
    CHECK(memcmp(h + 124, buf, 11) == 0 && h[135] == 0);
    snprintf(buf, sizeof(buf), "%011llo", (unsigned long long)mtime);
    CHECK(memcmp(h + 136, buf, 11) == 0 && h[147] == 0);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++)
        sum += (i >= 148 && i < 156) ? ' ' : h[i];
    snprintf(buf, sizeof(buf), "%06o", sum);
    CHECK(memcmp(h + 148, buf, 6) == 0 && h[154] == 0 && h[155] == ' ');
    CHECK(h[156] == '0');
    for (int i = 157; i < 257; i++)
        CHECK(h[i] == 0);
    CHECK(memcmp(h + 257,
                 "ustar\0"
                 "00",
                 8) == 0);
    for (int i = 265; i < 329; i++)
        CHECK(h[i] == 0);
    CHECK(memcmp(h + 329, "0000000\0", 8) == 0);
    CHECK(memcmp(h + 337, "0000000\0", 8) == 0);
    for (int i = 345; i < 512; i++)
        CHECK(h[i] == 0);
}

TEST(tar_layout_is_go_archive_tar)
{
    size_t n = 1234;
    uint8_t *state = gen_state(n);
    struct cairn_sealer *s = cairn_sealer_hmac_new(key1);
    for (int sealed = 0; sealed < 2; sealed++) {
        struct bytes a =
            write_archive(CAIRN_SNAPSHOT_GZIP, state, n, sealed ? s : NULL, 1695407178);
        /* gzip header exactly as Go writes it */
        CHECK(memcmp(a.p, "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff", 10) == 0);
        struct bytes t = inflate_all(&a);
        char *meta = default_meta_json();
        size_t mlen = strlen(meta);
        /* the meta in write_archive has size n, not the default; re-encode */
        struct cairn_snapshot_meta m;
        test_meta(&m, n);
        free(meta);
        cairn_snapshot_meta_encode(&m, &meta, &mlen);
        size_t off = 0;
        check_header(t.p + off, "meta.json", mlen, 1695407178);
        CHECK(memcmp(t.p + off + 512, meta, mlen) == 0);
        off += 512 + (mlen + 511) / 512 * 512;
        check_header(t.p + off, "state.bin", n, 1695407178);
        CHECK(memcmp(t.p + off + 512, state, n) == 0);
        for (size_t i = n; i % 512; i++)
            CHECK(t.p[off + 512 + i] == 0);
        off += 512 + (n + 511) / 512 * 512;
        check_header(t.p + off, "SHA256SUMS", 152, 1695407178);
        char *hm = hex_sha(meta, mlen), *hs = hex_sha(state, n);
        char *sums = xasprintf("%s  meta.json\n%s  state.bin\n", hm, hs);
        free(hm);
        free(hs);
        CHECK(memcmp(t.p + off + 512, sums, 152) == 0);
        off += 1024;
        if (sealed) {
            check_header(t.p + off, "SHA256SUMS.sealed", 8 + 32 + 152, 1695407178);
            off += 1024;
        }
        CHECK_EQ_INT(t.len, off + 1024); /* two zero blocks and nothing after them */
        for (size_t i = off; i < t.len; i++)
            CHECK(t.p[i] == 0);
        free(sums);
        free(meta);
        bytes_free(&t);
        bytes_free(&a);
    }
    cairn_sealer_free(s);
    free(state);
}

TEST(pax_size_header_over_8gib)
{
    struct bytes out = {0};
    struct cairn_err err;
    struct cairn_writer *w = capture_new(&out);
    struct tar_writer t;
    tar_writer_init(&t, w, 1695407178);
    uint64_t big = 8ull << 30; /* 8 GiB: one more than the octal field holds */
    CHECK_OK(tar_writer_begin(&t, "state.bin", big, &err), &err);
    CHECK_EQ_INT(out.len, 1536);
    const uint8_t *x = out.p, *h = out.p + 1024;
    CHECK(strcmp((const char *)x, "PaxHeaders.0/state.bin") == 0);
    CHECK(x[156] == 'x');
    CHECK(memcmp(x + 100, "0000000\0", 8) == 0);      /* mode 0 */
    CHECK(memcmp(x + 124, "00000000023\0", 12) == 0); /* 19 bytes of records */
    CHECK(memcmp(x + 136, "00000000000\0", 12) == 0); /* mtime 0 */
    CHECK(memcmp(x + 257,
                 "ustar\0"
                 "00",
                 8) == 0);
    for (int i = 329; i < 345; i++)
        CHECK(x[i] == 0); /* Go leaves the dev fields of the PAX header empty */
    CHECK(memcmp(out.p + 512, "19 size=8589934592\n", 19) == 0);
    CHECK(out.p[512 + 19] == 0);
    CHECK(strcmp((const char *)h, "state.bin") == 0);
    CHECK(memcmp(h + 124, "00000000000\0", 12) == 0);
    CHECK(memcmp(h + 100, "0000600\0", 8) == 0);
    /* exactly at the limit: plain ustar */
    bytes_free(&out);
    tar_writer_init(&t, w, 1695407178);
    t.open = 0;
    CHECK_OK(tar_writer_begin(&t, "state.bin", TAR_MAX_OCTAL_SIZE, &err), &err);
    CHECK_EQ_INT(out.len, 512);
    CHECK(memcmp(out.p + 124, "77777777777\0", 12) == 0);
    cairn_writer_free(w);
    bytes_free(&out);
}

/* A sealer that returns fixed bytes, to reproduce the Vault fixture's fourth member. */
struct fixed_sealer {
    struct cairn_sealer base;
    const uint8_t *data;
    size_t len;
};

static int fixed_seal(struct cairn_sealer *s, const uint8_t *in, size_t len, uint8_t **out,
                      size_t *out_len, struct cairn_err *err)
{
    (void)in, (void)len, (void)err;
    struct fixed_sealer *f = (struct fixed_sealer *)s;
    *out = xmalloc(f->len);
    memcpy(*out, f->data, f->len);
    *out_len = f->len;
    return CAIRN_OK;
}

static const struct cairn_sealer_ops fixed_ops = {"fixed", fixed_seal, NULL, NULL};

static struct bytes read_whole(const char *path)
{
    struct bytes b = {0};
    uint8_t *d;
    size_t n;
    struct cairn_err err;
    if (read_file_max(path, 64 << 20, &d, &n, &err) == CAIRN_OK) {
        bytes_add(&b, d, n);
        free(d);
    }
    return b;
}

static char *fixture(const char *name)
{
    const char *shared = test_shared_dir();
    return shared ? xasprintf("%s/testdata/peer-snapshots/%s", shared, name) : NULL;
}

TEST(vault_fixture_tar_is_reproduced_byte_for_byte)
{
    char *path = fixture("vault-test-fixture.snap");
    if (path == NULL)
        SKIP("../shared not found (set CAIRN_SHARED): peer fixtures unavailable");
    struct bytes snap = read_whole(path);
    free(path);
    CHECK_EQ_INT(snap.len, 16546);
    struct bytes tar = inflate_all(&snap);
    CHECK_EQ_INT(tar.len, 20992);
    /* members: meta.json (300) state.bin (16274) SHA256SUMS (152) SHA256SUMS.sealed (185) */
    const uint8_t *meta = tar.p + 512, *state = tar.p + 512 + 512 + 512;
    size_t sealed_off = 512 + 512 + 512 + (16274 + 511) / 512 * 512 + 512 + 512 + 512;
    CHECK(strcmp((const char *)tar.p + sealed_off - 512, "SHA256SUMS.sealed") == 0);
    struct cairn_err err;
    struct cairn_snapshot_meta m;
    CHECK_OK(cairn_snapshot_meta_decode((const char *)meta, 300, &m, &err), &err);
    /* our encoder gives Go's bytes back */
    char *enc;
    size_t elen;
    cairn_snapshot_meta_encode(&m, &enc, &elen);
    CHECK_EQ_INT(elen, 300);
    CHECK(memcmp(enc, meta, 300) == 0);
    free(enc);
    struct fixed_sealer fs = {{&fixed_ops}, tar.p + sealed_off, 185};
    struct bytes ours = {0};
    struct cairn_snapshot_write_opts o = {0};
    o.sealer = &fs.base;
    o.mtime = 1695407178;
    o.threads = 1;
    struct cairn_reader *r = cairn_mem_reader_new(state, 16274);
    CHECK_OK(snapshot_write_into(capture_new(&ours), &m, r, &o, NULL, &err), &err);
    cairn_reader_free(r);
    struct bytes our_tar = inflate_all(&ours);
    CHECK_EQ_INT(our_tar.len, tar.len);
    CHECK(our_tar.len == tar.len && memcmp(our_tar.p, tar.p, tar.len) == 0);
    cairn_snapshot_meta_free(&m);
    bytes_free(&our_tar);
    bytes_free(&ours);
    bytes_free(&tar);
    bytes_free(&snap);
}

TEST(peer_fixtures_give_the_readme_results)
{
    char *vault = fixture("vault-test-fixture.snap");
    if (vault == NULL)
        SKIP("../shared not found (set CAIRN_SHARED): peer fixtures unavailable");
    struct cairn_err err;
    struct cairn_snapshot_info info;
    struct bytes v = read_whole(vault);
    uint8_t sum[32];
    char hex[65];
    cairn_sha256_oneshot(v.p, v.len, sum);
    cairn_hex_encode(sum, 32, hex);
    CHECK_EQ_STR(hex, "23ae5b43edc04f1f6929b0b343997ee2d2bd40b399a7b54650ac8d84fa4d0cbc");
    /* rsnap-style: ACCEPT, Index 38, Term 3 */
    CHECK_OK(verify_bytes(&v, NULL, &info, &err), &err);
    CHECK_EQ_STR(info.checksum, "sha-256=I65bQ+3ATx9pKbCzQ5l+4tK9QLOZp7VGUKyNhPpNDLw=");
    CHECK_EQ_INT(info.meta.version, 1);
    CHECK_EQ_STR(info.meta.id, "bolt-snapshot");
    CHECK_EQ_INT(info.meta.index, 38);
    CHECK_EQ_INT(info.meta.term, 3);
    CHECK(info.meta.peers == NULL);
    CHECK_EQ_INT(info.meta.nservers, 3);
    if (info.meta.nservers == 3) {
        CHECK_EQ_STR(info.meta.servers[0].id, "vault-0");
        CHECK_EQ_STR(info.meta.servers[0].address, "vault-0:8201");
        CHECK_EQ_STR(info.meta.servers[2].id, "vault-2");
        CHECK_EQ_INT(info.meta.servers[1].suffrage, 0);
    }
    CHECK_EQ_INT(info.meta.configuration_index, 38);
    CHECK_EQ_INT(info.meta.size, 16274);
    CHECK_EQ_INT(info.state_len, 16274);
    CHECK_EQ_INT(info.meta_json_len, 300);
    CHECK(info.meta_json[299] == '\n');
    CHECK_EQ_INT(info.sealed_present, 1);
    CHECK_EQ_INT(info.sealed_len, 185);
    CHECK_EQ_INT(info.sealed_verified, 0);
    cairn_snapshot_info_free(&info);
    /* Consul-style: REJECT, the fourth member is unexpected */
    struct cairn_snapshot_read_opts consul = {0};
    consul.three_members = 1;
    CHECK_ERR(verify_bytes(&v, &consul, NULL, &err), CAIRN_E_CORRUPT, &err,
              "unexpected file \"SHA256SUMS.sealed\" in snapshot");
    CHECK_EQ_STR(err.msg, "failed to read snapshot file: unexpected file \"SHA256SUMS.sealed\" in "
                          "snapshot");
    /* with a (wrong) sealer it cannot be opened: a seal error, as Vault's restore without
     * -force would fail */
    struct cairn_sealer *s = cairn_sealer_aes_gcm_new(key1);
    struct cairn_snapshot_read_opts so = {0};
    so.sealer = s;
    CHECK_ERR(verify_bytes(&v, &so, NULL, &err), CAIRN_E_SEAL, &err,
              "failed to open the sealed hashes");
    cairn_sealer_free(s);
    bytes_free(&v);
    free(vault);

    /* raft-snapshot tars, read at tar level */
    struct cairn_snapshot_read_opts raw = {0};
    raw.raw_tar = 1;
    char *p = fixture("raft-snapshot-spaces-meta.tar");
    struct bytes t = read_whole(p);
    CHECK_OK(verify_bytes(&t, &raw, &info, &err), &err);
    CHECK_EQ_INT(info.meta.version, 1);
    CHECK_EQ_STR(info.meta.id, "2-10-1546615723344");
    CHECK_EQ_INT(info.meta.index, 10);
    CHECK_EQ_INT(info.meta.term, 2);
    CHECK_EQ_INT(info.meta.peers_len, 16);
    char b64[32];
    cairn_base64_encode(info.meta.peers, info.meta.peers_len, b64);
    CHECK_EQ_STR(b64, "ka4xMjcuMC4wLjE6ODMwMA==");
    CHECK_EQ_INT(info.meta.nservers, 1);
    if (info.meta.nservers == 1) {
        CHECK_EQ_STR(info.meta.servers[0].id, "c363633e-e293-9446-52ed-d19c54db1aa3");
        CHECK_EQ_STR(info.meta.servers[0].address, "127.0.0.1:8300");
        CHECK_EQ_INT(info.meta.servers[0].suffrage, CAIRN_SUFFRAGE_VOTER);
    }
    CHECK_EQ_INT(info.meta.configuration_index, 1);
    CHECK_EQ_INT(info.meta.size, 4518);
    struct cairn_snapshot_read_opts raw_consul = raw;
    raw_consul.three_members = 1;
    CHECK_OK(verify_bytes(&t, &raw_consul, NULL, &err), &err);
    CHECK_EQ_INT(info.state_len, 4518);
    CHECK_EQ_INT(info.meta_json_len, 513);
    cairn_snapshot_info_free(&info);
    /* gzipped and verified: the record padding is "1536 unread uncompressed bytes remain" */
    struct bytes gz = gzip_bytes(t.p, t.len, NULL, NULL);
    CHECK_ERR(verify_bytes(&gz, NULL, NULL, &err), CAIRN_E_CORRUPT, &err,
              "1536 unread uncompressed bytes remain");
    CHECK_EQ_STR(err.msg, "1536 unread uncompressed bytes remain");
    bytes_free(&gz);
    bytes_free(&t);
    free(p);

    p = fixture("raft-snapshot-corrupt-state.tar");
    t = read_whole(p);
    CHECK_ERR(verify_bytes(&t, &raw, &info, &err), CAIRN_E_CORRUPT, &err,
              "hash check failed for \"state.bin\"");
    CHECK_EQ_STR(err.msg, "failed to read snapshot file: failed checking integrity of snapshot: "
                          "hash check failed for \"state.bin\"");
    CHECK_EQ_STR(info.meta.id, "2-5-1476421566599");
    CHECK_EQ_INT(info.meta.index, 5);
    CHECK_EQ_INT(info.meta.size, 625);
    CHECK_EQ_INT(info.state_len, 634);
    cairn_snapshot_info_free(&info);
    bytes_free(&t);
    free(p);

    p = fixture("raft-snapshot-extra.tar");
    t = read_whole(p);
    CHECK_ERR(verify_bytes(&t, &raw, &info, &err), CAIRN_E_CORRUPT, &err,
              "unexpected file \"nope\" in snapshot");
    CHECK_EQ_STR(err.msg, "failed to read snapshot file: unexpected file \"nope\" in snapshot");
    CHECK_EQ_INT(info.meta.index, 5);
    CHECK_EQ_INT(info.meta.term, 2);
    cairn_snapshot_info_free(&info);
    bytes_free(&t);
    free(p);
}

struct restore_ctx {
    int called;
    struct bytes got;
};

static int restore_fn(void *arg, const struct cairn_snapshot_meta *m, struct cairn_reader *r,
                      struct cairn_err *err)
{
    struct restore_ctx *c = arg;
    c->called++;
    CHECK_EQ_INT(m->index, 10);
    struct cairn_writer *w = capture_new(&c->got);
    int rc = cairn_copy(r, w, NULL, err);
    cairn_writer_free(w);
    return rc;
}

TEST(restore_hands_over_only_verified_state)
{
    size_t n = 70000;
    uint8_t *state = gen_state(n);
    struct bytes a = write_archive(CAIRN_SNAPSHOT_GZIP, state, n, NULL, 1700000000);
    struct cairn_err err;
    struct restore_ctx c = {0};
    struct cairn_snapshot_read_opts o = {0};
    o.tmpdir = test_tmpdir();
    struct cairn_reader *r = cairn_mem_reader_new(a.p, a.len);
    CHECK_OK(cairn_snapshot_restore(r, &o, restore_fn, &c, NULL, &err), &err);
    cairn_reader_free(r);
    CHECK_EQ_INT(c.called, 1);
    CHECK(c.got.len == n && memcmp(c.got.p, state, n) == 0);
    bytes_free(&c.got);
    /* corrupt the SHA256SUMS (the state itself arrives intact before the check) */
    struct bytes t = inflate_all(&a);
    size_t sums_data = t.len - 1024 - 512;
    t.p[sums_data] = t.p[sums_data] == 'a' ? 'b' : 'a';
    struct bytes gz = gzip_bytes(t.p, t.len, NULL, NULL);
    memset(&c, 0, sizeof(c));
    r = cairn_mem_reader_new(gz.p, gz.len);
    CHECK_ERR(cairn_snapshot_restore(r, &o, restore_fn, &c, NULL, &err), CAIRN_E_CORRUPT, &err,
              "hash check failed for \"meta.json\"");
    cairn_reader_free(r);
    CHECK_EQ_INT(c.called, 0);
    /* no temp file left behind */
    char *ls = xasprintf("test -z \"$(ls -A '%s')\"", test_tmpdir());
    CHECK(system(ls) == 0);
    free(ls);
    bytes_free(&gz);
    bytes_free(&t);
    bytes_free(&a);
    free(state);
}

/* A zstd skippable frame (magic 0x184D2A50..5F, 32-bit length, payload). */
static void skippable(struct bytes *b, unsigned nibble, const void *payload, uint32_t len)
{
    uint8_t h[8] = {(uint8_t)(0x50 | nibble),
                    0x2a,
                    0x4d,
                    0x18,
                    (uint8_t)len,
                    (uint8_t)(len >> 8),
                    (uint8_t)(len >> 16),
                    (uint8_t)(len >> 24)};
    bytes_add(b, h, 8);
    bytes_add(b, payload, len);
}

static struct bytes zstd_frame(const void *d, size_t n)
{
    struct bytes out = {0};
    struct cairn_err err;
    struct cairn_writer *w = cairn_zstd_writer_new(capture_new(&out), 3, 1);
    CHECK_OK(cairn_writer_write(w, d, n, &err), &err);
    CHECK_OK(cairn_writer_close(w, &err), &err);
    cairn_writer_free(w);
    return out;
}

TEST(zstd_skippable_frames_are_skipped)
{
    /* Real pzstd output (pzstd -p 2 -3 of a cairn tar; tests/archive/data/README): three
     * frames, each behind a skippable frame holding its size. */
    struct cairn_err err;
    struct cairn_snapshot_info info;
    char *path = xasprintf("%s/tests/archive/data/pzstd.snap", test_source_dir());
    struct bytes p = {0};
    size_t plen;
    CHECK_OK(read_file_max(path, 1u << 20, &p.p, &plen, &err), &err);
    p.len = plen;
    free(path);
    CHECK(cairn_detect_compression(p.p, p.len) == CAIRN_COMPRESS_ZSTD);
    struct bytes line = {0};
    for (int i = 0; i < 100; i++) {
        char l[32];
        snprintf(l, sizeof(l), "raft fsm record %04d\n", i);
        bytes_str(&line, l);
    }
    struct bytes want = {xmalloc(line.len * 8000), line.len * 8000, 0};
    for (int i = 0; i < 8000; i++)
        memcpy(want.p + (size_t)i * line.len, line.p, line.len);
    bytes_free(&line);
    uint8_t state_sha[32];
    cairn_sha256_oneshot(want.p, want.len, state_sha);
    CHECK_OK(verify_bytes(&p, NULL, &info, &err), &err);
    CHECK_EQ_INT(info.flavour, CAIRN_SNAPSHOT_ZSTD);
    CHECK_EQ_INT(info.meta.index, 42);
    CHECK_EQ_INT(info.meta.term, 3);
    CHECK_EQ_STR(info.meta.id, "3-42-1700000000000");
    CHECK_EQ_INT(info.state_len, want.len);
    CHECK(memcmp(info.state_sha256, state_sha, 32) == 0);
    CHECK_EQ_INT(info.archive_bytes, p.len);
    cairn_snapshot_info_free(&info);

    /* Constructed: a skippable frame first, another between two frames, and a seekable-zstd
     * seek table (magic ...5E, footer 0x8F92EAB1) after the last. */
    uint8_t *state = gen_state(300000);
    struct bytes gz = write_archive(CAIRN_SNAPSHOT_GZIP, state, 300000, NULL, 1700000000);
    struct bytes tar = inflate_all(&gz);
    bytes_free(&gz);
    struct bytes f1 = zstd_frame(tar.p, tar.len / 2);
    struct bytes f2 = zstd_frame(tar.p + tar.len / 2, tar.len - tar.len / 2);
    struct bytes a = {0};
    skippable(&a, 0x0, "pzstd\0\0", 7);
    bytes_add(&a, f1.p, f1.len);
    skippable(&a, 0x3, "", 0);
    bytes_add(&a, f2.p, f2.len);
    uint8_t seek[2 * 8 + 9] = {0};
    uint32_t sizes[4] = {(uint32_t)f1.len, (uint32_t)(tar.len / 2), (uint32_t)f2.len,
                         (uint32_t)(tar.len - tar.len / 2)};
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 4; k++)
            seek[i * 4 + k] = (uint8_t)(sizes[i] >> (8 * k));
    seek[16] = 2; /* frames */
    memcpy(seek + 21, "\xb1\xea\x92\x8f", 4);
    skippable(&a, 0xe, seek, sizeof(seek));
    CHECK(cairn_detect_compression(a.p, a.len) == CAIRN_COMPRESS_ZSTD);
    CHECK_OK(verify_bytes(&a, NULL, &info, &err), &err);
    CHECK_EQ_INT(info.flavour, CAIRN_SNAPSHOT_ZSTD);
    CHECK_EQ_INT(info.state_len, 300000);
    cairn_snapshot_info_free(&info);
    struct bytes out = {0};
    struct cairn_reader *r = cairn_mem_reader_new(a.p, a.len);
    CHECK_OK(snapshot_extract_into(r, NULL, capture_new(&out), NULL, &err), &err);
    cairn_reader_free(r);
    CHECK(out.committed && out.len == 300000 && memcmp(out.p, state, 300000) == 0);
    bytes_free(&out);
    /* A skippable frame cut short is truncation. */
    struct bytes cut = {0};
    bytes_add(&cut, a.p, a.len - 3);
    CHECK_ERR(verify_bytes(&cut, NULL, NULL, &err), CAIRN_E_CORRUPT, &err, "zstd");
    bytes_free(&cut);
    bytes_free(&a);
    bytes_free(&f1);
    bytes_free(&f2);
    bytes_free(&tar);
    bytes_free(&want);
    bytes_free(&p);
    free(state);
}

TEST(extract_discards_output_of_a_bad_archive)
{
    uint8_t *state = gen_state(5000);
    struct bytes a = write_archive(CAIRN_SNAPSHOT_ZSTD, state, 5000, NULL, 1700000000);
    a.p[a.len / 2] ^= 0x40;
    struct bytes out = {0};
    struct cairn_err err;
    struct cairn_reader *r = cairn_mem_reader_new(a.p, a.len);
    CHECK(snapshot_extract_into(r, NULL, capture_new(&out), NULL, &err) != CAIRN_OK);
    CHECK_EQ_INT(out.committed, 0);
    cairn_reader_free(r);
    bytes_free(&out);
    bytes_free(&a);
    free(state);
}

TEST(write_refuses_a_state_of_the_wrong_length)
{
    struct cairn_err err;
    struct cairn_snapshot_meta m;
    test_meta(&m, 100);
    struct bytes out = {0};
    struct cairn_reader *r = cairn_mem_reader_new("short", 5);
    CHECK_ERR(snapshot_write_into(capture_new(&out), &m, r, NULL, NULL, &err), CAIRN_E_INVALID,
              &err, "state stream ended after 5 of the 100 bytes declared");
    CHECK_EQ_INT(out.committed, 0);
    cairn_reader_free(r);
    bytes_free(&out);
    test_meta(&m, 3);
    r = cairn_mem_reader_new("longer", 6);
    CHECK_ERR(snapshot_write_into(capture_new(&out), &m, r, NULL, NULL, &err), CAIRN_E_INVALID,
              &err, "state stream is longer than the 3 bytes declared");
    CHECK_EQ_INT(out.committed, 0);
    cairn_reader_free(r);
    bytes_free(&out);
}

/* Write and extract borrow their writer: it is flushed into but stays open, so the caller can
 * go on writing, and only the caller's close commits it. The same after a failure. */
TEST(write_and_extract_leave_the_callers_writer_open)
{
    struct cairn_err err;
    const char state[] = "the state";
    struct cairn_snapshot_meta m;
    test_meta(&m, sizeof(state) - 1);
    struct bytes out = {0};
    struct cairn_writer *w = capture_new(&out);
    struct cairn_reader *r = cairn_mem_reader_new(state, sizeof(state) - 1);
    struct cairn_snapshot_write_result res;
    CHECK_OK(cairn_snapshot_write(w, &m, r, NULL, &res, &err), &err);
    cairn_reader_free(r);
    CHECK_EQ_INT(w->state, CAIRN_IO_OPEN);
    CHECK_EQ_INT(out.committed, 0);
    CHECK_EQ_INT(out.len, res.archive_bytes); /* everything was flushed into it */
    CHECK_OK(cairn_writer_write(w, "after", 5, &err), &err);
    CHECK_OK(cairn_writer_close(w, &err), &err);
    CHECK(out.committed);
    cairn_writer_free(w);
    CHECK(memcmp(out.p + res.archive_bytes, "after", 5) == 0);
    out.len = (size_t)res.archive_bytes;
    CHECK_OK(verify_bytes(&out, NULL, NULL, &err), &err);

    struct bytes st = {0};
    w = capture_new(&st);
    r = cairn_mem_reader_new(out.p, out.len);
    CHECK_OK(cairn_snapshot_extract(r, NULL, w, NULL, &err), &err);
    CHECK_EQ_INT(w->state, CAIRN_IO_OPEN);
    CHECK_EQ_INT(st.committed, 0);
    CHECK_OK(cairn_writer_write(w, "!", 1, &err), &err);
    CHECK_OK(cairn_writer_close(w, &err), &err);
    cairn_writer_free(w);
    cairn_reader_free(r);
    CHECK_EQ_STR((const char *)st.p, "the state!");
    bytes_free(&st);

    /* A failed write (state too short) or extract (truncated archive) leaves it open too. */
    test_meta(&m, 100);
    struct bytes junk = {0};
    w = capture_new(&junk);
    r = cairn_mem_reader_new(state, sizeof(state) - 1);
    CHECK_EQ_INT(cairn_snapshot_write(w, &m, r, NULL, NULL, NULL), CAIRN_E_INVALID);
    cairn_reader_free(r);
    CHECK_EQ_INT(w->state, CAIRN_IO_OPEN);
    r = cairn_mem_reader_new(out.p, out.len - 1);
    CHECK(cairn_snapshot_extract(r, NULL, w, NULL, NULL) != CAIRN_OK);
    cairn_reader_free(r);
    CHECK_EQ_INT(w->state, CAIRN_IO_OPEN);
    CHECK_EQ_INT(junk.committed, 0);
    cairn_writer_free(w);
    bytes_free(&junk);
    bytes_free(&out);
}

TEST(snapshot_object_spools_unknown_length)
{
    size_t n = 600000;
    uint8_t *state = gen_state(n);
    struct cairn_err err;
    struct cairn_snapshot_meta m;
    test_meta(&m, 0);
    struct cairn_snapshot *s;
    struct cairn_reader *r = cairn_mem_reader_new(state, n);
    CHECK_OK(cairn_snapshot_new(r, -1, &m, NULL, test_tmpdir(), &s, &err), &err);
    cairn_reader_free(r);
    CHECK_EQ_INT(cairn_snapshot_index(s), 10);
    CHECK_EQ_INT(cairn_snapshot_term(s), 2);
    CHECK_EQ_INT(cairn_snapshot_state_size(s), n);
    struct bytes a = {0};
    uint8_t buf[10000];
    size_t got;
    CHECK_OK(cairn_snapshot_read(s, buf, sizeof(buf), &got, &err), &err);
    bytes_add(&a, buf, got);
    struct cairn_writer *w = capture_new(&a);
    CHECK_OK(cairn_copy(cairn_snapshot_reader(s), w, NULL, &err), &err);
    cairn_writer_free(w);
    CHECK_EQ_INT(a.len, cairn_snapshot_size(s));
    uint8_t sum[32];
    char want[64] = "sha-256=";
    cairn_sha256_oneshot(a.p, a.len, sum);
    cairn_base64_encode(sum, 32, want + 8);
    CHECK_EQ_STR(cairn_snapshot_checksum(s), want);
    CHECK_EQ_INT(strlen(cairn_snapshot_checksum(s)), 52);
    struct cairn_snapshot_info info;
    CHECK_OK(verify_bytes(&a, NULL, &info, &err), &err);
    CHECK_EQ_INT(info.meta.size, n);
    cairn_snapshot_info_free(&info);
    cairn_snapshot_free(s);
    /* temp files are unlinked at creation: the directory stays empty */
    char *ls = xasprintf("test -z \"$(ls -A '%s')\"", test_tmpdir());
    CHECK(system(ls) == 0);
    free(ls);
    bytes_free(&a);
    free(state);
}

TEST(meta_encoding_matches_go)
{
    struct cairn_snapshot_meta m = {0};
    m.version = 1;
    m.id = (char *)"a<b>&c\xe2\x80\xa8\x01\b\f\n\r\t\"\\\x7f\xff";
    m.index = UINT64_MAX;
    m.term = 1;
    m.peers = (uint8_t *)"\x91\xae"
                         "127.0.0.1:8300";
    m.peers_len = 16;
    struct cairn_snapshot_server sv[2] = {{0, (char *)"n1", (char *)"10.0.0.1:8300"},
                                          {2, (char *)"n2", (char *)"x"}};
    m.servers = sv;
    m.nservers = 2;
    m.configuration_index = 7;
    m.size = -1;
    char *j;
    size_t n;
    cairn_snapshot_meta_encode(&m, &j, &n);
    CHECK_EQ_STR(j, "{\"Version\":1,\"ID\":\"a\\u003cb\\u003e\\u0026c\\u2028\\u0001\\b\\f\\n\\r\\t"
                    "\\\"\\\\\x7f\\ufffd\",\"Index\":18446744073709551615,\"Term\":1,"
                    "\"Peers\":\"ka4xMjcuMC4wLjE6ODMwMA==\",\"Configuration\":{\"Servers\":["
                    "{\"Suffrage\":0,\"ID\":\"n1\",\"Address\":\"10.0.0.1:8300\"},"
                    "{\"Suffrage\":2,\"ID\":\"n2\",\"Address\":\"x\"}]},"
                    "\"ConfigurationIndex\":7,\"Size\":-1}\n");
    /* and decodes back (invalid UTF-8 became U+FFFD, as in Go) */
    struct cairn_err err;
    struct cairn_snapshot_meta d;
    CHECK_OK(cairn_snapshot_meta_decode(j, n, &d, &err), &err);
    CHECK_EQ_STR(d.id, "a<b>&c\xe2\x80\xa8\x01\b\f\n\r\t\"\\\x7f\xef\xbf\xbd");
    CHECK(d.index == UINT64_MAX);
    CHECK_EQ_INT(d.nservers, 2);
    CHECK_EQ_INT(d.size, -1);
    CHECK(d.peers_len == 16 && memcmp(d.peers, m.peers, 16) == 0);
    cairn_snapshot_meta_free(&d);
    free(j);
    struct cairn_snapshot_meta z = {0};
    cairn_snapshot_meta_encode(&z, &j, &n);
    CHECK_EQ_STR(j, "{\"Version\":0,\"ID\":\"\",\"Index\":0,\"Term\":0,\"Peers\":null,"
                    "\"Configuration\":{\"Servers\":null},\"ConfigurationIndex\":0,\"Size\":0}\n");
    free(j);
}

TEST(meta_round_trips_the_full_uint64_range)
{
    /* Index and Term are uint64 in Consul and Vault: every value the writer prints must come
     * back (20-digit ones overran the encoder's 64-byte scratch and were cut). */
    const uint64_t vals[] = {0, 1, 9999999999999999999ULL, 10000000000000000000ULL, UINT64_MAX};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        struct cairn_snapshot_meta m = {0};
        m.version = 1;
        m.id = (char *)"18446744073709551615-18446744073709551615-1767323045678";
        m.index = vals[i];
        m.term = UINT64_MAX - vals[i] / 2;
        m.configuration_index = vals[i];
        m.size = INT64_MAX;
        char *j;
        size_t n;
        cairn_snapshot_meta_encode(&m, &j, &n);
        CHECK_EQ_INT(n, strlen(j));
        struct cairn_err err;
        struct cairn_snapshot_meta d;
        CHECK_OK(cairn_snapshot_meta_decode(j, n, &d, &err), &err);
        CHECK(d.index == m.index && d.term == m.term);
        CHECK(d.configuration_index == m.configuration_index && d.size == INT64_MAX);
        CHECK_EQ_STR(d.id, m.id);
        cairn_snapshot_meta_free(&d);
        free(j);
    }
}

TEST(meta_decoding_follows_go_unmarshal)
{
    struct cairn_err err;
    struct cairn_snapshot_meta d;
    /* duplicate keys: last wins; arrays merge into the earlier elements, then truncate */
    const char *j = "{\"Index\":1,\"index\":2,\"Configuration\":{\"Servers\":[{\"ID\":\"a\","
                    "\"Address\":\"x\"},{\"ID\":\"b\"}]},\"configuration\":{\"servers\":"
                    "[{\"ID\":\"c\"}]},\"Peers\":[1,2,3],\"Term\":null,\"\\u0053ize\":4}";
    CHECK_OK(cairn_snapshot_meta_decode(j, strlen(j), &d, &err), &err);
    CHECK_EQ_INT(d.index, 2);
    CHECK_EQ_INT(d.nservers, 1);
    if (d.nservers == 1) {
        CHECK_EQ_STR(d.servers[0].id, "c");
        CHECK_EQ_STR(d.servers[0].address, "x");
    }
    CHECK(d.peers_len == 3 && d.peers[2] == 3);
    CHECK_EQ_INT(d.size, 4);
    cairn_snapshot_meta_free(&d);
    const char *bad[] = {"{\"Index\":-0}",
                         "{\"Index\":1e2}",
                         "{\"Size\":9223372036854775808}",
                         "{\"Peers\":[256]}",
                         "{\"ID\":5}",
                         "{\"Index\":01}",
                         "{\"a\":\"\x01\"}",
                         "{\"a\":tru}",
                         "{,}",
                         "",
                         "  "};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK(cairn_snapshot_meta_decode(bad[i], strlen(bad[i]), &d, &err) == CAIRN_E_CORRUPT);
    }
    /* deep nesting in an unknown key: bounded, no recursion */
    struct bytes deep = {0};
    bytes_str(&deep, "{\"x\":");
    for (int i = 0; i < 20000; i++)
        bytes_str(&deep, "[");
    CHECK_ERR(cairn_snapshot_meta_decode((char *)deep.p, deep.len, &d, &err), CAIRN_E_CORRUPT, &err,
              "exceeded max depth");
    bytes_free(&deep);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
