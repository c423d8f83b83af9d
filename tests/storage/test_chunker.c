/* The gear-hash chunker: sizes within bounds, boundaries independent of how the stream is
 * pushed, stable under an insertion earlier in the stream, and its speed (printed). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "storage/chunker.h"
#include "test.h"

static const struct chunker_params P = {512u * 1024, 1024u * 1024, 8u * 1024 * 1024};

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)(x >> 24);
    }
}

/* Chunk ends (offsets after each chunk) of p pushed in pieces of step bytes. */
static size_t cuts(const uint8_t *p, size_t n, size_t step, uint64_t *out, size_t cap)
{
    struct chunker c;
    uint8_t seed[32] = {1, 2, 3};
    chunker_init(&c, &P, seed);
    size_t k = 0, off = 0;
    while (off < n) {
        size_t len = n - off < step ? n - off : step;
        int cut;
        size_t t = chunker_push(&c, p + off, len, &cut);
        off += t;
        if (cut && k < cap)
            out[k++] = off;
    }
    if (k < cap && (k == 0 || out[k - 1] != n))
        out[k++] = n;
    return k;
}

TEST(params_are_checked)
{
    CHECK(chunker_params_check(&P) == 0);
    struct chunker_params bad = {1024, 1024 * 1024, 8 << 20};
    CHECK(chunker_params_check(&bad) != 0);
    struct chunker_params bad2 = {512 << 10, 1000000, 8 << 20};
    CHECK(chunker_params_check(&bad2) != 0);
}

TEST(sizes_are_within_bounds_and_push_size_does_not_matter)
{
    size_t n = 64u << 20;
    uint8_t *p = malloc(n);
    fill_random(p, n, 7);
    uint64_t a[512], b[512];
    size_t na = cuts(p, n, n, a, 512), nb = cuts(p, n, 4093, b, 512);
    CHECK(na == nb);
    CHECK(memcmp(a, b, na * sizeof(*a)) == 0);
    uint64_t prev = 0, sum = 0;
    for (size_t i = 0; i < na; i++) {
        uint64_t len = a[i] - prev;
        if (i + 1 < na)
            CHECK(len >= P.min);
        CHECK(len <= P.max);
        prev = a[i];
        sum += len;
    }
    CHECK(sum == n);
    double avg = (double)n / (double)na;
    printf("# %zu chunks, mean %.0f KiB\n", na, avg / 1024);
    CHECK(avg > 700 * 1024.0 && avg < 2048 * 1024.0);
    /* Zeros (no cut ever matches): forced cuts at max. */
    memset(p, 0, n);
    na = cuts(p, n, 1 << 20, a, 512);
    CHECK(na == 8);
    CHECK(a[0] == P.max);
    free(p);
}

TEST(an_insertion_moves_no_later_boundary)
{
    size_t n = 48u << 20, ins = 100;
    uint8_t *p = malloc(n), *q = malloc(n + ins);
    fill_random(p, n, 11);
    size_t at = 5u << 20; /* inside some chunk */
    memcpy(q, p, at);
    fill_random(q + at, ins, 99);
    memcpy(q + at + ins, p + at, n - at);
    uint64_t a[256], b[256];
    size_t na = cuts(p, n, 65536, a, 256), nb = cuts(q, n + ins, 65536, b, 256);
    /* Every boundary of the original after the insertion point plus one chunk reappears,
     * shifted by ins. */
    size_t same = 0, after = 0;
    for (size_t i = 0; i < na; i++) {
        if (a[i] <= at + P.max)
            continue;
        after++;
        for (size_t j = 0; j < nb; j++)
            if (b[j] == a[i] + ins) {
                same++;
                break;
            }
    }
    printf("# %zu of %zu later boundaries kept\n", same, after);
    CHECK(after > 10);
    CHECK(same == after);
    free(p);
    free(q);
}

TEST(speed)
{
    size_t n = 256u << 20;
    uint8_t *p = malloc(n);
    fill_random(p, n, 3);
    struct chunker c;
    uint8_t seed[32] = {0};
    chunker_init(&c, &P, seed);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    size_t off = 0, k = 0;
    while (off < n) {
        int cut;
        off += chunker_push(&c, p + off, n - off, &cut);
        k += cut;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("# chunker: %zu MiB in %.3f s = %.0f MB/s (%zu chunks; on a shared machine)\n", n >> 20,
           s, (double)n / s / 1e6, k);
    CHECK(k > 0);
    free(p);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
