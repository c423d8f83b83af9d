"""The etcd protocol core over TLS with client certificates (what etcds:// will mean): a real
etcd with --cert-file, --key-file, --trusted-ca-file and --client-cert-auth.

  * with the CA and a client certificate the snapshot is taken and etcdctl reads it;
  * without a client certificate, without the CA (the server is not trusted) and with a
    certificate file that does not exist, it fails as a network error naming the URL and
    leaves no file.
"""
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
from etcdtest import Etcd, etcd_snap, etcdctl_status, need_etcd  # noqa: E402
from pki import make_pki, need_openssl  # noqa: E402

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def main():
    need_etcd()
    need_openssl()
    tmp = tempfile.mkdtemp(prefix="cairn-etcd-tls-")
    tls = make_pki(tmp)
    e = Etcd(tmp, tls=tls)
    try:
        e.start()
        e.put_many([("/tls/%d" % i, "v%d" % i) for i in range(1000)])
        rev, _ = e.dump()
        out = os.path.join(tmp, "tls.snap")
        rc, _, err = etcd_snap("snapshot", e.url, out, "--cacert", tls["ca"], "--cert",
                               tls["client_cert"], "--key", tls["client_key"])
        check(rc == 0, "https with CA and client certificate: exit 0 (%s)" % err.strip())
        check(rc == 0 and etcdctl_status(out)["revision"] == rev,
              "etcdctl snapshot status reads it at revision %d" % rev)
        for name, args, text in (
                ("no client certificate", ["--cacert", tls["ca"]], "client certificate"),
                ("server not trusted (no CA)", ["--cert", tls["client_cert"], "--key",
                                                tls["client_key"]], "TLS failure"),
                ("client certificate missing", ["--cacert", tls["ca"], "--cert",
                                                os.path.join(tmp, "nope.crt")], "TLS failure")):
            bad = os.path.join(tmp, "bad.snap")
            rc, _, err = etcd_snap("snapshot", e.url, bad, *args)
            check(rc == 8 and text in err and e.url in err,
                  "%s: exit 8 naming the URL (%d: %s)" % (name, rc, err.strip()))
            check(not os.path.exists(bad), "%s: no file left" % name)
    finally:
        e.stop()
    if failures:
        print("%d failed: %s (kept %s)" % (len(failures), "; ".join(failures), tmp))
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
