#!/usr/bin/env python3
"""cairnd schedules of an InfluxDB source with a time window, as `cairn backup --start/--end`:

A real influxd holds three hours of points up to a minute ago (every 10 s, two series). One
`cairnd run` has two schedules on it:
  * `window = 1h`: each run takes [at - 1h, at), at being the run's scheduled instant (the
    name of its backup says which); restored with `cairn restore --to` into a fresh influxd,
    it holds exactly the source's points in that hour;
  * `start = S`, `end = E` (RFC 3339, both points): exactly the points with S <= time <= E.
Bad configurations are refused before anything runs (exit 2, naming the schedule or the line):
a window on a Redis source, window with start, start after end, a start that is not a time.
SKIP (77) without influxd, a failure under CI=true.
"""
import calendar
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from influx import CAIRN, CAIRND, WAIT, Influxd, check, need_influxd, run  # noqa: E402


def rfc(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def fill(ifx, first, last):
    ifx.query("CREATE DATABASE mydb")
    lines = []
    for t in range(first, last + 1, 10):
        for host in ("a", "b"):
            lines.append('cpu,host=%s value=%d,s="v%d" %d' % (host, t % 100000, t, t))
    ifx.write("mydb", "\n".join(lines))
    ifx.wait_tsm()


def complete(store):
    p = run([CAIRN, "list", store, "--json"], check=False)
    if p.returncode != 0:
        return []
    return [b["name"] for b in json.loads(p.stdout)["backups"] if b["status"] == "complete"]


def conf_error(tmp, body, text, where="[schedule w]"):
    path = os.path.join(tmp, "bad.conf")
    with open(path, "w") as f:
        f.write("[cairnd]\nstate-dir = %s\nmetrics-listen = off\n\n[schedule w]\n%s"
                "to = file://%s\nevery = 1h\nkeep-last = 1\n"
                % (os.path.join(tmp, "badstate"), body, os.path.join(tmp, "badstore")))
    p = run([CAIRND, "run", "--config", path, "--dry-run"], check=False)
    err = p.stderr.decode(errors="replace").strip()
    check(p.returncode == 2 and text in err and where in err,
          "bad config refused (%s): exit %d: %s" % (text, p.returncode, err))


def main():
    need_influxd()
    tmp = tempfile.mkdtemp(prefix="cairn-window-")
    procs = []
    done = False
    try:
        now = int(time.time()) // 10 * 10
        first, last = now - 3 * 3600, now - 60
        S, E = now - 2 * 3600, now - 2 * 3600 + 1800  # both points
        a = Influxd(os.path.join(tmp, "a"))
        procs.append(a)
        a.start()
        fill(a, first, last)
        everything = a.points("mydb")
        check(len(everything) == 2 * ((last - first) // 10 + 1), "source holds %d points"
              % len(everything))

        stores = {n: "file://" + os.path.join(tmp, "store-" + n) for n in ("hour", "fixed")}
        for s in stores.values():
            run([CAIRN, "init", s, "--no-encryption"])
        conf = os.path.join(tmp, "cairnd.conf")
        with open(conf, "w") as f:
            f.write("[cairnd]\nstate-dir = %s\nmetrics-listen = off\n\n"
                    "[schedule hour]\nsource = %s\nto = %s\nevery = 1s\nkeep-last = 5\n"
                    "window = 1h\n\n"
                    "[schedule fixed]\nsource = influxdb://%s\nto = %s\nevery = 1s\n"
                    "keep-last = 5\nstart = %s\nend = %s\n"
                    % (os.path.join(tmp, "state"), a.influx_addr, stores["hour"],
                       a.influx_addr, stores["fixed"], rfc(S), rfc(E)))
        log = open(os.path.join(tmp, "cairnd.log"), "w+")
        d = subprocess.Popen([CAIRND, "run", "--config", conf], stdout=log,
                             stderr=subprocess.STDOUT)
        try:
            # The condition: a complete backup in each store (a new schedule runs at once).
            end = time.monotonic() + 5 * WAIT
            while time.monotonic() < end and d.poll() is None and not all(
                    complete(s) for s in stores.values()):
                time.sleep(0.2)
        finally:
            d.send_signal(signal.SIGTERM)
            d.wait(timeout=WAIT)
            log.seek(0)
            text = log.read()
            log.close()
        names = {n: complete(s) for n, s in stores.items()}
        check(all(names.values()), "each schedule took a backup: %s\n%s" % (
            names, text[-1500:] if not all(names.values()) else ""))

        b = Influxd(os.path.join(tmp, "b"))
        procs.append(b)
        b.start()
        for n in ("hour", "fixed"):
            name = sorted(names[n])[0]
            run([CAIRN, "verify", stores[n], name])
            run([CAIRN, "restore", stores[n], name, "--to", b.influx_addr, "--db", "mydb",
                 "--newdb", "mydb_" + n])
            got = b.points("mydb_" + n)
            if n == "hour":
                m = re.match(r"^(\d{8}T\d{6})Z-hour$", name)
                check(m is not None, "the run's name holds its instant: %s" % name)
                at = calendar.timegm(time.strptime(m.group(1), "%Y%m%dT%H%M%S"))
                lo, hi = (at - 3600) * 10**9, at * 10**9
                want = [p for p in everything if lo <= p[3][0] < hi]
                what = "[%s, %s)" % (rfc(at - 3600), rfc(at))
            else:
                want = [p for p in everything if S * 10**9 <= p[3][0] <= E * 10**9]
                what = "[%s, %s]" % (rfc(S), rfc(E))
            check(0 < len(want) < len(everything), "%s: the window %s cuts the data (%d of %d)"
                  % (n, what, len(want), len(everything)))
            check(got == want, "%s: %s restored %d points, want exactly the %d of %s" % (
                n, name, len(got), len(want), what))

        conf_error(tmp, "source = redis://127.0.0.1:6379\nwindow = 1h\n", "InfluxDB source")
        conf_error(tmp, "source = %s\nwindow = 1h\nstart = %s\n" % (a.influx_addr, rfc(S)),
                   "either window or start/end")
        conf_error(tmp, "source = %s\nstart = %s\nend = %s\n" % (a.influx_addr, rfc(E), rfc(S)),
                   "start is after end")
        conf_error(tmp, "source = %s\nstart = noon\n" % a.influx_addr, "RFC 3339",
                   "start = 'noon'")
        done = True
    finally:
        for p in procs:
            p.stop()
        if done:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print("kept " + tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
