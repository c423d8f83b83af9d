"""Shard export (request 5): `influxd backup -portable -start/-end` against cairnd serve, and
`cairn backup --start/--end` against a real influxd, both restore exactly the points of the
window into a fresh real influxd 1.6.

A real influxd gets six hours of points (every 10 s, two series, float, integer, boolean and
string fields; one RP of 7-day shards, one of 1-hour shards, so some shards lie inside the
window, some outside and some across it, and the 7-day shard's TSM blocks of 1000 points
cross both edges). Its data is taken with `cairn backup` and restored into an empty `cairnd
serve --allow-restore`; then:
  * `influxd backup -portable -start S -end E -host <cairnd>` succeeds (it used to retry for
    236 s and fail), and `influxd restore -portable` of it into a fresh influxd answers exactly
    the points with S <= time <= E (both edges are points), values equal;
  * the export tars are Go-style and hold TSM files influxd reads; a window outside every
    point gives 1024-byte empty tars; a missing shard, start after end and garbage get no bytes;
  * `cairn backup --from <influxd> --start S --end E` (influxd's export keeps whole blocks
    across the edges; cairn cuts them) restores with `cairn restore --to` to exactly the same
    points; --start after --end and --since with --start are usage errors.
"""
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from influx import (CAIRN, WAIT, Cairnd, Influxd, check, need_influxd, probe,  # noqa: E402
                    request, run)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from repo import init_location  # noqa: E402

T0 = 1600000000          # a multiple of 10: every point is on a 10 s step
HOURS = 6
S = T0 + 5000            # a point: the window's edges are inclusive
E = T0 + 14710           # a point


def rfc(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def fill(ifx):
    ifx.query("CREATE DATABASE mydb")
    ifx.query('CREATE RETENTION POLICY "hourly" ON "mydb" DURATION 1000w REPLICATION 1 '
              'SHARD DURATION 1h')
    lines, hourly = [], []
    for i in range(HOURS * 360):
        t = T0 + 10 * i
        for host in ("a", "b"):
            lines.append('cpu,host=%s value=%r,n=%di,ok=%s,s="v%d %s" %d' % (
                host, i * 0.5 + (1.25 if host == "b" else 0), i * 7 - 3000,
                "true" if i % 3 else "false", i, host, t))
        if i % 6 == 0:
            hourly.append("mem,host=a used=%di %d" % (i * 11, t))
    # Two writes per RP: more than one TSM file per shard.
    half = len(lines) // 2
    ifx.write("mydb", "\n".join(lines[:half]))
    ifx.wait_tsm()
    ifx.write("mydb", "\n".join(lines[half:]))
    ifx.write("mydb", "\n".join(hourly), rp="hourly")
    ifx.wait_tsm()


def window_points(ifx, db):
    """Every point of db in [S, E], by RP and measurement, as returned by the server. Shards
    just restored are briefly disabled while influxd reopens them: retry then."""
    end = time.time() + WAIT
    while True:
        try:
            return _window_points(ifx, db)
        except RuntimeError as e:
            if "disabled" not in str(e) or time.time() > end:
                raise
            time.sleep(0.2)


def _window_points(ifx, db):
    out = []
    for rp in ("autogen", "hourly"):
        for m in ("cpu", "mem"):
            res = ifx.query('SELECT * FROM "%s"."%s" WHERE time >= %d AND time <= %d' % (
                rp, m, S * 10**9, E * 10**9), db)
            for s in res["results"][0].get("series", []):
                for v in s["values"]:
                    out.append((rp, m, tuple(s["columns"]), tuple(v)))
    return sorted(out, key=repr)


def tar_members(data):
    tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
    return {m.name: tf.extractfile(m).read() for m in tf.getmembers()}


def main():
    need_influxd()
    tmp = tempfile.mkdtemp(prefix="cairn-export-")
    procs = []
    try:
        a = Influxd(os.path.join(tmp, "a"))
        procs.append(a)
        a.start()
        fill(a)
        want = window_points(a, "mydb")
        n_cpu = sum(1 for p in want if p[1] == "cpu")
        check(n_cpu == 2 * ((E - S) // 10 + 1) and len(want) > n_cpu,
              "window holds %d points (%d cpu)" % (len(want), n_cpu))
        everything = a.points("mydb")
        check(len(everything) > len(want), "points outside the window exist (%d in all)"
              % len(everything))

        # A cairn backup of the real influxd, restored into an empty cairnd serve.
        store = "file://" + os.path.join(tmp, "store")
        init_location(store)
        run([CAIRN, "backup", "--from", a.influx_addr, "--to", store, "--name", "full"])
        data = os.path.join(tmp, "cairnd")
        os.makedirs(data)
        c = Cairnd(data, extra=["--allow-restore"], log=os.path.join(tmp, "cairnd.log"))
        procs.append(c)
        c.start()
        run([CAIRN, "restore", store, "full", "--to", c.addr])

        # influxd backup -portable -start/-end against cairnd serve.
        bk = os.path.join(tmp, "bk")
        p = run(["influxd", "backup", "-portable", "-database", "mydb", "-start", rfc(S),
                 "-end", rfc(E), "-host", c.addr, bk], check=False)
        check(p.returncode == 0, "influxd backup -start/-end from cairnd: exit %d %s" % (
            p.returncode, p.stderr.decode(errors="replace")[-500:]))
        b = Influxd(os.path.join(tmp, "b"))
        procs.append(b)
        b.start()
        run(["influxd", "restore", "-portable", "-db", "mydb", "-host", b.influx_addr, bk])
        got = window_points(b, "mydb")
        check(got == want, "influxd restore of cairnd's export: %d points, want %d" % (
            len(got), len(want)))
        got_all = b.points("mydb")
        check(len(got_all) == len(want), "nothing outside the window: %d points in all"
              % len(got_all))

        # Raw requests: Go-style tars, empty windows, errors.
        ids = []
        for line in probe(c.addr, request(3, BackupDatabase="mydb")).decode().split('"'):
            if line.startswith("mydb/"):
                ids.append(int(line.rsplit("/", 1)[1]))
        check(len(ids) >= 3, "cairnd lists %d shards" % len(ids))
        for sid in ids:
            got = probe(c.addr, request(5, ShardID=sid, ExportStart="1999-01-01T00:00:00Z",
                                        ExportEnd="1999-01-02T00:00:00Z"))
            check(got == bytes(1024), "shard %d: a window without points: empty tar" % sid)
        got = probe(c.addr, request(5, ShardID=ids[0], ExportStart=rfc(S), ExportEnd=rfc(E)))
        check(len(got) % 512 == 0 and got[-1024:] == bytes(1024), "export is a Go-style tar")
        for name, body in tar_members(got).items():
            check(not name.endswith(".tsm") or body[:5] == bytes.fromhex("16d116d101"),
                  "TSM member %s" % name)
        check(probe(c.addr, request(5, ShardID=99999, ExportStart=rfc(S), ExportEnd=rfc(E)))
              == b"", "missing shard: no bytes")
        check(probe(c.addr, request(5, ShardID=ids[0], ExportStart=rfc(E), ExportEnd=rfc(S)))
              == b"", "start after end: no bytes")
        check(probe(c.addr, bytes([3, 5]) + b'{"ShardID":"x"}\n') == b"", "garbage: no bytes")
        check(probe(c.addr, request(5, ShardID=ids[0], ExportStart="yesterday")) == b"",
              "bad time: no bytes")

        # cairn backup --start/--end straight from the real influxd.
        run([CAIRN, "backup", "--from", a.influx_addr, "--to", store, "--name", "win",
             "--db", "mydb", "--start", rfc(S), "--end", rfc(E)])
        run([CAIRN, "verify", store, "win"])
        run([CAIRN, "restore", store, "win", "--to", b.influx_addr, "--db", "mydb",
             "--newdb", "mydb_win"])
        got = window_points(b, "mydb_win")
        check(got == want, "cairn backup --start/--end from influxd: %d points, want %d" % (
            len(got), len(want)))
        check(len(b.points("mydb_win")) == len(want), "nothing outside the window")
        # influxd's own export keeps whole blocks across the edges: more than the window.
        bk2 = os.path.join(tmp, "bk-influxd")
        run(["influxd", "backup", "-portable", "-database", "mydb", "-start", rfc(S), "-end",
             rfc(E), "-host", a.influx_addr, bk2])
        run(["influxd", "restore", "-portable", "-db", "mydb", "-newdb", "mydb_native", "-host",
             b.influx_addr, bk2])
        native = b.points("mydb_native")
        check(len(native) > len(want) and window_points(b, "mydb_native") == want,
              "influxd's export holds %d points: the window's %d and more" % (
                  len(native), len(want)))
        # An open end: everything from S on.
        run([CAIRN, "backup", "--from", a.influx_addr, "--to", store, "--name", "from",
             "--db", "mydb", "--start", rfc(S)])
        run([CAIRN, "restore", store, "from", "--to", b.influx_addr, "--db", "mydb",
             "--newdb", "mydb_from"])
        tail = [p for p in everything if p[3][0] >= S * 10**9]
        check(b.points("mydb_from") == tail, "--start alone: the %d points from S on" % len(tail))
        # Time-bounded backups are never a parent: an incremental one chains to "full".
        p = run([CAIRN, "backup", "--from", a.influx_addr, "--to", store, "--db", "mydb",
                 "--since", rfc(S), "--json"])
        parent = json.loads(p.stdout)["parent"]
        check(parent == "full", "incremental after time-bounded ones: parent %r" % parent)
        p = run([CAIRN, "backup", "--from", a.influx_addr, "--to", store, "--start", rfc(E),
                 "--end", rfc(S)], check=False)
        check(p.returncode == 2, "--start after --end: exit %d" % p.returncode)
        p = run([CAIRN, "backup", "--from", a.influx_addr, "--to", store, "--start", rfc(S),
                 "--since", rfc(S)], check=False)
        check(p.returncode == 2, "--since with --start: exit %d" % p.returncode)
        p = run([CAIRN, "backup", "--from", a.influx_addr, "--to", store, "--start", "noon"],
                check=False)
        check(p.returncode == 2, "--start noon: exit %d" % p.returncode)
        log = open(os.path.join(tmp, "cairnd.log")).read()
        check("shard export done" in log and "starts" in log, "cairnd logged exports and refusals")
    finally:
        for pr in procs:
            try:
                pr.stop()
            except Exception as e:  # keep cleaning up
                print("cleanup: %s" % e)
    shutil.rmtree(tmp, ignore_errors=True)
    print("PASS")


if __name__ == "__main__":
    main()
