"""Helpers for the reliability tests: s3rver on a free port, cairn runs with deadlines, backup
status from `cairn list --json`, checksums of stored backups, sample InfluxDB-style data
directories for cairnd serve. Reuses tests/influx/influx.py (Cairnd) and
tests/harness/faultproxy.py."""
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "influx"))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
from influx import CAIRN, CAIRND, Cairnd, free_port  # noqa: E402,F401
from faultproxy import FaultProxy  # noqa: E402,F401
import skips  # noqa: E402

SRC = os.environ.get("CAIRN_SOURCE_DIR", os.path.join(HERE, "..", ".."))
S3RVER = os.environ.get("CAIRN_S3RVER") or os.path.join(SRC, ".cache", "node", "node_modules",
                                                         ".bin", "s3rver")

failures = []


def check(cond, msg):
    print(("ok: " if cond else "FAIL: ") + msg, flush=True)
    if not cond:
        failures.append(msg)
    return cond


def finish():
    """Print the verdict and exit: 1 on a failed check, 77 (skipped) if a part was skipped."""
    if failures:
        print("%d check(s) failed:" % len(failures))
        for f in failures:
            print("  " + f)
    else:
        print("all checks passed")
    sys.exit(skips.exit_code(failures))


def run_parts(tmp, figures, *parts):
    """Run each part (timed), then remove tmp, print the figures and the verdict."""
    try:
        for part in parts:
            t0 = time.time()
            part()
            print("--- %s took %.1fs" % (part.__name__, time.time() - t0), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for f in figures:
        print("figures: " + f)
    finish()


def tmpdir(prefix):
    return tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("TMPDIR", "/tmp"))


# Deadlines only bound a hang: generous, as these tests run on loaded machines and under
# sanitizers (ASan 2-3x, TSan 5-15x slower).
WAIT = 120


def run(args, timeout=600, env=None):
    """Run a command; returns (rc, stdout, stderr, seconds). rc is -9 on timeout (killed)."""
    t0 = time.time()
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        out, err = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        rc = -9
    return rc, out.decode(errors="replace"), err.decode(errors="replace"), time.time() - t0


def cairn(*args, timeout=600):
    return run([CAIRN] + list(args), timeout=timeout)


def statuses(url):
    """name -> status from `cairn list --json` (raises when list itself fails)."""
    rc, out, err, _ = cairn("list", url, "--json")
    if rc != 0:
        raise RuntimeError("cairn list %s: %s" % (url, err))
    return {b["name"]: b["status"] for b in json.loads(out)["backups"]}


def tree_state(path):
    """Everything observable of a tree: [(rel path, mode, bytes)], or None when absent; to
    compare a restore target before and after."""
    if not os.path.lexists(path):
        return None
    out = [("", os.lstat(path).st_mode, b"")]
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for n in sorted(dirs + files):
            p = os.path.join(root, n)
            st = os.lstat(p)
            data = open(p, "rb").read() if stat.S_ISREG(st.st_mode) else b""
            out.append((os.path.relpath(p, path), st.st_mode, data))
    return out


def temporaries(*dirs):
    """cairn's temporaries (restore landings, storage temp files) directly inside dirs."""
    return [os.path.join(d, n) for d in dirs if os.path.isdir(d) for n in os.listdir(d)
            if "cairn-tmp-" in n or ".tmp." in n]


def tree_files(path):
    """(relative path, bytes) of every file under path, one at a time."""
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                yield os.path.relpath(p, path), fh.read()


def tree_bytes(path):
    """{relative path: bytes} of every file under path (a small tree, held in memory)."""
    return dict(tree_files(path))


def peak_rss(args):
    """Run args (output to /dev/null); returns (exit code, peak RSS in MiB from wait4,
    seconds)."""
    t0 = time.time()
    pid = os.fork()
    if pid == 0:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1)
        os.execv(args[0], args)
    _, status, ru = os.wait4(pid, 0)
    return os.waitstatus_to_exitcode(status), ru.ru_maxrss / 1024.0, time.time() - t0


def tree_sums(path):
    """{relative path: sha256} of every file under path."""
    return {rel: hashlib.sha256(data).hexdigest() for rel, data in tree_files(path)}


class S3rver:
    """A real s3rver on a free loopback port, data under root/s3data."""

    def __init__(self, root, bucket="rel"):
        self.root = root
        self.bucket = bucket
        self.proc = None

    def available(self):
        return os.access(S3RVER, os.X_OK) and shutil.which("node") is not None

    def start(self):
        self.data = os.path.join(self.root, "s3data")
        os.makedirs(self.data, exist_ok=True)
        self.log_path = os.path.join(self.root, "s3rver.log")
        env = dict(os.environ, NODE_OPTIONS="--openssl-legacy-provider")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([S3RVER, "-d", self.data, "-a", "127.0.0.1", "-p", "0",
                                      "--configure-bucket", self.bucket],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        end = time.time() + WAIT
        while time.time() < end:
            with open(self.log_path, errors="replace") as f:
                m = re.search(r"listening on 127\.0\.0\.1:(\d+)", f.read())
            if m:
                self.port = int(m.group(1))
                break
            if self.proc.poll() is not None:
                raise RuntimeError("s3rver exited: " + open(self.log_path).read())
            time.sleep(0.1)
        else:
            raise RuntimeError("s3rver did not start")
        os.environ.update(AWS_ACCESS_KEY_ID="S3RVER", AWS_SECRET_ACCESS_KEY="S3RVER")
        os.environ.pop("AWS_SESSION_TOKEN", None)
        os.environ.pop("AWS_PROFILE", None)
        return self

    def url(self, prefix, port=None, **opts):
        q = "endpoint=http://127.0.0.1:%d&region=us-east-1&path_style=1" % (port or self.port)
        for k, v in opts.items():
            q += "&%s=%s" % (k, v)
        return "s3://%s/%s?%s" % (self.bucket, prefix, q)

    def backup_sums(self, prefix, name):
        """Checksums of the objects (and their metadata) of one backup as s3rver stores them."""
        return tree_sums(os.path.join(self.data, self.bucket, prefix, name))

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None



def with_s3rver(tmp, fn, bucket="rel"):
    """fn(s3) on a real S3rver started under tmp, stopped afterwards even when fn raises;
    without s3rver the part is skipped (skips.missing_part: a failure under CI=true)."""
    s3 = S3rver(tmp, bucket=bucket)
    if not s3.available():
        skips.missing_part("s3rver not installed (scripts/deps.sh test)")
        return
    s3.start()
    try:
        fn(s3)
    finally:
        s3.stop()


def new_key_file(path):
    """A new repository key file (cairn key generate) at path; returns path."""
    rc, _, err, _ = cairn("key", "generate", path)
    check(rc == 0, "key generate: %s" % err)
    return path

def influx_data(root, shards=4, size=200000, seed=1):
    """An InfluxDB-1.x-shaped data directory (db/rp/shard/*.tsm) for cairnd serve."""
    import random
    rnd = random.Random(seed)
    data = os.path.join(root, "data")
    for sid in range(1, shards + 1):
        d = os.path.join(data, "db1", "autogen" if sid % 2 else "week", str(sid))
        os.makedirs(d, exist_ok=True)
        for k in range(2):
            with open(os.path.join(d, "%09d-%09d.tsm" % (k + 1, 1)), "wb") as f:
                f.write(b"\x16\xd1\x16\xd1\x01" + rnd.randbytes(size))
    return data
