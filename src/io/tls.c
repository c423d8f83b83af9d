/* Optional TLS for the snapshot protocol (OpenSSL): cairnd serve with client certificates,
 * cairn backup and restore as clients. Under TLS a socket is non-blocking and every wait goes
 * through net_wait, so the idle timeouts, deadlines and cancel flags of the plain path hold
 * unchanged. A stream ends with a close_notify: an EOF without one is an error (truncation),
 * since the protocol itself marks the end of most replies only by closing. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "net.h"

struct cairn_tls {
    SSL_CTX *ctx;
    int server;
    char *server_name;
};

/* Alerts by which a server turns away a client's certificate (or its lack of one). */
static int refused_by_peer(unsigned long e)
{
    if (ERR_GET_LIB(e) != ERR_LIB_SSL)
        return 0;
    switch (ERR_GET_REASON(e)) {
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_TLSV1_ALERT_ACCESS_DENIED: return 1;
    default: return 0;
    }
}

/* Set err from OpenSSL's error queue (emptied): "what: reason". A certificate the peer
 * refused is CAIRN_E_DENIED (exit 9), whatever code says. */
static int tls_fail(struct cairn_err *err, int code, const char *fmt, ...) CAIRN_PRINTF(3, 4);
static int tls_fail(struct cairn_err *err, int code, const char *fmt, ...)
{
    char what[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    unsigned long e = ERR_peek_last_error();
    char reason[256] = "";
    if (e != 0)
        ERR_error_string_n(e, reason, sizeof(reason));
    ERR_clear_error();
    if (refused_by_peer(e))
        code = CAIRN_E_DENIED;
    return cairn_err_set(err, code, "%s%s%s", what, reason[0] ? ": " : "", reason);
}

static int tls_new(const struct tls_opts *o, int server, struct cairn_tls **out,
                   struct cairn_err *err)
{
    *out = NULL;
    if (server && (o == NULL || o->cert_file == NULL))
        return cairn_err_set(err, CAIRN_E_INVALID, "a TLS server needs a certificate");
    if (o != NULL && o->key_file != NULL && o->cert_file == NULL)
        return cairn_err_set(err, CAIRN_E_INVALID, "a TLS key needs its certificate");
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (ctx == NULL)
        return tls_fail(err, CAIRN_E_NOMEM, "creating a TLS context");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    int rc = CAIRN_OK;
    const char *cert = o ? o->cert_file : NULL, *ca = o ? o->ca_file : NULL;
    const char *key = o && o->key_file ? o->key_file : cert;
    if (cert != NULL && SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
        rc = tls_fail(err, CAIRN_E_INVALID, "TLS certificate '%s'", cert);
    else if (cert != NULL && SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        rc = tls_fail(err, CAIRN_E_INVALID, "TLS private key '%s'", key);
    else if (cert != NULL && SSL_CTX_check_private_key(ctx) != 1)
        rc = tls_fail(err, CAIRN_E_INVALID, "TLS private key '%s' does not match '%s'", key, cert);
    else if (ca != NULL && SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1)
        rc = tls_fail(err, CAIRN_E_INVALID, "TLS CA file '%s'", ca);
    else if (ca == NULL && !server && SSL_CTX_set_default_verify_paths(ctx) != 1)
        rc = tls_fail(err, CAIRN_E_INVALID, "the system's CA certificates");
    if (rc == CAIRN_OK && server && ca != NULL) {
        /* Client certificates: asked for, required and verified against ca. */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);
        if (names != NULL)
            SSL_CTX_set_client_CA_list(ctx, names);
        SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"cairn", 5);
    } else if (rc == CAIRN_OK && !server) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    if (rc != CAIRN_OK) {
        SSL_CTX_free(ctx);
        return rc;
    }
    struct cairn_tls *t = xcalloc(1, sizeof(*t));
    t->ctx = ctx;
    t->server = server;
    t->server_name = o && o->server_name ? xstrdup(o->server_name) : NULL;
    *out = t;
    return CAIRN_OK;
}

int tls_server_new(const struct tls_opts *o, struct cairn_tls **out, struct cairn_err *err)
{
    return tls_new(o, 1, out, err);
}

int tls_client_new(const struct tls_opts *o, struct cairn_tls **out, struct cairn_err *err)
{
    return tls_new(o, 0, out, err);
}

void tls_free(struct cairn_tls *t)
{
    if (t == NULL)
        return;
    SSL_CTX_free(t->ctx);
    free(t->server_name);
    free(t);
}

int tls_verifies_clients(const struct cairn_tls *t)
{
    return t != NULL && (SSL_CTX_get_verify_mode(t->ctx) & SSL_VERIFY_FAIL_IF_NO_PEER_CERT) != 0;
}

/* After an SSL call returned r <= 0: wait for what it wants, or fail. */
static int tls_wait(struct net_conn *c, int r, int timeout_ms, uint64_t deadline,
                    const volatile int *cancel, const char *what, struct cairn_err *err)
{
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        return net_wait(c->fd, POLLIN, timeout_ms, deadline, cancel, what, err);
    if (e == SSL_ERROR_WANT_WRITE)
        return net_wait(c->fd, POLLOUT, timeout_ms, deadline, cancel, what, err);
    if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
        int saved = errno;
        if (r < 0 && saved != 0)
            return cairn_err_sys(err, CAIRN_E_NETWORK, saved, "%s", what);
        return cairn_err_set(err, CAIRN_E_NETWORK,
                             "%s: the connection ended without a TLS close_notify", what);
    }
    return tls_fail(err, CAIRN_E_NETWORK, "%s", what);
}

int net_conn_tls(struct net_conn *c, struct cairn_tls *t, const char *host, int timeout_ms,
                 uint64_t deadline, const volatile int *cancel, struct cairn_err *err)
{
    int fl = fcntl(c->fd, F_GETFL);
    if (fl < 0 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return cairn_err_sys(err, CAIRN_E_NETWORK, errno, "TLS: socket flags");
    ERR_clear_error();
    c->ssl = SSL_new(t->ctx);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1)
        return tls_fail(err, CAIRN_E_NOMEM, "TLS session");
    const char *name = t->server_name ? t->server_name : host;
    if (!t->server && name != NULL && *name != '\0') {
        unsigned char ip[16];
        if (inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1) {
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), name);
        } else {
            SSL_set_tlsext_host_name(c->ssl, name);
            SSL_set1_host(c->ssl, name);
        }
    }
    for (;;) {
        ERR_clear_error();
        int r = t->server ? SSL_accept(c->ssl) : SSL_connect(c->ssl);
        if (r == 1)
            return CAIRN_OK;
        int rc = tls_wait(c, r, timeout_ms, deadline, cancel, "TLS handshake", err);
        if (rc == CAIRN_OK)
            continue;
        long v = SSL_get_verify_result(c->ssl);
        if (v != X509_V_OK)
            cairn_err_wrap(err, rc, "%s certificate: %s", t->server ? "client" : "server",
                           X509_verify_cert_error_string(v));
        return rc;
    }
}

void net_conn_peer_subject(const struct net_conn *c, char *out, size_t cap)
{
    out[0] = '\0';
    X509 *x = c->ssl ? SSL_get1_peer_certificate(c->ssl) : NULL;
    if (x == NULL)
        return;
    X509_NAME_oneline(X509_get_subject_name(x), out, (int)(cap < INT_MAX ? cap : INT_MAX));
    X509_free(x);
}

int net_conn_read_some(struct net_conn *c, void *buf, size_t cap, size_t *got, int timeout_ms,
                       uint64_t deadline, const volatile int *cancel, struct cairn_err *err)
{
    if (c->ssl == NULL)
        return net_read_some_fd(c->fd, buf, cap, got, timeout_ms, deadline, cancel, err);
    *got = 0;
    for (;;) {
        ERR_clear_error();
        int n = SSL_read(c->ssl, buf, cap < INT_MAX ? (int)cap : INT_MAX);
        if (n > 0) {
            *got = (size_t)n;
            return CAIRN_OK;
        }
        if (SSL_get_error(c->ssl, n) == SSL_ERROR_ZERO_RETURN)
            return CAIRN_OK; /* close_notify: the end */
        int rc = tls_wait(c, n, timeout_ms, deadline, cancel, "read from peer", err);
        if (rc != CAIRN_OK)
            return rc;
    }
}

/* A server that turned our certificate away (TLS 1.3 checks it after the client's handshake
 * ends) sent an alert and closed; a write can fail on the reset that followed, while the
 * alert still waits unread. Read it: it says why, and is a refusal (exit 9). */
static int alert_behind(struct net_conn *c, int rc, struct cairn_err *err)
{
    char b;
    ERR_clear_error();
    int n = SSL_read(c->ssl, &b, 1);
    if (n <= 0 && SSL_get_error(c->ssl, n) == SSL_ERROR_SSL &&
        refused_by_peer(ERR_peek_last_error()))
        return tls_fail(err, CAIRN_E_DENIED, "write to peer");
    ERR_clear_error();
    return rc;
}

int net_conn_write_some(struct net_conn *c, const void *buf, size_t len, size_t *done,
                        int timeout_ms, uint64_t deadline, const volatile int *cancel,
                        struct cairn_err *err)
{
    *done = 0;
    for (;;) {
        int rc;
        if (c->ssl == NULL) {
            ssize_t n = send(c->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n >= 0) {
                *done = (size_t)n;
                return CAIRN_OK;
            }
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return cairn_err_sys(err, CAIRN_E_NETWORK, errno, "write to peer");
            rc = net_wait(c->fd, POLLOUT, timeout_ms, deadline, cancel, "write to peer", err);
        } else {
            ERR_clear_error();
            int n = SSL_write(c->ssl, buf, len < INT_MAX ? (int)len : INT_MAX);
            if (n > 0) {
                *done = (size_t)n;
                return CAIRN_OK;
            }
            rc = tls_wait(c, n, timeout_ms, deadline, cancel, "write to peer", err);
            if (rc != CAIRN_OK)
                return alert_behind(c, rc, err);
        }
        if (rc != CAIRN_OK)
            return rc;
    }
}

int net_conn_write_full(struct net_conn *c, const void *buf, size_t len, int timeout_ms,
                        uint64_t deadline, const volatile int *cancel, struct cairn_err *err)
{
    const uint8_t *p = buf;
    while (len > 0) {
        size_t n;
        int rc = net_conn_write_some(c, p, len, &n, timeout_ms, deadline, cancel, err);
        if (rc != CAIRN_OK)
            return rc;
        p += n;
        len -= n;
    }
    return CAIRN_OK;
}

int net_conn_end_write(struct net_conn *c, int timeout_ms, uint64_t deadline,
                       const volatile int *cancel, struct cairn_err *err)
{
    if (c->ssl == NULL) {
        shutdown(c->fd, SHUT_WR);
        return CAIRN_OK;
    }
    if (SSL_get_shutdown(c->ssl) & SSL_SENT_SHUTDOWN)
        return CAIRN_OK;
    for (;;) {
        ERR_clear_error();
        int r = SSL_shutdown(c->ssl);
        if (r >= 0)
            return CAIRN_OK; /* sent (1: the peer's came too) */
        int rc = tls_wait(c, r, timeout_ms, deadline, cancel, "TLS close_notify", err);
        if (rc != CAIRN_OK)
            return rc;
    }
}

void net_conn_close(struct net_conn *c)
{
    if (c->ssl != NULL) {
        SSL_free(c->ssl);
        c->ssl = NULL;
        ERR_clear_error();
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}
