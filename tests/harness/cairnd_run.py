"""A real `cairnd run` in Python tests: one process with a fake clock (--fake-clock), its
/metrics read over HTTP, its log; the checks' bookkeeping (check, failures, finish); and the
configuration of one schedule backing up into a fresh file:// repository with a restore drill
(drill_config), which the drill tests (tests/sched/drill_lib.py, test_drill_*.py) and the
Prometheus test (tests/metrics) share. Deadlines bound a hang on a loaded machine; nothing
waits a fixed time."""
import calendar
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.environ.get("CAIRN_BIN", os.path.join(HERE, "../../build"))
WAIT = 120
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL: " + msg, flush=True)
    else:
        print("ok: " + msg, flush=True)
    return cond


def epoch(rfc3339):
    return calendar.timegm(time.strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ"))


def wait_until(what, cond, timeout=WAIT):
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise RuntimeError("timed out waiting for " + what)
        time.sleep(0.05)


class Cairnd:
    def __init__(self, tmp, conf):
        self.tmp = tmp
        self.conf = os.path.join(tmp, "cairnd.conf")
        self.clock = os.path.join(tmp, "clock")
        self.log = os.path.join(tmp, "run.log")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.proc = None

    def set_clock(self, t):
        with open(self.clock + ".tmp", "w") as f:
            f.write(t + "\n")
        os.rename(self.clock + ".tmp", self.clock)

    def start(self):
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen([os.path.join(BIN, "cairnd"), "run", "--config", self.conf,
                                      "--fake-clock", self.clock], stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        self.port = None
        self.wait("cairnd to listen", lambda: self._port() is not None)

    def _port(self):
        m = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", self.text())
        if self.proc.poll() is not None:
            raise RuntimeError("cairnd exited %d: %s" % (self.proc.returncode, self.text()[-2000:]))
        if m:
            self.port = int(m.group(1))
        return self.port

    def text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def metric(self, name, schedule=None):
        key = name + ('{schedule="%s"}' % schedule if schedule else "")
        body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.port,
                                      timeout=30).read().decode()
        for line in body.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == key:
                return float(parts[1])
        return None

    def wait(self, what, cond, timeout=WAIT):
        end = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > end:
                raise RuntimeError("timed out waiting for %s; log tail:\n%s" %
                                   (what, self.text()[-3000:]))
            time.sleep(0.05)

    def stop(self):
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        self.logf.close()
        return rc


def drill_config(tmp, schedule, source, extra="", every="1d", keep_last=2, key_file=None):
    """A cairnd (not started) in tmp whose one schedule backs SOURCE up every EVERY into a new
    repository tmp/backups (encrypted with key_file, else plain), with `drill = every 1h`
    into tmp/drill and EXTRA lines; returns (cairnd, the repository's directory)."""
    backups = os.path.join(tmp, "backups")
    os.makedirs(backups, exist_ok=True)
    subprocess.run([os.path.join(BIN, "cairn"), "init", "file://" + backups] +
                   (["--key-file", key_file] if key_file else ["--no-encryption"]),
                   check=True, capture_output=True)
    if key_file:
        extra += "\nkey-file = %s\n" % key_file
    return Cairnd(tmp, """[cairnd]
state = sqlite:%s/state.db
metrics-listen = 127.0.0.1:0
drill-dir = %s/drill

[schedule %s]
source = %s
to = file://%s
every = %s
keep-last = %d
drill = every 1h
%s
""" % (tmp, tmp, schedule, source, backups, every, keep_last, extra)), backups


def finish(tmp, rmtree=None):
    """The end of a test: exit 1 naming tmp (kept) after a failed check, else remove tmp
    (with rmtree when given: files a server's user owns)."""
    if failures:
        print("kept %s" % tmp)
        sys.exit(1)
    if rmtree is not None:
        rmtree(tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    print("PASS")
