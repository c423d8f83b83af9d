/* The PostgreSQL source's URL to libpq keywords (no server needed): host, port, user, the
 * database (replication=database) or none (replication=true), the TLS and other parameters of
 * the query, the options' CA and password file, the password never in an error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "source/postgresql/pg.h"
#include "test.h"

static const char *val(const struct pg_params *p, const char *key)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->keys[i], key) == 0)
            return p->vals[i];
    return NULL;
}

TEST(url_to_keywords)
{
    struct cairn_source_opts o = {0};
    struct pg_params p;
    CHECK_EQ_INT(pg_params_init(&p,
                                "postgresql://bk:p%40ss:w@db1.example:5433/app?sslmode=require&"
                                "application_name=cairn",
                                &o, NULL),
                 CAIRN_OK);
    CHECK_EQ_STR(val(&p, "host"), "db1.example");
    CHECK_EQ_STR(val(&p, "port"), "5433");
    CHECK_EQ_STR(val(&p, "user"), "bk");
    CHECK_EQ_STR(val(&p, "dbname"), "app");
    CHECK_EQ_STR(val(&p, "replication"), "database");
    CHECK_EQ_STR(val(&p, "sslmode"), "require");
    CHECK_EQ_STR(val(&p, "application_name"), "cairn");
    CHECK_EQ_STR(val(&p, "password"), "p@ss:w");
    CHECK_EQ_STR(p.where, "postgresql db1.example:5433");
    CHECK(p.keys[p.n] == NULL && p.vals[p.n] == NULL);
    pg_params_free(&p);

    /* No database: a physical replication connection; the default port; IPv6. */
    CHECK_EQ_INT(pg_params_init(&p, "postgres://[::1]", &o, NULL), CAIRN_OK);
    CHECK_EQ_STR(val(&p, "replication"), "true");
    CHECK(val(&p, "dbname") == NULL && val(&p, "password") == NULL && val(&p, "user") == NULL);
    CHECK_EQ_STR(val(&p, "host"), "::1");
    CHECK_EQ_STR(p.where, "postgresql [::1]:5432");
    pg_params_free(&p);
}

TEST(options_and_query_parameters)
{
    char pw[512];
    snprintf(pw, sizeof(pw), "%s/pw", test_tmpdir());
    FILE *f = fopen(pw, "w");
    fputs("from-file\n", f);
    fclose(f);
    chmod(pw, 0600);
    struct cairn_source_opts o = {.ca_file = "/ca.pem", .password_file = pw, .io_timeout_ms = 5000};
    struct pg_params p;
    CHECK_EQ_INT(pg_params_init(&p, "postgresql://bk@h?sslmode=verify-full", &o, NULL), CAIRN_OK);
    CHECK_EQ_STR(val(&p, "sslrootcert"), "/ca.pem");
    CHECK_EQ_STR(val(&p, "password"), "from-file");
    CHECK_EQ_INT(p.io_timeout_ms, 5000);
    pg_params_free(&p);
    /* The URL's password wins over the file; the query's sslrootcert over the option. */
    CHECK_EQ_INT(pg_params_init(&p, "postgresql://bk:url-pw@h?sslrootcert=/q.pem", &o, NULL),
                 CAIRN_OK);
    CHECK_EQ_STR(val(&p, "password"), "url-pw");
    CHECK_EQ_STR(val(&p, "sslrootcert"), "/q.pem");
    pg_params_free(&p);
    /* A parameter cairn does not pass on is refused by name, the password not shown. */
    struct cairn_err err = {0};
    CHECK_EQ_INT(pg_params_init(&p, "postgresql://bk:Secret-9@h?options=-cfoo", &o, &err),
                 CAIRN_E_INVALID);
    CHECK(strstr(err.msg, "'options'") != NULL);
    CHECK(strstr(err.msg, "Secret-9") == NULL);
    /* A group-readable password file is refused. */
    chmod(pw, 0640);
    CHECK_EQ_INT(pg_params_init(&p, "postgresql://bk@h", &o, &err), CAIRN_E_INVALID);
}

TEST(redacted_url)
{
    char out[256];
    CHECK_EQ_INT(
        cairn_source_redact("postgresql://bk:Secret-9@h:5432/db?password=x2&sslmode=require", out,
                            sizeof(out)),
        CAIRN_OK);
    CHECK_EQ_STR(out, "postgresql://bk:***@h:5432/db?password=***&sslmode=require");
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
