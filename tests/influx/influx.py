"""Shared helpers for the service tests: a real influxd 1.6 on free loopback ports with its own
temporary directories (spec section 9), cairnd serve, raw snapshot-protocol probes."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

BIN = os.environ.get("CAIRN_BIN", os.path.join(os.path.dirname(__file__), "../../build"))
CAIRN = os.path.join(BIN, "cairn")
CAIRND = os.path.join(BIN, "cairnd")
INFLUXD = shutil.which("influxd")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from skips import missing  # noqa: E402
from ports import free_port  # noqa: E402


def need_influxd():
    if INFLUXD is None:
        missing("influxd (Debian package influxdb) is not installed; run scripts/deps.sh test")


# Deadlines and socket timeouts are generous (minutes): the tests run on loaded machines and
# under sanitizers (ASan 2-3x, TSan 5-15x slower). They only bound a hang; nothing here measures
# speed.
WAIT = 120


def wait_port(port, proc, timeout=WAIT):
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s before listening" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("port %d not listening after %.0fs" % (port, timeout))


CONF = """reporting-disabled = true
bind-address = "127.0.0.1:{snap}"
[meta]
  dir = "{root}/meta"
[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  index-version = "inmem"
  cache-snapshot-write-cold-duration = "1s"
  compact-full-write-cold-duration = "24h"
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{http}"
  log-enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
"""


class Influxd:
    """A real influxd on free ports; root holds meta/, data/, wal/, the config and the log."""

    def __init__(self, root):
        self.root = root
        os.makedirs(root, exist_ok=True)
        self.proc = None

    def start(self):
        self.snap = free_port()
        self.http = free_port()
        conf = os.path.join(self.root, "influxdb.conf")
        with open(conf, "w") as f:
            f.write(CONF.format(root=self.root, snap=self.snap, http=self.http))
        self.log = open(os.path.join(self.root, "influxd.log"), "ab")
        self.proc = subprocess.Popen([INFLUXD, "run", "-config", conf], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        wait_port(self.http, self.proc)
        wait_port(self.snap, self.proc)
        # The HTTP port answers before the meta store is open: wait for /ping 204.
        end = time.time() + WAIT
        while time.time() < end:
            try:
                urllib.request.urlopen("http://127.0.0.1:%d/ping" % self.http, timeout=10)
                return self
            except Exception:
                time.sleep(0.1)
        raise RuntimeError("influxd did not answer /ping")

    @property
    def influx_addr(self):
        return "127.0.0.1:%d" % self.snap

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def query(self, q, db=None):
        params = {"q": q, "epoch": "ns"}
        if db:
            params["db"] = db
        data = urllib.parse.urlencode(params).encode()
        with urllib.request.urlopen("http://127.0.0.1:%d/query" % self.http, data=data,
                                    timeout=WAIT) as r:
            out = json.loads(r.read())
        for res in out.get("results", []):
            if "error" in res:
                raise RuntimeError("query %r: %s" % (q, res["error"]))
        return out

    def write(self, db, lines, rp=None):
        url = "http://127.0.0.1:%d/write?db=%s&precision=s" % (self.http, db)
        if rp:
            url += "&rp=" + rp
        req = urllib.request.Request(url, data=lines.encode(), method="POST")
        urllib.request.urlopen(req, timeout=WAIT).read()

    def points(self, db):
        """Every point of every measurement in db, all RPs, as a sorted list. Shards just
        restored online are briefly disabled while influxd reopens them: retry then."""
        end = time.time() + WAIT
        while True:
            try:
                return self._points(db)
            except RuntimeError as e:
                if "disabled" not in str(e) or time.time() > end:
                    raise
                time.sleep(0.2)

    def _points(self, db):
        out = []
        rps = [v[0] for v in self.series_values("SHOW RETENTION POLICIES", db)]
        for rp in rps:
            for (m,) in self.series_values("SHOW MEASUREMENTS", db):
                res = self.query('SELECT * FROM "%s"."%s"' % (rp, m), db)
                for s in res["results"][0].get("series", []):
                    for v in s["values"]:
                        out.append((rp, m, tuple(s["columns"]), tuple(v)))
        return sorted(out, key=repr)

    def series_values(self, q, db=None):
        res = self.query(q, db)
        vals = []
        for s in res["results"][0].get("series", []):
            vals.extend(s.get("values") or [])
        return vals

    def wait_tsm(self, timeout=WAIT):
        """Wait until the WAL has been snapshotted to TSM files (cold duration 1s)."""
        end = time.time() + timeout
        while time.time() < end:
            if self._wal_bytes() == 0:
                return
            time.sleep(0.3)
        raise RuntimeError("WAL not flushed to TSM in time")

    def _wal_bytes(self):
        """Bytes in WAL segments now. influxd removes a segment once it is snapshotted, maybe
        between the listing and the stat: a segment gone is a segment flushed."""
        wal = 0
        for dp, _, files in os.walk(os.path.join(self.root, "wal")):
            for f in files:
                if f.endswith(".wal"):
                    try:
                        wal += os.path.getsize(os.path.join(dp, f))
                    except FileNotFoundError:
                        pass
        return wal


def populate(ifx):
    """Two databases, three retention policies, five shards."""
    ifx.query("CREATE DATABASE mydb")
    ifx.query('CREATE RETENTION POLICY "short" ON "mydb" DURATION 1000w REPLICATION 1 '
              'SHARD DURATION 1h')
    ifx.query("CREATE DATABASE other")
    ifx.write("mydb", "cpu,host=a value=1 1600000000\ncpu,host=b value=2 1600000010\n"
                      "mem,host=a used=42i 1600000020\ncpu,host=a value=3 1601000000")
    ifx.write("mydb", "disk,host=a free=7.5 1600000000\ndisk,host=b free=1.25 1600003700",
              rp="short")
    ifx.write("other", 'temp,room=k\\ 1 c=21.5,note="warm" 1500000000\n'
                       "temp,room=k\\ 1 c=19 1500000100")


class Cairnd:
    def __init__(self, data, extra=None, log=None):
        self.data = data
        self.extra = extra or []
        self.log_path = log
        self.proc = None

    def start(self):
        port = free_port()
        self.addr = "127.0.0.1:%d" % port
        self.log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen([CAIRND, "serve", "--data", self.data, "--listen", self.addr]
                                     + self.extra, stdout=subprocess.PIPE, stderr=self.log)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("listening on "):
            raise RuntimeError("cairnd serve did not start: %r" % line)
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise RuntimeError("cairnd did not stop on SIGTERM")
            if rc != 0:
                tail = ""
                if self.log_path:
                    with open(self.log_path, "rb") as f:
                        tail = f.read()[-4000:].decode(errors="replace")
                raise RuntimeError("cairnd exited %d; end of its log:\n%s" % (rc, tail))
        self.proc = None


def check(cond, msg):
    if not cond:
        print("FAIL: " + msg)
        sys.exit(1)
    print("ok: " + msg)


def probe_port(addr, payload, timeout=WAIT):
    """Send raw bytes, half-close, read to EOF (a reset ends it too). Returns the bytes and
    the local port, which the server's log names. No EOF within timeout raises: a hung server
    must not pass for one that closed without a reply."""
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=timeout)
    local = s.getsockname()[1]
    out = b""
    try:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except socket.timeout:
        s.close()
        raise RuntimeError("%s: no EOF within %.0f s (%d bytes read)" % (addr, timeout, len(out)))
    except OSError:
        pass
    s.close()
    return out, local


def probe(addr, payload, timeout=WAIT):
    return probe_port(addr, payload, timeout)[0]


def request(rtype, **kw):
    """03 <type> <Go-style JSON>\\n"""
    req = {"Type": rtype, "BackupDatabase": "", "RestoreDatabase": "",
           "BackupRetentionPolicy": "", "RestoreRetentionPolicy": "", "ShardID": 0,
           "Since": "0001-01-01T00:00:00Z", "ExportStart": "0001-01-01T00:00:00Z",
           "ExportEnd": "0001-01-01T00:00:00Z", "UploadSize": 0}
    req.update(kw)
    return bytes([3, rtype]) + json.dumps(req, separators=(",", ":")).encode() + b"\n"


def run(cmd, check=True, **kw):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300, **kw)
    if check and p.returncode != 0:
        raise RuntimeError("%s exited %d\nstdout: %s\nstderr: %s" % (
            " ".join(cmd), p.returncode, p.stdout.decode(errors="replace"),
            p.stderr.decode(errors="replace")))
    return p
