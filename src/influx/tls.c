/* The public TLS contexts of include/cairn/influx.h: io's (io/net.h, tls.c), which the Redis
 * source's rediss:// uses too; the options are the same four files and names. */
#include "cairn/influx.h"
#include "io/net.h"

static struct tls_opts to_io(const struct cairn_influx_tls_opts *o)
{
    struct tls_opts t = {0};
    if (o != NULL) {
        t.ca_file = o->ca_file;
        t.cert_file = o->cert_file;
        t.key_file = o->key_file;
        t.server_name = o->server_name;
    }
    return t;
}

int cairn_influx_tls_server_new(const struct cairn_influx_tls_opts *opts, struct cairn_tls **out,
                                struct cairn_err *err)
{
    struct tls_opts t = to_io(opts);
    return tls_server_new(opts ? &t : NULL, out, err);
}

int cairn_influx_tls_client_new(const struct cairn_influx_tls_opts *opts, struct cairn_tls **out,
                                struct cairn_err *err)
{
    struct tls_opts t = to_io(opts);
    return tls_client_new(opts ? &t : NULL, out, err);
}

void cairn_influx_tls_free(struct cairn_tls *t)
{
    tls_free(t);
}
