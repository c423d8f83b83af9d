"""The S3 credential chain (docs/STORAGE.md) against a real s3rver and a stand-in AWS on
loopback, reached through the SDKs' own override variables:
- STS (AWS_ENDPOINT_URL_STS): AssumeRole must carry a SigV4 Authorization header that names the
  source profile's key and verifies with its secret; AssumeRoleWithWebIdentity must be
  unsigned and carry the token file's token.
- ECS (AWS_CONTAINER_CREDENTIALS_FULL_URI) with AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE.
- IMDSv2 (AWS_EC2_METADATA_SERVICE_ENDPOINT): a GET without the session token gets 401.
- The stand-in also proxies S3 to s3rver (which accepts only the key S3RVER), recording the
  x-amz-security-token of every S3 request: each provider hands out S3RVER/S3RVER with its own
  session token, so the test sees which provider's credentials reached S3.
Then: one test per provider, credential_process with a quoted path, the precedence order,
refresh before expiry (the proxy holds cairn's first S3 answer until the first credentials
are within 5 minutes of expiring: the next request carries refreshed ones), errors (exit
codes, no secret printed), percent-decoded URLs, and awscli resolving the same profiles."""
import datetime
import hashlib
import hmac
import http.client
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reliability"))
from rel import CAIRN, S3rver, WAIT, check, finish, run, tmpdir  # noqa: E402
import skips  # noqa: E402

T = tmpdir("cairn-s3cred-")
SRC_KEY, SRC_SECRET = "AKIDSOURCEPROFILE", "source-secret-do-not-print"
ROLE_SECRET_MARK = "S3RVER"  # every provider's secret (s3rver's only key pair)


def iso(t):
    return datetime.datetime.fromtimestamp(int(t), datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def sigv4_ok(method, path, query, headers, body, secret):
    """Verify an AWS4-HMAC-SHA256 Authorization header; returns (key id, ok)."""
    auth = headers.get("Authorization", "")
    m = re.match(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                 r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})", auth)
    if not m:
        return None, False
    key, day, region, service, signed, sig = m.groups()
    canon_h = "".join("%s:%s\n" % (h, " ".join((headers.get(h) or "").split()))
                      for h in signed.split(";"))
    q = "&".join(sorted(query.split("&"))) if query else ""
    creq = "\n".join([method, path, q, canon_h, signed, hashlib.sha256(body).hexdigest()])
    scope = "%s/%s/%s/aws4_request" % (day, region, service)
    sts = "\n".join(["AWS4-HMAC-SHA256", headers.get("x-amz-date", ""), scope,
                     hashlib.sha256(creq.encode()).hexdigest()])
    k = ("AWS4" + secret).encode()
    for part in (day, region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return key, hmac.compare_digest(hmac.new(k, sts.encode(), hashlib.sha256).hexdigest(), sig)


class FakeAWS:
    """STS, ECS, IMDS and an S3 proxy to s3rver on one loopback port."""

    def __init__(self, s3port):
        self.s3port = s3port
        self.lock = threading.Condition()
        self.log = []  # (kind, details dict)
        self.n = {}  # provider -> credentials handed out
        self.expires = {}  # provider -> list of Expiration times to hand out, then far
        self.hold_s3 = None  # threading.Event: the next S3 answer waits for it
        self.ecs_token = "ecs-auth-token"
        self.web_token = "web-identity-jwt"
        fa = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def reply(self, code, data=b"", ctype="text/plain", headers=(), clen=None):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data) if clen is None else clen))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def do_any(self):
                b = self.body()
                path = urllib.parse.urlsplit(self.path).path
                if path.startswith("/sts"):
                    return fa.sts(self, b)
                if path.startswith("/ecs"):
                    return fa.ecs(self)
                if path.startswith("/latest/"):
                    return fa.imds(self, path)
                return fa.s3(self, b)

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = do_any

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.port = self.srv.server_address[1]
        self.base = "http://127.0.0.1:%d" % self.port
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def record(self, kind, **d):
        with self.lock:
            self.log.append((kind, d))
            self.lock.notify_all()

    def creds(self, provider):
        with self.lock:
            self.n[provider] = self.n.get(provider, 0) + 1
            n = self.n[provider]
            exp = self.expires.get(provider, [])
            e = exp.pop(0) if exp else time.time() + 3600
        return {"AccessKeyId": "S3RVER", "SecretAccessKey": "S3RVER",
                "Token": "tok-%s-%d" % (provider, n), "Expiration": iso(e)}

    def sts(self, h, body):
        f = urllib.parse.parse_qs(body.decode())
        action = f.get("Action", [""])[0]
        hdrs = {k.lower(): v for k, v in h.headers.items()}
        hdrs["Authorization"] = h.headers.get("Authorization")
        if action == "AssumeRole":
            key, _ = sigv4_ok(h.command, "/", "", hdrs, b"", "")
            key, ok = sigv4_ok(h.command, urllib.parse.urlsplit(h.path).path,
                               urllib.parse.urlsplit(h.path).query, hdrs, body,
                               {SRC_KEY: SRC_SECRET, "S3RVER": "S3RVER"}.get(key, ""))
            self.record("sts", action=action, key=key, sig_ok=ok, role=f.get("RoleArn"),
                        token=h.headers.get("x-amz-security-token"))
            if not ok or f.get("RoleArn", [""])[0].endswith("/denied"):
                return h.reply(403, b"<ErrorResponse><Error><Code>AccessDenied</Code><Message>"
                               b"not allowed</Message></Error></ErrorResponse>", "text/xml")
            c = self.creds("assume")
        elif action == "AssumeRoleWithWebIdentity":
            self.record("sts", action=action, auth=h.headers.get("Authorization"),
                        wit=f.get("WebIdentityToken", [""])[0], role=f.get("RoleArn"))
            if h.headers.get("Authorization") or f.get("WebIdentityToken") != [self.web_token]:
                return h.reply(403, b"<ErrorResponse><Error><Code>InvalidIdentityToken</Code>"
                               b"</Error></ErrorResponse>", "text/xml")
            c = self.creds("webid")
        else:
            return h.reply(400, b"bad action")
        x = ("<%sResponse><%sResult><Credentials><AccessKeyId>%s</AccessKeyId><SecretAccessKey>"
             "%s</SecretAccessKey><SessionToken>%s</SessionToken><Expiration>%s</Expiration>"
             "</Credentials></%sResult></%sResponse>" % (action, action, c["AccessKeyId"],
                                                          c["SecretAccessKey"], c["Token"],
                                                          c["Expiration"], action, action))
        h.reply(200, x.encode(), "text/xml")

    def ecs(self, h):
        self.record("ecs", auth=h.headers.get("Authorization"))
        if h.headers.get("Authorization") != self.ecs_token:
            return h.reply(403, b'{"message": "bad token"}', "application/json")
        h.reply(200, json.dumps(self.creds("ecs")).encode(), "application/json")

    def imds(self, h, path):
        tok = h.headers.get("X-aws-ec2-metadata-token")
        self.record("imds", method=h.command, path=path, token=tok)
        if path == "/latest/api/token":
            if h.command != "PUT" or not h.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                return h.reply(400)
            return h.reply(200, b"imds-session-token")
        if tok != "imds-session-token":
            return h.reply(401)
        if path == "/latest/meta-data/iam/security-credentials/":
            return h.reply(200, b"cairn-role")
        if path == "/latest/meta-data/iam/security-credentials/cairn-role":
            c = dict(self.creds("imds"), Code="Success", Type="AWS-HMAC")
            return h.reply(200, json.dumps(c).encode(), "application/json")
        h.reply(404)

    def s3(self, h, body):
        auth = h.headers.get("Authorization") or ""
        m = re.search(r"Credential=([^/]+)/", auth)
        self.record("s3", method=h.command, path=h.path, key=m.group(1) if m else None,
                    token=h.headers.get("x-amz-security-token"))
        hold = self.hold_s3
        if hold is not None:
            hold.wait(WAIT)
        c = http.client.HTTPConnection("127.0.0.1", self.s3port, timeout=WAIT)
        hdrs = {k: v for k, v in h.headers.items() if k.lower() not in ("connection",)}
        c.request(h.command, h.path, body=body, headers=hdrs)
        r = c.getresponse()
        data = r.read()
        keep = [(k, v) for k, v in r.getheaders()
                if k.lower() not in ("content-length", "transfer-encoding", "connection",
                                     "content-type")]
        # A HEAD answer's Content-Length is the object's size, not the (empty) body's.
        clen = r.getheader("Content-Length") if h.command == "HEAD" else None
        h.reply(r.status, data, r.getheader("Content-Type") or "application/xml", keep, clen)
        c.close()

    def wait_for(self, cond, what):
        end = time.time() + WAIT
        with self.lock:
            while not cond():
                left = end - time.time()
                if left <= 0:
                    raise AssertionError("timed out waiting for " + what)
                self.lock.wait(left)

    def entries(self, kind, since=0):
        with self.lock:
            return [d for k, d in self.log[since:] if k == kind]

    def mark(self):
        with self.lock:
            return len(self.log)

    def stop(self):
        self.srv.shutdown()


def write(path, text, mode=0o600):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def base_env(fa, **extra):
    """No AWS_* from the caller: empty shared files, IMDS off unless a test turns it on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(HOME=T, AWS_CONFIG_FILE=os.path.join(T, "none-config"),
               AWS_SHARED_CREDENTIALS_FILE=os.path.join(T, "none-creds"),
               AWS_EC2_METADATA_DISABLED="true", AWS_REGION="us-east-1")
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def list_with(fa, url, env, want_token, what, rc_want=0, err_has=None):
    """cairn list with env; the S3 requests it made must all carry want_token."""
    m = fa.mark()
    rc, out, err, _ = run([CAIRN, "list", url], timeout=WAIT, env=env)
    if not check(rc == rc_want, "%s: cairn list exit %d (wanted %d): %s" % (what, rc, rc_want,
                                                                           err.strip())):
        return err
    for secret in (SRC_SECRET, fa.ecs_token, fa.web_token, "imds-session-token"):
        check(secret not in err and secret not in out, "%s: no secret printed" % what)
    if err_has is not None:
        check(err_has in err, "%s: stderr names %r: %s" % (what, err_has, err.strip()))
    if want_token is not None:
        toks = [d["token"] for d in fa.entries("s3", m)]
        check(toks and all(t == want_token for t in toks),
              "%s: S3 saw tokens %s, wanted %s" % (what, toks, want_token))
    return err


def main():
    s3 = S3rver(T, bucket="cred")
    if not s3.available():
        skips.missing("s3rver (scripts/deps.sh test)")
    s3.start()
    fa = FakeAWS(s3.port)
    try:
        parts(s3, fa)
    finally:
        fa.stop()
        s3.stop()
        shutil.rmtree(T, ignore_errors=True)
    finish()


def parts(s3, fa):
    url = "s3://cred/p?endpoint=%s&path_style=1" % fa.base
    sts = fa.base + "/sts"
    cfg, creds = os.path.join(T, "config"), os.path.join(T, "credentials")
    files = dict(AWS_CONFIG_FILE=cfg, AWS_SHARED_CREDENTIALS_FILE=creds)
    write(creds, "[src]\naws_access_key_id = %s\naws_secret_access_key = %s\n\n"
          "[static]\naws_access_key_id = S3RVER\naws_secret_access_key = S3RVER\n"
          "aws_session_token = tok-credfile\n" % (SRC_KEY, SRC_SECRET))
    proc = os.path.join(T, "cred proc.py")  # a space: credential_process is split like a shell
    write(proc, "import json, sys\nprint(json.dumps({'Version': 1, 'AccessKeyId': 'S3RVER',"
          " 'SecretAccessKey': 'S3RVER', 'SessionToken': 'tok-proc-' + sys.argv[1]}))\n")
    write(cfg, "[default]\nregion = us-east-1\n\n"
          "[profile static]\naws_access_key_id = WRONG\naws_secret_access_key = WRONG\n"
          "s3 =\n  max_concurrent_requests = 4\n\n"
          "[profile cfgonly]\naws_access_key_id = S3RVER\naws_secret_access_key = S3RVER\n"
          "aws_session_token = tok-config\n\n"
          "[profile role]\nrole_arn = arn:aws:iam::123456789012:role/cairn\n"
          "source_profile = src\nrole_session_name = cairn-test\n\n"
          "[profile chained]\nrole_arn = arn:aws:iam::123456789012:role/second\n"
          "source_profile = role\n\n"
          "[profile denied]\nrole_arn = arn:aws:iam::123456789012:role/denied\n"
          "source_profile = src\n\n"
          "[profile proc]\ncredential_process = %s \"%s\" one\n\n"
          "[profile proc2]\ncredential_process = '%s' %s 'two  words'\n\n"
          "[profile failproc]\ncredential_process = /bin/false\n\n"
          "[sso-session x]\nsso_region = us-east-1\n"
          % (sys.executable, proc, sys.executable, proc.replace(" ", "\\ ")))
    wit = write(os.path.join(T, "web-token"), fa.web_token + "\n")
    ecs_tok = write(os.path.join(T, "ecs-token"), fa.ecs_token + "\n")
    ecs = dict(AWS_CONTAINER_CREDENTIALS_FULL_URI=fa.base + "/ecs/creds",
               AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=ecs_tok)
    imds = dict(AWS_EC2_METADATA_DISABLED=None, AWS_EC2_METADATA_SERVICE_ENDPOINT=fa.base + "/")
    webid = dict(AWS_WEB_IDENTITY_TOKEN_FILE=wit,
                 AWS_ROLE_ARN="arn:aws:iam::123456789012:role/web", AWS_ENDPOINT_URL_STS=sts)
    envkeys = dict(AWS_ACCESS_KEY_ID="S3RVER", AWS_SECRET_ACCESS_KEY="S3RVER",
                   AWS_SESSION_TOKEN="tok-env")

    # One test per provider.
    list_with(fa, url, base_env(fa, **envkeys), "tok-env", "environment")
    list_with(fa, url, base_env(fa, AWS_PROFILE="static", **files), "tok-credfile",
              "credentials file (wins over the config file's keys of the same profile)")
    list_with(fa, url, base_env(fa, AWS_PROFILE="cfgonly", **files), "tok-config",
              "config file [profile x]")
    m = fa.mark()
    list_with(fa, url, base_env(fa, AWS_PROFILE="role", AWS_ENDPOINT_URL_STS=sts, **files),
              "tok-assume-%d" % (fa.n.get("assume", 0) + 1), "AssumeRole")
    st = fa.entries("sts", m)
    check(len(st) == 1 and st[0]["key"] == SRC_KEY and st[0]["sig_ok"],
          "AssumeRole: STS wants one request signed (SigV4) with the source profile's key: %s"
          % st)
    m = fa.mark()
    n = fa.n.get("assume", 0)
    list_with(fa, url, base_env(fa, AWS_PROFILE="chained", AWS_ENDPOINT_URL=fa.base + "/sts",
                                **files), "tok-assume-%d" % (n + 2),
              "role chaining through AWS_ENDPOINT_URL")
    st = fa.entries("sts", m)
    check(len(st) == 2 and st[0]["key"] == SRC_KEY and st[1]["key"] == "S3RVER" and
          st[1]["token"] == "tok-assume-%d" % (n + 1) and all(d["sig_ok"] for d in st),
          "chained: AssumeRole with the source's key, then with the first role's: %s" % st)
    list_with(fa, url, base_env(fa, AWS_PROFILE="proc", **files), "tok-proc-one",
              "credential_process")
    list_with(fa, url, base_env(fa, AWS_PROFILE="proc2", **files), "tok-proc-two  words",
              "credential_process: single quotes and a backslash-escaped blank")
    m = fa.mark()
    list_with(fa, url, base_env(fa, **webid), "tok-webid-%d" % (fa.n.get("webid", 0) + 1),
              "web identity")
    st = fa.entries("sts", m)
    check(len(st) == 1 and st[0]["auth"] is None and st[0]["wit"] == fa.web_token,
          "web identity: one unsigned AssumeRoleWithWebIdentity with the token: %s" % st)
    list_with(fa, url, base_env(fa, **ecs), "tok-ecs-%d" % (fa.n.get("ecs", 0) + 1), "ECS")
    m = fa.mark()
    list_with(fa, url, base_env(fa, **imds), "tok-imds-%d" % (fa.n.get("imds", 0) + 1), "IMDSv2")
    im = fa.entries("imds", m)
    check(im and im[0]["method"] == "PUT" and all(d["token"] == "imds-session-token"
                                                  for d in im[1:]),
          "IMDSv2: a PUT for the token first, then GETs with it: %s" % im)
    try:
        urllib.request.urlopen(fa.base + "/latest/meta-data/iam/security-credentials/")
        check(False, "IMDS stand-in answered a GET without the token")
    except urllib.error.HTTPError as e:
        check(e.code == 401, "IMDS GET without the token: HTTP %d, wanted 401" % e.code)

    # Precedence: every provider configured, then the winner removed, one at a time.
    nxt = lambda prov: "tok-%s-%d" % (prov, fa.n.get(prov, 0) + 1)  # noqa: E731
    steps = [("environment", [envkeys, dict(AWS_PROFILE="role"), webid, ecs, imds],
              lambda: "tok-env"),
             ("profile with role_arn", [dict(AWS_PROFILE="role"), webid, ecs, imds],
              lambda: nxt("assume")),
             ("web identity", [dict(AWS_PROFILE="static"), webid, ecs, imds],
              lambda: nxt("webid")),
             ("profile keys", [dict(AWS_PROFILE="static"), ecs, imds], lambda: "tok-credfile"),
             ("ECS", [ecs, imds], lambda: nxt("ecs")),
             ("IMDS", [imds], lambda: nxt("imds"))]
    for name, parts_, want in steps:
        extra = dict(AWS_ENDPOINT_URL_STS=sts, **files)
        for e in parts_:
            extra.update(e)
        list_with(fa, url, base_env(fa, **extra), want(), "precedence: %s first" % name)

    # Refresh: ECS credentials that expire 5 min + 2 s after they are handed out; cairn's
    # first S3 answer is held until they are within 5 minutes of expiring.
    t_exp = time.time() + 302
    fa.expires["ecs"] = [t_exp]
    fa.hold_s3 = threading.Event()
    m = fa.mark()
    first = fa.n.get("ecs", 0) + 1
    p = subprocess.Popen([CAIRN, "list", url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=base_env(fa, **ecs))
    try:
        fa.wait_for(lambda: len(fa.entries("s3", m)) >= 1, "cairn's first S3 request")
        while time.time() < t_exp - 300 + 1:  # a condition on the clock, not a guessed sleep
            time.sleep(0.05)
        fa.hold_s3.set()
        out, err = p.communicate(timeout=WAIT)
    finally:
        fa.hold_s3.set()
        fa.hold_s3 = None
        if p.poll() is None:
            p.kill()
    toks = [d["token"] for d in fa.entries("s3", m)]
    check(p.returncode == 0, "refresh: cairn list failed: %s" % err.decode())
    check(len(toks) >= 2 and toks[0] == "tok-ecs-%d" % first and
          all(t == "tok-ecs-%d" % (first + 1) for t in toks[1:]),
          "refresh: the requests after the first want refreshed credentials: %s" % toks)

    # Errors: exit codes, the provider named, no secret printed.
    list_with(fa, url, base_env(fa), None, "no credentials", 2, "no S3 credentials")
    list_with(fa, url, base_env(fa, AWS_PROFILE="nosuch", **files), None, "missing profile",
              2, "AWS profile 'nosuch' (AWS_PROFILE) not found")
    list_with(fa, url, base_env(fa, AWS_PROFILE="denied", AWS_ENDPOINT_URL_STS=sts, **files),
              None, "STS denied", 9, "STS AssumeRole of 'arn:aws:iam::123456789012:role/denied'")
    list_with(fa, url, base_env(fa, AWS_PROFILE="failproc", **files), None,
              "credential_process fails", 9, "credential_process of AWS profile 'failproc'")
    list_with(fa, url, base_env(fa, AWS_CONTAINER_CREDENTIALS_FULL_URI=fa.base + "/ecs/creds",
                                AWS_CONTAINER_AUTHORIZATION_TOKEN="wrong"), None,
              "ECS wrong token", 9, "ECS container credentials")
    list_with(fa, url, base_env(fa, AWS_CONTAINER_CREDENTIALS_FULL_URI="http://192.0.2.1/x"),
              None, "ECS full URI not local", 2, "must be https")
    t0 = time.time()
    list_with(fa, url, base_env(fa, AWS_EC2_METADATA_DISABLED=None,
                                AWS_EC2_METADATA_SERVICE_ENDPOINT="http://127.0.0.1:1"),
              None, "IMDS unreachable", 2, "EC2 instance metadata")
    check(time.time() - t0 < 60, "IMDS unreachable: gave up fast")

    # Percent-decoded URL: the prefix "a b+c" and an escaped endpoint option.
    pe = "s3://cred/a%%20b%%2Bc?endpoint=%s&path_style=1" % urllib.parse.quote(fa.base, safe="")
    env = base_env(fa, **envkeys)
    rc, out, err, _ = run([CAIRN, "init", pe, "--no-encryption"], timeout=WAIT, env=env)
    check(rc == 0, "init at a percent-encoded URL: %s" % err)
    srcdir = os.path.join(T, "src")
    os.makedirs(srcdir)
    write(os.path.join(srcdir, "f"), "hello\n")
    rc, out, err, _ = run([CAIRN, "put", pe, "b1", srcdir], timeout=WAIT, env=env)
    check(rc == 0, "put at a percent-encoded URL: %s" % err)
    check(os.path.isdir(os.path.join(s3.data, "cred", "a b+c", "b1")),
          "objects under the decoded prefix 'a b+c/': %s" % os.listdir(os.path.join(s3.data,
                                                                                     "cred")))
    rc, out, err, _ = run([CAIRN, "list", "s3://cred/a%2?endpoint=" + fa.base], timeout=WAIT,
                          env=env)
    check(rc == 2 and "malformed percent-escape" in err, "malformed escape: %d %s" % (rc, err))

    awscli_same(fa, files, proc, ecs, imds)


def awscli_same(fa, files, proc, ecs, imds):
    """The Debian awscli resolves the profiles cairn does, splitting credential_process the
    same way (its 2.9 has no AWS_ENDPOINT_URL_STS, so the STS profiles are left out)."""
    aws = "/usr/bin/aws"
    if not os.access(aws, os.X_OK):
        return skips.missing_part("Debian awscli at /usr/bin/aws (scripts/deps.sh test)")
    cases = [("static", dict(AWS_PROFILE="static", **files), "tok-credfile"),
             ("cfgonly", dict(AWS_PROFILE="cfgonly", **files), "tok-config"),
             ("proc", dict(AWS_PROFILE="proc", **files), "tok-proc-one"),
             ("proc2", dict(AWS_PROFILE="proc2", **files), "tok-proc-two  words")]
    for name, e, tok in cases:
        rc, out, err, _ = run([aws, "configure", "export-credentials", "--format", "process"],
                              timeout=WAIT, env=base_env(fa, **e))
        got = json.loads(out).get("SessionToken") if rc == 0 else err
        check(got == tok, "awscli resolves profile %s to %s, cairn to %s" % (name, got, tok))


if __name__ == "__main__":
    main()
