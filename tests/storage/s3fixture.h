/* Test fixtures for the storage suites: a real s3rver child process on a free loopback port
 * and a tiny fault-injecting HTTP proxy thread in front of it. Header-only (each test binary
 * includes it once). */
#ifndef CAIRN_TEST_S3FIXTURE_H
#define CAIRN_TEST_S3FIXTURE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cairn/digest.h"
#include "common/util.h"
#include "test.h"

#define S3_BUCKET "cairn-test"

static pid_t s3rver_pid;
static int s3rver_port;
static char s3rver_skip[512];
static char *s3rver_dir;

static void s3rver_stop(void)
{
    if (s3rver_pid > 0) {
        kill(s3rver_pid, SIGTERM);
        waitpid(s3rver_pid, NULL, 0);
        s3rver_pid = 0;
    }
    if (s3rver_dir != NULL) {
        struct cairn_err e;
        rmtree(s3rver_dir, &e);
        free(s3rver_dir);
        s3rver_dir = NULL;
    }
}

/* Start s3rver once per process; returns its port or 0 (s3rver_skip says why). */
static int s3rver_start(void)
{
    if (s3rver_port > 0 || s3rver_skip[0])
        return s3rver_port;
    /* CAIRN_S3RVER names another s3rver (or a missing one, to test the skip rules). */
    const char *env = getenv("CAIRN_S3RVER");
    char *bin = env && *env
                    ? xstrdup(env)
                    : xasprintf("%s/.cache/node/node_modules/.bin/s3rver", test_source_dir());
    if (access(bin, X_OK) != 0 || access("/usr/bin/node", X_OK) != 0) {
        snprintf(s3rver_skip, sizeof(s3rver_skip),
                 "s3rver not installed (%s); run scripts/deps.sh test", bin);
        free(bin);
        return 0;
    }
    char tmpl[] = "/tmp/cairn-s3rver-XXXXXX";
    if (mkdtemp(tmpl) == NULL) {
        snprintf(s3rver_skip, sizeof(s3rver_skip), "mkdtemp failed");
        free(bin);
        return 0;
    }
    s3rver_dir = xstrdup(tmpl);
    char *data = path_join(s3rver_dir, "data");
    char *log = path_join(s3rver_dir, "log");
    mkdir(data, 0700);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        /* s3rver's continuation tokens use DES, which Node >= 17 only has in OpenSSL's legacy
         * provider; without it every truncated listing is a 500. */
        setenv("NODE_OPTIONS", "--openssl-legacy-provider", 1);
        execl(bin, "s3rver", "-d", data, "-a", "127.0.0.1", "-p", "0", "--configure-bucket",
              S3_BUCKET, (char *)NULL);
        _exit(127);
    }
    s3rver_pid = pid;
    atexit(s3rver_stop);
    /* up to 120 s: a deadline for a hang, generous on a loaded machine */
    for (uint64_t end = mono_ns() + 120000000000ull; s3rver_port == 0 && mono_ns() < end;) {
        usleep(100000);
        uint8_t *txt = NULL;
        size_t len = 0;
        if (read_file_max(log, 1 << 20, &txt, &len, NULL) == CAIRN_OK) {
            const char *p = strstr((char *)txt, "listening on 127.0.0.1:");
            if (p != NULL)
                s3rver_port = atoi(p + strlen("listening on 127.0.0.1:"));
            free(txt);
        }
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            s3rver_pid = 0;
            snprintf(s3rver_skip, sizeof(s3rver_skip), "s3rver exited at startup (see %s)", log);
            break;
        }
    }
    if (s3rver_port == 0 && !s3rver_skip[0])
        snprintf(s3rver_skip, sizeof(s3rver_skip), "s3rver did not start within 30 s");
    setenv("AWS_ACCESS_KEY_ID", "S3RVER", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "S3RVER", 1);
    unsetenv("AWS_SESSION_TOKEN");
    free(bin);
    free(data);
    free(log);
    return s3rver_port;
}

/* ---- fault-injecting proxy ---- */

enum fault_mode { FAULT_503 = 0, FAULT_RESET = 1, FAULT_500 = 2 };

struct fault_proxy {
    int lfd;
    int port;
    int upstream_port;
    atomic_int faults;   /* requests still to fail */
    atomic_int injected; /* requests failed so far */
    atomic_int passed;   /* requests relayed */
    enum fault_mode mode;
    char match[32]; /* only requests starting with this ("PUT ") fail; "" = any */
    pthread_t th;
    atomic_int stop;
    atomic_int active;       /* connection threads alive */
    atomic_int sig_failures; /* requests whose SigV4 signature did not verify */
    char sig_error[512];     /* the first reason */
};

struct proxy_conn {
    struct fault_proxy *p;
    int fd;
};

static int read_head(int fd, char *buf, size_t cap, size_t *len, size_t *head_len)
{
    *len = 0;
    while (*len < cap - 1) {
        ssize_t n = read(fd, buf + *len, cap - 1 - *len);
        if (n <= 0)
            return -1;
        *len += (size_t)n;
        buf[*len] = '\0';
        char *e = strstr(buf, "\r\n\r\n");
        if (e != NULL) {
            *head_len = (size_t)(e - buf) + 4;
            return 0;
        }
    }
    return -1;
}

/* ---- an independent SigV4 verifier (s3rver itself does not check V4 signatures) ---- */

struct sbuf {
    char *p;
    size_t len, cap;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    /* The doubling below must not wrap (nor let len + n + 1 wrap past the check). */
    if (n > SIZE_MAX / 4 - b->len) {
        fprintf(stderr, "sigv4 proxy: %zu + %zu bytes do not fit a buffer\n", b->len, n);
        abort();
    }
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

/* Decode %XX then encode everything but unreserved (and '/' when keep_slash): AWS's form. */
static void sb_canon(struct sbuf *b, const char *s, size_t n, int keep_slash)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%' && i + 2 < n) {
            char hx[3] = {s[i + 1], s[i + 2], 0};
            c = (unsigned char)strtol(hx, NULL, 16);
            i += 2;
        }
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~' || (keep_slash && c == '/')) {
            char ch = (char)c;
            sb_add(b, &ch, 1);
        } else {
            char e[4];
            snprintf(e, sizeof(e), "%%%02X", c);
            sb_add(b, e, 3);
        }
    }
}

static int cmp_cstrp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void hmac(const void *key, size_t klen, const char *msg, uint8_t out[32])
{
    unsigned n = 32;
    HMAC(EVP_sha256(), key, (int)klen, (const uint8_t *)msg, strlen(msg), out, &n);
}

/* Header value (trimmed) of name in the request head, malloc'd, or NULL. */
static char *head_get(const char *head, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p && p[2] != '\r'; p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1, *e = strstr(v, "\r\n");
            while (*v == ' ' || *v == '\t')
                v++;
            while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            char *out = xmalloc((size_t)(e - v) + 1);
            memcpy(out, v, (size_t)(e - v));
            out[e - v] = '\0';
            return out;
        }
    }
    return NULL;
}

/* Returns 1 when the request's SigV4 signature and payload hash are right; else fills why. */
static int sigv4_verify(const char *head, const uint8_t *body, size_t blen, const char *secret,
                        char *why, size_t cap)
{
    int ok = 0;
    char *auth = head_get(head, "Authorization"), *date = head_get(head, "x-amz-date");
    char *psha = head_get(head, "x-amz-content-sha256");
    struct sbuf cr = {0}, sts = {0};
    char **qs = NULL;
    size_t nq = 0;
    if (!auth || !date || !psha) {
        snprintf(why, cap, "missing Authorization, x-amz-date or x-amz-content-sha256");
        goto out;
    }
    char cred[256] = "", signed_h[512] = "", sig[80] = "";
    const char *c = strstr(auth, "Credential="), *sh = strstr(auth, "SignedHeaders="),
               *sg = strstr(auth, "Signature=");
    if (!c || !sh || !sg || sscanf(c, "Credential=%255[^,]", cred) != 1 ||
        sscanf(sh, "SignedHeaders=%511[^,]", signed_h) != 1 ||
        sscanf(sg, "Signature=%79s", sig) != 1) {
        snprintf(why, cap, "malformed Authorization: %s", auth);
        goto out;
    }
    uint8_t d[32];
    char hex[65];
    if (body != NULL && strcmp(psha, "UNSIGNED-PAYLOAD") != 0) {
        cairn_sha256_oneshot(blen ? (const void *)body : "", blen, d);
        cairn_hex_encode(d, 32, hex);
        if (strcmp(hex, psha) != 0) {
            snprintf(why, cap, "x-amz-content-sha256 %s does not match the body", psha);
            goto out;
        }
    }
    /* Request line: METHOD TARGET HTTP/1.1 */
    const char *sp1 = strchr(head, ' '), *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2)
        goto out;
    sb_add(&cr, head, (size_t)(sp1 - head));
    sb_str(&cr, "\n");
    const char *target = sp1 + 1, *q = memchr(target, '?', (size_t)(sp2 - target));
    const char *pend = q ? q : sp2;
    sb_canon(&cr, target, (size_t)(pend - target), 1);
    sb_str(&cr, "\n");
    if (q != NULL) {
        char *query = xmalloc((size_t)(sp2 - q));
        memcpy(query, q + 1, (size_t)(sp2 - q - 1));
        query[sp2 - q - 1] = '\0';
        char *save = NULL;
        for (char *kv = strtok_r(query, "&", &save); kv; kv = strtok_r(NULL, "&", &save)) {
            struct sbuf one = {0};
            char *eq = strchr(kv, '=');
            sb_canon(&one, kv, eq ? (size_t)(eq - kv) : strlen(kv), 0);
            sb_str(&one, "=");
            if (eq)
                sb_canon(&one, eq + 1, strlen(eq + 1), 0);
            qs = xrealloc(qs, (nq + 1) * sizeof(*qs));
            qs[nq++] = one.p;
        }
        free(query);
        qsort(qs, nq, sizeof(*qs), cmp_cstrp);
        for (size_t i = 0; i < nq; i++) {
            if (i)
                sb_str(&cr, "&");
            sb_str(&cr, qs[i]);
        }
    }
    sb_str(&cr, "\n");
    char shcopy[512];
    snprintf(shcopy, sizeof(shcopy), "%s", signed_h);
    char *save = NULL;
    for (char *h = strtok_r(shcopy, ";", &save); h; h = strtok_r(NULL, ";", &save)) {
        char *v = head_get(head, h);
        if (v == NULL) {
            snprintf(why, cap, "signed header '%s' is not sent", h);
            goto out;
        }
        sb_str(&cr, h);
        sb_str(&cr, ":");
        sb_str(&cr, v);
        sb_str(&cr, "\n");
        free(v);
    }
    sb_str(&cr, "\n");
    sb_str(&cr, signed_h);
    sb_str(&cr, "\n");
    sb_str(&cr, psha);
    /* cred = AK/DATE/REGION/s3/aws4_request */
    char ak[64], day[16], region[64];
    if (sscanf(cred, "%63[^/]/%15[^/]/%63[^/]/s3/aws4_request", ak, day, region) != 3) {
        snprintf(why, cap, "bad credential scope '%s'", cred);
        goto out;
    }
    cairn_sha256_oneshot(cr.p, cr.len, d);
    cairn_hex_encode(d, 32, hex);
    sb_str(&sts, "AWS4-HMAC-SHA256\n");
    sb_str(&sts, date);
    sb_str(&sts, "\n");
    sb_str(&sts, cred + strlen(ak) + 1);
    sb_str(&sts, "\n");
    sb_str(&sts, hex);
    char k0[128];
    snprintf(k0, sizeof(k0), "AWS4%s", secret);
    uint8_t k1[32], k2[32], k3[32], k4[32], mac[32];
    hmac(k0, strlen(k0), day, k1);
    hmac(k1, 32, region, k2);
    hmac(k2, 32, "s3", k3);
    hmac(k3, 32, "aws4_request", k4);
    hmac(k4, 32, sts.p, mac);
    cairn_hex_encode(mac, 32, hex);
    if (strcmp(hex, sig) != 0) {
        snprintf(why, cap, "signature mismatch; canonical request was:\n%s", cr.p);
        goto out;
    }
    ok = 1;
out:
    for (size_t i = 0; i < nq; i++)
        free(qs[i]);
    free(qs);
    free(cr.p);
    free(sts.p);
    free(auth);
    free(date);
    free(psha);
    return ok;
}

static long content_length(const char *head)
{
    const char *p = strcasestr(head, "\r\nContent-Length:");
    return p ? strtol(p + 17, NULL, 10) : 0;
}

static int write_full(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void proxy_reply(int fd, const char *status, const char *code, const char *msg)
{
    char resp[1024];
    char xml[512];
    int xl = snprintf(xml, sizeof(xml),
                      "<?xml version=\"1.0\"?><Error><Code>%s</Code><Message>%s</Message></Error>",
                      code, msg);
    int n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 %s\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n\r\n%s",
                     status, xl, xml);
    write_full(fd, resp, (size_t)n);
}

static void *proxy_conn_thread(void *arg)
{
    struct proxy_conn *c = arg;
    struct fault_proxy *p = c->p;
    char *buf = xmalloc(65536);
    for (;;) {
        size_t len, hl;
        if (read_head(c->fd, buf, 65536, &len, &hl) != 0)
            break;
        /* Small bodies are buffered and checked before relaying; large ones (multipart parts)
         * are streamed and their payload hash checked at the end, to keep memory bounded. */
        size_t blen = (size_t)content_length(buf);
        size_t have = len - hl < blen ? len - hl : blen;
        char *expect = head_get(buf, "Expect");
        if (expect != NULL && strcasecmp(expect, "100-continue") == 0 && have < blen) {
            const char *cont = "HTTP/1.1 100 Continue\r\n\r\n"; /* as real servers do */
            write_full(c->fd, cont, strlen(cont));
        }
        free(expect);
        int small = blen <= (1u << 20);
        uint8_t *body = xmalloc((small ? blen : have) + 1);
        memcpy(body, buf + hl, have);
        while (small && have < blen) {
            ssize_t n = read(c->fd, body + have, blen - have);
            if (n <= 0)
                break;
            have += (size_t)n;
        }
        buf[hl] = '\0';
        char why[2048];
        if (!sigv4_verify(buf, small ? body : NULL, blen, "S3RVER", why, sizeof(why))) {
            if (atomic_fetch_add(&p->sig_failures, 1) == 0)
                snprintf(p->sig_error, sizeof(p->sig_error), "%.80s: %s", buf, why);
            fprintf(stderr, "sigv4 proxy: %s\n", why);
            proxy_reply(c->fd, "403 Forbidden", "SignatureDoesNotMatch", "sigv4 proxy");
            free(body);
            if (!small)
                break; /* the body is still unread: drop the connection */
            continue;
        }
        if ((p->match[0] == '\0' || strncmp(buf, p->match, strlen(p->match)) == 0) &&
            atomic_fetch_sub(&p->faults, 1) > 0) {
            atomic_fetch_add(&p->injected, 1);
            free(body);
            if (!small) { /* drain the unread body first */
                for (size_t left = blen - have; left > 0;) {
                    ssize_t n = read(c->fd, buf, left < 65536 ? left : 65536);
                    if (n <= 0)
                        break;
                    left -= (size_t)n;
                }
            }
            if (p->mode == FAULT_RESET) {
                struct linger lg = {1, 0};
                setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
                break;
            }
            if (p->mode == FAULT_503)
                proxy_reply(c->fd, "503 Slow Down", "SlowDown", "Please reduce your request rate.");
            else
                proxy_reply(c->fd, "500 Internal Server Error", "InternalError", "injected");
            continue; /* keep-alive: next request on this connection */
        }
        /* Relay this request with "Connection: close" so the response ends at upstream EOF. */
        atomic_fetch_add(&p->passed, 1);
        char *psha = head_get(buf, "x-amz-content-sha256");
        int u = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)p->upstream_port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        char *line_end = strstr(buf, "\r\n");
        size_t first = (size_t)(line_end - buf) + 2;
        const char *cc = "Connection: close\r\n";
        if (connect(u, (struct sockaddr *)&a, sizeof(a)) != 0 || write_full(u, buf, first) ||
            write_full(u, cc, strlen(cc)) || write_full(u, buf + first, hl - first) ||
            write_full(u, body, have)) {
            close(u);
            free(body);
            free(psha);
            break;
        }
        if (!small) {
            struct cairn_sha256 h;
            cairn_sha256_init(&h);
            cairn_sha256_update(&h, body, have);
            while (have < blen) {
                ssize_t n = read(c->fd, buf, blen - have < 65536 ? blen - have : 65536);
                if (n <= 0 || write_full(u, buf, (size_t)n) != 0)
                    break;
                cairn_sha256_update(&h, buf, (size_t)n);
                have += (size_t)n;
            }
            uint8_t d[32];
            char hex[65];
            cairn_sha256_final(&h, d);
            cairn_sha256_free(&h);
            cairn_hex_encode(d, 32, hex);
            if (have != blen || psha == NULL || strcmp(psha, hex) != 0) {
                if (atomic_fetch_add(&p->sig_failures, 1) == 0)
                    snprintf(p->sig_error, sizeof(p->sig_error),
                             "streamed body of %zu bytes does not match x-amz-content-sha256",
                             blen);
            }
        }
        free(psha);
        free(body);
        for (;;) {
            ssize_t n = read(u, buf, 65536);
            if (n <= 0 || write_full(c->fd, buf, (size_t)n) != 0)
                break;
        }
        close(u);
        break;
    }
    close(c->fd);
    free(buf);
    atomic_fetch_sub(&p->active, 1);
    free(c);
    return NULL;
}

static void *proxy_accept_thread(void *arg)
{
    struct fault_proxy *p = arg;
    while (!atomic_load(&p->stop)) {
        struct pollfd pf = {p->lfd, POLLIN, 0};
        if (poll(&pf, 1, 100) <= 0)
            continue;
        int fd = accept(p->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        struct proxy_conn *c = xcalloc(1, sizeof(*c));
        c->p = p;
        c->fd = fd;
        atomic_fetch_add(&p->active, 1);
        pthread_t th;
        pthread_create(&th, NULL, proxy_conn_thread, c);
        pthread_detach(th);
    }
    return NULL;
}

static struct fault_proxy *fault_proxy_start(int upstream_port, enum fault_mode mode, int faults,
                                             const char *match)
{
    struct fault_proxy *p = xcalloc(1, sizeof(*p));
    p->upstream_port = upstream_port;
    p->mode = mode;
    atomic_store(&p->faults, faults);
    snprintf(p->match, sizeof(p->match), "%s", match ? match : "");
    p->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof(a);
    if (bind(p->lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(p->lfd, 64) != 0 ||
        getsockname(p->lfd, (struct sockaddr *)&a, &al) != 0)
        abort();
    p->port = ntohs(a.sin_port);
    pthread_create(&p->th, NULL, proxy_accept_thread, p);
    return p;
}

/* Free the storage using the proxy first, so its kept-alive connections close. */
static void fault_proxy_stop(struct fault_proxy *p)
{
    atomic_store(&p->stop, 1);
    pthread_join(p->th, NULL);
    for (uint64_t end = mono_ns() + 120000000000ull;
         atomic_load(&p->active) > 0 && mono_ns() < end;)
        usleep(10000);
    close(p->lfd);
    free(p);
}

#endif
