#!/usr/bin/env python3
"""Bad input for `cairn backup --from etcd://` and `--from redis://`, through the CLI a user
runs, against the real servers from Debian on loopback (issue 15, "Bad input").

For each source one good backup is taken first; then every fault below must fail with the
documented exit code (docs/SOURCES.md, `cairn backup --help`) and a message that names the
source (its host:port) and what was expected, leave no complete backup behind, and leave the
good backup intact (`cairn verify`):

  etcd:  server down (refused port), a web server that is not etcd (unexpected reply),
         a stream cut in the middle (clean close, reset: tests/harness/faultproxy.py), on
         the gateway (an HTTP proxy: the gRPC attempt fails and the gateway is asked) and on
         the gRPC transport (a TCP proxy),
         a byte flipped in transit (only etcd's SHA-256 trailer can tell), TLS failure
         (etcds:// to a plain-HTTP member), wrong credentials (auth on: wrong password, a
         user without the root role);
  redis: server down, a peer that is not Redis (unexpected reply), a stream that is not an
         RDB, a stream cut in the middle (clean close, reset), a flipped byte (the RDB's
         CRC-64), a wrong password.

The driver-level cases (every form of damage, stalls, cancel, TLS certificates) are in
test_etcd.py, test_etcd_tls.py and test_redis.py. SKIP (77) without the servers, a failure
under CI=true.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import http.server

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
import etcdtest as et  # noqa: E402
import redis_server as rs  # noqa: E402
import skips  # noqa: E402
from faultproxy import FaultProxy  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from repo import init_location  # noqa: E402

CAIRN = os.path.join(os.environ.get("CAIRN_BIN", os.path.join(HERE, "../../build")), "cairn")
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)
    return cond


def cairn(*args, env=None):
    p = subprocess.run([CAIRN] + list(args), capture_output=True, text=True, timeout=600,
                       env=env)
    return p.returncode, p.stdout, p.stderr


class Store:
    def __init__(self, root):
        self.url = "file://" + root
        init_location(self.url)
        self.n = 0

    def complete(self):
        rc, out, _ = cairn("list", self.url, "--json")
        return [b["name"] for b in json.loads(out)["backups"]
                if b["status"] == "complete"] if rc == 0 else None

    def good(self, src):
        rc, _, err = cairn("backup", "--from", src, "--to", self.url, "--name", "good")
        check(rc == 0, "good backup of %s (%s)" % (src, err.strip()))

    def fails(self, what, src, code, texts, env=None, extra=()):
        """A backup of src must fail with code, stderr holding every text; nothing complete
        but "good", which still verifies."""
        self.n += 1
        rc, out, err = cairn("backup", "--from", src, "--to", self.url, "--name",
                             "bad%d" % self.n, *extra, env=env)
        msg = err.strip().splitlines()[-1] if err.strip() else "(nothing)"
        check(rc == code and all(t in err for t in texts),
              "%s: exit %d (want %d), message %r has %r" % (what, rc, code, msg, texts))
        check(self.complete() == ["good"], "%s: nothing complete but the good backup (%s)" %
              (what, self.complete()))
        rc, _, verr = cairn("verify", self.url, "good")
        check(rc == 0, "%s: the good backup still verifies (%s)" % (what, verr.strip()))
        return err


def web(handler_body, ctype):
    """An HTTP server answering every request 200 with handler_body of type ctype."""
    class H(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(handler_body)))
            self.end_headers()
            self.wfile.write(handler_body)

        do_GET = do_POST = _answer

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def peer(reply):
    """A TCP server that answers each connection's first bytes with reply, then closes."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(4)

    def serve():
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            c.recv(4096)
            c.sendall(reply)
            c.close()
    threading.Thread(target=serve, daemon=True).start()
    return s


def etcd_faults(tmp):
    e = et.Etcd(os.path.join(tmp, "etcd"), name="f")
    e.start()
    try:
        e.put_many([("/k/%05d" % i, "v%d-" % i * 40) for i in range(5000)])
        st = Store(os.path.join(tmp, "estore"))
        st.good("etcd://127.0.0.1:%d" % e.client)

        port = et.free_port()
        st.fails("etcd down", "etcd://127.0.0.1:%d" % port, 8,
                 ["127.0.0.1:%d" % port, "cannot connect"])
        srv = web(b"<html>hello</html>", "text/html")
        port = srv.server_address[1]
        st.fails("etcd: a web server, not etcd", "etcd://127.0.0.1:%d" % port, 8,
                 ["127.0.0.1:%d" % port, "not JSON", "gateway"])
        srv.shutdown()
        srv.server_close()
        for action in ("short", "reset_mid"):
            p = FaultProxy(("127.0.0.1", e.client), plan=[action], http=True,
                           short_range=(300000, 300000)).start()
            try:
                st.fails("etcd: stream cut (%s)" % action, "etcd://" + p.addr, 8,
                         [p.addr, "truncated"])
                check(p.stats["cut"] == 1, "etcd %s: the proxy cut the stream" % action)
            finally:
                p.stop()
        # The same cuts below HTTP (raw TCP, the proxy does not parse the request): they hit
        # the gRPC transport over HTTP/2, which cairn tries first.
        for action in ("short", "reset_mid"):
            p = FaultProxy(("127.0.0.1", e.client), plan=[action],
                           short_range=(300000, 300000)).start()
            try:
                st.fails("etcd: gRPC stream cut (%s)" % action, "etcd://" + p.addr, 8,
                         [p.addr, "truncated"])
                # A reset may discard what the client had not read yet: then nothing of the
                # gRPC answer was seen and the gateway was asked too (a second connection).
                check(p.stats["cut"] >= 1, "etcd gRPC %s: the proxy cut the stream (%s)" %
                      (action, p.stats))
            finally:
                p.stop()
        # The gateway alone (CAIRN_ETCD_GATEWAY): a complete backup too.
        rc, _, err = cairn("backup", "--from", "etcd://127.0.0.1:%d" % e.client, "--to", st.url,
                           "--name", "gateway", env=dict(os.environ, CAIRN_ETCD_GATEWAY="1"))
        check(rc == 0, "etcd through the gateway only: exit %d (%s)" % (rc, err.strip()))
        rc, _, err = cairn("rm", st.url, "gateway") if rc == 0 else (0, "", "")
        check(rc == 0 and st.complete() == ["good"], "removed the gateway backup (%s)" % err)
        tp = et.TamperProxy(e.client, 200000, "flip")
        try:
            st.fails("etcd: a byte flipped in transit", "etcd://127.0.0.1:%d" % tp.port, 3,
                     ["127.0.0.1:%d" % tp.port, "sha256 mismatch"])
            check(tp.flipped is not None, "etcd flip: the proxy flipped %r" % (tp.flipped,))
        finally:
            tp.stop()
        st.fails("etcd: TLS to a plain-HTTP member", "etcds://127.0.0.1:%d" % e.client, 8,
                 ["127.0.0.1:%d" % e.client, "TLS failure"])

        # Wrong credentials: auth on, root and a user without the root role.
        e.call("/v3/auth/user/add", {"name": "root", "password": "root-Pw-1"})
        e.call("/v3/auth/role/add", {"name": "root"})
        e.call("/v3/auth/user/grant", {"user": "root", "role": "root"})
        e.call("/v3/auth/user/add", {"name": "bob", "password": "bob-Pw-2"})
        e.call("/v3/auth/enable", {})
        err = st.fails("etcd: wrong password", "etcd://root:wrong-Pw-9@127.0.0.1:%d" % e.client,
                       9, ["127.0.0.1:%d" % e.client, "authentication failed"])
        check("wrong-Pw-9" not in err, "etcd: the password is not in the message")
        st.fails("etcd: a user without the root role",
                 "etcd://bob:bob-Pw-2@127.0.0.1:%d" % e.client, 9,
                 ["127.0.0.1:%d" % e.client, "permission denied"])
        st.fails("etcd: no user while auth is on", "etcd://127.0.0.1:%d" % e.client, 9,
                 ["127.0.0.1:%d" % e.client, "user name is empty"])
    finally:
        e.stop()


def redis_faults(tmp):
    srv = rs.RedisServer(os.path.join(tmp, "redis"), password="red-Pw-3")
    try:
        rs.fill(srv.client(), 20000)
        st = Store(os.path.join(tmp, "rstore"))
        st.good("redis://:red-Pw-3@127.0.0.1:%d" % srv.port)

        port = rs.free_port()
        st.fails("redis down", "redis://127.0.0.1:%d" % port, 8, ["127.0.0.1:%d" % port,
                                                                  "refused"])
        s = peer(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        port = s.getsockname()[1]
        st.fails("redis: a peer that is not Redis", "redis://127.0.0.1:%d" % port, 8,
                 ["127.0.0.1:%d" % port, "unexpected reply"])
        s.close()
        s = peer(b"+OK\r\n+OK\r\n+OK\r\n+FULLRESYNC x 0\r\n$12\r\nNOT-AN-RDB!!")
        port = s.getsockname()[1]
        st.fails("redis: a stream that is not an RDB", "redis://127.0.0.1:%d" % port, 3,
                 ["127.0.0.1:%d" % port, "not an RDB file"])
        s.close()
        for action, code, text in (("short", 8, "truncated"), ("reset_mid", 8, "127.0.0.1:"),
                                   ("flip", 3, "RDB checksum mismatch")):
            p = FaultProxy(("127.0.0.1", srv.port), plan=[action],
                           short_range=(200000, 200000)).start()
            try:
                st.fails("redis: %s in the middle" % action,
                         "redis://:red-Pw-3@127.0.0.1:%d" % p.port, code,
                         ["127.0.0.1:%d" % p.port, text])
                check(p.stats[action] == 1, "redis %s: the proxy acted" % action)
            finally:
                p.stop()
        err = st.fails("redis: wrong password", "redis://:wrong-Pw-8@127.0.0.1:%d" % srv.port, 9,
                       ["127.0.0.1:%d" % srv.port, "WRONGPASS"])
        check("wrong-Pw-8" not in err and "red-Pw-3" not in err,
              "redis: no password in the message")
    finally:
        srv.stop()


def main():
    if not os.access(rs.REDIS_SERVER, os.X_OK) or et.ETCD is None or et.ETCDCTL is None:
        skips.missing("redis-server and etcd (Debian redis-server, etcd-server, etcd-client)")
    tmp = tempfile.mkdtemp(prefix="cairn-sources-faults-")
    try:
        etcd_faults(tmp)
        redis_faults(tmp)
    finally:
        if not failures:
            shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print("%d failed: %s (kept %s)" % (len(failures), "; ".join(failures), tmp))
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
