"""Progress of long commands (docs/CLI progress, issue 19), driven through a real terminal:
`cairn backup` of a local tree and `cairn restore --into` of it run in a tmux pane (Debian
tmux), against a real s3rver behind a gated TCP proxy the test controls: it lets a fixed number
of bytes through (uploads for the backup, downloads for the restore) and holds the rest, so
the command is mid-transfer, however fast the machine, until the test has read the pane. The
progress line must show the bytes, the total, the percentage, files done of the total, the
rate and the ETA. Then, without a TTY: plain lines on stderr (one every 10 s) and nothing at
all under --quiet or --json. No sleeps: every wait polls a condition with a deadline."""
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reliability"))
from rel import CAIRN, S3rver, WAIT, check, finish, run, tmpdir  # noqa: E402
import skips  # noqa: E402

T = tmpdir("cairn-progress-")
MIB = 1024 * 1024
SIZE = int(os.environ.get("CAIRN_PROGRESS_TEST_MIB", "48")) * MIB  # the big file


class GateProxy:
    """TCP proxy to upstream; while closed, at most `allow` bytes pass in the gated direction
    ("up": client to server, "down": server to client), then it holds the rest."""

    def __init__(self, upstream_port):
        self.up = upstream_port
        self.cv = threading.Condition()
        self.direction, self.allow, self.passed, self.open = None, 0, 0, True
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.stopping = False
        threading.Thread(target=self.accept, daemon=True).start()

    def close_gate(self, direction, allow):
        with self.cv:
            self.direction, self.allow, self.passed, self.open = direction, allow, 0, False

    def open_gate(self):
        with self.cv:
            self.open = True
            self.cv.notify_all()

    def held(self):
        with self.cv:
            return not self.open and self.passed >= self.allow

    def accept(self):
        while not self.stopping:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.up))
            threading.Thread(target=self.pump, args=(c, u, "up"), daemon=True).start()
            threading.Thread(target=self.pump, args=(u, c, "down"), daemon=True).start()

    def pump(self, src, dst, direction):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self.cv:
                    while (not self.open and self.direction == direction and
                           self.passed + len(data) > self.allow and not self.stopping):
                        self.passed = max(self.passed, self.allow)
                        self.cv.notify_all()
                        self.cv.wait(1)
                    if self.direction == direction:
                        self.passed += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self):
        self.stopping = True
        self.open_gate()
        self.ls.close()


def wait(cond, what, deadline=WAIT):
    end = time.time() + deadline
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


class Tmux:
    """A private tmux server (its own socket) with one 200-column pane per command."""

    def __init__(self, env):
        self.sock = os.path.join(T, "tmux.sock")
        self.env = env

    def tmux(self, *args):
        return subprocess.run(["tmux", "-S", self.sock] + list(args), env=self.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=WAIT,
                              check=False)

    def start(self, name, argv):
        # The pane stays after the command ends (cat waits on the terminal until the server is
        # killed), so its output can be read.
        cmd = " ".join("'%s'" % a.replace("'", "'\\''") for a in argv)
        r = self.tmux("new-session", "-d", "-s", name, "-x", "200", "-y", "10",
                      cmd + "; echo EXIT=$?; exec cat")
        if r.returncode != 0:
            raise RuntimeError("tmux new-session: " + r.stderr.decode())

    def pane(self, name):
        return self.tmux("capture-pane", "-p", "-t", name).stdout.decode(errors="replace")

    def kill(self):
        self.tmux("kill-server")


LINE = (r"(%s): ([\d.]+ [KMG]?i?B) of ([\d.]+ MiB) \((\d+)%%\), (\d+) of (\d+) files, "
        r"([\d.]+ [KMG]?i?B)/s, ETA (\S+)")


def check_line(pane, label, total):
    m = re.search(LINE % label, pane)
    if not check(m is not None, "%s: the pane shows a progress line with total, files, rate and "
                 "ETA: %r" % (label, pane.strip())):
        return
    check(m.group(3) == total, "%s: total %s, wanted %s" % (label, m.group(3), total))
    check(int(m.group(6)) == 3, "%s: 3 files in total (%s)" % (label, m.group(6)))
    check(m.group(2) != "0 B" and int(m.group(4)) < 100,
          "%s: mid-transfer (%s, %s%%)" % (label, m.group(2), m.group(4)))
    check(re.match(r"\d+(h\d\dm|m\d\ds|s)$", m.group(8)) is not None,
          "%s: ETA %s" % (label, m.group(8)))


def main():
    if shutil.which("tmux") is None:
        skips.missing("tmux (scripts/deps.sh test)")
    s3 = S3rver(T, bucket="prog")
    if not s3.available():
        skips.missing("s3rver (scripts/deps.sh test)")
    s3.start()
    gp = GateProxy(s3.port)
    env = dict(os.environ, AWS_ACCESS_KEY_ID="S3RVER", AWS_SECRET_ACCESS_KEY="S3RVER",
               AWS_EC2_METADATA_DISABLED="true", TERM="xterm")
    tm = Tmux(env)
    try:
        parts(s3, gp, tm, env)
    finally:
        tm.kill()
        gp.stop()
        s3.stop()
        shutil.rmtree(T, ignore_errors=True)
    finish()


def parts(s3, gp, tm, env):
    # parts=2: at most 2 x 8 MiB of upload in flight, so the held backup stays well short of
    # the end of the big file whatever the machine's speed.
    url = ("s3://prog/p?endpoint=http://127.0.0.1:%d&path_style=1&stall_timeout=600&parts=2"
           % gp.port)
    src = os.path.join(T, "src")
    os.makedirs(os.path.join(src, "d"))
    with open(os.path.join(src, "big.bin"), "wb") as f:
        for _ in range(SIZE // MIB):
            f.write(os.urandom(MIB))
    for n in ("a", "d/b"):
        with open(os.path.join(src, n), "wb") as f:
            f.write(os.urandom(100000))
    total = "%.1f MiB" % ((SIZE + 200000) / MIB)
    rc, _, err, _ = run([CAIRN, "init", url, "--no-encryption"], timeout=WAIT, env=env)
    check(rc == 0, "init: %s" % err)

    # A long backup: uploads held after 8 MiB.
    gp.close_gate("up", 8 * MIB)
    tm.start("backup", [CAIRN, "backup", "--from", src, "--to", url, "--name", "b1"])
    pane = wait(lambda: gp.held() and re.search(r"ETA", tm.pane("backup")) and
                tm.pane("backup"), "the backup's progress line while uploads are held")
    check_line(pane, "backup", total)
    gp.open_gate()
    pane = wait(lambda: "EXIT=" in tm.pane("backup") and tm.pane("backup"), "backup to end")
    check(re.search(r"^backup b1: .*\nEXIT=0", pane, re.M) is not None and "ETA" not in pane,
          "backup: its result, exit 0, the progress line cleared: %r" % pane.strip())

    # A long restore: downloads held after 12 MiB.
    gp.close_gate("down", 12 * MIB)
    tm.start("restore", [CAIRN, "restore", url, "b1", "--into", os.path.join(T, "out")])
    pane = wait(lambda: gp.held() and re.search(r"ETA", tm.pane("restore")) and
                tm.pane("restore"), "the restore's progress line while downloads are held")
    check_line(pane, "restore", total)
    gp.open_gate()
    pane = wait(lambda: "EXIT=" in tm.pane("restore") and tm.pane("restore"), "restore to end")
    check(re.search(r"^restored b1 to .*\nEXIT=0", pane, re.M) is not None and "ETA" not in pane,
          "restore: its result, exit 0, the progress line cleared: %r" % pane.strip())

    # Without a TTY: a plain line every 10 s (held until one appears); --quiet and --json:
    # nothing on stderr.
    gp.close_gate("down", 4 * MIB)
    errf = os.path.join(T, "get.err")
    with open(errf, "wb") as ef:
        p = subprocess.Popen([CAIRN, "get", url, "b1", os.path.join(T, "out2")], env=env,
                             stdout=subprocess.DEVNULL, stderr=ef)
    try:
        wait(lambda: re.search(r"get: .* of %s .*/s" % re.escape(total),
                               open(errf).read()), "a plain progress line of get", 90)
    finally:
        gp.open_gate()
        p.wait(WAIT)
    text = open(errf).read()
    check(p.returncode == 0 and "\r" not in text and "\033" not in text,
          "get without a TTY: plain lines (no terminal codes): %r" % text)
    for flag in ("--quiet", "--json"):
        out = os.path.join(T, "out" + flag)
        rc, _, err, _ = run([CAIRN, "get", url, "b1", out, flag], timeout=WAIT, env=env)
        check(rc == 0 and err == "", "get %s: nothing on stderr: %r" % (flag, err))
    tm.start("quiet", [CAIRN, "verify", url, "b1", "--quiet"])
    pane = wait(lambda: "EXIT=" in tm.pane("quiet") and tm.pane("quiet"), "verify --quiet")
    check("EXIT=0" in pane and "verify:" not in pane, "verify --quiet on a TTY: no progress")


if __name__ == "__main__":
    main()
