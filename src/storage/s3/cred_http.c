/* S3 driver: the credential providers that talk HTTP: STS (AssumeRole, signed with SigV4 by
 * libcurl; AssumeRoleWithWebIdentity, unsigned), ECS container credentials and EC2 instance
 * metadata (IMDSv2). Secrets never reach a message: errors name the provider, the URL and
 * the HTTP status, and STS's error code and message. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cairn/log.h"
#include "common/buf.h"
#include "common/util.h"
#include "s3.h"
#include "xml.h"

#define RESP_MAX 65536

struct req {
    const char *method; /* GET PUT POST */
    const char *url;
    const char *body;           /* POST/PUT body or NULL */
    const char *hdr[3];         /* extra headers, NULL-terminated */
    const struct s3_cred *sign; /* SigV4 with these (service sts), or NULL */
    const char *region;
    long connect_ms, total_ms;
    /* response */
    long status;
    struct buf resp;
    int big;
};

static size_t on_resp(char *p, size_t sz, size_t n, void *arg)
{
    struct req *r = arg;
    if (r->resp.len + sz * n > RESP_MAX) {
        r->big = 1;
        return 0;
    }
    buf_add(&r->resp, p, sz * n);
    return sz * n;
}

/* One request; CAIRN_OK once an HTTP answer came (any status), else a network error. */
static int http(struct req *r, const char *what, struct cairn_err *err)
{
    CURL *h = curl_easy_init();
    if (h == NULL)
        abort();
    struct curl_slist *hl = NULL;
    for (int i = 0; i < 3 && r->hdr[i]; i++)
        hl = curl_slist_append(hl, r->hdr[i]);
    char *sigv4 = NULL, *tok = NULL;
    if (r->sign != NULL) {
        sigv4 = xasprintf("aws:amz:%s:sts", r->region);
        curl_easy_setopt(h, CURLOPT_AWS_SIGV4, sigv4);
        curl_easy_setopt(h, CURLOPT_USERNAME, r->sign->access);
        curl_easy_setopt(h, CURLOPT_PASSWORD, r->sign->secret);
        if (r->sign->token != NULL) {
            tok = xasprintf("x-amz-security-token: %s", r->sign->token);
            hl = curl_slist_append(hl, tok);
        }
    }
    curl_easy_setopt(h, CURLOPT_URL, r->url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_resp);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, r->connect_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, r->total_ms);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    if (r->body != NULL) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, r->body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(r->body));
    }
    if (strcmp(r->method, "POST") != 0 || r->body == NULL)
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, r->method);
    char curlerr[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curlerr);
    CURLcode cc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_cleanup(h);
    curl_slist_free_all(hl);
    wipe_free(tok);
    free(sigv4);
    if (cc == CURLE_WRITE_ERROR && r->big)
        return cairn_err_set(err, CAIRN_E_PROTOCOL, "%s: answer larger than %d bytes", what,
                             RESP_MAX);
    if (cc != CURLE_OK)
        return cairn_err_set(err, CAIRN_E_NETWORK, "%s: %s", what,
                             curlerr[0] ? curlerr : curl_easy_strerror(cc));
    if (r->resp.p == NULL)
        buf_adds(&r->resp, "");
    return CAIRN_OK;
}

static void req_done(struct req *r)
{
    wipe(r->resp.p, r->resp.len);
    buf_free(&r->resp);
}

/* A non-2xx answer: 401/403 are the provider refusing us (exit 9), others protocol errors. */
static int http_status_err(const struct req *r, const char *what, const char *detail,
                           struct cairn_err *err)
{
    int code = r->status == 401 || r->status == 403 ? CAIRN_E_DENIED : CAIRN_E_PROTOCOL;
    return cairn_err_set(err, code, "%s: HTTP %ld%s%s", what, r->status, detail ? ": " : "",
                         detail ? detail : "");
}

static long env_ms(const char *name, long def_ms)
{
    const char *v = getenv(name);
    double s = v && *v ? strtod(v, NULL) : 0;
    return s > 0 ? (long)(s * 1000) : def_ms;
}

/* --- STS --- */

static char *sts_endpoint(const char *region)
{
    const char *e = getenv("AWS_ENDPOINT_URL_STS");
    if (e == NULL || *e == '\0')
        e = getenv("AWS_ENDPOINT_URL");
    char *url = e && *e ? xstrdup(e) : xasprintf("https://sts.%s.amazonaws.com", region);
    size_t l = strlen(url);
    while (l > 0 && url[l - 1] == '/')
        url[--l] = '\0';
    char *out = xasprintf("%s/", url);
    free(url);
    return out;
}

static void form_add(struct buf *b, const char *k, const char *v)
{
    if (v == NULL)
        return;
    char *e = s3_uri_encode(v, 0);
    buf_printf(b, "%s%s=%s", b->len ? "&" : "", k, e);
    wipe_free(e);
}

/* POST the form to STS; parse <Credentials> of the answer. */
static int sts_call(const char *region, const struct s3_cred *sign, const struct buf *form,
                    const char *what, struct s3_cred *out, struct cairn_err *err)
{
    char *url = sts_endpoint(region);
    struct req r = {.method = "POST",
                    .url = url,
                    .body = (const char *)form->p,
                    .hdr = {"Content-Type: application/x-www-form-urlencoded; charset=utf-8",
                            "Accept: application/xml"},
                    .sign = sign,
                    .region = region,
                    .connect_ms = 10000,
                    .total_ms = 60000};
    char w[512];
    snprintf(w, sizeof(w), "%s (%s)", what, url);
    int rc = http(&r, w, err);
    const char *p = (const char *)r.resp.p, *end = p ? p + r.resp.len : NULL;
    if (rc == CAIRN_OK && (r.status < 200 || r.status > 299)) {
        char *code = s3_xml_get(p, end, "Code"), *msg = s3_xml_get(p, end, "Message");
        char *detail = code ? xasprintf("%s%s%s", code, msg ? ": " : "", msg ? msg : "") : NULL;
        rc = http_status_err(&r, w, detail, err);
        free(detail);
        free(code);
        free(msg);
    }
    if (rc == CAIRN_OK) {
        out->access = s3_xml_get(p, end, "AccessKeyId");
        out->secret = s3_xml_get(p, end, "SecretAccessKey");
        out->token = s3_xml_get(p, end, "SessionToken");
        char *exp = s3_xml_get(p, end, "Expiration");
        long ns = 0;
        if (out->access == NULL || out->secret == NULL || out->token == NULL || exp == NULL ||
            parse_rfc3339(exp, &out->expires, &ns) != 0) {
            s3_cred_clear(out);
            rc = cairn_err_set(err, CAIRN_E_PROTOCOL,
                               "%s: answer lacks Credentials (AccessKeyId, SecretAccessKey, "
                               "SessionToken, Expiration)",
                               w);
        }
        free(exp);
    }
    req_done(&r);
    free(url);
    return rc;
}

static const char *session_name(const char *given, char *buf, size_t cap)
{
    if (given != NULL && *given != '\0')
        return given;
    snprintf(buf, cap, "cairn-%llu", (unsigned long long)now_ms());
    return buf;
}

int s3_cred_assume_role(const char *region, const struct s3_cred *src, const char *role_arn,
                        const char *session, const char *external_id, const char *duration,
                        struct s3_cred *out, struct cairn_err *err)
{
    char sn[64], what[400];
    struct buf form = {0};
    form_add(&form, "Action", "AssumeRole");
    form_add(&form, "Version", "2011-06-15");
    form_add(&form, "RoleArn", role_arn);
    form_add(&form, "RoleSessionName", session_name(session, sn, sizeof(sn)));
    form_add(&form, "ExternalId", external_id);
    form_add(&form, "DurationSeconds", duration);
    snprintf(what, sizeof(what), "STS AssumeRole of '%s' with credentials from %s", role_arn,
             src->provider);
    int rc = sts_call(region, src, &form, what, out, err);
    buf_free(&form);
    return rc;
}

int s3_cred_web_identity(const char *region, const char *token_file, const char *role_arn,
                         const char *session, struct s3_cred *out, struct cairn_err *err)
{
    char sn[64], what[400];
    snprintf(what, sizeof(what), "STS AssumeRoleWithWebIdentity of '%s'", role_arn);
    uint8_t *tok = NULL;
    size_t len = 0;
    int rc = read_file_max(token_file, 64 * 1024, &tok, &len, err);
    if (rc != CAIRN_OK)
        return cairn_err_wrap(err, rc, "%s: web identity token file", what);
    while (len > 0 && (tok[len - 1] == '\n' || tok[len - 1] == '\r'))
        tok[--len] = '\0';
    struct buf form = {0};
    form_add(&form, "Action", "AssumeRoleWithWebIdentity");
    form_add(&form, "Version", "2011-06-15");
    form_add(&form, "RoleArn", role_arn);
    form_add(&form, "RoleSessionName", session_name(session, sn, sizeof(sn)));
    form_add(&form, "WebIdentityToken", (const char *)tok);
    rc = sts_call(region, NULL, &form, what, out, err);
    wipe(form.p, form.len);
    buf_free(&form);
    wipe_free((char *)tok);
    return rc;
}

/* --- ECS container credentials --- */

/* The SDKs' rule for AWS_CONTAINER_CREDENTIALS_FULL_URI: https anywhere, http only to a
 * loopback address or the ECS/EKS agents (169.254.170.2, 169.254.170.23, fd00:ec2::23). */
static int full_uri_allowed(const char *uri)
{
    if (strncmp(uri, "https://", 8) == 0)
        return 1;
    if (strncmp(uri, "http://", 7) != 0)
        return 0;
    CURLU *u = curl_url();
    char *host = NULL;
    int ok = 0;
    if (curl_url_set(u, CURLUPART_URL, uri, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
        char h[64];
        snprintf(h, sizeof(h), "%s", host[0] == '[' ? host + 1 : host);
        char *rb = strchr(h, ']');
        if (rb)
            *rb = '\0';
        struct in_addr a4;
        struct in6_addr a6;
        ok = strcmp(h, "localhost") == 0 || strcmp(h, "169.254.170.2") == 0 ||
             strcmp(h, "169.254.170.23") == 0 || strcmp(h, "fd00:ec2::23") == 0 ||
             (inet_pton(AF_INET, h, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127) ||
             (inet_pton(AF_INET6, h, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6));
    }
    curl_free(host);
    curl_url_cleanup(u);
    return ok;
}

/* The Authorization header value: AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE (read each time,
 * as EKS Pod Identity rotates it), else AWS_CONTAINER_AUTHORIZATION_TOKEN. */
static int container_auth(char **hdr, struct cairn_err *err)
{
    const char *file = getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
    const char *tok = getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN");
    *hdr = NULL;
    if (file != NULL && *file != '\0') {
        uint8_t *d = NULL;
        size_t len = 0;
        int rc = read_file_max(file, 16 * 1024, &d, &len, err);
        if (rc != CAIRN_OK)
            return cairn_err_wrap(err, rc, "container credentials: authorization token file");
        while (len > 0 && (d[len - 1] == '\n' || d[len - 1] == '\r'))
            d[--len] = '\0';
        *hdr = xasprintf("Authorization: %s", (char *)d);
        wipe_free((char *)d);
    } else if (tok != NULL && *tok != '\0') {
        *hdr = xasprintf("Authorization: %s", tok);
    }
    if (*hdr != NULL && strpbrk(*hdr + 15, "\r\n") != NULL) {
        wipe_free(*hdr);
        *hdr = NULL;
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "container credentials: the authorization token has a line break");
    }
    return CAIRN_OK;
}

int s3_cred_container(int *configured, struct s3_cred *out, struct cairn_err *err)
{
    const char *rel = getenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    const char *full = getenv("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    *configured = (rel && *rel) || (full && *full);
    if (!*configured)
        return CAIRN_OK;
    char *url = rel && *rel ? xasprintf("http://169.254.170.2%s", rel) : xstrdup(full);
    char what[400];
    snprintf(what, sizeof(what), "ECS container credentials (%s)", url);
    if (!(rel && *rel) && !full_uri_allowed(url)) {
        int rc = cairn_err_set(err, CAIRN_E_INVALID,
                               "%s: AWS_CONTAINER_CREDENTIALS_FULL_URI must be https, or http to "
                               "a loopback address or 169.254.170.2/169.254.170.23",
                               what);
        free(url);
        return rc;
    }
    char *auth = NULL;
    int rc = container_auth(&auth, err);
    struct req r = {
        .method = "GET", .url = url, .hdr = {auth}, .connect_ms = 2000, .total_ms = 10000};
    if (rc == CAIRN_OK)
        rc = http(&r, what, err);
    if (rc == CAIRN_OK && r.status != 200)
        rc = http_status_err(&r, what, NULL, err);
    if (rc == CAIRN_OK)
        rc = s3_cred_from_json((const char *)r.resp.p, r.resp.len, what, out, err);
    req_done(&r);
    wipe_free(auth);
    free(url);
    return rc;
}

/* --- EC2 instance metadata (IMDSv2) --- */

/* GET path with the session token; the body (trimmed) into *out. */
static int imds_get(const char *base, const char *path, const char *tokhdr, long connect_ms,
                    char **out, struct cairn_err *err)
{
    char *url = xasprintf("%s%s", base, path);
    char what[300];
    snprintf(what, sizeof(what), "EC2 instance metadata (GET %s)", url);
    struct req r = {.method = "GET",
                    .url = url,
                    .hdr = {tokhdr},
                    .connect_ms = connect_ms,
                    .total_ms = connect_ms + 5000};
    int rc = http(&r, what, err);
    if (rc == CAIRN_OK && r.status != 200)
        rc = http_status_err(&r, what,
                             r.status == 404 ? "no IAM role attached to this instance" : NULL, err);
    if (rc == CAIRN_OK)
        *out = xstrdup((const char *)r.resp.p);
    req_done(&r);
    free(url);
    return rc;
}

/* IMDSv2: PUT /latest/api/token, then the role name, then its credentials. Timeouts as the
 * SDKs': AWS_METADATA_SERVICE_TIMEOUT (1 s) per connect, so a host without IMDS fails fast. */
int s3_cred_imds(struct s3_cred *out, struct cairn_err *err)
{
    const char *ep = getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT");
    const char *mode = getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE");
    const char *def =
        mode && strcasecmp(mode, "IPv6") == 0 ? "http://[fd00:ec2::254]" : "http://169.254.169.254";
    char *base = xstrdup(ep && *ep ? ep : def);
    size_t l = strlen(base);
    while (l > 0 && base[l - 1] == '/')
        base[--l] = '\0';
    long cms = env_ms("AWS_METADATA_SERVICE_TIMEOUT", 1000);
    char *url = xasprintf("%s/latest/api/token", base), what[300];
    snprintf(what, sizeof(what), "EC2 instance metadata (PUT %s)", url);
    struct req r = {.method = "PUT",
                    .url = url,
                    .body = "",
                    .hdr = {"X-aws-ec2-metadata-token-ttl-seconds: 21600"},
                    .connect_ms = cms,
                    .total_ms = cms + 5000};
    int rc = http(&r, what, err);
    if (rc == CAIRN_OK && r.status != 200)
        rc = http_status_err(&r, what, "no IMDSv2 session token", err);
    char *tokhdr =
        rc == CAIRN_OK ? xasprintf("X-aws-ec2-metadata-token: %s", (char *)r.resp.p) : NULL;
    req_done(&r);
    free(url);
    char *role = NULL, *json = NULL;
    const char *dir = "/latest/meta-data/iam/security-credentials/";
    if (rc == CAIRN_OK)
        rc = imds_get(base, dir, tokhdr, cms, &role, err);
    if (rc == CAIRN_OK) {
        role[strcspn(role, "\r\n")] = '\0';
        char *path = xasprintf("%s%s", dir, role);
        rc = imds_get(base, path, tokhdr, cms, &json, err);
        free(path);
    }
    if (rc == CAIRN_OK) {
        snprintf(what, sizeof(what), "EC2 instance metadata (%s, role '%s')", base, role);
        rc = s3_cred_from_json(json, strlen(json), what, out, err);
        wipe_free(json);
    }
    free(role);
    wipe_free(tokhdr);
    free(base);
    return rc;
}
