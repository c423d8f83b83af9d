"""A stand-in for a Consul agent or a Vault server's snapshot API, for the consul:// and
vault:// source tests (neither server is packaged in Debian).

It serves recorded real snapshot archives and answers as the HashiCorp API docs and code
describe (shared/spec/consul-vault-snapshot-http.md):

Consul  GET /v1/snapshot   query dc (default dc1; another dc is 500 "No path to datacenter"),
                           stale (a presence flag); token from ?token=, X-Consul-Token or
                           "Authorization: Bearer"; a wrong or missing token with ACLs on is
                           403 "Permission denied"; 200 is application/x-gzip with
                           X-Consul-Index, X-Consul-KnownLeader, X-Consul-LastContact.
        PUT /v1/snapshot   the raw archive as the body; ?stale is 400 "stale not allowed for
                           restore"; 200 with an empty body.
Vault   GET /v1/sys/storage/raft/snapshot           X-Vault-Token or "Authorization: Bearer";
                           403 {"errors":["permission denied"]}; 200 application/gzip,
                           Content-Disposition attachment, Cache-Control no-store.
        POST /v1/sys/storage/raft/snapshot[-force]  the raw archive; 204.
A Vault standby is redirect_to: every snapshot call is 307 to the active node's address.
Any other method on those paths is 405 (Consul with an Allow header), any other path 404.

Every request is recorded (method, path, query, headers, body) for the test to check, and a
test can make the next answers fail: status (with the server's body), "stall" (half the body,
then silence until stop() or release is set), "truncate" (declare the
whole length, send part, close: a cut connection), "close" (no Content-Length, send part,
close cleanly: only the archive check can tell), "append" (Consul's failure after the 200:
the error text after the archive).
"""
import http.server
import json
import ssl
import threading
import urllib.parse

CONSUL_PATH = "/v1/snapshot"
VAULT_PATH = "/v1/sys/storage/raft/snapshot"


class Server:
    def __init__(self, flavour, snapshot, token=None, tls=None):
        """flavour "consul" or "vault"; snapshot: the bytes a GET returns; token: the one
        accepted (None: ACLs off); tls: (certfile, keyfile[, client_ca]) for HTTPS."""
        self.flavour = flavour
        self.snapshot = snapshot
        self.token = token
        self.requests = []
        self.redirect_to = None  # Vault standby: 307 to this base URL (the active node)
        self.stalled = threading.Event()
        self.release = threading.Event()
        self.faults = []  # consumed one per snapshot GET/PUT/POST
        self.lock = threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def handle_expect_100(self):
                # Go's net/http sends "100 Continue" only when the handler reads the body
                # (see _handle), not before it has looked at the request
                self.expect_100 = True
                return True

            def do_GET(self):
                outer._handle(self, "GET")

            def do_PUT(self):
                outer._handle(self, "PUT")

            def do_POST(self):
                outer._handle(self, "POST")

            def do_DELETE(self):
                outer._handle(self, "DELETE")

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.srv.handle_error = lambda *a: None  # a client that went away: what is tested
        scheme = "http"
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls[0], tls[1])
            if len(tls) > 2 and tls[2]:
                ctx.load_verify_locations(tls[2])
                ctx.verify_mode = ssl.CERT_REQUIRED
            plain = self.srv.finish_request

            def handshake_in_thread(request, client_address):
                # per connection in its handler thread: a failed handshake ends only that one
                try:
                    tls_sock = ctx.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError):
                    return
                plain(tls_sock, client_address)

            self.srv.finish_request = handshake_in_thread
            scheme = "https"
        self.port = self.srv.server_address[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.url = "%s://%s" % (scheme, self.addr)
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.release.set()
        self.srv.shutdown()
        self.srv.server_close()

    def fail_next(self, *faults):
        with self.lock:
            self.faults.extend(faults)

    # ---- the API ----

    def _token(self, h, query):
        if self.flavour == "consul":
            if "token" in query:
                return query["token"][0]
            if h.headers.get("X-Consul-Token"):
                return h.headers["X-Consul-Token"]
            auth = h.headers.get("Authorization", "")
            if auth.lower().startswith("bearer "):
                return auth[7:]
            return None
        if h.headers.get("X-Vault-Token"):
            return h.headers["X-Vault-Token"]
        auth = h.headers.get("Authorization", "")
        return auth[7:] if auth.startswith("Bearer ") else None

    def _send(self, h, status, body=b"", ctype="text/plain; charset=utf-8", extra=()):
        h.send_response(status)
        if body or status not in (204,):
            h.send_header("Content-Type", ctype)
        for k, v in extra:
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if body:
            h.wfile.write(body)

    def _error(self, h, status, text, extra=()):
        if self.flavour == "vault":
            self._send(h, status, json.dumps({"errors": [text]}).encode() + b"\n",
                       "application/json", extra)
        else:
            self._send(h, status, text.encode(), extra=extra)

    def _handle(self, h, method):
        u = urllib.parse.urlsplit(h.path)
        query = urllib.parse.parse_qs(u.query, keep_blank_values=True)
        body = b""
        if getattr(h, "expect_100", False):
            # Go's order: a refused token is answered before the body is read (and the
            # connection closed), else the 100 goes out when the body is read
            if self.token is not None and self._token(h, query) != self.token:
                with self.lock:
                    self.requests.append({"method": method, "path": u.path, "query": query,
                                          "raw_query": u.query, "body": None,
                                          "headers": dict(h.headers.items())})
                h.close_connection = True
                return self._error(h, 403, "Permission denied" if self.flavour == "consul"
                                   else "permission denied")
            h.send_response_only(100)
            h.end_headers()
        if h.headers.get("Content-Length"):
            body = h.rfile.read(int(h.headers["Content-Length"]))
        elif h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._read_chunked(h)
        rec = {"method": method, "path": u.path, "query": query, "raw_query": u.query,
               "headers": dict(h.headers.items()), "body": body}
        with self.lock:
            self.requests.append(rec)
        if self.flavour == "consul":
            self._consul(h, method, u.path, query, body)
        else:
            self._vault(h, method, u.path, query, body)

    @staticmethod
    def _read_chunked(h):
        out = b""
        while True:
            size = int(h.rfile.readline().split(b";")[0], 16)
            if size == 0:
                h.rfile.readline()
                return out
            out += h.rfile.read(size)
            h.rfile.readline()

    def _fault(self):
        with self.lock:
            return self.faults.pop(0) if self.faults else None

    def _consul(self, h, method, path, query, body):
        if path != CONSUL_PATH:
            return self._error(h, 404, "404 page not found")
        if method not in ("GET", "PUT"):
            return self._error(h, 405, "method %s not allowed" % method,
                               (("Allow", "GET, PUT"),))
        if self.token is not None and self._token(h, query) != self.token:
            return self._error(h, 403, "Permission denied: token with AccessorID '' lacks "
                                       "permission to snapshot")
        dc = query.get("dc", ["dc1"])[0]
        if dc != "dc1":
            return self._error(h, 500, "No path to datacenter")
        fault = self._fault()
        if isinstance(fault, int):
            return self._error(h, fault, "No cluster leader" if fault == 500 else "error")
        if method == "PUT":
            if "stale" in query:
                return self._error(h, 400, "stale not allowed for restore")
            self.restored = body
            return self._send(h, 200)
        self._serve_snapshot(h, fault, "application/x-gzip",
                             (("X-Consul-Index", "10"), ("X-Consul-KnownLeader", "true"),
                              ("X-Consul-LastContact", "0")))

    def _vault(self, h, method, path, query, body):
        if path not in (VAULT_PATH, VAULT_PATH + "-force"):
            return self._error(h, 404, "unsupported path")
        if (method, path) not in (("GET", VAULT_PATH), ("POST", VAULT_PATH),
                                  ("POST", VAULT_PATH + "-force")):
            return self._error(h, 405, "unsupported operation")
        if self.redirect_to is not None:  # alwaysRedirectPaths: before the token check
            loc = self.redirect_to + h.path
            h.send_response(307)
            h.send_header("Location", loc)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if self.token is not None and self._token(h, query) != self.token:
            return self._error(h, 403, "permission denied")
        fault = self._fault()
        if isinstance(fault, int):
            return self._error(h, fault, "raft storage is not in use" if fault == 400
                               else "internal error")
        if method == "POST" and fault == "seal" and path == VAULT_PATH:
            return self._error(h, 400, "could not verify hash file, possibly the snapshot is "
                                       "using a different set of unseal keys; use the "
                                       "snapshot-force API to bypass this check")
        if method == "POST":
            self.restored = body
            self.restored_path = path
            return self._send(h, 204)
        self._serve_snapshot(h, fault, "application/gzip",
                             (("Content-Disposition", "attachment"),
                              ("Cache-Control", "no-store")))

    def _serve_snapshot(self, h, fault, ctype, extra):
        data = self.snapshot
        h.send_response(200)
        h.send_header("Content-Type", ctype)
        for k, v in extra:
            h.send_header(k, v)
        if fault == "close":  # no length: the end of the connection ends the body
            h.send_header("Connection", "close")
            h.end_headers()
            h.wfile.write(data[:len(data) // 2])
            h.close_connection = True
            return
        if fault == "append":  # Consul: the error text after a begun 200 answer
            data = data + b"failed to stream snapshot: EOF"
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if fault == "stall":  # half the body, then nothing until the test lets go
            h.wfile.write(data[:len(data) // 2])
            h.wfile.flush()
            self.stalled.set()
            self.release.wait(300)
            h.close_connection = True
            return
        if fault == "truncate":
            h.wfile.write(data[:len(data) // 2])
            h.wfile.flush()
            h.close_connection = True
            return
        h.wfile.write(data)
