#!/usr/bin/env python3
"""rediss://: the Redis source over TLS, against a real redis-server 7.0 (Debian's, built with
TLS) listening with --tls-port, and a test CA made here with openssl (tests/harness/pki.py).

  * `cairn backup --from rediss://:PW@127.0.0.1:TLSPORT --tls-ca ca.crt` takes a complete
    backup (kind redis, password redacted); restored with --into, a fresh redis-server holds
    the same data (DBSIZE, DEBUG DIGEST, every key's DUMP);
  * a CA that did not sign the server's certificate, and no CA at all (the system's CAs),
    are refused: exit 8, a message naming the server and saying the certificate could not be
    verified, nothing complete left, the good backup still verifying;
  * a server with --tls-auth-clients yes: a backup with --tls-cert/--tls-key (a client
    certificate from the CA) works; without one the server turns the handshake away: exit 9,
    nothing complete;
  * a cairnd schedule with `source = rediss://...`, password-file, tls-ca, tls-cert and
    tls-key takes a complete backup of that server.
SKIP (77) without redis-server or openssl, a failure under CI=true.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
import redis_server as rs  # noqa: E402
import skips  # noqa: E402
from pki import make_ca, make_pki, need_openssl  # noqa: E402

BIN = os.environ["CAIRN_BIN"]
CAIRN = os.path.join(BIN, "cairn")
PASSWORD = "tls-Pw-4471"
failures = []


def check(cond, msg):
    print(("ok   " if cond else "FAIL ") + msg, flush=True)
    if not cond:
        failures.append(msg)
    return cond


def cairn(*args):
    p = subprocess.run([CAIRN] + list(args), capture_output=True, text=True, timeout=600)
    return p.returncode, p.stdout, p.stderr


def listing(store):
    rc, out, err = cairn("list", store, "--json")
    check(rc == 0, "list %s: %s" % (store, err))
    return {b["name"]: b for b in json.loads(out)["backups"]} if rc == 0 else {}


def refused(store, name, want_rc, texts, *args):
    rc, _, err = cairn("backup", "--from", args[0], "--to", store, "--name", name, *args[1:])
    err = err.strip()
    check(rc == want_rc, "%s: exit %d, want %d (%s)" % (name, rc, want_rc, err))
    for t in texts:
        check(t in err, "%s: the message says %r (%s)" % (name, t, err))
    check(PASSWORD not in err, "%s: no password in the error" % name)
    b = listing(store).get(name)
    check(b is None or b.get("status") != "complete", "%s: no complete backup left" % name)


def backup_restore(tmp, tls):
    """Backup over TLS (server certificate checked), restore, compare; the refusals."""
    srv = rs.RedisServer(os.path.join(tmp, "r1"), password=PASSWORD, tls=tls)
    copy = None
    try:
        c = srv.client()
        rs.fill(c, 20000)
        store = "file://" + os.path.join(tmp, "store")
        rc, _, err = cairn("init", store, "--no-encryption")
        check(rc == 0, "init: %s" % err)
        url = "rediss://:%s@127.0.0.1:%d" % (PASSWORD, srv.tls_port)
        rc, out, err = cairn("backup", "--from", url, "--to", store, "--name", "t1", "--json",
                             "--tls-ca", tls["ca"])
        if not check(rc == 0, "backup over TLS: rc %d %s" % (rc, err)):
            return
        check(PASSWORD not in out + err, "no password in backup's output")
        check(json.loads(out)["source"] == "rediss://:***@127.0.0.1:%d" % srv.tls_port,
              "--json source is redacted: %s" % out)
        b = listing(store).get("t1", {})
        check(b.get("status") == "complete" and b.get("kind") == "redis", "t1: %s" % b)

        addr = "127.0.0.1:%d" % srv.tls_port
        wrong = make_ca(os.path.join(tmp, "other"), cn="not the server's CA")
        refused(store, "wrong-ca", 8, ["redis " + addr, "certificate"], url, "--tls-ca", wrong)
        refused(store, "system-cas", 8, ["redis " + addr, "certificate"], url, "--tls")
        # rediss:// to the plain port: a plain Redis never answers the handshake (it waits
        # for a newline); the connect timeout (--timeout, 2 s here) ends it.
        refused(store, "plain-port", 8, ["redis 127.0.0.1:%d" % srv.port, "TLS handshake"],
                "rediss://:%s@127.0.0.1:%d" % (PASSWORD, srv.port), "--tls-ca", tls["ca"],
                "--timeout", "2000")
        rc, _, err = cairn("verify", store, "t1")
        check(rc == 0, "t1 verifies after the refusals: %s" % err)

        into = os.path.join(tmp, "restored")
        rc, _, err = cairn("restore", store, "t1", "--into", into)
        if not check(rc == 0, "restore: rc %d %s" % (rc, err)):
            return
        copy = rs.RedisServer(into)
        problems = rs.compare(c, copy.client())
        check(not problems, "the restored server holds the same data: %s" % problems)
    finally:
        srv.stop()
        if copy is not None:
            copy.stop()


def cairnd_backup(tmp, store, url, pwfile, tls):
    """One backup by a cairnd schedule with the TLS keys; True when a complete one is listed."""
    conf = os.path.join(tmp, "cairnd.conf")
    with open(conf, "w") as f:
        f.write("[cairnd]\nstate-dir = %s\nmetrics-listen = off\n\n"
                "[schedule tls]\nsource = %s\nto = %s\nevery = 1s\nkeep-last = 2\n"
                "password-file = %s\ntls-ca = %s\ntls-cert = %s\ntls-key = %s\n"
                % (os.path.join(tmp, "dstate"), url, store, pwfile, tls["ca"],
                   tls["client_cert"], tls["client_key"]))
    log = open(os.path.join(tmp, "cairnd.log"), "w+")
    proc = subprocess.Popen([os.path.join(BIN, "cairnd"), "run", "--config", conf], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        # The condition: a complete backup listed (a new schedule runs at once).
        end = time.monotonic() + 300
        done = []
        while not done and time.monotonic() < end and proc.poll() is None:
            rc, out, _ = cairn("list", store, "--json")
            if rc == 0:
                done = [b for b in json.loads(out)["backups"] if b["status"] == "complete"]
            if not done:
                time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)
        log.seek(0)
        text = log.read()
        check(PASSWORD not in text, "cairnd: no password in its log")
        return check(done and done[0]["kind"] == "redis",
                     "cairnd: a complete redis backup over TLS: %s %s" % (done, text[-800:]))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def client_certs(tmp, tls):
    """A server that requires client certificates (tls-auth-clients yes)."""
    srv = rs.RedisServer(os.path.join(tmp, "r2"), password=PASSWORD,
                         tls=dict(tls, auth_clients="yes"))
    try:
        rs.fill(srv.client(), 2000)
        store = "file://" + os.path.join(tmp, "store2")
        rc, _, err = cairn("init", store, "--no-encryption")
        check(rc == 0, "init: %s" % err)
        url = "rediss://:%s@127.0.0.1:%d" % (PASSWORD, srv.tls_port)
        rc, _, err = cairn("backup", "--from", url, "--to", store, "--name", "c1", "--tls-ca",
                           tls["ca"], "--tls-cert", tls["client_cert"], "--tls-key",
                           tls["client_key"])
        check(rc == 0, "client certificate given: rc %d %s" % (rc, err))
        b = listing(store).get("c1", {})
        check(b.get("status") == "complete", "c1: %s" % b)
        refused(store, "no-client-cert", 9, ["redis 127.0.0.1:%d" % srv.tls_port, "certificate"],
                url, "--tls-ca", tls["ca"])
        dstore = "file://" + os.path.join(tmp, "dstore")
        rc, _, err = cairn("init", dstore, "--no-encryption")
        check(rc == 0, "init: %s" % err)
        pwfile = os.path.join(tmp, "redis.pw")
        with open(pwfile, "w") as f:
            f.write(PASSWORD + "\n")
        os.chmod(pwfile, 0o600)
        cairnd_backup(tmp, dstore, "rediss://127.0.0.1:%d" % srv.tls_port, pwfile, tls)
    finally:
        srv.stop()


def main():
    rs.require_redis()
    need_openssl()
    tmp = tempfile.mkdtemp(prefix="cairn-redis-tls-")
    try:
        tls = make_pki(os.path.join(tmp, "pki"))
        backup_restore(tmp, tls)
        client_certs(tmp, tls)
    finally:
        if not failures:
            shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print("%d failure(s), kept %s" % (len(failures), tmp))
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
