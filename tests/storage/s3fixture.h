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
        cairn_rmtree(s3rver_dir, &e);
        free(s3rver_dir);
        s3rver_dir = NULL;
    }
}

/* Start s3rver once per process; returns its port or 0 (s3rver_skip says why). */
static int s3rver_start(void)
{
    if (s3rver_port > 0 || s3rver_skip[0])
        return s3rver_port;
    char *bin = cairn_xasprintf("%s/.cache/node/node_modules/.bin/s3rver", test_source_dir());
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
    s3rver_dir = cairn_xstrdup(tmpl);
    char *data = cairn_path_join(s3rver_dir, "data");
    char *log = cairn_path_join(s3rver_dir, "log");
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
    for (int i = 0; i < 300 && s3rver_port == 0; i++) { /* up to 30 s */
        usleep(100000);
        uint8_t *txt = NULL;
        size_t len = 0;
        if (cairn_read_file(log, 1 << 20, &txt, &len, NULL) == CAIRN_OK) {
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
    atomic_int faults;     /* requests still to fail */
    atomic_int injected;   /* requests failed so far */
    atomic_int passed;     /* requests relayed */
    enum fault_mode mode;
    char match[32];        /* only requests starting with this ("PUT ") fail; "" = any */
    pthread_t th;
    atomic_int stop;
    atomic_int active; /* connection threads alive */
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

static long content_length(const char *head)
{
    const char *p = strcasestr(head, "\r\nContent-Length:");
    return p ? strtol(p + 17, NULL, 10) : 0;
}

static void *proxy_conn_thread(void *arg)
{
    struct proxy_conn *c = arg;
    struct fault_proxy *p = c->p;
    static char dummy[65536];
    char *buf = cairn_xmalloc(65536);
    for (;;) {
        size_t len, hl;
        if (read_head(c->fd, buf, 65536, &len, &hl) != 0)
            break;
        int fail = 0;
        if ((p->match[0] == '\0' || strncmp(buf, p->match, strlen(p->match)) == 0) &&
            atomic_fetch_sub(&p->faults, 1) > 0) {
            fail = 1;
        }
        if (fail) {
            atomic_fetch_add(&p->injected, 1);
            long body = content_length(buf) - (long)(len - hl);
            while (body > 0) {
                ssize_t n = read(c->fd, dummy, body < (long)sizeof(dummy) ? (size_t)body
                                                                          : sizeof(dummy));
                if (n <= 0)
                    break;
                body -= n;
            }
            if (p->mode == FAULT_RESET) {
                struct linger lg = {1, 0};
                setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
                break;
            }
            const char *xml = p->mode == FAULT_503
                                  ? "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>"
                                    "Please reduce your request rate.</Message></Error>"
                                  : "<?xml version=\"1.0\"?><Error><Code>InternalError</Code>"
                                    "<Message>injected</Message></Error>";
            char resp[512];
            int n = snprintf(resp, sizeof(resp),
                             "HTTP/1.1 %s\r\nContent-Type: application/xml\r\nContent-Length: "
                             "%zu\r\n\r\n%s",
                             p->mode == FAULT_503 ? "503 Slow Down" : "500 Internal Server Error",
                             strlen(xml), xml);
            if (write(c->fd, resp, (size_t)n) != n)
                break;
            continue; /* keep-alive: next request on this connection */
        }
        /* Relay this request with "Connection: close" so the response ends at upstream EOF. */
        atomic_fetch_add(&p->passed, 1);
        int u = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p->upstream_port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(u, (struct sockaddr *)&a, sizeof(a)) != 0) {
            close(u);
            break;
        }
        char *line_end = strstr(buf, "\r\n");
        size_t first = (size_t)(line_end - buf) + 2;
        const char *cc = "Connection: close\r\n";
        if (write(u, buf, first) < 0 || write(u, cc, strlen(cc)) < 0 ||
            write(u, buf + first, len - first) < 0) {
            close(u);
            break;
        }
        struct pollfd pf[2] = {{c->fd, POLLIN, 0}, {u, POLLIN, 0}};
        int client_open = 1;
        for (;;) {
            pf[0].fd = client_open ? c->fd : -1;
            if (poll(pf, 2, 30000) <= 0)
                break;
            if (pf[0].revents) {
                ssize_t n = read(c->fd, buf, 65536);
                if (n <= 0)
                    client_open = 0;
                else if (write(u, buf, (size_t)n) != n)
                    break;
            }
            if (pf[1].revents) {
                ssize_t n = read(u, buf, 65536);
                if (n <= 0)
                    break;
                if (write(c->fd, buf, (size_t)n) != n)
                    break;
            }
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
        struct proxy_conn *c = cairn_xcalloc(1, sizeof(*c));
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
    struct fault_proxy *p = cairn_xcalloc(1, sizeof(*p));
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
    for (int i = 0; i < 3000 && atomic_load(&p->active) > 0; i++)
        usleep(10000);
    close(p->lfd);
    free(p);
}

#endif
