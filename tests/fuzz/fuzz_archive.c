/* libFuzzer target: the snapshot archive verifier on arbitrary in-memory input, in both the
 * compressed (auto-detected) and the bare-tar mode, and the meta.json decoder alone. Nothing
 * may crash, leak or read out of bounds; memory stays bounded by the member caps. */
#include <stddef.h>
#include <stdint.h>

#include "cairn/snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cairn_err err;
    struct cairn_snapshot_info info;
    for (int raw = 0; raw < 2; raw++) {
        struct cairn_snapshot_read_opts o = {0};
        o.raw_tar = raw;
        o.member_cap = 64 * 1024;
        struct cairn_reader *r = cairn_mem_reader_new(data, size);
        (void)cairn_snapshot_verify(r, &o, &info, &err);
        cairn_snapshot_info_free(&info);
        cairn_reader_free(r);
    }
    struct cairn_snapshot_meta m;
    if (cairn_snapshot_meta_decode((const char *)data, size, &m, &err) == CAIRN_OK)
        cairn_snapshot_meta_free(&m);
    return 0;
}
