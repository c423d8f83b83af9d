/* A deliberately small XML element extractor for S3 responses. S3 response documents are
 * flat and attribute-free below the root, so we only need "find the next <Tag>...</Tag>
 * inside a range" plus entity decoding. Never reads outside [p, end). */
#ifndef CAIRN_S3_XML_H
#define CAIRN_S3_XML_H

#include <stddef.h>

struct xml_span {
    const char *p;
    size_t len;
};

/* Find the next element <tag> (no attributes; "<tag/>" counts as empty) in [*pos, end).
 * On success sets *inner to its content, advances *pos past the closing tag, returns 1.
 * Returns 0 when there is none (or it is unterminated). */
int s3_xml_next(const char **pos, const char *end, const char *tag, struct xml_span *inner);
/* Decode entities of a text span into a malloc'd NUL-terminated string; NULL if malformed. */
char *s3_xml_text(struct xml_span s);
/* Convenience: first <tag> text in [p, end) decoded, or NULL. */
char *s3_xml_get(const char *p, const char *end, const char *tag);
/* Escape s for use as XML text; malloc'd. */
char *s3_xml_escape(const char *s);

#endif
