"""One case per row of the README's exit-code table (and `cairn --help`): each row's code from
a real command line, plain and with --json (where error.exit must say the same). Row 1
("failure not listed") has no command line that reaches it on purpose; that it is the default
is checked in tests/common/test_common.c.

Rows: 0 success; 2 usage (an unknown option, and `cairn list http://x/y`, an unsupported
scheme); 3 a corrupt archive; 4 a wrong seal key; 5 a missing backup; 6 an existing output;
7 a local write error (stdout on /dev/full); 8 a refused connection; 9 S3 refusing the
credentials (a 403 AccessDenied from a stand-in S3 endpoint); 10 a location a live process holds;
130 SIGINT during a backup."""
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reliability"))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
import rel  # noqa: E402
import skips  # noqa: E402

CAIRN = rel.CAIRN
failures = []


def check(cond, msg):
    print(("ok: " if cond else "FAIL: ") + msg, flush=True)
    if not cond:
        failures.append(msg)


TABLE = {c["name"]: c for c in json.loads(subprocess.run(
    [CAIRN, "help", "--all", "--json"], capture_output=True, text=True).stdout)["commands"]}


def expect(code, *args, stdout=None, env=None):
    """args exit code, and under --json error.exit == code with one JSON object."""
    cmd = TABLE.get(args[0])
    check(cmd is None or code in cmd["exit_codes"], "exit %d is listed for cairn %s (docs/CLI.md)"
          % (code, args[0]))
    p = subprocess.run([CAIRN, *args], stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=120, stdin=subprocess.DEVNULL, env=env)
    check(p.returncode == code, "exit %d: cairn %s (got %d: %s)" % (
        code, " ".join(args)[:100], p.returncode, (p.stderr or b"").decode()[-200:].strip()))
    if code in (0, 130) or stdout is not None or args[0] == "help":
        return
    p = subprocess.run([CAIRN, *args, "--json"], capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL, env=env)
    try:
        doc = json.loads(p.stdout)
        ok = p.returncode == code and doc["error"]["exit"] == code
    except (ValueError, KeyError, TypeError):
        ok = False
    check(ok, "exit %d under --json: error.exit (%r)" % (code, p.stdout[:200]))


class Denied(http.server.BaseHTTPRequestHandler):
    BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
            b'<Message>Access Denied</Message></Error>')

    def answer(self):
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(self.BODY)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(self.BODY)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = answer

    def log_message(self, *a):
        pass


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return port


def main():
    tmp = tempfile.mkdtemp(prefix="cairn-exit-")
    try:
        loc = os.path.join(tmp, "loc")
        src = os.path.join(tmp, "src")
        os.makedirs(src)
        with open(os.path.join(src, "a"), "wb") as f:
            f.write(os.urandom(4096))
        expect(0, "init", loc, "--no-encryption")
        expect(0, "backup", "--from", src, "--to", loc, "--name", "b1")
        expect(2, "list", loc, "--bogus")
        expect(2, "list", "http://x/y")
        # 3, 4, 6: snapshot archives.
        state, snap = os.path.join(tmp, "state.bin"), os.path.join(tmp, "s.snap")
        with open(state, "wb") as f:
            f.write(os.urandom(20000))
        key, other = os.path.join(tmp, "k1.key"), os.path.join(tmp, "k2.key")
        for k in (key, other):
            with open(k, "w") as f:
                f.write(os.urandom(32).hex())
            os.chmod(k, 0o600)
        expect(0, "snapshot", "save", state, snap, "--index", "1", "--term", "1",
               "--seal-key-file", key)
        bad = bytearray(open(snap, "rb").read())
        bad[len(bad) // 2] ^= 0x01
        with open(snap + ".bad", "wb") as f:
            f.write(bad)
        expect(3, "snapshot", "verify", snap + ".bad")
        expect(4, "snapshot", "verify", snap, "--seal-key-file", other)
        expect(5, "verify", loc, "nosuch")
        expect(6, "snapshot", "save", state, snap, "--index", "1", "--term", "1")
        # 7: stdout is a full disk.
        if os.path.exists("/dev/full"):
            with open("/dev/full", "wb") as full:
                expect(7, "snapshot", "extract", snap, "-", stdout=full)
        # 8: nobody listens.
        expect(8, "backup", "--from", "127.0.0.1:%d" % closed_port(), "--to", loc,
               "--timeout", "5000")
        # 10: a live process (this one) holds an exclusive lock.
        lock = os.path.join(loc, ".locks", "prune-000000")
        os.makedirs(os.path.dirname(lock), exist_ok=True)
        now = int(time.time() * 1000)
        with open(lock, "w") as f:
            json.dump({"version": 1, "id": "x", "host": socket.gethostname(),
                       "pid": os.getpid(), "mode": "exclusive", "command": "prune",
                       "started_ms": now, "refreshed_ms": now, "refresh_ms": 30000}, f)
        expect(10, "put", loc, "p1", src)
        os.unlink(lock)
        # 130: SIGINT while a backup waits on its source.
        p = subprocess.Popen([CAIRN, "backup", "--from", "exec:sleep 60", "--to", loc,
                              "--name", "slow"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        started = False
        while time.time() < deadline and not started:  # the source runs: handlers are set
            r = subprocess.run(["pgrep", "-P", str(p.pid), "-f", "sleep 60"],
                               capture_output=True)
            started = r.returncode == 0
            time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        rc = p.wait(timeout=60)
        check(started and rc == 130, "exit 130: SIGINT during a backup (got %d)" % rc)
        check(130 in TABLE["backup"]["exit_codes"], "exit 130 is listed for cairn backup")
        # 9: S3 refuses the credentials (403 AccessDenied, as AWS and MinIO answer).
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Denied)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY="wrong")
        url = ("s3://b/p?endpoint=http://127.0.0.1:%d&region=us-east-1&path_style=1&retries=1"
               % srv.server_address[1])
        expect(9, "list", url, env=env)
        srv.shutdown()
    finally:
        subprocess.run(["rm", "-rf", tmp])
    if failures:
        print("%d check(s) failed" % len(failures))
    return skips.exit_code(failures)


if __name__ == "__main__":
    sys.exit(main())
