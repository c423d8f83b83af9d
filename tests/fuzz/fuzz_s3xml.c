/* Fuzz the S3 response extractor with the lookups the driver does. */
#include <stdint.h>
#include <stdlib.h>

#include "storage/s3/xml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    static const char *tags[] = {"Contents", "CommonPrefixes", "Error", "Key", "Code"};
    for (size_t t = 0; t < sizeof(tags) / sizeof(tags[0]); t++) {
        const char *pos = p;
        struct xml_span s;
        while (s3_xml_next(&pos, end, tags[t], &s)) {
            free(s3_xml_text(s));
            free(s3_xml_get(s.p, s.p + s.len, "Key"));
        }
    }
    free(s3_xml_get(p, end, "NextContinuationToken"));
    return 0;
}
