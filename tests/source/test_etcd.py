"""The etcd protocol core (src/source/etcd) against a real etcd 3.4 on loopback.

  * 10,000 keys with several revisions (and deletions) are snapshotted through the gateway by
    tests/source/etcd_snap; `etcdctl snapshot status` reads the file, the stored bytes are
    etcd's own (database || sha256), and `etcdctl snapshot restore` (run by
    etcd_restore_into) builds a data directory a second etcd starts from with every key,
    value, create/mod revision and version, the same current revision and the same history;
  * the restore helper writes a stored snapshot back as a file and refuses a damaged one;
  * faults: a refused port, a non-etcd HTTP server, a stream cut mid-transfer (a clean close
    and a reset), messages missing from a cleanly ended answer, a gateway error inside the
    stream, a byte flipped in transit (only the SHA-256 trailer can tell), etcd auth (no
    user, wrong password, a user without the root role, then root), a cancel mid-stream. No
    failed snapshot leaves a file behind.
"""
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
from etcdtest import (ETCD_SNAP, WAIT, Etcd, TamperProxy, etcd_snap,  # noqa: E402
                      etcdctl_status, free_port, need_etcd)
from faultproxy import FaultProxy  # noqa: E402

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def expect_fail(args, code, text, out_path, what, env=None):
    rc, _, err = etcd_snap(*args, env=env)
    check(rc == code and text in err, "%s: exit %d with %r (got %d: %s)" %
          (what, code, text, rc, err.strip()))
    check(not os.path.exists(out_path), "%s: no file left at %s" % (what, out_path))
    return err


def fill(etcd):
    """10,000 keys, three revisions each, then 500 of them deleted and 200 put again: a
    history with versions, deletions and re-creations."""
    keys = ["/app/%04d/key" % i for i in range(10000)]
    for gen in range(3):
        etcd.put_many([(k, "value %d of %s" % (gen, k) + "x" * (i % 97))
                       for i, k in enumerate(keys)])
    for k in keys[:500]:
        etcd.delete(k)
    etcd.put_many([(k, "reborn " + k) for k in keys[:200]])


class CannedGateway:
    """An HTTP server answering the snapshot call with a doctored copy of a real answer."""

    def __init__(self, lines, tail):
        body = b"".join(l + b"\n" for l in lines) + tail

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass  # the client stopped reading at the damage: what is tested

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = "http://127.0.0.1:%d" % self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def round_trip(tmp, a):
    snap = os.path.join(tmp, "a.snap")
    rc, out, err = etcd_snap("snapshot", a.url, snap)
    check(rc == 0, "snapshot of 10,000 keys: exit 0 (%s)" % err.strip())
    size = os.path.getsize(snap)
    check(rc == 0 and json.loads(out)["bytes"] == size, "reported bytes = file size %d" % size)
    check(size % 512 == 32, "file is whole pages plus the 32-byte sha256 trailer")
    rev, kvs = a.dump()
    st = etcdctl_status(snap)
    check(st["revision"] == rev, "etcdctl snapshot status: revision %s = etcd's %d" %
          (st["revision"], rev))
    check(st["totalKey"] >= len(kvs), "etcdctl snapshot status: %d keys" % st["totalKey"])

    # The restore helper: stored bytes back to a file, checked.
    back = os.path.join(tmp, "back.snap")
    rc, _, err = etcd_snap("restore-file", snap, back)
    check(rc == 0 and open(back, "rb").read() == open(snap, "rb").read(),
          "restore-file writes the snapshot back byte for byte (%s)" % err.strip())
    bad = os.path.join(tmp, "bad.snap")
    data = bytearray(open(snap, "rb").read())
    data[len(data) // 2] ^= 1
    open(bad, "wb").write(data)
    expect_fail(["restore-file", bad, os.path.join(tmp, "bad.out")], 3, "sha256 mismatch",
                os.path.join(tmp, "bad.out"), "restore-file of a damaged copy")
    open(bad, "wb").write(data[:-100])
    expect_fail(["restore-file", bad, os.path.join(tmp, "cut.out")], 3, "checksum not found",
                os.path.join(tmp, "cut.out"), "restore-file of a truncated copy")

    # etcdctl snapshot restore into a new data dir, a second etcd on it.
    peer = free_port()
    ddir = os.path.join(tmp, "b.etcd")
    rc, _, err = etcd_snap("restore-into", snap, ddir, "--name", "b", "--initial-cluster",
                           "b=http://127.0.0.1:%d" % peer, "--peer-urls",
                           "http://127.0.0.1:%d" % peer)
    check(rc == 0, "restore-into runs etcdctl snapshot restore (%s)" % err.strip())
    rc, _, err = etcd_snap("restore-into", snap, ddir)
    check(rc == 6 and "already exists" in err, "restore-into an existing dir: exit 6 (%s)" %
          err.strip())
    rc, _, err = etcd_snap("restore-into", snap, os.path.join(tmp, "c.etcd"), "--etcdctl",
                           "/nonexistent/etcdctl")
    check(rc == 5 and "etcd-client" in err, "restore-into without etcdctl: exit 5 naming the "
          "package (%s)" % err.strip())
    rc, _, err = etcd_snap("restore-into", bad, os.path.join(tmp, "d.etcd"))
    check(rc != 0 and not os.path.exists(os.path.join(tmp, "d.etcd")),
          "restore-into from a truncated file fails and leaves no data dir (%s)" % err.strip())
    b = Etcd(tmp, name="b", data_dir=ddir).start(peer=peer)
    try:
        rev_b, kvs_b = b.dump()
        check(rev_b == rev, "restored etcd at revision %d (source %d)" % (rev_b, rev))
        check(len(kvs_b) == len(kvs) == 9700, "restored etcd has %d keys (source %d)" %
              (len(kvs_b), len(kvs)))
        check(kvs_b == kvs, "every key, value, create/mod revision and version equal")
        old = rev - 300  # before the deletions: history came along
        check(b.dump(old) == a.dump(old), "the same keys and values at revision %d" % old)
    finally:
        b.stop()
    return snap


def faults(tmp, a):
    out = os.path.join(tmp, "f.snap")
    port = free_port()
    err = expect_fail(["snapshot", "http://127.0.0.1:%d" % port, out], 8,
                      "http://127.0.0.1:%d" % port, out, "refused port")
    check("connect" in err, "refused port: says it cannot connect")

    # A web server that is not etcd.
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    expect_fail(["snapshot", "http://127.0.0.1:%d" % srv.server_address[1], out], 8,
                "not an etcd v3 gRPC gateway", out, "a non-etcd HTTP server")
    srv.shutdown()
    srv.server_close()

    class Html(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>hello</html>")

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Html)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    expect_fail(["snapshot", "http://127.0.0.1:%d" % srv.server_address[1], out], 8,
                "answer of type text/html, not JSON", out, "a web page with status 200")
    srv.shutdown()
    srv.server_close()

    # Cut mid-stream: a clean close, then a reset, after 300,000 bytes of the answer.
    for action in ("short", "reset_mid"):
        p = FaultProxy(("127.0.0.1", a.client), plan=[action], http=True,
                       short_range=(300000, 300000)).start()
        expect_fail(["snapshot", "http://" + p.addr, out], 8, "truncated", out,
                    "stream cut by %s" % action)
        check(p.stats["cut"] == 1, "%s: the proxy did cut the answer" % action)
        p.stop()

    # A cleanly ended answer with messages missing, and a gateway error inside the stream.
    with urllib.request.urlopen(urllib.request.Request(a.url + "/v3/maintenance/snapshot",
                                                       data=b"{}"), timeout=WAIT) as r:
        lines = r.read().split(b"\n")[:-1]
    err_obj = (b'{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: leader '
               b'changed","http_status":"Service Unavailable"}}')
    for name, ls, tail, code, text in (
            ("no trailer", lines[:-1], b"", 3, "truncated"),
            ("a data message missing", lines[:3] + lines[4:], b"", 3, "does not add up"),
            ("the last line cut", lines[:-1], lines[-1][:20], 3, "truncated inside message"),
            ("gateway error mid-stream", lines[:3], err_obj, 8, "leader changed")):
        g = CannedGateway(ls, tail)
        expect_fail(["snapshot", g.url, out], code, text, out, name)
        g.stop()

    # The harness proxy's flip (XOR 0x01 of byte 250,000): whatever the byte was (a base64
    # digit, or not one any more), the snapshot is refused as corrupt.
    p = FaultProxy(("127.0.0.1", a.client), plan=["flip"], http=True,
                   short_range=(250000, 250000)).start()
    expect_fail(["snapshot", "http://" + p.addr, out], 3, "etcd snapshot from", out,
                "a byte XORed in transit (faultproxy flip)")
    p.stop()

    # One letter's case flipped in transit inside a blob: still valid base64 and JSON, so
    # only the sha256 trailer tells.
    fp = TamperProxy(a.client, 200000, "flip")
    expect_fail(["snapshot", "http://127.0.0.1:%d" % fp.port, out], 3, "sha256 mismatch", out,
                "a flipped byte")
    check(fp.flipped is not None, "the proxy flipped %r" % (fp.flipped,))
    fp.stop()

    # Cancel: SIGINT once 2 MB came and the proxy holds the rest back (it never sends more,
    # so only the cancel flag can end the snapshot).
    p = TamperProxy(a.client, 2000000, "stall")
    proc = subprocess.Popen([ETCD_SNAP, "snapshot", "http://127.0.0.1:%d" % p.port, out,
                             "--progress"], stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()
    check(p.stalled.wait(WAIT), "the proxy holds the stream")
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    rc = proc.wait(timeout=WAIT)
    check(first.startswith("progress ") and rc == 130 and "cancelled" in rest,
          "SIGINT mid-stream: exit 130 (%r, %d, %s)" % (first, rc, rest.strip()))
    check(not os.path.exists(out), "cancelled: no file left")
    p.stop()


def auth(tmp, a):
    """etcd auth on: root gets a snapshot, nobody else does."""
    out = os.path.join(tmp, "auth.snap")
    # A user given while auth is still off: no token, as etcdctl does.
    rc, _, err = etcd_snap("snapshot", a.url, out, "--user", "root",
                           env=dict(os.environ, ETCD_SNAP_PASSWORD="any"))
    check(rc == 0, "auth off, a user given: exit 0 (%s)" % err.strip())
    os.unlink(out)
    a.call("/v3/auth/user/add", {"name": "root", "password": "rootpw"})
    a.call("/v3/auth/role/add", {"name": "root"})
    a.call("/v3/auth/user/grant", {"user": "root", "role": "root"})
    a.call("/v3/auth/user/add", {"name": "bob", "password": "bobpw"})
    a.call("/v3/auth/enable", {})
    env = dict(os.environ)
    expect_fail(["snapshot", a.url, out], 9, "user name is empty", out, "auth on, no user")
    env["ETCD_SNAP_PASSWORD"] = "wrong-secret"
    err = expect_fail(["snapshot", a.url, out, "--user", "root"], 9, "authentication failed",
                      out, "wrong password", env=env)
    check("wrong-secret" not in err, "the password is not in the message")
    env["ETCD_SNAP_PASSWORD"] = "bobpw"
    expect_fail(["snapshot", a.url, out, "--user", "bob"], 9, "permission denied", out,
                "a user without the root role", env=env)
    env["ETCD_SNAP_PASSWORD"] = "rootpw"
    rc, _, err = etcd_snap("snapshot", a.url, out, "--user", "root", env=env)
    check(rc == 0 and os.path.getsize(out) % 512 == 32, "root: exit 0 (%s)" % err.strip())


def main():
    need_etcd()
    tmp = tempfile.mkdtemp(prefix="cairn-etcd-")
    a = Etcd(tmp, name="a")
    try:
        a.start()
        fill(a)
        round_trip(tmp, a)
        faults(tmp, a)
        auth(tmp, a)
    finally:
        a.stop()
    if failures:
        print("%d failed: %s (kept %s)" % (len(failures), "; ".join(failures), tmp))
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
