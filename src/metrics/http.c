/* /metrics and /healthz over HTTP with libmicrohttpd (its own polling thread). */
#include <microhttpd.h>
#include <stdarg.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "cairn/log.h"
#include "common/util.h"
#include "metrics.h"

struct cairn_metrics_server {
    struct MHD_Daemon *d;
    struct cairn_metrics *m;
    cairn_health_fn health;
    void *health_ctx;
    unsigned port;
};

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    /* libmicrohttpd's own format strings. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    vsnprintf(msg, sizeof(msg), fmt, ap);
#pragma GCC diagnostic pop
    size_t n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n')
        msg[--n] = '\0';
    cairn_debug("metrics", "http: %s", msg);
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
                             char *body, int owned)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        strlen(body), body, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **req)
{
    (void)version, (void)upload, (void)upload_size, (void)req;
    struct cairn_metrics_server *s = cls;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", "method not allowed\n", 0);
    if (strcmp(url, "/metrics") == 0)
        return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
                     metrics_render(s->m), 1);
    if (strcmp(url, "/healthz") == 0) {
        char body[512] = "ok\n";
        int status = s->health ? s->health(s->health_ctx, body, sizeof(body)) : 200;
        return reply(c, (unsigned)status, "text/plain", body, 0);
    }
    return reply(c, MHD_HTTP_NOT_FOUND, "text/plain", "not found: try /metrics or /healthz\n", 0);
}

static unsigned or_default(unsigned v, unsigned def)
{
    return v ? v : def;
}

int metrics_serve(struct cairn_metrics *m, const char *listen, const struct cairn_http_limits *lim,
                  cairn_health_fn health, void *health_ctx, struct cairn_metrics_server **out,
                  struct cairn_err *err)
{
    *out = NULL;
    char host[256];
    const char *colon = strrchr(listen, ':');
    if (colon == NULL || (size_t)(colon - listen) >= sizeof(host))
        return cairn_err_set(err, CAIRN_E_INVALID, "metrics listen address '%s' is not HOST:PORT",
                             listen);
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    /* "[::1]:9469" */
    char *h = host;
    if (h[0] == '[' && h[strlen(h) - 1] == ']') {
        h[strlen(h) - 1] = '\0';
        h++;
    }
    struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    int g = getaddrinfo(*h ? h : NULL, colon + 1, &hints, &ai);
    if (g != 0)
        return cairn_err_set(err, CAIRN_E_INVALID, "metrics listen address '%s': %s", listen,
                             gai_strerror(g));
    struct cairn_metrics_server *s = xcalloc(1, sizeof(*s));
    s->m = m;
    s->health = health;
    s->health_ctx = health_ctx;
    /* MHD_USE_AUTO picks epoll on Linux: one polling thread, no FD_SETSIZE ceiling, so a
     * connection limit far above the per-address one leaves room for scrapers while one
     * address holds all it may. */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    struct cairn_http_limits l = lim ? *lim : (struct cairn_http_limits){0};
    unsigned timeout = or_default(l.timeout_s, CAIRN_HTTP_TIMEOUT_DEFAULT);
    unsigned max_conn = or_default(l.max_conn, CAIRN_HTTP_MAX_CONN_DEFAULT);
    unsigned per_ip = or_default(l.per_ip, CAIRN_HTTP_PER_IP_DEFAULT);
    s->d = MHD_start_daemon(flags, 0, NULL, NULL, handle, s, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                            MHD_OPTION_CONNECTION_TIMEOUT, timeout, MHD_OPTION_CONNECTION_LIMIT,
                            max_conn, MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (s->d == NULL) {
        free(s);
        return cairn_err_set(err, CAIRN_E_IO,
                             "cannot listen for metrics on '%s' (address in use or not local?)",
                             listen);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : 0;
    *out = s;
    return CAIRN_OK;
}

unsigned metrics_server_port(const struct cairn_metrics_server *s)
{
    return s->port;
}

void metrics_server_stop(struct cairn_metrics_server *s)
{
    if (s == NULL)
        return;
    MHD_stop_daemon(s->d);
    free(s);
}
