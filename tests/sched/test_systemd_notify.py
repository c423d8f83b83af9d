"""cairnd run under systemd's protocols, without systemd (issue 18): a NOTIFY_SOCKET made here
receives READY=1 once the scheduler runs, WATCHDOG=1 pings (WATCHDOG_USEC), RELOADING=1 then
READY=1 around a SIGHUP reload, STOPPING=1 on SIGTERM; with JOURNAL_STREAM naming its stderr,
log lines carry journald priorities ("<6>" info, "<4>" warn, "<3>" error). A build without
libsystemd sends nothing: the test is skipped then (a failure under CI=true)."""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
import skips  # noqa: E402

BIN = os.environ.get("CAIRN_BIN", os.path.join(os.path.dirname(__file__), "../../build"))
DEADLINE = 120.0  # a hang detector, not a speed claim


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def main():
    ldd = subprocess.run(["ldd", BIN + "/cairnd"], capture_output=True, text=True).stdout
    if "libsystemd" not in ldd:
        # CMake found no libsystemd (Debian: libsystemd-dev, which scripts/deps.sh installs).
        skips.missing("cairnd was built without libsystemd (no sd_notify)")
    tmp = tempfile.mkdtemp(prefix="cairnd-notify-")
    conf = os.path.join(tmp, "cairnd.conf")
    with open(conf, "w") as f:
        f.write("[cairnd]\nstate-dir = %s/state\nmetrics-listen = off\n"
                "[schedule a]\nsource = exec:echo a\nto = file://%s/b\nevery = 1h\nkeep-last = 1\n"
                % (tmp, tmp))
    sock_path = os.path.join(tmp, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(1.0)
    err_path = os.path.join(tmp, "stderr")
    errf = open(err_path, "w")
    st = os.fstat(errf.fileno())
    env = dict(os.environ, NOTIFY_SOCKET=sock_path, WATCHDOG_USEC="300000",
               JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino))
    env.pop("WATCHDOG_PID", None)
    p = subprocess.Popen([BIN + "/cairnd", "run", "--config", conf], stderr=errf,
                         stdout=subprocess.DEVNULL, env=env)
    got = []

    def wait_msg(pred, what):
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            for m in got:
                if pred(m):
                    return
            try:
                got.append(sock.recv(4096).decode())
            except socket.timeout:
                if p.poll() is not None:
                    with open(err_path) as f:
                        tail = f.read()[-3000:]
                    fail("cairnd exited %d before %s: %s" % (p.returncode, what, tail))
        fail("no %s; got %r" % (what, got))

    try:
        wait_msg(lambda m: "READY=1" in m and "running 1 schedules" in m, "READY=1")
        n0 = sum("WATCHDOG=1" in m for m in got)
        wait_msg(lambda m: sum("WATCHDOG=1" in x for x in got) >= n0 + 3, "three WATCHDOG=1 pings")
        del got[:]
        p.send_signal(signal.SIGHUP)
        wait_msg(lambda m: m.startswith("RELOADING=1") and "MONOTONIC_USEC=" in m, "RELOADING=1")
        wait_msg(lambda m: "READY=1" in m, "READY=1 after the reload")
        p.send_signal(signal.SIGTERM)
        wait_msg(lambda m: "STOPPING=1" in m, "STOPPING=1")
        if p.wait(timeout=DEADLINE) != 0:
            fail("exit %d after SIGTERM" % p.returncode)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    errf.close()
    with open(err_path) as f:
        lines = f.read().splitlines()
    if not any(ln.startswith("<6>info  cairnd: scheduler running") for ln in lines):
        fail("no <6> info line: %r" % lines[:5])
    bad = [ln for ln in lines if ln and not ln[:3] in ("<3>", "<4>", "<6>", "<7>")]
    if bad:
        fail("lines without a journald priority: %r" % bad[:3])
    print("PASS: READY, WATCHDOG, RELOADING, STOPPING and journald priorities", flush=True)
    subprocess.run(["rm", "-rf", tmp])


main()
