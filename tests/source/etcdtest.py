"""Shared helpers for the etcd source tests: a real etcd 3.4 (Debian etcd-server) on free
loopback ports with its own data directory, its v3 JSON gateway as a client (fill, read back
every key), the etcd_snap test program, and a small proxy that damages a stream in transit."""
import base64
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.environ.get("CAIRN_BIN", os.path.join(HERE, "../../build"))
ETCD_SNAP = os.path.join(BIN, "etcd_snap")
ETCD = shutil.which("etcd")
ETCDCTL = shutil.which("etcdctl")
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
from skips import missing  # noqa: E402
from ports import free_port  # noqa: E402

# Deadlines bound a hang on a loaded machine; nothing here measures speed.
WAIT = 120


def need_etcd():
    if ETCD is None or ETCDCTL is None:
        missing("etcd/etcdctl (Debian packages etcd-server, etcd-client) are not installed; "
                "run scripts/deps.sh test")
    if not os.access(ETCD_SNAP, os.X_OK):
        raise RuntimeError("%s is not built" % ETCD_SNAP)


def b64(s):
    if isinstance(s, str):
        s = s.encode()
    return base64.b64encode(s).decode()


class Etcd:
    """One etcd member on free ports; root holds its data directory and log. tls: a dict with
    cert, key, ca (client certificates required) or None for plain HTTP."""

    def __init__(self, root, name="t1", data_dir=None, tls=None, extra=()):
        self.root = root
        self.extra = list(extra)
        self.name = name
        self.data_dir = data_dir or os.path.join(root, name + ".etcd")
        self.tls = tls
        self.proc = None
        os.makedirs(root, exist_ok=True)

    @property
    def scheme(self):
        return "https" if self.tls else "http"

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % (self.scheme, self.client)

    def start(self, peer=None):
        # A free port can be taken by another test between free_port() and etcd's bind:
        # then etcd exits at once saying so, and new ports are picked.
        for attempt in range(5):
            try:
                return self._start(peer)
            except RuntimeError:
                with open(os.path.join(self.root, self.name + ".log"), "rb") as f:
                    if b"address already in use" not in f.read() or attempt == 4 or peer:
                        raise

    def _start(self, peer):
        self.client = free_port()
        self.peer = peer or free_port()
        peer_url = "http://127.0.0.1:%d" % self.peer
        args = [ETCD, "--name", self.name, "--data-dir", self.data_dir,
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                "--initial-cluster", "%s=%s" % (self.name, peer_url),
                "--initial-cluster-state", "new", "--logger", "zap", "--log-outputs", "stderr"
                ] + self.extra
        if self.tls:
            args += ["--cert-file", self.tls["cert"], "--key-file", self.tls["key"],
                     "--trusted-ca-file", self.tls["ca"], "--client-cert-auth"]
        self.log = open(os.path.join(self.root, self.name + ".log"), "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        self.wait_healthy()
        return self

    def wait_healthy(self):
        end = time.time() + WAIT
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("etcd exited with %s before it was healthy; log: %s" %
                                   (self.proc.returncode, os.path.join(self.root, self.name +
                                                                       ".log")))
            try:
                with self._open("/health", None, timeout=5) as r:
                    if json.loads(r.read()).get("health") == "true":
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError("etcd at %s not healthy after %ds" % (self.url, WAIT))

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def _open(self, path, body, timeout=WAIT, token=None):
        ctx = None
        if self.tls:
            ctx = ssl.create_default_context(cafile=self.tls["ca"])
            ctx.load_cert_chain(self.tls["client_cert"], self.tls["client_key"])
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data)
        if token:
            req.add_header("Authorization", token)
        return urllib.request.urlopen(req, timeout=timeout, context=ctx)

    def call(self, path, body, token=None):
        with self._open(path, body, token=token) as r:
            return json.loads(r.read())

    def put_many(self, pairs, token=None):
        """Puts (key, value) pairs, up to 128 per transaction (etcd's --max-txn-ops)."""
        for i in range(0, len(pairs), 128):
            ops = [{"request_put": {"key": b64(k), "value": b64(v)}} for k, v in pairs[i:i + 128]]
            self.call("/v3/kv/txn", {"success": ops}, token=token)

    def put_big(self, pairs, max_bytes=1 << 20):
        """Puts large values, batched under --max-request-bytes (1.5 MiB)."""
        batch, size = [], 0
        for k, v in pairs:
            if batch and size + len(v) > max_bytes:
                self.put_many(batch)
                batch, size = [], 0
            batch.append((k, v))
            size += len(v)
        if batch:
            self.put_many(batch)

    def delete(self, key):
        self.call("/v3/kv/deleterange", {"key": b64(key)})

    def dump(self, revision=0):
        """(header revision, every key with value, create/mod revision, version), sorted."""
        body = {"key": b64(b"\0"), "range_end": b64(b"\0")}
        if revision:
            body["revision"] = revision
        out = self.call("/v3/kv/range", body)
        kvs = [(base64.b64decode(kv["key"]), base64.b64decode(kv.get("value", "")),
                int(kv.get("create_revision", 0)), int(kv.get("mod_revision", 0)),
                int(kv.get("version", 0))) for kv in out.get("kvs", [])]
        return int(out["header"]["revision"]), sorted(kvs)


def etcd_snap(*args, env=None, timeout=WAIT * 5):
    """Runs the test program; returns (exit code, stdout, stderr)."""
    p = subprocess.run([ETCD_SNAP] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout, env=env)
    return p.returncode, p.stdout, p.stderr


def etcdctl_status(path):
    p = subprocess.run([ETCDCTL, "snapshot", "status", path, "-w", "json"], capture_output=True,
                       text=True, timeout=WAIT, env=dict(os.environ, ETCDCTL_API="3"))
    if p.returncode != 0:
        raise RuntimeError("etcdctl snapshot status %s: %s" % (path, p.stderr))
    return json.loads(p.stdout)


class TamperProxy:
    """Relays TCP to upstream and, at offset `at` of the answer, either flips the case of the
    first ASCII letter there (mode "flip", XOR 0x20: inside a base64 blob that is another
    valid base64 digit, so the stream still parses and only etcd's trailing SHA-256 can tell)
    or stops relaying and holds the connection open until stop() (mode "stall")."""

    def __init__(self, upstream_port, at, mode="flip"):
        self.upstream = ("127.0.0.1", upstream_port)
        self.at = at
        self.mode = mode
        self.flipped = None  # (offset, old byte, new byte)
        self.stalled = threading.Event()
        self.stopping = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _tamper(self, d, off):
        if self.mode == "stall":
            c = self.at - off
            self.stalled.set()
            return d[:c], True
        d = bytearray(d)
        for i in range(max(0, self.at - off), len(d)):
            if chr(d[i]).isalpha() and d[i] < 128:
                self.flipped = (off + i, d[i], d[i] ^ 0x20)
                d[i] ^= 0x20
                break
        return bytes(d), False

    def _serve(self, c):
        up = socket.create_connection(self.upstream)
        threading.Thread(target=_pipe, args=(c, up), daemon=True).start()
        off = 0
        try:
            while True:
                d = up.recv(65536)
                if not d:
                    break
                hold = False
                if self.flipped is None and not self.stalled.is_set() and off + len(d) > self.at:
                    d, hold = self._tamper(d, off)
                c.sendall(d)
                off += len(d)
                if hold:
                    self.stopping.wait(WAIT * 5)
                    break
        except OSError:
            pass
        finally:
            for s in (c, up):
                try:
                    s.close()
                except OSError:
                    pass

    def stop(self):
        self.stopping.set()
        self.sock.close()


def _pipe(src, dst):
    try:
        while True:
            d = src.recv(65536)
            if not d:
                break
            dst.sendall(d)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass
