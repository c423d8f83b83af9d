"""Output that cannot be forged: peer strings carrying a newline, a fake log-line start and ANSI
escapes reach logs and terminals escaped, and a peer's permission refusal exits 9.

Peer paths fed: an S3 error <Message>/<Code> from a fake S3 server (a retried 503 logged as a
warning, then the final 400 on the terminal, plain and --json), S3 AccessDenied on a request
and on the bucket check (exit 9), the same S3 error logged by cairnd run (plain and JSON
logs), a backup MANIFEST whose tree path is hostile (`cairn get`), an archive member name
(`snapshot verify`) and a meta.json ID and server address (`snapshot inspect` on stdout).
Every output must hold no raw ESC or other control byte but newlines ending its lines, no
line starting with the forged text, and the visible escape instead."""
import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
import skips  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from repo import init_location  # noqa: E402

BIN = os.environ.get("CAIRN_BIN", os.path.join(os.path.dirname(__file__), "../../build"))
CAIRN, CAIRND = os.path.join(BIN, "cairn"), os.path.join(BIN, "cairnd")
HOSTILE = "\n2026-01-01 forged line\x1b[31m"
SHOWN = "\\n2026-01-01 forged line\\x1b[31m"  # what the escape must look like
failures = []


def check(cond, msg):
    print(("ok: " if cond else "FAIL: ") + msg, flush=True)
    if not cond:
        failures.append(msg)


def unforged(text, what, want_shown=True):
    """No control byte but line ends, no forged line start, the escape visible."""
    bad = [c for c in text if (ord(c) < 0x20 and c != "\n") or 0x7f <= ord(c) <= 0x9f]
    check(not bad, "%s: no raw control characters (%r)" % (what, bad[:5]))
    forged = [ln for ln in text.split("\n") if ln.startswith("2026-01-01")]
    check(not forged, "%s: no forged line (%r)" % (what, forged[:2]))
    if want_shown:
        check("forged" in text and ("\\n2026-01-01" in text or "\\\\n2026-01-01" in text),
              "%s: the peer text is shown escaped: %r" % (what, text[-400:]))


def run(args, env=None, timeout=600):
    p = subprocess.run(args, capture_output=True, timeout=timeout, env=env)
    return p.returncode, p.stdout.decode("utf-8", "surrogateescape"), \
        p.stderr.decode("utf-8", "surrogateescape")


class FakeS3(http.server.BaseHTTPRequestHandler):
    """Bucket 'hostile': requests fail with the hostile text (503 first, then 400); bucket
    'denied': 403 AccessDenied with it; bucket 'locked': the bucket check itself gets 403.
    HEAD of the bucket passes (but for 'locked'); HEAD of an object is 404."""
    protocol_version = "HTTP/1.1"
    seen = {}

    def log_message(self, *a):
        pass

    def answer(self, status, body=b""):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/xml")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        path = self.path.split("?")[0].strip("/")
        bucket, _, key = path.partition("/")
        if self.command == "HEAD" and not key:
            return self.answer(403 if bucket == "locked" else 200)
        if self.command == "HEAD":
            return self.answer(404)
        if bucket == "denied":
            code, status = "AccessDenied", 403
        else:
            FakeS3.seen[bucket] = FakeS3.seen.get(bucket, 0) + 1
            code, status = "Invalid" + HOSTILE, 503 if FakeS3.seen[bucket] == 1 else 400
        xml = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>%s</Code>"
               "<Message>Access Denied%s</Message><RequestId>1</RequestId></Error>"
               % (code, HOSTILE)).encode()
        self.answer(status, xml)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


def s3_parts(port, env):
    def url(bucket):
        return ("s3://%s/p?endpoint=http://127.0.0.1:%d&region=us-east-1&path_style=1"
                "&retries=2&retry_base_ms=1" % (bucket, port))

    rc, out, err = run([CAIRN, "list", url("hostile")], env)
    check(rc == 8, "S3 400 with a hostile message: exit 8 (got %d: %s)" % (rc, err[-300:]))
    check("retrying" in err, "the retried 503 was logged as a warning: %r" % err[-300:])
    unforged(err, "cairn list stderr (warning log line and error)")
    FakeS3.seen.clear()
    rc, out, err = run([CAIRN, "list", "--json", url("hostile")], env)
    try:
        doc = json.loads(out)
        check(SHOWN in doc.get("error", {}).get("message", ""), "--json error holds the escaped text")
    except ValueError as e:
        check(False, "--json output is JSON: %s: %r" % (e, out[:300]))
    unforged(out, "cairn list --json stdout")

    rc, out, err = run([CAIRN, "list", url("denied")], env)
    check(rc == 9, "S3 403 AccessDenied on a request: exit 9 (got %d: %s)" % (rc, err[-300:]))
    check("AccessDenied" in err, "the refusal is named: %r" % err[-200:])
    unforged(err, "cairn list (denied) stderr")
    rc, out, err = run([CAIRN, "list", url("locked")], env)
    check(rc == 9 and "denied" in err,
          "S3 403 on the bucket check: exit 9 (got %d: %s)" % (rc, err[-300:]))
    rc, out, err = run([CAIRN, "list", "/nonexistent-dir-xyz/\x1b[31m"], env)
    check(rc != 9, "a local failure does not exit 9 (got %d)" % rc)
    return url


def daemon_part(tmp, url, env, fmt):
    """cairnd run backs up into the hostile bucket; the failure is logged safely."""
    d = os.path.join(tmp, "d-" + fmt)
    os.makedirs(os.path.join(d, "src"))
    os.makedirs(os.path.join(d, "state"))
    with open(os.path.join(d, "src", "a.txt"), "w") as f:
        f.write("hello\n")
    with open(os.path.join(d, "clock"), "w") as f:
        f.write("2026-03-01T09:59:50Z\n")
    with open(os.path.join(d, "cairnd.conf"), "w") as f:
        f.write("[cairnd]\nstate-dir = %s/state\nmetrics-listen = off\nlog-format = %s\n\n"
                "[schedule s]\nsource = %s/src\nto = %s\ncron = */15 * * * *\nkeep-last = 1\n"
                % (d, fmt, d, url("hostile")))
    log_path = os.path.join(d, "run.log")
    FakeS3.seen.clear()
    with open(log_path, "wb") as log:
        p = subprocess.Popen([CAIRND, "run", "--config", os.path.join(d, "cairnd.conf"),
                              "--fake-clock", os.path.join(d, "clock")], stdout=log,
                             stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while b"scheduler running" not in open(log_path, "rb").read():
            if time.monotonic() > deadline or p.poll() is not None:
                break
            time.sleep(0.1)
        with open(os.path.join(d, "clock.tmp"), "w") as f:
            f.write("2026-03-01T10:00:00Z\n")
        os.rename(os.path.join(d, "clock.tmp"), os.path.join(d, "clock"))
        deadline = time.monotonic() + 300
        while b"forged line" not in open(log_path, "rb").read() or \
                not open(log_path, "rb").read().endswith(b"\n"):
            if time.monotonic() > deadline or p.poll() is not None:
                break
            time.sleep(0.1)
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(120)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    text = open(log_path, "rb").read().decode("utf-8", "surrogateescape")
    check("forged line" in text, "cairnd %s log names the S3 failure: %r" % (fmt, text[-300:]))
    unforged(text, "cairnd run %s log" % fmt)
    if fmt == "json":
        lines = [ln for ln in text.split("\n") if ln]
        bad = []
        for ln in lines:
            try:
                json.loads(ln)
            except ValueError:
                bad.append(ln)
        check(lines and not bad, "every JSON log line parses (%d lines, bad %r)"
              % (len(lines), bad[:2]))


def manifest_part(tmp, env):
    st, src = os.path.join(tmp, "st"), os.path.join(tmp, "msrc")
    os.makedirs(src)
    with open(os.path.join(src, "a"), "w") as f:
        f.write("hi\n")
    # the forgery rewrites the per-file tree object in place: the per-file format
    init_location("file://" + st, "--no-encryption", "--no-dedup")
    rc, out, err = run([CAIRN, "put", "file://" + st, "good", src], env)
    check(rc == 0, "put a backup: %s" % err[-200:])
    # The tree is a stored file (zstd, one JSON line per entry) named by the MANIFEST with
    # its hashes: forge a line, store it uncompressed, and give the MANIFEST its new hashes
    # (an unsealed MANIFEST can be rewritten whole), so only the hostile path can refuse it.
    mpath, tpath = os.path.join(st, "good", "MANIFEST"), os.path.join(st, "good", "tree")
    m = json.load(open(mpath))
    lines = subprocess.run(["zstd", "-dc", tpath], check=True,
                           stdout=subprocess.PIPE).stdout.decode().splitlines()
    first = json.loads(lines[0])
    # Names may hold any byte but '/' and NUL (a newline or ESC round-trips: docs/FORMAT.md),
    # so the path is made hostile by its ".." component.
    first["path"] = "../a" + HOSTILE
    data = ("\n".join([json.dumps(first)] + lines[1:]) + "\n").encode()
    with open(tpath, "wb") as f:
        f.write(data)
    digest = hashlib.sha256(data).hexdigest()
    entry = {"name": "tree", "size": len(data), "sha256": digest, "compression": "none",
             "logical_size": len(data), "logical_sha256": digest}
    m["files"] = [entry if e["name"] == "tree" else e for e in m["files"]]
    m["meta"]["tree"]["entries_file"] = entry
    with open(mpath, "w") as f:
        json.dump(m, f)
    rc, out, err = run([CAIRN, "get", "file://" + st, "good", os.path.join(tmp, "out")], env)
    check(rc != 0, "a MANIFEST with a hostile tree path is refused (exit %d)" % rc)
    unforged(out + err, "cairn get of a hostile MANIFEST")


def tar_gz(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o600
            t.addfile(ti, io.BytesIO(data))
        end = t.offset
    # As Go writes it: the two zero blocks of the end marker, no padding to a 10 KiB record.
    return gzip.compress(buf.getvalue()[:end] + b"\0" * 1024, mtime=0)


def archive_part(tmp, env):
    state = b"state bytes"
    meta = (json.dumps({"Version": 1, "ID": "1-1-1" + HOSTILE, "Index": 1, "Term": 1,
                        "Peers": None, "Configuration": {"Servers": [
                            {"Suffrage": 0, "ID": "n1" + HOSTILE,
                             "Address": "10.0.0.1:8300" + HOSTILE}]},
                        "ConfigurationIndex": 1, "Size": len(state)}) + "\n").encode()
    ms = [("meta.json", meta), ("state.bin", state)]
    sums = "".join("%s  %s\n" % (hashlib.sha256(d).hexdigest(), n) for n, d in ms).encode()
    good = os.path.join(tmp, "hostile-meta.snap")
    with open(good, "wb") as f:
        f.write(tar_gz(ms + [("SHA256SUMS", sums)]))
    rc, out, err = run([CAIRN, "snapshot", "inspect", good], env)
    check(rc == 0, "inspect an archive with a hostile ID (exit %d: %s)" % (rc, err[-200:]))
    unforged(out + err, "snapshot inspect stdout (ID, server)")
    evil = os.path.join(tmp, "hostile-member.snap")
    with open(evil, "wb") as f:
        f.write(tar_gz(ms + [("SHA256SUMS", sums), ("x" + HOSTILE, b"zz")]))
    rc, out, err = run([CAIRN, "snapshot", "verify", evil], env)
    check(rc == 3, "an archive with a hostile member name: exit 3 (got %d)" % rc)
    unforged(out + err, "snapshot verify of a hostile member name")


def main():
    if not os.path.exists(CAIRN):
        skips.skip("no cairn in " + BIN)
    tmp = tempfile.mkdtemp(prefix="cairn-esc-")
    env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIDTEST", AWS_SECRET_ACCESS_KEY="secret",
               HOME=tmp)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeS3)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = s3_parts(srv.server_address[1], env)
        daemon_part(tmp, url, env, "plain")
        daemon_part(tmp, url, env, "json")
        manifest_part(tmp, env)
        archive_part(tmp, env)
    finally:
        srv.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    for f in failures:
        print("FAIL: " + f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
