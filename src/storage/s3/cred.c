/* S3 driver: the credential chain, in the order of the AWS SDKs (botocore's), and the
 * refresh of temporary credentials.
 *
 *  1. environment: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN)
 *  2. the profile (AWS_PROFILE, else "default") when it has role_arn: STS AssumeRole with the
 *     credentials of source_profile (recursively, role chaining) or credential_source
 *     (Environment, EcsContainer, Ec2InstanceMetadata); or, with web_identity_token_file,
 *     AssumeRoleWithWebIdentity
 *  3. web identity from the environment: AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN
 *     (+ AWS_ROLE_SESSION_NAME)
 *  4. the profile's static keys (credentials file, then config file), else its
 *     credential_process
 *  5. ECS container credentials (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI / _FULL_URI)
 *  6. EC2 instance metadata, IMDSv2 (unless AWS_EC2_METADATA_DISABLED=true)
 *
 * A provider that is configured but fails stops the chain with its error (as the SDKs do),
 * so a broken role never silently falls through to the instance's own role. An AWS_PROFILE
 * that names no profile is an error too. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cairn/log.h"
#include "common/util.h"
#include "s3.h"

#define REFRESH_BEFORE_S 300 /* refresh credentials that expire within 5 minutes */
#define REFRESH_RETRY_S  30  /* after a failed refresh of still-valid ones */
#define CHAIN_DEPTH      5   /* source_profile hops */

void s3_cred_clear(struct s3_cred *c)
{
    wipe_free(c->access);
    wipe_free(c->secret);
    wipe_free(c->token);
    c->access = c->secret = c->token = NULL;
    c->expires = 0;
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static int from_env(struct s3_cred *out)
{
    const char *ak = env("AWS_ACCESS_KEY_ID"), *sk = env("AWS_SECRET_ACCESS_KEY");
    if (ak == NULL || sk == NULL)
        return 0;
    out->access = xstrdup(ak);
    out->secret = xstrdup(sk);
    out->token = env("AWS_SESSION_TOKEN") ? xstrdup(env("AWS_SESSION_TOKEN")) : NULL;
    out->expires = 0;
    snprintf(out->provider, sizeof(out->provider), "the environment (AWS_ACCESS_KEY_ID)");
    return 1;
}

/* Static keys of a profile; 0 when it has none. */
static int from_static(const struct s3_profiles *pf, const char *name, struct s3_cred *out)
{
    const char *ak = s3_profile_get(pf, name, "aws_access_key_id");
    const char *sk = s3_profile_get(pf, name, "aws_secret_access_key");
    if (ak == NULL || sk == NULL)
        return 0;
    const char *tok = s3_profile_get(pf, name, "aws_session_token");
    out->access = xstrdup(ak);
    out->secret = xstrdup(sk);
    out->token = tok ? xstrdup(tok) : NULL;
    out->expires = 0;
    snprintf(out->provider, sizeof(out->provider), "profile '%s' (static keys)", name);
    return 1;
}

struct chain {
    const struct s3_profiles *pf;
    const char *region;
};

static int from_profile(struct chain *ch, const char *name, int depth, int roles,
                        struct s3_cred *out, struct cairn_err *err);

/* credential_source of a role profile: where the source credentials come from. */
static int from_credential_source(const char *name, const char *cs, struct s3_cred *out,
                                  struct cairn_err *err)
{
    if (strcmp(cs, "Environment") == 0) {
        if (from_env(out))
            return CAIRN_OK;
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "AWS profile '%s': credential_source Environment but "
                             "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are not set",
                             name);
    }
    if (strcmp(cs, "Ec2InstanceMetadata") == 0)
        return s3_cred_imds(out, err);
    if (strcmp(cs, "EcsContainer") == 0) {
        int configured = 0;
        int rc = s3_cred_container(&configured, out, err);
        if (rc == CAIRN_OK && !configured)
            rc = cairn_err_set(err, CAIRN_E_INVALID,
                               "AWS profile '%s': credential_source EcsContainer but "
                               "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI/_FULL_URI are not set",
                               name);
        return rc;
    }
    return cairn_err_set(err, CAIRN_E_INVALID,
                         "AWS profile '%s': unknown credential_source '%s' (known: Environment, "
                         "Ec2InstanceMetadata, EcsContainer)",
                         name, cs);
}

/* A profile with role_arn: the source credentials, then AssumeRole (or web identity). */
static int from_role(struct chain *ch, const char *name, const char *role, int depth,
                     struct s3_cred *out, struct cairn_err *err)
{
    const struct s3_profiles *pf = ch->pf;
    const char *sess = s3_profile_get(pf, name, "role_session_name");
    const char *wit = s3_profile_get(pf, name, "web_identity_token_file");
    const char *src = s3_profile_get(pf, name, "source_profile");
    const char *cs = s3_profile_get(pf, name, "credential_source");
    int rc;
    if (s3_profile_get(pf, name, "mfa_serial") != NULL)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "AWS profile '%s': mfa_serial needs an interactive MFA code, which "
                             "cairn cannot ask for (use credential_process or a session token)",
                             name);
    if (wit != NULL) {
        rc = s3_cred_web_identity(ch->region, wit, role, sess, out, err);
        if (rc == CAIRN_OK)
            snprintf(out->provider, sizeof(out->provider), "profile '%s' (web identity)", name);
        return rc;
    }
    struct s3_cred base = {0};
    if (src != NULL && cs != NULL)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "AWS profile '%s' has both source_profile and credential_source",
                             name);
    if (src != NULL) /* a profile naming itself uses its own static keys */
        rc = from_profile(ch, src, depth + 1, strcmp(src, name) != 0, &base, err);
    else if (cs != NULL)
        rc = from_credential_source(name, cs, &base, err);
    else
        rc = cairn_err_set(err, CAIRN_E_INVALID,
                           "AWS profile '%s' has role_arn but no source_profile, "
                           "credential_source or web_identity_token_file",
                           name);
    if (rc == CAIRN_OK)
        rc = s3_cred_assume_role(ch->region, &base, role, sess,
                                 s3_profile_get(pf, name, "external_id"),
                                 s3_profile_get(pf, name, "duration_seconds"), out, err);
    s3_cred_clear(&base);
    if (rc == CAIRN_OK)
        snprintf(out->provider, sizeof(out->provider), "profile '%s' (AssumeRole)", name);
    return rc;
}

/* Credentials of profile name: role (when roles), static keys, credential_process. Returns
 * CAIRN_E_NOTFOUND without an error message when the profile has none of them. */
static int from_profile(struct chain *ch, const char *name, int depth, int roles,
                        struct s3_cred *out, struct cairn_err *err)
{
    if (depth > CHAIN_DEPTH)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "AWS profile '%s': source_profile chain longer than %d (a loop?)",
                             name, CHAIN_DEPTH);
    if (!s3_profile_exists(ch->pf, name))
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "no S3 credentials: AWS profile '%s' not found in %s", name,
                             s3_profiles_where(ch->pf));
    const char *role = s3_profile_get(ch->pf, name, "role_arn");
    if (roles && role != NULL)
        return from_role(ch, name, role, depth, out, err);
    if (from_static(ch->pf, name, out))
        return CAIRN_OK;
    const char *proc = s3_profile_get(ch->pf, name, "credential_process");
    if (proc != NULL) {
        int rc = s3_cred_process(proc, name, out, err);
        if (rc == CAIRN_OK)
            snprintf(out->provider, sizeof(out->provider), "profile '%s' (credential_process)",
                     name);
        return rc;
    }
    if (depth > 0)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "no S3 credentials: AWS source_profile '%s' has no keys, role or "
                             "credential_process in %s",
                             name, s3_profiles_where(ch->pf));
    return CAIRN_E_NOTFOUND;
}

static int imds_disabled(void)
{
    const char *v = env("AWS_EC2_METADATA_DISABLED");
    return v != NULL && strcasecmp(v, "true") == 0;
}

/* Steps 3 to 6 of the chain (the header comment): after the profile had no role. */
static int chain_rest(struct chain *ch, const char *profile, int explicit_profile,
                      struct s3_cred *out, struct cairn_err *err)
{
    const char *wit = env("AWS_WEB_IDENTITY_TOKEN_FILE"), *role = env("AWS_ROLE_ARN");
    if (wit != NULL && role != NULL) {
        int rc =
            s3_cred_web_identity(ch->region, wit, role, env("AWS_ROLE_SESSION_NAME"), out, err);
        if (rc == CAIRN_OK)
            snprintf(out->provider, sizeof(out->provider),
                     "web identity (AWS_WEB_IDENTITY_TOKEN_FILE)");
        return rc;
    }
    int rc = s3_profile_exists(ch->pf, profile) ? from_profile(ch, profile, 0, 0, out, err)
                                                : CAIRN_E_NOTFOUND;
    if (rc != CAIRN_E_NOTFOUND)
        return rc;
    if (explicit_profile)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "no S3 credentials: AWS profile '%s' (AWS_PROFILE) not found in %s",
                             profile, s3_profiles_where(ch->pf));
    int configured = 0;
    rc = s3_cred_container(&configured, out, err);
    if (configured) {
        if (rc == CAIRN_OK)
            snprintf(out->provider, sizeof(out->provider), "ECS container credentials");
        return rc;
    }
    if (imds_disabled())
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "no S3 credentials: none in the environment (AWS_ACCESS_KEY_ID), "
                             "profile '%s' of %s, web identity or container variables, and "
                             "AWS_EC2_METADATA_DISABLED is set",
                             profile, s3_profiles_where(ch->pf));
    rc = s3_cred_imds(out, err);
    if (rc == CAIRN_OK) {
        snprintf(out->provider, sizeof(out->provider), "EC2 instance metadata");
    } else {
        cairn_err_wrap(err, CAIRN_E_INVALID,
                       "no S3 credentials: none in the environment (AWS_ACCESS_KEY_ID), profile "
                       "'%s' of %s, web identity or container variables; last tried",
                       profile, s3_profiles_where(ch->pf));
        rc = CAIRN_E_INVALID;
    }
    return rc;
}

int s3_cred_resolve(const char *region, struct s3_cred *out, struct cairn_err *err)
{
    memset(out, 0, sizeof(*out));
    if (from_env(out))
        return CAIRN_OK;
    const char *profile = env("AWS_PROFILE");
    int explicit_profile = profile != NULL;
    if (profile == NULL)
        profile = "default";
    struct s3_profiles *pf = s3_profiles_load();
    struct chain ch = {pf, region};
    int rc;
    if (s3_profile_exists(ch.pf, profile) && s3_profile_get(ch.pf, profile, "role_arn"))
        rc = from_profile(&ch, profile, 0, 1, out, err);
    else
        rc = chain_rest(&ch, profile, explicit_profile, out, err);
    s3_profiles_free(pf);
    return rc;
}

/* The region: the URL's, AWS_REGION, AWS_DEFAULT_REGION, the profile's, us-east-1. */
static char *resolve_region(void)
{
    if (env("AWS_REGION"))
        return xstrdup(env("AWS_REGION"));
    if (env("AWS_DEFAULT_REGION"))
        return xstrdup(env("AWS_DEFAULT_REGION"));
    struct s3_profiles *pf = s3_profiles_load();
    const char *r =
        s3_profile_get(pf, env("AWS_PROFILE") ? env("AWS_PROFILE") : "default", "region");
    char *out = xstrdup(r ? r : "us-east-1");
    s3_profiles_free(pf);
    return out;
}

static void log_cred(const struct s3 *s, const struct s3_cred *c, const char *verb)
{
    char exp[40] = "never";
    if (c->expires)
        format_rfc3339(c->expires, 0, exp, sizeof(exp));
    /* The key id is not secret (it is in every request's Authorization header). */
    cairn_info("s3", "%s credentials for s3://%s from %s: access key id %s, expires %s", verb,
               s->bucket, c->provider, c->access, exp);
}

int s3_load_credentials(struct s3 *s, struct cairn_err *err)
{
    pthread_mutex_lock(&s->mu); /* once per session: requests of other threads read both */
    if (s->region == NULL)
        s->region = resolve_region();
    if (s->sigv4 == NULL)
        s->sigv4 = xasprintf("aws:amz:%s:s3", s->region);
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_lock(&s->credmu);
    int rc = CAIRN_OK;
    if (s->cred.access == NULL) {
        rc = s3_cred_resolve(s->region, &s->cred, err);
        if (rc == CAIRN_OK)
            log_cred(s, &s->cred, "loaded");
    }
    pthread_mutex_unlock(&s->credmu);
    return rc;
}

/* Under credmu: refresh when the credentials expire within REFRESH_BEFORE_S. A failed refresh
 * of credentials that are still valid is logged and retried REFRESH_RETRY_S later. */
static int refresh_locked(struct s3 *s, struct cairn_err *err)
{
    int64_t now = (int64_t)(now_ms() / 1000);
    if (s->cred.access != NULL &&
        (s->cred.expires == 0 || now + REFRESH_BEFORE_S < s->cred.expires ||
         (now < s->cred_retry_at && now < s->cred.expires)))
        return CAIRN_OK;
    struct s3_cred fresh = {0};
    struct cairn_err local;
    int rc = s3_cred_resolve(s->region, &fresh, &local);
    if (rc == CAIRN_OK) {
        s3_cred_clear(&s->cred);
        s->cred = fresh;
        log_cred(s, &s->cred, "refreshed");
        return CAIRN_OK;
    }
    if (s->cred.access != NULL && now < s->cred.expires) {
        cairn_warn("s3",
                   "refreshing credentials for s3://%s failed (retrying in %d s, the "
                   "current ones are valid for %lld s more): %s",
                   s->bucket, REFRESH_RETRY_S, (long long)(s->cred.expires - now), local.msg);
        s->cred_retry_at = now + REFRESH_RETRY_S;
        return CAIRN_OK;
    }
    if (err != NULL)
        *err = local;
    if (s->cred.access == NULL)
        return rc;
    return cairn_err_wrap(err, rc, "S3 credentials for s3://%s expired and could not be renewed",
                          s->bucket);
}

int s3_cred_get(struct s3 *s, struct s3_cred *out, struct cairn_err *err)
{
    pthread_mutex_lock(&s->credmu);
    int rc = refresh_locked(s, err);
    if (rc == CAIRN_OK) {
        *out = s->cred;
        out->access = xstrdup(s->cred.access);
        out->secret = xstrdup(s->cred.secret);
        out->token = s->cred.token ? xstrdup(s->cred.token) : NULL;
    }
    pthread_mutex_unlock(&s->credmu);
    return rc;
}
