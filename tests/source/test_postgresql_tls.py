#!/usr/bin/env python3
"""The postgresql:// source over TLS against a real PostgreSQL 15 (Debian's) on loopback whose
pg_hba.conf allows replication only over SSL (hostssl). A test CA and a server certificate for
127.0.0.1 are made with openssl. With sslmode=verify-full and the CA (as the URL's
sslrootcert, or as --tls-ca) the backup is complete and its restore passes pg_verifybackup;
with another CA it fails (exit 8) naming the source and the certificate; sslmode=disable is
refused by pg_hba (exit 9). SKIP (77) without PostgreSQL or openssl, a failure under CI=true.
"""
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
import pg_server as pg  # noqa: E402
import skips  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from repo import init_location  # noqa: E402

CAIRN = os.path.join(os.environ.get("CAIRN_BIN", "build"), "cairn")
HBA = """local all all trust
hostssl replication postgres 127.0.0.1/32 trust
hostnossl replication all 127.0.0.1/32 reject
host all postgres 127.0.0.1/32 trust
"""
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL: " + msg, flush=True)
    return cond


def cairn(*args):
    p = subprocess.run([CAIRN] + list(args), capture_output=True, text=True, timeout=600)
    return p.returncode, p.stdout, p.stderr


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True)


def make_certs(d):
    """ca.pem signs server.pem (CN and SAN 127.0.0.1); other.pem is an unrelated CA."""
    for ca in ("ca", "other"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                "/CN=cairn test %s" % ca, "-keyout", os.path.join(d, ca + ".key"), "-out",
                os.path.join(d, ca + ".pem"))
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout",
            os.path.join(d, "server.key"), "-out", os.path.join(d, "server.csr"))
    ext = os.path.join(d, "ext.cnf")
    with open(ext, "w") as f:
        f.write("subjectAltName = IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", os.path.join(d, "server.csr"), "-CA", os.path.join(d, "ca.pem"),
            "-CAkey", os.path.join(d, "ca.key"), "-CAcreateserial", "-days", "2", "-extfile", ext,
            "-out", os.path.join(d, "server.pem"))
    os.chmod(os.path.join(d, "server.key"), 0o600)


def main():
    pg.require_pg()
    if shutil.which("openssl") is None:
        skips.missing("openssl (Debian openssl)")
    tmp = tempfile.mkdtemp(prefix="cairn-pg-tls-")
    os.chmod(tmp, 0o755)
    certs = os.path.join(tmp, "certs")
    os.makedirs(certs)
    make_certs(certs)
    pg.chown_pg(certs)
    a = pg.PgServer(os.path.join(tmp, "a"), hba=HBA)
    try:
        a.start("-c ssl=on -c ssl_cert_file=%s/server.pem -c ssl_key_file=%s/server.key" %
                (certs, certs))
        subprocess.run(a.pgbench("-i", "-q", "-s", "1"), check=True, capture_output=True)
        store = "file://" + os.path.join(tmp, "store")
        init_location(store)
        base = "postgresql://postgres@127.0.0.1:%d" % a.port
        ca = os.path.join(certs, "ca.pem")
        rc, out, err = cairn("backup", "--from", base + "?sslmode=verify-full&sslrootcert=" + ca,
                             "--to", store, "--name", "t1")
        check(rc == 0, "verify-full with sslrootcert: exit %d: %s" % (rc, err))
        rc, out, err = cairn("backup", "--from", base + "?sslmode=verify-full", "--tls-ca", ca,
                             "--to", store, "--name", "t2")
        check(rc == 0, "verify-full with --tls-ca: exit %d: %s" % (rc, err))
        if rc == 0:
            into = os.path.join(tmp, "r2")
            rc, out, err = cairn("restore", store, "t2", "--into", into)
            vrc, vout = pg.verifybackup(into) if rc == 0 else (1, err)
            check(rc == 0 and vrc == 0, "restore of t2 and pg_verifybackup: %s" % vout)
        rc, out, err = cairn("backup", "--from", base + "?sslmode=verify-full", "--tls-ca",
                             os.path.join(certs, "other.pem"), "--to", store, "--name", "t3")
        print("wrong CA: exit %d: %s" % (rc, err.strip()), flush=True)
        check(rc == 8 and "postgresql 127.0.0.1:%d" % a.port in err and "certificate" in err,
              "wrong CA: exit %d (want 8, naming the source and the certificate): %s" % (rc, err))
        rc, out, err = cairn("backup", "--from", base + "?sslmode=disable", "--to", store,
                             "--name", "t4")
        print("no TLS: exit %d: %s" % (rc, err.strip()), flush=True)
        check(rc == 9 and "pg_hba.conf" in err, "no TLS: exit %d (want 9): %s" % (rc, err))
        check(a.wait_no_slot(), "a replication slot was left")
    finally:
        a.stop()
    if failures:
        print("postgresql tls: %d failure(s) (files kept in %s)" % (len(failures), tmp))
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    print("postgresql tls: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
