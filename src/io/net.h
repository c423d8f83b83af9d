/* TCP and TLS connections with bounded waits (net.c, tls.c), shared by the InfluxDB snapshot
 * protocol (src/influx) and the sources that speak their own protocol over a socket (Redis).
 * Internal, not installed.
 *
 * Every wait is a poll() bounded by an idle timeout (timeout_ms of silence) and optionally a
 * deadline (monotonic ns, 0: none). The calls taking a cancel flag (may be NULL; read
 * atomically) stop with CAIRN_E_CANCELLED within about NET_CANCEL_POLL_MS once it is nonzero,
 * even while the peer is silent (a signal may land on another thread, so EINTR alone cannot be
 * relied on). Sockets stay blocking; each transfer uses MSG_DONTWAIT after poll(), or under
 * TLS a non-blocking socket whose every wait goes through net_wait. Messages name the step
 * ("read from peer", "connect HOST:PORT", "TLS handshake"); callers wrap them with their
 * peer's name. */
#ifndef CAIRN_IO_NET_H
#define CAIRN_IO_NET_H

#include <stddef.h>
#include <stdint.h>

#include "cairn/err.h"
#include "cairn/io.h"

#define NET_CANCEL_POLL_MS 200

/* Split "host:port" or "[v6]:port". */
int net_split_addr(const char *addr, char *host, size_t hcap, char *port, size_t pcap,
                   struct cairn_err *err);
/* Connect to "host:port" ("[v6]:port"), trying each address within timeout_ms; *fd is a
 * blocking socket with TCP_NODELAY. */
int net_dial(const char *addr, int timeout_ms, const volatile int *cancel, int *fd,
             struct cairn_err *err);
/* Wait until fd is readable (events POLLIN) or writable (POLLOUT). */
int net_wait(int fd, short events, int timeout_ms, uint64_t deadline_ns, const volatile int *cancel,
             const char *what, struct cairn_err *err);
/* One read of up to cap bytes from a plain socket; *got 0 = EOF. */
int net_read_some_fd(int fd, void *buf, size_t cap, size_t *got, int timeout_ms,
                     uint64_t deadline_ns, const volatile int *cancel, struct cairn_err *err);

/* ---- TLS contexts (tls.c, OpenSSL) ----
 * struct cairn_tls is the public opaque type of include/cairn/influx.h too. */
struct cairn_tls;
struct tls_opts {
    const char *ca_file;     /* client: CA the server must chain to (NULL: the system's CAs);
                              * server: CA client certificates must chain to (then required) */
    const char *cert_file;   /* our certificate chain (PEM); a server needs one */
    const char *key_file;    /* its key (NULL: in cert_file) */
    const char *server_name; /* client: the name to verify and send as SNI (NULL: the host) */
};
int tls_client_new(const struct tls_opts *o, struct cairn_tls **out, struct cairn_err *err);
int tls_server_new(const struct tls_opts *o, struct cairn_tls **out, struct cairn_err *err);
void tls_free(struct cairn_tls *t);
/* A server context that requires client certificates. */
int tls_verifies_clients(const struct cairn_tls *t);

/* ---- connections ----
 * A connection, plain (ssl NULL) or TLS. The net_conn_ calls behave alike whichever it is;
 * under TLS the end of a stream is a close_notify, and an EOF without one is an error
 * (truncation). */
struct ssl_st;
struct net_conn {
    int fd;
    struct ssl_st *ssl;
};
/* Handshake on c->fd (made non-blocking) as t's side: a client verifies the server's
 * certificate against host (or t's server name, which is also sent as SNI), a server asks for
 * a client certificate when t has a CA. A certificate the peer refused is CAIRN_E_DENIED; a
 * server certificate we could not verify is CAIRN_E_NETWORK with the reason ("server
 * certificate: unable to get local issuer certificate"). */
int net_conn_tls(struct net_conn *c, struct cairn_tls *t, const char *host, int timeout_ms,
                 uint64_t deadline, const volatile int *cancel, struct cairn_err *err);
/* The peer certificate's subject ("" when none). */
void net_conn_peer_subject(const struct net_conn *c, char *out, size_t cap);
/* One read of up to cap bytes; *got 0 = the end (EOF, or a close_notify under TLS). */
int net_conn_read_some(struct net_conn *c, void *buf, size_t cap, size_t *got, int timeout_ms,
                       uint64_t deadline, const volatile int *cancel, struct cairn_err *err);
/* Write at least one byte (waiting as needed); *done says how many. */
int net_conn_write_some(struct net_conn *c, const void *buf, size_t len, size_t *done,
                        int timeout_ms, uint64_t deadline, const volatile int *cancel,
                        struct cairn_err *err);
int net_conn_write_full(struct net_conn *c, const void *buf, size_t len, int timeout_ms,
                        uint64_t deadline, const volatile int *cancel, struct cairn_err *err);
/* Tell the peer nothing more comes (TCP half-close, or a TLS close_notify); reading goes on. */
int net_conn_end_write(struct net_conn *c, int timeout_ms, uint64_t deadline,
                       const volatile int *cancel, struct cairn_err *err);
/* Free the TLS session and close the socket (no close_notify: see net_conn_end_write). */
void net_conn_close(struct net_conn *c);

/* A writer stage on a connection (not owned), each write bounded by timeout_ms of
 * inactivity and the cancel flag (may be NULL). */
struct cairn_writer *net_conn_writer_new(struct net_conn *c, int timeout_ms,
                                         const volatile int *cancel);

#endif
