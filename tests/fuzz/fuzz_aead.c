/* libFuzzer target for the decrypting reader of encrypted repository objects (io/aead.c,
 * stream version 2, as storage_read builds it): bytes that do not authenticate must be
 * CAIRN_E_CORRUPT with a message naming the object, never a crash or a read out of bounds,
 * whatever the read sizes. Input: byte 0 picks the mode, bytes 1-2 the read size.
 *   mode & 1: the rest is the stored object itself (it can never authenticate);
 *   else:     the rest is a plaintext, encrypted here in 4 KiB chunks, then changed per
 *             mode >> 1: 0 unchanged (must read back exactly), 1 a byte flipped, 2 cut,
 *             3 two chunks swapped, 4 a chunk repeated; only "unchanged" may succeed. */
#include <stdlib.h>
#include <string.h>

#include "cairn/io.h"
#include "io/aead.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHUNK 4096
#define CL    (CHUNK + 16)

static const uint8_t key[32] = {7, 1, 2, 3};
static const char ad[] = "cairn object v1\0fuzz\0file";
static const struct aead_stream_opts opts = {ad, sizeof(ad), CHUNK, CAIRN_E_CORRUPT,
                                             "stored object 'fuzz/file'"};

/* Read all of src through the reader in pieces of cap; the plaintext into *out. */
static int read_all_of(const uint8_t *src, size_t n, size_t cap, uint8_t **out, size_t *len,
                       struct cairn_err *err)
{
    struct cairn_reader *r = aead_stream_reader_new(cairn_mem_reader_new(src, n), key, &opts);
    uint8_t *buf = malloc(cap);
    size_t got = 0, have = 0, room = 0;
    uint8_t *o = NULL;
    int rc;
    do {
        rc = cairn_reader_read(r, buf, cap, &got, err);
        if (rc == CAIRN_OK && got > 0) {
            if (have + got > room)
                o = realloc(o, room = 2 * (have + got));
            memcpy(o + have, buf, got);
            have += got;
        }
    } while (rc == CAIRN_OK && got > 0);
    free(buf);
    cairn_reader_free(r);
    *out = o;
    *len = have;
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    unsigned mode = data[0];
    size_t cap = ((size_t)data[1] | (size_t)data[2] << 8) % 9000 + 1;
    data += 3;
    size -= 3;
    struct cairn_err err;
    uint8_t *out = NULL;
    size_t len = 0;
    if (mode & 1) {
        int rc = read_all_of(data, size, cap, &out, &len, &err);
        if (rc != CAIRN_E_CORRUPT || strstr(err.msg, "fuzz/file") == NULL)
            abort();
        free(out);
        return 0;
    }
    struct cairn_writer *mem = cairn_mem_writer_new((size_t)1 << 30);
    struct cairn_writer *w = aead_stream_writer_new(cairn_writer_borrow(mem), key, &opts);
    if (cairn_writer_write(w, data, size, &err) != CAIRN_OK || cairn_writer_close(w, &err) != 0)
        abort();
    cairn_writer_free(w);
    size_t n = 0;
    const uint8_t *enc = cairn_mem_writer_data(mem, &n);
    uint8_t *ct = malloc(n + CL);
    memcpy(ct, enc, n);
    cairn_writer_free(mem);
    size_t chunks = (n - 32) / CL + ((n - 32) % CL != 0);
    unsigned change = (mode >> 1) % 5;
    size_t pick = size ? data[size / 2] * 7919u + size : 0;
    if (change == 1) {
        ct[pick % n] ^= (uint8_t)(1u << (mode >> 4 & 7));
    } else if (change == 2) {
        n = pick % n; /* shorter by at least one byte */
    } else if (change == 3 && chunks >= 2) {
        size_t a = pick % (chunks - 1); /* chunk a with a + 1, both full but maybe the last */
        size_t lb = a + 1 == chunks - 1 ? n - 32 - (a + 1) * CL : CL;
        uint8_t *t = malloc(CL);
        memcpy(t, ct + 32 + a * CL, CL);
        memmove(ct + 32 + a * CL, ct + 32 + (a + 1) * CL, lb);
        memcpy(ct + 32 + a * CL + lb, t, CL);
        free(t);
    } else if (change == 4 && chunks >= 1) {
        size_t a = pick % chunks;
        size_t la = a == chunks - 1 ? n - 32 - a * CL : CL;
        memmove(ct + 32 + a * CL + la, ct + 32 + a * CL, n - 32 - a * CL);
        n += la;
    } else {
        change = 0;
    }
    int rc = read_all_of(ct, n, cap, &out, &len, &err);
    if (change == 0 && (rc != CAIRN_OK || len != size || (size && memcmp(out, data, size))))
        abort();
    if (change != 0 && (rc != CAIRN_E_CORRUPT || strstr(err.msg, "fuzz/file") == NULL))
        abort();
    free(out);
    free(ct);
    return 0;
}
