#!/usr/bin/env python3
"""Restore drills of a local-path schedule with a drill-probe command: the course of
drill_lib.py (a good backup passes, an XOR-damaged stored file fails, repaired passes) with a
probe that compares the restored tree to the source and sees its environment; then a probe that
fails, and one that hangs past drill-timeout (killed with its process group), each recorded as
a failed drill with the probe's reason."""
import atexit
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import drill_lib  # noqa: E402
from drill_lib import check  # noqa: E402

tmp = tempfile.mkdtemp(prefix="cairn-drill-files-")
src = os.path.join(tmp, "src")
os.makedirs(os.path.join(src, "sub"))
with open(os.path.join(src, "big.bin"), "wb") as f:
    f.write(os.urandom(300000))
with open(os.path.join(src, "sub", "small.txt"), "w") as f:
    f.write("hello\n")
envfile = os.path.join(tmp, "probe.env")
probe = ('env | grep ^CAIRN_ | sort > %s; diff -r "$CAIRN_DRILL_TARGET" %s && '
         'echo the tree matches' % (envfile, src))
drill_lib.run_drill_course(tmp, src, extra="drill-probe = " + probe,
                           probe_says="drill probe of schedule db: the tree matches")
env = dict(l.rstrip("\n").split("=", 1) for l in open(envfile))

# The same course on an encrypted repository (the schedule's key-file): the drill restores
# with the key, and a damaged stored object fails its authentication.
enc = os.path.join(tmp, "enc")
os.makedirs(enc)
key = os.path.join(enc, "repo.key")
subprocess.run([os.path.join(drill_lib.BIN, "cairn"), "key", "generate", key], check=True,
               capture_output=True)
drill_lib.run_drill_course(enc, src, key_file=key)
check(env.get("CAIRN_SCHEDULE") == "db" and env.get("CAIRN_BACKUP") == "20260102T000000Z-db" and
      env.get("CAIRN_DRILL_KIND") == "files" and
      env.get("CAIRN_DRILL_TARGET") == os.path.join(tmp, "drill", "db", "restore") and
      env.get("CAIRN_DRILL_DIR") == os.path.join(tmp, "drill", "db") and
      int(env.get("CAIRN_DRILL_PORT", "0")) > 0, "the probe's environment: %s" % env)

# A probe that fails (its webhook reports the drill), and one that hangs past drill-timeout.
recv_port, recv_log = os.path.join(tmp, "recv.port"), os.path.join(tmp, "recv.log")
recv = subprocess.Popen([sys.executable, os.path.join(HERE, "webhook_receiver.py"), recv_port,
                         recv_log])
atexit.register(recv.kill)  # also when a check raises
drill_lib.wait_until("the webhook receiver", lambda: os.path.exists(recv_port))
hook = "webhook = http://127.0.0.1:%s/drills" % open(recv_port).read()
for name, extra, want in (
        ("badprobe", "drill-probe = echo no such table >&2; exit 4\n" + hook,
         r"FAILED after [0-9.]+s: drill probe of schedule badprobe exited with status 4"),
        ("hangprobe", "drill-timeout = 2s\ndrill-probe = sleep 600 & echo $! >%s/child; wait" % tmp,
         r"FAILED after [0-9.]+s: drill probe of schedule hangprobe timed out after [12]s")):
    t = os.path.join(tmp, name)
    os.makedirs(t)
    c, _ = drill_lib.drill_config(t, name, src, extra)
    c.set_clock("2026-01-01T10:30:00Z")
    c.start()
    try:
        c.set_clock("2026-01-02T00:00:00Z")
        c.wait("the drill", lambda: c.metric("cairn_drill_failures_total", name) == 1)
        check(c.metric("cairn_drill_last_success", name) == 0, "%s: the drill failed" % name)
        check(re.search(want, c.text()) is not None, "%s: logged: %s" % (name, want))
        check(not os.path.exists(os.path.join(t, "drill", name)), "%s: scratch removed" % name)
    finally:
        check(c.stop() == 0, "%s: clean stop" % name)
check("drill probe of schedule badprobe: no such table" in
      open(os.path.join(tmp, "badprobe", "run.log")).read(), "the probe's stderr is logged")
# A probe that exits 75 (its server found the port taken) runs again with new ports.
t = os.path.join(tmp, "retry")
os.makedirs(t)
c, _ = drill_lib.drill_config(t, "retry", src, "drill-probe = echo $CAIRN_DRILL_PORT >>%s/ports; "
                              "[ $(wc -l <%s/ports) -ge 2 ] || exit 75" % (t, t))
c.set_clock("2026-01-01T10:30:00Z")
c.start()
try:
    c.set_clock("2026-01-02T00:00:00Z")
    c.wait("the drill", lambda: c.metric("cairn_drill_last_success", "retry") is not None)
    ports = open(os.path.join(t, "ports")).read().split()
    check(c.metric("cairn_drill_last_success", "retry") == 1 and len(ports) == 2 and
          "drill probe: a port was taken, trying new ones" in c.text(),
          "a probe exiting 75 runs again (ports %s) and passes" % ports)
finally:
    check(c.stop() == 0, "retry: clean stop")
drill_lib.wait_until("the drill's webhook", lambda: os.path.exists(recv_log))
recv.terminate()
recv.wait()
body = json.loads(open(recv_log).readline())["body"]
check(body["event"] == "drill" and body["schedule"] == "badprobe" and body["status"] == "failure"
      and "exited with status 4" in body["error"] and body["backup"].endswith("-badprobe"),
      "the failed drill's webhook: %s" % body)
child = int(open(os.path.join(tmp, "child")).read())
check(not os.path.exists("/proc/%d" % child) or
      open("/proc/%d/stat" % child).read().split(")")[1].split()[0] == "Z",
      "the hanging probe's child was killed")
drill_lib.finish(tmp)
